"""``screener shared`` and ``screener sync``: the central PostgreSQL list several sites
share (issue 15)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from screener.cli.common import _add_row, _config, _print_json, _reading, _run, common_options
from screener.cli.root import main
from screener.config import Config
from screener.errors import InputError
from screener.store import Store


def _shared_config(config: Config) -> Any:
    if config.shared is None:
        raise InputError(
            "no shared list configured ([shared] in the config file, or SCREENER_SHARED_DSN"
            " and SCREENER_SITE)"
        )
    return config.shared


@main.group("shared")
def shared_group() -> None:
    """The central PostgreSQL that several sites share their lists through."""


@shared_group.command("init")
@common_options
def shared_init(db_path: Path | None, config_path: Path | None) -> None:
    """Create the central schema, or migrate it to this screener's version.

    The password comes from SCREENER_SHARED_PASSWORD or [shared] password_file, never a flag.
    Safe to run again, and from several sites at once.
    """
    from screener.shared.engine import init_central

    shared = _shared_config(_config(db_path, config_path))
    version, applied = _run(init_central(shared))
    done = f"applied {', '.join(map(str, applied))}" if applied else "already up to date"
    click.echo(f"central schema {version} at {shared.display} ({done})")


@main.group("sync", invoke_without_command=True)
@common_options
@click.pass_context
def sync_group(ctx: click.Context, db_path: Path | None, config_path: Path | None) -> None:
    """Bring this site's list in step with the shared one, once (`screener run` keeps it so).

    Sends the changes made here, takes a snapshot when the local copy is empty or too old,
    pulls the changes made elsewhere, and ships the call records. Exit code 8 when the central
    PostgreSQL cannot be used (the local list is untouched).
    """
    if ctx.invoked_subcommand is not None:
        return
    from screener.shared.engine import Sync

    config = _config(db_path, config_path)
    shared = _shared_config(config)

    async def go() -> Any:
        async with Store.open(config.db_path, create=False) as store:
            return await Sync(shared, store).once()

    done = _run(go())
    snapshot = f", snapshot of {done.snapshot} entries" if done.snapshot is not None else ""
    click.echo(
        f"site {shared.site}: sent {done.pushed} changes, applied {done.pulled}{snapshot},"
        f" shipped {done.calls} calls; at sequence {done.last_seq}"
    )


@sync_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@click.option("--offline", is_flag=True, help="Only the local state; do not ask PostgreSQL.")
@common_options
def sync_status(
    as_json: bool, offline: bool, db_path: Path | None, config_path: Path | None
) -> None:
    """Show the site, the last sequence applied, the lag, the outbox and the last error."""
    from screener.shared.engine import status

    config = _config(db_path, config_path)

    async def go() -> dict[str, Any]:
        async with _reading(config) as store:
            return await status(config.shared, store, probe=not offline)

    report = _run(go())
    if as_json:
        _print_json(report)
        return
    table = Table("sync", "value")
    for key, value in report.items():
        _add_row(table, key, "-" if value is None else str(value))
    Console().print(table)
