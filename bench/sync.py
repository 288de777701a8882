"""Part 8: many sites, one list (``bench/run --only sync``; ``python -m bench.sync``).

A real PostgreSQL (tests/pgserver.py: initdb in a temporary folder, a free loopback port,
stopped by PID) and two sites, each its own SQLite store and sync engine:

- change-to-effect latency: a block added at site A (``Store.add``, as ``screener list add``
  does) until site B's lookup finds it, both engines live (LISTEN/NOTIFY), over ``changes``;
- the initial snapshot: ``sizes`` live entries in the central store (made there by
  ``generate_series``), a fresh site's first ``Sync.once()``: rows per second;
- outbox replay: ``replay`` local changes made while the central store was away, pushed when
  it returns: changes per second;
- decision latency (``Store.lookup`` on a read-only connection of its own, as the service's
  reader) alone, during the snapshot and during the replay.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.stats import ratio
from screener.config import SharedConfig
from screener.log import configure_logging
from screener.policy import Entry, ListKind
from screener.shared import local
from screener.shared.engine import Sync, init_central
from screener.store import Store
from tests.pgserver import PGServer, Template

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _summary(ms: list[float]) -> dict[str, float]:
    return {
        "n": len(ms),
        "p50_ms": _pct(ms, 0.5),
        "p99_ms": _pct(ms, 0.99),
        "max_ms": max(ms) if ms else float("nan"),
    }


def _config(server: PGServer, dsn: str, site: str, **kw: Any) -> SharedConfig:
    return SharedConfig(dsn=dsn, site=site, password=server.password, sslmode="disable", **kw)


async def _lookups(path: Path, stop: asyncio.Event, numbers: list[str]) -> list[float]:
    """Lookups one after another on a read-only connection until ``stop``: each in ms."""
    out: list[float] = []
    async with Store.open(path, readonly=True, loop_lookups=True) as reader:
        i = 0
        while not stop.is_set():
            t = time.perf_counter()
            await reader.lookup(numbers[i % len(numbers)])
            out.append((time.perf_counter() - t) * 1000)
            i += 1
            await asyncio.sleep(0.001)  # calls come one by one, not back to back
    return out


def _cpu() -> dict[str, float]:
    """CPU seconds so far: this process's, and its finished children's (the snapshot's)."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return {"self": me.ru_utime + me.ru_stime, "children": kids.ru_utime + kids.ru_stime}


async def _latency(server: PGServer, dsn: str, folder: Path, changes: int) -> dict[str, Any]:
    async with Store.open(folder / "lat-a.db") as a, Store.open(folder / "lat-b.db") as b:
        sa, sb = Sync(_config(server, dsn, "a"), a), Sync(_config(server, dsn, "b"), b)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(s.run(stop)) for s in (sa, sb)]
        await asyncio.sleep(1.0)
        ms: list[float] = []
        async with Store.open(folder / "lat-b.db", readonly=True) as reader:
            for i in range(changes):
                number = f"+8131{i:07d}"
                began = time.perf_counter()
                await a.add(Entry(ListKind.BLOCK, number, created_at=NOW))
                while not await reader.lookup(number):  # noqa: ASYNC110  # B's lookup is the effect
                    await asyncio.sleep(0.001)
                ms.append((time.perf_counter() - began) * 1000)
                await asyncio.sleep(random.uniform(0.05, 0.15))  # changes spread out
        stop.set()
        await asyncio.gather(*tasks)
    return _summary(ms)


