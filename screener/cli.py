"""The ``screener`` command: a thin shell over the library (no SQL and no policy here).

Exit codes: 0 success; 1 unexpected failure (a bug: please report it); 2 bad input or usage;
3 bad configuration; 4 database unusable; 5 Asterisk (AMI) unreachable; 6 AMI login refused;
7 a notification channel failed; 8 the shared list's PostgreSQL unusable.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import stat
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TextIO, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from screener import __version__
from screener.config import Config, load_config
from screener.errors import InputError, ScreenerError, StoreCorruptError
from screener.log import configure_logging, dumps
from screener.numbers import broad_prefix, parse_list_number
from screener.policy import SOURCE_CALLED, SOURCE_LEARNED, SOURCE_MANUAL, Entry, ListKind
from screener.screening import screen
from screener.store import CallRecord, ImportResult, ImportStage, Store
from screener.transfer import Reject, Staged, duplicate_reason, iter_staged, write_csv_async
from screener.when import parse_future, parse_past

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

# Progress bars only for files at least this long (bytes); short imports just print the result.
PROGRESS_MIN_BYTES = 256 * 1024
# Rows parsed between two writes to the staging table, and rejected rows printed at most.
IMPORT_BATCH = 10_000
MAX_REJECTS_SHOWN = 50


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


def _past(text: str | None) -> dt.datetime | None:
    """A --since/--at value (``2h`` ago, or an ISO time); None when not given."""
    if not text:
        return None
    try:
        return parse_past(text, _now())
    except ValueError as exc:
        raise InputError(str(exc)) from exc


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


def _print_json(value: Any) -> None:
    click.echo(dumps(value, indent=2))


def _safe(text: str) -> str:
    """Caller data is attacker-controlled: never let it drive the terminal."""
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)


def _add_row(table: Table, *cells: str) -> None:
    """A table row of plain text: rich would read ``[red]`` or ``[link=...]`` as markup (and
    raise on an unbalanced ``[/x]``), so every cell is a ``Text`` with non-printables escaped."""
    table.add_row(*(Text(_safe(cell)) for cell in cells))


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


# ---- lists ---------------------------------------------------------------------------------


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


# ---- explaining and history -----------------------------------------------------------------


@main.command("check")
@click.argument("number")
@click.option("--did", help="The office number that was called (per-DID policy).")
@click.option("--at", "at", metavar="WHEN", help="Decide as if at this ISO time (hours policy).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@common_options
def check(
    number: str,
    did: str | None,
    at: str | None,
    as_json: bool,
    db_path: Path | None,
    config_path: Path | None,
) -> None:
    """Explain where a call from NUMBER would go, and why, without a call."""
    config = _config(db_path, config_path)
    now = _past(at) or _now()

    async def go() -> Any:
        async with _reading(config) as store:
            return await screen(store, number, config.policy, config.region, now, did)

    result = _run(go())
    if as_json:
        _print_json(result.as_dict())
        return
    click.echo(f"{_safe(number)} → {result.decision.route.value}  (rule: {result.decision.rule})")
    for reason in result.decision.reasons:
        click.echo(f"  - {_safe(reason)}")


def _call_dict(call: CallRecord) -> dict[str, Any]:
    return {
        "call_id": call.call_id,
        "received_at": call.received_at.isoformat(),
        "number": call.raw_number,
        "name": call.raw_name,
        "e164": call.e164,
        "category": call.category,
        "did": call.did,
        "route": call.route,
        "rule": call.rule,
        "reasons": list(call.reasons),
        "latency_ms": call.latency_ms,
        "outcome": call.outcome,
        "voicemail": call.voicemail,
        "fallback": call.fallback,
    }


@main.command("calls")
@click.option("--since", metavar="WHEN", help="Only calls since then: 1h, 2d, or an ISO time.")
@click.option("--limit", type=click.IntRange(1, 100000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON list.")
@click.option("--recordings", is_flag=True, help="Only recorded calls, with their files.")
@common_options
def calls(
    since: str | None,
    limit: int,
    as_json: bool,
    recordings: bool,
    db_path: Path | None,
    config_path: Path | None,
) -> None:
    """Show recent screening decisions, newest first."""
    config = _config(db_path, config_path)
    start = _past(since)

    async def go() -> tuple[
        list[CallRecord], dict[str, tuple[str, float | None]], dict[str, tuple[str, str | None]]
    ]:
        async with _reading(config) as store:
            found = await store.calls(since=start, limit=limit if not recordings else 100000)
            files = await store.recordings([c.call_id for c in found])
            chosen = await store.staff_choices([c.call_id for c in found]) if as_json else {}
            return found, files, chosen

    records, files, chosen = _run(go())
    if recordings:
        records = [c for c in records if c.call_id in files][:limit]

    def recording(call_id: str) -> dict[str, Any] | None:
        if call_id not in files:
            return None
        path, seconds = files[call_id]
        return {"path": path, "seconds": seconds}

    if as_json:
        _print_json(
            [
                {
                    **_call_dict(c),
                    "recording": recording(c.call_id),
                    # What the staff phone chose (announce screening, or *0), and which phone.
                    "staff_choice": chosen.get(c.call_id, (None, None))[0],
                    "staff_choice_by": chosen.get(c.call_id, (None, None))[1],
                }
                for c in records
            ]
        )
        return
    if recordings:
        listing = Table("time", "caller", "route", "seconds", "file")
        for c in records:
            path, seconds = files[c.call_id]
            _add_row(
                listing,
                c.received_at.astimezone().isoformat(timespec="seconds"),
                c.e164 or c.raw_number or "(none)",
                c.route,
                "" if seconds is None else f"{seconds:.0f}",
                path,
            )
        Console().print(listing)
        click.echo(f"{len(records)} recorded calls")
        return
    table = Table("time", "caller", "category", "route", "outcome", "why", "ms")
    for c in records:
        _add_row(
            table,
            c.received_at.astimezone().isoformat(timespec="seconds"),
            c.e164 or c.raw_number or "(none)",
            c.category,
            c.route + (" (fallback)" if c.fallback else ""),
            (c.outcome or "") + (f" vm:{c.voicemail}" if c.voicemail else ""),
            c.reasons[-1] if c.reasons else "",
            f"{c.latency_ms:.1f}",
        )
    Console().print(table)
    click.echo(f"{len(records)} calls")


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
def doctor(db_path: Path | None, config_path: Path | None) -> None:
    """Run SQLite's full integrity check on the database (reads every page; never writes).

    Opening the database only checks what is cheap (header, application id, schema version),
    so run this after a crash or a disk problem; `screener run` runs it by itself after a run
    that did not stop cleanly. Exit code 4 when the database is damaged.
    """
    from screener import marker

    config = _config(db_path, config_path)

    async def go() -> tuple[str, int]:
        async with Store.open(config.db_path, readonly=True, create=False) as store:
            findings = await store.integrity_check()
            return findings, await store.count_entries() if findings == "ok" else 0

    findings, count = _run(go())
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
    click.echo(f"database {config.db_path}: integrity ok ({count} list entries)")


# ---- notifications (issue 13) --------------------------------------------------------------


@main.group("notify")
def notify_group() -> None:
    """Notifications: what was delivered, and a test through every channel."""


@notify_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@common_options
def notify_status(as_json: bool, db_path: Path | None, config_path: Path | None) -> None:
    """Show each configured channel's deliveries: done, waiting (retried), given up."""
    config = _config(db_path, config_path)
    channels = config.notify.channels
    since = _now() - dt.timedelta(hours=config.notify.max_age_hours)

    async def go() -> tuple[int, list[Any]]:
        async with _reading(config) as store:
            return await store.count_outbox(), await store.delivery_status(channels, since=since)

    total, statuses = _run(go())
    if as_json:
        _print_json(
            {
                "outbox": total,
                "channels": [
                    {
                        "channel": s.channel,
                        "delivered": s.delivered,
                        "waiting": s.waiting,
                        "given_up": s.given_up,
                        "last_delivered_at": s.last_delivered_at.isoformat()
                        if s.last_delivered_at
                        else None,
                        "last_error": s.last_error,
                    }
                    for s in statuses
                ],
            }
        )
        return
    if not channels:
        click.echo("no notification channel configured ([notify] in the config file)")
    table = Table("channel", "delivered", "waiting", "given up", "last delivered", "last error")
    for s in statuses:
        _add_row(
            table,
            s.channel,
            str(s.delivered),
            str(s.waiting),
            str(s.given_up),
            s.last_delivered_at.astimezone().isoformat(timespec="seconds")
            if s.last_delivered_at
            else "-",
            s.last_error or "",
        )
    Console().print(table)
    click.echo(f"{total} events in the outbox")


