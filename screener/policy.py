"""The decision: where a call goes, and why. Pure: no I/O; the clock comes in as ``now``.

``decide(caller, matches, policy, now)`` applies, in order of precedence:

1. quiet hours (everyone, allow-listed or not, goes to the quiet-hours route);
2. an exact allow entry, then an exact block entry;
3. the longest prefix rule (allow or block);
4. outside business hours: everyone not allow-listed goes to the after-hours route;
5. the category rule (per-DID rules first, then the office-wide ones);
6. the default route.

Expired entries are ignored, and the reasons say so. Manual entries beat learned ones for the
same key (the store keeps one entry per key, and learning never overwrites a manual entry).
"""

from __future__ import annotations

import datetime as dt
import enum
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from zoneinfo import ZoneInfo

from screener.numbers import Caller, Category


class Route(enum.StrEnum):
    """Where a call is sent. Each has a ``screen-<route>`` context in the dialplan."""

    STAFF = "staff"
    CHALLENGE = "challenge"
    VOICEMAIL = "voicemail"
    REJECT = "reject"


class ListKind(enum.StrEnum):
    """Which list an entry belongs to."""

    ALLOW = "allow"
    BLOCK = "block"


class Outcome(enum.StrEnum):
    """How a DTMF challenge ended, as the dialplan reports it."""

    PASS = "pass"  # noqa: S105  # a challenge outcome, not a password
    FAIL = "fail"
    TIMEOUT = "timeout"
    HANGUP = "hangup"


SOURCE_MANUAL = "manual"
SOURCE_LEARNED = "learned"
# A number a staff phone called out (learned from the outgoing call, with an expiry).
SOURCE_CALLED = "called"
# A feature code keyed on a staff phone: ``staff:<endpoint>`` (``staff:staff1``).
SOURCE_STAFF = "staff:"


@dataclass(frozen=True, slots=True)
class Entry:
    """One allow or block list entry: an exact E.164 number, or an E.164 prefix rule."""

    kind: ListKind
    number: str
    prefix: bool = False
    label: str = ""
    source: str = SOURCE_MANUAL
    created_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    expires_at: dt.datetime | None = None
    note: str = ""
    hits: int = 0
    last_seen: dt.datetime | None = None
    id: int | None = None

    def is_active(self, now: dt.datetime) -> bool:
        """False once the entry has expired."""
        return self.expires_at is None or self.expires_at > now

    @property
    def is_learned(self) -> bool:
        """True for entries the screener made itself from challenge outcomes."""
        return self.source == SOURCE_LEARNED

    def describe(self) -> str:
        """A short human form: ``block prefix +81120 "Telemarketers" (manual)``."""
        what = f"{self.kind} {'prefix ' if self.prefix else ''}{self.number}"
        label = f" {self.label!r}" if self.label else ""
        return f"{what}{label} ({self.source})"


# The default category rules, written for a Japanese office: anything that cannot or will not
# prove who it is must press the buttons first.
DEFAULT_CATEGORY_ROUTES: Mapping[Category, Route] = {
    Category.WITHHELD: Route.CHALLENGE,
    Category.INVALID: Route.CHALLENGE,
    Category.TOLL_FREE: Route.CHALLENGE,
    Category.PREMIUM_RATE: Route.CHALLENGE,
    Category.SHARED_COST: Route.CHALLENGE,
    Category.INTERNATIONAL: Route.CHALLENGE,
    Category.FIXED_LINE: Route.STAFF,
    Category.MOBILE: Route.STAFF,
    Category.VOIP: Route.STAFF,
    Category.OTHER: Route.STAFF,
}

Window = tuple[dt.time, dt.time]


@dataclass(frozen=True, slots=True)
class Hours:
    """Weekly business and quiet hours in one time zone. Weekday 0 is Monday."""

    timezone: str = "Asia/Tokyo"
    open: Mapping[int, Sequence[Window]] = field(default_factory=dict)
    quiet: Mapping[int, Sequence[Window]] = field(default_factory=dict)
    after_hours_route: Route = Route.VOICEMAIL
    quiet_route: Route = Route.VOICEMAIL

    def _local(self, now: dt.datetime) -> dt.datetime:
        return now.astimezone(ZoneInfo(self.timezone))

    def _active(self, table: Mapping[int, Sequence[Window]], now: dt.datetime) -> bool:
        if not table:
            return False  # no windows: no need for the local time (a time-zone conversion)
        # A window ending before it starts wraps past midnight (sun 22:00-06:00): its early
        # hours belong to the next day (Monday 02:00 is inside Sunday's window).
        local = self._local(now)
        t = local.time()
        for start, end in table.get(local.weekday(), ()):
            if (start <= t < end) if start <= end else t >= start:
                return True
        yesterday = (local.weekday() - 1) % 7
        return any(start > end and t < end for start, end in table.get(yesterday, ()))

    def is_open(self, now: dt.datetime) -> bool:
        """True during business hours (always true when no hours are configured)."""
        return not self.open or self._active(self.open, now)

    def is_quiet(self, now: dt.datetime) -> bool:
        """True during quiet hours, when nobody's phone rings."""
        return self._active(self.quiet, now)


