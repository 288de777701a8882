"""Many sites, one list: each site's SQLite kept in step with a central PostgreSQL.

Arrows point down only: ``engine`` uses ``central`` (PostgreSQL), ``local`` (the store's sync
tables), ``rules`` (the pure conflict rule) and ``schema`` (the central migrations); the
service starts the engine (:func:`start_sync`) and knows nothing else of it. Lookups never
touch any of this: calls are screened from the local SQLite alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog

from screener.config import Config
from screener.store import Store

log = structlog.get_logger("screener.sync")


@asynccontextmanager
async def start_sync(config: Config) -> AsyncIterator[object | None]:
    """Run the sync beside the service while the block runs (nothing without ``[shared]``)."""
    if config.shared is None:
        yield None
        return
    from screener.shared.engine import Sync  # psycopg only when [shared] is configured

    async with Store.open(config.db_path, create=False) as store:
        sync = Sync(config.shared, store)
        stop = asyncio.Event()
        task = asyncio.create_task(sync.run(stop), name="screener-sync")
        try:
            yield sync
        finally:
            stop.set()
            try:
                await asyncio.wait_for(task, 10.0)
            except TimeoutError:
                log.warning("sync.stop_timeout")
            except Exception as exc:  # a bug in the sync must not hide the service's own end
                log.error("sync.crashed", error=repr(exc))
