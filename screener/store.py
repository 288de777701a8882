"""The SQLite store: allow/block list entries and the call log. All database I/O lives here.

One long-lived ``sqlite3`` connection per :class:`Store`, owned by a thread of its own
(:mod:`screener.dbthread`: its statements run in order, a whole transaction in one trip), in WAL
mode so that readers in other processes never wait for a writer. Open it with::

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
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, TypeVar

import structlog

from screener.dbthread import DBThread
from screener.errors import StoreCorruptError, StoreError, StoreLockedError
from screener.policy import SOURCE_CALLED, SOURCE_LEARNED, SOURCE_MANUAL, Entry, ListKind

if TYPE_CHECKING:
    from screener.transfer import Staged

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
    # The transactional outbox: events for notifications, written in the same transaction as
    # the row they describe; a sender delivers each once (``key`` is its idempotency key).
    (
        "CREATE TABLE outbox (id INTEGER PRIMARY KEY, topic TEXT NOT NULL,"
        " key TEXT NOT NULL UNIQUE, payload TEXT NOT NULL, created_at REAL NOT NULL)",
    ),
    # Notifications (docs/architecture.md): each channel's delivery state of the outbox rows,
    # an index for the sender's age window, and one that makes the metrics' per-(kind, source)
    # counts of the lists cheap.
    (
        "CREATE INDEX outbox_created_at ON outbox (created_at)",
        """
        CREATE TABLE outbox_delivery (
            outbox_id INTEGER NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
            channel TEXT NOT NULL,
            delivered_at REAL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_at REAL,
            last_error TEXT,
            PRIMARY KEY (outbox_id, channel)
        ) WITHOUT ROWID
        """,
        "CREATE INDEX entries_kind_source ON entries (kind, source)",
    ),
    (
        # The web console (screener/webstore.py): users, API tokens, the audit trail, which
        # voicemail messages were heard, and the key its session cookies are signed with.
        """
        CREATE TABLE web_users (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            role TEXT NOT NULL CHECK (role IN ('admin', 'staff')),
            password_hash TEXT NOT NULL,
            created_at REAL NOT NULL,
            epoch INTEGER NOT NULL DEFAULT 0
        )
        """,
        """
        CREATE TABLE web_tokens (
            id INTEGER PRIMARY KEY,
            user_id INTEGER NOT NULL REFERENCES web_users (id) ON DELETE CASCADE,
            digest TEXT NOT NULL UNIQUE,
            created_at REAL NOT NULL,
            last_used REAL
        )
        """,
        "CREATE INDEX web_tokens_user ON web_tokens (user_id)",
        """
        CREATE TABLE web_audit (
            id INTEGER PRIMARY KEY,
            at REAL NOT NULL,
            user TEXT NOT NULL,
            action TEXT NOT NULL,
            target TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT ''
        )
        """,
        "CREATE TABLE web_heard (message TEXT PRIMARY KEY, at REAL NOT NULL, user TEXT NOT NULL)",
        "CREATE TABLE web_secret (id INTEGER PRIMARY KEY CHECK (id = 1), key TEXT NOT NULL)",
        # The call log pages filter by route, outcome or number, newest first.
        "CREATE INDEX calls_route_received ON calls (route, received_at)",
        "CREATE INDEX calls_outcome_received ON calls (outcome, received_at)",
        "CREATE INDEX calls_e164_received ON calls (e164, received_at)",
        # The dashboard counts a day's calls from this index alone, never reading the table.
        "CREATE INDEX calls_received_covering ON calls (received_at, route, outcome, e164)",
    ),
    # 5: the call's recording (MixMonitor, after the spoken warning), if any.
    (
        "ALTER TABLE calls ADD COLUMN recording_path TEXT",
        "ALTER TABLE calls ADD COLUMN recording_seconds REAL",
    ),
    # 6: staff phones (issue 11). The last outside caller that rang each staff endpoint (so that
    # *32/*33 survive a restart and never reach another phone's caller), and each endpoint's
    # feature-code changes with the entry before and after, for *34 (undo).
    (
        """
        CREATE TABLE staff_last_caller (
            endpoint TEXT PRIMARY KEY,
            call_id TEXT NOT NULL,
            e164 TEXT,
            raw_number TEXT NOT NULL,
            category TEXT NOT NULL,
            at REAL NOT NULL
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE staff_changes (
            id INTEGER PRIMARY KEY,
            endpoint TEXT NOT NULL,
            at REAL NOT NULL,
            code TEXT NOT NULL,
            number TEXT NOT NULL,
            before TEXT,  -- JSON of the entry replaced or removed, or NULL
            after TEXT,  -- JSON of the entry stored, or NULL (removed)
            undone_at REAL
        )
        """,
        "CREATE INDEX staff_changes_endpoint ON staff_changes (endpoint, id)",
    ),
    # 7: what a staff phone chose for the call (announce screening, or *0 during the call),
    # which phone, and when.
    (
        "ALTER TABLE calls ADD COLUMN staff_choice TEXT",
        "ALTER TABLE calls ADD COLUMN staff_choice_by TEXT",
        "ALTER TABLE calls ADD COLUMN staff_choice_at REAL",
    ),
    # 8: many sites, one list (screener/shared/local.py). Triggers put every change to an
    # entry into sync_outbox and every new or changed call into sync_calls, whoever makes it
    # (the service, the CLI, the console) -- but only once this database has joined a shared
    # list (sync_state.enabled), and never for the changes the sync itself applies
    # (sync_state.applying, set and cleared inside the sync's own transaction).
    (
        """
        CREATE TABLE sync_state (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            enabled INTEGER NOT NULL DEFAULT 0,
            applying INTEGER NOT NULL DEFAULT 0,
            site TEXT,
            last_seq INTEGER NOT NULL DEFAULT 0,
            central_seq INTEGER NOT NULL DEFAULT 0,
            synced_at REAL,
            snapshot_at REAL,
            last_error TEXT,
            error_at REAL
        )
        """,
        "INSERT INTO sync_state (id) VALUES (1)",
        """
        CREATE TABLE sync_outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            key TEXT NOT NULL UNIQUE,
            op TEXT NOT NULL CHECK (op IN ('upsert', 'delete')),
            kind TEXT NOT NULL,
            number TEXT NOT NULL,
            prefix INTEGER NOT NULL,
            label TEXT NOT NULL,
            source TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL,
            note TEXT NOT NULL,
            changed_at REAL NOT NULL
        )
        """,
        "CREATE TABLE sync_calls (call_id TEXT PRIMARY KEY, version INTEGER NOT NULL)"
        " WITHOUT ROWID",
        *(
            f"""
            CREATE TRIGGER sync_entries_{event.split()[0].lower()} AFTER {event} ON entries
            WHEN (SELECT enabled AND NOT applying FROM sync_state){extra}
            BEGIN
                INSERT INTO sync_outbox (key, op, kind, number, prefix, label, source, created_at,
                                         expires_at, note, changed_at)
                VALUES (lower(hex(randomblob(16))), '{op}', {row}.kind, {row}.number,
                        {row}.prefix, {row}.label, {row}.source, {row}.created_at,
                        {row}.expires_at, {row}.note,
                        (julianday('now') - 2440587.5) * 86400.0);
            END
            """  # noqa: S608  # built from the fixed names below, no values
            for event, op, row, extra in (
                ("INSERT", "upsert", "NEW", ""),
                # Hits and last_seen are this site's own counters: not a change to share.
                (
                    "UPDATE OF kind, label, source, created_at, expires_at, note",
                    "upsert",
                    "NEW",
                    " AND (OLD.kind IS NOT NEW.kind OR OLD.label IS NOT NEW.label"
                    " OR OLD.source IS NOT NEW.source OR OLD.created_at IS NOT NEW.created_at"
                    " OR OLD.expires_at IS NOT NEW.expires_at OR OLD.note IS NOT NEW.note)",
                ),
                ("DELETE", "delete", "OLD", ""),
            )
        ),
        *(
            f"""
            CREATE TRIGGER sync_calls_{event.lower()} AFTER {event} ON calls
            WHEN (SELECT enabled FROM sync_state)
            BEGIN
                INSERT OR REPLACE INTO sync_calls (call_id, version)
                VALUES (NEW.call_id,
                        coalesce((SELECT version FROM sync_calls WHERE call_id = NEW.call_id), 0)
                        + 1);
            END
            """  # noqa: S608  # built from the fixed names below, no values
            for event in ("INSERT", "UPDATE")
        ),
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

# The entries table: its columns, its upsert and its row mapping, here only (the console's
# synchronous connection, screener/webstore.py, uses them too).
ENTRY_COLUMNS = (
    "id, kind, number, prefix, label, source, created_at, expires_at, note, hits, last_seen"
)
_CALL_COLUMNS = (
    "call_id, received_at, raw_number, raw_name, e164, category, did, route, rule, reasons,"
    " latency_ms, outcome, outcome_at, voicemail, fallback"
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
# A Redirect came after the fallback began (ScreenLate): like a fallback, but a route a fallback
# already recorded (ScreenFallback comes first) is the route the call took, and stays.
_RECORD_LATE = (
    f"INSERT INTO calls ({_CALL_COLUMNS})"  # noqa: S608
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)"
    " ON CONFLICT (call_id) DO UPDATE SET"
    " route = CASE WHEN calls.fallback THEN calls.route ELSE excluded.route END, fallback = 1,"
    " reasons = json_insert(calls.reasons, '$[#]', ?)"
)
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
class OutboxRow:
    """One event waiting in the outbox for a channel, with that channel's attempts so far."""

    id: int
    topic: str
    key: str
    payload: dict[str, Any]
    created_at: dt.datetime
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class ChannelStatus:
    """Delivery state of one channel over the outbox rows still within the retry age."""

    channel: str
    delivered: int
    waiting: int
    given_up: int
    last_delivered_at: dt.datetime | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class ImportResult:
    """How many entries an import added, and how many replaced an entry with the same key."""

    added: int
    replaced: int


