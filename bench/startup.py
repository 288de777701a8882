"""Start-up at millions of entries: ``screener check`` and ``screener run``, as subprocesses.

- ``screener check NUMBER`` wall time (exec to exit) on the cached N-entry database and on an
  empty one, ``repeats`` times each, interleaved; the figure is the ratio of the medians.
- ``screener run`` from exec to screening: the fake AMI of ``tests/fakeami.py`` on 127.0.0.1
  accepts the login; one ScreenRequest is sent as soon as the screener has logged in, and the
  clock stops when its Redirect arrives (so "logged in" and "screening" are both measured).

Wall time on a shared machine includes waiting for a core; CPU time (user + system, from
``wait4`` and ``/proc/<pid>/stat``) is reported beside it. The OS page cache is warm (each
database is opened once first): a cold start after a reboot also pays for reading the pages a
lookup touches, which no start-up design avoids.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from screener.store import Store
from tests.fakeami import FakeAMI, encode

SECRET = "bench-startup-secret"  # noqa: S105  # the fake AMI's own, for this bench only
NUMBER = "0312345678"


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCREENER_")}
    env.update(SCREENER_CONFIG="", SCREENER_LOG_LEVEL="warning", **extra)
    return env


def _check_once(db: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of one ``screener check``: CPU time shows through a busy machine."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "screener", "check", NUMBER, "--db", str(db)],
        env=_env({}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"screener check exited {proc.returncode}")
    return wall, usage.ru_utime + usage.ru_stime


def _cpu_of(pid: int) -> float:
    """CPU seconds (user + system) a running process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _request(call_id: str) -> dict[str, str]:
    return {
        "Event": "UserEvent",
        "Privilege": "user,all",
        "Timestamp": f"{time.time():.6f}",
        "Channel": "PJSIP/trunk-00000001",
        "CallerIDNum": "09012345678",
        "CallerIDName": "",
        "Context": "from-trunk",
        "Exten": "0355550100",
        "Uniqueid": call_id,
        "UserEvent": "ScreenRequest",
        "Version": "1",
        "Tainted": "no",
        "Hold": "4",
    }


async def _run_once(db: Path) -> dict[str, float]:
    async with FakeAMI(secret=SECRET) as fake:
        env = _env(
            {
                "SCREENER_DB": str(db),
                "SCREENER_AMI_HOST": fake.host,
                "SCREENER_AMI_PORT": str(fake.port),
                "SCREENER_AMI_USER": fake.username,
                "SCREENER_AMI_SECRET": SECRET,
            }
        )
        start = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "screener",
            "run",
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            await fake.wait_until(lambda: bool(fake.authenticated), 60)
            logged_in = time.perf_counter() - start
            # Re-sent until answered: a request that lands before the event loop consumes is
            # still queued, but keep the measurement honest if one were dropped.
            call = 0
            while not fake.actions("Redirect"):
                call += 1
                for conn in fake.authenticated:
                    conn.write(encode(_request(f"1700000000.{call}")))
                try:
                    await fake.wait_until(lambda: bool(fake.actions("Redirect")), 0.05)
                except TimeoutError:
                    continue
            screening = time.perf_counter() - start
            cpu = _cpu_of(proc.pid)
        finally:
            proc.terminate()
            await proc.wait()
    return {"logged_in_s": logged_in, "screening_s": screening, "screening_cpu_s": cpu}


async def _empty_db(folder: Path) -> Path:
    path = folder / "empty.db"
    async with Store.open(path):
        pass
    return path


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


async def run(db: Path, size: int, repeats: int = 7) -> dict[str, Any]:
    """Time ``screener check`` (big vs empty) and ``screener run`` start-up on ``db``."""
    with tempfile.TemporaryDirectory(prefix="screener-startup-") as tmp:
        empty = await _empty_db(Path(tmp))
        for warm in (db, empty):
            await asyncio.to_thread(_check_once, warm)
        big: list[tuple[float, float]] = []
        small: list[tuple[float, float]] = []
        for _ in range(repeats):
            big.append(await asyncio.to_thread(_check_once, db))
            small.append(await asyncio.to_thread(_check_once, empty))
        runs = [await _run_once(db) for _ in range(max(3, repeats // 2))]
        empty_runs = [await _run_once(empty) for _ in range(max(3, repeats // 2))]
    check_big, check_empty = _median([w for w, _ in big]), _median([w for w, _ in small])
    cpu_big, cpu_empty = _median([c for _, c in big]), _median([c for _, c in small])
    return {
        "entries": size,
        "repeats": repeats,
        "check_big_s": check_big,
        "check_empty_s": check_empty,
        "check_ratio": check_big / check_empty,
        "check_big_cpu_s": cpu_big,
        "check_empty_cpu_s": cpu_empty,
        "check_cpu_ratio": cpu_big / cpu_empty,
        "check_big_all": big,
        "check_empty_all": small,
        "run_logged_in_s": _median([r["logged_in_s"] for r in runs]),
        "run_screening_s": _median([r["screening_s"] for r in runs]),
        "run_screening_cpu_s": _median([r["screening_cpu_s"] for r in runs]),
        "run_empty_screening_s": _median([r["screening_s"] for r in empty_runs]),
        "runs": runs,
    }


def main() -> None:
    """``python -m bench.startup DB [SIZE]``: the figures for one database, as JSON."""
    import json

    db = Path(sys.argv[1])
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    print(json.dumps(asyncio.run(run(db, size)), indent=2))


if __name__ == "__main__":
    main()
