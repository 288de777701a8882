"""Degraded and recovered events: AMI down longer than ``notify.degraded_after``, or the
database refusing writes, become outbox rows (and so notifications), and so does the end of it.

:func:`transitions` is the pure part: from the state it had and what it sees now, which
events to write. The :class:`Watcher` polls, and writes them; while the database itself fails
it keeps them and tries again each turn, so they arrive late rather than never.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from screener import events
from screener.errors import StoreError
from screener.metrics import Health
from screener.store import Store

log = structlog.get_logger(__name__)
POLL = 1.0


@dataclass
class Trouble:
    """One component's state as the watcher tracks it."""

    bad_since: dt.datetime | None = None  # when it started failing
    notified: bool = False  # a degraded row was written for this spell
    detail: str = ""


@dataclass(frozen=True)
class Change:
    """An outbox row to write."""

    topic: str  # "degraded" or "recovered"
    key: str
    payload: dict[str, Any]


def transitions(
    component: str, state: Trouble, failing: bool, detail: str, now: dt.datetime, after: float
) -> list[Change]:
    """Update ``state`` for what was seen at ``now``; the rows that follows from it."""
    changes: list[Change] = []
    if failing:
        if state.bad_since is None:
            state.bad_since, state.detail = now, detail
        if not state.notified and (now - state.bad_since).total_seconds() >= after:
            state.notified = True
            since = state.bad_since.isoformat()
            changes.append(
                Change(
                    "degraded",
                    f"degraded:{component}:{since}",
                    {"component": component, "since": since, "detail": state.detail},
                )
            )
    elif state.bad_since is not None:
        if state.notified:
            since = state.bad_since.isoformat()
            changes.append(
                Change(
                    "recovered",
                    f"recovered:{component}:{since}",
                    {"component": component, "since": since, "until": now.isoformat()},
                )
            )
        state.bad_since, state.notified, state.detail = None, False, ""
    return changes


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Watcher:
    """Turns AMI and database trouble into degraded/recovered outbox rows."""

    store: Store
    health: Health
    degraded_after: float
    wake: Callable[[], None] | None = None
    clock: Callable[[], dt.datetime] = _now
    states: dict[str, Trouble] = field(
        default_factory=lambda: {"ami": Trouble(), "database": Trouble()}
    )
    unwritten: list[Change] = field(default_factory=list)
    _db_error: str | None = None
    _db_error_at: float = 0.0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def on_event(self, event: events.Event) -> None:
        """A failed database write counts as database trouble until a good probe after it."""
        if isinstance(event, events.DBWriteFailed):
            self._db_error, self._db_error_at = event.error, time.monotonic()

    async def check(self) -> None:
        """One look at AMI and the database; write the rows that follow."""
        async with self._lock:  # one look at a time: the rows are written in order, once
            await self._check()

    async def _check(self) -> None:
        now = self.clock()
        probed = self.health.checked_at
        if self.health.db_error is None and probed is not None and probed > self._db_error_at:
            self._db_error = None  # a good probe since the write error: writes work again
        db_error = self.health.db_error or self._db_error
        seen = {
            "ami": (not self.health.logged_in, "AMI not logged in"),
            "database": (db_error is not None, db_error or ""),
        }
        for component, (failing, detail) in seen.items():
            # The database must be bad for as long as AMI to count (a lock held for a moment by
            # a long `list import` is not an outage); the same threshold keeps it simple.
            self.unwritten += transitions(
                component, self.states[component], failing, detail, now, self.degraded_after
            )
        while self.unwritten:
            change = self.unwritten[0]
            try:
                await self.store.add_outbox(change.topic, change.key, change.payload, now)
            except StoreError as exc:
                log.warning("cannot queue a notification yet", topic=change.topic, error=str(exc))
                return
            log.warning("screener " + change.topic, **change.payload)
            self.unwritten.pop(0)
            if self.wake is not None:
                self.wake()

    async def run(self, interval: float = POLL) -> None:
        """Check every ``interval`` seconds, forever."""
        while True:
            await self.check()
            await asyncio.sleep(interval)