# --- conversions at the edge -------------------------------------------------------------------


def to_ts(value: dt.datetime) -> float:
    """A time as the REAL the tables store (seconds since the epoch; naive means UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


def to_opt_ts(value: dt.datetime | None) -> float | None:
    return None if value is None else to_ts(value)


def from_ts(value: float | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromtimestamp(value, dt.UTC)


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


def _call_params(rec: CallRecord) -> tuple[Any, ...]:
    return (
        rec.call_id,
        to_ts(rec.received_at),
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
        to_opt_ts(rec.outcome_at),
        rec.voicemail,
        int(rec.fallback),
    )


def _fallback_params(rec: CallRecord) -> tuple[Any, ...]:
    return (*_call_params(rec)[:-1], "; ".join(rec.reasons))


def entry_from_row(row: Sequence[Any]) -> Entry:
    created = from_ts(row[6])
    assert created is not None  # NOT NULL column
    return Entry(
        id=row[0],
        kind=ListKind(row[1]),
        number=row[2],
        prefix=bool(row[3]),
        label=row[4],
        source=row[5],
        created_at=created,
        expires_at=from_ts(row[7]),
        note=row[8],
        hits=row[9],
        last_seen=from_ts(row[10]),
    )


def _call_from_row(row: Sequence[Any]) -> CallRecord:
    received = from_ts(row[1])
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
        outcome_at=from_ts(row[12]),
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


# --- writes the service batches ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordCall:
    """A screening decision: what :meth:`Store.record_call` writes."""

    record: CallRecord


@dataclass(frozen=True, slots=True)
class RecordFallback:
    """The call took the dialplan's fallback: what :meth:`Store.record_fallback` writes."""

    record: CallRecord


@dataclass(frozen=True, slots=True)
class RecordLate:
    """A decision reached a call whose fallback had begun: a fallback that keeps the route an
    earlier fallback recorded (``record.route`` is used only if there was none)."""

    record: CallRecord


@dataclass(frozen=True, slots=True)
class RecordHit:
    """One more call matched by the list entry ``entry_id``, seen at ``at``."""

    entry_id: int
    at: dt.datetime


# What a challenge outcome teaches, decided inside the outcome's own transaction: given the call's
# record (None if the log does not hold it), the exact entry stored for the caller's number, and
# how many of its *other* calls failed a challenge since ``Learning.since``, the entry to learn.
LearnRule = Callable[[CallRecord | None, Entry | None, int], Entry | None]


@dataclass(frozen=True, slots=True)
class Learning:
    """How to learn from a challenge outcome; see :data:`LearnRule`."""

    e164: str | None  # the caller's number if the service knows it, else the call log's
    since: dt.datetime  # the start of the failure window
    rule: LearnRule


@dataclass(frozen=True, slots=True)
class SetOutcome:
    """How the challenge of ``call_id`` ended, and (optionally) what to learn from it."""

    call_id: str
    outcome: str
    at: dt.datetime
    learning: Learning | None = None


@dataclass(frozen=True, slots=True)
class SetVoicemail:
    """The voicemail status of ``call_id``; queues a ``voicemail`` outbox event with it."""

    call_id: str
    status: str
    at: dt.datetime
    audio: str | None = None  # the message's WAV file, when the service could locate it


@dataclass(frozen=True, slots=True)
class SetRecording:
    """Where the recording of ``call_id`` is, and (once the call ended) how long it is."""

    call_id: str
    path: str
    seconds: float | None = None


# --- staff phones (migration 6) -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LastCaller:
    """The last outside caller that rang one staff endpoint (a call the screener saw)."""

    endpoint: str
    call_id: str
    e164: str | None  # None: withheld or no usable number
    raw_number: str
    category: str
    at: dt.datetime


@dataclass(frozen=True, slots=True)
class StaffChange:
    """One feature-code change a staff endpoint made: the exact entry before and after."""

    id: int
    endpoint: str
    at: dt.datetime
    code: str
    number: str
    before: Entry | None
    after: Entry | None
    undone_at: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class FeaturePlan:
    """What a feature code does, as :mod:`screener.featurecodes` decides it.

    ``result`` is what the staff phone is told (``blocked``, ``withheld``...). When ``apply``
    is set, the exact entry for ``number`` becomes ``after`` (None: removed); ``before`` is the
    entry it replaces, kept for undo. ``undo_of`` names the change this one takes back (that
    change is then marked undone instead of a new one being recorded).
    """

    result: str
    number: str | None = None
    apply: bool = False
    before: Entry | None = None
    after: Entry | None = None
    undo_of: int | None = None


