"""Does scraping /metrics during a burst change the decision latency? ``.venv/bin/python -m
bench.scrape [--entries 100000] [--rate 300] [--seconds 10] [--rounds 2]``.

The agent part of the benchmark (bench/loadgen.py: the bench is the AMI server, ``screener run``
is the real subprocess) is run in alternating rounds: with the metrics server off
(``SCREENER_METRICS_LISTEN=""``), and with it on while a scraper GETs ``/metrics`` every
``--interval`` seconds (default 0.1 s: 150 times Prometheus' usual 15 s). Prints the
request → Redirect percentiles of each round as JSON. No test asserts on these numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
from typing import Any

import aiohttp

from bench import dataset, loadgen


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _scrape(url: str, interval: float, stop: asyncio.Event, counts: list[int]) -> None:
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            try:
                async with session.get(url) as reply:
                    await reply.read()
                    counts[0 if reply.status == 200 else 1] += 1
            except aiohttp.ClientError:
                counts[1] += 1
            await asyncio.sleep(interval)


async def _round(
    label: str, db: Any, numbers: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    dataset.reset_calls(db)
    env = {"SCREENER_DB": str(db), "SCREENER_LOG_LEVEL": "warning", "SCREENER_METRICS_LISTEN": ""}
    stop, counts, scraper = asyncio.Event(), [0, 0], None
    if label == "scraped":
        port = _free_port()
        env["SCREENER_METRICS_LISTEN"] = f"127.0.0.1:{port}"
        url = f"http://127.0.0.1:{port}/metrics"
        scraper = asyncio.create_task(_scrape(url, args.interval, stop, counts))
    client = loadgen.Client(
        label, loadgen.screener_argv(), env, dataset.CACHE / f"scrape-{label}.log"
    )
    try:
        run = await loadgen.run_client(client, [args.rate], args.seconds, numbers)
    finally:
        stop.set()
        if scraper is not None:
            await scraper
    (step,) = run["steps"]
    keys = ("rate", "sent", "answered", "p50_ms", "p99_ms")
    return {
        "label": label,
        **{k: step.get(k) for k in keys},
        "scrapes_ok": counts[0],
        "scrapes_failed": counts[1],
    }


async def main(args: argparse.Namespace, db: Any) -> list[dict[str, Any]]:
    numbers = loadgen.shuffled(dataset.callers(args.entries, 20_000, seed=11))
    rounds = []
    for _ in range(args.rounds):
        for label in ("off", "scraped"):
            rounds.append(await _round(label, db, numbers, args))
            print(json.dumps(rounds[-1]), file=sys.stderr)
    dataset.reset_calls(db)
    return rounds


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.scrape", description=__doc__)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--rate", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--interval", type=float, default=0.1)
    args = parser.parse_args()
    db, _ = dataset.ensure_db(args.entries, log=lambda *a: print(*a, file=sys.stderr))
    print(json.dumps(asyncio.run(main(args, db)), indent=2))
