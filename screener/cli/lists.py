"""``screener list``: add, remove, show, forget, import (streamed, staged, all or nothing)
and export the allow and block lists."""

from __future__ import annotations

import asyncio
import stat
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TextIO

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from screener.cli.common import (
    _add_row,
    _config,
    _now,
    _print_json,
    _reading,
    _run,
    _safe,
    common_options,
)
from screener.cli.root import main
from screener.errors import InputError
from screener.numbers import broad_prefix, parse_list_number
from screener.policy import SOURCE_CALLED, SOURCE_LEARNED, SOURCE_MANUAL, Entry, ListKind
from screener.store import ImportResult, ImportStage, Store
from screener.transfer import (
    Reject,
    Staged,
    duplicate_reason,
    iter_staged,
    write_csv_async,
)
from screener.when import parse_future

# Progress bars only for files at least this long (bytes); short imports just print the result.
PROGRESS_MIN_BYTES = 256 * 1024
# Rows parsed between two writes to the staging table, and rejected rows printed at most.
IMPORT_BATCH = 10_000
MAX_REJECTS_SHOWN = 50


def _entry_dict(entry: Entry) -> dict[str, Any]:
    return {
        "number": entry.number,
        "kind": entry.kind.value,
        "prefix": entry.prefix,
        "label": entry.label,
        "source": entry.source,
        "created_at": entry.created_at.isoformat(),
        "expires_at": entry.expires_at.isoformat() if entry.expires_at else None,
        "note": entry.note,
        "hits": entry.hits,
        "last_seen": entry.last_seen.isoformat() if entry.last_seen else None,
    }


def _file_size(path: Path) -> int:
    """A regular file's size in bytes (the progress bar's total); 0 for a pipe or on error."""
    try:
        info = path.stat()
    except OSError:
        return 0
    return info.st_size if stat.S_ISREG(info.st_mode) else 0


def _tell(stream: IO[bytes]) -> int:
    """How far into ``stream`` the reader is; 0 if it cannot say (a pipe)."""
    try:
        return stream.tell()
    except OSError:
        return 0


@main.group("list")
def list_group() -> None:
    """Edit, import and export the allow and block lists."""


@list_group.command("add")
@click.argument("number")
@click.option("--allow", is_flag=True, help="Ring staff at once.")
@click.option("--block", is_flag=True, help="Never ring staff.")
@click.option("--prefix", is_flag=True, help="A rule for every number that starts this way.")
@click.option("--label", default="", help="Who this is, for people reading the list.")
@click.option("--expires", "expires", metavar="WHEN", help="30d, 12h, 2w or an ISO date.")
@click.option("--note", default="", help="Free text.")
@click.option(
    "--force",
    is_flag=True,
    help="Add a prefix rule that covers a whole country code or over 10% of the home plan.",
)
@common_options
def list_add(
    number: str,
    allow: bool,
    block: bool,
    prefix: bool,
    label: str,
    expires: str | None,
    note: str,
    force: bool,
    db_path: Path | None,
    config_path: Path | None,
) -> None:
    """Add NUMBER (or a prefix rule) to the allow or block list."""
    if allow and block:
        raise click.UsageError("--allow and --block cannot be used together")
    if not (allow or block):
        raise InputError("say which list: --allow or --block")
    kind = ListKind.ALLOW if allow else ListKind.BLOCK
    config = _config(db_path, config_path)
    now = _now()
    try:
        key = parse_list_number(number, config.region, prefix=prefix)
        expires_at = parse_future(expires, now) if expires else None
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    if expires_at is not None and expires_at <= now:
        raise InputError(f"--expires {expires}: that time has already passed")
    broad = broad_prefix(key, config.region) if prefix else None
    if broad is not None and not force:
        raise InputError(f"{broad}; add --force if that is what you mean")
    entry = Entry(
        kind=kind,
        number=key,
        prefix=prefix,
        label=label,
        source=SOURCE_MANUAL,
        created_at=now,
        expires_at=expires_at,
        note=note,
    )

    async def go() -> tuple[Entry, Entry | None]:
        async with Store.open(config.db_path) as store:
            return await store.add(entry)

    stored, previous = _run(go())
    click.echo(f"added {stored.describe()}")
    if previous is not None:
        click.echo(f"  (replaced {previous.describe()})")


@list_group.command("remove")
@click.argument("number")
@click.option("--prefix", is_flag=True, help="Remove the prefix rule, not the exact number.")
@common_options
def list_remove(number: str, prefix: bool, db_path: Path | None, config_path: Path | None) -> None:
    """Remove NUMBER (or the prefix rule with --prefix) from whichever list holds it."""
    config = _config(db_path, config_path)
    try:
        key = parse_list_number(number, config.region, prefix=prefix)
    except ValueError as exc:
        raise InputError(str(exc)) from exc

    async def go() -> Entry | None:
        async with Store.open(config.db_path, create=False) as store:
            return await store.remove(key, prefix)

    removed = _run(go())
    if removed is None:
        raise InputError(f"{key}{' (prefix)' if prefix else ''} is on no list")
    click.echo(f"removed {removed.describe()}")


