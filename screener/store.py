"""The SQLite store: allow/block list entries and the call log. All database I/O lives here.

One long-lived aiosqlite connection per :class:`Store` (its statements run in order on one
thread), in WAL mode so that readers in other processes never wait for a writer. Open it with::

    async with Store.open(path) as store:
        matches = await store.lookup("+81312345678")

No policy here: the store keeps one entry per (number, prefix) key and answers questions;
:mod:`screener.policy` decides. Timestamps are unix seconds (REAL) in the database and aware
UTC datetimes everywhere else; a naive datetime handed in is taken to be UTC.

Every ``sqlite3`` error is turned into a :class:`~screener.errors.StoreError` (locked →
:class:`~screener.errors.StoreLockedError`; not a database, malformed, not ours, or from a newer
screener → :class:`~screener.errors.StoreCorruptError`) where it enters, keeping the cause.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import sqlite3
import stat
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar, cast

import aiosqlite
import structlog

from screener.errors import StoreCorruptError, StoreError, StoreLockedError
from screener.policy import SOURCE_LEARNED, SOURCE_MANUAL, Entry, ListKind

log = structlog.get_logger(__name__)
_T = TypeVar("_T")

# Written into the SQLite header of every database screener creates ("SCRN"), so that we never
# mistake someone else's database for ours, nor migrate it.
APPLICATION_ID = 0x5343524E

# Shown when a database is missing and the caller asked us not to create one. The CLI names the
# command that does.
CREATE_HINT = "create it with `screener init` (or check the path)"


# Each migration is a sequence of statements, applied in one transaction together with the
# ``PRAGMA user_version`` bump to its 1-based position. Never edit a released migration: append.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        f"PRAGMA application_id = {APPLICATION_ID}",
        """
        CREATE TABLE entries (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('allow', 'block')),
            number TEXT NOT NULL,
            prefix INTEGER NOT NULL CHECK (prefix IN (0, 1)),
            label TEXT NOT NULL DEFAULT '',
            source TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL,
            note TEXT NOT NULL DEFAULT '',
            hits INTEGER NOT NULL DEFAULT 0,
            last_seen REAL,
            UNIQUE (number, prefix)
        )
        """,
        """
        CREATE TABLE calls (
            call_id TEXT PRIMARY KEY,
            received_at REAL NOT NULL,
            raw_number TEXT NOT NULL,
            raw_name TEXT NOT NULL,
            e164 TEXT,
            category TEXT NOT NULL,
            did TEXT,
            route TEXT NOT NULL,
            rule TEXT NOT NULL,
            reasons TEXT NOT NULL,  -- JSON list of strings
            latency_ms REAL NOT NULL,
            outcome TEXT,
            outcome_at REAL,
            voicemail TEXT,
            fallback INTEGER NOT NULL DEFAULT 0
        )
        """,
        "CREATE INDEX calls_received_at ON calls (received_at)",
        "CREATE INDEX calls_e164_outcome ON calls (e164, outcome, received_at)",
    ),
    # 2: the call's recording (MixMonitor, after the spoken warning), if any.
    (
        "ALTER TABLE calls ADD COLUMN recording_path TEXT",
        "ALTER TABLE calls ADD COLUMN recording_seconds REAL",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

_ENTRY_COLUMNS = (
    "id, kind, number, prefix, label, source, created_at, expires_at, note, hits, last_seen"
)
_CALL_COLUMNS = (
    "call_id, received_at, raw_number, raw_name, e164, category, did, route, rule, reasons,"
    " latency_ms, outcome, outcome_at, voicemail, fallback"
)
# The new entry replaces the old one wholesale; only the id (and so the row) is kept.
_UPSERT_ENTRY = """
    INSERT INTO entries (kind, number, prefix, label, source, created_at, expires_at, note,
                         hits, last_seen)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (number, prefix) DO UPDATE SET
        kind = excluded.kind, label = excluded.label, source = excluded.source,
        created_at = excluded.created_at, expires_at = excluded.expires_at,
        note = excluded.note, hits = excluded.hits, last_seen = excluded.last_seen
