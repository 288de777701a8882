"""screener.journal: the lines, what a journal file says is left to commit, and the file itself."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
from pathlib import Path

import pytest
import structlog.testing

from screener import journal as jr
from screener.errors import StoreError
from screener.featurecodes import Code, Result, Rule, Timed
from screener.journal import CalledRule, Journal, OutcomeRule
from screener.numbers import Caller, Category
from screener.policy import Entry, ListKind, Outcome, Policy
from screener.service import journal_enabled
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
)

NOW = dt.datetime(2026, 12, 2, 1, 2, 3, 456789, tzinfo=dt.UTC)
POLICY = Policy()
CALLER = Caller("0120121852", "+81120121852", Category.TOLL_FREE, "toll-free")


def record(call_id: str = "1700000000.1", **kw: object) -> CallRecord:
    fields: dict[str, object] = {
        "call_id": call_id,
        "received_at": NOW,
        "raw_number": "0120121852",
        "raw_name": "タナカ",
        "e164": "+81120121852",
        "category": "toll_free",
        "did": "+81355550000",
        "route": "challenge",
        "rule": "category",
        "reasons": ("caller +81120121852: toll-free", "category rule toll_free → challenge"),
        "latency_ms": 0.123456789,
    }
    fields.update(kw)
    return CallRecord(**fields)  # type: ignore[arg-type]  # the test's own field table


WRITES: list[Write] = [
    RecordCall(record()),
    RecordFallback(record(fallback=True, reasons=("dialplan fallback",), latency_ms=0.0)),
    RecordLate(record(fallback=True, reasons=("too late",))),
    RecordHit(42, NOW),
    SetOutcome("1700000000.1", "fail", NOW),
    SetOutcome(
        "1700000000.1",
        "pass",
        NOW,
        Learning(
            "+81120121852",
            NOW - dt.timedelta(days=30),
            OutcomeRule(CALLER, Outcome.PASS, POLICY, NOW),
        ),
    ),
    SetOutcome(
        "1700000000.1",
        "fail",
        NOW,
        Learning(None, NOW, OutcomeRule(None, Outcome.FAIL, POLICY, NOW)),
    ),
    SetVoicemail("1700000000.1", "SUCCESS", NOW, "/var/spool/asterisk/voicemail/x.wav"),
    SetRecording("1700000000.1", "/rec/1700000000.1.wav", 12.0),
    SetLastCaller("staff1", "1700000000.1", NOW, "+81120121852", "0120121852", "toll_free"),
    SetLastCaller("staff1", "1700000000.1", NOW),
    StaffFeature(
        "staff1", "block", NOW, Timed(Rule(Code.BLOCK, "staff1", NOW, "+81312345678"), 1.5e9)
    ),
    LearnCalled("+81312345678", NOW, CalledRule(CALLER, "staff1", POLICY, NOW)),
    SetStaffChoice("1700000000.1", "block", "staff1", NOW, ListKind.BLOCK, "+81120121852"),
    SetStaffChoice("1700000000.1", "ring", "staff1", NOW),
]


@pytest.mark.parametrize("write", WRITES, ids=lambda w: type(w).__name__)
def test_every_write_survives_its_line(write: Write) -> None:
    """Each kind of write comes back from its JSON line equal to what was journaled."""
    line = json.dumps(jr.encode(write), ensure_ascii=False)
    assert jr.decode(json.loads(line), POLICY) == write


def test_a_write_with_a_rule_of_unknown_shape_is_not_journaled() -> None:
    """A closure cannot be written down: such a write is not journaled (its commit is waited)."""
    closure = Learning(None, NOW, lambda record, existing, failures: None)
    assert jr.encode(SetOutcome("1.1", "pass", NOW, closure)) is None
    assert jr.encode(StaffFeature("staff1", "undo", NOW, Rule(Code.UNDO, "staff1", NOW))) is None


def _line(seq: int, write: Write) -> bytes:
    return (json.dumps({"n": seq, "w": jr.encode(write)}) + "\n").encode()


def _mark(key: str, *ranges: list[int]) -> bytes:
    return (json.dumps({key: list(ranges)}) + "\n").encode()


def test_only_writes_no_commit_holds_are_pending() -> None:
    """Committed ranges are skipped; the rest comes back in order."""
    data = b"".join(
        [
            _line(1, WRITES[0]),
            _line(2, WRITES[3]),
            _mark("b", [1, 2]),
            _mark("c", [1, 2]),
            _line(3, WRITES[4]),
            _line(4, WRITES[7]),
        ]
    )
    contents = jr.parse(data)
    assert [seq for seq, _ in contents.pending()] == [3, 4]
    assert contents.unsure() == [] and contents.torn == 0


def test_the_last_transaction_begun_without_a_commit_mark_is_unsure() -> None:
    """A crash between COMMIT and its mark: the database decides (here: it holds it)."""
    data = b"".join([_line(1, WRITES[0]), _mark("b", [1, 1]), _line(2, WRITES[4])])
    contents = jr.parse(data)
    assert contents.unsure() == [{1}]
    assert [seq for seq, _ in contents.pending({1})] == [2]
    assert [seq for seq, _ in contents.pending()] == [1, 2]


def test_every_transaction_begun_without_its_commit_mark_is_unsure() -> None:
    """Not only the last: a journal may hold an earlier b group no c mark covers (a commit
    mark lost before a later transaction began); each is for the database to decide."""
    data = b"".join(
        [
            _line(1, WRITES[0]),
            _mark("b", [1, 1]),
            _line(2, WRITES[4]),
            _mark("b", [2, 2]),
            _line(3, WRITES[7]),
            _mark("b", [3, 3]),
            _mark("c", [3, 3]),
        ]
    )
    assert jr.parse(data).unsure() == [{1}, {2}]


def test_a_torn_last_line_is_skipped_and_counted() -> None:
    """A crash inside the write leaves half a line: skipped, counted, the rest kept."""
    whole = _line(1, WRITES[0])
    torn = _line(2, WRITES[4])[:25]
    contents = jr.parse(whole + torn)
    assert contents.torn == 1
    assert [seq for seq, _ in contents.pending()] == [1]
    assert contents.good_bytes == len(whole)


def test_a_feature_code_changes_nothing_once_the_phone_stopped_waiting() -> None:
    """Timed: past its deadline the plan is FAILED and applies nothing; before, the rule's."""
    rule = Rule(Code.BLOCK, "staff1", NOW, "+81312345678")
    late = Timed(rule, not_after=100.0, clock=lambda: 101.0)
    plan = late.plan(None, None, None)
    assert (plan.result, plan.apply) == (Result.FAILED, False)
    in_time = Timed(rule, not_after=100.0, clock=lambda: 99.0)
    assert in_time.plan(None, None, None) == rule.plan(None, None, None)


