"""Part 2's before/after, interleaved: ``screener run`` with and without its journal, A B A B.

``.venv/bin/python -m bench.agentab [--rate 100] [--seconds 5] [--rounds 2] [--info]
[--baseline DIR]`` starts the floor, ``screener run`` (journal) and ``screener run`` with
``SCREENER_JOURNAL=off`` (each record's commit waited for, as before the journal) one after the
other, ``--rounds`` times, against the part's generator (``bench/loadgen.py``) on the cached 10 M
database, and prints for each the request → Redirect p50 / p99 and the CPU time per call (user +
system of the client process over the step, psutil). The screener runs log at warning level;
``--info`` adds a ``journal_info`` run at production's level (info, one JSON line per call).
``--baseline DIR`` adds the same journal run(s) of the code checked out in DIR (``git archive
COMMIT | tar -x -C DIR``), labelled ``base_*``: before and after side by side in one run.
Interleaving the runs spreads a loaded machine's noise over both sides. The warm-up (8 s at
50/s) outlasts the service's start-up count of the lists (5 s after the start).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import psutil

from bench import dataset, loadgen

ROOT = Path(__file__).resolve().parent.parent


async def _one(label: str, argv: list[str], env: dict[str, str], rate: int, seconds: float,
               numbers: list[str], cwd: Path | None = None) -> dict[str, Any]:  # fmt: skip
    logs = dataset.CACHE / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    async with loadgen.LoadServer() as server:
        client = loadgen.Client(
            label, argv, loadgen.client_env(server.port, env), logs / f"ab-{label}.log", cwd=cwd
        )
        await client.start(server)
        try:
            await server.run_step(50, 8.0, numbers)
            assert client.proc is not None
            proc = psutil.Process(client.proc.pid)
            before, threads_before = proc.cpu_times(), _main_thread(proc)
            step = await server.run_step(rate, seconds, numbers)
            after, threads_after = proc.cpu_times(), _main_thread(proc)
        finally:
            await client.stop()
    cpu = (after.user - before.user) + (after.system - before.system)
    report = step.report()
    calls = max(1, step.sent)
    report["cpu_ms_per_call"] = cpu / calls * 1000.0
    report["system_ms_per_call"] = (after.system - before.system) / calls * 1000.0
    # The event loop's own thread (the process's first): what the other threads (the
    # database writer, the reader's) cost is the rest.
    report["loop_cpu_ms_per_call"] = (threads_after - threads_before) / calls * 1000.0
    return report


def _main_thread(proc: psutil.Process) -> float:
    """User + system seconds of the process's main thread (its id is the process's)."""
    for thread in proc.threads():
        if thread.id == proc.pid:
            return float(thread.user_time + thread.system_time)
    return 0.0


async def run(
    rate: int,
    seconds: float,
    rounds: int,
    entries: int,
    *,
    info: bool = False,
    baseline: Path | None = None,
) -> list[dict[str, Any]]:
    """Every client, ``rounds`` times in turn; one report per run."""
    db, _ = dataset.ensure_db(entries)
    numbers = loadgen.shuffled(dataset.callers(entries, 50_000, seed=11))
    quiet = {"SCREENER_LOG_LEVEL": "warning", "SCREENER_DB": str(db)}
    # Production's logging: info, JSON lines (the log is a file, not a terminal).
    loud = {"SCREENER_LOG_LEVEL": "info", "SCREENER_LOG_FORMAT": "json", "SCREENER_DB": str(db)}
    here = ROOT
    plan: list[tuple[str, list[str], dict[str, str], Path | None]] = [
        ("floor", loadgen.floor_argv(), {}, None)
    ]
    for prefix, cwd in [("", here)] + ([("base_", baseline)] if baseline else []):
        plan.append((f"{prefix}journal", loadgen.screener_argv(), quiet, cwd))
        if info:
            plan.append((f"{prefix}journal_info", loadgen.screener_argv(), loud, cwd))
    plan.append(
        ("commit_first", loadgen.screener_argv(), {**quiet, "SCREENER_JOURNAL": "off"}, here)
    )
    out = []
    for n in range(rounds):
        for label, argv, env, cwd in plan:
            if label != "floor":
                dataset.reset_calls(db)
            report = await _one(label, argv, env, rate, seconds, numbers, cwd)
            report.update(label=label, round=n)
            print(
                f"round {n} {label:>17}: p50 {report['p50_ms']:.3f} ms, p99"
                f" {report['p99_ms']:.3f} ms, CPU {report['cpu_ms_per_call']:.3f} ms/call"
                f" (loop thread {report['loop_cpu_ms_per_call']:.3f}, system"
                f" {report['system_ms_per_call']:.3f}), lost {report['lost']}",
                flush=True,
            )
            out.append(report)
    return out


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.agentab", description=__doc__)
    p.add_argument("--rate", type=int, default=100)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--entries", type=int, default=10_000_000)
    p.add_argument("--info", action="store_true", help="also a run logging at info (JSON)")
    p.add_argument("--baseline", type=Path, help="also the journal run(s) of the code in DIR")
    args = p.parse_args()
    asyncio.run(
        run(
            args.rate,
            args.seconds,
            args.rounds,
            args.entries,
            info=args.info,
            baseline=args.baseline.resolve() if args.baseline else None,
        )
    )


if __name__ == "__main__":
    main()
