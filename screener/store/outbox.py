"""The transactional outbox: events written in the transaction of the rows they describe
(notifications), and each channel's deliveries of them, retries and pruning."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from screener.store.base import StoreBase
from screener.store.common import from_ts, to_opt_ts, to_ts


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One event waiting in the outbox for a channel, with that channel's attempts so far."""

    id: int
    topic: str
    key: str
    payload: dict[str, Any]
    created_at: dt.datetime
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class ChannelStatus:
    """Delivery state of one channel over the outbox rows still within the retry age."""

    channel: str
    delivered: int
    waiting: int
    given_up: int
    last_delivered_at: dt.datetime | None
    last_error: str | None


def _payload(text: str) -> dict[str, Any]:
    """An outbox payload; anything but a JSON object is kept whole under ``raw``."""
    try:
        value = json.loads(text)
    except ValueError:
        return {"raw": text}
    return value if isinstance(value, dict) else {"raw": value}


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """One row of the outbox: an event for a sender to deliver once (``key`` is idempotent)."""

    id: int
    topic: str
    key: str
    payload: dict[str, Any]
    created_at: dt.datetime


_EPOCH = dt.datetime.fromtimestamp(0, dt.UTC)
_OUTBOX = (
    "INSERT INTO outbox (topic, key, payload, created_at) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (key) DO NOTHING"
)


def _enqueue(
    db: sqlite3.Connection, topic: str, key: str, payload: dict[str, Any], at: dt.datetime
) -> None:
    db.execute(_OUTBOX, (topic, key, json.dumps(payload, ensure_ascii=False), to_ts(at)))


class OutboxStore(StoreBase):
    """The outbox's part of :class:`~screener.store.Store`."""

    async def outbox(self, *, topic: str | None = None) -> list[OutboxEvent]:
        """The outbox's events (oldest first), of one topic or all."""
        where, params = ("WHERE topic = ?", [topic]) if topic else ("", [])
        rows = await self._fetchall(
            "read outbox",
            f"SELECT id, topic, key, payload, created_at FROM outbox {where} ORDER BY id",  # noqa: S608
            params,
        )
        return [
            OutboxEvent(row[0], row[1], row[2], json.loads(row[3]), from_ts(row[4]) or _EPOCH)
            for row in rows
        ]

    async def add_outbox(
        self, topic: str, key: str, payload: dict[str, Any], now: dt.datetime
    ) -> bool:
        """Queue an event for delivery; False when one with ``key`` is already queued."""
        changed = await self._write(
            "add outbox event",
            _OUTBOX,
            (topic, key, json.dumps(payload, ensure_ascii=False), to_ts(now)),
        )
        return changed > 0

    async def due_deliveries(
        self, channel: str, *, since: dt.datetime, now: dt.datetime, limit: int = 100
    ) -> list[OutboxRow]:
        """Outbox rows created at or after ``since`` that ``channel`` has yet to deliver and
        may try now (no attempt yet, or its backoff has passed), oldest first."""
        rows = await self._fetchall(
            "read outbox",
            "SELECT o.id, o.topic, o.key, o.payload, o.created_at, coalesce(d.attempts, 0)"
            " FROM outbox o LEFT JOIN outbox_delivery d ON d.outbox_id = o.id AND d.channel = ?"
            " WHERE o.created_at >= ? AND d.delivered_at IS NULL"
            " AND coalesce(d.next_at, 0) <= ? ORDER BY o.id LIMIT ?",
            (channel, to_ts(since), to_ts(now), limit),
        )
        return [
            OutboxRow(
                id=r[0],
                topic=r[1],
                key=r[2],
                payload=_payload(r[3]),
                created_at=from_ts(r[4]) or dt.datetime.min.replace(tzinfo=dt.UTC),
                attempts=r[5],
            )
            for r in rows
        ]

    async def record_delivery(
        self,
        outbox_id: int,
        channel: str,
        *,
        delivered_at: dt.datetime | None,
        next_at: dt.datetime | None = None,
        error: str | None = None,
    ) -> None:
        """Count one delivery attempt of ``outbox_id`` on ``channel``: delivered, or failed
        with ``error`` and to be tried again from ``next_at``."""
        await self._write(
            "record delivery",
            "INSERT INTO outbox_delivery"
            " (outbox_id, channel, delivered_at, attempts, next_at, last_error)"
            " VALUES (?, ?, ?, 1, ?, ?) ON CONFLICT (outbox_id, channel) DO UPDATE SET"
            " delivered_at = excluded.delivered_at, attempts = attempts + 1,"
            " next_at = excluded.next_at, last_error = excluded.last_error",
            (outbox_id, channel, to_opt_ts(delivered_at), to_opt_ts(next_at), error),
        )

    async def retry_now(self, channel: str) -> int:
        """Make every row ``channel`` has yet to deliver due now; returns how many."""
        return await self._write(
            "reset backoff",
            "UPDATE outbox_delivery SET next_at = NULL"
            " WHERE channel = ? AND delivered_at IS NULL AND next_at IS NOT NULL",
            (channel,),
        )

    async def delivery_status(
        self, channels: Sequence[str], *, since: dt.datetime
    ) -> list[ChannelStatus]:
        """For each channel: rows delivered, waiting (created at or after ``since``) and given
        up (older, never delivered); when it last delivered; its latest error."""
        rows = await self._fetchall(
            "read delivery status",
            "SELECT c.value,"
            " count(d.delivered_at),"
            " sum(d.delivered_at IS NULL AND o.created_at >= ?),"
            " sum(d.delivered_at IS NULL AND o.created_at < ?),"
            " max(d.delivered_at),"
            " (SELECT last_error FROM outbox_delivery e WHERE e.channel = c.value"
            "  AND e.last_error IS NOT NULL ORDER BY e.outbox_id DESC LIMIT 1)"
            " FROM json_each(?) c LEFT JOIN outbox o"
            " LEFT JOIN outbox_delivery d ON d.outbox_id = o.id AND d.channel = c.value"
            " GROUP BY c.value ORDER BY c.key",
            (to_ts(since), to_ts(since), json.dumps(list(channels))),
        )
        return [
            ChannelStatus(
                channel=r[0],
                delivered=int(r[1] or 0),
                waiting=int(r[2] or 0),
                given_up=int(r[3] or 0),
                last_delivered_at=from_ts(r[4]),
                last_error=r[5],
            )
            for r in rows
        ]

    async def prune_outbox(self, before: dt.datetime, *, batch: int = 5000) -> int:
        """Delete outbox events created before ``before`` (their delivery rows go with them).

        In batches of ``batch``, each its own short transaction, so a backlog of months never
        holds the write lock for long; returns how many events were deleted.
        """
        sql = (
            "DELETE FROM outbox WHERE id IN"
            " (SELECT id FROM outbox WHERE created_at < ? ORDER BY id LIMIT ?)"
        )
        deleted = 0
        while True:
            changed = await self._write("prune outbox", sql, (to_ts(before), batch))
            deleted += changed
            if changed < batch:
                return deleted

    async def count_outbox(self) -> int:
        """How many events the outbox holds."""
        rows = await self._fetchall("count outbox", "SELECT count(*) FROM outbox")
        return int(rows[0][0])