@notify_group.command("test")
@common_options
def notify_test(db_path: Path | None, config_path: Path | None) -> None:
    """Send a test message through every configured channel and report each result."""
    from screener.errors import NotifyError
    from screener.notify.sender import send_test

    config = _config(db_path, config_path)
    if not config.notify.channels:
        raise InputError("no notification channel configured ([notify] in the config file)")
    results = _run(send_test(config, _now()))
    for channel, error in results:
        click.echo(f"{channel}: " + ("delivered" if error is None else f"failed: {error}"))
    failed = [channel for channel, error in results if error is not None]
    if failed:
        raise NotifyError(f"not delivered through {', '.join(failed)}")


# ---- web console users ----------------------------------------------------------------------


@main.group("user")
def user_group() -> None:
    """Manage the web console's users (admin or staff) and their API tokens."""


def _read_password(password_file: Path | None) -> str:
    """The new password: the first line of --password-file, or typed twice at the terminal."""
    from screener.users import check_password

    if password_file is not None:
        try:
            text = password_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{password_file}: cannot read the password: {exc}") from exc
        password = text.splitlines()[0] if text else ""
    else:
        password = click.prompt("password", hide_input=True, confirmation_prompt=True)
    try:
        return check_password(password)
    except ValueError as exc:
        raise InputError(str(exc)) from exc


