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

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from screener.shared.rules import Change, Row

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
    together with the sequence number it reaches. ``applying`` keeps the triggers from sending
    the rows back; it is set and cleared inside that transaction, so no other connection ever
    sees it set.
    """
    last = db.execute("SELECT last_seq FROM sync_state").fetchone()[0]
    db.execute("UPDATE sync_state SET applying = 1")
    for seq, row in rows:
        if seq <= last:
            continue  # already applied (an overlapping pull)
        if row.deleted:
            db.execute(_APPLY_DELETE, (row.number, int(row.prefix)))
        else:
            db.execute(_APPLY_UPSERT, _params(row))
        last = seq
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


def snapshot_begin(db: sqlite3.Connection) -> None:
    """A fresh staging table for a snapshot (temporary: it never touches the database file).

    No key: rows are appended as they come (the fast way to stage millions); the index that
    the removal of stale entries needs is built once at the end, and only when there is a
    local list to compare with.
    """
    db.execute("DROP TABLE IF EXISTS temp.sync_snapshot")
    db.execute(
        "CREATE TEMP TABLE sync_snapshot (kind TEXT, number TEXT, prefix INTEGER, label TEXT,"
        " source TEXT, created_at REAL, expires_at REAL, note TEXT)"
    )


def snapshot_stage(db: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Stage rows of the snapshot (the column order of ``_ROW_COLUMNS``)."""
    sql = f"INSERT INTO temp.sync_snapshot ({_ROW_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608  # fixed
    db.executemany(sql, rows)


def snapshot_apply(db: sqlite3.Connection, seq: int) -> tuple[int, int]:
    """Make the local list the staged snapshot at ``seq``, in the caller's transaction.

    Returns (entries removed, entries written). Hits and last_seen of the entries that stay
    are kept.
    """
    db.execute("UPDATE sync_state SET applying = 1")
    removed = 0
    if db.execute("SELECT EXISTS (SELECT 1 FROM entries)").fetchone()[0]:
        db.execute("CREATE INDEX temp.sync_snapshot_key ON sync_snapshot (number, prefix)")
        removed = db.execute(
            "DELETE FROM entries WHERE NOT EXISTS (SELECT 1 FROM temp.sync_snapshot s"
            " WHERE s.number = entries.number AND s.prefix = entries.prefix)"
        ).rowcount
        written = db.execute(
            f"INSERT INTO entries ({_ROW_COLUMNS}) SELECT {_ROW_COLUMNS} FROM temp.sync_snapshot"  # noqa: S608  # fixed
            " WHERE true ON CONFLICT (number, prefix) DO UPDATE SET"
            " kind = excluded.kind, label = excluded.label, source = excluded.source,"
            " created_at = excluded.created_at, expires_at = excluded.expires_at,"
            " note = excluded.note"
            " WHERE entries.kind IS NOT excluded.kind OR entries.label IS NOT excluded.label"
            " OR entries.source IS NOT excluded.source"
            " OR entries.created_at IS NOT excluded.created_at"
            " OR entries.expires_at IS NOT excluded.expires_at OR entries.note IS NOT excluded.note"
        ).rowcount
    else:
        # An empty local list (a new site): a plain insert, in the order the rows came.
        written = db.execute(
            f"INSERT INTO entries ({_ROW_COLUMNS}) SELECT {_ROW_COLUMNS} FROM temp.sync_snapshot"  # noqa: S608  # fixed
            " ORDER BY rowid"
        ).rowcount
    now = "(julianday('now') - 2440587.5) * 86400.0"
    db.execute(
        f"UPDATE sync_state SET applying = 0, last_seq = ?, central_seq = max(central_seq, ?),"  # noqa: S608  # fixed
        f" synced_at = {now}, snapshot_at = {now}, last_error = NULL",
        (seq, seq),
    )
    return removed, written


def snapshot_end(db: sqlite3.Connection) -> None:
    """Drop the staging table."""
    db.execute("DROP TABLE IF EXISTS temp.sync_snapshot")


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
