"""The service's database writer: group commit, in order, and nothing lost to a held lock.

Every write the live agent makes (call records, list hits, fallbacks, challenge outcomes with
what they teach, voicemail statuses, staff phones' choices with the list entries they make) is
queued here and committed by one task::

    writer = Writer(store, stats, hub.publish)
    task = group.create_task(writer.run())
    writer.queue(RecordCall(record))                   # returns the batch's future
    result = await writer.submit(SetOutcome(...))      # queue and wait for its own result
    writer.close()                                     # commits what is queued, then run() ends

*Group commit*: writes queue in the open batch; each time the writer is free it commits
everything queued meanwhile in ONE transaction (one trip to the database thread) and resolves
the batch's one future for all of them. At low rates a batch holds one write; under bursts,
many calls share one commit instead of queuing for a commit each.

*Linger* (``linger``, with the journal): when nobody waits for a batch's commit (every write in
it is journaled and no result is asked for), the writer waits up to ``linger`` seconds for more
writes to join it before it commits; a write someone waits for commits it at once.

*In order*: a batch is applied in the order its writes were queued, and batches one after the
other, so an outcome is always applied after the record of its call.

*The journal* (:mod:`screener.journal`, optional): each write is appended to it as it is
queued (:meth:`Writer.queue_journaled` says whether it was), each transaction is marked in it
before and after, and what a crashed run left is queued first again (:meth:`Writer.resume`).
When the journal refuses the mark that must come before a commit (a full disk), the batch is
carried as over a held lock and tried again after ``MARK_RETRY`` seconds: a commit the journal
cannot mark could be replayed after a crash.

*Lock survival*: when another process holds the write lock past ``busy_timeout`` (a long
``list import``), the whole batch is carried, in order, ahead of the next one and retried on the
next turn (each turn waits ``busy_timeout`` again: that is the backoff). :meth:`Writer.stalled`
tells how long the commit under way has been waiting, so that a call need not wait too. A
batch that fails for a reason other than the lock is written one by one (a bad write costs the
others nothing); a lock met there carries that write and the rest in the same way. Writes are
given up only at shutdown or when more than ``max_carried`` are waiting, and never so that a
later write commits before them: at shutdown a journaled write is left in the journal (the next
start commits it first) and this run commits nothing more; past ``max_carried`` (memory is then
at stake) the oldest are given up for good, marked done in the journal as well, never replayed.
Each loss is logged, counted, and published as :class:`~screener.events.DBWriteFailed` (the
``screener_db_write_errors_total`` metric).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from screener.errors import StoreError, StoreLockedError
from screener.events import DBWriteFailed, Event
from screener.journal import Journal
from screener.store import (
    LearnCalled,
    RecordCall,
    RecordFallback,
    RecordHit,
    RecordLate,
    SetLastCaller,
    StaffFeature,
    Store,
    Write,
    WriteResult,
)

log = structlog.get_logger("screener.writer")

# Writes kept in memory while the database stays locked by another process (about 1 KB each).
MAX_CARRIED_WRITES = 100_000
# A mark the journal refused (a full disk): the commit behind it is tried again this often.
MARK_RETRY = 0.2
JOURNAL_REFUSED = StoreError("the journal refused the mark before this commit (a full disk?)")

Result = WriteResult


class Counters(Protocol):
    """The counters the writer keeps up to date (the service's Stats has them)."""

    record_errors: int
    write_batches: int
    write_retries: int


@dataclass(eq=False)
class _Batch:
    """Writes queued for one transaction, the future they all wait on, and their own results."""

    done: asyncio.Future[None]
    writes: list[Write] = field(default_factory=list)
    # One per write: a future for whoever wants that write's result, or None.
    results: list[asyncio.Future[Result] | None] = field(default_factory=list)
    # One per write: its line in the journal, or None if it has none.
    seqs: list[int | None] = field(default_factory=list)
    # Someone waits for this commit (a write not journaled, or a result asked for): no linger.
    urgent: bool = False

    @property
    def journaled(self) -> list[int]:
        return [seq for seq in self.seqs if seq is not None]

    @property
    def size(self) -> int:
        return len(self.writes)


def _name(write: Write) -> str:
    """What to call a write in a log line: its call id, or the entry a hit counts."""
    if isinstance(write, RecordHit):
        return f"hit {write.entry_id}"
    if isinstance(write, RecordCall | RecordFallback | RecordLate):
        return write.record.call_id
    if isinstance(write, StaffFeature):
        return f"feature {write.code} from {write.endpoint}"
    if isinstance(write, SetLastCaller):
        return write.call_id
    if isinstance(write, LearnCalled):
        return f"called {write.e164}"
    return write.call_id


def _release(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)


def _settle(future: asyncio.Future[Result] | None, result: Result) -> None:
    if future is not None and not future.done():
        future.set_result(result)


class Writer:
    """Commits the service's writes in order, in groups, carrying them over a held lock."""

    def __init__(
        self,
        store: Store,
        counters: Counters,
        publish: Callable[[Event], None],
        *,
        max_carried: int = MAX_CARRIED_WRITES,
        journal: Journal | None = None,
        linger: float = 0.0,
    ) -> None:
        self.store = store
        self.journal = journal
        self.linger = linger
        self._urgent = asyncio.Event()
        self.counters = counters
        self.publish = publish
        self.max_carried = max_carried
        self._batch: _Batch | None = None  # being filled
        self._committing: _Batch | None = None  # being written
        self._wake = asyncio.Event()
        self._open = False
        self._closing = False
        # A write was left in the journal at shutdown: nothing after it commits in this run.
        self._left = False
        # When the commit under way began (its first try, if a held lock carried it), or None.
        self._since: float | None = None

    @property
    def backlog(self) -> int:
        """Writes queued and not yet committed (for the status line)."""
        return sum(b.size for b in (self._batch, self._committing) if b is not None)

    def stalled(self, longer_than: float) -> bool:
        """Whether the commit under way began more than ``longer_than`` seconds ago: the
        database is locked by another process (or the disk is slow), and a write queued now
        will wait at least as long."""
        since = self._since
        return since is not None and time.monotonic() - since > longer_than

    # -- queueing ------------------------------------------------------------------------------

    def _open_batch(self) -> _Batch:
        batch = self._batch
        if batch is None:
            batch = self._batch = _Batch(asyncio.get_running_loop().create_future())
            if self._open:
                self._wake.set()
        return batch

    def queue(self, *writes: Write) -> asyncio.Future[None]:
        """Queue ``writes`` (in this order) for the next commit; the future is done once that
        commit is over, whether it succeeded (or its failure was logged). Never awaits."""
        done, _ = self.queue_journaled(*writes)
        return done

    def queue_journaled(self, *writes: Write) -> tuple[asyncio.Future[None], bool]:
        """:meth:`queue`, and whether the writes are in the journal: then no crash of this
        process loses them, and nobody need wait for their commit first."""
        if not self._open:
            # No writer (it ended, or never started): nothing must wait for these writes.
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
            self._failed("database writer not running", list(writes))
            return done, False
        seqs = self._journal(writes)
        batch = self._open_batch()
        for write, seq in zip(writes, seqs, strict=True):
            batch.writes.append(write)
            batch.results.append(None)
            batch.seqs.append(seq)
        journaled = bool(seqs) and seqs[0] is not None
        if not journaled:
            self._hurry(batch)
        return batch.done, journaled

    def resume(self, pending: Sequence[tuple[int, Write]]) -> None:
        """Queue, ahead of everything, the journaled writes a crashed run left uncommitted
        (:func:`screener.journal.recover`); before :meth:`run` starts."""
        if not pending:
            return
        batch = self._open_batch()
        batch.writes[:0] = [write for _, write in pending]
        batch.results[:0] = [None] * len(pending)
        batch.seqs[:0] = [seq for seq, _ in pending]

    def _journal(self, writes: Sequence[Write]) -> list[int | None]:
        seqs = self.journal.append(writes) if self.journal is not None else None
        return list(seqs) if seqs is not None else [None] * len(writes)

    async def submit(self, write: Write) -> Result:
        """Queue one write and wait for its own result (None if it was lost; that is logged)."""
        if not self._open:
            self._failed("database writer not running", [write])
            return None
        (seq,) = self._journal([write])
        batch = self._open_batch()
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        batch.writes.append(write)
        batch.results.append(future)
        batch.seqs.append(seq)
        self._hurry(batch)
        return await future

    def _hurry(self, batch: _Batch) -> None:
        batch.urgent = True
        self._urgent.set()

    async def flushed(self) -> None:
        """Wait until every write queued so far is committed (or has failed and been logged)."""
        batch = self._batch or self._committing  # the open batch commits after the other
        if batch is not None:
            await asyncio.wait((batch.done,))

    def close(self) -> None:
        """Commit what is queued (one last try each), then let :meth:`run` return."""
        self._closing = True
        self._wake.set()
        self._urgent.set()

    # -- the task ------------------------------------------------------------------------------

    async def run(self) -> None:
        """The writer task: commit all that was queued meanwhile, one transaction per turn."""
        self._open, self._closing, self._left = True, False, False
        try:
            while True:
                batch = self._batch
                if batch is None:
                    if self._closing:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                if self.linger > 0 and not batch.urgent and not self._closing:
                    # Nobody waits for this commit (its writes are journaled): let more writes
                    # join it, so that a busy agent makes fewer, larger transactions.
                    self._urgent.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._urgent.wait(), self.linger)
                self._batch, self._committing = None, batch
                carried = False
                if self._since is None:
                    self._since = time.monotonic()
                try:
                    carried = await self._commit(batch)
                finally:
                    self._committing = None
                    if not carried:
                        self._since = None
                        _release(batch.done)
        finally:
            self._open = False
            self._since = None
            for left in (self._batch, self._committing):
                if left is not None:  # cancelled: release whoever waits on the rest
                    for future in left.results:
                        _settle(future, None)
                    _release(left.done)
            self._batch = None

    async def _commit(self, batch: _Batch) -> bool:
        """Write one batch; True if it was carried to the next turn instead.

        Never raises but CancelledError. Failures are logged and counted.
        """
        self.counters.write_batches += 1
        journal = self.journal
        if self._left:
            # An earlier write was left in the journal for the next start: committing this
            # one now would put it before that one.
            self._leave(batch)
            return False
        if journal is not None and not journal.begin(batch.journaled):
            return await self._unmarked(batch, 0)
        try:
            results = await self.store.apply(batch.writes)
        except StoreLockedError as exc:
            return self._held(exc, batch, 0)
        except Exception as exc:
            if batch.size == 1:
                # Failed for good (bad data), as in the one-by-one path below: never replayed,
                # and out of the journal, which can then empty again.
                if journal is not None:
                    journal.done(batch.journaled)
                self._failed(str(exc), batch.writes)
                _settle(batch.results[0], None)
                return False
            log.warning(
                "batch write failed; writing its records one by one",
                error=str(exc),
                records=batch.size,
            )
        else:
            if journal is not None:
                journal.done(batch.journaled)
            for future, result in zip(batch.results, results, strict=True):
                _settle(future, result)
            return False
        # One bad write must not cost the others of its batch theirs.
        for n, (write, future, seq) in enumerate(
            zip(batch.writes, batch.results, batch.seqs, strict=True)
        ):
            one = [seq] if seq is not None else []
            if journal is not None and not journal.begin(one):
                return await self._unmarked(batch, n)
            try:
                (result,) = await self.store.apply([write])
            except StoreLockedError as exc:
                # This write and those after it wait for the lock, in order, as a batch does.
                return self._held(exc, batch, n)
            except Exception as exc:
                # Failed for good (bad data): never replayed.
                if journal is not None:
                    journal.done(one)
                self._failed(str(exc), [write])
                _settle(future, None)
            else:
                if journal is not None:
                    journal.done(one)
                _settle(future, result)
        return False

    async def _unmarked(self, batch: _Batch, start: int) -> bool:
        """The journal refused the mark that must come before this commit (a full disk):
        without it a crash could replay what commits now. Carried as over a held lock, and
        tried again after :data:`MARK_RETRY` seconds."""
        carried = self._held(JOURNAL_REFUSED, batch, start, "journal refused a mark")
        if carried:
            await asyncio.sleep(MARK_RETRY)
        return carried

    def _held(
        self, exc: Exception, batch: _Batch, start: int, why: str = "database locked"
    ) -> bool:
        """A lock held elsewhere stopped ``batch`` at its write ``start``: carry that write and
        those after it, in order, ahead of what was queued meanwhile; True if they were.

        At shutdown they are left in the journal for the next start; past ``max_carried``
        they are given up for good. Either way nothing queued after them commits before them.
        """
        rest = _Batch(
            batch.done,
            batch.writes[start:],
            batch.results[start:],
            batch.seqs[start:],
            batch.urgent,
        )
        carried = rest.size + (self._batch.size if self._batch is not None else 0)
        if self._closing:
            self._leave(rest, str(exc))
            return False
        if carried > self.max_carried:
            self._give_up(rest, str(exc))
            return False
        self.counters.write_retries += 1
        log.warning(f"{why}; keeping the writes for the next commit", writes=carried)
        # Ahead of whatever was queued meanwhile: the order stays the order of the calls.
        nxt = self._open_batch()
        nxt.writes[:0], nxt.results[:0], nxt.seqs[:0] = rest.writes, rest.results, rest.seqs
        if rest.urgent:
            self._hurry(nxt)
        # Whoever waits on this batch's future now waits for the next commit.
        nxt.done.add_done_callback(lambda _: _release(batch.done))
        return True

    def _leave(self, batch: _Batch, error: str = "") -> None:
        """Shutdown under a held lock: the journaled writes stay in the journal, which the next
        start commits first, and from now on nothing else is committed by this run (it would
        come before them). The writes that are not journaled are lost."""
        kept = batch.journaled
        if kept:
            self._left = True
            log.warning(
                "stopping under a held lock: writes left in the journal for the next start",
                writes=len(kept),
                **({"error": error} if error else {}),
            )
        lost = [w for w, seq in zip(batch.writes, batch.seqs, strict=True) if seq is None]
        self._failed(error or "an earlier write was left in the journal", lost)
        for future in batch.results:
            _settle(future, None)

    def _give_up(self, batch: _Batch, error: str) -> None:
        """More than ``max_carried`` writes wait for a held lock: the oldest are given up for
        good (memory is at stake), out of the journal too, so that the next start never
        applies them after the writes that came later."""
        log.error(
            "database locked for too long: writes given up for good",
            writes=batch.size,
            max_carried=self.max_carried,
        )
        if self.journal is not None:
            self.journal.done(batch.journaled)
        self._failed(error, batch.writes)
        for future in batch.results:
            _settle(future, None)

    def _failed(self, error: str, writes: list[Write]) -> None:
        if not writes:
            return
        self.counters.record_errors += len(writes)
        call_id = _name(writes[0]) if len(writes) == 1 else None
        log.error(
            "could not write to the database; the call is still routed",
            error=error,
            records=len(writes),
            **({"call_id": call_id} if call_id else {}),
        )
        self.publish(DBWriteFailed(error=error, writes=len(writes), call_id=call_id))


__all__ = ["MAX_CARRIED_WRITES", "Counters", "Result", "Writer"]
