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

The target's floor (``floor_turns``) is timed in the same turns, so that the ratio compares two
figures measured side by side under the same load and the same cache eviction; the floor alone
(``floor_sqlite3_point``: every number warmed, then nothing between its lookups) is kept beside
it. ``screen_idle`` / ``floor_idle`` time the two one at a time, each after 2 ms of an idle loop,
as a call meets them at the SIP part's rates.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import itertools
import sqlite3
import time
from collections.abc import Awaitable, Callable
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
ORDERS = list(itertools.permutations(range(3)))  # the turns' orders, block by block
IDLE_S = 0.002  # the loop's idle time before each decision "one at a time"
IDLE_CALLERS = 1000
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
    floor_db: sqlite3.Connection,
    raws: list[str],
    e164_of: list[str | None],
    policy: Policy,
    result: dict[str, Any],
    routes: dict[str, int],
) -> None:
    """``screen()`` on ``store``, the before path on ``old_store`` and the floor's point lookup
    on ``floor_db``, BLOCK callers a turn, by the wall clock and in CPU time; the same decision
    from the first two for every caller.

    The three turns of a block go in one of their six orders, a different one each block, so that
    none always follows the same other: a turn's first callers find the CPU caches full of the
    turn before it (the before path's dozen probes evict the most), and the floor pays for that as
    ``screen()`` does.
    """
    for what, tick in (("", time.perf_counter), ("_cpu", time.process_time)):
        _clear()
        times: list[float] = []
        before: list[float] = []
        floor: list[float] = []
        for turn, first in enumerate(range(0, len(raws), BLOCK)):
            block = raws[first : first + BLOCK]
            new: list[Screening] = []
            olds: list[Screening] = []
            parts = [
                _timed(
                    block,
                    tick,
                    times,
                    new,
                    lambda raw: screen(store, raw, policy, REGION, NOW, DID),
                ),
                _timed(
                    block, tick, before, olds, lambda raw: _screen_before(old_store, raw, policy)
                ),
                _timed_floor(floor_db, e164_of[first : first + BLOCK], bool(what), floor),
            ]
            for part in (parts[i] for i in ORDERS[turn % len(ORDERS)]):
                await part
            for raw, screening, previous in zip(block, new, olds, strict=True):
                assert previous.decision == screening.decision, raw
                if not what:
                    route = screening.decision.route.value
                    routes[route] = routes.get(route, 0) + 1
        result[f"screen{what}"] = summary(times)
        result[f"screen_before{what}"] = summary(before)
        result[f"floor_turns{what}"] = summary(floor)


async def _timed(
    block: list[str],
    tick: Callable[[], float],
    times: list[float],
    out: list[Screening],
    fn: Callable[[str], Awaitable[Screening]],
) -> None:
    for raw in block:
        start = tick()
        out.append(await fn(raw))
        times.append((tick() - start) * 1000.0)


async def _timed_floor(
    db: sqlite3.Connection, e164s: list[str | None], cpu: bool, times: list[float]
) -> None:
    """The floor's point lookups of the numbers in ``e164s`` (None: the caller has none)."""
    numbers = [e164 for e164 in e164s if e164]
    times += _time_sync(numbers, lambda n: db.execute(EXACT_SQL, (n,)).fetchall(), cpu=cpu)


async def _one_at_a_time(
    store: Store,
    floor_db: sqlite3.Connection,
    raws: list[str],
    e164_of: list[str | None],
    policy: Policy,
    result: dict[str, Any],
) -> None:
    """``screen()`` and the floor's point lookup as a call meets them at tens of calls a second:
    each after IDLE_S of the event loop idle (a call every 2 ms is 500 calls/s; the SIP part's
    rates leave longer gaps), each caller's two taking turns at going first (the second finds the
    caller's pages where the first left them, 2 ms before: on its own connection, in the OS's
    cache). The turns above time a stream of back-to-back decisions, whose code and pages stay
    in the CPU's caches; here each finds them as the idle time (and whatever the machine ran
    meanwhile) left them."""
    _clear()
    times: list[float] = []
    floor: list[float] = []
    for index, (raw, e164) in enumerate(zip(raws[:IDLE_CALLERS], e164_of, strict=False)):
        for first in (index % 2 == 0, index % 2 == 1):
            await asyncio.sleep(IDLE_S)
            if first:
                start = time.perf_counter()
                await screen(store, raw, policy, REGION, NOW, DID)
                times.append((time.perf_counter() - start) * 1000.0)
            elif e164:
                start = time.perf_counter()
                floor_db.execute(EXACT_SQL, (e164,)).fetchall()
                floor.append((time.perf_counter() - start) * 1000.0)
    result["screen_idle"] = summary(times)
    result["floor_idle"] = summary(floor)
    got, base = result["screen_idle"], result["floor_idle"]
    result["idle_ratio_p50"] = ratio(got["p50_ms"], base["p50_ms"])
    result["idle_ratio_p99"] = ratio(got["p99_ms"], base["p99_ms"])