"""
# A second decision for a call updates the decision, unless the call already took the dialplan's
# fallback: then the route it really took stays, and the new decision's last reason (why it
# came too late) is appended. The fallback flag, once set, stays set.
_RECORD_CALL = (
    f"INSERT INTO calls ({_CALL_COLUMNS})"  # noqa: S608
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (call_id) DO UPDATE SET"
    " route = CASE WHEN calls.fallback THEN calls.route ELSE excluded.route END,"
    " rule = CASE WHEN calls.fallback THEN calls.rule ELSE excluded.rule END,"
    " reasons = CASE WHEN calls.fallback"
    " THEN json_insert(calls.reasons, '$[#]', json_extract(excluded.reasons, '$[#-1]'))"
    " ELSE excluded.reasons END,"
    " latency_ms = excluded.latency_ms,"
    " fallback = max(calls.fallback, excluded.fallback)"
)
_RECORD_FALLBACK = (
    f"INSERT INTO calls ({_CALL_COLUMNS})"  # noqa: S608
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)"
    " ON CONFLICT (call_id) DO UPDATE SET route = excluded.route, fallback = 1,"
    " reasons = json_insert(calls.reasons, '$[#]', ?)"
)
_RECORD_HIT = "UPDATE entries SET hits = hits + 1, last_seen = ? WHERE id = ?"
_FAILED_OUTCOMES = ("fail", "timeout")
_ITER_CHUNK = 5000


@dataclass(frozen=True)
class CallRecord:
    """One screened call as the call log keeps it: the raw caller ID verbatim, and the decision."""

    call_id: str
    received_at: dt.datetime
    raw_number: str
    raw_name: str
    e164: str | None
    category: str
    did: str | None
    route: str
    rule: str
    reasons: tuple[str, ...]
    latency_ms: float
    outcome: str | None = None
    outcome_at: dt.datetime | None = None
    voicemail: str | None = None
    fallback: bool = False


@dataclass(frozen=True, slots=True)
class ImportResult:
    """How many entries an import added, and how many replaced an entry with the same key."""

    added: int
    replaced: int


# --- conversions at the edge -------------------------------------------------------------------


def _ts(value: dt.datetime) -> float:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


def _opt_ts(value: dt.datetime | None) -> float | None:
    return None if value is None else _ts(value)


def _dt(value: float | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromtimestamp(value, dt.UTC)


def _entry_params(entry: Entry) -> tuple[Any, ...]:
    return (
        str(entry.kind),
        entry.number,
        1 if entry.prefix else 0,
        entry.label,
        entry.source,
        _ts(entry.created_at),
        _opt_ts(entry.expires_at),
        entry.note,
        entry.hits,
        _opt_ts(entry.last_seen),
    )


def _call_params(rec: CallRecord) -> tuple[Any, ...]:
    return (
        rec.call_id,
        _ts(rec.received_at),
        rec.raw_number,
        rec.raw_name,
        rec.e164,
        rec.category,
        rec.did,
        rec.route,
        rec.rule,
        json.dumps(list(rec.reasons), ensure_ascii=False),
        rec.latency_ms,
        rec.outcome,
        _opt_ts(rec.outcome_at),
        rec.voicemail,
        int(rec.fallback),
    )


def _fallback_params(rec: CallRecord) -> tuple[Any, ...]:
    return (*_call_params(rec)[:-1], "; ".join(rec.reasons))


def _entry_from_row(row: Sequence[Any]) -> Entry:
    created = _dt(row[6])
    assert created is not None  # NOT NULL column
    return Entry(
        id=row[0],
        kind=ListKind(row[1]),
        number=row[2],
        prefix=bool(row[3]),
        label=row[4],
        source=row[5],
        created_at=created,
        expires_at=_dt(row[7]),
        note=row[8],
        hits=row[9],
        last_seen=_dt(row[10]),
    )


def _call_from_row(row: Sequence[Any]) -> CallRecord:
    received = _dt(row[1])
    assert received is not None  # NOT NULL column
    return CallRecord(
        call_id=row[0],
        received_at=received,
        raw_number=row[2],
        raw_name=row[3],
        e164=row[4],
        category=row[5],
        did=row[6],
        route=row[7],
        rule=row[8],
        reasons=tuple(json.loads(row[9])),
        latency_ms=row[10],
        outcome=row[11],
        outcome_at=_dt(row[12]),
        voicemail=row[13],
        fallback=bool(row[14]),
    )


def _prefixes(e164: str) -> list[str]:
    """Every prefix of ``e164`` a prefix rule could key on: ``+8`` up to the whole number."""
    return [e164[:n] for n in range(2, len(e164) + 1)]


def _translate(exc: sqlite3.Error, path: str, action: str) -> StoreError:
    """The StoreError for a sqlite3 error met while doing ``action`` on the database at ``path``."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    text = str(exc)
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "locked" in text:
        return StoreLockedError(
            f"database {path} is locked by another process ({action}); try again shortly"
        )
    if primary in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT) or "not a database" in text:
        return StoreCorruptError(f"database {path} is damaged or not a database ({action}): {text}")
    return StoreError(f"database {path}: {action} failed: {text}")


