"""The live agent: ``screener run``, and its handling of the dialplan's AMI events.

One ``run(config)`` owns everything it starts (uvicorn's shape): it opens the store, logs in to
AMI, then consumes the AMI event queue until SIGINT/SIGTERM. For each ``ScreenRequest`` the
dialplan raises it normalizes the caller, looks it up, decides, records the decision and
Redirects the channel; the events that follow (challenge outcomes, voicemail left, recordings,
fallbacks) are written back to the call's record by :class:`~screener.outcomes.Outcomes`, the
staff phones' by :class:`~screener.staffphones.StaffPhones`. What happened is published on one
:class:`~screener.events.Hub`.

Two database connections: the writer's is opened first (it creates nothing: ``create=False``,
and it migrates), then the reader's; lookups run on the reader so that a writer stuck behind
another process's lock (a long ``list import``) never delays a routing decision. Every write is
first appended to the journal (:mod:`screener.journal`, replayed by the next start after a
crash), so a call is Redirected without waiting for its record's commit and no crash of this
process loses a decision that was acted on. Without the journal (``SCREENER_JOURNAL=off``, or a
full disk turned it off), the record is committed *before* the Redirect when the writer answers
within ``RECORD_BUDGET``, and after it otherwise (so a locked database never costs a call its
route); once the writer has been stuck for longer than that budget, calls stop waiting for it
at all until it commits again. Lookups run on the event loop's own thread (a read-only
connection that never waits). Every write goes through :class:`~screener.writer.Writer` (group
commit, in order, carried over a held lock); what a challenge outcome teaches is decided by
:mod:`screener.learning` inside the outcome's own transaction.

Every ``STATUS_INTERVAL`` seconds one ``status`` log line sums up the service: calls screened,
routes, fallbacks, late decisions, failures and the write backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import os
import signal
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from screener import agentstatus, housekeeping, marker
from screener.ami import AMIClient, AMISettings, Event
from screener.config import Config
from screener.dialplan import Request, redirect_target, screen_options
from screener.errors import AMIError, ConfigError, StoreCorruptError, StoreError
from screener.events import (
    AMIConnected,
    AMIDisconnected,
    CallScreened,
    Hub,
)
from screener.journal import Journal, Recovered, recover
from screener.numbers import Caller
from screener.observers import start_observers
from screener.outcomes import Outcomes
from screener.policy import Route, challenge_code
from screener.screening import screen
from screener.shared import start_sync
from screener.skew import WindowMin
from screener.staffphones import StaffPhones
from screener.store import (
    CallRecord,
    RecordCall,
    RecordHit,
    Store,
)
from screener.writer import Writer

log = structlog.get_logger("screener.service")

# The dialplan's events (docs/architecture.md) all come as UserEvents; the handlers are mapped
# by their name in Screener.__init__.
EVENTS = ("UserEvent",)

# How long the writer's connection waits for another process's lock before a turn gives up.
WRITER_BUSY_TIMEOUT = 5.0

# Requests over which the skew between Asterisk's clock and ours is estimated.
CLOCK_WINDOW = 256

# How long a routing decision may wait for its call record to be committed first (when the
# record could not be journaled).
RECORD_BUDGET = 0.25
# With the journal nobody waits for a call record's commit: the writer lets the records of this
# long join one transaction (fewer, larger commits, less of the CPU the calls need).
COMMIT_LINGER = 0.05
# Calls remembered in memory to match later outcome events without a database read.
RECENT_CALLS = 20000
SHUTDOWN_GRACE = 5.0
# Latencies kept for the status line and tests (a bounded window, not the whole uptime).
LATENCY_WINDOW = 10000
# Seconds between two status lines.
STATUS_INTERVAL = 300.0
# Seconds after start-up before the list entries are counted (for the log; see _count_lists).
COUNT_DELAY = 5.0
# How often the AMI connection's state is looked at, to publish (dis)connections.
AMI_WATCH_INTERVAL = 0.2


@dataclass
class Stats:
    """Counters for the periodic status line and for tests."""

    requests: int = 0
    routed: int = 0
    late: int = 0
    failed: int = 0
    outcomes: int = 0
    fallbacks: int = 0
    voicemails: int = 0
    learned: int = 0
    record_errors: int = 0
    write_batches: int = 0
    write_retries: int = 0
    routes: Counter[str] = field(default_factory=Counter)
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))


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


class Screener:
    """The per-process state of the live agent; ``run()`` builds one and drives it."""

    def __init__(
        self,
        config: Config,
        reader: Store,
        writer: Store,
        ami: AMIClient,
        clock: Callable[[], float] = time.time,
        hub: Hub | None = None,
        journal: Journal | None = None,
    ) -> None:
        self.config = config
        self._status_warned = False
        self.reader = reader
        self.ami = ami
        self.clock = clock
        self.stats = Stats()
        self.hub = hub or Hub()
        self.writer = Writer(
            writer, self.stats, self.hub.publish, journal=journal, linger=COMMIT_LINGER
        )
        self.recent: OrderedDict[str, Caller] = OrderedDict()
        # Our clock minus Asterisk's, per recent request (see _remaining).
        self._clock_gaps = WindowMin(CLOCK_WINDOW)
        self._holds_warned: set[float] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        # What follows a call's route: challenge outcomes, voicemail, recordings, fallbacks.
        self.outcomes = Outcomes(
            config, self.writer, self.hub.publish, self.stats, self.recent, clock
        )
        self._handlers: dict[str, Callable[[Event], Awaitable[None]]] = {
            "screenrequest": self.on_request,
            "screenchallenge": self.outcomes.on_challenge,
            "screenvoicemail": self.outcomes.on_voicemail,
            "screenfallback": self.outcomes.on_fallback,
            "screenlate": self.outcomes.on_late,
            "screenrecording": self.outcomes.on_recording,
        }
        # The staff phones' events (outside calls, last callers, feature codes).
        self.staff = StaffPhones(config, self.writer, ami, self.hub.publish, self.recent, clock)
        self._handlers.update(
            {
                "staffdialled": self.staff.on_dialled,
                "staffrang": self.staff.on_rang,
                "stafffeature": self.staff.on_feature,
                "screenstaffchoice": self.staff.on_choice,
            }
        )

    # -- the loop ------------------------------------------------------------------------------

    async def serve(self, stop: asyncio.Event) -> None:
        """Consume AMI events until ``stop`` is set; let in-flight calls finish; flush writes."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self.writer.run(), name="screener-writer")
            consumer = group.create_task(self._consume(group), name="screener-events")
            helpers = [
                group.create_task(self._status_lines(), name="screener-status"),
                group.create_task(self._watch_ami(), name="screener-ami-watch"),
                group.create_task(self._count_lists(), name="screener-count"),
                group.create_task(
                    housekeeping.sweep_recordings(self.config, self.clock),
                    name="screener-recordings",
                ),
                group.create_task(
                    housekeeping.prune_outbox(self.config, self.clock),
                    name="screener-outbox-prune",
                ),
            ]
            await stop.wait()
            # Cancelling Queue.get() loses no event; what is still queued is left to the
            # dialplan's fallback, as the calls would be after the process exits.
            consumer.cancel()
            for helper in helpers:
                helper.cancel()
            await self._drain()
            # The writer commits what the calls queued, then ends (the group waits for it).
            self.writer.close()
        self.status_line("screener stopping")

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

    # -- the status line and the AMI connection -----------------------------------------------

    def status_line(self, event: str = "status") -> None:
        """Log one line that sums up the service since it started."""
        stats = self.stats
        latencies = sorted(stats.latencies_ms)
        log.info(
            event,
            requests=stats.requests,
            screened=stats.routed,
            routes=dict(sorted(stats.routes.items())),
            fallbacks=stats.fallbacks,
            late=stats.late,
            failed=stats.failed,
            outcomes=stats.outcomes,
            learned=stats.learned,
            record_errors=stats.record_errors,
            write_backlog=self.writer.backlog,
            write_retries=stats.write_retries,
            redirect_p50_ms=round(latencies[len(latencies) // 2], 3) if latencies else None,
            ami_connected=self.ami.connected,
        )

    async def _status_lines(self) -> None:
        while True:
            await asyncio.sleep(STATUS_INTERVAL)
            self.status_line()

    async def _count_lists(self) -> None:
        # Counting 10 million entries reads a whole index (about a second of a core): never
        # before the first calls, and never on the writer's thread, where every call's record
        # would wait behind it. The reader's thread is idle: lookups run on the loop's thread.
        await asyncio.sleep(COUNT_DELAY)
        try:
            entries = await self.reader.count_entries()
        except StoreError as exc:
            log.warning("could not count the list entries", error=str(exc))
            return
        log.info("lists", entries=entries)

    async def _watch_ami(self) -> None:
        # AMIClient reconnects on its own and offers no callback: look at its state instead.
        address = self.ami.settings.address
        connected = self.ami.connected
        if connected:
            self.hub.publish(AMIConnected(address))
        reported = self._report_ami(connected)
        while True:
            await asyncio.sleep(AMI_WATCH_INTERVAL)
            now = self.ami.connected
            if now != connected:
                connected = now
                self.hub.publish(AMIConnected(address) if now else AMIDisconnected(address))
                reported = self._report_ami(connected)
            elif time.monotonic() - reported >= agentstatus.HEARTBEAT:
                reported = self._report_ami(connected)

    def _report_ami(self, connected: bool) -> float:
        # For the web console (screener.agentstatus). A few bytes to a local file, written here
        # rather than on a thread so that no write can land after run() removed the file.
        try:
            agentstatus.write(Path(self.config.db_path), connected, self.clock())
        except OSError as exc:
            if not self._status_warned:
                self._status_warned = True
                log.warning("could not write the agent status file", error=str(exc))
        return time.monotonic()

    # -- requests ------------------------------------------------------------------------------

    async def on_request(self, event: Event) -> None:
        """Screen one call and route it, unless the dialplan's fallback has already won."""
        request = Request.from_event(event)
        if request is None:
            log.warning("screen request without Uniqueid ignored")
            return
        self.stats.requests += 1
        self._observe_clock(request)
        self._check_hold(request)
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
            writes: list[RecordCall | RecordHit] = [RecordCall(record)]
            if decision.entry is not None and decision.entry.id is not None:
                # The match is counted with the decision it made, in the same commit: a hit of
                # its own would cost the writer a second transaction per call.
                writes.append(RecordHit(decision.entry.id, now))
            done, journaled = self.writer.queue_journaled(*writes)
            # In the journal, the record survives a crash of this process: the Redirect need
            # not wait for its commit (screener/journal.py). Without it (the journal is off: a
            # full disk), recording first is worth a little wait, never the call's route:
            # spend at most half the time left before the deadline on it, and send nothing if
            # it passed meanwhile. (asyncio.wait never cancels the batch's future, which other
            # calls share.)
            budget = min(RECORD_BUDGET, self._remaining(request) / 2)
            if journaled or self.writer.stalled(RECORD_BUDGET):
                # The writer has waited longer than a call may (a lock held by another process):
                # this record queues behind it, and waiting would only cost the call its budget.
                budget = 0
            if budget > 0:
                await asyncio.wait((done,), timeout=budget)
            if self._too_late(request):  # the wait for the record used up the time left
                await self._record_too_late(record)
                return
            context, exten = redirect_target(screening, code)
            try:
                # The language and recording go first, since the Redirect starts the route that
                # reads them; both are written at once (Asterisk runs them in order), so a call
                # costs one AMI round trip, as it did before there were options.
                await self.ami.send_in_order(
                    [
                        {
                            "Action": "Setvar",
                            "Channel": request.call_id,
                            "Variable": "SCREEN_OPTIONS",
                            "Value": screen_options(screening),
                        },
                        {
                            "Action": "Redirect",
                            "Channel": request.call_id,
                            "Context": context,
                            "Exten": exten,
                            "Priority": "1",
                        },
                    ]
                )
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
            self.stats.routes[decision.route.value] += 1
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
            self.hub.publish(
                CallScreened(
                    call_id=request.call_id,
                    caller=screening.caller.display,
                    category=screening.caller.category.value,
                    route=decision.route.value,
                    rule=decision.rule,
                    reasons=reasons,
                    decision_ms=latency_ms,
                    redirect_ms=total_ms,
                )
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
        self.writer.queue(RecordCall(late))
        log.warning("decision too late; fallback keeps the call", route=record.route)

    def _hold(self, request: Request) -> float:
        return request.hold if request.hold is not None else self.config.hold_seconds

    def _check_hold(self, request: Request) -> None:
        hold = request.hold
        if hold is None or hold == self.config.hold_seconds or hold in self._holds_warned:
            return
        if len(self._holds_warned) >= 8:
            return  # said often enough: the dialplan's hold keeps changing
        self._holds_warned.add(hold)
        log.warning(
            "the dialplan's hold differs from the configured one; timing calls by the dialplan's",
            dialplan_hold_s=hold,
            configured_hold_s=self.config.hold_seconds,
        )

    def _remaining(self, request: Request) -> float:
        """Seconds left before the dialplan's fallback may begin (negative once passed).

        Timed on Asterisk's clock (the event's Timestamp), corrected by the smallest gap seen
        lately between it and ours: delays in transit or in our queue only ever add to the gap,
        so its minimum is the clocks' skew. A remote Asterisk whose clock is off by minutes then
        still gets its calls routed, and a request stuck in a backlog is still seen as late
        (unless nothing but backlog was seen since start-up).
        """
        hold = self._hold(request)
        if request.asterisk_time is None:
            start = request.received_at
        else:
            skew = self._clock_gaps.min(default=0.0)
            # A gap shorter than the hold is delay, or a skew too small to matter: trust
            # Asterisk's clock as it is. Only a gap every recent request shows is a skew.
            start = request.asterisk_time + (skew if abs(skew) >= hold else 0.0)
        deadline = start + hold - self.config.late_margin
        return deadline - self.clock()

    def _observe_clock(self, request: Request) -> None:
        if request.asterisk_time is not None:
            self._clock_gaps.add(request.received_at - request.asterisk_time)

    def _too_late(self, request: Request) -> bool:
        return self._remaining(request) < 0

    def _remember(self, call_id: str, caller: Caller) -> None:
        self.recent[call_id] = caller
        self.recent.move_to_end(call_id)
        while len(self.recent) > RECENT_CALLS:
            self.recent.popitem(last=False)


def journal_enabled(env: Mapping[str, str] | None = None) -> bool:
    """Whether new writes are journaled: ``SCREENER_JOURNAL=off`` turns it off (each call then
    waits for its record's commit, as before the journal; the benchmark's "before"). A journal
    a crashed run left is replayed either way."""
    value = (os.environ if env is None else env).get("SCREENER_JOURNAL", "on")
    return value.strip().lower() not in ("0", "off", "false", "no")


async def run(
    config: Config,
    *,
    stop: asyncio.Event | None = None,
    ready: Callable[[Screener], None] | None = None,
    hub: Hub | None = None,
) -> Stats:
    """Run the agent until SIGINT/SIGTERM (or ``stop``); returns the final counters."""
    started = time.monotonic()
    settings = ami_settings(config)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    db_path = Path(config.db_path)
    hub = hub if hub is not None else Hub()
    try:
        # The writer is opened first and must succeed (it migrates an older schema), then the
        # reader: a service that cannot read its lists must not start (the dialplan's fallback
        # covers calls meanwhile).
        async with (
            # create=False: a missing or empty database is an error, never a fresh empty list.
            Store.open(db_path, create=False, busy_timeout=WRITER_BUSY_TIMEOUT) as writer,
            # Lookups on the loop's own thread: an index probe on a warm page cache costs less
            # than the trip to a database thread, and a WAL reader never waits for a writer.
            Store.open(db_path, readonly=True, loop_lookups=True) as reader,
        ):
            # Locked for as long as this process runs (a second screener is refused), and read
            # before the marker: what a crashed run journaled is committed before any new call.
            recovered = await recover(db_path, writer, config.policy, enabled=journal_enabled())
            try:
                if marker.left_behind(db_path):
                    await _check_after_unclean_stop(reader, db_path)
                with marker.running(db_path):
                    try:
                        async with (
                            AMIClient(settings, event_names=EVENTS) as ami,
                            # /metrics, /healthz and the notifications see every event the
                            # service publishes on this one hub; the call path knows none.
                            start_observers(config, hub, ami=ami),
                            # [shared]: the list kept in step with the other sites' (never on
                            # the call path: lookups stay on the local reader).
                            start_sync(config),
                        ):
                            return await _serve(
                                config,
                                settings,
                                reader,
                                writer,
                                ami,
                                stop,
                                ready,
                                hub,
                                started,
                                recovered,
                            )
                    finally:
                        agentstatus.remove(db_path)
            finally:
                recovered.journal.close()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def _check_after_unclean_stop(reader: Store, db_path: Path) -> None:
    log.warning(
        "the last run did not stop cleanly; checking the database first",
        marker=str(marker.marker_path(db_path)),
    )
    begun = time.monotonic()
    findings = await reader.integrity_check()
    if findings != "ok":
        raise StoreCorruptError(
            f"database {db_path} failed its integrity check after an unclean stop:"
            f" {'; '.join(findings.splitlines()[:5])}; restore it from a backup"
        )
    log.info("database integrity ok", check_s=round(time.monotonic() - begun, 3))


async def _serve(
    config: Config,
    settings: AMISettings,
    reader: Store,
    writer: Store,
    ami: AMIClient,
    stop: asyncio.Event,
    ready: Callable[[Screener], None] | None,
    hub: Hub,
    started: float,
    recovered: Recovered,
) -> Stats:
    journal = recovered.journal
    log.info(
        "screener running",
        ami=settings.address,
        database=str(config.db_path),
        hold_s=config.hold_seconds,
        startup_s=round(time.monotonic() - started, 3),
        journal=str(journal.path) if journal.enabled else "off",
        replayed=len(recovered.pending),
    )
    screener = Screener(config, reader, writer, ami, hub=hub, journal=journal)
    # Ahead of every new write: a replayed outcome still lands after its call's record.
    screener.writer.resume(recovered.pending)
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
