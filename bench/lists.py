"""Part 4: ``screener list import`` and ``list export`` of a million rows, end to end and alone."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.dataset import CACHE
from screener.policy import ListKind
from screener.store import Store
from screener.transfer import read_csv


def _fresh(path: Path) -> Path:
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        p.unlink(missing_ok=True)
    return path


def _cli(*args: str, db: Path) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCREENER_")}
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "screener", *args, "--db", str(db)],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=300,
    )
    return time.perf_counter() - start


async def run(csv_path: Path, rows: int) -> dict[str, Any]:
    """Import ``csv_path`` through the CLI and through the library; export it again."""
    work = CACHE / "lists"
    work.mkdir(parents=True, exist_ok=True)
    cli_db = _fresh(work / "cli-import.db")
    seconds = _cli("list", "import", str(csv_path), db=cli_db)
    result: dict[str, Any] = {
        "rows": rows,
        "cli_import_s": seconds,
        "cli_import_rows_per_s": rows / seconds,
    }

    start = time.perf_counter()
    parsed = read_csv(
        csv_path,
        region="JP",
        default_kind=ListKind.BLOCK,
        source="bench",
        now=dt.datetime.now(dt.UTC),
    )
    parse_s = time.perf_counter() - start
    assert not parsed.rejects, parsed.rejects[:3]
    lib_db = _fresh(work / "lib-import.db")
    async with Store.open(lib_db) as store:
        start = time.perf_counter()
        await store.import_entries(parsed.entries)
        store_s = time.perf_counter() - start
    result.update(
        parse_s=parse_s,
        parse_rows_per_s=rows / parse_s,
        store_import_s=store_s,
        store_import_rows_per_s=rows / store_s,
    )
    del parsed

    out = work / "export.csv"
    out.unlink(missing_ok=True)
    seconds = _cli("list", "export", str(out), db=cli_db)
    exported = sum(1 for _ in out.open(encoding="utf-8")) - 1
    result.update(
        cli_export_s=seconds,
        cli_export_rows_per_s=exported / seconds,
        exported_rows=exported,
    )
    out.unlink(missing_ok=True)
    for db in (cli_db, lib_db):
        _fresh(db)
    return result
