"""The observers of ``screener run``: metrics, health, notifications. The call path knows none.

``start_observers(config, hub, ami=...)`` is one async context manager that the service enters
once it is logged in to AMI. It opens its own database connection (so nothing it does ever
waits on the call path's connection), subscribes the metrics, the health check, the sender and
the degraded/recovered watcher to the hub, serves ``/metrics`` and ``/healthz`` on
``metrics_listen``, and runs the notification sender; leaving the block stops all of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import structlog

from screener import events
from screener.config import Config
from screener.metrics import (
    HEALTH_PROBE_INTERVAL,
    LIST_COUNT_INTERVAL,
    AmiState,
    Health,
    Metrics,
    count_lists_forever,
    probe_forever,
    serve_http,
)
from screener.notify.sender import Channel, Sender, build_channels
from screener.notify.watcher import POLL as WATCH_INTERVAL
from screener.notify.watcher import Watcher
from screener.store import Store

log = structlog.get_logger(__name__)


@dataclass
class Observers:
    """What ``start_observers`` started, for tests and the status line."""

    metrics: Metrics
    health: Health
    sender: Sender
    watcher: Watcher
    address: str | None  # where /metrics is served, or None


def _wakes_sender(event: events.Event) -> bool:
    """Events whose record comes with an outbox row (voicemail, auto-block, staff change)."""
    return (
        isinstance(event, events.VoicemailLeft)
        or (isinstance(event, events.EntryLearned) and event.auto_block)
        or (isinstance(event, events.StaffChanged) and event.changed)
    )


@asynccontextmanager
async def start_observers(
    config: Config,
    hub: events.Hub,
    *,
    ami: AmiState | None = None,
    channels: list[Channel] | None = None,
    list_count_interval: float = LIST_COUNT_INTERVAL,
    health_interval: float = HEALTH_PROBE_INTERVAL,
    watch_interval: float = WATCH_INTERVAL,
) -> AsyncIterator[Observers]:
    """Start metrics, health and notifications for ``config``; stop them when the block ends."""
    async with AsyncExitStack() as stack:
        store = await stack.enter_async_context(Store.open(config.db_path, create=False))
        metrics = Metrics(ami)
        health = Health(ami=ami)
        sender = Sender(
            config,
            store,
            build_channels(config.notify) if channels is None else channels,
            count=metrics.count_notification,
        )
        watcher = Watcher(store, health, config.notify.degraded_after, wake=sender.wake)

        def on_event(event: events.Event) -> None:
            metrics.on_event(event)
            health.on_event(event)
            watcher.on_event(event)
            if _wakes_sender(event):
                sender.wake()

        unsubscribe = hub.subscribe(on_event)
        if callable(unsubscribe):  # a hub whose subscribe() returns nothing cannot unsubscribe
            stack.callback(unsubscribe)
        address = None
        if config.metrics_listen:
            address = await stack.enter_async_context(
                serve_http(config.metrics_listen, metrics, health)
            )
        tasks: list[asyncio.Task[None]] = []

        def start(coro: Coroutine[Any, Any, None], name: str) -> None:
            task = asyncio.create_task(coro, name=name)
            task.add_done_callback(_report_crash)
            tasks.append(task)

        start(count_lists_forever(metrics, store, list_count_interval), "observers-lists")
        start(probe_forever(health, store, health_interval), "observers-health")
        start(watcher.run(watch_interval), "observers-watcher")
        if sender.channels:
            start(sender.run(), "observers-notify")
        log.info(
            "observers running",
            metrics=address,
            notify=[c.name for c in sender.channels],
        )
        try:
            yield Observers(metrics, health, sender, watcher, address)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def _report_crash(task: asyncio.Task[None]) -> None:
    """An observer that died of a bug is logged; the calls go on being screened."""
    if not task.cancelled() and task.exception() is not None:
        log.error("observer stopped", task=task.get_name(), error=repr(task.exception()))


__all__ = ["Observers", "start_observers"]
