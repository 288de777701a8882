"""Part 1 of the benchmark (bench/decision.py) on a small list: every method times every
caller, and the target's ratio is ``screen()`` against the floor timed in the same turns."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest

from bench import dataset, decision
from bench.dataset import Layout
from bench.stats import ratio

SIZE = 10_000
CALLERS = 1_200  # three blocks of 500: more than one order of the turns


def test_decision_part_times_every_caller_side_by_side(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "entries.db"
    asyncio.run(dataset._create_schema(path))
    dataset._fill(path, Layout(SIZE), log=lambda _: None)
    monkeypatch.setattr(decision, "IDLE_CALLERS", 100)

    result = asyncio.run(decision.run(path, SIZE, CALLERS))

    with_e164 = result["with_e164"]
    assert 0 < with_e164 < CALLERS  # the mix has withheld callers
    for key in ("screen", "screen_before", "screen_cpu", "screen_before_cpu"):
        assert result[key]["n"] == CALLERS, key
    # The floor's turns probe every caller with a number, once per clock.
    assert result["floor_turns"]["n"] == with_e164
    assert result["floor_turns_cpu"]["n"] == with_e164
    assert sum(result["routes"].values()) == CALLERS
    got, floor = result["screen_async"], result["floor_turns"]
    assert result["ratio_p50"] == ratio(got["p50_ms"], floor["p50_ms"])
    assert result["ratio_p99"] == ratio(got["p99_ms"], floor["p99_ms"])
    alone = result["floor_sqlite3_point"]
    assert result["alone_ratio_p50"] == ratio(got["p50_ms"], alone["p50_ms"])
    # One at a time: the first IDLE_CALLERS callers, the floor for those with a number.
    assert result["screen_idle"]["n"] == 100
    assert 0 < result["floor_idle"]["n"] <= 100
    # After another connection's commit: both lookups for every caller with a number, and the
    # bench's scratch table leaves the cached database as it found it.
    assert result["store_lookup_after_commit"]["n"] == with_e164
    assert result["floor_after_commit"]["n"] == with_e164
    with contextlib.closing(sqlite3.connect(path)) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    assert "bench_commits" not in tables