@dataclass(frozen=True, slots=True)
class DidPolicy:
    """Overrides for calls to one of the office's numbers (a support line, say)."""

    categories: Mapping[Category, Route] = field(default_factory=dict)
    default: Route | None = None
    language: str | None = None  # the office's language unless set (an English line)
    record: bool | None = None  # record every screened call to this number (or none)
    announce: bool | None = None  # callers to this number say who they are (or none do)


@dataclass(frozen=True, slots=True)
class Policy:
    """Everything ``decide`` needs besides the caller and its list matches."""

    allow_route: Route = Route.STAFF
    block_route: Route = Route.VOICEMAIL
    categories: Mapping[Category, Route] = field(
        default_factory=lambda: dict(DEFAULT_CATEGORY_ROUTES)
    )
    default_route: Route = Route.STAFF
    hours: Hours = field(default_factory=Hours)
    dids: Mapping[str, DidPolicy] = field(default_factory=dict)
    challenge_digits: int = 2
    # Withheld callers hear "please call again with your number shown" instead of the challenge.
    withheld_announcement: bool = False
    verified_days: float = 90.0
    # How long a number a staff phone called stays allow-listed (source "called"); 0: never.
    called_days: float = 180.0
    fail_threshold: int = 3
    fail_window_days: float = 7.0
    autoblock_days: float = 30.0
    # The language callers hear (ja, en), office-wide; a DID may have its own.
    language: str = "ja"
    # Categories whose calls are recorded, after a spoken warning (a DID may override).
    record: frozenset[Category] = frozenset()
    # Categories whose callers say who they are before staff hear them (announce screening).
    announce: frozenset[Category] = frozenset()


# Routes a recording applies to: the caller is warned before the challenge or before staff ring.
RECORDED_ROUTES = frozenset({Route.CHALLENGE, Route.STAFF})
# Routes announce screening applies to: the caller records its name before staff ring (after
# passing the challenge, on the challenge route).
ANNOUNCED_ROUTES = frozenset({Route.CHALLENGE, Route.STAFF})


@dataclass(frozen=True, slots=True)
class Decision:
    """A route, the rule that chose it, and the reasons in the order they were weighed."""

    route: Route
    rule: str
    reasons: tuple[str, ...]
    entry: Entry | None = None
    announcement: str | None = None
    language: str = "ja"
    record: bool = False
    announce: bool = False  # the caller says who it is; the staff phone hears it and chooses


def _route_for(kind: ListKind, policy: Policy) -> Route:
    return policy.allow_route if kind is ListKind.ALLOW else policy.block_route


def decide(
    caller: Caller,
    matches: Iterable[Entry],
    policy: Policy,
    now: dt.datetime,
    did: str | None = None,
) -> Decision:
    """Choose the route for ``caller`` given the list entries that match its number, and the
    language, recording and announce screening that go with it."""
    decision = _route_decision(caller, matches, policy, now, did)
    did_policy = policy.dids.get(did) if did else None
    language = policy.language
    if did_policy is not None and did_policy.language is not None:
        language = did_policy.language
    # The reasons' text is made only for what applies (most calls are neither recorded nor
    # announced).
    record = False
    if decision.route in RECORDED_ROUTES:
        if did_policy is not None and did_policy.record is not None:
            record = did_policy.record
            if record:
                why = f"DID {did} record = on"
        else:
            record = caller.category in policy.record
            if record:
                why = f"record {caller.category} calls"
        if record:
            decision = replace(decision, reasons=(*decision.reasons, f"recorded: {why}"))
    announce = False
    # An allow entry is the office's own word: such callers ring staff at once, unannounced.
    allowed = decision.entry is not None and decision.entry.kind is ListKind.ALLOW
    if decision.route in ANNOUNCED_ROUTES and not allowed:
        if did_policy is not None and did_policy.announce is not None:
            announce = did_policy.announce
            if announce:
                why = f"DID {did} announce = on"
        else:
            announce = caller.category in policy.announce
            if announce:
                why = f"announce {caller.category} calls"
        if announce:
            said = "caller says who it is before staff answer"
            decision = replace(decision, reasons=(*decision.reasons, f"{said}: {why}"))
    if (language, record, announce) == (decision.language, decision.record, decision.announce):
        return decision  # already so (the usual case): no copy
    return replace(decision, language=language, record=record, announce=announce)


