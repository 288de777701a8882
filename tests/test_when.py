"""Times an admin types: durations and ISO dates, table-tested with a fixed clock."""

from __future__ import annotations

import datetime as dt

import pytest

from screener.when import parse_duration, parse_future, parse_past

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90m", 5400), ("90min", 5400), ("12h", 43200), ("30d", 2592000), ("2w", 1209600),
     (" 1.5h ", 5400), ("3D", 259200)],
)  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    """Minutes, hours, days and weeks, any case, with surrounding spaces."""
    assert parse_duration(text) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "d", "12", "12 parsecs", "-3d", "1e3d"])
def test_not_durations(text: str) -> None:
    """Anything else is not a duration (None, so the caller tries a date)."""
    assert parse_duration(text) is None


@pytest.mark.parametrize(
    ("text", "future", "past"),
    [
        ("30d", NOW + dt.timedelta(days=30), NOW - dt.timedelta(days=30)),
        ("2026-12-31", dt.datetime(2026, 12, 31, tzinfo=dt.UTC), None),
        ("2026-12-31T09:00", dt.datetime(2026, 12, 31, 9, tzinfo=dt.UTC), None),
        (
            "2026-12-31T09:00+09:00",
            dt.datetime(2026, 12, 31, 0, tzinfo=dt.UTC),
            None,
        ),
    ],
)
def test_future_and_past(text: str, future: dt.datetime, past: dt.datetime | None) -> None:
    """Durations count from now (forward for expiry, back for history); dates are absolute."""
    assert parse_future(text, NOW) == future
    assert parse_past(text, NOW) == (past or future)


@pytest.mark.parametrize("text", ["soon", "31/12/2026", "2026-13-01", "tomorrow"])
def test_bad_times_name_the_input(text: str) -> None:
    """A time that is neither a duration nor an ISO date is a ValueError quoting it."""
    with pytest.raises(ValueError, match="is not a time"):
        parse_future(text, NOW)
