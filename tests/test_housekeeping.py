"""The service's hourly clean-ups (screener/housekeeping.py) against a real SQLite file."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from screener import housekeeping
from screener.config import Config, NotifyConfig
from screener.errors import StoreLockedError
from screener.store import Store

NOW = dt.datetime(2026, 5, 1, 9, 30, tzinfo=dt.UTC)


async def first_round(task: asyncio.Task[None], logs: Sequence[object]) -> None:
    """Let the loop run its start-up round until it logs (it then sleeps an hour); stop it."""
    for _ in range(500):
        if logs:
            break
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_outbox_events_past_keep_days_are_pruned_at_start(tmp_path: Path) -> None:
    config = Config(db_path=tmp_path / "s.db", notify=NotifyConfig(keep_days=7))
    async with Store.open(config.db_path) as store:
        await store.add_outbox("voicemail", "old", {}, NOW - dt.timedelta(days=8))
        await store.add_outbox("voicemail", "recent", {}, NOW - dt.timedelta(days=6))
        with capture_logs() as logs:
            task = asyncio.create_task(housekeeping.prune_outbox(store, config, NOW.timestamp))
            await first_round(task, logs)
        assert [e.key for e in await store.outbox()] == ["recent"]
    assert [(e["event"], e["deleted"]) for e in logs] == [("old outbox events deleted", 1)]


async def test_a_failed_prune_is_logged_and_left_to_the_next_round(tmp_path: Path) -> None:
    config = Config(db_path=tmp_path / "s.db")

    class Locked(Store):
        async def prune_outbox(self, before: dt.datetime, *, batch: int = 5000) -> int:
            raise StoreLockedError("database is locked")

    async with Locked.open(config.db_path) as store:
        with capture_logs() as logs:
            task = asyncio.create_task(housekeeping.prune_outbox(store, config, NOW.timestamp))
            await first_round(task, logs)
    assert [e["event"] for e in logs] == ["outbox prune failed; next try in an hour"]
