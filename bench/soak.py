"""Soak test: the real ``screener run`` against a fake Asterisk whose AMI link keeps dying.

    .venv/bin/python -m bench.soak [--calls 10000] [--disconnect-every 300] [--rate 100]

The generator (``bench.loadgen``'s AMI server) places calls at a steady rate, each as the full
stream of events a call makes (``NOISE`` unrelated events around the ScreenRequest), and plays
the dialplan for each one: a call whose Redirect does not arrive within the hold time takes the
fallback (the generator then raises ``ScreenFallback`` as ``screen-fallback`` does; a Redirect
after that is late and answered with ``ScreenLate``); a call routed to the challenge reports a
random outcome (``ScreenChallenge``), one routed to voicemail a ``ScreenVoicemail``. Every few
hundred calls (at random) the AMI connection is cut (RST or FIN); calls placed while the
screener is away are never seen by it, as with a real Asterisk, and take the fallback.

So every call ends routed or in the fallback, by construction. The invariants (exit 1 if one
fails):

- every call that reached the screener while it was connected was routed within the hold,
  except those in flight when a disconnect happened (hold window overlapping the cut);
- no Redirect for an unknown call, none twice for one call, none after the hold;
- RSS after warm-up grows less than ``--max-growth-mb``;
- the AMI pending-action table (``AMIClient.pending_actions``, logged as ``in_flight`` at each
  disconnect and ``pending`` at shutdown) stays small and ends empty;
- ``screener run`` exits 0 on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

from bench.loadgen import Client, LoadServer, client_env, render, screener_argv
from screener.log import configure_logging
from screener.policy import Entry, ListKind
from screener.store import Store

HOLD = 4.0  # SCREEN_HOLD_SECONDS: the dialplan's wait before its fallback
CONTEXTS = {"screen-staff", "screen-challenge", "screen-voicemail", "screen-reject"}
MAX_IN_FLIGHT = 200  # pending actions at a disconnect above this mean the table leaks
OUTCOMES = ("pass", "fail", "timeout", "hangup")


@dataclass
class Call:
    """One call as the generator's dialplan sees it."""

    uid: str
    number: str
    placed_at: float  # monotonic
    delivered: bool  # written to a logged-in AMI connection
    routed_at: float | None = None
    context: str = ""
    fallback: bool = False
    redirects: int = 0


@dataclass
class Soak:
    """The generator's state and counters."""

    rng: random.Random
    hold: float
    calls: dict[str, Call] = field(default_factory=dict)
    waiting: dict[str, Call] = field(default_factory=dict)  # neither routed nor fallen back
    disconnects: list[float] = field(default_factory=list)
    unknown_redirects: int = 0
    duplicate_redirects: int = 0
    late_redirects: int = 0
    bad_contexts: int = 0
    outcomes_sent: int = 0

    def on_redirect(self, server: LoadServer, channel: str, context: str, now: float) -> None:
        """A Redirect arrived (inside data_received: bookkeeping and writes only)."""
        call = self.calls.get(channel)
        if call is None:
            self.unknown_redirects += 1
            return
        call.redirects += 1
        if context not in CONTEXTS:
            self.bad_contexts += 1
        if call.redirects > 1:
            self.duplicate_redirects += 1
            return
        if call.fallback:
            self.late_redirects += 1  # the dialplan gates it: ScreenLate, back to the fallback
            _send(server, user_event("ScreenLate", call, {"State": "fallback"}))
            return
        call.routed_at = now
        call.context = context
        self.waiting.pop(channel, None)
        if context == "screen-challenge":
            outcome = self.rng.choice(OUTCOMES)
            body = {"Outcome": outcome, "Attempts": "1"}
            _send(server, user_event("ScreenChallenge", call, body))
            self.outcomes_sent += 1
        elif context == "screen-voicemail":
            _send(server, user_event("ScreenVoicemail", call, {"Status": "SUCCESS"}))
            self.outcomes_sent += 1

    def sweep(self, server: LoadServer, now: float) -> None:
        """Calls whose hold ended without a Redirect take the fallback, as the dialplan does."""
        expired = [c for c in self.waiting.values() if now - c.placed_at >= self.hold]
        for call in expired:
            call.fallback = True
            del self.waiting[call.uid]
            _send(server, user_event("ScreenFallback", call, {"Route": "staff"}))


