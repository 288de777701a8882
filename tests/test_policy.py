"""The decision, table-tested with a fixed clock: precedence, expiry, hours, DIDs, learning."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from screener.numbers import Category, normalize
from screener.policy import (
    SOURCE_LEARNED,
    DidPolicy,
    Entry,
    Hours,
    ListKind,
    Policy,
    Route,
    challenge_code,
    decide,
)

NOW = dt.datetime(2026, 11, 30, 3, 0, tzinfo=dt.UTC)  # Monday 12:00 in Tokyo
PAST = NOW - dt.timedelta(days=1)
FUTURE = NOW + dt.timedelta(days=1)
TELE = "0120-121-852"
TELE_E164 = "+81120121852"

ALLOW, BLOCK = ListKind.ALLOW, ListKind.BLOCK


def e(kind: ListKind, number: str, prefix: bool = False, **kw: object) -> Entry:
    return Entry(kind=kind, number=number, prefix=prefix, created_at=PAST, **kw)  # type: ignore[arg-type]


PRECEDENCE = [
    # id, raw, entries, route, rule
    ("no entries, toll-free", TELE, [], Route.CHALLENGE, "category"),
    ("no entries, mobile", "090-1234-5678", [], Route.STAFF, "category"),
    ("no entries, fixed", "03-1234-5678", [], Route.STAFF, "category"),
    ("no entries, voip", "050-1234-5678", [], Route.STAFF, "category"),
    ("withheld", "anonymous", [], Route.CHALLENGE, "category"),
    ("invalid", "garbage", [], Route.CHALLENGE, "category"),
    ("premium", "0990-123-456", [], Route.CHALLENGE, "category"),
    ("shared cost", "0570-000-123", [], Route.CHALLENGE, "category"),
    ("international", "+1 212 555 0100", [], Route.CHALLENGE, "category"),
    ("exact allow", TELE, [e(ALLOW, TELE_E164)], Route.STAFF, "exact-allow"),
    ("exact block", TELE, [e(BLOCK, TELE_E164)], Route.VOICEMAIL, "exact-block"),
    (
        "exact allow beats exact block",
        TELE,
        [e(BLOCK, TELE_E164), e(ALLOW, TELE_E164)],
        Route.STAFF,
        "exact-allow",
    ),
    (
        "exact block beats prefix allow",
        TELE,
        [e(ALLOW, "+81120", True), e(BLOCK, TELE_E164)],
        Route.VOICEMAIL,
        "exact-block",
    ),
    (
        "exact allow beats prefix block",
        TELE,
        [e(BLOCK, "+81120", True), e(ALLOW, TELE_E164)],
        Route.STAFF,
        "exact-allow",
    ),
    ("prefix block", TELE, [e(BLOCK, "+81120", True)], Route.VOICEMAIL, "prefix-block"),
    (
        "prefix allow beats category",
        TELE,
        [e(ALLOW, "+81120", True)],
        Route.STAFF,
        "prefix-allow",
    ),
    (
        "longest prefix wins",
        TELE,
        [e(BLOCK, "+81120", True), e(ALLOW, "+81120121", True)],
        Route.STAFF,
        "prefix-allow",
    ),
    (
        "longest prefix wins the other way",
        TELE,
        [e(ALLOW, "+81", True), e(BLOCK, "+81120", True)],
        Route.VOICEMAIL,
        "prefix-block",
    ),
    (
        "prefix block applies to mobiles",
        "090-1234-5678",
        [e(BLOCK, "+8190", True)],
        Route.VOICEMAIL,
        "prefix-block",
    ),
    (
        "prefix that does not match is ignored",
        TELE,
        [e(BLOCK, "+81800", True)],
        Route.CHALLENGE,
        "category",
    ),
    (
        "exact entry for another number is ignored",
        TELE,
        [e(ALLOW, "+81120121853")],
        Route.CHALLENGE,
        "category",
    ),
    (
        "expired exact allow is ignored",
        TELE,
        [e(ALLOW, TELE_E164, expires_at=PAST)],
        Route.CHALLENGE,
        "category",
    ),
    (
        "expired exact block falls to the prefix rule",
        TELE,
        [e(BLOCK, TELE_E164, expires_at=PAST), e(ALLOW, "+81120", True)],
        Route.STAFF,
        "prefix-allow",
    ),
    (
        "expired longest prefix falls to the shorter one",
        TELE,
        [e(ALLOW, "+81120121", True, expires_at=PAST), e(BLOCK, "+81120", True)],
        Route.VOICEMAIL,
        "prefix-block",
    ),
    (
        "entry expiring later is active",
        TELE,
        [e(BLOCK, TELE_E164, expires_at=FUTURE)],
        Route.VOICEMAIL,
        "exact-block",
    ),
    (
        "manual prefix beats learned prefix of equal length",
        TELE,
        [e(BLOCK, "+81120", True, source=SOURCE_LEARNED), e(ALLOW, "+81120", True)],
        Route.STAFF,
        "prefix-allow",
    ),
]


@pytest.mark.parametrize(
    ("raw", "entries", "route", "rule"),
    [pytest.param(*case[1:], id=case[0]) for case in PRECEDENCE],
)
def test_precedence(raw: str, entries: list[Entry], route: Route, rule: str) -> None:
    """exact allow > exact block > longest prefix > category > default, expired ignored."""
    decision = decide(normalize(raw), entries, Policy(), NOW)
    assert (decision.route, decision.rule) == (route, rule)


def test_reasons_explain_the_decision() -> None:
    """The reasons name the caller, skipped expired entries and the winning rule, in order."""
    entries = [e(ALLOW, TELE_E164, expires_at=PAST, label="old friend"), e(BLOCK, "+81120", True)]
    decision = decide(normalize(TELE), entries, Policy(), NOW)
    assert decision.reasons[0].startswith("caller +81120121852: toll_free")
    assert "ignored expired allow +81120121852 'old friend'" in decision.reasons[1]
    assert decision.reasons[-1] == "longest prefix rule block prefix +81120 (manual) → voicemail"
    assert decision.entry == entries[1]


def test_default_route_for_unmapped_category() -> None:
    """A category with no rule takes the default route."""
    policy = Policy(categories={}, default_route=Route.VOICEMAIL)
    decision = decide(normalize("03-1234-5678"), [], policy, NOW)
    assert (decision.route, decision.rule) == (Route.VOICEMAIL, "default")


def test_configured_routes_for_lists() -> None:
    """The routes for allow- and block-listed callers come from the policy."""
    policy = Policy(allow_route=Route.CHALLENGE, block_route=Route.REJECT)
    assert decide(normalize(TELE), [e(ALLOW, TELE_E164)], policy, NOW).route is Route.CHALLENGE
    assert decide(normalize(TELE), [e(BLOCK, TELE_E164)], policy, NOW).route is Route.REJECT


WEEKDAYS_9_18 = {d: ((dt.time(9), dt.time(18)),) for d in range(5)}
HOURS = Hours(
    timezone="Asia/Tokyo",
    open=WEEKDAYS_9_18,
    quiet={d: ((dt.time(22), dt.time(6)),) for d in range(7)},
)


def tokyo(y: int, mo: int, d: int, h: int, mi: int = 0) -> dt.datetime:
    return dt.datetime(y, mo, d, h, mi, tzinfo=dt.timezone(dt.timedelta(hours=9)))


@pytest.mark.parametrize(
    ("when", "raw", "entries", "route", "rule"),
    [
        (tokyo(2026, 11, 30, 12), "03-1234-5678", [], Route.STAFF, "category"),
        (tokyo(2026, 11, 30, 8, 59), "03-1234-5678", [], Route.VOICEMAIL, "after-hours"),
        (tokyo(2026, 11, 30, 18), "03-1234-5678", [], Route.VOICEMAIL, "after-hours"),
        (tokyo(2026, 11, 28, 12), "03-1234-5678", [], Route.VOICEMAIL, "after-hours"),  # Saturday
        (tokyo(2026, 11, 28, 12), TELE, [e(ALLOW, TELE_E164)], Route.STAFF, "exact-allow"),
        (tokyo(2026, 11, 30, 23), TELE, [e(ALLOW, TELE_E164)], Route.VOICEMAIL, "quiet-hours"),
        (tokyo(2026, 12, 1, 5, 59), "03-1234-5678", [], Route.VOICEMAIL, "quiet-hours"),
        (tokyo(2026, 11, 30, 12), TELE, [e(BLOCK, TELE_E164)], Route.VOICEMAIL, "exact-block"),
    ],
)
def test_hours(when: dt.datetime, raw: str, entries: list[Entry], route: Route, rule: str) -> None:
    """Outside business hours only allow-listed callers ring; in quiet hours nobody does."""
    decision = decide(normalize(raw), entries, Policy(hours=HOURS), when.astimezone(dt.UTC))
    assert (decision.route, decision.rule) == (route, rule)


SUPPORT = "+81312340000"
DID_POLICY = Policy(
    dids={
        SUPPORT: DidPolicy(
            categories={Category.MOBILE: Route.STAFF, Category.TOLL_FREE: Route.VOICEMAIL}
        ),
        "+81312340001": DidPolicy(default=Route.CHALLENGE),
    },
    categories={**Policy().categories, Category.MOBILE: Route.CHALLENGE},
)


@pytest.mark.parametrize(
    ("did", "raw", "route", "rule"),
    [
        (SUPPORT, "090-1234-5678", Route.STAFF, "did-category"),
        (None, "090-1234-5678", Route.CHALLENGE, "category"),
        ("+81399999999", "090-1234-5678", Route.CHALLENGE, "category"),
        (SUPPORT, TELE, Route.VOICEMAIL, "did-category"),
        (SUPPORT, "03-1234-5678", Route.STAFF, "category"),
        ("+81312340001", "03-1234-5678", Route.CHALLENGE, "did-default"),
    ],
)
def test_per_did_policy(did: str | None, raw: str, route: Route, rule: str) -> None:
    """A DID's own rules come before the office-wide category rules."""
    decision = decide(normalize(raw), [], DID_POLICY, NOW, did)
    assert (decision.route, decision.rule) == (route, rule)


