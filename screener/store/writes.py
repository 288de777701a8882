"""The writes the service's group-commit writer (screener/writer.py) batches: each a frozen
value, :meth:`WritesStore.apply` that commits a batch of them in ONE transaction and one
trip, and the one-write methods built on it."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from screener.policy import Entry, ListKind
from screener.store.base import StoreBase
from screener.store.calls import _CALL_COLUMNS, _FAILED_OUTCOMES, CallRecord, _failures, _get_call
from screener.store.common import to_opt_ts, to_ts
from screener.store.entries import _get, _learn, _upsert
from screener.store.outbox import _enqueue
from screener.store.staff import (
    _LAST_CALLER_COLUMNS,
    STAFF_SOURCE_PREFIX,
    FeaturePlan,
    FeatureRule,
    LastCaller,
    _last_caller,
    _last_change,
    entry_json,
)

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

_RECORD_HIT = "UPDATE entries SET hits = hits + 1, last_seen = ? WHERE id = ?"


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


# The writes applied one at a time, each by its own function (the rest go in runs, _BULK).
_ONE: dict[type, Callable[[sqlite3.Connection, Any], WriteResult]] = {
    SetOutcome: _set_outcome,
    SetVoicemail: _set_voicemail,
    SetRecording: _set_recording,
    SetLastCaller: _set_last_caller,
    StaffFeature: _staff_feature,
    LearnCalled: _learn_called,
    SetStaffChoice: _set_staff_choice,
}


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
        one = _ONE.get(type(write))
        if one is not None:
            results[n] = one(db, write)
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


class WritesStore(StoreBase):
    """The writes' part of :class:`~screener.store.Store`."""

    async def record_hit(self, entry_id: int, now: dt.datetime) -> None:
        """Count one more call matched by the entry ``entry_id``, seen at ``now``."""
        await self._write("record hit", _RECORD_HIT, (to_ts(now), entry_id))

    async def record_hits(self, ids: Iterable[int], now: dt.datetime) -> None:
        """Count one more call for each of ``ids`` (repeats count again), in one transaction."""
        await self.apply([RecordHit(entry_id, now) for entry_id in ids])

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

    async def set_recording(self, call_id: str, path: str, seconds: float | None) -> bool:
        """Record where the call's recording is (and, once it ended, how long it is)."""
        (result,) = await self.apply([SetRecording(call_id, path, seconds)])
        return result is True

    async def set_staff_choice(self, write: SetStaffChoice) -> StaffChoiceResult:
        """Record a staff phone's choice (and the list entry it makes) in one transaction."""
        (result,) = await self.apply([write])
        assert isinstance(result, StaffChoiceResult)
        return result
