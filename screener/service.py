"""The live agent: ``screener run``.

One ``run(config)`` owns everything it starts (uvicorn's shape): it opens the store, logs in to
AMI, then consumes the AMI event queue until SIGINT/SIGTERM. For each ``ScreenRequest`` the
dialplan raises it normalizes the caller, looks it up, decides, records the decision and
Redirects the channel; outcomes (challenge results, voicemail left, fallbacks) are written back
to the call's record.

Two database connections: lookups run on a reader so that a writer stuck behind another
process's lock (a long ``list import``) never delays a routing decision. The call record is
committed *before* the Redirect when the writer answers within ``RECORD_BUDGET`` (so a crash
never loses a decision that was acted on), and after it otherwise (so a locked database never
costs a call its route).

Call records and list hits are written by one task, the writer, with group commit: calls queue
their rows in the open batch; each time the writer is free it commits everything queued
meanwhile in one transaction (one trip to the database thread), and resolves the batch's one
future for all of them. At low rates a batch holds one call; under bursts, many calls share one
commit instead of queuing for a commit each. Outcome writes (challenge results, voicemail,
fallbacks) wait for the batches queued before them, so they never overtake a call's record.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import os
import re
import signal
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog

from screener.ami import AMIClient, AMISettings, Event
from screener.config import Config
from screener.errors import AMIError, ConfigError, StoreError, StoreLockedError
from screener.numbers import Caller, Category, normalize
from screener.policy import Outcome, Route, challenge_code, learn
from screener.recordings import recording_path, sweep
from screener.screening import Screening, screen
from screener.store import CallRecord, Store

log = structlog.get_logger("screener.service")
T = TypeVar("T")

# The dialplan's events (docs/architecture.md) all come as UserEvents; the handlers are mapped
# by their name in Screener.__init__.
EVENTS = ("UserEvent",)

# Headers Asterisk itself sends more than once (one ChanVariable per manager.conf channelvars
# entry). A second copy of any other header can only come from caller data forging headers.
REPEATABLE_HEADERS = frozenset({"chanvariable"})

# How often old recordings are looked for (recording_retention_days is in days).
RECORDING_SWEEP_INTERVAL = 3600.0
# Writes kept in memory while the database stays locked by another process (about 1 KB each).
MAX_CARRIED_WRITES = 100_000
# How long the writer's connection waits for another process's lock before a turn gives up.
WRITER_BUSY_TIMEOUT = 5.0

# Requests over which the skew between Asterisk's clock and ours is estimated.
CLOCK_WINDOW = 256

# How long a routing decision may wait for its call record to be committed first.
RECORD_BUDGET = 0.25
# Calls remembered in memory to match later outcome events without a database read.
RECENT_CALLS = 20000
SHUTDOWN_GRACE = 5.0
# Latencies kept for the status line and tests (a bounded window, not the whole uptime).
LATENCY_WINDOW = 10000


@dataclass
class Stats:
    """Counters for the periodic status line and for tests."""

    requests: int = 0
    routed: int = 0
    late: int = 0
    failed: int = 0
    outcomes: int = 0
    fallbacks: int = 0
    record_errors: int = 0
    write_batches: int = 0
    write_retries: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))


@dataclass(eq=False)
class _Batch:
    """Writes queued for the writer's next transaction, and the one future they all wait on."""

    done: asyncio.Future[None]
    calls: list[CallRecord] = field(default_factory=list)
    fallbacks: list[CallRecord] = field(default_factory=list)
    hits: list[tuple[int, dt.datetime]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.calls) + len(self.fallbacks) + len(self.hits)

    def pieces(self) -> list[tuple[str, _Batch]]:
        """Each write alone, in the batch's order, with what to name it in a log line."""
        loop = self.done.get_loop()
        return [
            *((c.call_id, _Batch(loop.create_future(), calls=[c])) for c in self.calls),
            *((c.call_id, _Batch(loop.create_future(), fallbacks=[c])) for c in self.fallbacks),
            *((f"hit {h[0]}", _Batch(loop.create_future(), hits=[h])) for h in self.hits),
        ]


