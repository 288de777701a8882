"""Notification delivery figures: ``.venv/bin/python -m bench.notify [--samples 10] [--outage 60]``.

1. Delay from a voicemail outbox row being committed (on its own connection, as the service's
   writer commits it) to the signed webhook POST arriving at a local receiver, through the
   real ``start_observers`` (default ``[notify]`` settings: poll 1 s, retry 2 s doubling to
   60 s). Measured twice: with the ``VoicemailLeft`` event published after the commit (what
   the service does; it wakes the sender) and with no event (the sender's poll alone).
2. A receiver outage: the receiver is down for ``--outage`` seconds while a voicemail row is
   written every 2 s; then it comes back. Counted: rows written, delivered, delivered twice,
   and the time from its return to the last arrival.

Prints one JSON object. No test asserts on these numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from aiohttp import web

from screener import events
from screener.config import Config, NotifyConfig, WebhookConfig
from screener.log import configure_logging
from screener.notify.message import SIGNATURE_HEADER, verify
from screener.observers import start_observers
from screener.store import Store

SECRET = "bench-secret"  # noqa: S105  # a throw-away secret for a local receiver


class Receiver:
    """A webhook receiver that can be stopped and started again on the same port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.arrivals: dict[str, list[float]] = {}
        self.bad = 0
        self._runner: web.AppRunner | None = None

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not verify(SECRET, body, request.headers.get(SIGNATURE_HEADER, "")):
            self.bad += 1
            return web.Response(status=401)
        self.arrivals.setdefault(json.loads(body)["key"], []).append(time.time())
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()
        if self.port == 0:
            self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def _wait(predicate: Any, within: float) -> bool:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


async def _delays(
    writer: Store, hub: events.Hub, receiver: Receiver, n: int, *, wake: bool, tag: str
) -> list[float]:
    delays = []
    for i in range(n):
        key = f"voicemail:{tag}{i}"
        await writer.add_outbox(
            "voicemail", key, {"call_id": f"{tag}{i}", "status": "SUCCESS"}, _now()
        )
        committed = time.time()
        if wake:
            hub.publish(events.VoicemailLeft(f"{tag}{i}", "SUCCESS", True))
        if not await _wait(lambda key=key: key in receiver.arrivals, 30):
            raise SystemExit(f"{key} never arrived")
        delays.append((receiver.arrivals[key][0] - committed) * 1000)
        await asyncio.sleep(0.37)  # not in step with the poll
    return delays


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def main(samples: int, outage: float) -> dict[str, Any]:
    configure_logging("json", "warning", stream=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "screener.db"
        receiver = Receiver(0)
        await receiver.start()
        url = f"http://127.0.0.1:{receiver.port}/hook"
        config = Config(
            db_path=db,
            metrics_listen="",
            notify=NotifyConfig(webhook=WebhookConfig(url=url, secret=SECRET)),
        )
        hub = events.Hub()
        async with Store.open(db) as writer, start_observers(config, hub) as observers:
            woken = await _delays(writer, hub, receiver, samples, wake=True, tag="w")
            polled = await _delays(writer, hub, receiver, samples, wake=False, tag="p")

            await receiver.stop()
            went_down = time.monotonic()
            written: list[str] = []
            while time.monotonic() - went_down < outage:
                key = f"voicemail:o{len(written)}"
                await writer.add_outbox("voicemail", key, {"call_id": key}, _now())
                hub.publish(events.VoicemailLeft(key, "SUCCESS", True))
                written.append(key)
                await asyncio.sleep(2.0)
            await receiver.start()
            back = time.time()
            all_in = await _wait(lambda: all(k in receiver.arrivals for k in written), 180)
            await asyncio.sleep(5)  # time for a duplicate to show, if there were one
            notified = observers.metrics.render().decode()
        await receiver.stop()
    counts = Counter({k: len(v) for k, v in receiver.arrivals.items() if k in written})
    last = max(receiver.arrivals[k][0] for k in written if k in receiver.arrivals)
    failed = sum(
        float(line.rsplit(" ", 1)[1])
        for line in notified.splitlines()
        if line.startswith('screener_notifications_total{channel="webhook",result="failed"}')
    )
    return {
        "delay_ms_with_event": {
            "median": statistics.median(woken),
            "all": [round(d, 1) for d in woken],
        },
        "delay_ms_poll_only": {
            "median": statistics.median(polled),
            "all": [round(d, 1) for d in polled],
        },
        "outage_s": outage,
        "outage_written": len(written),
        "outage_delivered": len(counts),
        "outage_delivered_twice": sum(1 for c in counts.values() if c > 1),
        "outage_failed_attempts": failed,
        "outage_all_delivered": all_in,
        "outage_last_arrival_after_return_s": round(last - back, 2),
        "bad_signatures": receiver.bad,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.notify", description=__doc__)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--outage", type=float, default=60.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.samples, args.outage)), indent=2))
