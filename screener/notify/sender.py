"""The sender: delivers outbox rows to each configured channel, with retries and backoff.

One task per channel, so a mail server that is down never delays the webhook. Each task reads
the rows its channel has not delivered and may try now (none yet, or whose backoff has passed),
oldest first, sends them one by one, and records each attempt in ``outbox_delivery``: delivered,
or failed with the error and the time of the next try (:func:`backoff`); once a row that had
failed goes through, the channel is back and its other waiting rows are tried at once. Rows
older than ``notify.max_age_hours`` are no longer tried (``screener notify status`` counts them
as given up). A send is recorded after it succeeded: a crash in between sends that row again
once, with the same idempotency key.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import structlog

from screener.config import Config, NotifyConfig
from screener.errors import NotifyError, StoreError
from screener.notify.message import Notice, compose
from screener.store import OutboxRow, Store

log = structlog.get_logger(__name__)
BATCH = 100


class Channel(Protocol):
    """One way to deliver a notice (email, webhook, MQTT)."""

    name: str

    async def deliver(self, notice: Notice) -> None:
        """Send it, or raise NotifyError."""

    async def aclose(self) -> None:
        """Release what the channel keeps open."""


def backoff(failures: int, base: float, cap: float) -> float:
    """Seconds to wait after the ``failures``-th failed attempt: base, 2·base, 4·base… ≤ cap."""
    if failures < 1:
        return 0.0
    return float(min(cap, base * 2 ** min(failures - 1, 62)))


def build_channels(notify: NotifyConfig) -> list[Channel]:
    """The channels the ``[notify]`` table configures."""
    # Imported here so that a configuration without a channel loads none of their libraries.
    channels: list[Channel] = []
    if notify.email is not None:
        from screener.notify.mail import EmailChannel

        channels.append(EmailChannel(notify.email))
    if notify.webhook is not None:
        from screener.notify.webhook import WebhookChannel

        channels.append(WebhookChannel(notify.webhook))
    if notify.mqtt is not None:
        from screener.notify.mqtt import MqttChannel

        channels.append(MqttChannel(notify.mqtt))
    return channels


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Sender:
    """Drives every channel's delivery loop; :meth:`wake` makes them look at once."""

    def __init__(
        self,
        config: Config,
        store: Store,
        channels: Sequence[Channel],
        *,
        count: Callable[[str, str], None] | None = None,
        clock: Callable[[], dt.datetime] = _now,
    ) -> None:
        self.notify = config.notify
        self.timezone = config.policy.hours.timezone
        self.store = store
        self.channels = list(channels)
        self.count = count
        self.clock = clock
        self._wakes = {c.name: asyncio.Event() for c in self.channels}

    def wake(self) -> None:
        """A new outbox row may be there: every channel looks now instead of at its next poll."""
        for event in self._wakes.values():
            event.set()

    def compose(self, row: OutboxRow) -> Notice:
        """The notice for one row, in the configured language and the office's time zone."""
        return compose(row, self.notify.language, self.timezone)

    async def run(self) -> None:
        """Deliver forever (until cancelled), one task per channel."""
        async with asyncio.TaskGroup() as group:
            for channel in self.channels:
                group.create_task(self._loop(channel), name=f"notify-{channel.name}")

    async def _loop(self, channel: Channel) -> None:
        wake = self._wakes[channel.name]
        try:
            while True:
                wake.clear()
                try:
                    await self.deliver_due(channel)
                except StoreError as exc:
                    log.warning("notify: cannot read the outbox", error=str(exc))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.notify.poll_interval):
                        await wake.wait()
        finally:
            await channel.aclose()

    async def deliver_due(self, channel: Channel) -> tuple[int, int]:
        """Try every row ``channel`` may try now, once; returns (delivered, failed)."""
        now = self.clock()
        since = now - dt.timedelta(hours=self.notify.max_age_hours)
        delivered = failed = 0
        while True:
            rows = await self.store.due_deliveries(channel.name, since=since, now=now, limit=BATCH)
            back = False
            for row in rows:
                if await self._attempt(channel, row):
                    delivered += 1
                    back = back or row.attempts > 0
                else:
                    failed += 1
            if back:
                # A row that had failed went through: the receiver is back. The rows still
                # waiting out their backoff need not wait longer; try them now.
                await self.store.retry_now(channel.name)
                now = self.clock()
                continue
            if len(rows) < BATCH:
                return delivered, failed

    async def _attempt(self, channel: Channel, row: OutboxRow) -> bool:
        started = time.perf_counter()
        try:
            await channel.deliver(self.compose(row))
        except NotifyError as exc:
            error = str(exc)
        except Exception as exc:
            # A bug in a channel must not stop the others, nor this one's later rows.
            log.exception("notify: channel failed unexpectedly", channel=channel.name)
            error = f"{type(exc).__name__}: {exc}"
        else:
            await self.store.record_delivery(row.id, channel.name, delivered_at=self.clock())
            self._count(channel.name, "delivered")
            log.info(
                "notification delivered",
                channel=channel.name,
                topic=row.topic,
                key=row.key,
                attempts=row.attempts + 1,
                send_ms=round((time.perf_counter() - started) * 1000, 1),
            )
            return True
        wait = backoff(row.attempts + 1, self.notify.retry_base, self.notify.retry_max)
        await self.store.record_delivery(
            row.id,
            channel.name,
            delivered_at=None,
            next_at=self.clock() + dt.timedelta(seconds=wait),
            error=error[:500],
        )
        self._count(channel.name, "failed")
        log.warning(
            "notification failed; will retry",
            channel=channel.name,
            topic=row.topic,
            key=row.key,
            attempts=row.attempts + 1,
            retry_in_s=wait,
            error=error,
        )
        return False

    def _count(self, channel: str, result: str) -> None:
        if self.count is not None:
            self.count(channel, result)


async def send_test(config: Config, now: dt.datetime) -> list[tuple[str, str | None]]:
    """Send the test message through every configured channel: (channel, error or None)."""
    from screener.notify.message import sample_notice

    notice = sample_notice(now, config.notify.language, config.policy.hours.timezone)
    results: list[tuple[str, str | None]] = []
    for channel in build_channels(config.notify):
        try:
            await channel.deliver(notice)
            results.append((channel.name, None))
        except NotifyError as exc:
            results.append((channel.name, str(exc)))
        finally:
            await channel.aclose()
    return results