@dataclass(frozen=True, slots=True)
class Request:
    """A screening request as read from a ScreenRequest event's channel snapshot."""

    call_id: str
    number: str
    name: str
    did: str | None
    asterisk_time: float | None
    received_at: float
    suspicious: frozenset[str]
    tainted: bool = False

    @classmethod
    def from_event(cls, event: Event) -> Request | None:
        """Read the request; None if the event has no Uniqueid to route by."""
        call_id = event.get("Uniqueid")
        if not call_id:
            return None
        stamp = event.get("Timestamp")
        try:
            asterisk_time = float(stamp) if stamp else None
        except ValueError:
            asterisk_time = None
        exten = event.get("Exten") or ""
        return cls(
            call_id=call_id,
            number=event.get("CallerIDNum") or "",
            name=event.get("CallerIDName") or "",
            did=exten if exten not in ("", "s") else None,
            asterisk_time=asterisk_time,
            received_at=event.received_at,
            suspicious=event.duplicated - REPEATABLE_HEADERS,
            # The dialplan stripped control characters from the number (screen-sanitize).
            tainted=(event.get("Tainted") or "").strip().lower() == "yes",
        )


def ami_settings(config: Config) -> AMISettings:
    """The adapter's settings from the validated config (a secret is required here)."""
    ami = config.ami
    if not ami.secret:
        raise ConfigError(
            "no AMI secret: set SCREENER_AMI_SECRET or SCREENER_AMI_SECRET_FILE, "
            "or ami.secret_file in the config file"
        )
    return AMISettings(
        host=ami.host,
        port=ami.port,
        username=ami.username,
        secret=ami.secret,
        ssl=ami.tls,
        ca_file=str(ami.tls_ca_file) if ami.tls_ca_file else None,
        connect_timeout=ami.connect_timeout,
        action_timeout=ami.action_timeout,
        ping_interval=ami.ping_interval,
        ping_timeout=ami.ping_timeout,
        events="user",
    )


def redirect_target(screening: Screening, code: str | None) -> tuple[str, str]:
    """The dialplan context and extension for a decision (docs/architecture.md)."""
    route = screening.decision.route
    if route is Route.CHALLENGE:
        assert code is not None
        return "screen-challenge", code
    if route in (Route.REJECT, Route.VOICEMAIL) and screening.decision.announcement:
        return f"screen-{route.value}", screening.decision.announcement
    return f"screen-{route.value}", "s"


def screen_options(screening: Screening) -> str:
    """SCREEN_OPTIONS for the dialplan: ``<language>-<record yes|no>`` (docs/architecture.md)."""
    decision = screening.decision
    return f"{decision.language}-{'yes' if decision.record else 'no'}"


