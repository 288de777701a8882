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

The package has one module per part; arrows point downward only, and ``connection`` joins the
parts into :class:`Store`. Import from the package (``from screener.store import Store``):

- ``schema``: the ordered migrations (append-only) and the application id.
- ``common``: times as the tables keep them; ``sqlite3`` errors turned into StoreErrors.
- ``base``: the database thread, the lock, one-trip statements and transactions.
- ``entries``: the list entries, the lookup, listings and counts.
- ``calls``: the call log (:class:`CallRecord`) and its reads.
- ``staff``: the staff phones' tables (last callers, feature-code changes).
- ``outbox``: the transactional outbox and each channel's deliveries.
- ``writes``: the writes the service's writer batches, and :meth:`Store.apply`.
- ``imports``: imports in one transaction, and staged imports.
- ``connection``: the path checks, opening, set-up and migration; :class:`Store`.
"""

# ``name as name``: the public names outside __all__ (screener/webstore.py, bench/ use some).
from screener.policy import SOURCE_LEARNED, SOURCE_MANUAL
from screener.store.calls import CallRecord
from screener.store.common import from_ts as from_ts
from screener.store.common import to_opt_ts as to_opt_ts
from screener.store.common import to_ts as to_ts
from screener.store.connection import CREATE_HINT as CREATE_HINT
from screener.store.connection import Store
from screener.store.entries import ENTRY_COLUMNS as ENTRY_COLUMNS
from screener.store.entries import UPSERT_ENTRY as UPSERT_ENTRY
from screener.store.entries import entry_from_row as entry_from_row
from screener.store.entries import entry_params as entry_params
from screener.store.imports import ImportResult, ImportStage
from screener.store.outbox import ChannelStatus, OutboxEvent, OutboxRow
from screener.store.schema import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION
from screener.store.staff import (
    STAFF_SOURCE_PREFIX,
    FeaturePlan,
    FeatureRule,
    LastCaller,
    StaffChange,
)
from screener.store.staff import entry_from_json as entry_from_json
from screener.store.staff import entry_json as entry_json
from screener.store.writes import (
    CalledRule,
    FeatureResult,
    LearnCalled,
    Learning,
    LearnRule,
    OutcomeResult,
    RecordCall,
    RecordFallback,
    RecordHit,
    RecordLate,
    SetLastCaller,
    SetOutcome,
    SetRecording,
    SetStaffChoice,
    SetVoicemail,
    StaffChoiceResult,
    StaffFeature,
    Write,
    WriteResult,
)

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
