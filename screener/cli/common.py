"""What the commands share: ``--db``/``--config``, the configuration, the clock, the
database opened to read (or the console's store), and output that caller data cannot drive
(no markup, no raw control characters)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.table import Table
from rich.text import Text

from screener.config import Config, load_config
from screener.log import dumps
from screener.store import Store

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def common_options(func: F) -> F:
    """``--db`` and ``--config`` on every command, as the README promises."""
    func = click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="SCREENER_CONFIG",
        help="TOML configuration file  [env: SCREENER_CONFIG]",
    )(func)
    func = click.option(
        "--db",
        "db_path",
        type=click.Path(dir_okay=False, path_type=Path),
        help="SQLite database  [env: SCREENER_DB; default: screener.db]",
    )(func)
    return func


def _config(db_path: Path | None, config_path: Path | None) -> Config:
    return load_config(config_path, overrides={"database": str(db_path) if db_path else None})


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@contextlib.asynccontextmanager
async def _reading(config: Config) -> AsyncIterator[Store]:
    """The database for a command that only reads it: opened read-only and never created.

    A missing file reads as empty lists and an empty log, with a warning, so that a mistyped
    ``--db`` neither creates a stray database nor passes unnoticed.
    """
    if not config.db_path.exists():
        click.echo(
            f"screener: warning: no database at {config.db_path}: no lists, no calls "
            "(`screener init` creates it)",
            err=True,
        )
        async with Store.open(":memory:") as store:
            yield store
        return
    # create=False: an empty file is reported as such (with the command that fixes it).
    async with Store.open(config.db_path, readonly=True, create=False) as store:
        yield store


def _print_json(value: Any) -> None:
    click.echo(dumps(value, indent=2))


def _safe(text: str) -> str:
    """Caller data is attacker-controlled: never let it drive the terminal."""
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)


def _add_row(table: Table, *cells: str) -> None:
    """A table row of plain text: rich would read ``[red]`` or ``[link=...]`` as markup (and
    raise on an unbalanced ``[/x]``), so every cell is a ``Text`` with non-printables escaped."""
    table.add_row(*(Text(_safe(cell)) for cell in cells))


def _webstore(config: Config, *, create: bool = True) -> Any:
    """The console's store for the configured database, migrated (and created if allowed)."""
    from screener.webstore import WebStore

    async def migrate() -> None:
        async with Store.open(config.db_path, create=create):
            pass

    _run(migrate())
    return WebStore.open(config.db_path)
