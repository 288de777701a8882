"""The service's write-ahead journal: a call is routed before its record is committed, and lost
by no crash of the process.

Every write the agent queues (:class:`~screener.writer.Writer`) is first appended as one JSON
line to ``<database>.screener-journal`` (mode 0600, like the database): one ``os.write`` on an
``O_APPEND`` descriptor, no fsync. That is the durability of SQLite's WAL with
``synchronous=NORMAL``, which the store uses: both survive a crash (or a SIGKILL) of the
screener, since the kernel keeps what was written; neither survives a power cut before the
kernel writes it out. The writer commits in groups as before, and marks in the journal what
each commit holds: ``{"b": [[first, last]...]}`` before the transaction, ``{"c": ...}`` once
it committed. When nothing in the journal is left to commit, it is truncated.

At start-up (:func:`recover`, before any call is screened) the lines that no ``c`` mark covers
are queued again, in their order, ahead of everything else; so an outcome still lands after
its call's record. One transaction may have committed without its ``c`` mark (a crash between
COMMIT and the mark): its ``b`` mark names it, and the database says whether it holds it
(:func:`_applied`: the exact row its last write leaves), so nothing is written twice. Every
``b`` group that no ``c`` covers is checked so (only the last can be unsure in a journal this
version wrote; an older one may hold more).

The file is locked (``flock``) for the life of the process: a second ``screener run`` on the
same database is refused. A torn last line (a crash inside the ``write``) is dropped with a
warning and counted; an append that fails (a full disk) or a journal past ``MAX_BYTES`` (a
write lock held elsewhere for a long time) turns the journal off until it is empty again, and
calls go back to waiting for their commit (:meth:`Journal.append` returns None). A failed or
short write is cut back to the last whole line, so that no later line is glued to its fragment;
if even that fails, the next line starts after a newline of its own and marks the failed
append's writes committed (never replayed: the writer was told they were not journaled). Marks
go on while the journal is off (what it already holds must still be marked). A commit mark the
disk refused is written before the next ``b`` mark, in the same write, and :meth:`Journal.begin`
says whether that went out: while it is refused no transaction begins (the writer holds its
commits, :data:`MARK_RETRY`), so that a committed transaction is never left behind a later
``b`` mark without its ``c`` (it would be replayed). The writes of a failed append whose
fragment could not be cut off are marked committed the same way, before anything commits. A
journal that turned off with nothing outstanding is emptied and turned on again at the next
append (at most every :data:`RETRY_ON` seconds).

Rules that decide inside a transaction (what an outcome teaches, what a feature code does) are
journaled as their inputs and rebuilt with the configuration at replay (:class:`OutcomeRule`,
:class:`CalledRule`, :class:`~screener.featurecodes.Timed`); a write with any other rule is
not journaled, and its commit is waited for.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import functools
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from screener import learning
from screener.errors import StoreError
from screener.featurecodes import Code, Rule, Timed
from screener.numbers import Caller, Category
from screener.policy import Entry, ListKind, Outcome, Policy
from screener.store import (
    CallRecord,
    LearnCalled,
    Learning,
    RecordCall,
    RecordFallback,
    RecordHit,
    RecordLate,
    SetLastCaller,
    SetOutcome,
    SetRecording,
    SetStaffChoice,
    SetVoicemail,
    StaffFeature,
    Store,
    Write,
    to_ts,
)

log = structlog.get_logger("screener.journal")

SUFFIX = ".screener-journal"
# Past this size the journal stops taking writes until it is empty (see the module docstring):
# about 150,000 call records (420 bytes each), more than the writer carries in memory over a
# held lock (MAX_CARRIED_WRITES).
MAX_BYTES = 64 * 1024 * 1024
# A journal off with nothing outstanding is tried again (emptied, turned on) this often.
RETRY_ON = 1.0


def journal_path(db_path: Path) -> Path:
    """Where the journal of the database at ``db_path`` lives (beside it)."""
    return db_path.with_name(db_path.name + SUFFIX)


# --- rules that can be journaled -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutcomeRule:
    """:func:`screener.learning.rule` as data: what a challenge outcome teaches."""

    caller: Caller | None
    outcome: Outcome
    policy: Policy
    now: dt.datetime

    def __call__(self, record: CallRecord | None, existing: Entry | None, failures: int) -> Any:
        return learning.rule(self.caller, self.outcome, self.policy, self.now)(
            record, existing, failures
        )


@dataclass(frozen=True, slots=True)
class CalledRule:
    """:func:`screener.learning.called_rule` as data: a number a staff phone called out."""

    caller: Caller
    endpoint: str
    policy: Policy
    now: dt.datetime

    def __call__(self, existing: Entry | None) -> Entry | None:
        return learning.learn_called(self.caller, self.endpoint, existing, self.policy, self.now)


# --- lines -----------------------------------------------------------------------------------


def _t(value: dt.datetime) -> float:
    return to_ts(value)


def _opt_t(value: dt.datetime | None) -> float | None:
    return None if value is None else to_ts(value)


def _dt(value: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(value, dt.UTC)


def _opt_dt(value: float | None) -> dt.datetime | None:
    return None if value is None else _dt(value)


def _caller(caller: Caller | None) -> list[Any] | None:
    if caller is None:
        return None
    return [caller.raw, caller.e164, caller.category.value, caller.detail]


def _uncaller(data: list[Any] | None) -> Caller | None:
    if data is None:
        return None
    return Caller(data[0], data[1], Category(data[2]), data[3])


def _record(rec: CallRecord) -> dict[str, Any]:
    return {
        "call_id": rec.call_id,
        "received_at": _t(rec.received_at),
        "raw_number": rec.raw_number,
        "raw_name": rec.raw_name,
        "e164": rec.e164,
        "category": rec.category,
        "did": rec.did,
        "route": rec.route,
        "rule": rec.rule,
        "reasons": list(rec.reasons),
        "latency_ms": rec.latency_ms,
        "outcome": rec.outcome,
        "outcome_at": _opt_t(rec.outcome_at),
        "voicemail": rec.voicemail,
        "fallback": rec.fallback,
    }


def _unrecord(d: dict[str, Any]) -> CallRecord:
    return CallRecord(
        **{
            **d,
            "received_at": _dt(d["received_at"]),
            "reasons": tuple(d["reasons"]),
            "outcome_at": _opt_dt(d["outcome_at"]),
        }
    )


_RECORDS: dict[str, type[RecordCall | RecordFallback | RecordLate]] = {
    "call": RecordCall,
    "fallback": RecordFallback,
    "late": RecordLate,
}
_RECORD_KINDS = {write: kind for kind, write in _RECORDS.items()}


def encode(write: Write) -> dict[str, Any] | None:
    """A write as a journal line's data, or None if it cannot be journaled (an unknown rule)."""
    if isinstance(write, RecordCall | RecordFallback | RecordLate):
        return {"k": _RECORD_KINDS[type(write)], "r": _record(write.record)}
    if isinstance(write, RecordHit):
        return {"k": "hit", "id": write.entry_id, "at": _t(write.at)}
    if isinstance(write, SetOutcome):
        learn = write.learning
        taught: dict[str, Any] | None = None
        if learn is not None:
            rule = learn.rule
            if not isinstance(rule, OutcomeRule):
                return None
            taught = {"e164": learn.e164, "since": _t(learn.since), "caller": _caller(rule.caller)}
        return {
            "k": "outcome",
            "call": write.call_id,
            "o": write.outcome,
            "at": _t(write.at),
            "learn": taught,
        }
    if isinstance(write, SetVoicemail):
        return {
            "k": "voicemail",
            "call": write.call_id,
            "s": write.status,
            "at": _t(write.at),
            "audio": write.audio,
        }
    if isinstance(write, SetRecording):
        return {"k": "recording", "call": write.call_id, "path": write.path, "s": write.seconds}
    if isinstance(write, SetLastCaller):
        return {
            "k": "lastcaller",
            "ep": write.endpoint,
            "call": write.call_id,
            "at": _t(write.at),
            "e164": write.e164,
            "raw": write.raw_number,
            "cat": write.category,
        }
    if isinstance(write, StaffFeature):
        timed = write.rule
        if not isinstance(timed, Timed):
            return None
        return {
            "k": "feature",
            "ep": write.endpoint,
            "code": write.code,
            "at": _t(write.at),
            "number": timed.rule.number,
            "not_after": timed.not_after,
        }
    if isinstance(write, LearnCalled):
        called = write.rule
        if not isinstance(called, CalledRule):
            return None
        return {
            "k": "called",
            "e164": write.e164,
            "at": _t(write.at),
            "caller": _caller(called.caller),
            "ep": called.endpoint,
        }
    if not isinstance(write, SetStaffChoice):
        return None  # a kind of write the journal does not know: its commit is waited for
    return {
        "k": "choice",
        "call": write.call_id,
        "choice": write.choice,
        "staff": write.staff,
        "at": _t(write.at),
        "kind": write.kind.value if write.kind is not None else None,
        "e164": write.e164,
    }


