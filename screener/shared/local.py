"""The local side of the sync: the SQLite tables of store migration 8, and nothing else.

``sync_state`` (one row) says whether this database has joined a shared list, as which site,
and how far it has applied the central change log. ``sync_outbox`` holds every change to an
entry made here (by the service, the CLI, the console: the store's triggers write it, in the
same transaction as the change) until the central store has it. ``sync_calls`` names the call
records not yet shipped, with a version so that a record changed while it was being shipped is
shipped again.

Each function here takes a ``sqlite3.Connection`` and runs on the store's database thread
(:meth:`screener.store.Store.run` / ``run_in_transaction``).
"""

from __future__ import annotations

import os
import re
import secrets
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

from screener.shared.rules import Change, Key, Row, lay
from screener.store.schema import COUNT_LISTS

_ROW_COLUMNS = "kind, number, prefix, label, source, created_at, expires_at, note"
_CALL_COLUMNS = (
    "call_id, received_at, raw_number, raw_name, e164, category, did, route, rule, reasons,"
    " latency_ms, outcome, outcome_at, voicemail, fallback"
)
# A central row applied here replaces what the entry says, and keeps this site's own hit
# counters (hits, last_seen).
_APPLY_UPSERT = f"""
    INSERT INTO entries ({_ROW_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (number, prefix) DO UPDATE SET
        kind = excluded.kind, label = excluded.label, source = excluded.source,
        created_at = excluded.created_at, expires_at = excluded.expires_at, note = excluded.note
"""  # noqa: S608  # fixed column list
_APPLY_DELETE = "DELETE FROM entries WHERE number = ? AND prefix = ?"


@dataclass(frozen=True)
class State:
    """``sync_state`` as it stands, plus the sizes of the two queues."""

    enabled: bool
    site: str | None
    last_seq: int
    central_seq: int
    synced_at: float | None
    snapshot_at: float | None
    last_error: str | None
    error_at: float | None
    outbox: int
    calls_pending: int


def state(db: sqlite3.Connection) -> State:
    """The sync's state, read in one go."""
    row = db.execute(
        "SELECT enabled, site, last_seq, central_seq, synced_at, snapshot_at, last_error,"
        " error_at, (SELECT count(*) FROM sync_outbox), (SELECT count(*) FROM sync_calls)"
        " FROM sync_state"
    ).fetchone()
    return State(
        enabled=bool(row[0]),
        site=row[1],
        last_seq=int(row[2]),
        central_seq=int(row[3]),
        synced_at=row[4],
        snapshot_at=row[5],
        last_error=row[6],
        error_at=row[7],
        outbox=int(row[8]),
        calls_pending=int(row[9]),
    )


def join(db: sqlite3.Connection, site: str) -> bool:
    """Join the shared list as ``site`` (in a transaction); True the first time.

    The first time, every entry already here goes into the outbox, so that a site that had a
    list before it joined shares it (by the conflict rule, like any change) rather than losing
    it to the first snapshot; and the calls not yet shipped are every call.
    """
    enabled = db.execute("SELECT enabled FROM sync_state").fetchone()[0]
    if enabled:
        db.execute("UPDATE sync_state SET site = ?", (site,))
        return False
    db.execute("UPDATE sync_state SET enabled = 1, site = ?", (site,))
    db.execute(
        f"INSERT INTO sync_outbox (key, op, {_ROW_COLUMNS}, changed_at)"  # noqa: S608  # fixed
        f" SELECT lower(hex(randomblob(16))), 'upsert', {_ROW_COLUMNS},"
        " (julianday('now') - 2440587.5) * 86400.0 FROM entries ORDER BY id"
    )
    db.execute("INSERT OR IGNORE INTO sync_calls (call_id, version) SELECT call_id, 1 FROM calls")
    return True


def has_outbox(db: sqlite3.Connection) -> bool:
    """Whether any local change waits for the central store (cheap: one index probe)."""
    return bool(db.execute("SELECT EXISTS (SELECT 1 FROM sync_outbox)").fetchone()[0])


