"""Imports of many entries: in ONE transaction, or staged first (a TEMP table) so that a
streamed file is checked before the lists change."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING, Any

from screener.policy import Entry
from screener.store.base import StoreBase
from screener.store.common import _rollback, to_ts
from screener.store.entries import UPSERT_ENTRY, entry_params

if TYPE_CHECKING:
    from screener.transfer import Staged

# Staged import rows, in key order, the line kept so that a repeated key names its first line.
_STAGE_TABLE = """
    CREATE TEMP TABLE import_rows (
        number TEXT NOT NULL, prefix INTEGER NOT NULL, line INTEGER NOT NULL,
        kind TEXT NOT NULL, label TEXT NOT NULL, source TEXT NOT NULL, expires_at REAL,
        note TEXT NOT NULL,
        PRIMARY KEY (number, prefix, line)
    ) WITHOUT ROWID
"""
# One statement stages _STAGE_MANY_ROWS rows: one step of SQLite's, not one per row (per row,
# executemany costs about as much again as the insert).
_STAGE_VALUES = "(?, ?, ?, ?, ?, ?, ?, ?)"
_STAGE_ROW = (
    "INSERT INTO temp.import_rows (line, kind, number, prefix, label, source, expires_at, note)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_STAGE_MANY_ROWS = 500
_STAGE_MANY = _STAGE_ROW + f", {_STAGE_VALUES}" * (_STAGE_MANY_ROWS - 1)
_STAGE_REPEATS = """
    CREATE TEMP TABLE import_repeats AS
    SELECT line, first, number, prefix FROM (
        SELECT line, number, prefix,
               first_value(line) OVER (PARTITION BY number, prefix ORDER BY line) AS first
        FROM temp.import_rows
    ) WHERE line > first
"""
# min(line) makes SQLite take the other (bare) columns from the first row of each key. Every
# entry gets the import's created_at (the one parameter), no hits and no last_seen.
_APPLY_STAGE = """
    INSERT INTO entries (kind, number, prefix, label, source, created_at, expires_at, note,
                         hits, last_seen)
    SELECT kind, number, prefix, label, source, ?, expires_at, note, 0, NULL
    FROM (
        SELECT kind, number, prefix, label, source, expires_at, note, min(line)
        FROM temp.import_rows GROUP BY number, prefix
    ) WHERE true
    ON CONFLICT (number, prefix) DO UPDATE SET
        kind = excluded.kind, label = excluded.label, source = excluded.source,
        created_at = excluded.created_at, expires_at = excluded.expires_at,
        note = excluded.note, hits = excluded.hits, last_seen = excluded.last_seen