# -- the file ------------------------------------------------------------------------------------


async def test_the_journal_is_private_locked_and_emptied(db: Path) -> None:
    """0600 like the database; a second opener is refused; emptied once all is committed."""
    async with Store.open(db) as store:
        recovered = await jr.recover(db, store, POLICY)
        journal = recovered.journal
        try:
            path = jr.journal_path(db)
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            with pytest.raises(StoreError, match="another screener is running"):
                await jr.recover(db, store, POLICY)
            seqs = journal.append([WRITES[0], WRITES[3]])
            assert seqs == [1, 2] and path.stat().st_size > 0
            journal.begin(seqs)
            journal.done(seqs)
            assert path.stat().st_size == 0
        finally:
            journal.close()


def _journal(tmp_path: Path) -> Journal:
    path = tmp_path / "j"
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    return Journal(path, fd, 1, 0, enabled=True)


def test_a_full_journal_turns_off_until_it_is_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past MAX_BYTES (a lock held for long) writes are refused, then taken again once empty."""
    journal = _journal(tmp_path)
    try:
        first = journal.append([WRITES[0]])
        assert first == [1]
        monkeypatch.setattr(jr, "MAX_BYTES", journal.path.stat().st_size + 10)
        assert journal.append([WRITES[4]]) is None
        assert journal.failures == 1
        journal.done(first)
        assert journal.append([WRITES[4]]) == [2]
    finally:
        journal.close()


def test_a_failed_append_turns_the_journal_off(tmp_path: Path) -> None:
    """An append the disk refuses (here: a closed descriptor) is reported as not journaled."""
    journal = _journal(tmp_path)
    os.close(journal._fd)
    journal._fd = os.open(os.devnull, os.O_RDONLY)
    try:
        assert journal.append([WRITES[0]]) is None
        assert journal.failures == 1 and journal.outstanding == 0
    finally:
        journal.close()


def test_journal_switch_reads_the_environment() -> None:
    """SCREENER_JOURNAL=off (or 0/false/no) turns journaling off; anything else keeps it on."""
    assert journal_enabled({}) and journal_enabled({"SCREENER_JOURNAL": "on"})
    assert not any(journal_enabled({"SCREENER_JOURNAL": v}) for v in ("off", "0", "False", "no"))


class _FailingDisk:
    """os.write and os.ftruncate on one descriptor, failing as a full disk does when told."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fd: int) -> None:
        self.fd = fd
        self.short: int | None = None  # the next write stops after this many bytes
        self.refuse = False  # every write fails (ENOSPC)
        self.no_truncate = False
        real_write, real_truncate = os.write, os.ftruncate

        def write(fd: int, data: bytes) -> int:
            if fd == self.fd and self.refuse:
                raise OSError(28, "No space left on device")
            if fd == self.fd and self.short is not None:
                part, self.short = data[: self.short], None
                return real_write(fd, part)
            return real_write(fd, data)

        def ftruncate(fd: int, length: int) -> None:
            if fd == self.fd and self.no_truncate:
                raise OSError(5, "Input/output error")
            real_truncate(fd, length)

        monkeypatch.setattr(os, "write", write)
        monkeypatch.setattr(os, "ftruncate", ftruncate)