def test_withheld_announcement() -> None:
    """With the announcement on, withheld callers are asked to call back instead of challenged."""
    decision = decide(normalize("P"), [], Policy(withheld_announcement=True), NOW)
    assert (decision.route, decision.announcement) == (Route.REJECT, "withheld")
    toll_free = decide(normalize(TELE), [], Policy(withheld_announcement=True), NOW)
    assert (toll_free.route, toll_free.announcement) == (Route.CHALLENGE, None)


@pytest.mark.parametrize("digits", [2, 3, 4, 6])
def test_challenge_code(digits: int) -> None:
    """Codes have the right length, only digits, and never one repeated digit."""
    rng = random.Random(7)
    for _ in range(500):
        code = challenge_code(digits, rng)
        assert len(code) == digits and code.isdigit() and len(set(code)) > 1


def test_challenge_code_needs_two_digits() -> None:
    """A one-digit code could not avoid being all the same digit."""
    with pytest.raises(ValueError, match="at least 2"):
        challenge_code(1)


SUNDAY_NIGHT = Hours(timezone="Asia/Tokyo", quiet={6: ((dt.time(22), dt.time(6)),)})


@pytest.mark.parametrize(
    ("when", "quiet"),
    [
        (tokyo(2026, 11, 29, 21, 59), False),  # Sunday evening, before the window
        (tokyo(2026, 11, 29, 22, 0), True),  # Sunday 22:00
        (tokyo(2026, 11, 30, 2, 0), True),  # Monday 02:00: still Sunday's night
        (tokyo(2026, 11, 30, 6, 0), False),  # Monday 06:00: over
        (tokyo(2026, 11, 29, 2, 0), False),  # Sunday 02:00 belongs to Saturday: no window
    ],
)
def test_window_wrapping_midnight_belongs_to_its_start_day(when: dt.datetime, quiet: bool) -> None:
    """A window such as sun 22:00-06:00 covers Monday's small hours, not Sunday's."""
    assert SUNDAY_NIGHT.is_quiet(when.astimezone(dt.UTC)) is quiet