@list_group.command("show")
@click.option("--json", "as_json", is_flag=True, help="One JSON list instead of a table.")
@click.option("--kind", type=click.Choice([k.value for k in ListKind]), help="Only this list.")
@click.option(
    "--source",
    help="Only entries from this source (manual, learned, called, staff:PHONE, import:NAME).",
)
@click.option("--active", is_flag=True, help="Leave out expired entries.")
@common_options
def list_show(
    as_json: bool,
    kind: str | None,
    source: str | None,
    active: bool,
    db_path: Path | None,
    config_path: Path | None,
) -> None:
    """Show the list entries."""
    config = _config(db_path, config_path)
    now = _now()

    async def go() -> list[Entry]:
        async with _reading(config) as store:
            return await store.entries(
                kind=ListKind(kind) if kind else None,
                source=source,
                active_at=now if active else None,
            )

    entries = _run(go())
    if as_json:
        _print_json([_entry_dict(e) for e in entries])
        return
    table = Table("number", "list", "label", "source", "expires", "hits", "last seen")
    for e in entries:
        expired = e.expires_at is not None and not e.is_active(now)
        _add_row(
            table,
            e.number + ("…" if e.prefix else ""),
            e.kind.value,
            e.label,
            e.source,
            ("expired " if expired else "")
            + (e.expires_at.date().isoformat() if e.expires_at else ""),
            str(e.hits),
            e.last_seen.isoformat(timespec="seconds") if e.last_seen else "",
        )
    Console().print(table)
    click.echo(f"{len(entries)} entries")


@list_group.command("forget")
@click.argument("number", required=False)
@click.option(
    "--source",
    "sources",
    type=click.Choice([SOURCE_LEARNED, SOURCE_CALLED]),
    multiple=True,
    help="Only entries from this source (default: both learned and called).",
)
@common_options
def list_forget(
    number: str | None,
    sources: tuple[str, ...],
    db_path: Path | None,
    config_path: Path | None,
) -> None:
    """Forget what the screener learned (all of it, or NUMBER's): entries from challenge
    outcomes (learned) and from numbers staff called out (called). Manual and staff
    entries are kept."""
    config = _config(db_path, config_path)
    try:
        key = parse_list_number(number, config.region, prefix=False) if number else None
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    chosen = sources or (SOURCE_LEARNED, SOURCE_CALLED)

    async def go() -> int:
        async with Store.open(config.db_path, create=False) as store:
            return await store.forget_learned(key, chosen)

    click.echo(f"forgot {_run(go())} learned entries ({', '.join(chosen)})")


@list_group.command("import")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.option(
    "--kind",
    type=click.Choice([k.value for k in ListKind]),
    help="The list for rows that have no kind column.",
)
@click.option("--source", "source_name", help="Source name recorded on each entry.")
@click.option("--skip-bad", is_flag=True, help="Import the good rows even if some are rejected.")
@click.option("--dry-run", is_flag=True, help="Check the file and report; change nothing.")
@click.option(
    "--force",
    is_flag=True,
    help="Accept prefix rules that cover a whole country code or over 10% of the home plan.",
)
@common_options
def list_import(
    file: Path,
    kind: str | None,
    source_name: str | None,
    skip_bad: bool,
    dry_run: bool,
    force: bool,
    db_path: Path | None,
    config_path: Path | None,
) -> None:
    """Import entries from a CSV FILE with a header row (all or nothing by default)."""
    config = _config(db_path, config_path)
    source = f"import:{source_name or ('stdin' if str(file) == '-' else file.name)}"
    if str(file) != "-" and not file.exists():
        raise InputError(f"{file}: no such file")
    try:
        stream = sys.stdin.buffer if str(file) == "-" else file.open("rb")
    except OSError as exc:
        raise InputError(f"{file}: cannot read: {exc.strerror}") from exc
    # A progress bar on long files read from disk, when someone is watching (stderr is a tty).
    size = _file_size(file) if str(file) != "-" and sys.stderr.isatty() else 0
    now = _now()
    rows = iter_staged(
        stream,
        region=config.region,
        default_kind=ListKind(kind) if kind else None,
        source=source,
        now=now,
        broad=force,
    )
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=size < PROGRESS_MIN_BYTES,
    )

    async def go() -> _Imported:
        # A dry run stages into a scratch database: the real one is neither created nor locked.
        async with (
            Store.open(":memory:" if dry_run else config.db_path) as store,
            store.stage_import() as stage,
        ):
            reading = bar.add_task("checking ", total=max(size, 1))
            found = await _stage_rows(
                rows, stage, lambda: bar.update(reading, completed=_tell(stream))
            )
            bar.update(reading, completed=size)
            repeats, first_repeats = await stage.duplicates(limit=MAX_REJECTS_SHOWN)
            found.add_repeats(repeats, first_repeats)
            found.report(file)
            if found.rejected and not skip_bad:
                raise InputError(
                    f"{file}: {found.rejected} of {found.rows} rows rejected; nothing imported "
                    "(fix them, or use --skip-bad to import the rest)"
                )
            if dry_run:
                return found
            bar.add_task("importing", total=None)
            found.result = await stage.apply(now)
            return found

    with stream, bar:
        found = _run(go())
    imported = found.rows - found.rejected
    if found.result is None:
        click.echo(f"{imported} rows would be imported; nothing changed (--dry-run)")
        return
    skipped = f", {found.rejected} rejected rows skipped" if found.rejected else ""
    click.echo(
        f"imported {imported} entries "
        f"({found.result.added} new, {found.result.replaced} replaced){skipped}"
    )


