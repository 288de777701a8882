"""The contract with the dialplan (docs/architecture.md), as the screener reads and answers it.

The dialplan raises ``UserEvent(ScreenRequest, ...)`` for each call it holds; :class:`Request`
reads one from the event's channel snapshot (with ``Hold``, the dialplan's own hold time, so
that the two never have to be kept equal by hand). :func:`redirect_target` says where a decision
sends the call, :func:`screen_options` in which language and whether it is recorded. Pure: no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from screener.ami import Event
from screener.policy import Route
from screener.screening import Screening

# Headers Asterisk itself sends more than once (one ChanVariable per manager.conf channelvars
# entry). A second copy of any other header can only come from caller data forging headers.
REPEATABLE_HEADERS = frozenset({"chanvariable"})

# The hold time a ScreenRequest may carry (the range config.py accepts for hold_seconds).
HOLD_RANGE = (0.5, 60.0)


def parse_hold(value: str | None) -> float | None:
    """The hold time a ScreenRequest carries (``Hold: 4``), or None if absent or not sensible."""
    if not value:
        return None
    try:
        hold = float(value.strip())
    except ValueError:
        return None
    low, high = HOLD_RANGE
    return hold if math.isfinite(hold) and low <= hold <= high else None


@dataclass(frozen=True, slots=True)
class Request:
    """A screening request as read from a ScreenRequest event's channel snapshot."""

    call_id: str
    number: str
    name: str
    did: str | None
    asterisk_time: float | None
    received_at: float
    suspicious: frozenset[str]
    tainted: bool = False
    hold: float | None = None  # the dialplan's own hold time (SCREEN_HOLD_SECONDS), if sent

    @classmethod
    def from_event(cls, event: Event) -> Request | None:
        """Read the request; None if the event has no Uniqueid to route by."""
        call_id = event.get("Uniqueid")
        if not call_id:
            return None
        stamp = event.get("Timestamp")
        try:
            asterisk_time = float(stamp) if stamp else None
        except ValueError:
            asterisk_time = None
        exten = event.get("Exten") or ""
        suspicious = event.duplicated - REPEATABLE_HEADERS
        return cls(
            call_id=call_id,
            number=event.get("CallerIDNum") or "",
            name=event.get("CallerIDName") or "",
            did=exten if exten not in ("", "s") else None,
            asterisk_time=asterisk_time,
            received_at=event.received_at,
            suspicious=suspicious,
            # The dialplan stripped control characters from the number (screen-sanitize).
            tainted=(event.get("Tainted") or "").strip().lower() == "yes",
            # A repeated Hold header is forged: time the call by the configured hold instead.
            hold=None if "hold" in suspicious else parse_hold(event.get("Hold")),
        )


def redirect_target(screening: Screening, code: str | None) -> tuple[str, str]:
    """The dialplan context and extension for a decision (docs/architecture.md)."""
    route = screening.decision.route
    if route is Route.CHALLENGE:
        assert code is not None
        return "screen-challenge", code
    if route in (Route.REJECT, Route.VOICEMAIL) and screening.decision.announcement:
        return f"screen-{route.value}", screening.decision.announcement
    return f"screen-{route.value}", "s"


def screen_options(screening: Screening) -> str:
    """SCREEN_OPTIONS for the dialplan: ``<language>-<record yes|no>`` (docs/architecture.md)."""
    decision = screening.decision
    return f"{decision.language}-{'yes' if decision.record else 'no'}"


__all__ = [
    "HOLD_RANGE",
    "REPEATABLE_HEADERS",
    "Request",
    "parse_hold",
    "redirect_target",
    "screen_options",
]
