"""Prometheus metrics and the health check, fed by the agent's events (screener.events).

Nothing here is on the call path: :class:`Metrics` subscribes to the hub and counts what the
service published; the AMI connection state is read from the AMI client itself (the source of
truth) when one is given, and the list sizes come from a periodic indexed count. The HTTP
server (:func:`serve_http`) answers ``GET /metrics`` (Prometheus text format) and
``GET /healthz`` (200 when logged in to AMI and the database is writable, 503 naming what is
wrong) on ``metrics_listen``.

Names follow the Prometheus naming guide: ``screener_`` prefix, base units, ``_total`` for
counters, and labels of low cardinality only (never a phone number).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from screener import events
from screener.errors import StoreError

log = structlog.get_logger(__name__)

# Seconds; a decision takes about a millisecond, a redirect a few, the hold is 4 s.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# The dialplan's VMSTATUS values; anything else is counted as "other" to bound the label.
VOICEMAIL_STATUSES = frozenset({"SUCCESS", "USEREXIT", "FAILED", "UNKNOWN"})
LIST_COUNT_INTERVAL = 60.0
HEALTH_PROBE_INTERVAL = 5.0


class AmiState(Protocol):
    """What the observers read from the AMI client (screener.ami.AMIClient has both)."""

    @property
    def connected(self) -> bool: ...

    reconnects: int


class _AmiCollector(Collector):
    """``screener_ami_connected`` and ``screener_ami_reconnects_total`` read at scrape time."""

    def __init__(self, ami: AmiState) -> None:
        self._ami = ami

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "screener_ami_connected",
            "1 while logged in to the Asterisk Manager Interface, else 0",
            value=1.0 if self._ami.connected else 0.0,
        )
        yield CounterMetricFamily(
            "screener_ami_reconnects",
            "Times the AMI connection was made again after it was lost",
            value=float(self._ami.reconnects),
        )


class Metrics:
    """The screener's metric set in its own registry (with the process metrics)."""

    def __init__(self, ami: AmiState | None = None) -> None:
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        self.calls = Counter(
            "screener_calls",
            "Calls by the route they took; fallback=true when the dialplan's fallback took them",
            ["route", "category", "fallback"],
            registry=registry,
        )
        self.decision_seconds = Histogram(
            "screener_decision_seconds",
            "Time from a screen request to its decision (normalize, lookup, decide)",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.redirect_seconds = Histogram(
            "screener_redirect_seconds",
            "Time from a screen request to Asterisk's answer to its Redirect",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.challenge_outcomes = Counter(
            "screener_challenge_outcomes",
            "Challenge results: pass, fail, timeout, hangup",
            ["outcome"],
            registry=registry,
        )
        self.voicemails = Counter(
            "screener_voicemails",
            "Callers who reached voicemail, by the dialplan's VMSTATUS",
            ["status"],
            registry=registry,
        )
        self.db_write_errors = Counter(
            "screener_db_write_errors",
            "Records that could not be written to the database",
            registry=registry,
        )
        self.list_entries = Gauge(
            "screener_list_entries",
            "Allow and block list entries (expired ones included)",
            ["kind", "source"],
            registry=registry,
        )
        self.notifications = Counter(
            "screener_notifications",
            "Notification delivery attempts by channel and result (delivered, failed)",
            ["channel", "result"],
            registry=registry,
        )
        self._calls: dict[tuple[str, str, str], Any] = {}
        self._ami = ami
        self._logged_in_before = False
        if ami is not None:
            registry.register(_AmiCollector(ami))
            self._ami_connected: Gauge | None = None
            self._ami_reconnects: Counter | None = None
        else:
            self._ami_connected = Gauge(
                "screener_ami_connected",
                "1 while logged in to the Asterisk Manager Interface, else 0",
                registry=registry,
            )
            self._ami_reconnects = Counter(
                "screener_ami_reconnects",
                "Times the AMI connection was made again after it was lost",
                registry=registry,
            )

    def _call_counter(self, route: str, category: str, fallback: str) -> Any:
        # labels() checks and joins its arguments on every call: once per call made it a hot
        # spot; the few (route, category) children are kept instead.
        key = (route, category, fallback)
        child = self._calls.get(key)
        if child is None:
            child = self._calls[key] = self.calls.labels(route, category, fallback)
        return child

    def on_event(self, event: events.Event) -> None:
        """Count one published event (a hub subscriber: never blocks)."""
        match event:
            case events.CallScreened():
                self._call_counter(event.route, event.category, "false").inc()
                self.decision_seconds.observe(event.decision_ms / 1000.0)
                if event.redirect_ms is not None:
                    self.redirect_seconds.observe(event.redirect_ms / 1000.0)
            case events.Fallback():
                self._call_counter(event.route, event.category, "true").inc()
            case events.ChallengeOutcome():
                self.challenge_outcomes.labels(event.outcome).inc()
            case events.VoicemailLeft():
                status = event.status if event.status in VOICEMAIL_STATUSES else "other"
                self.voicemails.labels(status).inc()
            case events.DBWriteFailed():
                self.db_write_errors.inc(event.writes)
            case events.AMIConnected():
                if self._ami_connected is not None and self._ami_reconnects is not None:
                    self._ami_connected.set(1)
                    if self._logged_in_before:
                        self._ami_reconnects.inc()
                    self._logged_in_before = True
            case events.AMIDisconnected():
                if self._ami_connected is not None:
                    self._ami_connected.set(0)
            case _:
                pass

    def set_list_counts(self, counts: dict[tuple[str, str], int]) -> None:
        """Replace the list-size gauge with fresh counts (a pair that vanished reads 0)."""
        for labels in list(self._list_labels()):
            if labels not in counts:
                self.list_entries.labels(*labels).set(0)
        for (kind, source), count in counts.items():
            self.list_entries.labels(kind, source).set(count)

    def _list_labels(self) -> Iterable[tuple[str, str]]:
        for metric in self.list_entries.collect():
            for sample in metric.samples:
                yield sample.labels["kind"], sample.labels["source"]

    def count_notification(self, channel: str, result: str) -> None:
        """One delivery attempt's result."""
        self.notifications.labels(channel, result).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class WritableStore(Protocol):
    """What the health check and the list counter need of screener.store.Store."""

    async def check_writable(self) -> None: ...

    async def count_entries_by(self) -> dict[tuple[str, str], int]: ...


@dataclass
class Health:
    """Whether the agent can screen: logged in to AMI, and the database takes writes."""

    ami: AmiState | None = None
    ami_connected: bool = False  # from events, when no AMI client is given
    db_error: str | None = None
    checked_at: float | None = None

    @property
    def logged_in(self) -> bool:
        """True while logged in to AMI."""
        return self.ami.connected if self.ami is not None else self.ami_connected

    def on_event(self, event: events.Event) -> None:
        """Follow the AMI state from events (when no AMI client is given)."""
        if isinstance(event, events.AMIConnected):
            self.ami_connected = True
        elif isinstance(event, events.AMIDisconnected):
            self.ami_connected = False

    def report(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, a small JSON-ready body naming what is wrong)."""
        problems = []
        if not self.logged_in:
            problems.append("ami: not logged in")
        if self.db_error is not None:
            problems.append(f"database: {self.db_error}")
        elif self.checked_at is None:
            problems.append("database: not checked yet")
        body: dict[str, Any] = {
            "status": "ok" if not problems else "unhealthy",
            "ami": "logged in" if self.logged_in else "down",
            "database": "writable" if self.db_error is None and self.checked_at else "failing",
        }
        if problems:
            body["problems"] = problems
        return not problems, body

    async def probe(self, store: WritableStore) -> None:
        """Check once that the database takes the write lock; remember the result."""
        try:
            await store.check_writable()
        except StoreError as exc:
            self.db_error = str(exc)
        else:
            self.db_error = None
        self.checked_at = time.monotonic()


async def probe_forever(health: Health, store: WritableStore, interval: float) -> None:
    """Keep :class:`Health`'s database state fresh: probe now and every ``interval`` seconds."""
    while True:
        await health.probe(store)
        await asyncio.sleep(interval)


async def count_lists_forever(metrics: Metrics, store: WritableStore, interval: float) -> None:
    """Refresh ``screener_list_entries`` now and every ``interval`` seconds.

    In the background: on ten million entries the count takes a moment, and the screener must
    not wait for it before it screens calls.
    """
    while True:
        try:
            metrics.set_list_counts(await store.count_entries_by())
        except StoreError as exc:
            log.warning("could not count list entries for the metrics", error=str(exc))
        await asyncio.sleep(interval)


def split_listen(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:9120"`` → ``("127.0.0.1", 9120)``; ``"[::1]:9120"`` → ``("::1", 9120)``."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def make_app(metrics: Metrics, health: Health) -> web.Application:
    """The aiohttp application serving ``/metrics`` and ``/healthz``."""

    async def get_metrics(_: web.Request) -> web.Response:
        body = metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def get_health(_: web.Request) -> web.Response:
        ok, body = health.report()
        return web.Response(
            text=json.dumps(body, ensure_ascii=False),
            status=200 if ok else 503,
            content_type="application/json",
        )

    app = web.Application()
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/healthz", get_health)
    return app


@asynccontextmanager
async def serve_http(listen: str, metrics: Metrics, health: Health) -> AsyncIterator[str | None]:
    """Serve the app on ``listen`` while the block runs; yields the bound address.

    A port that cannot be bound is logged and yields None: observability must never stop the
    screening of calls.
    """
    host, port = split_listen(listen)
    runner = web.AppRunner(make_app(metrics, health), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            log.error("metrics server not started", listen=listen, error=exc.strerror or str(exc))
            yield None
            return
        bound = runner.addresses[0] if runner.addresses else (host, port)
        address = (
            f"{bound[0]}:{bound[1]}" if ":" not in str(bound[0]) else f"[{bound[0]}]:{bound[1]}"
        )
        log.info("metrics server listening", listen=address)
        yield address
    finally:
        await runner.cleanup()
