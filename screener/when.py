"""Parsing the times an admin types: ``30d``, ``12h``, ``2w``, ``2026-12-31``, ISO datetimes."""

from __future__ import annotations

import datetime as dt
import re

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(m|min|h|d|w)\s*$", re.IGNORECASE)
_UNITS = {"m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}


def parse_duration(text: str) -> dt.timedelta | None:
    """``90m``, ``12h``, ``30d``, ``2w`` as a timedelta; None if ``text`` is not of that form."""
    match = _RELATIVE.match(text)
    if not match:
        return None
    return dt.timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2).lower()])


def parse_instant(text: str) -> dt.datetime:
    """An ISO date or datetime; naive values are taken as UTC. Raises ValueError."""
    value = text.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            day = dt.date.fromisoformat(value)
            return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
        stamp = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use a duration such as 30d, 12h, 2w "
            "or an ISO date such as 2026-12-31"
        ) from None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)


def parse_future(text: str, now: dt.datetime) -> dt.datetime:
    """When an entry expires: a duration from ``now`` or an absolute time. Raises ValueError."""
    delta = parse_duration(text)
    return now + delta if delta is not None else parse_instant(text)


def parse_past(text: str, now: dt.datetime) -> dt.datetime:
    """A starting point for history: a duration back from ``now`` or an absolute time."""
    delta = parse_duration(text)
    return now - delta if delta is not None else parse_instant(text)