def _row(values: Sequence[Any]) -> Row:
    kind, number, prefix, label, source, created_at, expires_at, note = values
    return Row(kind, number, bool(prefix), label, source, created_at, expires_at, note)


def outbox(db: sqlite3.Connection, limit: int) -> list[tuple[int, Change]]:
    """The oldest ``limit`` local changes, in the order they were made, with their row ids."""
    rows = db.execute(
        f"SELECT id, key, op, {_ROW_COLUMNS} FROM sync_outbox ORDER BY id LIMIT ?",  # noqa: S608  # fixed
        (limit,),
    ).fetchall()
    return [(r[0], Change(r[1], r[2], _row(r[3:]))) for r in rows]


def done(db: sqlite3.Connection, last_id: int) -> None:
    """The central store has every outbox row up to ``last_id``: forget them."""
    db.execute("DELETE FROM sync_outbox WHERE id <= ?", (last_id,))


def apply(db: sqlite3.Connection, rows: Iterable[tuple[int, Row]], central_seq: int) -> int:
    """Apply central rows (``(seq, row)``, in order) in the caller's transaction; the last seq.

    The caller runs this inside one transaction, so a batch is applied whole or not at all,
    together with the sequence number it reaches. A key with a local change not yet pushed
    ends as that change laid over the central row by the rule (:func:`_lay_pending`).
    ``applying`` keeps the triggers from sending the rows back; it is set and cleared inside
    that transaction, so no other connection ever sees it set.
    """
    last = db.execute("SELECT last_seq FROM sync_state").fetchone()[0]
    db.execute("UPDATE sync_state SET applying = 1")
    touched: list[Key] = []
    for seq, row in rows:
        if seq <= last:
            continue  # already applied (an overlapping pull)
        if row.deleted:
            db.execute(_APPLY_DELETE, (row.number, int(row.prefix)))
        else:
            db.execute(_APPLY_UPSERT, _params(row))
        touched.append(row.key)
        last = seq
    _lay_pending(db, "entries", touched)
    db.execute(
        "UPDATE sync_state SET applying = 0, last_seq = ?, central_seq = max(central_seq, ?),"
        " synced_at = (julianday('now') - 2440587.5) * 86400.0, last_error = NULL",
        (last, max(central_seq, last)),
    )
    return int(last)


def _params(row: Row) -> tuple[Any, ...]:
    return (
        row.kind,
        row.number,
        int(row.prefix),
        row.label,
        row.source,
        row.created_at,
        row.expires_at,
        row.note,
    )


# The snapshot is built in a table of its own, shaped like ``entries`` (its CREATE TABLE, from
# the schema itself), and swapped in by one short transaction: the list is the old one or the
# whole snapshot, never a mixture, and each row is written once (no staging copy). Each
# snapshot's table has a name of its own (the building process's PID and a random part), so
# two snapshots of one database at once (the service's and a `screener sync`, or two engines)
# each build their own; the later swap wins, each whole.
SNAPSHOT_PREFIX = "sync_snapshot_"
_SNAPSHOT_NAME = re.compile(r"sync_snapshot_(\d+)_[0-9a-f]{8}")
_LEGACY_SNAPSHOT_TABLE = "sync_snapshot_entries"  # the one fixed name of before
_SNAPSHOT_COLUMNS = f"id, {_ROW_COLUMNS}"
_CREATE_ENTRIES = re.compile(r'^\s*CREATE\s+TABLE\s+("?)entries\1\s*\(', re.IGNORECASE)
# A row that only reserves ids: the snapshot's own rows are numbered above every id the old
# list used, so that a hit counted against an old id never lands on another entry.
_PLACEHOLDER = "\x00sync-placeholder"
# The snapshot tables this process is building now (begun, not yet ended).
_BUILDING: set[str] = set()


def _ids_used(db: sqlite3.Connection) -> int:
    """The highest id in entries, 0 if none."""
    (top,) = db.execute("SELECT coalesce(max(id), 0) FROM entries").fetchone()
    return int(top)


