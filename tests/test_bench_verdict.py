"""The benchmark's table: a target's verdict reads every figure the target bounds."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console

from bench.__main__ import _print


def _summary(p50: float, p99: float) -> dict[str, float]:
    return {"p50_ms": p50, "p99_ms": p99}


def _results(ratio_p50: float, ratio_p99: float) -> dict[str, Any]:
    floor = _summary(0.01, 0.03)
    screen = _summary(0.01 * ratio_p50, 0.03 * ratio_p99)
    return {
        "started": "test",
        "machine": {
            "cores": 2,
            "python": "3.11",
            "sqlite": "3.40",
            "asterisk": "22",
            "load_start": (0.0, 0.0, 0.0),
        },
        "total_s": 1.0,
        "decision": {
            "entries": 10_000_000,
            "screen_async": screen,
            "floor_sqlite3_point": floor,
            "ratio_p50": ratio_p50,
            "ratio_p99": ratio_p99,
            "screen_cpu": screen,
            "floor_cpu": floor,
            "cpu_ratio_p50": ratio_p50,
            "cpu_ratio_p99": ratio_p99,
        },
    }


@pytest.mark.parametrize(
    ("ratio_p50", "ratio_p99", "met"),
    [
        (2.9, 2.9, True),
        (3.8, 2.6, False),  # p99 alone once read "yes" here
        (2.6, 3.8, False),
        (float("nan"), 2.0, False),
    ],
)
def test_the_decision_target_bounds_p50_and_p99(
    ratio_p50: float, ratio_p99: float, met: bool
) -> None:
    verdict = _print(_results(ratio_p50, ratio_p99), Console(file=io.StringIO()))
    assert verdict["decision_vs_floor"] is met
