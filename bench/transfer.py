"""Part 5: peak memory and speed of ``screener list import`` / ``list export`` at 1 M and 10 M rows.

Each command runs as its own process (``python -m screener``, no ``SCREENER_*`` environment);
its peak RSS is the kernel's ``ru_maxrss`` for that one child (``os.wait4``), its CPU time the
child's user + system time. Rows per second are given both per wall-clock second and per CPU
second: on a shared machine the wall figure moves with the load (the load average is recorded
before and after), the CPU figure much less.

    .venv/bin/python -m bench --only transfer                       # 1 M and 10 M rows
    .venv/bin/python -m bench --only transfer --transfer-rows 1000000
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.dataset import CACHE, ensure_csv


def _fresh(path: Path) -> Path:
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        p.unlink(missing_ok=True)
    return path


def measure(argv: list[str]) -> dict[str, float]:
    """Run ``argv`` to the end; its wall time, CPU time and peak RSS (exit status checked)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCREENER_")}
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # wait4 gives this child's own rusage (RUSAGE_CHILDREN would be the max over all children).
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    error = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {error[-2000:]}")
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,  # Linux reports kilobytes
    }


def _rates(figures: dict[str, float], rows: int) -> dict[str, float]:
    return {
        **figures,
        "rows_per_s": rows / figures["wall_s"],
        "rows_per_cpu_s": rows / figures["cpu_s"],
    }


def run_one(rows: int, log: Any = print) -> dict[str, Any]:
    """Import a ``rows``-row CSV into a fresh database, then export it; figures for both."""
    csv_path = ensure_csv(rows, log=log)
    work = CACHE / "transfer"
    work.mkdir(parents=True, exist_ok=True)
    db = _fresh(work / f"import-{rows}.db")
    out = work / f"export-{rows}.csv"
    out.unlink(missing_ok=True)
    cli = [sys.executable, "-m", "screener"]
    result: dict[str, Any] = {"rows": rows, "load_before": os.getloadavg()}
    try:
        log(f"transfer: list import of {rows:,} rows")
        result["import"] = _rates(
            measure([*cli, "list", "import", str(csv_path), "--db", str(db)]), rows
        )
        log(f"transfer: list export of {rows:,} rows")
        result["export"] = _rates(
            measure([*cli, "list", "export", str(out), "--db", str(db)]), rows
        )
        with out.open("rb") as fh:
            result["exported_rows"] = sum(1 for _ in fh) - 1
    finally:
        out.unlink(missing_ok=True)
        _fresh(db)
    result["load_after"] = os.getloadavg()
    return result


def run(sizes: list[int], log: Any = print) -> dict[str, Any]:
    """:func:`run_one` for each size."""
    return {"sizes": [run_one(rows, log) for rows in sizes]}
