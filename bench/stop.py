"""How long ``screener run`` takes to stop on SIGTERM while a count of the lists is under way.

The service counts its lists twice in the background: the metrics' count by kind and source
as the observers start (then every 60 s), and the start-up count 5 s after it began screening
(``COUNT_DELAY``). On tens of millions of entries each takes seconds; a SIGTERM that lands
meanwhile must not wait for it. ``screener run`` is started against the fake AMI of
``tests/fakeami.py`` on 127.0.0.1, and once it has logged in, SIGTERM (by PID) is sent
``--after`` seconds later; the figure is the time from the signal to the process's exit, with
its CPU time. ``--code DIR`` (repeatable) runs the package found in DIR instead of this tree's
(for example ``git archive <commit> screener | tar -x -C DIR``), interleaved A B A B.

    python -m bench.stop DB --after 0.3 --after 5.3 --rounds 3 --code /tmp/base --code .
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tests.fakeami import FakeAMI

SECRET = "bench-stop-secret"  # noqa: S105  # the fake AMI's own, for this bench only


async def _stop_once(db: Path, code: Path, after: float) -> tuple[float, float]:
    """(seconds from SIGTERM to exit, CPU seconds of the whole run); ``code`` is absolute."""
    async with FakeAMI(secret=SECRET) as fake:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCREENER_")}
        env.update(
            PYTHONPATH=str(code),
            SCREENER_CONFIG="",
            SCREENER_LOG_LEVEL="warning",
            SCREENER_METRICS_LISTEN="",
            SCREENER_DB=str(db),
            SCREENER_AMI_HOST=fake.host,
            SCREENER_AMI_PORT=str(fake.port),
            SCREENER_AMI_USER=fake.username,
            SCREENER_AMI_SECRET=SECRET,
        )
        proc = subprocess.Popen(  # noqa: ASYNC220 -- waited for with wait4, by PID
            [sys.executable, "-m", "screener", "run"], env=env, cwd=str(code)
        )
        try:
            await fake.wait_until(lambda: bool(fake.authenticated), 120)
            await asyncio.sleep(after)
            signalled = time.perf_counter()
            proc.terminate()
            _, status, usage = await asyncio.to_thread(os.wait4, proc.pid, 0)
            stopped = time.perf_counter() - signalled
            proc.returncode = os.waitstatus_to_exitcode(status)
        finally:
            if proc.returncode is None:
                proc.kill()
                proc.wait()
    return stopped, usage.ru_utime + usage.ru_stime


async def run(db: Path, codes: list[Path], afters: list[float], rounds: int) -> None:
    """Print, for each SIGTERM delay and each code tree, the median stop time of ``rounds``."""
    print(f"{db}  load average {os.getloadavg()[0]:.2f} at the start")
    for after in afters:
        stops: dict[Path, list[tuple[float, float]]] = {code: [] for code in codes}
        for _ in range(rounds):
            for code in codes:
                stops[code].append(await _stop_once(db, code, after))
        for code, results in stops.items():
            walls = sorted(w for w, _ in results)
            cpu = statistics.median(c for _, c in results)
            print(
                f"SIGTERM {after:4.1f} s after login  {code!s:30}"
                f"  stop median {statistics.median(walls):6.2f} s"
                f"  (all {', '.join(f'{w:.2f}' for w in walls)})  CPU of the run {cpu:.2f} s"
            )
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


def main() -> None:
    """``python -m bench.stop DB [--after S]... [--rounds N] [--code DIR]...``."""
    parser = argparse.ArgumentParser(prog="python -m bench.stop")
    parser.add_argument("db", type=Path)
    parser.add_argument("--after", type=float, action="append")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--code", type=Path, action="append")
    args = parser.parse_args()
    codes = [c.absolute() for c in args.code or [Path()]]
    asyncio.run(run(args.db, codes, args.after or [0.3], args.rounds))


if __name__ == "__main__":
    main()