def test_a_short_append_is_cut_off_so_the_next_mark_reads_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An append the disk cuts short leaves no fragment for the next commit mark to be glued
    to: the mark is read at the next start, and the committed write is not replayed."""
    journal = _journal(tmp_path)
    disk = _FailingDisk(monkeypatch, journal._fd)
    try:
        assert journal.append([WRITES[0]]) == [1]
        assert journal.append([WRITES[4]]) == [2]
        journal.begin([1])
        disk.short = 25
        assert journal.append([WRITES[7]]) is None  # not journaled: its commit is waited for
        journal.done([1])  # marks go on while the journal is off
        contents = jr.parse(journal.path.read_bytes())
        assert contents.torn == 0
        assert contents.committed == {1}
        assert [seq for seq, _ in contents.pending()] == [2]
    finally:
        journal.close()


def test_a_fragment_that_cannot_be_cut_is_a_line_of_its_own_and_never_replayed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A short append that cannot be cut off either (it may hold whole lines of writes the
    writer was told were not journaled): the next line starts on a line of its own, and those
    writes are marked never to be replayed."""
    journal = _journal(tmp_path)
    disk = _FailingDisk(monkeypatch, journal._fd)
    try:
        assert journal.append([WRITES[0], WRITES[4]]) == [1, 2]
        journal.begin([1])
        disk.no_truncate = True
        line = json.dumps({"n": 3, "w": jr.encode(WRITES[7])}, separators=(",", ":"))
        disk.short = len(line) + 1 + 10  # line 3 whole, line 4 torn
        assert journal.append([WRITES[7], WRITES[8]]) is None
        journal.done([1])
        contents = jr.parse(journal.path.read_bytes())
        assert contents.torn == 1  # the fragment of line 4, on its own
        assert contents.committed >= {1, 3, 4}
        assert [seq for seq, _ in contents.pending()] == [2]
    finally:
        journal.close()


def test_a_refused_commit_mark_goes_out_before_the_next_transaction_begins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit mark the disk refused is written ahead of the next b mark, in one write: a
    crash after the next transaction began never finds the first committed but unmarked."""
    journal = _journal(tmp_path)
    disk = _FailingDisk(monkeypatch, journal._fd)
    try:
        assert journal.append([WRITES[0], WRITES[4], WRITES[7]]) == [1, 2, 3]
        assert journal.begin([1])
        disk.refuse = True
        journal.done([1])  # refused
        assert not journal.begin([2])  # nor may a transaction begin while it is
        disk.refuse = False
        assert journal.begin([2])  # no done([2]): a crash here
        contents = jr.parse(journal.path.read_bytes())
        assert contents.committed == {1}
        assert contents.unsure() == [{2}]
        assert [seq for seq, _ in contents.pending()] == [2, 3]
    finally:
        journal.close()


def test_a_journal_off_with_nothing_outstanding_turns_on_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An append the disk refused with nothing else in the journal: no commit will ever empty
    it, so the next append (after RETRY_ON) empties it and journals again."""
    journal = _journal(tmp_path)
    disk = _FailingDisk(monkeypatch, journal._fd)
    monkeypatch.setattr(jr, "RETRY_ON", 0.0)
    try:
        disk.refuse = True
        assert journal.append([WRITES[0]]) is None
        assert journal.append([WRITES[0]]) is None  # still full: tried, refused again
        disk.refuse = False
        assert journal.append([WRITES[4]]) == [3]
        assert journal.failures == 2 and journal.outstanding == 1
    finally:
        journal.close()