# -- edges found by mutation testing (docs/mutation.md) ---------------------------------------


def test_an_entry_expiring_now_is_already_expired() -> None:
    """An entry is active strictly before its expiry instant, not at it."""
    assert e(BLOCK, TELE_E164, expires_at=NOW + dt.timedelta(microseconds=1)).is_active(NOW)
    assert not e(BLOCK, TELE_E164, expires_at=NOW).is_active(NOW)


def test_an_expired_entry_is_named_with_its_expiry_in_the_reasons() -> None:
    """The reasons say which entry was ignored as expired, and since when."""
    decision = decide(normalize(TELE), [e(BLOCK, TELE_E164, expires_at=PAST)], Policy(), NOW)
    assert decision.rule == "category"
    (ignored,) = [r for r in decision.reasons if r.startswith("ignored expired")]
    assert ignored.endswith(f"expired {PAST.isoformat()}")
    assert "no list entry" in decision.reasons


@pytest.mark.parametrize("manual_first", [True, False])
def test_a_manual_exact_entry_wins_over_a_learned_one(manual_first: bool) -> None:
    """Of two exact entries of one kind, the manual one decides, in whichever order they come."""
    manual = e(ALLOW, TELE_E164, label="customer")
    learned = e(ALLOW, TELE_E164, label="passed the challenge", source=SOURCE_LEARNED)
    entries = [manual, learned] if manual_first else [learned, manual]
    assert decide(normalize(TELE), entries, Policy(), NOW).entry is manual


