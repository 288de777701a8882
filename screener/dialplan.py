"""The contract with the dialplan (docs/architecture.md), as the screener reads and answers it.

The dialplan raises ``UserEvent(ScreenRequest, ...)`` for each call it holds; :class:`Request`
reads one from the event's channel snapshot (with ``Hold``, the dialplan's own hold time, so
that the two never have to be kept equal by hand). :func:`redirect_target` says where a decision
sends the call, :func:`screen_options` in which language, whether it is recorded and whether the
caller says who it is first (announce screening). Pure: no I/O.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from screener.ami import Event
from screener.policy import ListKind, Route
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
    """SCREEN_OPTIONS for the dialplan: ``<language>-<record yes|no>-<announce yes|no>``
    (docs/architecture.md)."""
    decision = screening.decision
    record = "yes" if decision.record else "no"
    return f"{decision.language}-{record}-{'yes' if decision.announce else 'no'}"


# What a staff phone may choose (ScreenStaffChoice's Choice), and the list entry each makes for
# the caller's number from now on: announce screening's keys 1-4, no key (timeout), the staff
# phone hanging up before choosing, and *0 during the call.
STAFF_CHOICES: dict[str, ListKind | None] = {
    "connect": None,
    "voicemail": None,
    "block": ListKind.BLOCK,
    "allow": ListKind.ALLOW,
    "timeout": None,
    "hangup": None,
    "block-in-call": ListKind.BLOCK,
}
_ENDPOINT = re.compile(r"[0-9A-Za-z_-]{1,64}")
_CALL_ID = re.compile(r"[0-9A-Za-z._-]{1,128}")


@dataclass(frozen=True, slots=True)
class StaffChoice:
    """A ``ScreenStaffChoice`` event: what the staff phone ``staff`` chose for the call
    ``call_id`` (the caller's Uniqueid, which the staff leg carries as ``Call``)."""

    call_id: str
    choice: str
    staff: str

    @property
    def kind(self) -> ListKind | None:
        """The list the caller's number goes on from now on, if any."""
        return STAFF_CHOICES[self.choice]

    @classmethod
    def from_event(cls, event: Event) -> StaffChoice | None:
        """Read the event; None if a header is missing, repeated or not one the dialplan sends
        (the event comes from the staff phone's channel, whose snapshot carries the caller's ID:
        a repeated header can only be forged, and a forged block must never be listed)."""
        if {"call", "choice", "staff"} & event.duplicated:
            return None
        call_id = (event.get("Call") or "").strip()
        choice = (event.get("Choice") or "").strip().lower()
        staff = (event.get("Staff") or "").strip()
        if choice not in STAFF_CHOICES:
            return None
        if not _CALL_ID.fullmatch(call_id) or not _ENDPOINT.fullmatch(staff):
            return None
        return cls(call_id, choice, staff)


__all__ = [
    "HOLD_RANGE",
    "REPEATABLE_HEADERS",
    "STAFF_CHOICES",
    "Request",
    "StaffChoice",
    "parse_hold",
    "redirect_target",
    "screen_options",
]
