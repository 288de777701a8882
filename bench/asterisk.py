"""Part 3: the delay the screener adds to call set-up, on the real Asterisk sandbox.

For each call we take Asterisk's own clock (``timestampevents``): from the ``Newexten`` of the
call's first dialplan step to the ``DialBegin`` of the staff Dial. Three dialplans, calls
interleaved round-robin at a steady rate so that they share the machine's noise:

- ``screened``: the shipped ``[from-trunk]`` with the real ``screener run`` deciding (a known
  mobile caller → staff);
- ``direct``: a context that goes straight to ``route-staff`` (the floor: no screening at all);
- ``blacklist``: Asterisk's built-in check, ``DB_EXISTS(blacklist/<number>)`` on an AstDB family
  of ``--astdb`` numbers (1 million by default), then ``route-staff``.

The two comparison contexts are added at run time with ``DialplanExtensionAdd`` through the
sandbox's test-only AMI user; the AstDB family is written straight into the sandbox PBX's
``astdb.sqlite3`` (SQLite handles the concurrency with Asterisk's own connection).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.stats import ratio, summary
from screener.ami import AMIClient, Event
from tests.probe import (
    Probe,
    SandboxError,
    SandboxInfo,
    ScreenerProcess,
    new_call_id,
    probe_client,
    sandbox_session,
)

DID = "0312345678"
CALLER = "09012345678"  # a mobile: the screener sends it to staff

CONTEXTS = {
    "direct": [("Goto", "route-staff,s,1")],
    "blacklist": [
        ("GotoIf", "${DB_EXISTS(blacklist/${CALLERID(num)})}?route-voicemail,s,1"),
        ("Goto", "route-staff,s,1"),
    ],
}
ENTRY_CONTEXT = {"screened": "from-trunk", "direct": "bench-direct", "blacklist": "bench-blacklist"}


async def _fill_astdb(ami: AMIClient, count: int, window: int = 500) -> float:
    """Put ``count`` numbers into the PBX's AstDB family ``blacklist``; returns seconds.

    Through AMI ``DBPut``, ``window`` actions in flight at a time: Asterisk keeps its AstDB
    inside an open transaction, so the file cannot be written from outside while it runs.
    """
    started = time.perf_counter()
    for first in range(0, count, window):
        await asyncio.gather(
            *(
                ami.send(
                    {"Action": "DBPut", "Family": "blacklist", "Key": f"0120{n:06d}", "Val": "1"},
                    timeout=30,
                )
                for n in range(first, min(first + window, count))
            )
        )
    return time.perf_counter() - started


async def _add_contexts(ami: AMIClient) -> None:
    # DB_EXISTS is func_db's, which the shipped modules.conf does not load: without it the
    # blacklist context would compare against an empty lookup.
    await ami.send({"Action": "ModuleLoad", "Module": "func_db.so", "LoadType": "load"}, timeout=10)
    for name, steps in CONTEXTS.items():
        for priority, (app, data) in enumerate(steps, start=1):
            await ami.send(
                {
                    "Action": "DialplanExtensionAdd",
                    "Context": f"bench-{name}",
                    "Extension": "_X.",
                    "Priority": str(priority),
                    "Application": app,
                    "ApplicationData": data,
                    "Replace": "yes",
                },
                timeout=5,
            )


def _stamp(event: Event) -> float:
    return float(event.get("Timestamp") or "nan")


async def _measure(
    info: SandboxInfo, per_variant: int, rate: float, astdb: int
) -> tuple[float, dict[str, list[float]]]:
    delays: dict[str, list[float]] = {name: [] for name in ENTRY_CONTEXT}
    async with probe_client(info.pbx) as pbx, Probe(pbx) as probe:
        fill_s = await _fill_astdb(pbx, astdb)
        await _add_contexts(pbx)
        plan = [name for _ in range(per_variant) for name in ENTRY_CONTEXT]
        calls: list[tuple[str, str]] = []
        for name in plan:
            call_id = new_call_id()
            await pbx.send(
                {
                    "Action": "Originate",
                    "Channel": f"Local/{DID}@{ENTRY_CONTEXT[name]}",
                    "CallerID": f"<{CALLER}>",
                    "Application": "Wait",
                    "Data": "1",
                    "Async": "true",
                    "ChannelId": call_id[:-1] + "a",
                    "OtherChannelId": call_id,
                },
                timeout=5,
            )
            calls.append((name, call_id))
            await asyncio.sleep(1 / rate)
        for name, call_id in calls:
            first = await probe.pbx.wait_for(
                lambda e, c=call_id: (
                    e.name.lower() == "newexten"
                    and e.get("Uniqueid") == c
                    and e.get("Priority") == "1"
                ),
                15,
            )
            dial = await probe.pbx.wait_for(
                lambda e, c=call_id: e.name.lower() == "dialbegin" and e.get("Uniqueid") == c,
                15,
            )
            delays[name].append((_stamp(dial) - _stamp(first)) * 1000.0)
        await asyncio.sleep(2)
        await probe.hangup_all()
    return fill_s, delays


def run(per_variant: int = 60, rate: float = 5.0, astdb: int = 1_000_000) -> dict[str, Any]:
    """Bring the sandbox up, run the screener, measure, tear down; returns the figures."""
    tmp = Path(tempfile.mkdtemp(prefix="screener-bench-ast-"))
    try:
        with sandbox_session(with_carrier=True) as info:
            # Production settings: info level, JSON lines (and "screener running" to wait for).
            screener = ScreenerProcess(
                info.screener_env(), tmp / "screener.db", tmp / "screener.log"
            )
            try:
                screener.start()
                if screener.find_log("screener running", 20) is None:
                    return {"error": f"screener did not start: {screener.tail(500)}"}
                fill_s, delays = asyncio.run(_measure(info, per_variant, rate, astdb))
            finally:
                screener.stop()
    except SandboxError as exc:
        return {"error": str(exc)[-500:]}
    stats = {name: summary(values) for name, values in delays.items()}
    return {
        "calls_per_variant": per_variant,
        "rate_per_s": rate,
        "astdb_entries": astdb,
        "astdb_fill_s": fill_s,
        "stats": stats,
        "added_vs_direct_p50_ms": stats["screened"]["p50_ms"] - stats["direct"]["p50_ms"],
        "screened_vs_blacklist_p50": ratio(
            stats["screened"]["p50_ms"], stats["blacklist"]["p50_ms"]
        ),
    }