class Screener:
    """The per-process state of the live agent; ``run()`` builds one and drives it."""

    def __init__(
        self,
        config: Config,
        reader: Store,
        writer: Store,
        ami: AMIClient,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.reader = reader
        self.writer = writer
        self.ami = ami
        self.clock = clock
        self.stats = Stats()
        self.recent: OrderedDict[str, Caller] = OrderedDict()
        # Our clock minus Asterisk's, per recent request (see _remaining).
        self._clock_gaps: deque[float] = deque(maxlen=CLOCK_WINDOW)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._handlers: dict[str, Callable[[Event], Awaitable[None]]] = {
            "screenrequest": self.on_request,
            "screenchallenge": self.on_challenge,
            "screenvoicemail": self.on_voicemail,
            "screenfallback": self.on_fallback,
            "screenlate": self.on_late,
            "screenrecording": self.on_recording,
        }
        # The writer's state: the batch being filled, the one being committed.
        self._batch: _Batch | None = None
        self._committing: _Batch | None = None
        self._wake = asyncio.Event()
        self._writer_open = False
        self._closing = False

    # -- the loop ------------------------------------------------------------------------------

    async def serve(self, stop: asyncio.Event) -> None:
        """Consume AMI events until ``stop`` is set; let in-flight calls finish; flush writes."""
        self._writer_open, self._closing = True, False
        async with asyncio.TaskGroup() as group:
            group.create_task(self._write_batches(), name="screener-writer")
            consumer = group.create_task(self._consume(group), name="screener-events")
            sweeper = group.create_task(self._sweep_recordings(), name="screener-recordings")
            await stop.wait()
            sweeper.cancel()
            # Cancelling Queue.get() loses no event; what is still queued is left to the
            # dialplan's fallback, as the calls would be after the process exits.
            consumer.cancel()
            await self._drain()
            # The writer commits what the calls queued, then ends (the group waits for it).
            self._closing = True
            self._wake.set()

    async def _consume(self, group: asyncio.TaskGroup) -> None:
        events = self.ami.events
        while True:
            self.dispatch(group, await events.get())

    async def _drain(self) -> None:
        pending = [t for t in self._tasks if not t.done()]
        if not pending:
            return
        log.info("waiting for calls in flight", calls=len(pending), grace_s=SHUTDOWN_GRACE)
        _, still = await asyncio.wait(pending, timeout=SHUTDOWN_GRACE)
        for task in still:
            task.cancel()
        if still:
            log.warning("cancelled calls in flight at shutdown", calls=len(still))

    def dispatch(self, group: asyncio.TaskGroup, event: Event) -> None:
        """Start the handler for one event in the task group (never raises)."""
        handler = self._handlers.get((event.get("UserEvent") or "").lower())
        if handler is None:
            return
        task = group.create_task(self._guard(handler, event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guard(self, handler: Callable[[Event], Awaitable[None]], event: Event) -> None:
        # One call's failure must never take the service (and every other call) down with it.
        try:
            await handler(event)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.stats.failed += 1
            log.exception(
                "event handler failed", event=event.get("UserEvent"), call_id=event.get("Uniqueid")
            )

    # -- requests ------------------------------------------------------------------------------

    async def on_request(self, event: Event) -> None:
        """Screen one call and route it, unless the dialplan's fallback has already won."""
        request = Request.from_event(event)
        if request is None:
            log.warning("screen request without Uniqueid ignored")
            return
        self.stats.requests += 1
        self._observe_clock(request)
        if "uniqueid" in request.suspicious:
            # Header injection could have put a forged Uniqueid before the real one: we cannot
            # tell which call this is, and redirecting someone else's call is worse than letting
            # the dialplan's fallback take this one.
            self.stats.failed += 1
            log.warning("screen request with two Uniqueid headers ignored", call_id=request.call_id)
            return
        started = time.perf_counter()
        now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        with structlog.contextvars.bound_contextvars(call_id=request.call_id):
            screening = await screen(
                self.reader,
                request.number,
                self.config.policy,
                self.config.region,
                now,
                request.did,
                forged=request.suspicious,
                tainted=request.tainted,
            )
            decision = screening.decision
            code = (
                challenge_code(self.config.policy.challenge_digits)
                if decision.route is Route.CHALLENGE
                else None
            )
            latency_ms = (time.perf_counter() - started) * 1000.0
            self._remember(request.call_id, screening.caller)
            reasons = decision.reasons
            record = CallRecord(
                call_id=request.call_id,
                received_at=now,
                raw_number=request.number,
                raw_name=request.name,
                e164=screening.caller.e164,
                category=screening.caller.category.value,
                did=screening.did,
                route=decision.route.value,
                rule=decision.rule,
                reasons=reasons,
                latency_ms=latency_ms,
            )
            if self._too_late(request):
                await self._record_too_late(record)
                return
            batch = self._queue()
            batch.calls.append(record)
            if decision.entry is not None and decision.entry.id is not None:
                # The match is counted with the decision it made, in the same commit: a hit of
                # its own would cost the writer a second transaction per call.
                batch.hits.append((decision.entry.id, now))
            # Recording first is worth a little wait, never the call's route: spend at most half
            # the time left before the deadline on it, and send nothing if it passed meanwhile.
            # (asyncio.wait never cancels the batch's future, which other calls share.)
            budget = min(RECORD_BUDGET, self._remaining(request) / 2)
            if budget > 0:
                await asyncio.wait((batch.done,), timeout=budget)
            if self._too_late(request):  # the wait for the record used up the time left
                await self._record_too_late(record)
                return
            context, exten = redirect_target(screening, code)
            try:
                # The language and recording go first: the Redirect starts the route that
                # reads them (one action each; Asterisk runs a session's actions in order).
                options = screen_options(screening)
                await self.ami.setvar(request.call_id, "SCREEN_OPTIONS", options)
                await self.ami.redirect(request.call_id, context, exten)
            except (AMIError, ValueError) as exc:
                # ValueError: the Uniqueid cannot be sent (over AMI's line limit): forged.
                # The call is not lost: the dialplan's fallback takes it when the hold ends.
                self.stats.failed += 1
                log.warning(
                    "redirect failed; the dialplan fallback will take the call",
                    error=str(exc),
                    route=decision.route.value,
                )
                return
            total_ms = (time.perf_counter() - started) * 1000.0
            self.stats.routed += 1
            self.stats.latencies_ms.append(total_ms)
            log.info(
                "call screened",
                caller=screening.caller.display,
                name=request.name,
                category=screening.caller.category.value,
                did=screening.did,
                route=decision.route.value,
                rule=decision.rule,
                reasons=list(reasons),
                decision_ms=round(latency_ms, 3),
                redirect_ms=round(total_ms, 3),
            )

    async def _record_too_late(self, record: CallRecord) -> None:
        """No Redirect: the dialplan's fallback has (or is about to have) the call.

        Recorded as a decision that came too late: the route the fallback took (ScreenFallback,
        before or after this) is what the call log keeps.
        """
        self.stats.late += 1
        late = dataclasses.replace(
            record,
            fallback=True,
            reasons=(*record.reasons, "decided too late: the dialplan fallback ran"),
        )
        await self._committed(self._queue().calls, late)
        log.warning("decision too late; fallback keeps the call", route=record.route)

    def _remaining(self, request: Request) -> float:
        """Seconds left before the dialplan's fallback may begin (negative once passed).

        Timed on Asterisk's clock (the event's Timestamp), corrected by the smallest gap seen
        lately between it and ours: delays in transit or in our queue only ever add to the gap,
        so its minimum is the clocks' skew. A remote Asterisk whose clock is off by minutes then
        still gets its calls routed, and a request stuck in a backlog is still seen as late
        (unless nothing but backlog was seen since start-up).
        """
        if request.asterisk_time is None:
            start = request.received_at
        else:
            skew = min(self._clock_gaps, default=0.0)
            # A gap shorter than the hold is delay, or a skew too small to matter: trust
            # Asterisk's clock as it is. Only a gap every recent request shows is a skew.
            start = request.asterisk_time + (skew if abs(skew) >= self.config.hold_seconds else 0.0)
        deadline = start + self.config.hold_seconds - self.config.late_margin
        return deadline - self.clock()

    def _observe_clock(self, request: Request) -> None:
        if request.asterisk_time is not None:
            self._clock_gaps.append(request.received_at - request.asterisk_time)

    def _too_late(self, request: Request) -> bool:
        return self._remaining(request) < 0

    def _remember(self, call_id: str, caller: Caller) -> None:
        self.recent[call_id] = caller
        self.recent.move_to_end(call_id)
        while len(self.recent) > RECENT_CALLS:
            self.recent.popitem(last=False)

    async def _write(self, operation: Awaitable[T]) -> T | None:
        """Run a database write; a failure (disk full, locked) is logged, never raised (None).

        It first waits for the writer's queued batches, so that it never overtakes them (an
        outcome must find its call's record).
        """
        try:
            await self._flushed()
        except BaseException:
            if isinstance(operation, Coroutine):
                operation.close()  # never started: close it, or Python warns it was never awaited
            raise
        try:
            return await operation
        except StoreError as exc:
            self._write_failed(exc, 1)
            return None

    def _write_failed(self, exc: Exception, lost: int, **context: Any) -> None:
        self.stats.record_errors += lost
        log.error(
            "could not write to the database; the call is still routed",
            error=str(exc),
            records=lost,
            **context,
        )

    # -- the writer: group commit ---------------------------------------------------------------

    def _queue(self) -> _Batch:
        """The batch the writer commits next; append writes to it (without awaiting between)."""
        batch = self._batch
        if batch is None:
            batch = self._batch = _Batch(asyncio.get_running_loop().create_future())
            if self._writer_open:
                self._wake.set()
            else:  # no writer (it ended, or never started): nothing must wait for this batch
                batch.done.set_result(None)
                log.error("database writer not running; record dropped")
                self._batch = None
        return batch

    async def _committed(self, rows: list[CallRecord], record: CallRecord) -> None:
        """Queue ``record`` on ``rows`` (of the open batch) and wait until it is committed."""
        rows.append(record)
        await self._flushed()

    async def _flushed(self) -> None:
        """Wait until every write queued so far is committed (or has failed and been logged)."""
        batch = self._batch or self._committing  # the open batch commits after the other
        if batch is not None:
            await asyncio.wait((batch.done,))

    async def _write_batches(self) -> None:
        """The writer task: commit all that was queued meanwhile, one transaction per turn."""
        try:
            while True:
                batch = self._batch
                if batch is None:
                    if self._closing:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                self._batch, self._committing = None, batch
                try:
                    await self._commit(batch)
                finally:
                    self._committing = None
                    if not batch.done.done():
                        batch.done.set_result(None)
        finally:
            self._writer_open = False
            if self._batch is not None:  # cancelled: release whoever waits on the rest
                self._batch.done.set_result(None)
                self._batch = None

    async def _commit(self, batch: _Batch) -> None:
        """Write one batch; never raises but CancelledError. Failures are logged and counted."""
        self.stats.write_batches += 1
        try:
            await self._write_batch(batch)
            return
        except StoreLockedError as exc:
            # Another process (a long `list import`) holds the write lock past busy_timeout.
            # Keep the writes for the next turn rather than lose them (each turn waits
            # busy_timeout again: that is the backoff); give up only at shutdown, or when so
            # many are waiting that memory is at stake.
            carried = batch.size + (self._batch.size if self._batch is not None else 0)
            if self._closing or carried > MAX_CARRIED_WRITES:
                self._write_failed(exc, batch.size)
                return
            self.stats.write_retries += 1
            log.warning("database locked; keeping the writes for the next commit", writes=carried)
            nxt = self._queue()
            nxt.calls[:0], nxt.fallbacks[:0], nxt.hits[:0] = (
                batch.calls,
                batch.fallbacks,
                batch.hits,
            )
            return
        except Exception as exc:
            if batch.size == 1:
                self._write_failed(exc, 1, call_id=batch.pieces()[0][0])
                return
            log.warning(
                "batch write failed; writing its records one by one",
                error=str(exc),
                records=batch.size,
            )
        # One bad record must not cost the other calls of its batch their records.
        for name, piece in batch.pieces():
            try:
                await self._write_batch(piece)
            except Exception as exc:
                self._write_failed(exc, 1, call_id=name)

    async def _write_batch(self, batch: _Batch) -> None:
        await self.writer.record_batch(
            calls=batch.calls, fallbacks=batch.fallbacks, hits=batch.hits
        )

    # -- outcomes ------------------------------------------------------------------------------

    async def on_challenge(self, event: Event) -> None:
        """Store a challenge outcome on the call and learn from it."""
        call_id = event.get("Uniqueid") or ""
        if {"uniqueid", "outcome"} & event.duplicated:
            # A forged outcome would earn a caller a learned allow entry: never act on one.
            log.warning("challenge outcome with repeated headers ignored", call_id=call_id)
            return
        raw = (event.get("Outcome") or "").strip().lower()
        try:
            outcome = Outcome(raw)
        except ValueError:
            log.warning("unknown challenge outcome ignored", call_id=call_id, outcome=raw[:40])
            return
        self.stats.outcomes += 1
        now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        caller = self.recent.get(call_id) or await self._caller_from_log(call_id)
        counted = await self._write(self.writer.set_outcome(call_id, outcome.value, now))
        learned_entry = None
        if caller is not None and caller.e164 is not None:
            policy = self.config.policy
            since = now - dt.timedelta(days=policy.fail_window_days)
            failures = await self.reader.recent_failures(caller.e164, since)
            if counted and outcome in (Outcome.FAIL, Outcome.TIMEOUT):
                failures = max(0, failures - 1)  # this call's outcome is already counted
            existing = next(
                (
                    e
                    for e in await self.reader.lookup(caller.e164)
                    if not e.prefix and e.number == caller.e164
                ),
                None,
            )
            learned_entry = learn(caller, outcome, existing, failures, policy, now)
            if learned_entry is not None:
                stored = await self._write(self.writer.learn(learned_entry, now))
                if not stored:
                    learned_entry = None
        log.info(
            "challenge outcome",
            call_id=call_id,
            outcome=outcome.value,
            caller=caller.display if caller else None,
            learned=learned_entry.describe() if learned_entry else None,
        )

    async def _caller_from_log(self, call_id: str) -> Caller | None:
        record = await self.reader.get_call(call_id)
        if record is None:
            return None
        # The verdict as it was made, not a fresh normalization of the raw number: a caller
        # screened as invalid (tainted, forged headers) must stay invalid, and learn nothing.
        try:
            category = Category(record.category)
        except ValueError:
            category = Category.INVALID
        return Caller(record.raw_number, record.e164, category, "from the call log")

    async def on_voicemail(self, event: Event) -> None:
        """Note on the call's record that the caller reached voicemail (and whether it left one)."""
        call_id = event.get("Uniqueid") or ""
        # VMSTATUS values are upper-case words; anything else (or a header forged ahead of the
        # real one) is not recorded as if Asterisk had said it.
        status = (event.get("Status") or "").strip()
        if "status" in event.duplicated or not re.fullmatch(r"[A-Z]{1,20}", status):
            status = "UNKNOWN"
        await self._write(self.writer.set_voicemail(call_id, status))
        log.info("voicemail", call_id=call_id, status=status)

    async def on_recording(self, event: Event) -> None:
        """The dialplan started (or finished) recording the call: note the file on its record."""
        call_id = event.get("Uniqueid") or ""
        if not call_id or {"uniqueid", "status", "seconds"} & event.duplicated:
            log.warning("recording event with repeated headers ignored", call_id=call_id)
            return
        status = (event.get("Status") or "").strip().lower()
        seconds_text = (event.get("Seconds") or "").strip()
        seconds = float(seconds_text) if status == "done" and seconds_text.isdigit() else None
        path = str(recording_path(self.config.recording_folder, call_id))
        await self._flushed()  # the call's own record first
        await self._write(self.writer.set_recording(call_id, path, seconds))
        if status == "done":
            # Asterisk wrote it with its own umask; the call is over, so it is ours to close up.
            await asyncio.to_thread(_make_private, path)
        log.info("recording", call_id=call_id, status=status[:20], path=path, seconds=seconds)

    async def _sweep_recordings(self) -> None:
        """Delete recordings past their retention, at start-up and then every hour."""
        folder, days = self.config.recording_folder, self.config.recording_retention_days
        while True:
            try:
                result = await asyncio.to_thread(sweep, folder, self.clock(), days)
            except OSError as exc:
                log.error("recording retention sweep failed", folder=str(folder), error=str(exc))
            else:
                if result.deleted:
                    log.info(
                        "old recordings deleted",
                        folder=str(folder),
                        deleted=len(result.deleted),
                        kept=result.kept,
                        retention_days=days,
                    )
            await asyncio.sleep(RECORDING_SWEEP_INTERVAL)

    async def on_fallback(self, event: Event) -> None:
        """The dialplan gave up waiting: make sure the call log says so."""
        self.stats.fallbacks += 1
        await self._record_fallback(event, "no decision within the hold time: dialplan fallback")

    async def on_late(self, event: Event) -> None:
        """A Redirect reached a call no longer holding; the dialplan put the call back."""
        call_id = event.get("Uniqueid") or ""
        state = (event.get("State") or "").strip().lower()[:20]
        if state == "routed":
            # A repeated Redirect of a call a decision already routed: the dialplan restarts that
            # route, so the call log's route and fallback flag are still right.
            log.warning("late redirect of a routed call: route kept", call_id=call_id)
            return
        # ScreenLate carries no Route. ScreenFallback, raised before it, recorded the route the
        # fallback took; keep it. Read on the writer, so that write is already committed.
        route = None
        if call_id:
            await self._flushed()
            try:
                previous = await self.writer.get_call(call_id)
            except StoreError as exc:
                log.error("could not read the call log", call_id=call_id, error=str(exc))
                previous = None
            if previous is not None and previous.fallback:
                route = previous.route
        await self._record_fallback(
            event, "decision arrived after the fallback began: ignored", route
        )

    async def _record_fallback(self, event: Event, why: str, route: str | None = None) -> None:
        request = Request.from_event(event)
        if request is None:
            return
        if route is None:
            said = (event.get("Route") or "").strip().lower()
            known = {r.value for r in Route}
            # The route the dialplan reports, if it is one; a forged or unknown one is not kept.
            route = said if said in known and "route" not in event.duplicated else "staff"
        now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        caller = normalize(request.number, self.config.region)
        await self._write(
            self.writer.record_fallback(
                CallRecord(
                    call_id=request.call_id,
                    received_at=now,
                    raw_number=request.number,
                    raw_name=request.name,
                    e164=caller.e164,
                    category=caller.category.value,
                    did=request.did,
                    route=route,
                    rule="fallback",
                    reasons=(why,),
                    latency_ms=0.0,
                    fallback=True,
                )
            )
        )
        log.warning(
            "call took the dialplan fallback", call_id=request.call_id, route=route, why=why
        )


def _make_private(path: str) -> None:
    with contextlib.suppress(OSError):  # not ours (another user's file), or not there
        os.chmod(path, 0o600)


async def run(
    config: Config,
    *,
    stop: asyncio.Event | None = None,
    ready: Callable[[Screener], None] | None = None,
) -> Stats:
    """Run the agent until SIGINT/SIGTERM (or ``stop``); returns the final counters."""
    settings = ami_settings(config)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        # The reader is opened first and must succeed: a service that cannot read its lists
        # must not start (the dialplan's fallback covers calls meanwhile).
        async with (
            # create=False: a missing or empty database is an error, never a fresh empty list.
            Store.open(config.db_path, create=False, busy_timeout=WRITER_BUSY_TIMEOUT) as writer,
            Store.open(config.db_path, readonly=True) as reader,
            AMIClient(settings, event_names=EVENTS) as ami,
        ):
            log.info(
                "screener running",
                ami=settings.address,
                database=str(config.db_path),
                entries=await reader.count_entries(),
                hold_s=config.hold_seconds,
            )
            screener = Screener(config, reader, writer, ami)
            if ready is not None:
                ready(screener)
            failed = asyncio.ensure_future(ami.wait_failed())
            serving = asyncio.ensure_future(screener.serve(stop))
            done, _ = await asyncio.wait({failed, serving}, return_when=asyncio.FIRST_COMPLETED)
            if failed in done:
                stop.set()
                await serving
                failed.result()  # re-raises the AMI failure (for example a changed secret)
            else:
                failed.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await failed
                serving.result()
            log.info(
                "screener stopped",
                requests=screener.stats.requests,
                routed=screener.stats.routed,
                late=screener.stats.late,
            )
            return screener.stats
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
