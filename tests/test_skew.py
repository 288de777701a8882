"""WindowMin: the sliding minimum the service estimates the clocks' skew with."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from screener.skew import WindowMin


@given(
    st.integers(min_value=1, max_value=8),
    st.lists(st.floats(min_value=-1e6, max_value=1e6), max_size=40),
)
def test_window_min_is_the_minimum_of_the_last_values(size: int, values: list[float]) -> None:
    """After each value added, min() is the minimum of the last ``size`` values."""
    window = WindowMin(size)
    assert window.min(default=-7.0) == -7.0
    for n, value in enumerate(values, start=1):
        window.add(value)
        assert window.min() == min(values[max(0, n - size) : n])


def test_window_min_needs_a_size() -> None:
    """A window of no values is refused."""
    with pytest.raises(ValueError):
        WindowMin(0)
