"""bench/rusage.py: a command's peak RSS is its own, not that of the large process starting it."""

from __future__ import annotations

import sys

from bench import transfer


def test_a_small_command_started_by_a_large_process_reports_its_own_peak() -> None:
    """Linux keeps ru_maxrss across exec, and a subprocess begins as its parent: the benchmark,
    grown to hundreds of MB, made every command it timed look as large. Through bench/rusage.py
    a bare interpreter started from 300 MB reports its own few MB."""
    ballast = bytearray(300 * 1024 * 1024)
    ballast[::4096] = b"x" * len(ballast[::4096])  # touched: resident
    figures = transfer.measure([sys.executable, "-c", "pass"])
    assert figures["peak_rss_mb"] < 100, figures
    assert figures["cpu_s"] > 0 and figures["wall_s"] > 0
    del ballast