"""


@dataclass(frozen=True, slots=True)
class ImportResult:
    """How many entries an import added, and how many replaced an entry with the same key."""

    added: int
    replaced: int


def _executemany(sql: str, rows: list[tuple[Any, ...]]) -> Callable[[sqlite3.Connection], Any]:
    return lambda db: db.executemany(sql, rows)


class ImportStage:
    """Rows of one import staged by :meth:`Store.stage_import`, each with its line number.

    Staged rows go into one transaction of the TEMP database (the lists are not locked by it);
    it is committed before :meth:`duplicates` or :meth:`apply` read them. Every statement runs
    on the store's own database thread, like all of the store's work.
    """

    def __init__(self, store: StoreBase) -> None:
        self._store = store
        self._run = store._thread.run
        self._open = False
        self.staged = 0

    async def add_rows(self, rows: Sequence[Staged]) -> None:
        """Stage good rows as :func:`screener.transfer.iter_staged` yields them (``(line, kind,
        number, prefix, label, source, expires_at, note)``); nothing in the lists changes."""
        begin = not self._open
        many = _STAGE_MANY_ROWS
        full = len(rows) - len(rows) % many
        flat = chain.from_iterable

        def stage(db: sqlite3.Connection) -> None:
            if begin:
                db.execute("BEGIN")
            for start in range(0, full, many):
                db.execute(_STAGE_MANY, list(flat(rows[start : start + many])))
            db.executemany(_STAGE_ROW, rows[full:])

        with self._store._guard("import"):
            self._open = True
            await self._run(stage)
        self.staged += len(rows)

    async def _settle(self) -> None:
        if self._open:
            await self._run(lambda db: db.execute("COMMIT"))
            self._open = False

    async def _close(self) -> None:
        opened = self._open
        self._open = False

        def close(db: sqlite3.Connection) -> None:
            if opened:
                _rollback(db)
            with suppress(sqlite3.Error):
                db.execute("DROP TABLE IF EXISTS temp.import_repeats")
                db.execute("DROP TABLE IF EXISTS temp.import_rows")

        await self._run(close)

    async def duplicates(self, limit: int) -> tuple[int, list[tuple[int, int, str, bool]]]:
        """Rows whose key an earlier row has: how many, and the first ``limit`` of them.

        Each is ``(line, line of the first row with that key, number, prefix)``, by line.
        """
        staged = self.staged

        def find(db: sqlite3.Connection) -> tuple[int, list[Any]]:
            # Counting the keys is a plain walk of the table in key order; listing the repeats
            # (a window over it, kept in a second TEMP table) only when there are some.
            keys = db.execute(
                "SELECT count(*) FROM (SELECT 1 FROM temp.import_rows GROUP BY number, prefix)"
            ).fetchone()[0]
            if keys == staged:
                return 0, []
            db.execute("DROP TABLE IF EXISTS temp.import_repeats")
            db.execute(_STAGE_REPEATS)
            count = int(db.execute("SELECT count(*) FROM temp.import_repeats").fetchone()[0])
            rows = db.execute(
                "SELECT line, first, number, prefix FROM temp.import_repeats ORDER BY line LIMIT ?",
                (limit,),
            ).fetchall()
            return count, rows

        with self._store._guard("import"):
            await self._settle()
            count, rows = await self._run(find)
        return count, [(int(r[0]), int(r[1]), str(r[2]), bool(r[3])) for r in rows]

    async def apply(self, created_at: dt.datetime) -> ImportResult:
        """Upsert the staged rows (the first of each key) in ONE transaction, in key order,
        each created at ``created_at``."""
        created = to_ts(created_at)

        def upsert(db: sqlite3.Connection) -> tuple[int, int, int]:
            db.execute("BEGIN IMMEDIATE")
            try:
                before = int(db.execute("SELECT count(*) FROM entries").fetchone()[0])
                done = db.execute(_APPLY_STAGE, (created,)).rowcount
                after = int(db.execute("SELECT count(*) FROM entries").fetchone()[0])
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise
            return before, done, after

        with self._store._guard("import"):
            await self._settle()
            before, done, after = await self._run(upsert)
        added = after - before
        return ImportResult(added=added, replaced=done - added)


async def _batches(
    entries: Iterable[Entry] | AsyncIterable[Entry], size: int
) -> AsyncIterator[list[tuple[Any, ...]]]:
    """Parameter tuples for ``executemany``, ``size`` at a time, built without per-row awaits."""
    rows: list[tuple[Any, ...]] = []
    if isinstance(entries, AsyncIterable):
        async for entry in entries:
            rows.append(entry_params(entry))
            if len(rows) >= size:
                yield rows
                rows = []
    else:
        for entry in entries:
            rows.append(entry_params(entry))
            if len(rows) >= size:
                yield rows
                rows = []
    if rows:
        yield rows


class ImportsStore(StoreBase):
    """The imports' part of :class:`~screener.store.Store`."""

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
        count = "SELECT count(*) FROM entries"
        run = self._thread.run
        async with self._transaction("import"):
            before = int(await run(lambda db: db.execute(count).fetchone()[0]))
            async for rows in _batches(entries, batch):
                await run(_executemany(UPSERT_ENTRY, rows))
                done += len(rows)
                if on_progress is not None:
                    on_progress(done)
            after = int(await run(lambda db: db.execute(count).fetchone()[0]))
        added = after - before
        return ImportResult(added=added, replaced=done - added)

    @asynccontextmanager
    async def stage_import(self) -> AsyncIterator[ImportStage]:
        """A staging table for one streamed import; the lists are untouched until ``apply``.

        The rows wait in a TEMP table (on disk: ``temp_store = FILE``, a small page cache), so
        memory stays bounded however long the file is, and the database's write lock is taken
        only by :meth:`ImportStage.apply`, for one statement. Other coroutines using this Store
        wait until the block ends; the staged rows are dropped on the way out.
        """

        def create(db: sqlite3.Connection) -> None:
            db.execute("PRAGMA temp_store = FILE")
            db.execute(_STAGE_TABLE)

        async with self._lock:
            with self._guard("import"):
                await self._thread.run(create)
            stage = ImportStage(self)
            try:
                yield stage
            finally:
                await stage._close()