def _webstore(config: Config, *, create: bool = True) -> Any:
    """The console's store for the configured database, migrated (and created if allowed)."""
    from screener.webstore import WebStore

    async def migrate() -> None:
        async with Store.open(config.db_path, create=create):
            pass

    _run(migrate())
    return WebStore.open(config.db_path)


_password_file = click.option(
    "--password-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Read the password from this file's first line instead of the terminal.",
)


@user_group.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["admin", "staff"]), required=True)
@_password_file
@common_options
def user_add(
    name: str,
    role: str,
    password_file: Path | None,
    db_path: Path | None,
    config_path: Path | None,
) -> None:
    """Add the console user NAME with a role: staff view, block and allow; admins do all."""
    from screener.users import Role, check_name, hash_password

    try:
        check_name(name)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    config = _config(db_path, config_path)
    password = _read_password(password_file)
    with _webstore(config) as store:
        user = store.add_user(name, Role(role), hash_password(password), _now())
    click.echo(f"added {user.role} {user.name}")


@user_group.command("remove")
@click.argument("name")
@common_options
def user_remove(name: str, db_path: Path | None, config_path: Path | None) -> None:
    """Remove the console user NAME and their API tokens."""
    config = _config(db_path, config_path)
    with _webstore(config, create=False) as store:
        if not store.remove_user(name, _now()):
            raise InputError(f"no user {name}")
    click.echo(f"removed {name}")


@user_group.command("passwd")
@click.argument("name")
@_password_file
@common_options
def user_passwd(
    name: str, password_file: Path | None, db_path: Path | None, config_path: Path | None
) -> None:
    """Set a new password for NAME; their open sessions end."""
    from screener.users import hash_password

    config = _config(db_path, config_path)
    password = _read_password(password_file)
    with _webstore(config, create=False) as store:
        if not store.set_password(name, hash_password(password), _now()):
            raise InputError(f"no user {name}")
    click.echo(f"password of {name} changed; their sessions have ended")


@user_group.command("token")
@click.argument("name")
@common_options
def user_token(name: str, db_path: Path | None, config_path: Path | None) -> None:
    """Make a new API bearer token for NAME and print it (once: only its hash is kept)."""
    from screener.users import new_token, token_digest

    config = _config(db_path, config_path)
    token = new_token()
    with _webstore(config, create=False) as store:
        if not store.add_token(name, token_digest(token), _now()):
            raise InputError(f"no user {name}")
    click.echo(token)


@user_group.command("list")
@common_options
def user_list(db_path: Path | None, config_path: Path | None) -> None:
    """Show the console users and their roles."""
    config = _config(db_path, config_path)
    with _webstore(config, create=False) as store:
        for user in store.users():
            click.echo(f"{user.name}\t{user.role}")


# ---- web console ----------------------------------------------------------------------------


