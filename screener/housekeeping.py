"""The service's hourly clean-ups: old recordings and old outbox events.

Each is a loop the service runs as a task of its own: one round at start-up, then one an hour.
A failed round is logged and left to the next; nothing is lost by keeping an old file or event a
little longer.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable

import structlog

from screener.config import Config
from screener.errors import StoreError
from screener.recordings import sweep
from screener.store import Store

log = structlog.get_logger(__name__)

# How often each clean-up runs (the retention periods themselves are in days).
INTERVAL = 3600.0
# How long a prune waits for another process's write lock before it leaves it to the next round.
PRUNE_BUSY_TIMEOUT = 0.5


async def sweep_recordings(config: Config, clock: Callable[[], float]) -> None:
    """Delete recordings past ``recording_retention_days``."""
    folder, days = config.recording_folder, config.recording_retention_days
    while True:
        try:
            result = await asyncio.to_thread(sweep, folder, clock(), days)
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
        await asyncio.sleep(INTERVAL)


async def prune_outbox(
    config: Config, clock: Callable[[], float], *, busy_timeout: float = PRUNE_BUSY_TIMEOUT
) -> None:
    """Delete outbox events (delivered or given up) older than ``notify.keep_days``.

    On a connection of its own with a short busy timeout, opened for each round: a round that
    meets another process's write lock gives up at once instead of holding the writer's
    connection (and so every call record) behind it.
    """
    keep = dt.timedelta(days=config.notify.keep_days)
    while True:
        try:
            now = dt.datetime.fromtimestamp(clock(), dt.UTC)
            async with Store.open(config.db_path, create=False, busy_timeout=busy_timeout) as store:
                deleted = await store.prune_outbox(now - keep)
        except StoreError as exc:
            log.warning("outbox prune failed; next try in an hour", error=str(exc))
        else:
            if deleted:
                log.info("old outbox events deleted", deleted=deleted, keep_days=keep.days)
        await asyncio.sleep(INTERVAL)
