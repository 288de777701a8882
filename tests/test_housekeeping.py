"""The service's hourly clean-ups (screener/housekeeping.py) against a real SQLite file."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from screener import housekeeping
from screener.config import Config, NotifyConfig
from screener.store import Store

NOW = dt.datetime(2026, 5, 1, 9, 30, tzinfo=dt.UTC)


OURS = ("old outbox events deleted", "outbox prune failed; next try in an hour")


def ours(logs: Sequence[Mapping[str, object]]) -> list[Mapping[str, object]]:
    """The clean-up's own log lines (opening the store logs too)."""
    return [e for e in logs if e["event"] in OURS]


async def first_round(task: asyncio.Task[None], logs: Sequence[Mapping[str, object]]) -> None:
    """Let the loop run its start-up round until it logs (it then sleeps an hour); stop it."""
    for _ in range(500):
        if ours(logs):
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
            task = asyncio.create_task(housekeeping.prune_outbox(config, NOW.timestamp))
            await first_round(task, logs)
        assert [e.key for e in await store.outbox()] == ["recent"]
    assert [(e["event"], e["deleted"]) for e in ours(logs)] == [("old outbox events deleted", 1)]


async def test_a_prune_that_meets_a_held_lock_gives_up_at_once(tmp_path: Path) -> None:
    """Another process's write lock: the round is logged and left to the next, in about its
    short busy timeout, and nothing is deleted."""
    config = Config(db_path=tmp_path / "s.db", notify=NotifyConfig(keep_days=7))
    async with Store.open(config.db_path) as store:
        await store.add_outbox("voicemail", "old", {}, NOW - dt.timedelta(days=8))
    holder = sqlite3.connect(config.db_path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with capture_logs() as logs:
            task = asyncio.create_task(
                housekeeping.prune_outbox(config, NOW.timestamp, busy_timeout=0.05)
            )
            await first_round(task, logs)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert [e["event"] for e in ours(logs)] == ["outbox prune failed; next try in an hour"]
    async with Store.open(config.db_path) as store:
        assert [e.key for e in await store.outbox()] == ["old"]