def test_at_equal_length_a_block_prefix_beats_an_allow_prefix() -> None:
    """Two manual prefix rules of one length: the block rule wins (the cautious choice)."""
    for entries in ([e(ALLOW, "+81120", True), e(BLOCK, "+81120", True)],
                    [e(BLOCK, "+81120", True), e(ALLOW, "+81120", True)]):  # fmt: skip
        decision = decide(normalize(TELE), entries, Policy(), NOW)
        assert (decision.route, decision.rule) == (Route.VOICEMAIL, "prefix-block")


@pytest.mark.parametrize(
    ("when", "did", "rule", "reason"),
    [
        (tokyo(2026, 11, 30, 23), None, "quiet-hours", "quiet hours (Asia/Tokyo) → voicemail"),
        (tokyo(2026, 11, 28, 12), None, "after-hours",
         "outside business hours (Asia/Tokyo) → voicemail"),
        (tokyo(2026, 11, 30, 12), SUPPORT, "did-category",
         f"DID {SUPPORT} rule for mobile → staff"),
    ],
)  # fmt: skip
def test_hours_and_did_rules_give_their_reason(
    when: dt.datetime, did: str | None, rule: str, reason: str
) -> None:
    """Quiet hours, business hours and a DID rule each say so as the decision's last reason."""
    policy = Policy(hours=HOURS, dids=DID_POLICY.dids)
    decision = decide(normalize("090-1234-5678"), [], policy, when.astimezone(dt.UTC), did)
    assert decision.rule == rule
    assert isinstance(decision.reasons, tuple) and decision.reasons[-1] == reason
    assert decision.reasons[0].startswith("caller +819012345678: mobile")


def test_withheld_announcement_keeps_the_rule_and_says_why() -> None:
    """The announcement replaces only the route: rule and reasons stay, plus one that says so."""
    plain = decide(normalize("P"), [], Policy(), NOW)
    announced = decide(normalize("P"), [], Policy(withheld_announcement=True), NOW)
    assert announced.rule == plain.rule == "category"
    assert announced.reasons == (
        *plain.reasons,
        "withheld caller: asked to call again with the number shown",
    )
    assert announced.entry is None


def test_withheld_announcement_keeps_the_did_rule_and_its_entry() -> None:
    """A DID rule that challenges withheld callers is still the rule named with the announcement."""
    policy = Policy(
        withheld_announcement=True,
        dids={SUPPORT: DidPolicy(categories={Category.WITHHELD: Route.CHALLENGE})},
    )
    decision = decide(normalize("anonymous"), [], policy, NOW, SUPPORT)
    assert (decision.route, decision.rule, decision.announcement) == (
        Route.REJECT, "did-category", "withheld",
    )  # fmt: skip


def test_a_one_digit_challenge_code_is_refused_with_a_reason() -> None:
    """A one-digit code would be guessed one time in ten: refused, saying why."""
    with pytest.raises(ValueError, match=r"^a challenge code needs at least 2 digits$"):
        challenge_code(1)


