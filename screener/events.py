"""What the live agent publishes: one frozen dataclass per kind of happening, and a tiny hub.

The service publishes each happening here, in one place; whoever wants to know (metrics,
notifications, sync, a web page) subscribes, and the call path knows none of them::

    hub = Hub()
    unsubscribe = hub.subscribe(lambda event: print(event))
    hub.publish(CallScreened(...))

A subscriber is called on the event loop's thread, synchronously, in the order it subscribed.
It must not block (hand slow work to a queue of its own); an exception it raises is logged and
swallowed, so that no subscriber can ever fail or delay a call.

This hub is in-process and forgets: what must survive a crash (a voicemail to notify about, an
auto-block) is also written to the database's ``outbox`` table in the same transaction as the
record it describes (see :mod:`screener.store`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import structlog

log = structlog.get_logger("screener.events")


@dataclass(frozen=True, slots=True)
class CallScreened:
    """A call was decided and Redirected to its route."""

    call_id: str
    caller: str  # the caller as the log shows it (E.164, or the raw text in quotes)
    category: str
    route: str
    rule: str
    reasons: tuple[str, ...]
    decision_ms: float
    redirect_ms: float | None = None  # from the request to the Redirect's answer


@dataclass(frozen=True, slots=True)
class ChallengeOutcome:
    """A challenge ended (pass, fail, timeout, hangup) and its outcome is in the call log."""

    call_id: str
    outcome: str
    caller: str | None
    recorded: bool  # False if the call log did not hold the call


@dataclass(frozen=True, slots=True)
class VoicemailLeft:
    """A caller reached voicemail; ``status`` is Asterisk's VMSTATUS (SUCCESS: a message)."""

    call_id: str
    status: str
    recorded: bool


@dataclass(frozen=True, slots=True)
class Fallback:
    """A call took the dialplan's fallback (no decision in time, or one that came too late)."""

    call_id: str
    route: str
    why: str
    category: str = "unknown"  # the caller's category (numbers.Category), as for CallScreened


@dataclass(frozen=True, slots=True)
class EntryLearned:
    """A challenge outcome taught a list entry (``auto_block``: the failure threshold was met)."""

    number: str
    kind: str
    label: str
    expires_at: float | None  # unix seconds
    auto_block: bool
    failures: int


@dataclass(frozen=True, slots=True)
class StaffChanged:
    """A feature code keyed on a staff phone (*30 to *34) was handled.

    ``result`` is what the phone was told (``featurecodes.Result``: ``blocked``, ``withheld``,
    ...); ``changed`` whether the lists changed (then ``kind`` is the entry's list after the
    change, None when it was removed). ``key_to_change_ms``: from the dialplan's event (right
    after the phone's last key) to the change being committed.
    """

    endpoint: str
    code: str
    result: str
    number: str | None
    changed: bool
    kind: str | None = None
    key_to_change_ms: float | None = None


@dataclass(frozen=True, slots=True)
class NumberCalled:
    """A staff phone dialled an outside number; ``learned``: it is now a ``called`` entry."""

    endpoint: str
    number: str | None  # E.164, or None when the digits were no usable number
    learned: bool


@dataclass(frozen=True, slots=True)
class AMIConnected:
    """Logged in to the Asterisk Manager Interface: calls are screened."""

    address: str


@dataclass(frozen=True, slots=True)
class AMIDisconnected:
    """The AMI connection is lost: calls take the dialplan's fallback until it is back."""

    address: str


@dataclass(frozen=True, slots=True)
class DBWriteFailed:
    """Writes could not be committed and are lost (the calls were still routed)."""

    error: str
    writes: int
    call_id: str | None = None


@dataclass(frozen=True, slots=True)
class StaffChose:
    """A staff phone decided about a caller: after hearing who it is (announce screening:
    ``connect``, ``voicemail``, ``block``, ``allow``, ``timeout``, ``hangup``) or with ``*0``
    during the call (``block-in-call``). ``entry_kind`` is the list entry it made, if any."""

    call_id: str
    choice: str
    staff: str  # the staff phone's endpoint
    entry_kind: str | None
    recorded: bool  # False if the call log did not hold the call


Event = (
    CallScreened
    | ChallengeOutcome
    | VoicemailLeft
    | Fallback
    | EntryLearned
    | StaffChanged
    | NumberCalled
    | AMIConnected
    | AMIDisconnected
    | DBWriteFailed
    | StaffChose
)
Subscriber = Callable[[Event], None]


class Hub:
    """Hands every published event to every subscriber; never raises into the publisher."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        # Subscribers that raised once: their traceback was logged then; later failures are
        # one short line (rendering a traceback per call would slow every call down).
        self._failing: set[int] = set()

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(event)`` for each event from now on; returns the unsubscribe function."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def publish(self, event: Event) -> None:
        """Give ``event`` to each subscriber in turn; one that raises is logged and skipped."""
        for callback in tuple(self._subscribers):
            try:
                callback(event)
            except Exception as exc:
                if id(callback) in self._failing:
                    log.error("event subscriber failed", kind=type(event).__name__, error=repr(exc))
                else:
                    self._failing.add(id(callback))
                    log.exception("event subscriber failed", kind=type(event).__name__)


__all__ = [
    "AMIConnected",
    "AMIDisconnected",
    "CallScreened",
    "ChallengeOutcome",
    "DBWriteFailed",
    "EntryLearned",
    "Event",
    "Fallback",
    "Hub",
    "NumberCalled",
    "StaffChanged",
    "Subscriber",
    "VoicemailLeft",
]