class Store:
    """The allow/block lists and the call log in one SQLite file. Use :meth:`open`."""

    def __init__(self, db: aiosqlite.Connection, path: str, *, readonly: bool) -> None:
        self._db = db
        self.path = path
        self.readonly = readonly
        # Every operation holds this while it talks to the connection, so that no statement of
        # one coroutine ever runs inside another's transaction (or sees its uncommitted rows).
        self._lock = asyncio.Lock()

    # --- lifecycle -----------------------------------------------------------------------------

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        create: bool = True,
        busy_timeout: float = 5.0,
        readonly: bool = False,
    ) -> AsyncIterator[Store]:
        """Open (and if need be create and migrate) the database at ``path``; always closes."""
        name = os.fspath(path)
        target, exists = _check_path(name, create=create, readonly=readonly)
        try:
            db = await aiosqlite.connect(
                target,
                uri=target.startswith("file:"),
                isolation_level=None,  # we say BEGIN and COMMIT ourselves
                timeout=busy_timeout,
            )
        except sqlite3.Error as exc:
            raise _translate(exc, name, "open") from exc
        try:
            store = cls(db, name, readonly=readonly)
            await store._setup(busy_timeout=busy_timeout, existed=exists, create=create)
            yield store
        finally:
            await db.close()

    async def _setup(self, *, busy_timeout: float, existed: bool, create: bool = True) -> None:
        with self._guard("open"):
            await self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            # Read-only checks first: nothing is written to a file until we know it is ours.
            app_id = await self._scalar("PRAGMA application_id")
            version = await self._scalar("PRAGMA user_version")
            tables = [
                r[0]
                for r in await self._db.execute_fetchall(
                    "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
                )
            ]
            fresh = app_id == 0 and version == 0 and not tables
            if fresh and not create:
                # A zero-length file (truncated, or created by hand) is not a list to screen by.
                raise StoreError(f"database {self.path} is empty; {CREATE_HINT}")
            if not fresh and app_id != APPLICATION_ID:
                what = f"tables {', '.join(tables)}" if tables else "no tables"
                raise StoreCorruptError(
                    f"{self.path} is not a screener database (application_id {app_id:#x},"
                    f" {what}); refusing to touch it"
                )
            if version > SCHEMA_VERSION:
                raise StoreCorruptError(
                    f"database {self.path} has schema version {version}, newer than this"
                    f" screener knows ({SCHEMA_VERSION}); upgrade screener"
                )
            problems = [r[0] for r in await self._db.execute_fetchall("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise StoreCorruptError(
                    f"database {self.path} failed its quick check: {'; '.join(problems[:5])}"
                )
            if self.readonly:
                if version < SCHEMA_VERSION:
                    raise StoreError(
                        f"database {self.path} needs upgrading (schema {version} <"
                        f" {SCHEMA_VERSION}); open it once without --readonly"
                    )
            else:
                mode = await self._scalar("PRAGMA journal_mode = WAL")
                if str(mode).lower() != "wal" and self.path != ":memory:":
                    log.warning("store.no_wal", path=self.path, journal_mode=mode)
                await self._db.execute("PRAGMA synchronous = NORMAL")
            await self._db.execute("PRAGMA foreign_keys = ON")
            if version < SCHEMA_VERSION:
                await self._migrate(version)
        log.info(
            "store.open",
            path=self.path,
            schema=SCHEMA_VERSION,
            created=not existed or fresh,
            readonly=self.readonly,
        )

    async def _migrate(self, version: int) -> None:
        for target, statements in enumerate(MIGRATIONS[version:], start=version + 1):
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                # Another process may have migrated while we waited for the write lock.
                current = await self._scalar("PRAGMA user_version")
                if current >= target:
                    await self._db.execute("COMMIT")
                    continue
                for statement in statements:
                    await self._db.execute(statement)
                await self._db.execute(f"PRAGMA user_version = {target}")
                await self._db.execute("COMMIT")
            except BaseException:
                await self._rollback()
                raise
            log.info("store.migrate", path=self.path, schema=target)

    # --- plumbing ------------------------------------------------------------------------------

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise _translate(exc, self.path, action) from exc
        except UnicodeEncodeError as exc:
            # A str with a lone surrogate cannot be stored as UTF-8 text.
            raise StoreError(f"database {self.path}: {action}: text is not valid Unicode") from exc

    async def _scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        async with self._db.execute(sql, params) as cursor:
            row = await cursor.fetchone()
        return None if row is None else row[0]

    async def _rollback(self) -> None:
        # SQLite has already rolled back after some errors; then there is nothing to undo.
        with suppress(sqlite3.Error):
            await self._db.execute("ROLLBACK")

    @asynccontextmanager
    async def _transaction(self, action: str) -> AsyncIterator[None]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error, under the lock."""
        async with self._lock:
            with self._guard(action):
                await self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield
                    await self._db.execute("COMMIT")
                except BaseException:
                    await self._rollback()
                    raise

    async def _fetchall(self, action: str, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        async with self._lock:
            with self._guard(action):
                return list(await self._db.execute_fetchall(sql, params))

    async def _on_thread(self, function: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``function(connection)`` on the connection's own thread, in one trip.

        Each awaited aiosqlite call is a round trip to its thread (and a wait for the GIL on the
        way back); a transaction of N statements made of them costs N + 2 trips. aiosqlite runs
        every call as a function queued to that thread (``_execute``) on the ``sqlite3``
        connection only that thread uses (``_conn``): queuing our own function there keeps the
        one-thread-per-connection rule with a single trip. Call it holding ``self._lock``.
        """
        db = self._db
        result = await db._execute(lambda: function(db._conn))  # type: ignore[no-untyped-call]  # aiosqlite's queue to its thread is untyped
        return cast(_T, result)

    async def _write(self, action: str, sql: str, params: Sequence[Any] = ()) -> int:
        """One statement in autocommit mode; returns the number of rows it changed."""
        async with self._lock:
            with self._guard(action):
                async with self._db.execute(sql, params) as cursor:
                    return cursor.rowcount

    # --- list entries --------------------------------------------------------------------------

    async def lookup(self, e164: str) -> list[Entry]:
        """The exact entry for ``e164`` and every prefix rule it falls under, expired or not."""
        candidates = _prefixes(e164)
        if not candidates:
            return []
        marks = ", ".join("?" * len(candidates))
        # One statement, one index probe per candidate prefix, whatever the size of the table.
        rows = await self._fetchall(
            "lookup",
            f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE number IN ({marks})",  # noqa: S608
            candidates,
        )
        return [
            _entry_from_row(row) for row in rows if row[3] == 1 or row[2] == e164
        ]  # exact entries key on the whole number only

    async def get(self, number: str, prefix: bool) -> Entry | None:
        """The entry stored for the key (number, prefix), if any."""
        rows = await self._fetchall(
            "get",
            f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE number = ? AND prefix = ?",  # noqa: S608
            (number, int(prefix)),
        )
        return _entry_from_row(rows[0]) if rows else None

    async def _get_locked(self, number: str, prefix: bool) -> Entry | None:
        async with self._db.execute(
            f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE number = ? AND prefix = ?",  # noqa: S608
            (number, int(prefix)),
        ) as cursor:
            row = await cursor.fetchone()
        return None if row is None else _entry_from_row(row)

    async def _upsert_locked(self, entry: Entry) -> Entry:
        async with self._db.execute(
            _UPSERT_ENTRY + f" RETURNING {_ENTRY_COLUMNS}", _entry_params(entry)
        ) as cursor:
            row = await cursor.fetchone()
        assert row is not None  # an upsert always returns its row
        return _entry_from_row(row)

    async def add(self, entry: Entry) -> tuple[Entry, Entry | None]:
        """Store ``entry``, replacing any entry with its key; returns (stored, previous)."""
        async with self._transaction("add"):
            previous = await self._get_locked(entry.number, entry.prefix)
            stored = await self._upsert_locked(entry)
        return stored, previous

    async def learn(self, entry: Entry, now: dt.datetime) -> bool:
        """Store a learned entry unless an active manual entry holds its key; True if stored."""
        if entry.source != SOURCE_LEARNED:
            raise ValueError(f"learn() takes learned entries, not {entry.source!r} ones")
        async with self._transaction("learn"):
            existing = await self._get_locked(entry.number, entry.prefix)
            if existing is not None and not existing.is_learned and existing.is_active(now):
                return False  # the office's own word wins (the transaction commits nothing)
            await self._upsert_locked(entry)
        return True

    async def remove(self, number: str, prefix: bool) -> Entry | None:
        """Delete the entry for the key (number, prefix); returns it, or None if there was none."""
        async with self._lock:
            with self._guard("remove"):
                async with self._db.execute(
                    "DELETE FROM entries WHERE number = ? AND prefix = ?"  # noqa: S608
                    f" RETURNING {_ENTRY_COLUMNS}",
                    (number, int(prefix)),
                ) as cursor:
                    rows = list(await cursor.fetchall())
        return _entry_from_row(rows[0]) if rows else None

    @staticmethod
    def _filters(
        kind: ListKind | None, source: str | None, active_at: dt.datetime | None
    ) -> tuple[list[str], list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        if kind is not None:
            where.append("kind = ?")
            params.append(str(kind))
        if source is not None:
            where.append("source = ?")
            params.append(source)
        if active_at is not None:
            where.append("(expires_at IS NULL OR expires_at > ?)")
            params.append(_ts(active_at))
        return where, params

    async def entries(
        self,
        *,
        kind: ListKind | None = None,
        source: str | None = None,
        active_at: dt.datetime | None = None,
    ) -> list[Entry]:
        """All entries matching the filters, ordered by number then prefix."""
        where, params = self._filters(kind, source, active_at)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = await self._fetchall(
            "list entries",
            f"SELECT {_ENTRY_COLUMNS} FROM entries {clause} ORDER BY number, prefix",  # noqa: S608
            params,
        )
        return [_entry_from_row(row) for row in rows]

    async def iter_entries(
        self,
        *,
        kind: ListKind | None = None,
        source: str | None = None,
        active_at: dt.datetime | None = None,
        chunk: int = _ITER_CHUNK,
    ) -> AsyncIterator[Entry]:
        """Like :meth:`entries`, fetched ``chunk`` rows at a time, for exporting millions.

        Each chunk is its own short read (keyset pagination on the (number, prefix) index), so
        nothing is locked while the consumer works; rows changed meanwhile may or may not show.
        """
        where, params = self._filters(kind, source, active_at)
        after: tuple[str, int] | None = None
        while True:
            page_where = list(where)
            page_params = list(params)
            if after is not None:
                page_where.append("(number, prefix) > (?, ?)")
                page_params.extend(after)
            clause = f"WHERE {' AND '.join(page_where)}" if page_where else ""
            rows = await self._fetchall(
                "export entries",
                f"SELECT {_ENTRY_COLUMNS} FROM entries {clause}"  # noqa: S608
                " ORDER BY number, prefix LIMIT ?",
                [*page_params, chunk],
            )
            for row in rows:
                yield _entry_from_row(row)
            if len(rows) < chunk:
                return
            after = (rows[-1][2], rows[-1][3])

    async def forget_learned(self, number: str | None = None) -> int:
        """Delete learned entries (all, or those for ``number``); returns how many."""
        sql = "DELETE FROM entries WHERE source = ?"
        params: list[Any] = [SOURCE_LEARNED]
        if number is not None:
            sql = "DELETE FROM entries WHERE source = ? AND number = ?"
            params = [SOURCE_LEARNED, number]
        return await self._write("forget learned entries", sql, params)

    async def record_hit(self, entry_id: int, now: dt.datetime) -> None:
        """Count one more call matched by the entry ``entry_id``, seen at ``now``."""
        await self._write("record hit", _RECORD_HIT, (_ts(now), entry_id))

    async def record_hits(self, ids: Iterable[int], now: dt.datetime) -> None:
        """Count one more call for each of ``ids`` (repeats count again), in one transaction."""
        await self.record_batch(hits=[(entry_id, now) for entry_id in ids])

    async def count_entries(self) -> int:
        """How many entries the lists hold, expired ones included."""
        rows = await self._fetchall("count entries", "SELECT count(*) FROM entries")
        return int(rows[0][0])

    async def import_entries(
        self,
        entries: Iterable[Entry] | AsyncIterable[Entry],
        *,
        batch: int = 10000,
        on_progress: Callable[[int], None] | None = None,
    ) -> ImportResult:
        """Upsert many entries in ONE transaction: all of them, or (on any error) none.

        ``on_progress`` is called after each batch with the number of entries written so far.
        Entries with the same key replace each other; later ones win. ``entries`` is consumed
        inside the write transaction, so feed it from a local file, not from the network.
        Other coroutines using this Store wait until the import ends; use a second Store (or
        process) to keep answering lookups meanwhile: WAL readers see the old lists until COMMIT.
        """
        if batch < 1:
            raise ValueError("batch must be at least 1")
        done = 0
        async with self._transaction("import"):
            before = int(await self._scalar("SELECT count(*) FROM entries"))
            async for rows in _batches(entries, batch):
                await self._db.executemany(_UPSERT_ENTRY, rows)
                done += len(rows)
                if on_progress is not None:
                    on_progress(done)
            after = int(await self._scalar("SELECT count(*) FROM entries"))
        added = after - before
        return ImportResult(added=added, replaced=done - added)

    # --- call log ------------------------------------------------------------------------------

    async def record_call(self, rec: CallRecord) -> None:
        """Log a screening decision; a second decision for the same call updates the decision."""
        await self._write("record call", _RECORD_CALL, _call_params(rec))

    async def record_calls(self, records: Iterable[CallRecord]) -> None:
        """:meth:`record_call` for many calls in ONE transaction: all of them, or none."""
        await self.record_batch(calls=records)

    async def record_batch(
        self,
        *,
        calls: Iterable[CallRecord] = (),
        fallbacks: Iterable[CallRecord] = (),
        hits: Iterable[tuple[int, dt.datetime]] = (),
    ) -> None:
        """Decisions, then fallbacks, then list hits ``(entry id, seen at)``, in ONE transaction.

        All or nothing, and one trip to the connection's thread however many rows: the service
        commits every call decided meanwhile together (group commit). Each part means what
        :meth:`record_call`, :meth:`record_fallback` and :meth:`record_hit` mean, applied in
        that order (a call's decision before its fallback; a repeated id counts again).
        """
        call_rows = [_call_params(rec) for rec in calls]
        fallback_rows = [_fallback_params(rec) for rec in fallbacks]
        hit_rows = [(_ts(seen), entry_id) for entry_id, seen in hits]
        if not (call_rows or fallback_rows or hit_rows):
            return

        def write(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                for sql, rows in (
                    (_RECORD_CALL, call_rows),
                    (_RECORD_FALLBACK, fallback_rows),
                    (_RECORD_HIT, hit_rows),
                ):
                    if rows:
                        db.executemany(sql, rows)
                db.execute("COMMIT")
            except BaseException:
                # SQLite has already rolled back after some errors; then there is nothing to undo.
                with suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise

        async with self._lock:
            with self._guard("record calls"):
                await self._on_thread(write)

    async def record_fallback(self, rec: CallRecord) -> None:
        """Log that ``rec.call_id`` took the dialplan fallback to ``rec.route``.

        A call not yet in the log is inserted as ``rec`` (with fallback set); a call that is
        keeps its decision (rule, reasons so far) and gets the route it really took, the
        fallback flag, and ``rec.reasons`` appended to its reasons.
        """
        await self._write("record fallback", _RECORD_FALLBACK, _fallback_params(rec))

    async def set_outcome(self, call_id: str, outcome: str, now: dt.datetime) -> bool:
        """Record how the challenge of ``call_id`` ended; False if the call is not in the log."""
        changed = await self._write(
            "set outcome",
            "UPDATE calls SET outcome = ?, outcome_at = ? WHERE call_id = ?",
            (outcome, _ts(now), call_id),
        )
        return changed > 0

    async def set_voicemail(self, call_id: str, status: str) -> bool:
        """Record the voicemail status of ``call_id``; False if the call is not in the log."""
        changed = await self._write(
            "set voicemail",
            "UPDATE calls SET voicemail = ? WHERE call_id = ?",
            (status, call_id),
        )
        return changed > 0

    async def set_recording(self, call_id: str, path: str, seconds: float | None) -> bool:
        """Record where the call's recording is (and, once it ended, how long it is)."""
        changed = await self._write(
            "set recording",
            "UPDATE calls SET recording_path = ?,"
            " recording_seconds = coalesce(?, recording_seconds) WHERE call_id = ?",
            (path, seconds, call_id),
        )
        return changed > 0

    async def recordings(
        self, call_ids: Sequence[str] | None = None, *, limit: int = 100
    ) -> dict[str, tuple[str, float | None]]:
        """Recorded calls: call id → (path, seconds), newest first; only ``call_ids`` if given."""
        if call_ids is not None:
            found: dict[str, tuple[str, float | None]] = {}
            for start in range(0, len(call_ids), 500):
                chunk = list(call_ids[start : start + 500])
                marks = ",".join("?" * len(chunk))
                rows = await self._fetchall(
                    "list recordings",
                    "SELECT call_id, recording_path, recording_seconds FROM calls"  # noqa: S608
                    f" WHERE recording_path IS NOT NULL AND call_id IN ({marks})",
                    chunk,
                )
                found.update({r[0]: (r[1], r[2]) for r in rows})
            return found
        rows = await self._fetchall(
            "list recordings",
            "SELECT call_id, recording_path, recording_seconds FROM calls"
            " WHERE recording_path IS NOT NULL ORDER BY received_at DESC LIMIT ?",
            (limit,),
        )
        return {r[0]: (r[1], r[2]) for r in rows}

    async def calls(
        self, *, since: dt.datetime | None = None, limit: int = 100
    ) -> list[CallRecord]:
        """The most recent calls (received at or after ``since``), newest first."""
        where, params = ("WHERE received_at >= ?", [_ts(since)]) if since else ("", [])
        rows = await self._fetchall(
            "list calls",
            f"SELECT {_CALL_COLUMNS} FROM calls {where}"  # noqa: S608
            " ORDER BY received_at DESC, call_id DESC LIMIT ?",
            [*params, limit],
        )
        return [_call_from_row(row) for row in rows]

    async def get_call(self, call_id: str) -> CallRecord | None:
        """The log record of ``call_id``, if any."""
        rows = await self._fetchall(
            "get call",
            f"SELECT {_CALL_COLUMNS} FROM calls WHERE call_id = ?",  # noqa: S608
            (call_id,),
        )
        return _call_from_row(rows[0]) if rows else None

    async def recent_failures(self, e164: str, since: dt.datetime) -> int:
        """How many calls from ``e164`` received since ``since`` failed or timed out a challenge."""
        rows = await self._fetchall(
            "count failures",
            "SELECT count(*) FROM calls WHERE e164 = ? AND outcome IN (?, ?) AND received_at >= ?",
            (e164, *_FAILED_OUTCOMES, _ts(since)),
        )
        return int(rows[0][0])

    async def integrity_check(self) -> str:
        """SQLite's full integrity check: ``"ok"``, or its findings one per line."""
        rows = await self._fetchall("integrity check", "PRAGMA integrity_check")
        return "\n".join(str(row[0]) for row in rows)


async def _batches(
    entries: Iterable[Entry] | AsyncIterable[Entry], size: int
) -> AsyncIterator[list[tuple[Any, ...]]]:
    """Parameter tuples for ``executemany``, ``size`` at a time, built without per-row awaits."""
    rows: list[tuple[Any, ...]] = []
    if isinstance(entries, AsyncIterable):
        async for entry in entries:
            rows.append(_entry_params(entry))
            if len(rows) >= size:
                yield rows
                rows = []
    else:
        for entry in entries:
            rows.append(_entry_params(entry))
            if len(rows) >= size:
                yield rows
                rows = []
    if rows:
        yield rows


def _fail(exc: OSError, message: str) -> NoReturn:
    raise StoreError(f"{message}: {exc.strerror or exc}") from exc


def _check_path(path: str, *, create: bool, readonly: bool) -> tuple[str, bool]:
    """Check the path before SQLite sees it; returns (what to connect to, whether it existed).

    SQLite's own messages ("unable to open database file") name neither the path nor the reason.
    The file itself is never opened here: closing any descriptor of a database file drops every
    POSIX lock this process holds on it, including those of SQLite connections already open
    (the service opens a writer and then a reader). Another process could then think it is the
    last user, checkpoint and reset the WAL under our writer, and commits would vanish. A file
    that is not a database is refused by SQLite itself (SQLITE_NOTADB) on the first read, before
    anything is written.
    """
    if path == ":memory:":
        return path, False
    file = Path(path)
    parent = file.parent
    try:
        os.stat(parent)
    except OSError as exc:
        _fail(exc, f"cannot open database {path}: directory {parent}")
    try:
        info = os.stat(file)
    except FileNotFoundError:
        info = None
    except OSError as exc:
        _fail(exc, f"cannot open database {path}")
    if info is None:
        if not create or readonly:
            raise StoreError(f"database {path} does not exist; {CREATE_HINT}")
        if not os.access(parent, os.W_OK):
            raise StoreError(f"cannot create database {path}: directory {parent} is not writable")
        return path, False
    if stat.S_ISDIR(info.st_mode):
        raise StoreError(f"database {path} is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise StoreError(f"database {path} is not a regular file")
    if not os.access(file, os.R_OK):
        raise StoreError(f"cannot open database {path}: permission denied")
    if readonly:
        return f"{file.absolute().as_uri()}?mode=ro", True
    if not os.access(file, os.W_OK):
        raise StoreError(f"database {path} is not writable (use readonly mode to only read it)")
    if not os.access(parent, os.W_OK):
        raise StoreError(
            f"directory {parent} is not writable; SQLite needs to create {file.name}-wal and"
            f" {file.name}-shm beside the database"
        )
    return path, True


__all__ = [
    "APPLICATION_ID",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "SOURCE_LEARNED",
    "SOURCE_MANUAL",
    "CallRecord",
    "ImportResult",
    "Store",
]