def snapshot_table(name: str) -> str:
    """``name`` if it is a snapshot table's name (it goes into SQL), else ValueError."""
    if not _SNAPSHOT_NAME.fullmatch(name):
        raise ValueError(f"not a snapshot table: {name!r}")
    return name


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # somebody else's process: alive
    return True


def _leftover(name: str) -> bool:
    """Whether ``name`` is a snapshot table that nobody builds any more."""
    if name == _LEGACY_SNAPSHOT_TABLE:
        return True
    match = _SNAPSHOT_NAME.fullmatch(name)
    if match is None:
        return False
    pid = int(match[1])
    if pid == os.getpid():
        return name not in _BUILDING  # one of ours whose end never ran
    return not _alive(pid)  # its process died (killed, or the machine stopped)


def snapshot_tables(db: sqlite3.Connection) -> list[str]:
    """The snapshot tables in this database (being built, or left by a crash)."""
    return [
        r[0]
        for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND substr(name, 1, ?) = ?",
            (len(SNAPSHOT_PREFIX), SNAPSHOT_PREFIX),
        )
    ]


def snapshot_begin(db: sqlite3.Connection) -> str:
    """A fresh, empty table to build a snapshot in; returns its name.

    It has the columns and the key of ``entries`` but not its other indexes: those are built
    once, at the swap, rather than kept up row by row. The tables of snapshots whose process
    is gone (a crash) are dropped; another process's snapshot under way is left alone.
    """
    for name in snapshot_tables(db):
        if _leftover(name):
            db.execute(f'DROP TABLE IF EXISTS "{name}"')
    table = f"{SNAPSHOT_PREFIX}{os.getpid()}_{secrets.token_hex(4)}"
    (sql,) = db.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'entries'"
    ).fetchone()
    db.execute(_CREATE_ENTRIES.sub(f"CREATE TABLE {table} (", sql, count=1))
    _BUILDING.add(table)
    top = _ids_used(db)
    if top:
        db.execute(
            f"INSERT INTO {table} (id, kind, number, prefix, source, created_at)"  # noqa: S608  # a checked name
            " VALUES (?, 'block', ?, 0, 'sync', 0)",
            (top, _PLACEHOLDER),
        )
    return table


# Rows per INSERT statement while a snapshot is written: one statement of many rows costs
# about half the interpreter's time per row of one statement per row.
_STAGE_ROWS = 100
_STAGE_ONE = "(?, ?, ?, ?, ?, ?, ?, ?)"


def snapshot_stage(db: sqlite3.Connection, table: str, rows: Sequence[Sequence[Any]]) -> None:
    """Write rows of the snapshot into its table (the column order of ``_ROW_COLUMNS``)."""
    head = f"INSERT INTO {snapshot_table(table)} ({_ROW_COLUMNS}) VALUES "  # noqa: S608  # checked
    full = len(rows) - len(rows) % _STAGE_ROWS
    if full:
        flat = list(chain.from_iterable(rows[:full]))
        width = 8 * _STAGE_ROWS
        db.executemany(
            head + ", ".join([_STAGE_ONE] * _STAGE_ROWS),
            [flat[i : i + width] for i in range(0, len(flat), width)],
        )
    if full < len(rows):
        db.executemany(head + _STAGE_ONE, rows[full:])


