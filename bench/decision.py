"""Part 1: one decision in-process (normalize + lookup + decide) against a bare sqlite3 lookup.

Every method sees the same raw caller IDs, in the same order, one at a time (a call is screened
as it arrives, never batched). ``normalize``'s LRU cache is cleared before each method so that
every method pays for parsing, as a stream of distinct callers would.

``screen_before`` is the decision path as it was before issue 16's work on it, timed in the
same loop as ``screen()`` (the two take turns, 500 callers each, so that a loaded machine
weighs on both alike; caller by caller, each evicted the other's code and data from the CPU
caches and both looked slower): phonenumbers alone (``normalize_reference``, behind an LRU
cache of the same size) and a probe for every prefix of the number; ``decide`` is today's in
both (its own change, a tenth of it, is not in the difference). Each has its own read-only
connection on the loop: sharing one, the before's probes evicted the after's pages from it.
"""

from __future__ import annotations

import datetime as dt
import functools
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.dataset import callers
from bench.stats import ratio, summary
from screener import numbers
from screener.config import did_key
from screener.numbers import normalize, normalize_reference
from screener.policy import Decision, Policy, decide
from screener.screening import Screening, screen
from screener.store import ENTRY_COLUMNS, Store
from screener.store.entries import _lookup, _prefixes

REGION = "JP"
DID = "0355550100"
NOW = dt.datetime(2026, 11, 25, 1, 30, tzinfo=dt.UTC)  # a Wednesday, 10:30 in Tokyo
MMAP_SIZE = 1 << 30
BLOCK = 500  # callers per turn when before and after take turns
EXACT_SQL = f"SELECT {ENTRY_COLUMNS} FROM entries WHERE number = ?"


# The parse before the fast path: phonenumbers alone, cached as normalize is.
_normalize_before = functools.lru_cache(maxsize=65536)(normalize_reference)


def _clear() -> None:
    numbers._normalize.cache_clear()
    _normalize_before.cache_clear()


def _sync_screen(db: sqlite3.Connection, raw: str, policy: Policy) -> Decision:
    """The same work as ``screening.screen`` on a plain sqlite3 connection, no thread hop."""
    caller = normalize(raw, REGION)
    matches = _lookup(db, caller.e164) if caller.e164 else []
    return decide(caller, matches, policy, NOW, did_key(DID, REGION))


async def _screen_before(store: Store, raw: str, policy: Policy) -> Screening:
    """``screening.screen`` as it was: phonenumbers' parse, and every prefix probed."""
    caller = _normalize_before(raw, REGION)
    matches: tuple[Any, ...] = ()
    if caller.e164:
        db = store._loop_db
        assert db is not None  # opened with loop_lookups
        matches = tuple(_lookup(db, caller.e164, _prefixes(caller.e164)))
    key = did_key(DID, REGION)
    return Screening(caller, key, matches, decide(caller, matches, policy, NOW, key))


def _time_sync(items: list[str], fn: Callable[[str], object], cpu: bool = False) -> list[float]:
    out = []
    clock = time.process_time if cpu else time.perf_counter
    for item in items:
        start = clock()
        fn(item)
        out.append((clock() - start) * 1000.0)
    return out


async def _turns(
    store: Store,
    old_store: Store,
    raws: list[str],
    policy: Policy,
    result: dict[str, Any],
    routes: dict[str, int],
) -> None:
    """``screen()`` on ``store`` and the before path on ``old_store``, BLOCK callers a turn,
    by the wall clock and in CPU time; the same decision from both for every caller."""
    for what, tick in (("", time.perf_counter), ("_cpu", time.process_time)):
        _clear()
        times, before = [], []
        for first in range(0, len(raws), BLOCK):
            block = raws[first : first + BLOCK]
            new = []
            for raw in block:
                start = tick()
                new.append(await screen(store, raw, policy, REGION, NOW, DID))
                times.append((tick() - start) * 1000.0)
            for raw, screening in zip(block, new, strict=True):
                start = tick()
                old = await _screen_before(old_store, raw, policy)
                before.append((tick() - start) * 1000.0)
                assert old.decision == screening.decision, raw
                if not what:
                    route = screening.decision.route.value
                    routes[route] = routes.get(route, 0) + 1
        result[f"screen{what}"] = summary(times)
        result[f"screen_before{what}"] = summary(before)