class FeatureRule(Protocol):
    """A feature code's pure decision, run inside its own transaction (see StaffFeature)."""

    def target(self, last: LastCaller | None, undo: StaffChange | None) -> str | None:
        """The number whose exact entry the code reads and may change, if any."""

    def plan(
        self, last: LastCaller | None, undo: StaffChange | None, existing: Entry | None
    ) -> FeaturePlan:
        """What to do, given the endpoint's last caller, its last change and the entry."""


@dataclass(frozen=True, slots=True)
class SetLastCaller:
    """Call ``call_id`` rang staff endpoint ``endpoint``: it is that phone's last caller now.

    The caller comes from the service's memory when it has it, else from the call log (read
    in the same transaction); a call the log does not hold changes nothing.
    """

    endpoint: str
    call_id: str
    at: dt.datetime
    e164: str | None = None
    raw_number: str | None = None
    category: str | None = None


@dataclass(frozen=True, slots=True)
class StaffFeature:
    """A feature code keyed on ``endpoint``; ``rule`` decides inside the transaction."""

    endpoint: str
    code: str
    at: dt.datetime
    rule: FeatureRule


@dataclass(frozen=True, slots=True)
class FeatureResult:
    """What a :class:`StaffFeature` did: the plan, its change's id, the stored entry."""

    plan: FeaturePlan
    change_id: int | None = None
    last: LastCaller | None = None


# Given the exact entry stored for a number a staff phone called (or None), the ``called``
# entry to store, or None to keep what is there (see screener.learning.learn_called).
CalledRule = Callable[[Entry | None], Entry | None]


@dataclass(frozen=True, slots=True)
class LearnCalled:
    """A staff phone dialled ``e164`` out: learn it as ``called`` (``rule`` decides)."""

    e164: str
    at: dt.datetime
    rule: CalledRule


# Staff choices that put the caller's number on a list from now on (announce keys 3 and 4, *0).
STAFF_SOURCE_PREFIX = "staff:"


@dataclass(frozen=True, slots=True)
class SetStaffChoice:
    """What the staff phone ``staff`` chose for ``call_id``; with ``kind``, the caller's number is
    put on that list from now on (source ``staff:<staff>``, replacing any entry for it)."""

    call_id: str
    choice: str
    staff: str
    at: dt.datetime
    kind: ListKind | None = None
    e164: str | None = None  # the caller's number if the service knows it, else the call log's


@dataclass(frozen=True, slots=True)
class StaffChoiceResult:
    """What a :class:`SetStaffChoice` did: whether the call was in the log, the entry it made."""

    found: bool
    entry: Entry | None = None


Write = (
    RecordCall
    | RecordFallback
    | RecordLate
    | RecordHit
    | SetOutcome
    | SetVoicemail
    | SetRecording
    | SetLastCaller
    | StaffFeature
    | LearnCalled
    | SetStaffChoice
)


@dataclass(frozen=True, slots=True)
class OutcomeResult:
    """What a :class:`SetOutcome` did: whether the call was in the log, what it learned."""

    found: bool
    learned: Entry | None = None
    failures: int = 0  # failed challenges in the window, this one included (when it failed)


# What one write returns (see Store.apply).
WriteResult = OutcomeResult | FeatureResult | StaffChoiceResult | Entry | bool | None