def _route_decision(
    caller: Caller,
    matches: Iterable[Entry],
    policy: Policy,
    now: dt.datetime,
    did: str | None = None,
) -> Decision:
    reasons: list[str] = [f"caller {caller.display}: {caller.category} ({caller.detail})"]
    exact: dict[ListKind, Entry] = {}
    prefixes: list[Entry] = []
    for entry in matches:
        if not entry.is_active(now):
            expired = entry.expires_at.isoformat() if entry.expires_at else "?"
            reasons.append(f"ignored expired {entry.describe()}, expired {expired}")
            continue
        if entry.prefix:
            if caller.e164 is not None and caller.e164.startswith(entry.number):
                prefixes.append(entry)
        elif entry.number == caller.e164:
            # Two exact entries for one key cannot come from the store; if they do, a manual
            # entry wins over a learned one.
            held = exact.get(entry.kind)
            if held is None or (held.is_learned and not entry.is_learned):
                exact[entry.kind] = entry

    if policy.hours.is_quiet(now):
        route = policy.hours.quiet_route
        reasons.append(f"quiet hours ({policy.hours.timezone}) → {route}")
        return Decision(route, "quiet-hours", tuple(reasons))

    for kind in (ListKind.ALLOW, ListKind.BLOCK):
        found = exact.get(kind)
        if found is not None:
            route = _route_for(kind, policy)
            reasons.append(f"exact {found.describe()} → {route}")
            return Decision(route, f"exact-{kind}", tuple(reasons), found)

    if prefixes:
        # Longest prefix wins; at equal length a manual entry beats a learned one, then block
        # beats allow (the cautious choice).
        best = max(
            prefixes,
            key=lambda e: (len(e.number), not e.is_learned, e.kind is ListKind.BLOCK),
        )
        route = _route_for(best.kind, policy)
        reasons.append(f"longest prefix rule {best.describe()} → {route}")
        return Decision(route, f"prefix-{best.kind}", tuple(reasons), best)

    reasons.append("no list entry")

    if not policy.hours.is_open(now):
        route = policy.hours.after_hours_route
        reasons.append(f"outside business hours ({policy.hours.timezone}) → {route}")
        # The caller hears when the office is open (voicemail and reject routes play it).
        return Decision(route, "after-hours", tuple(reasons), announcement="after-hours")

    did_policy = policy.dids.get(did) if did else None
    if did_policy is not None:
        did_route = did_policy.categories.get(caller.category)
        if did_route is not None:
            reasons.append(f"DID {did} rule for {caller.category} → {did_route}")
            return _announce(caller, Decision(did_route, "did-category", tuple(reasons)), policy)
        if did_policy.default is not None:
            reasons.append(f"DID {did} default → {did_policy.default}")
            return Decision(did_policy.default, "did-default", tuple(reasons))

    category_route = policy.categories.get(caller.category)
    if category_route is not None:
        reasons.append(f"category rule {caller.category} → {category_route}")
        return _announce(caller, Decision(category_route, "category", tuple(reasons)), policy)

    reasons.append(f"default → {policy.default_route}")
    return Decision(policy.default_route, "default", tuple(reasons))


def _announce(caller: Caller, decision: Decision, policy: Policy) -> Decision:
    """Swap the challenge for the call-back-with-number announcement, where policy says so."""
    if (
        policy.withheld_announcement
        and caller.category is Category.WITHHELD
        and decision.route is Route.CHALLENGE
    ):
        reasons = (*decision.reasons, "withheld caller: asked to call again with the number shown")
        return Decision(Route.REJECT, decision.rule, reasons, decision.entry, "withheld")
    return decision


def challenge_code(digits: int, rng: random.Random | None = None) -> str:
    """A fresh random code of ``digits`` digits, never all the same digit."""
    if digits < 2:
        raise ValueError("a challenge code needs at least 2 digits")
    rng = rng or random.SystemRandom()
    while True:
        code = "".join(rng.choice("0123456789") for _ in range(digits))
        if len(set(code)) > 1:
            return code