async def _snapshot(server: PGServer, dsn: str, folder: Path, size: int) -> dict[str, Any]:
    dbname = dsn.rsplit("=", 1)[1]
    with server.connect(dbname) as conn:
        conn.execute("TRUNCATE entries")
        began = time.perf_counter()
        conn.execute(
            "INSERT INTO entries (kind, number, prefix, label, source, created_at, note, seq,"
            " site) SELECT CASE WHEN g %% 3 = 0 THEN 'allow' ELSE 'block' END,"
            " '+8190' || lpad(g::text, 8, '0'), false, 'bench', 'manual', 0, '',"
            " nextval('change_seq'), 'bench' FROM generate_series(1, %s) AS g",
            (size,),
        )
        conn.commit()
        load_s = time.perf_counter() - began
    path = folder / f"snap-{size}.db"
    async with Store.open(path) as store:
        baseline_stop = asyncio.Event()
        numbers = [f"+8190{random.randrange(size):08d}" for _ in range(2000)]
        baseline = asyncio.create_task(_lookups(path, baseline_stop, numbers))
        await asyncio.sleep(3.0)
        baseline_stop.set()
        quiet = await baseline
        during_stop = asyncio.Event()
        during = asyncio.create_task(_lookups(path, during_stop, numbers))
        sync = Sync(_config(server, dsn, f"snap{size}"), store)
        cpu = _cpu()
        began = time.perf_counter()
        result = await sync.once()
        took = time.perf_counter() - began
        cpu = {k: round(v - cpu[k], 2) for k, v in _cpu().items()}
        during_stop.set()
        busy = await during
        assert result.snapshot == size, result
        assert await store.count_entries() == size
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)  # noqa: ASYNC240  # between measurements
    return {
        "rows": size,
        "central_load_s": load_s,
        "seconds": took,
        "rows_per_s": size / took,
        "spent": sync.snapshot_spent,  # fetch_s, write_s (overlapped), build_s, swap_s
        "cpu_s": cpu,  # this process (lookups included) and the snapshot's own process
        "lookup_quiet": _summary(quiet),
        "lookup_during": _summary(busy),
        "p99_ratio": ratio(_pct(busy, 0.99), _pct(quiet, 0.99)),
    }


async def _replay(server: PGServer, dsn: str, folder: Path, count: int) -> dict[str, Any]:
    path = folder / "replay.db"
    async with Store.open(path) as store:
        sync = Sync(_config(server, dsn, "replay"), store)
        await sync.join()
        # Made while the central store was away: one outbox row each, in the change's own
        # transaction (the triggers), as a `list import` would.
        await store.import_entries(
            [Entry(ListKind.BLOCK, f"+8150{i:08d}", created_at=NOW) for i in range(count)]
        )
        queued = (await store.run("state", local.state)).outbox
        numbers = [f"+8150{random.randrange(count):08d}" for _ in range(2000)]
        quiet_stop = asyncio.Event()
        quiet_task = asyncio.create_task(_lookups(path, quiet_stop, numbers))
        await asyncio.sleep(3.0)
        quiet_stop.set()
        quiet = await quiet_task
        from screener.shared import central

        during_stop = asyncio.Event()
        during = asyncio.create_task(_lookups(path, during_stop, numbers))
        async with central.connect(sync.config) as conn:
            cpu = _cpu()["self"]
            began = time.perf_counter()
            sent = await sync.push(conn)
            took = time.perf_counter() - began
            cpu = _cpu()["self"] - cpu
        during_stop.set()
        busy = await during
        assert sent == queued == count, (sent, queued, count)
    return {
        "changes": count,
        "seconds": took,
        "changes_per_s": count / took,
        "cpu_s": round(cpu, 2),  # this process: the push's work and the lookups' own
        "lookup_quiet": _summary(quiet),
        "lookup_during": _summary(busy),
        "p99_ratio": ratio(_pct(busy, 0.99), _pct(quiet, 0.99)),
    }


async def run(
    sizes: list[int], changes: int = 100, replay: int = 50_000, log: Any = print
) -> dict[str, Any]:
    """The whole part; returns its figures."""
    template = Template.make()
    server = PGServer(template)
    folder = Path(tempfile.mkdtemp(prefix="screener-bench-sync-"))
    try:
        server.start()
        results: dict[str, Any] = {"load_before": os.getloadavg()}
        dsn = server.create_database("bench")
        await init_central(_config(server, dsn, "admin"))
        log(f"sync: change-to-effect latency over {changes} changes")
        results["latency"] = await _latency(server, dsn, folder, changes)
        log(f"sync: outbox replay of {replay:,} changes")
        results["replay"] = await _replay(server, dsn, folder, replay)
        results["snapshots"] = []
        for size in sizes:
            log(f"sync: snapshot of {size:,} entries")
            results["snapshots"].append(await _snapshot(server, dsn, folder, size))
        results["load_after"] = os.getloadavg()
        return results
    finally:
        server.remove()
        template.remove()
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    """``python -m bench.sync``: print the figures as JSON."""
    p = argparse.ArgumentParser(prog="python -m bench.sync", description=__doc__)
    p.add_argument("--sizes", default="1000000", help="snapshot sizes (comma list)")
    p.add_argument("--changes", type=int, default=100)
    p.add_argument("--replay", type=int, default=50_000)
    args = p.parse_args()
    configure_logging("console", "warning")
    sizes = [int(n) for n in args.sizes.split(",") if n]
    result = asyncio.run(run(sizes, args.changes, args.replay))
    print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
