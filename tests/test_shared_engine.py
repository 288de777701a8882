"""The live sync's loop (screener/shared/engine.py) on a real SQLite file, no PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

from structlog.testing import capture_logs

from screener.config import SharedConfig
from screener.shared import engine, local
from screener.store import Store


async def test_an_unexpected_error_is_logged_shown_and_retried(tmp_path: Path) -> None:
    """A bug or a malformed central row must not end the sync silently while calls go on."""
    config = SharedConfig(dsn="host=127.0.0.1 port=1", site="tokyo")
    async with Store.open(tmp_path / "s.db") as store:
        sync = engine.Sync(config, store)
        rounds = 0
        stop = asyncio.Event()

        async def broken_join() -> None:
            nonlocal rounds
            rounds += 1
            if rounds == 2:
                stop.set()
            raise KeyError("seq")

        sync.join = broken_join  # type: ignore[method-assign]
        engine_min = engine.BACKOFF_MIN
        engine.BACKOFF_MIN = 0.01
        try:
            with capture_logs() as logs:
                await asyncio.wait_for(sync.run(stop), 5)
        finally:
            engine.BACKOFF_MIN = engine_min
        state = await store.run("sync state", local.state)
    assert rounds == 2
    assert [e["event"] for e in logs].count("sync.failed") == 2
    assert state.last_error == "KeyError: 'seq'"