@dataclass
class _Imported:
    """What an import found: row and reject counts, the first rejects by line, the result."""

    rows: int = 0
    rejected: int = 0
    first: list[Reject] = field(default_factory=list)
    result: ImportResult | None = None

    def add(self, reject: Reject) -> None:
        self.rejected += 1
        if len(self.first) < MAX_REJECTS_SHOWN:
            self.first.append(reject)

    def add_repeats(self, count: int, first: list[tuple[int, int, str, bool]]) -> None:
        self.rejected += count
        repeats = [
            Reject(line, duplicate_reason(seen), number + (" (prefix)" if prefix else ""))
            for line, seen, number, prefix in first
        ]
        self.first = sorted(self.first + repeats, key=lambda r: r.line)[:MAX_REJECTS_SHOWN]

    def report(self, file: Path) -> None:
        for reject in self.first:
            click.echo(f"{file}:{reject.line}: {reject.reason}: {_safe(reject.text)}", err=True)
        if self.rejected > len(self.first):
            click.echo(f"... and {self.rejected - len(self.first)} more rejected rows", err=True)


async def _stage_rows(
    rows: Iterable[Staged | Reject], stage: ImportStage, progress: Callable[[], None]
) -> _Imported:
    """Parse and stage every row, a batch at a time: memory holds two batches, never the file.

    SQLite writes one batch on its own thread while this one parses the next (the two overlap
    on two cores: SQLite lets go of the GIL while it works).
    """
    found = _Imported()
    batch: list[Staged] = []
    writing: asyncio.Future[None] | None = None
    try:
        for item in rows:
            found.rows += 1
            if isinstance(item, Reject):
                found.add(item)
                continue
            batch.append(item)
            if len(batch) >= IMPORT_BATCH:
                if writing is not None:
                    await writing
                writing = asyncio.ensure_future(stage.add_rows(batch))
                await asyncio.sleep(0)  # let it hand the batch to SQLite's thread, then go on
                batch = []
                progress()
    finally:
        if writing is not None and not writing.done():
            # Never leave a write in flight behind us (the parse failed, or ^C).
            await asyncio.gather(writing, return_exceptions=True)
    if writing is not None:
        await writing
    await stage.add_rows(batch)
    return found


@list_group.command("export")
@click.argument(
    "file", required=False, default="-", type=click.Path(dir_okay=False, allow_dash=True)
)
@click.option("--kind", type=click.Choice([k.value for k in ListKind]), help="Only this list.")
@click.option("--source", help="Only entries from this source.")
@common_options
def list_export(
    file: str, kind: str | None, source: str | None, db_path: Path | None, config_path: Path | None
) -> None:
    """Export entries as CSV to FILE (default: standard output)."""
    config = _config(db_path, config_path)

    async def go(out: TextIO) -> None:
        async with _reading(config) as store:
            # Streamed a page at a time: memory does not grow with the list.
            await write_csv_async(
                store.iter_entries(kind=ListKind(kind) if kind else None, source=source), out
            )

    if file == "-":
        _run(go(sys.stdout))
        return
    target = Path(file)
    partial = target.with_name(target.name + ".partial")
    try:
        with partial.open("w", encoding="utf-8", newline="") as out:
            _run(go(out))
        partial.replace(target)  # never leave a half-written export under the real name
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise InputError(f"{file}: cannot write: {exc.strerror}") from exc
    except BaseException:
        partial.unlink(missing_ok=True)  # a database error (or ^C) leaves nothing behind
        raise
