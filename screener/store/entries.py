"""The allow/block list entries: the lookup on the call path (one index probe per
prefix), edits, listings, exports and counts; the entries table's row mapping."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import AsyncIterator, Sequence
from typing import Any

from screener.errors import StoreError, StoreLockedError
from screener.policy import SOURCE_CALLED, SOURCE_LEARNED, Entry, ListKind
from screener.store.base import StoreBase
from screener.store.common import _translate, from_ts, to_opt_ts, to_ts
from screener.store.schema import COUNT_LISTS

# The entries table: its columns, its upsert and its row mapping, here only (the console's
# synchronous connection, screener/webstore.py, uses them too).
ENTRY_COLUMNS = (
    "id, kind, number, prefix, label, source, created_at, expires_at, note, hits, last_seen"
)

# The new entry replaces the old one wholesale; only the id (and so the row) is kept.
UPSERT_ENTRY = """
    INSERT INTO entries (kind, number, prefix, label, source, created_at, expires_at, note,
                         hits, last_seen)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (number, prefix) DO UPDATE SET
        kind = excluded.kind, label = excluded.label, source = excluded.source,
        created_at = excluded.created_at, expires_at = excluded.expires_at,
        note = excluded.note, hits = excluded.hits, last_seen = excluded.last_seen
"""

_ITER_CHUNK = 5000


def entry_params(entry: Entry) -> tuple[Any, ...]:
    return (
        str(entry.kind),
        entry.number,
        1 if entry.prefix else 0,
        entry.label,
        entry.source,
        to_ts(entry.created_at),
        to_opt_ts(entry.expires_at),
        entry.note,
        entry.hits,
        to_opt_ts(entry.last_seen),
    )


# ListKind(text) goes through the enum's lookup machinery; a dict takes an eighth of the time
# (on the call path, for every row a lookup finds). An unknown kind still raises ValueError.
_KINDS = {str(kind): kind for kind in ListKind}


def entry_from_row(row: Sequence[Any]) -> Entry:
    created = from_ts(row[6])
    assert created is not None  # NOT NULL column
    # Positional, in Entry's field order (kind ... last_seen, id): a fifth cheaper than by
    # keyword (tests/test_store.py checks every column lands in its field).
    return Entry(
        _KINDS.get(row[1]) or ListKind(row[1]),
        row[2],
        row[3] == 1,
        row[4],
        row[5],
        created,
        None if row[7] is None else from_ts(row[7]),
        row[8],
        row[9],
        None if row[10] is None else from_ts(row[10]),
        row[0],
    )


def _prefixes(e164: str) -> list[str]:
    """Every prefix of ``e164`` a prefix rule could key on: ``+8`` up to the whole number."""
    return [e164[:n] for n in range(2, len(e164) + 1)]


def _lookup_sql(count: int) -> str:
    marks = ", ".join("?" * count)
    return f"SELECT {ENTRY_COLUMNS} FROM entries WHERE number IN ({marks})"  # noqa: S608


# One statement per number of candidates (E.164 has at most 15 digits): built once.
_LOOKUP_SQL = {count: _lookup_sql(count) for count in range(1, 17)}


# The rules a number could fall under (prefix_heads, kept by triggers, says which heads and
# lengths rules have), then the number's own rows: read in one statement, so a rule added by
# any process counts at once. A join per head length rather than ``number IN (subquery)``: the
# IN built an ephemeral table on every lookup, which cost as much as the number's own probe.
# Rules of a head shorter than four characters have that head's length, so the branches give
# the rules shortest first, and the number's own rows (exact, then a rule on the whole number)
# come last: the order of the entries index, as the lookup of every prefix gave them.
_ENTRY_COLUMNS_OF_E = ", ".join(f"e.{name.strip()}" for name in ENTRY_COLUMNS.split(","))
_LOOKUP_BY_HEADS = " UNION ALL ".join(
    [
        *(
            f"SELECT {_ENTRY_COLUMNS_OF_E} FROM prefix_heads h"  # noqa: S608  # fixed text
            " JOIN entries e ON e.number = substr(?1, 1, h.length) AND e.prefix = 1"
            f" WHERE h.head = substr(?1, 1, {size}) AND h.length >= 2 AND h.length < length(?1)"
            for size in (2, 3, 4)
        ),
        f"SELECT {ENTRY_COLUMNS} FROM entries WHERE number = ?1",  # noqa: S608  # fixed text
    ]
)


def _lookup(db: sqlite3.Connection, e164: str, candidates: list[str] | None = None) -> list[Entry]:
    """The entries for ``e164`` (see :meth:`Store.lookup`). With ``candidates``, every one of
    them is probed (the lookup before migration 9: the reference its answers are tested on)."""
    if candidates is None:
        # One statement: the number's own probe, and one for each prefix a rule could be.
        # fetchall: the statement is done before any row is mapped, so that an error while
        # mapping never keeps it (and the loop connection's read snapshot) open.
        return [entry_from_row(row) for row in db.execute(_LOOKUP_BY_HEADS, (e164,)).fetchall()]
    sql = _LOOKUP_SQL.get(len(candidates)) or _lookup_sql(len(candidates))
    rows = db.execute(sql, candidates).fetchall()
    return [
        entry_from_row(row)
        for row in rows
        if row[3] == 1 or row[2] == e164  # exact entries key on the whole number only
    ]


def _get(db: sqlite3.Connection, number: str, prefix: bool) -> Entry | None:
    row = db.execute(
        f"SELECT {ENTRY_COLUMNS} FROM entries WHERE number = ? AND prefix = ?",  # noqa: S608
        (number, int(prefix)),
    ).fetchone()
    return None if row is None else entry_from_row(row)


def _upsert(db: sqlite3.Connection, entry: Entry) -> Entry:
    row = db.execute(UPSERT_ENTRY + f" RETURNING {ENTRY_COLUMNS}", entry_params(entry)).fetchone()
    assert row is not None  # an upsert always returns its row
    return entry_from_row(row)


def _learn(db: sqlite3.Connection, entry: Entry, now: dt.datetime) -> bool:
    existing = _get(db, entry.number, entry.prefix)
    if existing is not None and not existing.is_learned and existing.is_active(now):
        return False  # the office's own word wins
    _upsert(db, entry)
    return True


class EntriesStore(StoreBase):
    """The list entries' part of :class:`~screener.store.Store`."""

    async def lookup(self, e164: str) -> list[Entry]:
        """The exact entry for ``e164`` and every prefix rule it falls under, expired or not.

        On the event loop's thread when the store was opened with ``loop_lookups`` (see
        :meth:`open`), else on the database thread.
        """
        if len(e164) < 2:
            return []
        loop_db = self._loop_db
        if loop_db is not None:
            # What _guard does, without its generator: the context manager cost a tenth of the
            # lookup on the call path.
            try:
                return _lookup(loop_db, e164)
            except sqlite3.Error as exc:
                error = _translate(exc, self.path, "lookup")
                if not isinstance(error, StoreLockedError):
                    raise error from exc
                # Busy (never a writer's lock in WAL mode): this one waits on the thread.
                self.loop_fallbacks += 1
            except UnicodeEncodeError as exc:
                raise StoreError(
                    f"database {self.path}: lookup: text is not valid Unicode"
                ) from exc
        return await self._call("lookup", lambda db: _lookup(db, e164))

    async def get(self, number: str, prefix: bool) -> Entry | None:
        """The entry stored for the key (number, prefix), if any."""
        return await self._call("get", lambda db: _get(db, number, prefix))

    async def add(self, entry: Entry) -> tuple[Entry, Entry | None]:
        """Store ``entry``, replacing any entry with its key; returns (stored, previous)."""

        def add(db: sqlite3.Connection) -> tuple[Entry, Entry | None]:
            previous = _get(db, entry.number, entry.prefix)
            return _upsert(db, entry), previous

        return await self._in_transaction("add", add)

    async def learn(self, entry: Entry, now: dt.datetime) -> bool:
        """Store a learned entry unless an active manual entry holds its key; True if stored."""
        if entry.source != SOURCE_LEARNED:
            raise ValueError(f"learn() takes learned entries, not {entry.source!r} ones")
        return await self._in_transaction("learn", lambda db: _learn(db, entry, now))

    async def remove(self, number: str, prefix: bool) -> Entry | None:
        """Delete the entry for the key (number, prefix); returns it, or None if there was none."""
        sql = f"DELETE FROM entries WHERE number = ? AND prefix = ? RETURNING {ENTRY_COLUMNS}"  # noqa: S608
        rows = await self._fetchall("remove", sql, (number, int(prefix)))
        return entry_from_row(rows[0]) if rows else None

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
            params.append(to_ts(active_at))
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
            f"SELECT {ENTRY_COLUMNS} FROM entries {clause} ORDER BY number, prefix",  # noqa: S608
            params,
        )
        return [entry_from_row(row) for row in rows]

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
                f"SELECT {ENTRY_COLUMNS} FROM entries {clause}"  # noqa: S608
                " ORDER BY number, prefix LIMIT ?",
                [*page_params, chunk],
            )
            for row in rows:
                yield entry_from_row(row)
            if len(rows) < chunk:
                return
            after = (rows[-1][2], rows[-1][3])

    async def forget_learned(
        self, number: str | None = None, sources: Sequence[str] = (SOURCE_LEARNED,)
    ) -> int:
        """Delete entries the screener made itself (``learned``, and ``called`` when asked),
        all or those for ``number``; returns how many. Never a manual or staff entry."""
        machine = {SOURCE_LEARNED, SOURCE_CALLED}
        if not sources or not set(sources) <= machine:
            raise ValueError(f"forget takes only {sorted(machine)} entries, not {list(sources)}")
        marks = ", ".join("?" * len(sources))
        sql = f"DELETE FROM entries WHERE source IN ({marks})"  # noqa: S608
        params: list[Any] = list(sources)
        if number is not None:
            sql += " AND number = ?"
            params.append(number)
        return await self._write("forget learned entries", sql, params)

    async def count_entries(self) -> int:
        """How many entries the lists hold, expired ones included (from ``list_counts``)."""
        rows = await self._fetchall("count entries", "SELECT coalesce(sum(n), 0) FROM list_counts")
        return int(rows[0][0])

    async def count_entries_by(self) -> dict[tuple[str, str], int]:
        """How many entries each (kind, source) holds, from ``list_counts`` (a few rows, kept
        by triggers: migration 10), never a scan of the entries."""
        rows = await self._fetchall(
            "count entries", "SELECT kind, source, n FROM list_counts WHERE n > 0"
        )
        return {(r[0], r[1]): int(r[2]) for r in rows}

    async def check_list_counts(self) -> tuple[int, bool]:
        """``screener doctor``'s check: the entries counted (a scan), and whether the kept
        sizes agree, both read in one read transaction (so a write meanwhile, by the running
        service, cannot make them differ)."""

        def check(db: sqlite3.Connection) -> tuple[int, bool]:
            db.execute("BEGIN")
            try:
                counted = {
                    (k, s): int(n)
                    for k, s, n in db.execute(
                        "SELECT kind, source, count(*) FROM entries GROUP BY kind, source"
                    )
                }
                kept = {
                    (k, s): int(n)
                    for k, s, n in db.execute(
                        "SELECT kind, source, n FROM list_counts WHERE n != 0"
                    )
                }
            finally:
                db.execute("COMMIT")
            return sum(counted.values()), counted == kept

        return await self._call("check list counts", check, interruptible=True)

    async def recount_lists(self) -> None:
        """Count ``list_counts`` again from the entries (``screener doctor --recount``)."""

        def recount(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM list_counts")
            db.execute(COUNT_LISTS)

        await self._in_transaction("recount list entries", recount)
