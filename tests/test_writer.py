"""screener.writer: writes held by another process's lock are kept in order, or given up for
good, and never left in the journal to be applied out of order at the next start."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from screener import journal as jr
from screener import writer as writer_module
from screener.errors import StoreError, StoreLockedError
from screener.events import Event
from screener.journal import Journal
from screener.store import RecordCall, Write, WriteResult
from screener.writer import Writer
from tests.test_journal import record


@dataclass
class Counters:
    record_errors: int = 0
    write_batches: int = 0
    write_retries: int = 0


class ScriptedStore:
    """A store whose every ``apply`` takes the next turn the test hands it: ``"ok"`` commits
    the writes (they are remembered), ``"locked"`` is another process's lock, ``"bad"`` a
    write that fails for good."""

    def __init__(self) -> None:
        self.turns: asyncio.Queue[str] = asyncio.Queue()
        self.asked = 0  # applies begun
        self.committed: list[list[str]] = []  # the call ids of each commit, in order

    async def apply(self, writes: Sequence[Write]) -> list[WriteResult]:
        self.asked += 1
        turn = await self.turns.get()
        if turn == "locked":
            raise StoreLockedError("database is locked")
        if turn == "bad":
            raise StoreError("bad data")
        self.committed.append([w.record.call_id for w in writes if isinstance(w, RecordCall)])
        return [None] * len(writes)

    async def turn(self, what: str) -> None:
        """Hand the writer one turn, and let it go as far as it can with it."""
        await self.turns.put(what)
        await _settle()


@dataclass
class Rig:
    store: ScriptedStore
    journal: Journal
    writer: Writer
    counters: Counters
    published: list[Event] = field(default_factory=list)


def _rig(tmp_path: Path, *, max_carried: int = 100) -> Rig:
    path = tmp_path / "j"
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    journal = Journal(path, fd, 1, 0, enabled=True)
    store = ScriptedStore()
    counters = Counters()
    published: list[Event] = []
    writer = Writer(
        store,  # type: ignore[arg-type]  # a fake with Store.apply's shape
        counters,
        published.append,
        max_carried=max_carried,
        journal=journal,
    )
    return Rig(store, journal, writer, counters, published)


def _call(call_id: str) -> RecordCall:
    return RecordCall(record(call_id))


async def _settle() -> None:
    for _ in range(50):
        await asyncio.sleep(0)


def _pending(journal: Journal) -> list[str]:
    contents = jr.parse(journal.path.read_bytes())
    return [item["r"]["call_id"] for _, item in contents.pending()]


async def test_writes_given_up_past_the_cap_leave_the_journal(tmp_path: Path) -> None:
    """Past max_carried the oldest writes are given up for good, logged and counted, and out
    of the journal too: it empties once the rest commit, and no start replays them after the
    writes that came later."""
    rig = _rig(tmp_path, max_carried=2)
    task = asyncio.create_task(rig.writer.run())
    try:
        await _settle()
        rig.writer.queue(_call("a"), _call("b"))
        await _settle()
        await rig.store.turn("locked")  # a and b carried (2, not more than 2)
        rig.writer.queue(_call("c"))
        await rig.store.turn("locked")  # a, b and c: more than 2, a and b given up
        await rig.store.turn("ok")
        await rig.writer.flushed()
        assert rig.store.committed == [["c"]]
        assert rig.counters.record_errors == 2
        assert rig.journal.outstanding == 0
        assert rig.journal.path.stat().st_size == 0  # emptied: nothing to replay
    finally:
        rig.writer.close()
        await task
        rig.journal.close()


async def test_a_lock_met_one_by_one_carries_that_write_and_the_rest_in_order(
    tmp_path: Path,
) -> None:
    """A batch written one by one (a bad write in it) that meets a held lock keeps that write
    and the ones after it, in order, for the next commit: none is lost or left behind."""
    rig = _rig(tmp_path)
    task = asyncio.create_task(rig.writer.run())
    try:
        await _settle()
        rig.writer.queue(_call("a"), _call("b"), _call("c"))
        await _settle()
        await rig.store.turn("bad")  # the batch fails: one by one
        await rig.store.turn("ok")  # a
        await rig.store.turn("locked")  # b meets the lock: b and c carried
        await rig.store.turn("ok")
        await rig.writer.flushed()
        assert rig.store.committed == [["a"], ["b", "c"]]
        assert rig.counters.record_errors == 0
        assert rig.journal.outstanding == 0 and rig.journal.path.stat().st_size == 0
    finally:
        rig.writer.close()
        await task
        rig.journal.close()


async def test_at_shutdown_nothing_commits_after_a_write_left_in_the_journal(
    tmp_path: Path,
) -> None:
    """Stopping under a held lock leaves the journaled writes for the next start; a write
    queued after them is not committed by this run (even if the lock went), so the next
    start replays both in their order."""
    rig = _rig(tmp_path)
    task = asyncio.create_task(rig.writer.run())
    await _settle()
    rig.writer.queue(_call("a"))
    await _settle()
    await rig.store.turn("locked")  # a carried; the writer tries it again
    rig.writer.close()
    rig.writer.queue(_call("b"))  # in the open batch, behind a
    await rig.store.turn("locked")  # shutdown: a left in the journal
    await rig.store.turns.put("ok")  # the lock went: b must still wait for a
    await asyncio.wait_for(task, 5)
    try:
        assert rig.store.committed == []
        assert _pending(rig.journal) == ["a", "b"]
        assert rig.counters.record_errors == 0  # nothing lost: the next start commits them
    finally:
        rig.journal.close()


async def test_no_commit_begins_while_the_journal_refuses_its_mark(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk refuses the b mark: the batch is not committed (a crash could replay it),
    but carried and tried again once the journal takes the mark; nothing is lost."""
    monkeypatch.setattr(writer_module, "MARK_RETRY", 0.01)
    rig = _rig(tmp_path)
    refused = {"on": True}
    begin = rig.journal.begin
    monkeypatch.setattr(rig.journal, "begin", lambda seqs: not refused["on"] and begin(seqs))
    task = asyncio.create_task(rig.writer.run())
    try:
        await _settle()
        rig.writer.queue(_call("a"))
        await asyncio.sleep(0.05)
        assert rig.store.asked == 0 and rig.counters.write_retries >= 1
        rig.writer.queue(_call("b"))
        refused["on"] = False
        await asyncio.sleep(0.05)
        await rig.store.turn("ok")
        await rig.writer.flushed()
        assert rig.store.committed == [["a", "b"]]
        assert rig.counters.record_errors == 0
        assert rig.journal.path.stat().st_size == 0
    finally:
        rig.writer.close()
        await task
        rig.journal.close()
