"""Percentiles and small helpers shared by the benchmark parts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of already sorted values, nearest-rank; NaN when empty."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summary(values_ms: Sequence[float]) -> dict[str, Any]:
    """n, p50, p90, p99, max and mean of latencies in milliseconds."""
    ordered = sorted(values_ms)
    return {
        "n": len(ordered),
        "p50_ms": percentile(ordered, 50),
        "p90_ms": percentile(ordered, 90),
        "p99_ms": percentile(ordered, 99),
        "max_ms": ordered[-1] if ordered else math.nan,
        "mean_ms": sum(ordered) / len(ordered) if ordered else math.nan,
    }


def ratio(a: float, b: float) -> float:
    """a / b, NaN when b is zero or either is NaN."""
    if not b or math.isnan(a) or math.isnan(b):
        return math.nan
    return a / b
