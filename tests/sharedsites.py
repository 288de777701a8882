"""What the shared-list tests share: a site's config, a fresh central database, two sites and
their engines, entries, and the waits (tests/test_shared_*.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from screener.config import SharedConfig
from screener.policy import Entry, ListKind
from screener.shared.engine import Sync, init_central
from screener.store import CallRecord, Store
from tests.pgserver import PGServer

# The real clock's time at import, to the second: the central prunes call records and keys by
# the real clock (call_retention_days), so records at a fixed date would be pruned, and these
# tests fail, once that date is older than the retention.
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def shared_config(server: PGServer, dsn: str, site: str, **kwargs: Any) -> SharedConfig:
    return SharedConfig(
        dsn=dsn,
        site=site,
        password=server.password,
        sslmode="disable",
        connect_timeout=3,
        push_interval=0.02,
        **kwargs,
    )


async def fresh_central(server: PGServer) -> str:
    dsn = server.create_database(f"t_{uuid.uuid4().hex[:12]}")
    await init_central(shared_config(server, dsn, "admin"))
    return dsn


def block(number: str, **kwargs: Any) -> Entry:
    return Entry(ListKind.BLOCK, number, created_at=NOW, **kwargs)


def allow(number: str, **kwargs: Any) -> Entry:
    return Entry(ListKind.ALLOW, number, created_at=NOW, **kwargs)


@asynccontextmanager
async def site(tmp: Path, name: str) -> AsyncIterator[Store]:
    async with Store.open(tmp / f"{name}.db") as store:
        yield store


async def lists(store: Store) -> dict[tuple[str, bool], tuple[str, str]]:
    return {(e.number, e.prefix): (e.kind.value, e.source) for e in await store.entries()}


async def eventually(predicate: Callable[[], Any], within: float = 20.0) -> None:
    """Wait for ``predicate()`` (awaited if need be) to be true: polls, never a fixed sleep."""
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


@asynccontextmanager
async def running(sync: Sync) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(sync.run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


def central_entries(server: PGServer, dsn_db: str) -> dict[tuple[str, bool], tuple[str, str]]:
    dbname = dsn_db.rsplit("dbname=", 1)[1]
    with server.connect(dbname) as conn:
        rows = conn.execute(
            "SELECT number, prefix, kind, source FROM entries WHERE NOT deleted"
        ).fetchall()
    return {(r[0], r[1]): (r[2], r[3]) for r in rows}


@dataclass(frozen=True)
class Sites:
    """Two sites' stores and engines on one fresh central database."""

    dsn: str
    a: Store
    b: Store
    sa: Sync
    sb: Sync


@asynccontextmanager
async def two_sites(server: PGServer, tmp: Path, **kwargs: Any) -> AsyncIterator[Sites]:
    """Sites "a" and "b" (``kwargs``: their SharedConfig's settings) on a new central database."""
    dsn = await fresh_central(server)
    async with site(tmp, "a") as a, site(tmp, "b") as b:
        yield Sites(
            dsn,
            a,
            b,
            Sync(shared_config(server, dsn, "a", **kwargs), a),
            Sync(shared_config(server, dsn, "b", **kwargs), b),
        )


def call_record(call_id: str) -> CallRecord:
    """One screened call's record at NOW (a challenged fixed line), for the call log tests."""
    return CallRecord(
        call_id=call_id,
        received_at=NOW,
        raw_number="0312345678",
        raw_name="",
        e164="+81312345678",
        category="fixed",
        did=None,
        route="challenge",
        rule="default",
        reasons=["unknown caller"],
        latency_ms=1.5,
    )