async def run(path: Path, size: int, count: int) -> dict[str, Any]:
    """Time every method over ``count`` callers against the database at ``path``."""
    raws = callers(size, count)
    policy = Policy()
    e164s = [c.e164 for c in (normalize(r, REGION) for r in raws) if c.e164]
    routes: dict[str, int] = {}
    result: dict[str, Any] = {"entries": size, "callers": count, "with_e164": len(e164s)}
    clock = time.perf_counter

    uri = f"{path.absolute().as_uri()}?mode=ro"  # noqa: ASYNC240  # setup, not timed
    db = sqlite3.connect(uri, uri=True)
    try:
        # Warm the OS page cache and SQLite's own (both paths open their own connection).
        for e164 in e164s:
            db.execute(EXACT_SQL, (e164,)).fetchall()
        result["floor_sqlite3_point"] = summary(
            _time_sync(e164s, lambda n: db.execute(EXACT_SQL, (n,)).fetchall())
        )
        # CPU time (all threads of the process) beside wall time: on a shared machine the
        # wall clock also counts the time other processes had the core.
        result["floor_cpu"] = summary(
            _time_sync(e164s, lambda n: db.execute(EXACT_SQL, (n,)).fetchall(), cpu=True)
        )
        _clear()
        result["normalize_uncached"] = summary(_time_sync(raws, lambda r: normalize(r, REGION)))
        result["normalize_cached"] = summary(_time_sync(raws, lambda r: normalize(r, REGION)))
        _clear()
        result["sync_screen"] = summary(_time_sync(raws, lambda r: _sync_screen(db, r, policy)))
    finally:
        db.close()

    # The service's reader (lookups on the loop's thread), then the database thread's path
    # it replaced, then the loop's connection with mmap on.
    for key, options in (
        ("", {"loop_lookups": True}),
        ("_thread", {}),
        ("_mmap", {"loop_lookups": True, "mmap_size": MMAP_SIZE}),
    ):
        async with Store.open(path, readonly=True, **options) as store:
            for e164 in e164s[:2000]:
                await store.lookup(e164)
            lookups = []
            for e164 in e164s:
                start = clock()
                await store.lookup(e164)
                lookups.append((clock() - start) * 1000.0)
            result[f"store_lookup{key}"] = summary(lookups)
            if not key:
                # Before and after in turns of BLOCK callers (each warm in its own turn, both
                # under the same load), and the same decision from both for every caller.
                # Each on its own connection (as two services would be): on one, the before's
                # dozen probes per caller evicted the after's pages from the page cache they
                # shared.
                async with Store.open(path, readonly=True, loop_lookups=True) as old_store:
                    for e164 in e164s[:2000]:
                        await old_store.lookup(e164)
                    await _turns(store, old_store, raws, policy, result, routes)
                continue
            _clear()
            times = []
            for raw in raws:
                start = clock()
                await screen(store, raw, policy, REGION, NOW, DID)
                times.append((clock() - start) * 1000.0)
            result[f"screen{key}"] = summary(times)
            _clear()
            cpu = []
            for raw in raws:
                start = time.process_time()
                await screen(store, raw, policy, REGION, NOW, DID)
                cpu.append((time.process_time() - start) * 1000.0)
            result[f"screen{key}_cpu"] = summary(cpu)
    result["screen_async"] = result["screen"]  # the name older results used
    result["routes"] = routes
    floor = result["floor_sqlite3_point"]
    got = result["screen_async"]
    result["ratio_p50"] = ratio(got["p50_ms"], floor["p50_ms"])
    result["ratio_p99"] = ratio(got["p99_ms"], floor["p99_ms"])
    result["cpu_ratio_p50"] = ratio(result["screen_cpu"]["p50_ms"], result["floor_cpu"]["p50_ms"])
    result["cpu_ratio_p99"] = ratio(result["screen_cpu"]["p99_ms"], result["floor_cpu"]["p99_ms"])
    before = result["screen_before"]
    result["before_ratio_p50"] = ratio(before["p50_ms"], floor["p50_ms"])
    result["before_ratio_p99"] = ratio(before["p99_ms"], floor["p99_ms"])
    result["normalize_reference"] = summary(
        _time_sync(raws, lambda r: normalize_reference(r, REGION))
    )
    return result
