"""The root ``screener`` group: logging and the umask set once for every command, and
screener's errors mapped to one line on stderr and the documented exit code."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from screener import __version__
from screener.errors import ScreenerError
from screener.log import configure_logging


class ScreenerGroup(click.Group):
    """Maps screener's errors to one line on stderr and a documented exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ScreenerError as exc:
            click.echo(f"screener: error: {exc}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=ScreenerGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="screener")
def main() -> None:
    """Call screening for Asterisk: unknown callers press buttons before staff phones ring."""
    # Admin commands print their results on stdout; only warnings and errors go to the log
    # (stderr). `screener run` reconfigures logging from its config.
    configure_logging("console", "warning", stream=sys.stderr)
    # The database holds who calls the office (personal data) and the lists; exports too. Files
    # screener creates are its user's alone, whatever the login's umask (group/other bits off).
    os.umask(os.umask(0o077) | 0o077)