def _send(server: LoadServer, data: bytes) -> bool:
    client = server.client
    if client is None or client.transport is None or client.transport.is_closing():
        return False
    client.transport.write(data)
    return True


def user_event(name: str, call: Call, body: dict[str, str]) -> bytes:
    """A dialplan UserEvent with the call's channel snapshot."""
    lines = [
        ("Event", "UserEvent"),
        ("Privilege", "user,all"),
        ("Timestamp", f"{time.time():.6f}"),
        ("Channel", f"PJSIP/carrier-{call.uid.rsplit('.', 1)[-1]}"),
        ("CallerIDNum", call.number),
        ("CallerIDName", "caller"),
        ("Context", "screen-fallback"),
        ("Exten", "s"),
        ("Priority", "1"),
        ("Uniqueid", call.uid),
        ("Linkedid", call.uid),
        ("UserEvent", name),
        *body.items(),
    ]
    return "".join(f"{k}: {v}\r\n" for k, v in lines).encode() + b"\r\n"


# -- callers ------------------------------------------------------------------------------------

HOSTILE = (
    "'; DROP TABLE calls; --",
    "\x1b[2J\x1b]0;pwned\x07",
    "0312345678\rAction: Originate",  # a bare CR survives AMI framing
    "=cmd|' /C calc'!A0",
    "[/bold]",
    "x" * 300,
)


