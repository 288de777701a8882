"""Part 9: how the cost grows, with the lists and with the calls on hold (``--only growth``).

For each list size (10 K, 1 M, 10 M and, when its database is cached, 100 M entries; build it
once with ``nice -n 19 python -m bench.growth --build 100000000``):

- one decision in-process, as part 1 times it: ``screen()`` through the service's reader (lookups
  on the loop's thread) against the floor, a bare ``sqlite3`` point lookup, p50 and p99;
- the worst case of those lookups on a cold page cache: the database file's pages are dropped
  from the OS cache (``posix_fadvise(DONTNEED)``, that file only) and the first decisions are
  timed; not on the 10 M file, which other benchmarks share;
- ``screener run``'s peak RSS (psutil every 0.2 s and ``VmHWM``) after a warm-up and a step of
  the agent part's load, with that step's request-to-Redirect p50 and p99.

Then, on the 10 M list, the calls on hold at once: ``N`` requests (10, 100, 1,000) written in
one go, so that all of them are waiting in the dialplan together, each timed from that write to
its Redirect (three rounds each), for ``screener run`` and for the no-lookup floor.

The plots go to ``bench/img/growth-*.png`` (matplotlib, the bench extra).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import dataset, loadgen
from bench.decision import DID, EXACT_SQL, NOW, REGION, _clear
from bench.stats import summary
from screener.numbers import normalize
from screener.policy import Policy
from screener.screening import screen
from screener.store import Store

SIZES = (10_000, 1_000_000, 10_000_000, 100_000_000)
HOLDS = (10, 100, 1000)
SHARED = 10_000_000  # the list the other parts (and other benchmarks) use: never evicted here
IMG = Path(__file__).resolve().parent / "img"
COLD_CALLS = 200


def _evict(path: Path) -> None:
    """Drop ``path``'s pages from the OS page cache (nothing of ours may have it open)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


async def _decision(path: Path, size: int, count: int, cold: bool) -> dict[str, Any]:
    raws = dataset.callers(size, count, seed=17)
    policy = Policy()
    e164s = [c.e164 for c in (normalize(r, REGION) for r in raws) if c.e164]
    clock = time.perf_counter
    out: dict[str, Any] = {"entries": size, "callers": count}
    if cold:
        _evict(path)
        async with Store.open(path, readonly=True, loop_lookups=True) as store:
            _clear()
            times = []
            for raw in raws[:COLD_CALLS]:
                start = clock()
                await screen(store, raw, policy, REGION, NOW, DID)
                times.append((clock() - start) * 1000.0)
            out["cold"] = summary(times)
    uri = f"{path.absolute().as_uri()}?mode=ro"  # noqa: ASYNC240  # setup, not timed
    db = sqlite3.connect(uri, uri=True)
    try:
        for e164 in e164s:
            db.execute(EXACT_SQL, (e164,)).fetchall()
        floor = []
        for e164 in e164s:
            start = clock()
            db.execute(EXACT_SQL, (e164,)).fetchall()
            floor.append((clock() - start) * 1000.0)
        out["floor"] = summary(floor)
    finally:
        db.close()
    async with Store.open(path, readonly=True, loop_lookups=True) as store:
        for e164 in e164s:
            await store.lookup(e164)
        _clear()
        times = []
        for raw in raws:
            start = clock()
            await screen(store, raw, policy, REGION, NOW, DID)
            times.append((clock() - start) * 1000.0)
        out["screen"] = summary(times)
        out["loop_fallbacks"] = store.loop_fallbacks
    return out


async def _agent(
    path: Path, size: int, rate: int, seconds: float, bursts: tuple[int, ...] = ()
) -> dict[str, Any]:
    dataset.reset_calls(path)
    numbers = loadgen.shuffled(dataset.callers(size, 20_000, seed=11))
    logs = dataset.CACHE / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    client = loadgen.Client(
        f"growth-{size}",
        loadgen.screener_argv(),
        {"SCREENER_LOG_LEVEL": "warning", "SCREENER_DB": str(path)},
        logs / f"growth-{size}.log",
    )
    run = await loadgen.run_client(client, [rate], seconds, numbers, bursts=bursts)
    marker = Path(f"{path}.running")
    if run["exit_code"] not in (0, None) and marker.exists():  # noqa: ASYNC240  # after the run
        # Killed by the bench (SIGTERM went unanswered for 15 s, as at 100 M entries): its
        # marker would make the next run read all 11 GB for an integrity check before it logs
        # in. The bench's own child, known dead.
        run["marker_removed"] = True
        marker.unlink()  # noqa: ASYNC240  # after the run, not timed
    dataset.reset_calls(path)
    return run