def snapshot_apply(
    db: sqlite3.Connection,
    table: str,
    seq: int,
    *,
    rows: int | None = None,
    heads: Iterable[tuple[str, int]] | None = None,
) -> tuple[int, int]:
    """Make the built snapshot at ``seq`` the local list, in the caller's transaction.

    ``rows`` (how many the build wrote) and ``heads`` (its prefix rules' heads), when the
    build gives them, spare this transaction, which holds the site's write lock, two reads of
    the whole table.

    Entries that stay keep their id, hits and last_seen; the local changes not yet pushed are
    laid over the snapshot by the conflict rule (:func:`_lay_pending`), as the central store
    will lay them when they arrive. Returns (entries removed, entries written).
    """
    table = snapshot_table(table)
    # The ids below the placeholder's are the old list's as it was when the build began; an
    # entry added since (its change is in the outbox, laid over below) may hold an id that a
    # snapshot row has, so only the older ones carry their id over.
    reserved = db.execute(
        f"DELETE FROM {table} WHERE number = ? RETURNING id",  # noqa: S608  # fixed
        (_PLACEHOLDER,),
    ).fetchall()
    top = int(reserved[0][0]) if reserved else 0
    # Ids handed out since the build began (an entry made here meanwhile, or another process's
    # snapshot swapped in) may be held by snapshot rows too: a hit queued for such an id would
    # land on another number. Those rows (at most that many) move above every id in use.
    used = _ids_used(db)
    if used > top:
        (high,) = db.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()  # noqa: S608  # checked
        db.execute(
            f"UPDATE {table} SET id = id + ? WHERE id > ? AND id <= ?",  # noqa: S608  # checked
            (max(int(high), used) - top, top, used),
        )
    before = int(db.execute("SELECT count(*) FROM entries").fetchone()[0])
    if before:
        db.execute(
            f"UPDATE {table} SET id = o.id, hits = o.hits, last_seen = o.last_seen"  # noqa: S608  # fixed
            f" FROM entries o WHERE o.number = {table}.number AND o.prefix = {table}.prefix"
            " AND o.id <= ?",
            (top,),
        )
    written = (
        rows if rows is not None else int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608  # checked
    )
    kept = (
        int(
            db.execute(
                f"SELECT count(*) FROM entries o WHERE EXISTS (SELECT 1 FROM {table} n"  # noqa: S608  # fixed
                " WHERE n.number = o.number AND n.prefix = o.prefix)"
            ).fetchone()[0]
        )
        if before
        else 0
    )
    _lay_pending(db, table)
    # The rows went in with no trigger of entries' firing: the lookup's prefix_heads (migration
    # 9, kept by those triggers) must learn the snapshot's prefix rules here, or a rule that
    # first came by snapshot would never be probed.
    if heads is None:
        db.execute(
            "INSERT OR IGNORE INTO prefix_heads (head, length) SELECT DISTINCT"  # noqa: S608  # checked
            f" substr(number, 1, 4), length(number) FROM {table} WHERE prefix = 1"
        )
    else:
        db.executemany("INSERT OR IGNORE INTO prefix_heads (head, length) VALUES (?, ?)", heads)
        # And those of the local changes just laid over (a head too many costs one probe).
        db.execute(
            "INSERT OR IGNORE INTO prefix_heads (head, length) SELECT DISTINCT"
            " substr(number, 1, 4), length(number) FROM sync_outbox WHERE prefix = 1"
        )
    # The schema of entries that lives on: its indexes and triggers, rebuilt on the new table.
    dependents = db.execute(
        "SELECT sql FROM sqlite_master WHERE tbl_name = 'entries'"
        " AND type IN ('index', 'trigger') AND sql IS NOT NULL ORDER BY type, name"
    ).fetchall()
    db.execute("DROP TABLE entries")
    db.execute(f"ALTER TABLE {table} RENAME TO entries")
    for (sql,) in dependents:
        db.execute(sql)
    # Nor did list_counts' (migration 10): one count of the new table.
    db.execute("DELETE FROM list_counts")
    db.execute(COUNT_LISTS)
    now = "(julianday('now') - 2440587.5) * 86400.0"
    db.execute(
        f"UPDATE sync_state SET applying = 0, last_seq = ?, central_seq = max(central_seq, ?),"  # noqa: S608  # fixed
        f" synced_at = {now}, snapshot_at = {now}, last_error = NULL",
        (seq, seq),
    )
    return before - kept, written


def snapshot_end(db: sqlite3.Connection, table: str) -> None:
    """Drop the snapshot's table if it is still there (the snapshot failed)."""
    try:
        db.execute(f"DROP TABLE IF EXISTS {snapshot_table(table)}")
    finally:
        # Even if the drop failed (a lock held too long): the table is no longer being built,
        # so the next snapshot's clean-up may drop it.
        _BUILDING.discard(table)