def callers(rng: random.Random, distinct: int) -> tuple[list[str], list[str], list[str]]:
    """(the caller pool, the mobiles to allow-list, the fixed lines to block)."""
    mobiles = [f"090{rng.randrange(10**8):08d}" for _ in range(distinct)]
    fixed = [f"03{rng.randrange(10**8):08d}" for _ in range(distinct // 2)]
    toll_free = [f"0120{rng.randrange(10**6):06d}" for _ in range(distinct // 10)]
    foreign = [f"+1212555{rng.randrange(10**4):04d}" for _ in range(distinct // 20)]
    e164 = ["+81" + m[1:] for m in mobiles[: distinct // 10]]
    withheld = ["anonymous", "P", "", "C", "unavailable"]
    pool = (
        mobiles * 4 + fixed * 4 + toll_free * 4 + foreign * 4 + e164 * 4 + withheld * 20
    ) + list(HOSTILE) * 5
    rng.shuffle(pool)
    return pool, mobiles[: distinct // 5], fixed[: distinct // 10]


async def make_db(path: Path, allow: list[str], block: list[str]) -> None:
    """A database with some allow entries, some blocks and a toll-free prefix block."""

    def e164(national: str) -> str:
        return "+81" + national[1:]

    async with Store.open(path) as store:
        entries = [Entry(ListKind.ALLOW, e164(n), label="customer") for n in allow]
        entries += [Entry(ListKind.BLOCK, e164(n), label="sales") for n in block]
        entries.append(Entry(ListKind.BLOCK, "+81120", prefix=True, label="toll free"))
        await store.import_entries(entries)


# -- the run ------------------------------------------------------------------------------------


def rss(pid: int) -> int:
    """Resident set size of ``pid`` in bytes (0 if it is gone)."""
    with contextlib.suppress(psutil.Error):
        return int(psutil.Process(pid).memory_info().rss)
    return 0


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    """Run the soak and return its figures."""
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="screener-soak-"))
    db = work / "screener.db"
    pool, allow, block = callers(rng, args.distinct)
    await make_db(db, allow, block)
    state = Soak(rng, args.hold)
    clock = time.monotonic
    # SIGTERM cancels the run like Ctrl-C does, so that `finally` stops screener run by PID.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    async with LoadServer() as server:
        # The generator's dialplan, not loadgen's latency step, answers each Redirect.
        def on_redirect(channel: str, context: str, now: float) -> None:
            state.on_redirect(server, channel, context, clock())

        server.on_redirect = on_redirect  # type: ignore[method-assign]
        env = {
            "SCREENER_DB": str(db),
            "SCREENER_CONFIG": "",
            "SCREENER_LOG_FORMAT": "json",
            "SCREENER_LOG_LEVEL": "info",
            "SCREENER_HOLD_SECONDS": f"{args.hold:g}",
        }
        client = Client("screener run", screener_argv(), client_env(0, {}), work / "screener.log")
        client.env = client_env(server.port, env)
        await client.start(server)
        assert client.proc is not None
        pid = client.proc.pid
        rss_start = rss(pid)
        rss_warm = 0
        peak = rss_start
        warmup = min(args.warmup, args.calls // 3)
        next_cut = rng.randint(args.disconnect_every // 2, args.disconnect_every * 3 // 2)
        started = clock()
        placed = 0
        last_sweep = started
        try:
            while placed < args.calls:
                due = min(args.calls, int((clock() - started) * args.rate) + 1)
                while placed < due:
                    placed += 1
                    uid = f"1732700000.{placed}"
                    number = pool[placed % len(pool)]
                    name = "タナカ ショウジ" if placed % 7 == 0 else "Tele Sales"
                    data = render(
                        uid,
                        f"PJSIP/carrier-{placed:08x}",
                        number,
                        name,
                        "0355550100",
                        f"{time.time():.6f}",
                    )
                    delivered = _send(server, data)
                    call = Call(uid, number, clock(), delivered)
                    state.calls[uid] = call
                    state.waiting[uid] = call
                    if placed == warmup:
                        rss_warm = rss(pid)
                    if args.disconnect_every and placed >= next_cut:
                        cut = server.client
                        if cut is not None and cut.transport is not None:
                            if rng.random() < 0.5:
                                cut.transport.abort()  # RST
                            else:
                                cut.transport.close()  # FIN
                            state.disconnects.append(clock())
                        next_cut = placed + rng.randint(
                            args.disconnect_every // 2, args.disconnect_every * 3 // 2
                        )
                now = clock()
                if now - last_sweep >= 0.05:
                    state.sweep(server, now)
                    peak = max(peak, rss(pid)) if placed % 50 == 0 else peak
                    last_sweep = now
                await asyncio.sleep(max(0.0, started + placed / args.rate - clock()))
            # Let every hold end (bounded): then each call is routed or in the fallback.
            end_by = clock() + args.hold + 2.0
            while state.waiting and clock() < end_by:
                state.sweep(server, clock())
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # outcome events of the last calls
            rss_end = rss(pid)
            peak = max(peak, rss_end, client.hwm() or 0)
            elapsed = clock() - started
        finally:
            code = await client.stop()
    lines = _log_lines(work / "screener.log")
    return _report(args, state, lines, code, rss_start, rss_warm, rss_end, peak, elapsed, work)


def _log_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            value = json.loads(line)
            if isinstance(value, dict):
                lines.append(value)
    return lines


def _report(
    args: argparse.Namespace,
    state: Soak,
    lines: list[dict[str, Any]],
    code: int | None,
    rss_start: int,
    rss_warm: int,
    rss_end: int,
    peak: int,
    elapsed: float,
    work: Path,
) -> dict[str, Any]:
    calls = list(state.calls.values())
    routed = [c for c in calls if c.routed_at is not None and not c.fallback]
    fallback = [c for c in calls if c.fallback]
    unresolved = [c for c in calls if c.routed_at is None and not c.fallback]
    offline = [c for c in fallback if not c.delivered]

    def cut_during_hold(call: Call) -> bool:
        return any(call.placed_at <= t <= call.placed_at + state.hold for t in state.disconnects)

    in_flight = [c for c in fallback if c.delivered and cut_during_hold(c)]
    unexplained = [c for c in fallback if c.delivered and not cut_during_hold(c)]
    latencies = sorted(
        (c.routed_at - c.placed_at) * 1000.0 for c in routed if c.routed_at is not None
    )
    in_flight_at_cut = [int(e.get("in_flight", 0)) for e in lines if e["event"] == "ami.disconnect"]
    closed = next((e for e in lines if e["event"] == "ami.closed"), {})
    stopped = next((e for e in lines if e["event"] == "screener stopped"), {})
    errors = [e for e in lines if e.get("level") in ("error", "critical")]
    growth = (rss_end - rss_warm) / 2**20
    result: dict[str, Any] = {
        "calls": len(calls),
        "routed": len(routed),
        "fallback": len(fallback),
        "fallback_offline": len(offline),
        "fallback_in_flight_at_cut": len(in_flight),
        "fallback_unexplained": len(unexplained),
        "unresolved": len(unresolved),
        "disconnects": len(state.disconnects),
        "reconnects": closed.get("reconnects"),
        "late_redirects": state.late_redirects,
        "duplicate_redirects": state.duplicate_redirects,
        "unknown_redirects": state.unknown_redirects,
        "bad_contexts": state.bad_contexts,
        "outcome_events": state.outcomes_sent,
        "p50_ms": _pct(latencies, 50),
        "p99_ms": _pct(latencies, 99),
        "max_ms": latencies[-1] if latencies else None,
        "rss_start_mb": rss_start / 2**20,
        "rss_warm_mb": rss_warm / 2**20,
        "rss_end_mb": rss_end / 2**20,
        "rss_growth_mb": growth,
        "rss_peak_mb": peak / 2**20,
        "pending_in_flight_at_cuts": in_flight_at_cut,
        "pending_at_shutdown": closed.get("pending"),
        "ami_timeouts": closed.get("timeouts"),
        "event_drops": closed.get("drops"),
        "screener_requests": stopped.get("requests"),
        "screener_routed": stopped.get("routed"),
        "screener_late": stopped.get("late"),
        "error_log_lines": len(errors),
        "exit_code": code,
        "seconds": elapsed,
        "log": str(work / "screener.log"),
    }
    failures = []
    if unresolved or len(routed) + len(fallback) != len(calls):
        failures.append("a call ended neither routed nor in the fallback")
    if unexplained:
        failures.append(f"{len(unexplained)} calls reached the connected screener unrouted")
    if state.late_redirects or state.duplicate_redirects or state.unknown_redirects:
        failures.append("late, duplicate or unknown Redirects")
    if state.bad_contexts:
        failures.append("Redirect to a context outside the contract")
    if growth > args.max_growth_mb:
        failures.append(f"RSS grew {growth:.1f} MB after warm-up (> {args.max_growth_mb} MB)")
    if closed.get("pending") != 0 or max(in_flight_at_cut, default=0) > MAX_IN_FLIGHT:
        failures.append("the AMI pending-action table did not stay small and end empty")
    if not closed or not stopped:
        failures.append("no shutdown counters in the log (ami.closed / screener stopped)")
    if len(in_flight_at_cut) < len(state.disconnects):
        failures.append("a disconnect went unnoticed by the screener")
    if errors:
        failures.append(f"{len(errors)} error lines in the screener's log")
    if code != 0:
        failures.append(f"screener run exited {code}")
    result["failures"] = failures
    return result


def _pct(values: list[float], pct: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, int(len(values) * pct / 100))]


def _print(result: dict[str, Any]) -> None:
    table = Table("figure", "value", title="screener soak")

    def fmt(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.2f}"
        if isinstance(value, list):
            return f"{len(value)} cuts, max {max(value, default=0)}, last {value[-3:]}"
        return str(value)

    for key, value in result.items():
        if key != "failures":
            table.add_row(key, fmt(value))
    console = Console()
    console.print(table)
    for failure in result["failures"]:
        console.print(f"[red]FAIL[/red] {failure}", markup=True)
    if not result["failures"]:
        console.print("[green]all invariants hold[/green]")


def _args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, default=10_000, help="calls to place (default 10000)")
    p.add_argument(
        "--disconnect-every", type=int, default=300, help="cut AMI about every N calls (0: never)"
    )
    p.add_argument("--rate", type=float, default=100.0, help="calls per second (default 100)")
    p.add_argument("--hold", type=float, default=HOLD, help="the dialplan's hold, seconds")
    p.add_argument("--warmup", type=int, default=1000, help="calls before the warm RSS sample")
    p.add_argument("--distinct", type=int, default=2000, help="size of the caller pool")
    p.add_argument("--max-growth-mb", type=float, default=16.0, help="RSS budget after warm-up")
    p.add_argument("--seed", type=int, default=6)
    p.add_argument("--json", type=Path, help="also write the figures as JSON to this file")
    p.add_argument("--keep", action="store_true", help="keep the work folder (database, log)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the soak, print the table; 0 if every invariant holds."""
    args = _args(argv)
    configure_logging("console", "warning")  # the store's info lines are not the report
    result = asyncio.run(soak(args))
    if not (args.keep or result["failures"]):
        shutil.rmtree(Path(result["log"]).parent, ignore_errors=True)
        result["log"] = "(removed; --keep keeps it)"
    _print(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