def prepare(
    sizes: tuple[int, ...], log: Callable[[str], object] = print
) -> tuple[list[tuple[int, Path]], list[int]]:
    """The databases to measure, built (and cached) if need be, and the sizes skipped.

    Synchronous, before the part's event loop: building uses ``asyncio.run`` itself.
    """
    ready, skipped = [], []
    for size in sizes:
        path = dataset.db_path(size)
        if size > SHARED and not path.exists():
            # 100 M entries take about 16 minutes and 11 GB to build on the shared machine:
            # only from a cached file (python -m bench.growth --build SIZE makes it).
            skipped.append(size)
            log(f"growth: no cached {path}; skipped (python -m bench.growth --build {size})")
            continue
        ready.append((size, dataset.ensure_db(size, log=log)[0]))
    if SHARED not in sizes:
        dataset.ensure_db(SHARED, log=log)  # the calls on hold run on it
    return ready, skipped


async def run(
    ready: list[tuple[int, Path]],
    skipped: list[int],
    *,
    callers: int = 3000,
    rate: int = 200,
    seconds: float = 3.0,
    holds: tuple[int, ...] = HOLDS,
    log: Callable[[str], object] = print,
) -> dict[str, Any]:
    """Every size of ``ready``, then the calls on hold; writes the plots."""
    result: dict[str, Any] = {"sizes": [], "holds": {}, "skipped": skipped}
    for size, path in ready:
        log(f"growth: {size:,} entries: decision, then screener run at {rate}/s")
        row = await _decision(path, size, callers, cold=size != SHARED)
        agent = await _agent(path, size, rate, seconds)
        step = agent["steps"][0] if agent["steps"] else {}
        row["agent"] = step
        row["peak_rss_bytes"] = agent["peak_rss_bytes"]
        row["exit_code"] = agent["exit_code"]
        row["db_bytes"] = path.stat().st_size  # between two measurements
        result["sizes"].append(row)
    if holds:
        path = dataset.db_path(SHARED)
        log(f"growth: {holds} calls on hold at once, screener run and the floor")
        screener = await _agent(path, SHARED, rate, 1.0, bursts=holds)
        numbers = loadgen.shuffled(dataset.callers(SHARED, 20_000, seed=11))
        floor = await loadgen.run_client(
            loadgen.Client(
                "growth-floor",
                loadgen.floor_argv(),
                {},
                dataset.CACHE / "logs" / "growth-floor.log",
            ),
            [rate],
            1.0,
            numbers,
            bursts=holds,
        )
        result["holds"] = {"screener": screener["bursts"], "floor": floor["bursts"]}
    result["plots"] = plot(result)
    return result


def plot(result: dict[str, Any]) -> list[str]:
    """Write the PNGs; their paths (none when matplotlib is missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    IMG.mkdir(exist_ok=True)
    written = []
    rows = result["sizes"]
    if rows:
        x = [r["entries"] for r in rows]
        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
        for key, label, style in (
            ("screen", "screen()", "o-"),
            ("floor", "floor: sqlite3 point lookup", "s--"),
        ):
            ax.plot(x, [r[key]["p50_ms"] for r in rows], style, label=f"{label} p50")
            ax.plot(x, [r[key]["p99_ms"] for r in rows], style, alpha=0.45, label=f"{label} p99")
        cold = [(r["entries"], r["cold"]["p99_ms"]) for r in rows if "cold" in r]
        if cold:
            ax.plot(*zip(*cold, strict=True), "x:", label="screen() p99, cold page cache")
        ax.set(xscale="log", yscale="log", xlabel="list entries", ylabel="ms per decision")
        ax.set_title("One decision in-process, by list size")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(_save(fig, "growth-decision.png"))
        plt.close(fig)

        fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
        ax.plot(x, [r["peak_rss_bytes"] / 1e6 for r in rows], "o-", label="screener run peak RSS")
        ax.set(xscale="log", xlabel="list entries", ylabel="MB", ylim=(0, None))
        ax.set_title("screener run's memory, by list size")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(_save(fig, "growth-rss.png"))
        plt.close(fig)
    holds = result.get("holds") or {}
    if holds:
        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
        for label, style in (("screener", "o-"), ("floor", "s--")):
            steps = holds.get(label) or []
            n = [s["rate"] for s in steps]
            ax.plot(n, [s["p50_ms"] for s in steps], style, label=f"{label} p50")
            ax.plot(n, [s["max_ms"] for s in steps], style, alpha=0.45, label=f"{label} last")
        ax.set(xscale="log", yscale="log", xlabel="calls on hold at once", ylabel="ms to Redirect")
        ax.set_title("Request to Redirect with N calls arriving together (10 M entries)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(_save(fig, "growth-hold.png"))
        plt.close(fig)
    return written


def _save(fig: Any, name: str) -> str:
    path = IMG / name
    fig.savefig(path)
    return str(path)


def build(size: int) -> None:
    """Build (and cache) the list database of ``size`` entries."""
    dataset.ensure_db(size)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.growth", description=__doc__)
    parser.add_argument("--build", type=int, metavar="SIZE", help="build and cache one size")
    options = parser.parse_args()
    if options.build:
        build(options.build)