@main.command("web")
@click.option(
    "--host",
    envvar="SCREENER_WEB_HOST",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (put a TLS reverse proxy in front)  [env: SCREENER_WEB_HOST]",
)
@click.option(
    "--port",
    envvar="SCREENER_WEB_PORT",
    type=click.IntRange(1, 65535),
    default=8080,
    show_default=True,
    help="Port to listen on  [env: SCREENER_WEB_PORT]",
)
@click.option(
    "--voicemail-dir",
    envvar="SCREENER_VOICEMAIL_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="The office mailbox folder (…/voicemail/office/100)  [env: SCREENER_VOICEMAIL_DIR]",
)
@common_options
def web(
    host: str,
    port: int,
    voicemail_dir: Path | None,
    db_path: Path | None,
    config_path: Path | None,
) -> None:
    """Serve the web console (calls, lists, voicemail) for office staff."""
    import ipaddress

    import uvicorn

    from screener.voicemail import Mailbox
    from screener.web.app import create_app
    from screener.web.core import Console

    config = _config(db_path, config_path)
    configure_logging(config.log_format, config.log_level)
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        click.echo(
            f"screener: warning: listening on {host}, not loopback; use TLS in front", err=True
        )
    # Like `screener run`, never on a database made up by a typo in --db.
    with _webstore(config, create=False) as store:
        console = Console(
            store=store,
            policy=config.policy,
            region=config.region,
            mailbox=Mailbox(voicemail_dir) if voicemail_dir else None,
            secret=store.secret_key(),
        )
        if not store.users():
            click.echo(
                "screener: warning: no users yet; add one with "
                "`screener user add NAME --role admin`",
                err=True,
            )
        # Count the 30 days of the dashboard now (settled days are kept), not on the first load.
        store.dashboard(_now(), console.tz)
        click.echo(f"screener web: http://{host}:{port}/", err=True)
        uvicorn.run(
            create_app(console),
            host=host,
            port=port,
            proxy_headers=True,
            forwarded_allow_ips="127.0.0.1",
            log_level="warning",
            server_header=False,
            timeout_graceful_shutdown=5,  # live streams would otherwise hold a stop for minutes
        )


# ---- prompts -------------------------------------------------------------------------------


@main.group("prompts")
def prompts_group() -> None:
    """The prompts callers hear, rendered from the configured text."""


@prompts_group.command(
    "build",
    epilog='Japanese voice: HTS voice "Mei" (CC-BY 3.0), Nagoya Institute of Technology, '
    "rendered with Open JTalk (pyopenjtalk-plus; pip install 'screener[voice]').",
)
@click.option(
    "--lang",
    type=click.Choice(["ja", "en"]),
    default="ja",
    show_default=True,
    help="Language to render (en: nothing to render, Asterisk's core sounds are used).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/usr/share/asterisk/sounds"),
    show_default=True,
    help="Asterisk's sounds folder; files go to OUT/<lang>/screener/ and OUT/<lang>/digits/.",
)
@click.option("--force", is_flag=True, help="Also replace files screener did not make.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@common_options
def prompts_build(
    lang: str,
    out: Path,
    force: bool,
    as_json: bool,
    db_path: Path | None,
    config_path: Path | None,
) -> None:
    """Render every prompt the dialplan plays, offline, from [prompts.<lang>] in the config.

    8 kHz 16-bit mono WAV. A prompt whose text did not change is not rewritten.
    """
    from screener import prompts  # numpy and scipy load only for this command

    config = _config(db_path, config_path)
    if lang not in prompts.RENDERED:
        click.echo(f"{lang}: nothing to render; the dialplan plays Asterisk's core sounds")
        return
    words = prompts.words_for(config.prompt_words.get(lang))
    texts = prompts.prompt_texts(words, config.policy.hours)
    report = prompts.build(texts, out, lang, force=force)
    if as_json:
        _print_json(report.as_dict())
        return
    click.echo(
        f"{report.folder}: {len(report.written)} written, {len(report.unchanged)} unchanged"
        f" ({report.bytes / 1024:.0f} KiB, {report.audio_seconds:.1f} s of speech)"
        f" in {report.seconds:.2f} s"
    )
    for name in report.foreign:
        click.echo(f"kept {name}: not made by screener (--force replaces it)", err=True)
    click.echo(prompts.VOICE_ATTRIBUTION)


# ---- many sites, one list (issue 15) ---------------------------------------------------------


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