def test_a_fragment_that_cannot_be_cut_is_voided_before_anything_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writes of a short append that could not be cut back are committed as not journaled:
    the mark that voids them goes out before their transaction begins, even one with no
    journaled write in it, and none begins while that mark is refused."""
    journal = _journal(tmp_path)
    disk = _FailingDisk(monkeypatch, journal._fd)
    try:
        disk.no_truncate = True
        line = json.dumps({"n": 1, "w": jr.encode(WRITES[0])}, separators=(",", ":"))
        disk.short = len(line) + 1  # line 1 whole: a write the writer will commit itself
        assert journal.append([WRITES[0], WRITES[4]]) is None
        disk.refuse = True
        assert not journal.begin([])
        disk.refuse = False
        assert journal.begin([])
        contents = jr.parse(journal.path.read_bytes())
        assert contents.committed >= {1, 2}
        assert contents.pending() == []
    finally:
        journal.close()


def test_a_commit_mark_the_disk_refused_goes_out_with_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit mark that could not be written is written with the next one: a write whose
    mark was refused is not replayed once the disk takes writes again."""
    journal = _journal(tmp_path)
    disk = _FailingDisk(monkeypatch, journal._fd)
    try:
        assert journal.append([WRITES[0], WRITES[4], WRITES[7]]) == [1, 2, 3]
        journal.begin([1])
        disk.refuse = True
        journal.done([1])
        disk.refuse = False
        journal.begin([2])
        journal.done([2])
        contents = jr.parse(journal.path.read_bytes())
        assert contents.committed == {1, 2} and contents.torn == 0
        assert [seq for seq, _ in contents.pending()] == [3]
    finally:
        journal.close()


# -- a commit whose mark was lost: does the database hold it? ----------------------------------


def _compact(seq: int, write: Write) -> bytes:
    line = json.dumps({"n": seq, "w": jr.encode(write)}, ensure_ascii=False, separators=(",", ":"))
    return (line + "\n").encode()


async def _replayed(db: Path, committed: list[list[Write]], unsure: list[Write]) -> list[int]:
    """Commit ``committed`` (one transaction each), then leave a journal whose last
    transaction begun is ``unsure`` with no commit mark; what recover() would replay."""
    async with Store.open(db) as store:
        for writes in committed:
            await store.apply(writes)
        journal = b"".join(_compact(n, w) for n, w in enumerate(unsure, start=1))
        journal += _mark("b", [1, len(unsure)])
        jr.journal_path(db).write_bytes(journal)
        recovered = await jr.recover(db, store, POLICY)
        recovered.journal.close()
    return [seq for seq, _ in recovered.pending]


async def _entry_id(db: Path) -> int:
    async with Store.open(db) as store:
        entry, _ = await store.add(Entry(ListKind.BLOCK, "+81312345678", created_at=NOW))
    assert entry.id is not None
    return entry.id


LATER = NOW + dt.timedelta(seconds=3)


async def test_a_second_decision_for_a_call_is_recognised_as_committed(db: Path) -> None:
    """A call decided twice keeps its first received_at: the second decision, committed
    before a crash lost its mark, is still recognised and not applied again."""
    first = RecordCall(record("9.1"))
    second = RecordCall(record("9.1", received_at=LATER, latency_ms=0.5, route="staff"))
    assert await _replayed(db, [[first], [second]], [second]) == []


async def test_a_second_decision_that_did_not_commit_is_replayed(db: Path) -> None:
    """The other way round: the first decision is in, the second was not: it is replayed."""
    first = RecordCall(record("9.2"))
    second = RecordCall(record("9.2", received_at=LATER, latency_ms=0.5, route="staff"))
    assert await _replayed(db, [[first]], [second]) == [1]


async def test_a_committed_list_hit_is_not_counted_twice(db: Path) -> None:
    """A transaction of list hits alone (a batch written one by one) is recognised by the
    entry's last_seen; one that did not commit is replayed."""
    entry_id = await _entry_id(db)
    hit = RecordHit(entry_id, LATER)
    assert await _replayed(db, [[hit]], [hit]) == []
    assert await _replayed(db, [], [RecordHit(entry_id, LATER + dt.timedelta(seconds=1))]) == [1]