class Store:
    """The allow/block lists and the call log in one SQLite file. Use :meth:`open`."""

    def __init__(
        self,
        thread: DBThread,
        path: str,
        *,
        readonly: bool,
        loop_db: sqlite3.Connection | None = None,
    ) -> None:
        self._thread = thread
        self.path = path
        self.readonly = readonly
        # The read-only connection :meth:`lookup` uses on the event loop's own thread, if any.
        self._loop_db = loop_db
        # Lookups that found the loop's connection busy and went to the database thread.
        self.loop_fallbacks = 0
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
        loop_lookups: bool = False,
        mmap_size: int = 0,
    ) -> AsyncIterator[Store]:
        """Open (and if need be create and migrate) the database at ``path``; always closes.

        Opening reads only what is cheap whatever the size of the lists: the file header (SQLite
        refuses a file that is not a database), ``application_id``, ``user_version``, the
        schema, and the first pages of each table and of the lookup's index. Damage deeper in
        the tables is found by :meth:`integrity_check` (``screener doctor``), or by the
        statement that meets it.

        ``loop_lookups`` (read-only stores only): :meth:`lookup` runs on the event loop's own
        thread, on a second read-only connection, instead of making the trip to the database
        thread, which costs several times the index probe itself. It never waits: in WAL mode a
        reader takes no lock a writer holds, and the connection's busy timeout is 0, so a busy
        answer (a WAL being reset, a database not in WAL mode) sends that lookup to the
        database thread instead (counted in :attr:`loop_fallbacks`). What it can cost the loop
        is the disk reads of a cold page cache: a few page reads per probe.
        ``mmap_size``: SQLite's ``PRAGMA mmap_size`` for the read connections (0: off).
        """
        name = os.fspath(path)
        target, exists = _check_path(name, create=create, readonly=readonly)
        if loop_lookups and not readonly:
            raise ValueError("loop_lookups is for read-only stores")

        def connect() -> sqlite3.Connection:
            return sqlite3.connect(
                target,
                uri=target.startswith("file:"),
                isolation_level=None,  # we say BEGIN and COMMIT ourselves
                timeout=busy_timeout,
            )

        try:
            thread = await DBThread.start(connect, name="screener-db")
        except sqlite3.Error as exc:
            raise _translate(exc, name, "open") from exc
        loop_db: sqlite3.Connection | None = None
        try:
            store = cls(thread, name, readonly=readonly)
            await store._setup(
                busy_timeout=busy_timeout, existed=exists, create=create, mmap_size=mmap_size
            )
            if loop_lookups:
                # Opened on the database thread (its file I/O off the loop), used on the loop's
                # thread only from then on.
                with store._guard("open"):
                    loop_db = await thread.run(lambda _: _connect_loop_db(target, mmap_size))
                store._loop_db = loop_db
            yield store
        finally:
            if loop_db is not None:
                store._loop_db = None
                with suppress(sqlite3.Error):
                    loop_db.close()
            await thread.close()

    async def _setup(
        self, *, busy_timeout: float, existed: bool, create: bool = True, mmap_size: int = 0
    ) -> None:
        path, readonly = self.path, self.readonly

        def setup(db: sqlite3.Connection) -> tuple[int, bool]:
            db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            if mmap_size and readonly:
                db.execute(f"PRAGMA mmap_size = {int(mmap_size)}")
            # Read-only checks first: nothing is written to a file until we know it is ours.
            app_id = int(db.execute("PRAGMA application_id").fetchone()[0])
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            tables = [
                r[0]
                for r in db.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
                )
            ]
            fresh = app_id == 0 and version == 0 and not tables
            if fresh and not create:
                # A zero-length file (truncated, or created by hand) is not a list to screen by.
                raise StoreError(f"database {path} is empty; {CREATE_HINT}")
            if not fresh and app_id != APPLICATION_ID:
                what = f"tables {', '.join(tables)}" if tables else "no tables"
                raise StoreCorruptError(
                    f"{path} is not a screener database (application_id {app_id:#x},"
                    f" {what}); refusing to touch it"
                )
            if version > SCHEMA_VERSION:
                raise StoreCorruptError(
                    f"database {path} has schema version {version}, newer than this"
                    f" screener knows ({SCHEMA_VERSION}); upgrade screener"
                )
            # The first page of every table, and the lookup's index: a handful of page reads
            # whatever the size, enough to refuse a file whose tables were wrecked (the full
            # check is integrity_check).
            for table in tables:
                if not table.startswith("sqlite_"):
                    db.execute(f'SELECT 1 FROM "{table}" LIMIT 1').fetchall()  # noqa: S608
            if "entries" in tables:
                db.execute("SELECT 1 FROM entries WHERE number = '' LIMIT 1").fetchall()
            if readonly:
                if version < SCHEMA_VERSION:
                    raise StoreError(
                        f"database {path} needs upgrading (schema {version} <"
                        f" {SCHEMA_VERSION}); `screener init` upgrades it"
                    )
            else:
                mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal" and path != ":memory:":
                    log.warning("store.no_wal", path=path, journal_mode=mode)
                db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA foreign_keys = ON")
            return version, fresh

        with self._guard("open"):
            version, fresh = await self._thread.run(setup)
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
        path = self.path

        def migrate(db: sqlite3.Connection) -> list[int]:
            applied = []
            for target, statements in enumerate(MIGRATIONS[version:], start=version + 1):
                db.execute("BEGIN IMMEDIATE")
                try:
                    # Another process may have migrated while we waited for the write lock.
                    current = int(db.execute("PRAGMA user_version").fetchone()[0])
                    if current >= target:
                        db.execute("COMMIT")
                        continue
                    for statement in statements:
                        db.execute(statement)
                    db.execute(f"PRAGMA user_version = {target}")
                    db.execute("COMMIT")
                except BaseException:
                    _rollback(db)
                    raise
                applied.append(target)
            return applied

        for target in await self._thread.run(migrate):
            log.info("store.migrate", path=path, schema=target)

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

    async def _call(self, action: str, function: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``function(connection)`` on the database thread, in one trip, under the lock."""
        async with self._lock:
            with self._guard(action):
                return await self._thread.run(function)

    async def _in_transaction(
        self, action: str, function: Callable[[sqlite3.Connection], _T]
    ) -> _T:
        """``function`` inside BEGIN IMMEDIATE ... COMMIT (ROLLBACK on any error), one trip."""

        def transaction(db: sqlite3.Connection) -> _T:
            db.execute("BEGIN IMMEDIATE")
            try:
                result = function(db)
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise
            return result

        return await self._call(action, transaction)

    @asynccontextmanager
    async def _transaction(self, action: str) -> AsyncIterator[None]:
        """BEGIN IMMEDIATE ... COMMIT over several trips, or ROLLBACK on any error, under the lock.

        For work fed from an async source (an import); everything else uses one trip.
        """
        async with self._lock:
            with self._guard(action):
                await self._thread.run(lambda db: db.execute("BEGIN IMMEDIATE"))
                try:
                    yield
                    await self._thread.run(lambda db: db.execute("COMMIT"))
                except BaseException:
                    await self._thread.run(_rollback)
                    raise

    async def run(self, action: str, function: Callable[[sqlite3.Connection], _T]) -> _T:
        """``function(connection)`` in one trip, for a room's own tables (screener/shared/)."""
        return await self._call(action, function)

    async def run_in_transaction(
        self, action: str, function: Callable[[sqlite3.Connection], _T]
    ) -> _T:
        """``function(connection)`` inside one BEGIN IMMEDIATE ... COMMIT, or rolled back."""
        return await self._in_transaction(action, function)

    async def _fetchall(self, action: str, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return await self._call(action, lambda db: db.execute(sql, params).fetchall())

    async def _write(self, action: str, sql: str, params: Sequence[Any] = ()) -> int:
        """One statement in autocommit mode; returns the number of rows it changed."""
        return await self._call(action, lambda db: db.execute(sql, params).rowcount)

    # --- list entries --------------------------------------------------------------------------

    async def lookup(self, e164: str) -> list[Entry]:
        """The exact entry for ``e164`` and every prefix rule it falls under, expired or not.

        On the event loop's thread when the store was opened with ``loop_lookups`` (see
        :meth:`open`), else on the database thread.
        """
        candidates = _prefixes(e164)
        if not candidates:
            return []
        loop_db = self._loop_db
        if loop_db is not None:
            try:
                with self._guard("lookup"):
                    return _lookup(loop_db, e164, candidates)
            except StoreLockedError:
                # Busy (never a writer's lock in WAL mode): this one waits on the thread.
                self.loop_fallbacks += 1
        return await self._call("lookup", lambda db: _lookup(db, e164, candidates))

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

    async def last_callers(self) -> list[LastCaller]:
        """Each staff endpoint's last outside caller, by endpoint."""
        rows = await self._fetchall(
            "staff last callers",
            f"SELECT {_LAST_CALLER_COLUMNS} FROM staff_last_caller ORDER BY endpoint",  # noqa: S608
        )
        return [_last_caller_from_row(row) for row in rows]

    async def staff_changes(self, endpoint: str | None = None) -> list[StaffChange]:
        """Feature-code changes, oldest first (one endpoint's, or all)."""
        where, params = ("WHERE endpoint = ?", [endpoint]) if endpoint is not None else ("", [])
        rows = await self._fetchall(
            "staff changes",
            f"SELECT {_STAFF_CHANGE_COLUMNS} FROM staff_changes {where} ORDER BY id",  # noqa: S608
            params,
        )
        return [_staff_change_from_row(row) for row in rows]

    async def record_hit(self, entry_id: int, now: dt.datetime) -> None:
        """Count one more call matched by the entry ``entry_id``, seen at ``now``."""
        await self._write("record hit", _RECORD_HIT, (to_ts(now), entry_id))

    async def record_hits(self, ids: Iterable[int], now: dt.datetime) -> None:
        """Count one more call for each of ``ids`` (repeats count again), in one transaction."""
        await self.apply([RecordHit(entry_id, now) for entry_id in ids])

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

    # --- call log ------------------------------------------------------------------------------

    async def record_call(self, rec: CallRecord) -> None:
        """Log a screening decision; a second decision for the same call updates the decision."""
        await self.apply([RecordCall(rec)])

    async def record_calls(self, records: Iterable[CallRecord]) -> None:
        """:meth:`record_call` for many calls in ONE transaction: all of them, or none."""
        await self.apply([RecordCall(rec) for rec in records])

    async def record_batch(
        self,
        *,
        calls: Iterable[CallRecord] = (),
        fallbacks: Iterable[CallRecord] = (),
        hits: Iterable[tuple[int, dt.datetime]] = (),
    ) -> None:
        """Decisions, then fallbacks, then list hits ``(entry id, seen at)``, in ONE transaction."""
        await self.apply(
            [
                *(RecordCall(rec) for rec in calls),
                *(RecordFallback(rec) for rec in fallbacks),
                *(RecordHit(entry_id, seen) for entry_id, seen in hits),
            ]
        )

    async def apply(self, writes: Sequence[Write]) -> list[WriteResult]:
        """Every write, in the order given, in ONE transaction and one trip: all, or none.

        The service commits everything queued meanwhile together (group commit). Each write
        means what its method means (:meth:`record_call`, :meth:`record_fallback`,
        :meth:`record_hit`, :meth:`set_outcome`, :meth:`set_voicemail`); runs of the same kind
        go to SQLite as one ``executemany``, and list hits (which only count) all go last.
        Returns one result per write: an :class:`OutcomeResult` for a :class:`SetOutcome`,
        whether the call was found for a :class:`SetVoicemail`, :class:`SetRecording` or
        :class:`SetLastCaller`, a :class:`FeatureResult` for a :class:`StaffFeature`, the
        entry stored (or None) for a :class:`LearnCalled`, a :class:`StaffChoiceResult` for a
        :class:`SetStaffChoice`, None for the rest. Outbox events (``voicemail``,
        ``auto_block``, ``staff_change``) are written in the same transaction as the rows they
        describe.
        """
        if not writes:
            return []
        return await self._in_transaction("record calls", lambda db: _apply(db, writes))

    async def record_fallback(self, rec: CallRecord) -> None:
        """Log that ``rec.call_id`` took the dialplan fallback to ``rec.route``.

        A call not yet in the log is inserted as ``rec`` (with fallback set); a call that is
        keeps its decision (rule, reasons so far) and gets the route it really took, the
        fallback flag, and ``rec.reasons`` appended to its reasons.
        """
        await self.apply([RecordFallback(rec)])

    async def set_outcome(self, call_id: str, outcome: str, now: dt.datetime) -> bool:
        """Record how the challenge of ``call_id`` ended; False if the call is not in the log."""
        (result,) = await self.apply([SetOutcome(call_id, outcome, now)])
        return isinstance(result, OutcomeResult) and result.found

    async def set_voicemail(
        self, call_id: str, status: str, now: dt.datetime | None = None
    ) -> bool:
        """Record the voicemail status of ``call_id``; False if the call is not in the log."""
        at = now or dt.datetime.now(dt.UTC)
        (result,) = await self.apply([SetVoicemail(call_id, status, at)])
        return result is True

    async def outbox(self, *, topic: str | None = None) -> list[OutboxEvent]:
        """The outbox's events (oldest first), of one topic or all."""
        where, params = ("WHERE topic = ?", [topic]) if topic else ("", [])
        rows = await self._fetchall(
            "read outbox",
            f"SELECT id, topic, key, payload, created_at FROM outbox {where} ORDER BY id",  # noqa: S608
            params,
        )
        return [
            OutboxEvent(row[0], row[1], row[2], json.loads(row[3]), from_ts(row[4]) or _EPOCH)
            for row in rows
        ]

    async def set_recording(self, call_id: str, path: str, seconds: float | None) -> bool:
        """Record where the call's recording is (and, once it ended, how long it is)."""
        (result,) = await self.apply([SetRecording(call_id, path, seconds)])
        return result is True

    async def recordings(
        self, call_ids: Sequence[str] | None = None, *, limit: int = 100
    ) -> dict[str, tuple[str, float | None]]:
        """Recorded calls: call id → (path, seconds), newest first; only ``call_ids`` if given."""
        if call_ids is not None:
            return await self._of_calls(
                "list recordings", "recording_path", "recording_seconds", call_ids
            )
        rows = await self._fetchall(
            "list recordings",
            "SELECT call_id, recording_path, recording_seconds FROM calls"
            " WHERE recording_path IS NOT NULL ORDER BY received_at DESC LIMIT ?",
            (limit,),
        )
        return {r[0]: (r[1], r[2]) for r in rows}

    async def staff_choices(self, call_ids: Sequence[str]) -> dict[str, tuple[str, str | None]]:
        """What a staff phone chose for these calls: call id → (choice, endpoint), if any."""
        return await self._of_calls(
            "list staff choices", "staff_choice", "staff_choice_by", call_ids
        )

    async def _of_calls(
        self, action: str, column: str, other: str, call_ids: Sequence[str]
    ) -> dict[str, tuple[Any, Any]]:
        """call id → (``column``, ``other``) for those of ``call_ids`` whose ``column`` is set,
        500 ids per statement (SQLite's limit on bound values is far above that)."""
        found: dict[str, tuple[Any, Any]] = {}
        for start in range(0, len(call_ids), 500):
            chunk = list(call_ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            rows = await self._fetchall(
                action,
                f"SELECT call_id, {column}, {other} FROM calls"  # noqa: S608  # fixed names only
                f" WHERE {column} IS NOT NULL AND call_id IN ({marks})",
                chunk,
            )
            found.update({r[0]: (r[1], r[2]) for r in rows})
        return found

    async def set_staff_choice(self, write: SetStaffChoice) -> StaffChoiceResult:
        """Record a staff phone's choice (and the list entry it makes) in one transaction."""
        (result,) = await self.apply([write])
        assert isinstance(result, StaffChoiceResult)
        return result

    async def calls(
        self, *, since: dt.datetime | None = None, limit: int = 100
    ) -> list[CallRecord]:
        """The most recent calls (received at or after ``since``), newest first."""
        where, params = ("WHERE received_at >= ?", [to_ts(since)]) if since else ("", [])
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
        return await self._call("count failures", lambda db: _failures(db, e164, since, None))

    async def integrity_check(self) -> str:
        """SQLite's full integrity check: ``"ok"``, or its findings one per line.

        It reads every page: seconds for millions of entries. ``screener doctor`` runs it, and
        the service after an unclean shutdown; opening a database never does.
        """

        def check(db: sqlite3.Connection) -> str:
            try:
                rows = db.execute("PRAGMA integrity_check").fetchall()
            except sqlite3.DatabaseError as exc:
                if not isinstance(_translate(exc, self.path, "check"), StoreCorruptError):
                    raise
                return str(exc)  # damage bad enough to stop the check is its finding
            return "\n".join(str(row[0]) for row in rows)

        return await self._call("integrity check", check)

    # --- outbox (notifications) ----------------------------------------------------------------

    async def add_outbox(
        self, topic: str, key: str, payload: dict[str, Any], now: dt.datetime
    ) -> bool:
        """Queue an event for delivery; False when one with ``key`` is already queued."""
        changed = await self._write(
            "add outbox event",
            _OUTBOX,
            (topic, key, json.dumps(payload, ensure_ascii=False), to_ts(now)),
        )
        return changed > 0

    async def due_deliveries(
        self, channel: str, *, since: dt.datetime, now: dt.datetime, limit: int = 100
    ) -> list[OutboxRow]:
        """Outbox rows created at or after ``since`` that ``channel`` has yet to deliver and
        may try now (no attempt yet, or its backoff has passed), oldest first."""
        rows = await self._fetchall(
            "read outbox",
            "SELECT o.id, o.topic, o.key, o.payload, o.created_at, coalesce(d.attempts, 0)"
            " FROM outbox o LEFT JOIN outbox_delivery d ON d.outbox_id = o.id AND d.channel = ?"
            " WHERE o.created_at >= ? AND d.delivered_at IS NULL"
            " AND coalesce(d.next_at, 0) <= ? ORDER BY o.id LIMIT ?",
            (channel, to_ts(since), to_ts(now), limit),
        )
        return [
            OutboxRow(
                id=r[0],
                topic=r[1],
                key=r[2],
                payload=_payload(r[3]),
                created_at=from_ts(r[4]) or dt.datetime.min.replace(tzinfo=dt.UTC),
                attempts=r[5],
            )
            for r in rows
        ]

    async def record_delivery(
        self,
        outbox_id: int,
        channel: str,
        *,
        delivered_at: dt.datetime | None,
        next_at: dt.datetime | None = None,
        error: str | None = None,
    ) -> None:
        """Count one delivery attempt of ``outbox_id`` on ``channel``: delivered, or failed
        with ``error`` and to be tried again from ``next_at``."""
        await self._write(
            "record delivery",
            "INSERT INTO outbox_delivery"
            " (outbox_id, channel, delivered_at, attempts, next_at, last_error)"
            " VALUES (?, ?, ?, 1, ?, ?) ON CONFLICT (outbox_id, channel) DO UPDATE SET"
            " delivered_at = excluded.delivered_at, attempts = attempts + 1,"
            " next_at = excluded.next_at, last_error = excluded.last_error",
            (outbox_id, channel, to_opt_ts(delivered_at), to_opt_ts(next_at), error),
        )

    async def retry_now(self, channel: str) -> int:
        """Make every row ``channel`` has yet to deliver due now; returns how many."""
        return await self._write(
            "reset backoff",
            "UPDATE outbox_delivery SET next_at = NULL"
            " WHERE channel = ? AND delivered_at IS NULL AND next_at IS NOT NULL",
            (channel,),
        )

    async def delivery_status(
        self, channels: Sequence[str], *, since: dt.datetime
    ) -> list[ChannelStatus]:
        """For each channel: rows delivered, waiting (created at or after ``since``) and given
        up (older, never delivered); when it last delivered; its latest error."""
        rows = await self._fetchall(
            "read delivery status",
            "SELECT c.value,"
            " count(d.delivered_at),"
            " sum(d.delivered_at IS NULL AND o.created_at >= ?),"
            " sum(d.delivered_at IS NULL AND o.created_at < ?),"
            " max(d.delivered_at),"
            " (SELECT last_error FROM outbox_delivery e WHERE e.channel = c.value"
            "  AND e.last_error IS NOT NULL ORDER BY e.outbox_id DESC LIMIT 1)"
            " FROM json_each(?) c LEFT JOIN outbox o"
            " LEFT JOIN outbox_delivery d ON d.outbox_id = o.id AND d.channel = c.value"
            " GROUP BY c.value ORDER BY c.key",
            (to_ts(since), to_ts(since), json.dumps(list(channels))),
        )
        return [
            ChannelStatus(
                channel=r[0],
                delivered=int(r[1] or 0),
                waiting=int(r[2] or 0),
                given_up=int(r[3] or 0),
                last_delivered_at=from_ts(r[4]),
                last_error=r[5],
            )
            for r in rows
        ]

    async def prune_outbox(self, before: dt.datetime, *, batch: int = 5000) -> int:
        """Delete outbox events created before ``before`` (their delivery rows go with them).

        In batches of ``batch``, each its own short transaction, so a backlog of months never
        holds the write lock for long; returns how many events were deleted.
        """
        sql = (
            "DELETE FROM outbox WHERE id IN"
            " (SELECT id FROM outbox WHERE created_at < ? ORDER BY id LIMIT ?)"
        )
        deleted = 0
        while True:
            changed = await self._write("prune outbox", sql, (to_ts(before), batch))
            deleted += changed
            if changed < batch:
                return deleted

    async def count_outbox(self) -> int:
        """How many events the outbox holds."""
        rows = await self._fetchall("count outbox", "SELECT count(*) FROM outbox")
        return int(rows[0][0])

    async def count_entries_by(self) -> dict[tuple[str, str], int]:
        """How many entries each (kind, source) holds, from the (kind, source) index."""
        rows = await self._fetchall(
            "count entries",
            "SELECT kind, source, count(*) FROM entries GROUP BY kind, source",
        )
        return {(r[0], r[1]): int(r[2]) for r in rows}

    async def check_writable(self) -> None:
        """Take and release the write lock (nothing written); StoreError when that fails."""

        def check(db: sqlite3.Connection) -> None:
            # In one trip to the thread: the lock is never held across a hop to the event loop.
            db.execute("BEGIN IMMEDIATE")
            db.execute("ROLLBACK")

        await self._call("check writable", check)


def _payload(text: str) -> dict[str, Any]:
    """An outbox payload; anything but a JSON object is kept whole under ``raw``."""
    try:
        value = json.loads(text)
    except ValueError:
        return {"raw": text}
    return value if isinstance(value, dict) else {"raw": value}


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """One row of the outbox: an event for a sender to deliver once (``key`` is idempotent)."""

    id: int
    topic: str
    key: str
    payload: dict[str, Any]
    created_at: dt.datetime


_EPOCH = dt.datetime.fromtimestamp(0, dt.UTC)
_OUTBOX = (
    "INSERT INTO outbox (topic, key, payload, created_at) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (key) DO NOTHING"
)


def _lookup_sql(count: int) -> str:
    marks = ", ".join("?" * count)
    return f"SELECT {ENTRY_COLUMNS} FROM entries WHERE number IN ({marks})"  # noqa: S608


# One statement per number of candidates (E.164 has at most 15 digits): built once.
_LOOKUP_SQL = {count: _lookup_sql(count) for count in range(1, 17)}


def _lookup(db: sqlite3.Connection, e164: str, candidates: list[str]) -> list[Entry]:
    # One statement, one index probe per candidate prefix, whatever the size of the table.
    sql = _LOOKUP_SQL.get(len(candidates)) or _lookup_sql(len(candidates))
    return [
        entry_from_row(row)
        for row in db.execute(sql, candidates).fetchall()
        if row[3] == 1 or row[2] == e164  # exact entries key on the whole number only
    ]


def _connect_loop_db(target: str, mmap_size: int) -> sqlite3.Connection:
    """The read-only connection for lookups on the event loop's thread: it never waits."""
    uri = target if target.startswith("file:") else f"{Path(target).absolute().as_uri()}?mode=ro"
    db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=0, check_same_thread=False)
    try:
        db.execute("PRAGMA busy_timeout = 0")
        if mmap_size:
            db.execute(f"PRAGMA mmap_size = {int(mmap_size)}")
        db.execute("SELECT 1 FROM entries WHERE number = '' LIMIT 1").fetchall()
    except BaseException:
        db.close()
        raise
    return db


def _executemany(sql: str, rows: list[tuple[Any, ...]]) -> Callable[[sqlite3.Connection], Any]:
    return lambda db: db.executemany(sql, rows)


def _rollback(db: sqlite3.Connection) -> None:
    # SQLite has already rolled back after some errors; then there is nothing to undo.
    with suppress(sqlite3.Error):
        db.execute("ROLLBACK")


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


def _failures(db: sqlite3.Connection, e164: str, since: dt.datetime, other_than: str | None) -> int:
    row = db.execute(
        "SELECT count(*) FROM calls WHERE e164 = ? AND outcome IN (?, ?) AND received_at >= ?"
        " AND call_id IS NOT ?",
        (e164, *_FAILED_OUTCOMES, to_ts(since), other_than),
    ).fetchone()
    return int(row[0])


def _get_call(db: sqlite3.Connection, call_id: str) -> CallRecord | None:
    row = db.execute(
        f"SELECT {_CALL_COLUMNS} FROM calls WHERE call_id = ?",  # noqa: S608
        (call_id,),
    ).fetchone()
    return None if row is None else _call_from_row(row)


def _enqueue(
    db: sqlite3.Connection, topic: str, key: str, payload: dict[str, Any], at: dt.datetime
) -> None:
    db.execute(_OUTBOX, (topic, key, json.dumps(payload, ensure_ascii=False), to_ts(at)))


def _set_outcome(db: sqlite3.Connection, write: SetOutcome) -> OutcomeResult:
    found = (
        db.execute(
            "UPDATE calls SET outcome = ?, outcome_at = ? WHERE call_id = ?",
            (write.outcome, to_ts(write.at), write.call_id),
        ).rowcount
        > 0
    )
    learning = write.learning
    if learning is None:
        return OutcomeResult(found)
    record = _get_call(db, write.call_id) if found else None
    e164 = learning.e164 or (record.e164 if record is not None else None)
    if e164 is None:
        return OutcomeResult(found)
    earlier = _failures(db, e164, learning.since, write.call_id)
    failed = write.outcome in _FAILED_OUTCOMES
    entry = learning.rule(record, _get(db, e164, False), earlier)
    if entry is None or not _learn(db, entry, write.at):
        return OutcomeResult(found, None, earlier + failed)
    if entry.kind is ListKind.BLOCK:
        _enqueue(
            db,
            "auto_block",
            f"auto_block:{entry.number}:{to_ts(entry.created_at):.6f}",
            {
                "number": entry.number,
                "failures": earlier + failed,
                "expires_at": entry.expires_at.isoformat() if entry.expires_at else None,
                "call_id": write.call_id,
            },
            write.at,
        )
    return OutcomeResult(found, entry, earlier + failed)


def _set_voicemail(db: sqlite3.Connection, write: SetVoicemail) -> bool:
    found = (
        db.execute(
            "UPDATE calls SET voicemail = ? WHERE call_id = ?", (write.status, write.call_id)
        ).rowcount
        > 0
    )
    record = _get_call(db, write.call_id) if found else None
    _enqueue(
        db,
        "voicemail",
        f"voicemail:{write.call_id}",
        {
            "call_id": write.call_id,
            "e164": record.e164 if record else None,
            "raw_number": record.raw_number if record else None,
            "name": record.raw_name if record else None,
            "reasons": list(record.reasons) if record else [],
            "voicemail": write.status,
            **({"audio": write.audio} if write.audio else {}),
        },
        write.at,
    )
    return found


def _set_recording(db: sqlite3.Connection, write: SetRecording) -> bool:
    changed = db.execute(
        "UPDATE calls SET recording_path = ?,"
        " recording_seconds = coalesce(?, recording_seconds) WHERE call_id = ?",
        (write.path, write.seconds, write.call_id),
    ).rowcount
    return changed > 0


def _set_staff_choice(db: sqlite3.Connection, write: SetStaffChoice) -> StaffChoiceResult:
    found = (
        db.execute(
            "UPDATE calls SET staff_choice = ?, staff_choice_by = ?, staff_choice_at = ?"
            " WHERE call_id = ?",
            (write.choice, write.staff, to_ts(write.at), write.call_id),
        ).rowcount
        > 0
    )
    if write.kind is None:
        return StaffChoiceResult(found)
    record = _get_call(db, write.call_id) if found else None
    e164 = write.e164 or (record.e164 if record is not None else None)
    if e164 is None:  # withheld or invalid: there is no number to put on a list
        return StaffChoiceResult(found)
    # A person's explicit word about this caller: it replaces whatever entry the number had.
    # Its hits stay with the number, as a feature code's do (screener/featurecodes.py).
    existing = _get(db, e164, False)
    entry = _upsert(
        db,
        Entry(
            kind=write.kind,
            number=e164,
            source=f"{STAFF_SOURCE_PREFIX}{write.staff}",
            created_at=write.at,
            note=f"{write.choice} by {write.staff} (call {write.call_id})",
            hits=existing.hits if existing is not None else 0,
            last_seen=existing.last_seen if existing is not None else None,
        ),
    )
    return StaffChoiceResult(found, entry)


def _params(write: RecordCall | RecordFallback | RecordLate | RecordHit) -> tuple[Any, ...]:
    if isinstance(write, RecordCall):
        return _call_params(write.record)
    if isinstance(write, RecordFallback | RecordLate):
        return _fallback_params(write.record)
    return (to_ts(write.at), write.entry_id)


_BULK: dict[type, str] = {
    RecordCall: _RECORD_CALL,
    RecordFallback: _RECORD_FALLBACK,
    RecordLate: _RECORD_LATE,
    RecordHit: _RECORD_HIT,
}


def entry_json(entry: Entry | None) -> str | None:
    """An entry as the JSON text ``staff_changes`` keeps (None stays None)."""
    if entry is None:
        return None
    return json.dumps(
        {
            "kind": str(entry.kind),
            "number": entry.number,
            "prefix": entry.prefix,
            "label": entry.label,
            "source": entry.source,
            "created_at": to_ts(entry.created_at),
            "expires_at": to_opt_ts(entry.expires_at),
            "note": entry.note,
            "hits": entry.hits,
            "last_seen": to_opt_ts(entry.last_seen),
        },
        ensure_ascii=False,
    )


def entry_from_json(text: str | None) -> Entry | None:
    """The entry :func:`entry_json` wrote (its id is not kept: rows may come and go)."""
    if text is None:
        return None
    d = json.loads(text)
    created = from_ts(d["created_at"])
    assert created is not None
    return Entry(
        kind=ListKind(d["kind"]),
        number=d["number"],
        prefix=bool(d["prefix"]),
        label=d["label"],
        source=d["source"],
        created_at=created,
        expires_at=from_ts(d["expires_at"]),
        note=d["note"],
        hits=int(d["hits"]),
        last_seen=from_ts(d["last_seen"]),
    )


_LAST_CALLER_COLUMNS = "endpoint, call_id, e164, raw_number, category, at"
_STAFF_CHANGE_COLUMNS = "id, endpoint, at, code, number, before, after, undone_at"


def _last_caller_from_row(row: Sequence[Any]) -> LastCaller:
    at = from_ts(row[5])
    assert at is not None
    return LastCaller(row[0], row[1], row[2], row[3], row[4], at)


def _staff_change_from_row(row: Sequence[Any]) -> StaffChange:
    at = from_ts(row[2])
    assert at is not None
    return StaffChange(
        id=row[0],
        endpoint=row[1],
        at=at,
        code=row[3],
        number=row[4],
        before=entry_from_json(row[5]),
        after=entry_from_json(row[6]),
        undone_at=from_ts(row[7]),
    )


def _last_caller(db: sqlite3.Connection, endpoint: str) -> LastCaller | None:
    row = db.execute(
        f"SELECT {_LAST_CALLER_COLUMNS} FROM staff_last_caller WHERE endpoint = ?",  # noqa: S608
        (endpoint,),
    ).fetchone()
    return None if row is None else _last_caller_from_row(row)


def _last_change(db: sqlite3.Connection, endpoint: str) -> StaffChange | None:
    # The newest change this endpoint has not taken back: *34 walks back one at a time.
    row = db.execute(
        f"SELECT {_STAFF_CHANGE_COLUMNS} FROM staff_changes"  # noqa: S608
        " WHERE endpoint = ? AND undone_at IS NULL ORDER BY id DESC LIMIT 1",
        (endpoint,),
    ).fetchone()
    return None if row is None else _staff_change_from_row(row)


def _set_last_caller(db: sqlite3.Connection, write: SetLastCaller) -> bool:
    e164, raw, category = write.e164, write.raw_number, write.category
    if raw is None or category is None:
        record = _get_call(db, write.call_id)
        if record is None:
            return False  # not a call the screener saw: nothing to block or allow
        e164, raw, category = record.e164, record.raw_number, record.category
    db.execute(
        f"INSERT INTO staff_last_caller ({_LAST_CALLER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"  # noqa: S608
        " ON CONFLICT (endpoint) DO UPDATE SET call_id = excluded.call_id, e164 = excluded.e164,"
        " raw_number = excluded.raw_number, category = excluded.category, at = excluded.at",
        (write.endpoint, write.call_id, e164, raw, category, to_ts(write.at)),
    )
    return True


def _staff_feature(db: sqlite3.Connection, write: StaffFeature) -> FeatureResult:
    last = _last_caller(db, write.endpoint)
    undo = _last_change(db, write.endpoint)
    number = write.rule.target(last, undo)
    existing = _get(db, number, False) if number is not None else None
    plan = write.rule.plan(last, undo, existing)
    change_id: int | None = None
    if plan.apply and plan.number is not None:
        if plan.after is None:
            db.execute("DELETE FROM entries WHERE number = ? AND prefix = 0", (plan.number,))
        else:
            _upsert(db, plan.after)
    if plan.undo_of is not None:
        db.execute(
            "UPDATE staff_changes SET undone_at = ? WHERE id = ?", (to_ts(write.at), plan.undo_of)
        )
        change_id = plan.undo_of
    elif plan.apply and plan.number is not None:
        change_id = db.execute(
            "INSERT INTO staff_changes (endpoint, at, code, number, before, after)"
            " VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            (
                write.endpoint,
                to_ts(write.at),
                write.code,
                plan.number,
                entry_json(plan.before),
                entry_json(plan.after),
            ),
        ).fetchone()[0]
    if plan.apply and plan.number is not None:
        _enqueue(
            db,
            "staff_change",
            f"staff_change:{write.endpoint}:{change_id}:{to_ts(write.at):.6f}",
            {
                "endpoint": write.endpoint,
                "code": write.code,
                "result": plan.result,
                "number": plan.number,
                "kind": str(plan.after.kind) if plan.after else None,
                "before": str(plan.before.kind) if plan.before else None,
            },
            write.at,
        )
    return FeatureResult(plan, change_id, last)


def _learn_called(db: sqlite3.Connection, write: LearnCalled) -> Entry | None:
    entry = write.rule(_get(db, write.e164, False))
    if entry is None:
        return None
    return _upsert(db, entry)


def _apply(db: sqlite3.Connection, writes: Sequence[Write]) -> list[WriteResult]:
    """The body of :meth:`Store.apply`, on the database thread inside its transaction.

    List hits go last, all in one ``executemany``: they only count, so moving them changes no
    other write, and a batch of calls (each a record then a hit) stays two statements, not two
    per call.
    """
    results: list[WriteResult] = [None] * len(writes)
    others = [(n, w) for n, w in enumerate(writes) if not isinstance(w, RecordHit)]
    i = 0
    while i < len(others):
        n, write = others[i]
        if isinstance(write, SetOutcome):
            results[n] = _set_outcome(db, write)
            i += 1
        elif isinstance(write, SetVoicemail):
            results[n] = _set_voicemail(db, write)
            i += 1
        elif isinstance(write, SetRecording):
            results[n] = _set_recording(db, write)
            i += 1
        elif isinstance(write, SetLastCaller):
            results[n] = _set_last_caller(db, write)
            i += 1
        elif isinstance(write, StaffFeature):
            results[n] = _staff_feature(db, write)
            i += 1
        elif isinstance(write, LearnCalled):
            results[n] = _learn_called(db, write)
            i += 1
        elif isinstance(write, SetStaffChoice):
            results[n] = _set_staff_choice(db, write)
            i += 1
        else:
            kind = type(write)
            run: list[tuple[Any, ...]] = []
            while i < len(others) and type(others[i][1]) is kind:
                item = others[i][1]
                assert isinstance(item, RecordCall | RecordFallback | RecordLate)
                run.append(_params(item))
                i += 1
            db.executemany(_BULK[kind], run)
    hits = [_params(w) for w in writes if isinstance(w, RecordHit)]
    if hits:
        db.executemany(_RECORD_HIT, hits)
    return results


class ImportStage:
    """Rows of one import staged by :meth:`Store.stage_import`, each with its line number.

    Staged rows go into one transaction of the TEMP database (the lists are not locked by it);
    it is committed before :meth:`duplicates` or :meth:`apply` read them. Every statement runs
    on the store's own database thread, like all of the store's work.
    """

    def __init__(self, store: Store) -> None:
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
    "STAFF_SOURCE_PREFIX",
    "CallRecord",
    "CalledRule",
    "ChannelStatus",
    "FeaturePlan",
    "FeatureResult",
    "FeatureRule",
    "ImportResult",
    "ImportStage",
    "LastCaller",
    "LearnCalled",
    "LearnRule",
    "Learning",
    "OutboxEvent",
    "OutboxRow",
    "OutcomeResult",
    "RecordCall",
    "RecordFallback",
    "RecordHit",
    "RecordLate",
    "SetLastCaller",
    "SetOutcome",
    "SetRecording",
    "SetStaffChoice",
    "SetVoicemail",
    "StaffChange",
    "StaffChoiceResult",
    "StaffFeature",
    "Store",
    "Write",
    "WriteResult",
]
