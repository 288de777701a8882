"""Sample a running ``screener run`` under the agent's load with py-spy: where its CPU goes.

``.venv/bin/python -m bench.profile [--rate 300] [--seconds 8] [--entries 10000000]`` runs the
agent part's generator (``bench/loadgen.py``) against the real ``screener run`` at one rate,
attaches ``py-spy record`` (the bench extra) to the screener's PID for ``--seconds``, and
prints the functions with the most samples, by own time and by time including callees (the
flame graph's raw form is kept as ``bench-results/profile-<rate>.txt``).

``--decision N`` profiles N in-process decisions (part 1's ``screen()``) with pyinstrument.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import shutil
import sys
from pathlib import Path
from typing import Any

from bench import dataset, loadgen

ROOT = Path(__file__).resolve().parent.parent


def _summarise(raw: Path, top: int) -> dict[str, Any]:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1] for f in stack.split(";") if f]
        if frames:
            own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    return {
        "samples": total,
        "own": [(f, round(100 * n / max(1, total), 1)) for f, n in own.most_common(top)],
        "inclusive": [
            (f, round(100 * n / max(1, total), 1)) for f, n in inclusive.most_common(top)
        ],
    }


async def profile(
    rate: int, seconds: float, entries: int, out: Path, *, gil: bool = False
) -> dict[str, Any]:
    """Run the load at ``rate`` and sample the screener for ``seconds``; the summary."""
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy is not installed (scripts/bootstrap installs the bench extra)")
    db, _ = dataset.ensure_db(entries, log=lambda *a: print(*a, file=sys.stderr))
    dataset.reset_calls(db)
    numbers = loadgen.shuffled(dataset.callers(entries, 50_000, seed=11))
    out.parent.mkdir(parents=True, exist_ok=True)
    client = loadgen.Client(
        "screener",
        loadgen.screener_argv(),
        {"SCREENER_LOG_LEVEL": "warning", "SCREENER_DB": str(db)},
        dataset.CACHE / "logs" / "profile.log",
    )
    client.log_path.parent.mkdir(parents=True, exist_ok=True)
    holder: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def sampled() -> Any:
        assert client.proc is not None
        proc = await asyncio.create_subprocess_exec(
            spy,
            "record",
            "--pid",
            str(client.proc.pid),
            "--duration",
            str(int(seconds)),
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            str(out),
            *(["--gil"] if gil else []),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        holder["spy"] = proc
        yield
        await proc.wait()

    run = await loadgen.run_client(client, [rate], seconds, numbers, during=sampled)
    dataset.reset_calls(db)
    result = _summarise(out, 25) if out.exists() else {"error": "no samples"}  # noqa: ASYNC240  # after the run
    result["step"] = run["steps"][0] if run["steps"] else None
    return result


async def profile_decision(entries: int, count: int) -> str:
    """pyinstrument over ``count`` decisions (``screen()``, the service's reader), as text."""
    from pyinstrument import Profiler

    from bench.decision import DID, NOW, REGION, _clear
    from screener.policy import Policy
    from screener.screening import screen
    from screener.store import Store

    db = dataset.db_path(entries)
    raws = dataset.callers(entries, count, seed=23)
    policy = Policy()
    async with Store.open(db, readonly=True, loop_lookups=True) as store:
        for raw in raws:  # warm the page cache, then forget the parsed numbers
            await screen(store, raw, policy, REGION, NOW, DID)
        _clear()
        profiler = Profiler(interval=0.0002, async_mode="disabled")
        profiler.start()
        for raw in raws:
            await screen(store, raw, policy, REGION, NOW, DID)
        profiler.stop()
    return str(profiler.output_text(unicode=False, color=False))


def main() -> None:
    """Parse the options, profile, print."""
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    p.add_argument(
        "--decision", type=int, metavar="N", help="profile N in-process decisions instead"
    )
    p.add_argument("--rate", type=int, default=300)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--entries", type=int, default=10_000_000)
    p.add_argument("--gil", action="store_true", help="only samples holding the GIL")
    args = p.parse_args()
    if args.decision:
        print(asyncio.run(profile_decision(args.entries, args.decision)))
        return
    out = ROOT / "bench-results" / f"profile-{args.rate}.txt"
    result = asyncio.run(profile(args.rate, args.seconds, args.entries, out, gil=args.gil))
    step = result.get("step") or {}
    print(f"{args.rate}/s: p50 {step.get('p50_ms')} ms, p99 {step.get('p99_ms')} ms")
    print(f"samples: {result.get('samples')}; by own time:")
    for frame, share in result.get("own", []):
        print(f"  {share:5.1f}%  {frame}")
    print("including callees:")
    for frame, share in result.get("inclusive", []):
        print(f"  {share:5.1f}%  {frame}")


if __name__ == "__main__":
    main()
