"""What happened, as the agent publishes it: frozen events and a tiny hub to subscribe to.

The service publishes each event in one place; metrics, health and notifications subscribe, so
the call path knows none of them. A subscriber is a plain callable run inside ``publish``: it
must not block or raise (an exception is logged and swallowed, never passed to the publisher).

(This is the minimal shape the observers need; the service's own publication point owns it.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import structlog

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class CallScreened:
    """A call was decided and redirected."""

    call_id: str
    route: str
    category: str
    rule: str
    decision_seconds: float
    redirect_seconds: float


@dataclass(frozen=True, slots=True)
class ChallengeOutcome:
    """A challenge ended: ``pass``, ``fail``, ``timeout`` or ``hangup``."""

    call_id: str
    outcome: str


@dataclass(frozen=True, slots=True)
class VoicemailLeft:
    """The caller reached voicemail; ``status`` is the dialplan's VMSTATUS (SUCCESS, USEREXIT…)."""

    call_id: str
    status: str


@dataclass(frozen=True, slots=True)
class Fallback:
    """The dialplan's fallback took the call (no decision in time, or one that came too late)."""

    call_id: str
    route: str
    category: str


@dataclass(frozen=True, slots=True)
class EntryLearned:
    """The screener learned a list entry; ``auto_block`` when failures blocked the number."""

    number: str
    kind: str
    auto_block: bool


@dataclass(frozen=True, slots=True)
class AmiConnected:
    """Logged in to AMI; ``reconnect`` when it is not the first login of the process."""

    reconnect: bool


@dataclass(frozen=True, slots=True)
class AmiDisconnected:
    """The AMI connection was lost."""

    error: str


@dataclass(frozen=True, slots=True)
class DbWriteError:
    """Records could not be written to the database."""

    records: int
    error: str


Event = (
    CallScreened
    | ChallengeOutcome
    | VoicemailLeft
    | Fallback
    | EntryLearned
    | AmiConnected
    | AmiDisconnected
    | DbWriteError
)
Subscriber = Callable[[Event], None]


class Hub:
    """Hands every published event to each subscriber, in order of subscription."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Add ``callback``; returns the function that removes it again."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    def publish(self, event: Event) -> None:
        """Deliver ``event``; a failing subscriber is logged and never reaches the publisher."""
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:
                log.exception("event subscriber failed", event=type(event).__name__)