def decode(d: dict[str, Any], policy: Policy) -> Write:
    """The write a journal line holds; its rule rebuilt with today's ``policy``."""
    kind = d["k"]
    if kind in _RECORDS:
        return _RECORDS[kind](_unrecord(d["r"]))
    if kind == "hit":
        return RecordHit(int(d["id"]), _dt(d["at"]))
    if kind == "outcome":
        at = _dt(d["at"])
        taught = d["learn"]
        teach = None
        if taught is not None:
            rule = OutcomeRule(_uncaller(taught["caller"]), Outcome(d["o"]), policy, at)
            teach = Learning(taught["e164"], _dt(taught["since"]), rule)
        return SetOutcome(d["call"], d["o"], at, teach)
    if kind == "voicemail":
        return SetVoicemail(d["call"], d["s"], _dt(d["at"]), d["audio"])
    if kind == "recording":
        return SetRecording(d["call"], d["path"], d["s"])
    if kind == "lastcaller":
        return SetLastCaller(d["ep"], d["call"], _dt(d["at"]), d["e164"], d["raw"], d["cat"])
    if kind == "feature":
        at = _dt(d["at"])
        feature = Rule(Code(d["code"]), d["ep"], at, d["number"])
        return StaffFeature(d["ep"], d["code"], at, Timed(feature, d["not_after"]))
    if kind == "called":
        at = _dt(d["at"])
        caller = _uncaller(d["caller"])
        assert caller is not None
        return LearnCalled(d["e164"], at, CalledRule(caller, d["ep"], policy, at))
    if kind == "choice":
        listed = ListKind(d["kind"]) if d["kind"] is not None else None
        return SetStaffChoice(d["call"], d["choice"], d["staff"], _dt(d["at"]), listed, d["e164"])
    raise ValueError(f"unknown journal line kind {kind!r}")


