"""Part 7: peak memory and speed of ``screener list import`` / ``list export`` at 1 M and 10 M rows.

Each command runs as its own process (``python -m screener``, no ``SCREENER_*`` environment);
its peak RSS is the kernel's ``ru_maxrss`` for that one child (``os.wait4``, in the small
process of ``bench/rusage.py``, so that the benchmark's own peak is not counted in), its CPU time
the child's user + system time. Rows per second are given both per wall-clock second and per CPU
second: on a shared machine the wall figure moves with the load (the load average is recorded
before and after), the CPU figure much less.

    .venv/bin/python -m bench --only transfer                       # 1 M and 10 M rows
    .venv/bin/python -m bench --only transfer --transfer-rows 1000000

``--transfer-baseline REV --transfer-repeats N`` times the import of git revision ``REV`` (its
``screener`` package, extracted with ``git archive``) and of the working tree, alternately, N
times each on the same file, and reports the medians side by side: on a shared machine only a
comparison made in one run, under the same load, says what a change did.
"""

from __future__ import annotations

import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from bench.dataset import CACHE, ensure_csv


def _fresh(path: Path) -> Path:
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        p.unlink(missing_ok=True)
    return path


ROOT = Path(__file__).resolve().parent.parent


def measure(argv: list[str], code: Path | None = None) -> dict[str, float]:
    """Run ``argv`` to the end; its wall time, CPU time and peak RSS (exit status checked).

    ``code``: a folder holding another ``screener`` package to run instead of this tree's (it
    goes first on the path, and the child starts there, not here, so this tree's is not found).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCREENER_")}
    cwd = None
    if code is not None:
        env["PYTHONPATH"] = str(code)
        cwd = code
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "rusage.json"
        # Through bench.rusage: a child of this (by now large) process would report this
        # process's peak RSS as its own (see bench/rusage.py).
        done = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "rusage.py"), str(report), "--", *argv],
            env=env,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            check=False,
        )
        if done.returncode != 0:
            error = done.stderr.decode(errors="replace")
            raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {error[-2000:]}")
        figures: dict[str, float] = json.loads(report.read_text(encoding="utf-8"))
    return figures


def _rates(figures: dict[str, float], rows: int) -> dict[str, float]:
    return {
        **figures,
        "rows_per_s": rows / figures["wall_s"],
        "rows_per_cpu_s": rows / figures["cpu_s"],
    }


def baseline_code(rev: str) -> Path:
    """Revision ``rev``'s ``screener`` package, extracted once into the bench cache."""
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", f"{rev}^{{commit}}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    folder = CACHE / "transfer" / f"code-{commit[:12]}"
    if not (folder / "screener" / "__init__.py").is_file():
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", commit, "screener"],
            check=True,
            capture_output=True,
        ).stdout
        folder.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(folder, filter="data")
    return folder


def _median(runs: list[dict[str, float]], rows: int) -> dict[str, Any]:
    figures = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    return {**_rates(figures, rows), "runs": runs}


def run_one(
    rows: int, log: Any = print, baseline: str | None = None, repeats: int = 1
) -> dict[str, Any]:
    """Import a ``rows``-row CSV into a fresh database, then export it; figures for both.

    With ``baseline``, that revision's import runs too, alternating with this tree's,
    ``repeats`` times each; the figures are medians (each run's are kept under ``runs``).
    """
    csv_path = ensure_csv(rows, log=log)
    work = CACHE / "transfer"
    work.mkdir(parents=True, exist_ok=True)
    db = _fresh(work / f"import-{rows}.db")
    out = work / f"export-{rows}.csv"
    out.unlink(missing_ok=True)
    cli = [sys.executable, "-m", "screener"]
    argv = [*cli, "list", "import", str(csv_path), "--db", str(db)]
    old = baseline_code(baseline) if baseline else None
    result: dict[str, Any] = {"rows": rows, "load_before": os.getloadavg()}
    try:
        runs: list[dict[str, float]] = []
        before: list[dict[str, float]] = []
        for attempt in range(max(1, repeats)):
            if old is not None:
                log(f"transfer: list import of {rows:,} rows at {baseline} ({attempt + 1})")
                before.append(measure(argv, old))
                _fresh(db)
            log(f"transfer: list import of {rows:,} rows ({attempt + 1})")
            runs.append(measure(argv))
            if attempt + 1 < max(1, repeats):
                _fresh(db)  # the last one stays for the export
        result["import"] = _median(runs, rows)
        if old is not None:
            result["baseline"] = {"rev": baseline, "import": _median(before, rows)}
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


def run(
    sizes: list[int], log: Any = print, baseline: str | None = None, repeats: int = 1
) -> dict[str, Any]:
    """:func:`run_one` for each size (the baseline, if any, at the first size only)."""
    return {
        "sizes": [
            run_one(rows, log, baseline if i == 0 else None, repeats if i == 0 else 1)
            for i, rows in enumerate(sizes)
        ]
    }