def test_did_default_and_default_route_give_their_reason() -> None:
    """A DID's default and the office-wide default each say so as the decision's last reason."""
    did_default = decide(normalize("03-1234-5678"), [], DID_POLICY, NOW, "+81312340001")
    assert did_default.reasons[-1] == "DID +81312340001 default → challenge"
    fallback = decide(normalize("03-1234-5678"), [], Policy(categories={}), NOW)
    assert (fallback.rule, fallback.reasons[-2:]) == (
        "default", ("no list entry", "default → staff"),
    )  # fmt: skip


def test_business_hours_open_at_the_first_minute() -> None:
    """A window 09:00-18:00 is open at 09:00 itself."""
    nine = tokyo(2026, 11, 30, 9).astimezone(dt.UTC)
    assert decide(normalize("03-1234-5678"), [], Policy(hours=HOURS), nine).rule == "category"


ANNOUNCE = Policy(announce=frozenset({Category.TOLL_FREE, Category.WITHHELD, Category.MOBILE}))
ANNOUNCE_CASES = [
    # id, policy, raw, entries, did, route, announce
    ("off by default", Policy(), TELE, [], None, Route.CHALLENGE, False),
    ("toll-free challenged, then announced", ANNOUNCE, TELE, [], None, Route.CHALLENGE, True),
    ("withheld challenged, then announced", ANNOUNCE, "anonymous", [], None, Route.CHALLENGE, True),
    ("mobile rings staff, announced first", ANNOUNCE, "090-1234-5678", [], None, Route.STAFF, True),
    ("category not listed", ANNOUNCE, "03-1234-5678", [], None, Route.STAFF, False),
    ("allow-listed rings at once", ANNOUNCE, TELE, [e(ALLOW, TELE_E164)], None, Route.STAFF, False),
    ("allow prefix too", ANNOUNCE, TELE, [e(ALLOW, "+81120", True)], None, Route.STAFF, False),
    ("blocked: voicemail", ANNOUNCE, TELE, [e(BLOCK, TELE_E164)], None, Route.VOICEMAIL, False),
    (
        "block entry routed to the challenge is announced",
        Policy(block_route=Route.CHALLENGE, announce=frozenset({Category.TOLL_FREE})),
        TELE,
        [e(BLOCK, TELE_E164)],
        None,
        Route.CHALLENGE,
        True,
    ),
    (
        "a DID turns it on",
        Policy(dids={"+81312340000": DidPolicy(announce=True)}),
        "03-1234-5678",
        [],
        "+81312340000",
        Route.STAFF,
        True,
    ),
    (
        "a DID turns it off",
        Policy(
            announce=frozenset({Category.TOLL_FREE}),
            dids={"+81312340000": DidPolicy(announce=False)},
        ),
        TELE,
        [],
        "+81312340000",
        Route.CHALLENGE,
        False,
    ),
    (
        "another DID keeps the office's",
        Policy(
            announce=frozenset({Category.TOLL_FREE}),
            dids={"+81312340000": DidPolicy(announce=False)},
        ),
        TELE,
        [],
        "+81312349999",
        Route.CHALLENGE,
        True,
    ),
    (
        "withheld announcement (reject) is never announced",
        Policy(withheld_announcement=True, announce=frozenset({Category.WITHHELD})),
        "anonymous",
        [],
        None,
        Route.REJECT,
        False,
    ),
]


@pytest.mark.parametrize(
    ("policy", "raw", "entries", "did", "route", "announce"),
    [c[1:] for c in ANNOUNCE_CASES],
    ids=[c[0] for c in ANNOUNCE_CASES],
)
def test_announce_screening(
    policy: Policy,
    raw: str,
    entries: list[Entry],
    did: str | None,
    route: Route,
    announce: bool,
) -> None:
    """Announce applies per category or DID, to staff and challenge routes, never allow-listed."""
    decision = decide(normalize(raw, "JP"), entries, policy, NOW, did)
    assert (decision.route, decision.announce) == (route, announce)
    said = [r for r in decision.reasons if r.startswith("caller says who it is")]
    assert len(said) == (1 if announce else 0), decision.reasons