def _ranges(seqs: Iterable[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for seq in sorted(seqs):
        if out and out[-1][1] == seq - 1:
            out[-1][1] = seq
        else:
            out.append([seq, seq])
    return out


def _mark_line(key: str, seqs: Iterable[int]) -> bytes:
    """One mark line: ``{"b": ranges}`` or ``{"c": ranges}``."""
    return (json.dumps({key: _ranges(seqs)}, separators=(",", ":")) + "\n").encode()


def _unranges(ranges: Any) -> set[int]:
    return {n for first, last in ranges for n in range(int(first), int(last) + 1)}


# --- reading a journal -----------------------------------------------------------------------


@dataclass
class Contents:
    """What a journal file holds: its writes in order, and what its marks say."""

    writes: dict[int, dict[str, Any]] = field(default_factory=dict)
    committed: set[int] = field(default_factory=set)
    begun: list[set[int]] = field(default_factory=list)  # each b mark, in order
    torn: int = 0  # lines that were not whole JSON (a crash inside a write)
    good_bytes: int = 0  # where the last whole line ends

    @property
    def last_seq(self) -> int:
        """The highest sequence number the file names, in a write or in a mark: a mark may
        name writes whose lines are torn (a failed append), and its numbers must never be
        handed out again (the mark would cover the new writes)."""
        marked = (max(group, default=0) for group in (self.committed, *self.begun))
        return max(max(self.writes, default=0), *marked)

    def unsure(self) -> list[set[int]]:
        """The transactions begun whose commit mark is missing (their writes no ``c`` mark
        holds), in order; each may or may not have committed."""
        groups = (group - self.committed for group in self.begun)
        return [group for group in groups if group & self.writes.keys()]

    def pending(self, applied: Set[int] = frozenset()) -> list[tuple[int, dict[str, Any]]]:
        """The writes no commit holds, in order (``applied``: writes of unsure transactions
        the database holds)."""
        done = self.committed | applied
        return [(seq, self.writes[seq]) for seq in sorted(self.writes) if seq not in done]


def parse(data: bytes) -> Contents:
    """The journal's contents; torn or garbled lines are counted and skipped."""
    contents = Contents()
    offset = 0
    for raw in data.splitlines(keepends=True):
        offset += len(raw)
        whole = raw.endswith(b"\n")
        if whole and not raw.strip():
            contents.good_bytes = offset  # an empty line: one begun after a torn fragment
            continue
        try:
            item = json.loads(raw) if whole else None
        except ValueError:
            item = None
        if not isinstance(item, dict):
            contents.torn += 1
            continue
        if whole:
            contents.good_bytes = offset
        if "n" in item and "w" in item:
            contents.writes[int(item["n"])] = item["w"]
        elif "c" in item:
            contents.committed |= _unranges(item["c"])
        elif "b" in item:
            contents.begun.append(_unranges(item["b"]))
        else:
            contents.torn += 1
    return contents


@dataclass(frozen=True, slots=True)
class _Witness:
    """How to tell whether a write is in the database: ``sql`` reads the row it leaves (by its
    key) and says whether that row holds the write. No row: the write was not applied if it
    inserts that row (``inserts``); if it only updates one that may not exist, it tells
    nothing, and the write before it in the transaction is asked instead."""

    sql: str
    params: tuple[Any, ...]
    inserts: bool = True


def _witness(d: dict[str, Any]) -> _Witness | None:
    kind = d["k"]
    if kind == "call":
        # A second decision for a call keeps the first one's received_at (and, after a
        # fallback, its route and reasons but for the last): only the latency and the last
        # reason are always this decision's.
        r = d["r"]
        return _Witness(
            "SELECT latency_ms IS ? AND json_extract(reasons, '$[#-1]') IS ?"
            " FROM calls WHERE call_id = ?",
            (r["latency_ms"], r["reasons"][-1] if r["reasons"] else None, r["call_id"]),
        )
    if kind in ("fallback", "late"):
        # A call not yet in the log gets the record's reasons; one that is gets them appended
        # as one reason, joined.
        r = d["r"]
        reasons = r["reasons"]
        return _Witness(
            "SELECT fallback = 1 AND json_extract(reasons, '$[#-1]') IN (?, ?)"
            " FROM calls WHERE call_id = ?",
            (reasons[-1] if reasons else "", "; ".join(reasons), r["call_id"]),
        )
    if kind == "hit":
        # A transaction's hits are its last statements, in their order.
        return _Witness(
            "SELECT abs(last_seen - ?) < 1e-5 FROM entries WHERE id = ?",
            (d["at"], int(d["id"])),
            inserts=False,
        )
    if kind == "outcome":
        return _Witness(
            "SELECT outcome IS ? AND abs(outcome_at - ?) < 1e-5 FROM calls WHERE call_id = ?",
            (d["o"], d["at"], d["call"]),
            inserts=False,
        )
    if kind == "voicemail":
        return _Witness("SELECT 1 FROM outbox WHERE key = ?", (f"voicemail:{d['call']}",))
    if kind == "lastcaller":
        return _Witness(
            "SELECT 1 FROM staff_last_caller WHERE endpoint = ? AND call_id = ?"
            " AND abs(at - ?) < 1e-5",
            (d["ep"], d["call"], d["at"]),
        )
    if kind == "choice":
        return _Witness(
            "SELECT staff_choice_by IS ? AND abs(staff_choice_at - ?) < 1e-5"
            " FROM calls WHERE call_id = ?",
            (d["staff"], d["at"], d["call"]),
            inserts=False,
        )
    if kind == "feature":
        return _Witness(
            "SELECT 1 FROM staff_changes WHERE endpoint = ?"
            " AND (abs(at - ?) < 1e-5 OR abs(undone_at - ?) < 1e-5)",
            (d["ep"], d["at"], d["at"]),
        )
    return None  # recordings, learned numbers: replaying them changes nothing that counts


def _applied(db: sqlite3.Connection, writes: Sequence[dict[str, Any]]) -> bool:
    """Whether the database holds the transaction of ``writes``: the row its last write that
    can tell leaves (nothing after it in the same transaction changes that row)."""
    for d in reversed(writes):
        witness = _witness(d)
        if witness is None:
            continue
        row = db.execute(witness.sql, witness.params).fetchone()
        if row is not None:
            return bool(row[0])
        if witness.inserts:
            return False
    return False  # nothing to tell by: replaying these is harmless (see _witness)


# --- the journal -----------------------------------------------------------------------------


class Journal:
    """The open journal of one running service. Use :func:`recover`."""

    def __init__(self, path: Path, fd: int, next_seq: int, size: int, *, enabled: bool) -> None:
        self.path = path
        self._fd = fd
        self._next = next_seq
        self._size = size  # where the last whole line ends: the next record starts there
        self.enabled = enabled  # False: SCREENER_JOURNAL=off; nothing new is journaled
        self._off = False  # a failed append or MAX_BYTES: off until the journal is empty
        self._off_at = 0.0  # when it turned off (time.monotonic)
        self.outstanding = 0  # journaled writes not yet committed
        self.failures = 0  # appends that failed (counted for the status line)
        # A failed or short write may have left a fragment past _size that could not be cut
        # off: the next record then starts on a line of its own.
        self._ragged = False
        # Writes to be marked committed that are not yet (a commit mark the disk refused, or
        # the writes of a failed append whose fragment may hold whole lines of them): written
        # before the next b mark, and no transaction begins until they are.
        self._unmarked: set[int] = set()

    def append(self, writes: Sequence[Write]) -> list[int] | None:
        """Journal ``writes`` (one write: they are one line each); their sequence numbers, or
        None when they were not journaled (then their commit must be waited for)."""
        if not self.enabled:
            return None
        if self._off and not self._retry_on():
            return None
        lines: list[str] = []
        seqs: list[int] = []
        for write in writes:
            data = encode(write)
            if data is None:
                return None
            seq = self._next + len(seqs)
            seqs.append(seq)
            lines.append(
                json.dumps({"n": seq, "w": data}, ensure_ascii=False, separators=(",", ":"))
            )
        text = ("\n".join(lines) + "\n").encode()
        if self._size + len(text) > MAX_BYTES:
            self._turn_off("the journal is full (a write lock held elsewhere for long)")
            return None
        # Never reused, even if the append fails: a fragment of it may hold these numbers.
        self._next += len(seqs)
        if not self._write(text):
            if self._ragged:
                # The fragment left may hold whole lines of these writes, which the writer
                # commits as not journaled: marked committed before anything commits.
                self._unmarked.update(seqs)
            return None
        self.outstanding += len(seqs)
        return seqs

    def _retry_on(self) -> bool:
        """Off with nothing outstanding (and for a while): empty the file, turn on again."""
        if self.outstanding > 0 or time.monotonic() - self._off_at < RETRY_ON:
            return False
        return self.reset()

    def begin(self, seqs: Sequence[int]) -> bool:
        """A transaction holding ``seqs`` is about to be tried; False if it must not be yet:
        its mark, or a commit mark written before it, was refused (a full disk)."""
        if not seqs and not self._unmarked:
            return True
        data = (_mark_line("c", self._unmarked) if self._unmarked else b"") + (
            _mark_line("b", seqs) if seqs else b""
        )
        if self._write(data):
            self._unmarked.clear()
            return True
        if self.outstanding <= 0 and not seqs:
            return self.reset()  # nothing in the file is left to replay: emptying it will do
        return False

    def done(self, seqs: Sequence[int]) -> None:
        """``seqs`` are committed (or given up for good, logged): never to be replayed."""
        if not seqs:
            return
        self.outstanding -= len(seqs)
        if self.outstanding <= 0 and self.reset():
            return
        self.mark_committed(seqs)  # or the file could not be emptied: these must be marked

    def mark_committed(self, seqs: Iterable[int]) -> None:
        """Write a ``c`` mark for ``seqs`` (and any refused before); kept for the next mark
        if the disk refuses it."""
        self._unmarked.update(seqs)
        if self._write(_mark_line("c", self._unmarked)):
            self._unmarked.clear()

    def reset(self) -> bool:
        """Nothing is left to replay: empty the file (and take writes again if it was off);
        False if it could not be emptied."""
        self.outstanding = 0
        try:
            os.ftruncate(self._fd, 0)
        except OSError as exc:
            self._turn_off(f"could not empty the journal: {exc}")
            return False
        self._size = 0
        self._ragged = False
        self._unmarked.clear()
        if self._off:
            log.info("the journal takes writes again", journal=str(self.path))
        self._off = False
        return True

    def _write(self, data: bytes) -> bool:
        """Append whole lines. A failed or short write is cut back to the last whole line, so
        that the next record is never glued to a fragment (both would be one unreadable line at
        the next start: a commit mark lost, a write applied twice)."""
        ragged = self._ragged and not self._cut()
        if ragged:
            data = b"\n" + data  # the fragment that could not be cut is a torn line of its own
        try:
            written = os.write(self._fd, data)
        except OSError as exc:
            self._failed(f"could not append to the journal: {exc}")
            return False
        if written != len(data):
            self._failed(os.strerror(errno.ENOSPC))  # a short write: the disk filled up
            return False
        if ragged:
            # The file ends on a whole line again, past a fragment of unknown length.
            try:
                self._size = os.lseek(self._fd, 0, os.SEEK_END)
            except OSError:
                self._size += written
            self._ragged = False
        else:
            self._size += written
        return True

    def _failed(self, why: str) -> None:
        self._ragged = True  # whatever the write left past the last whole line
        self._cut()
        self._turn_off(why)

    def _cut(self) -> bool:
        """Cut off what a failed write left past the last whole line; False if that failed."""
        try:
            os.ftruncate(self._fd, self._size)
        except OSError as exc:
            log.warning("journal: could not cut off a torn line", error=str(exc))
            return False
        self._ragged = False
        return True

    def _turn_off(self, why: str) -> None:
        self.failures += 1
        self._off_at = time.monotonic()
        if not self._off:
            self._off = True
            log.warning(
                "journal off: calls wait for their commit until it is empty again",
                journal=str(self.path),
                why=why,
            )

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


def _open_locked(path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StoreError(f"cannot open the journal {path}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise StoreError(
            f"another screener is running on this database (its journal {path} is locked);"
            " stop it first"
        ) from exc
    with contextlib.suppress(OSError):
        os.fchmod(fd, 0o600)  # one made by an older run with a looser umask
    return fd


@dataclass
class Recovered:
    """An open journal, and the writes a crashed run left uncommitted (to queue first)."""

    journal: Journal
    pending: list[tuple[int, Write]]
    torn: int


async def recover(
    db_path: Path, store: Store, policy: Policy, *, enabled: bool = True
) -> Recovered:
    """Open and lock the journal, and find what a crashed run left uncommitted, in order."""
    path = journal_path(db_path)
    fd = _open_locked(path)
    try:
        with open(path, "rb") as f:  # noqa: ASYNC230 -- a local file read once at start-up
            data = f.read()
        contents = parse(data)
        applied: set[int] = set()
        for group in contents.unsure():
            batch = [contents.writes[n] for n in sorted(group) if n in contents.writes]
            if await store.run(
                "journal: check a commit", functools.partial(_applied, writes=batch)
            ):
                applied |= group
        if contents.torn:
            log.warning(
                "journal: torn or unreadable lines skipped (a crash while writing them)",
                journal=str(path),
                lines=contents.torn,
            )
        if contents.good_bytes < len(data):
            os.ftruncate(fd, contents.good_bytes)  # so that the next line starts on its own
        pending: list[tuple[int, Write]] = []
        for seq, item in contents.pending(applied):
            try:
                pending.append((seq, decode(item, policy)))
            except (KeyError, TypeError, ValueError) as exc:
                contents.torn += 1
                log.warning("journal: a line that is no write skipped", seq=seq, error=str(exc))
        journal = Journal(path, fd, contents.last_seq + 1, contents.good_bytes, enabled=enabled)
        journal.outstanding = len(pending)
        if not pending:
            if not journal.reset() and applied:
                journal.mark_committed(applied)  # the file could not be emptied: mark them
        else:
            if applied:
                journal.mark_committed(applied)
            log.warning(
                "journal: replaying writes a previous run left uncommitted",
                journal=str(path),
                writes=len(pending),
            )
        return Recovered(journal, pending, contents.torn)
    except BaseException:
        os.close(fd)
        raise


__all__ = [
    "MAX_BYTES",
    "SUFFIX",
    "CalledRule",
    "Journal",
    "OutcomeRule",
    "Recovered",
    "decode",
    "encode",
    "journal_path",
    "parse",
    "recover",
]
