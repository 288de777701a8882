"""The web console under a big call log: ``.venv/bin/python -m bench.web`` (see bench/README.md).

1. Page and API load times, server side (the ASGI app in-process through httpx, templates
   rendered, no network), with CALLS calls in the log spread over 60 days.
2. Decision latency (``screen()`` through the real ``Store``, one call at a time) with and without
   a console process refreshing the dashboard and the call log once a second (``--interval``),
   in its own process as in production.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import random
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench.dataset import CACHE, callers
from screener.policy import Policy
from screener.screening import screen
from screener.store import SCHEMA_VERSION, Store
from screener.users import Role, hash_password, new_token, token_digest
from screener.web.app import create_app
from screener.web.core import Console
from screener.webstore import WebStore

ROUTES = ("staff", "challenge", "voicemail", "reject")
WEIGHTS = (55, 30, 12, 3)


def build(path: Path, calls: int, entries: int) -> None:
    """A database with ``calls`` calls over 60 days and ``entries`` list entries (cached)."""
    if path.exists():
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".building")
    for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        leftover.unlink(missing_ok=True)
    print(f"building {path} ({calls:,} calls, {entries:,} entries; cached)", file=sys.stderr)

    async def schema() -> None:
        async with Store.open(tmp):
            pass

    asyncio.run(schema())
    rng = random.Random(7)
    now = time.time()
    db = sqlite3.connect(tmp, isolation_level=None)
    db.execute("PRAGMA journal_mode = OFF")
    db.execute("PRAGMA synchronous = OFF")
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO entries (kind, number, prefix, label, source, created_at, hits)"
        " VALUES (?, ?, 0, '', 'manual', ?, ?)",
        (
            ("block" if i % 3 else "allow", f"+8190{i:08d}", now - 86400, rng.randint(0, 50))
            for i in range(entries)
        ),
    )

    def rows() -> Any:
        start = now - 60 * 86400
        step = 60 * 86400 / calls
        for i in range(calls):
            route = rng.choices(ROUTES, WEIGHTS)[0]
            number = f"090{rng.randint(10_000_000, 10_099_999):08d}"
            outcome = (
                rng.choice(("pass", "fail", "timeout", None)) if route == "challenge" else None
            )
            yield (
                f"bench-{i}",
                start + i * step,
                number,
                "",
                "+81" + number[1:],
                "mobile",
                "0312345678",
                route,
                "default",
                json.dumps([f"bench call {i}"]),
                0.5,
                outcome,
            )

    db.executemany(
        "INSERT INTO calls (call_id, received_at, raw_number, raw_name, e164, category, did,"
        " route, rule, reasons, latency_ms, outcome) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        rows(),
    )
    db.execute("COMMIT")
    db.execute("ANALYZE")
    db.execute("PRAGMA journal_mode = WAL")
    db.close()
    tmp.replace(path)


def _console(store: WebStore) -> tuple[Console, str]:
    if store.login_record("bench") is None:
        store.add_user(
            "bench", Role.ADMIN, hash_password("bench password"), dt.datetime.now(dt.UTC)
        )
    token = new_token()
    store.add_token("bench", token_digest(token), dt.datetime.now(dt.UTC))
    con = Console(
        store=store, policy=Policy(), region="JP", mailbox=None, secret=store.secret_key()
    )
    return con, token


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def pages(path: Path, repeat: int) -> dict[str, dict[str, float]]:
    with WebStore.open(path) as store:
        con, token = _console(store)
        started = time.perf_counter()
        store.dashboard(dt.datetime.now(dt.UTC), con.tz)  # as `screener web` does at start
        warmup = (time.perf_counter() - started) * 1000
        middle = store.last_rowid() // 2
        targets = {
            "dashboard /": "/",
            "calls /calls": "/calls",
            "calls, route filter": "/calls?route=reject",
            "calls, number filter": "/calls?number=09010012345",
            "calls, date filter": "/calls?date="
            + (dt.date.today() - dt.timedelta(days=30)).isoformat(),
            f"calls, page at rowid {middle:,}": f"/calls?before={middle}",
            "number detail": "/numbers/%2B819010012345",
            "lists /lists?q=+8190001": "/lists?q=%2B8190001",
            "api /api/calls": "/api/calls",
            "api /api/dashboard": "/api/dashboard",
        }
        headers = {"Authorization": f"Bearer {token}"}
        transport = httpx.ASGITransport(app=create_app(con))
        out: dict[str, dict[str, float]] = {
            "dashboard count at start": {
                "first_ms": warmup,
                "p50_ms": warmup,
                "p95_ms": warmup,
                "max_ms": warmup,
            }
        }
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as c:
            for name, url in targets.items():
                times = []
                for _ in range(repeat):
                    started = time.perf_counter()
                    r = await c.get(url, headers=headers)
                    times.append((time.perf_counter() - started) * 1000)
                    assert r.status_code == 200, (url, r.status_code, r.text[:200])
                out[name] = {
                    "first_ms": times[0],
                    "p50_ms": statistics.median(times),
                    "p95_ms": _pct(times, 0.95),
                    "max_ms": max(times),
                }
        return out


def refresher(path: Path, interval: float) -> None:
    """A console that loads the dashboard and the call log every ``interval`` seconds, forever."""

    async def loop() -> None:
        with WebStore.open(path) as store:
            con, token = _console(store)
            transport = httpx.ASGITransport(app=create_app(con))
            headers = {"Authorization": f"Bearer {token}"}
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as c:
                while True:
                    await c.get("/", headers=headers)
                    await c.get("/calls", headers=headers)
                    await asyncio.sleep(interval)

    asyncio.run(loop())


async def decisions(path: Path, count: int) -> dict[str, float]:
    numbers = callers(100_000, count)
    times: list[float] = []
    policy = Policy()
    now = dt.datetime.now(dt.UTC)
    async with Store.open(path, readonly=True) as store:
        for raw in numbers:
            started = time.perf_counter()
            await screen(store, raw, policy, "JP", now)
            times.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": statistics.median(times), "p99_ms": _pct(times, 0.99)}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.web", description=__doc__)
    p.add_argument("--calls", type=int, default=1_000_000)
    p.add_argument("--entries", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=20, help="loads per page")
    p.add_argument("--decisions", type=int, default=5000)
    p.add_argument("--interval", type=float, default=1.0, help="console refresh period, s")
    p.add_argument("--refresher", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.refresher:
        refresher(args.refresher, args.interval)
        return
    # The schema version is in the name: a database cached by an older screener is never reused.
    path = CACHE / f"web-{args.calls}-{args.entries}-v{SCHEMA_VERSION}.db"
    build(path, args.calls, args.entries)
    result: dict[str, Any] = {"calls": args.calls, "entries": args.entries}
    result["pages"] = asyncio.run(pages(path, args.repeat))
    result["decision_alone"] = asyncio.run(decisions(path, args.decisions))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.web",
            "--refresher",
            str(path),
            "--interval",
            str(args.interval),
        ],
        stdin=subprocess.DEVNULL,
    )
    try:
        time.sleep(2)
        result["decision_with_console"] = asyncio.run(decisions(path, args.decisions))
    finally:
        proc.terminate()
        proc.wait(10)
    # Once more without: the machine's own noise, to compare the difference against.
    result["decision_alone_again"] = asyncio.run(decisions(path, args.decisions))
    print(
        f"web console with {args.calls:,} calls and {args.entries:,} entries "
        f"(server time, {args.repeat} loads each)"
    )
    for name, t in result["pages"].items():
        print(
            f"  {name:40s} first {t['first_ms']:7.1f} ms   p50 {t['p50_ms']:7.1f} ms"
            f"   p95 {t['p95_ms']:7.1f} ms"
        )
    for key in ("decision_alone", "decision_with_console", "decision_alone_again"):
        t = result[key]
        print(f"  {key:40s} p50 {t['p50_ms']:7.3f} ms   p99 {t['p99_ms']:7.3f} ms")
    out = Path("bench-results")
    out.mkdir(exist_ok=True)
    (out / "web-latest.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