async def test_a_hit_on_an_entry_gone_asks_the_record_before_it(db: Path) -> None:
    """A hit whose entry is no longer there tells nothing: the call record before it decides."""
    call = RecordCall(record("9.3"))
    assert await _replayed(db, [[call]], [call, RecordHit(999, LATER)]) == []


async def test_a_fallback_appended_to_a_logged_call_is_recognised(db: Path) -> None:
    """A fallback with several reasons on a call already logged appends them as one reason:
    that is what is looked for."""
    call = RecordCall(record("9.4"))
    fell = RecordFallback(record("9.4", fallback=True, reasons=("dialplan fallback", "no answer")))
    assert await _replayed(db, [[call], [fell]], [fell]) == []


async def test_an_earlier_unsure_transaction_is_checked_too(db: Path) -> None:
    """Two transactions begun without their commit marks (a journal of an older release): the
    first committed and is skipped, the second did not and is replayed."""
    first = RecordCall(record("9.5"))
    second = RecordCall(record("9.6"))
    async with Store.open(db) as store:
        await store.apply([first])
        data = _compact(1, first) + _mark("b", [1, 1]) + _compact(2, second) + _mark("b", [2, 2])
        jr.journal_path(db).write_bytes(data)
        recovered = await jr.recover(db, store, POLICY)
        recovered.journal.close()
    assert [seq for seq, _ in recovered.pending] == [2]


# Written by the journal of the previous release (f40bd3f): two writes committed, then an
# outcome whose transaction began and did not commit.
PREVIOUS_RELEASE = (
    b'{"n":1,"w":{"k":"call","r":{"call_id":"1.1","received_at":1796173323.456789,'
    b'"raw_number":"0312345678","raw_name":"","e164":"+81312345678","category":"fixed",'
    b'"did":"+81355550000","route":"staff","rule":"default","reasons":["default"],'
    b'"latency_ms":0.25,"outcome":null,"outcome_at":null,"voicemail":null,"fallback":false}}}\n'
    b'{"n":2,"w":{"k":"hit","id":7,"at":1796173323.456789}}\n'
    b'{"b":[[1,2]]}\n'
    b'{"c":[[1,2]]}\n'
    b'{"n":3,"w":{"k":"outcome","call":"1.1","o":"pass","at":1796173323.456789,"learn":null}}\n'
    b'{"b":[[3,3]]}\n'
)


async def test_a_journal_left_by_the_previous_release_replays(db: Path) -> None:
    """The lines and marks are read as the previous release wrote them: what it committed is
    skipped, what it did not is replayed, and new lines follow on."""
    async with Store.open(db) as store:
        jr.journal_path(db).write_bytes(PREVIOUS_RELEASE)
        recovered = await jr.recover(db, store, POLICY)
        try:
            assert recovered.pending == [(3, SetOutcome("1.1", "pass", NOW))]
            assert recovered.torn == 0
            assert recovered.journal.append([WRITES[0]]) == [4]
        finally:
            recovered.journal.close()


def test_sequence_numbers_a_mark_names_are_never_handed_out_again() -> None:
    """A failed append whose lines are torn away can still be named by a c mark that made it
    to disk: the next start numbers its writes past it, or that mark would cover them."""
    data = _line(1, WRITES[0]) + _mark("c", [2, 3])
    assert jr.parse(data).last_seq == 3


def test_a_commit_is_marked_when_the_journal_cannot_be_emptied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last outstanding writes committed, but the file could not be emptied: they get
    their c mark instead, so the next start does not replay them."""
    journal = _journal(tmp_path)
    disk = _FailingDisk(monkeypatch, journal._fd)
    try:
        assert journal.append([WRITES[0]]) == [1]
        assert journal.begin([1])
        disk.no_truncate = True
        journal.done([1])
        contents = jr.parse(journal.path.read_bytes())
        assert contents.committed == {1} and contents.pending() == []
    finally:
        journal.close()


async def test_an_empty_journal_at_start_up_replays_nothing_and_says_nothing(db: Path) -> None:
    """A clean previous stop left nothing to replay: no replay warning is logged."""
    async with Store.open(db) as store:
        with structlog.testing.capture_logs() as logs:
            recovered = await jr.recover(db, store, POLICY)
        recovered.journal.close()
    assert recovered.pending == []
    assert not [e for e in logs if "replaying" in e["event"]], logs