def _pending(db: sqlite3.Connection, keys: Iterable[Key] | None = None) -> dict[Key, list[Change]]:
    """The local changes not yet pushed, by key, oldest first (only ``keys``, if given)."""
    if not has_outbox(db):
        return {}
    wanted = None if keys is None else set(keys)
    out: dict[Key, list[Change]] = {}
    for r in db.execute(
        f"SELECT key, op, {_ROW_COLUMNS} FROM sync_outbox ORDER BY id"  # noqa: S608  # fixed
    ):
        change = Change(r[0], r[1], _row(r[2:]))
        key = change.row.key
        if wanted is None or key in wanted:
            out.setdefault(key, []).append(change)
    return out


def _lay_pending(db: sqlite3.Connection, table: str, keys: Iterable[Key] | None = None) -> None:
    """Lay the unpushed local changes over the central rows in ``table``, by the rule.

    A pulled or snapshot row is the central state; a local change still in the outbox will be
    applied over it when it is pushed. Until then the local list shows what that push will make
    of it (``rules.lay``), so an unpushed change is never replaced, not even for a moment,
    unless the rule says the central row wins (a person's entry over a learned change).
    """
    for key, changes in _pending(db, keys).items():
        r = db.execute(
            f"SELECT {_ROW_COLUMNS} FROM {table} WHERE number = ? AND prefix = ?",  # noqa: S608  # fixed
            (key[0], int(key[1])),
        ).fetchone()
        current = _row(r) if r else None
        final = lay(current, changes)
        if final == current:
            continue
        if final is None or final.deleted:
            db.execute(
                f"DELETE FROM {table} WHERE number = ? AND prefix = ?",  # noqa: S608  # fixed
                (key[0], int(key[1])),
            )
        else:
            db.execute(
                f"INSERT INTO {table} ({_ROW_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608  # fixed
                " ON CONFLICT (number, prefix) DO UPDATE SET kind = excluded.kind,"
                " label = excluded.label, source = excluded.source,"
                " created_at = excluded.created_at, expires_at = excluded.expires_at,"
                " note = excluded.note",
                _params(final),
            )


def pending_calls(db: sqlite3.Connection, limit: int) -> list[tuple[int, tuple[Any, ...]]]:
    """Up to ``limit`` call records to ship: (version, the record's columns)."""
    return [
        (r[0], tuple(r[1:]))
        for r in db.execute(
            f"SELECT p.version, {', '.join('c.' + c.strip() for c in _CALL_COLUMNS.split(','))}"  # noqa: S608  # fixed
            " FROM sync_calls p JOIN calls c ON c.call_id = p.call_id LIMIT ?",
            (limit,),
        )
    ]


def shipped(db: sqlite3.Connection, calls: Iterable[tuple[str, int]]) -> None:
    """These (call_id, version) are in the central store; one changed since is kept."""
    db.executemany("DELETE FROM sync_calls WHERE call_id = ? AND version = ?", list(calls))
    # A call record removed here before it was shipped has nothing left to ship.
    db.execute(
        "DELETE FROM sync_calls WHERE NOT EXISTS"
        " (SELECT 1 FROM calls c WHERE c.call_id = sync_calls.call_id)"
    )


def record_error(db: sqlite3.Connection, error: str | None) -> None:
    """Remember the last error (None: the last attempt went well)."""
    db.execute(
        "UPDATE sync_state SET last_error = ?,"
        " error_at = CASE WHEN ? IS NULL THEN error_at"
        " ELSE (julianday('now') - 2440587.5) * 86400.0 END",
        (error, error),
    )


def note_central(db: sqlite3.Connection, central_seq: int) -> None:
    """The central store has reached ``central_seq`` (for the lag in ``sync status``)."""
    db.execute("UPDATE sync_state SET central_seq = max(central_seq, ?)", (central_seq,))


def call_columns() -> list[str]:
    """The call record's columns, in the order ``pending_calls`` returns them."""
    return [c.strip() for c in _CALL_COLUMNS.split(",")]
