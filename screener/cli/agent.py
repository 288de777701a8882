"""``screener init``, ``run`` and ``doctor``: the database created or upgraded, the
screening agent run, the database's integrity checked."""

from __future__ import annotations

from pathlib import Path

import click

from screener.cli.common import _config, _run, common_options
from screener.cli.root import main
from screener.errors import StoreCorruptError
from screener.log import configure_logging
from screener.store import Store


@main.command("init")
@common_options
def init(db_path: Path | None, config_path: Path | None) -> None:
    """Create (or upgrade) the database and check the configuration."""
    config = _config(db_path, config_path)

    async def go() -> int:
        async with Store.open(config.db_path) as store:
            return await store.count_entries()

    count = _run(go())
    click.echo(f"database {config.db_path} ready ({count} list entries); config: {config.source}")


@main.command("run")
@common_options
def run_service(db_path: Path | None, config_path: Path | None) -> None:
    """Run the screening agent: log in to Asterisk's AMI and route every inbound call.

    The AMI secret comes from SCREENER_AMI_SECRET or SCREENER_AMI_SECRET_FILE (never a flag:
    flags show in ps). Stops cleanly on SIGINT or SIGTERM.
    """
    from screener import service  # the service pulls in the AMI stack; other commands do not

    config = _config(db_path, config_path)
    configure_logging(config.log_format, config.log_level)
    _run(service.run(config))


@main.command("doctor")
@common_options
@click.option(
    "--recount",
    is_flag=True,
    help="Count the kept list sizes (the metrics' gauge) again from the entries (writes).",
)
def doctor(db_path: Path | None, config_path: Path | None, recount: bool) -> None:
    """Run SQLite's full integrity check on the database (reads every page; never writes,
    but for --recount).

    Opening the database only checks what is cheap (header, application id, schema version),
    so run this after a crash or a disk problem; `screener run` runs it by itself after a run
    that did not stop cleanly. Exit code 4 when the database is damaged.
    """
    from screener import marker

    config = _config(db_path, config_path)

    async def go() -> tuple[str, int, bool]:
        async with Store.open(config.db_path, readonly=not recount, create=False) as store:
            findings = await store.integrity_check()
            if findings != "ok":
                return findings, 0, True
            if recount:
                await store.recount_lists()
            count, agree = await store.check_list_counts()
            return findings, count, agree

    findings, count, counts_agree = _run(go())
    if marker.left_behind(config.db_path):
        click.echo(
            f"screener: note: {marker.marker_path(config.db_path)} is there: `screener run` is"
            " running, or its last run did not stop cleanly",
            err=True,
        )
    if findings != "ok":
        raise StoreCorruptError(
            f"database {config.db_path} failed its integrity check:\n{findings}\n"
            "restore it from a backup, or export what is readable with `screener list export`"
        )
    if not counts_agree:
        # Only a write made with entries' triggers off (another program) can do this; the
        # lists themselves are fine, only the metrics' gauge of their size is off.
        click.echo(
            "screener: note: the kept list sizes (the metrics' gauge) differ from the entries;"
            " `screener doctor --recount` counts them again",
            err=True,
        )
    click.echo(f"database {config.db_path}: integrity ok ({count} list entries)")