def _after_commits(
    path: Path, store: Store, uri: str, e164s: list[str], result: dict[str, Any]
) -> None:
    """``Store.lookup`` on the loop and the floor's point lookup, each after another
    connection's commit, as the service's reader meets them: its writer commits the call
    records. A commit changes the WAL, and SQLite then drops a reader's whole page cache at its
    next read, so each lookup walks the index from the file again (the OS's cache, by pread)."""
    writer = sqlite3.connect(path, isolation_level=None)
    floor_db = sqlite3.connect(uri, uri=True)
    loop_db = store._loop_db
    assert loop_db is not None  # opened with loop_lookups
    try:
        writer.execute("CREATE TABLE IF NOT EXISTS bench_commits (n INTEGER)")
        times: dict[str, list[float]] = {"store": [], "floor": []}
        for n, e164 in enumerate(e164s):
            for what in ("store", "floor") if n % 2 else ("floor", "store"):
                writer.execute("INSERT INTO bench_commits VALUES (?)", (n,))
                start = time.perf_counter()
                if what == "store":
                    _lookup(loop_db, e164)  # what Store.lookup runs on the loop
                else:
                    floor_db.execute(EXACT_SQL, (e164,)).fetchall()
                times[what].append((time.perf_counter() - start) * 1000.0)
        result["store_lookup_after_commit"] = summary(times["store"])
        result["floor_after_commit"] = summary(times["floor"])
    finally:
        floor_db.close()
        writer.execute("DROP TABLE IF EXISTS bench_commits")
        writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        writer.close()


async def run(path: Path, size: int, count: int) -> dict[str, Any]:
    """Time every method over ``count`` callers against the database at ``path``."""
    raws = callers(size, count)
    policy = Policy()
    e164_of = [normalize(r, REGION).e164 or None for r in raws]
    e164s = [e164 for e164 in e164_of if e164]
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
                _after_commits(path, store, uri, e164s, result)
                # Before and after in turns of BLOCK callers (each warm in its own turn, both
                # under the same load), and the same decision from both for every caller.
                # Each on its own connection (as two services would be): on one, the before's
                # dozen probes per caller evicted the after's pages from the page cache they
                # shared.
                async with Store.open(path, readonly=True, loop_lookups=True) as old_store:
                    for e164 in e164s[:2000]:
                        await old_store.lookup(e164)
                    floor_db = sqlite3.connect(uri, uri=True)
                    try:
                        for e164 in e164s[:2000]:
                            floor_db.execute(EXACT_SQL, (e164,)).fetchall()
                        await _turns(
                            store, old_store, floor_db, raws, e164_of, policy, result, routes
                        )
                        await _one_at_a_time(store, floor_db, raws, e164_of, policy, result)
                    finally:
                        floor_db.close()
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
    # The target's ratio: screen() against the floor timed in the same turns (side by side);
    # the floor alone (timed after a warm-up of every number, nothing between its lookups) is
    # kept as its own line.
    floor = result["floor_turns"]
    got = result["screen_async"]
    result["ratio_p50"] = ratio(got["p50_ms"], floor["p50_ms"])
    result["ratio_p99"] = ratio(got["p99_ms"], floor["p99_ms"])
    cpu, floor_cpu = result["screen_cpu"], result["floor_turns_cpu"]
    result["cpu_ratio_p50"] = ratio(cpu["p50_ms"], floor_cpu["p50_ms"])
    result["cpu_ratio_p99"] = ratio(cpu["p99_ms"], floor_cpu["p99_ms"])
    alone = result["floor_sqlite3_point"]
    result["alone_ratio_p50"] = ratio(got["p50_ms"], alone["p50_ms"])
    result["alone_ratio_p99"] = ratio(got["p99_ms"], alone["p99_ms"])
    before = result["screen_before"]
    result["before_ratio_p50"] = ratio(before["p50_ms"], floor["p50_ms"])
    result["before_ratio_p99"] = ratio(before["p99_ms"], floor["p99_ms"])
    result["normalize_reference"] = summary(
        _time_sync(raws, lambda r: normalize_reference(r, REGION))
    )
    return result
