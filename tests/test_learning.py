"""The learning rules, table-tested with a fixed clock (screener.learning)."""

from __future__ import annotations

import datetime as dt

import pytest

from screener.learning import caller_from_record, is_auto_block, learn, rule
from screener.numbers import Category, normalize
from screener.policy import SOURCE_LEARNED, Entry, ListKind, Outcome, Policy
from screener.store import CallRecord

NOW = dt.datetime(2026, 11, 30, 3, 0, tzinfo=dt.UTC)
PAST = NOW - dt.timedelta(days=1)
TELE = "0120-121-852"
TELE_E164 = "+81120121852"
ALLOW, BLOCK = ListKind.ALLOW, ListKind.BLOCK


def e(kind: ListKind, number: str, prefix: bool = False, **kw: object) -> Entry:
    return Entry(kind=kind, number=number, prefix=prefix, created_at=PAST, **kw)  # type: ignore[arg-type]


def record(category: str, e164: str | None = TELE_E164) -> CallRecord:
    return CallRecord(
        call_id="1700000000.1",
        received_at=NOW,
        raw_number=TELE,
        raw_name="",
        e164=e164,
        category=category,
        did=None,
        route="challenge",
        rule="category",
        reasons=(),
        latency_ms=1.0,
    )


LEARN = Policy(verified_days=90, fail_threshold=3, autoblock_days=30)


@pytest.mark.parametrize(
    ("outcome", "existing", "failures", "kind", "days"),
    [
        (Outcome.PASS, None, 0, ALLOW, 90),
        (Outcome.PASS, e(ALLOW, TELE_E164, source=SOURCE_LEARNED), 0, ALLOW, 90),
        (Outcome.PASS, e(BLOCK, TELE_E164, source=SOURCE_LEARNED), 5, ALLOW, 90),
        (Outcome.PASS, e(BLOCK, TELE_E164), 0, None, None),  # manual wins
        (Outcome.PASS, e(BLOCK, TELE_E164, expires_at=PAST), 0, ALLOW, 90),  # expired manual
        (Outcome.FAIL, None, 0, None, None),
        (Outcome.FAIL, None, 1, None, None),
        (Outcome.FAIL, None, 2, BLOCK, 30),  # the third failure
        (Outcome.TIMEOUT, None, 2, BLOCK, 30),
        (Outcome.TIMEOUT, e(ALLOW, TELE_E164), 9, None, None),  # manual wins
        (Outcome.HANGUP, None, 9, None, None),
    ],
)
def test_learning(
    outcome: Outcome, existing: Entry | None, failures: int, kind: ListKind | None, days: int | None
) -> None:
    """Passing verifies a caller; the third failure in the window blocks; manual entries win."""
    learned = learn(normalize(TELE), outcome, existing, failures, LEARN, NOW)
    if kind is None:
        assert learned is None
        return
    assert learned is not None
    assert (learned.kind, learned.number, learned.source) == (kind, TELE_E164, SOURCE_LEARNED)
    assert learned.expires_at == NOW + dt.timedelta(days=days or 0)


def test_learning_needs_a_number() -> None:
    """Withheld callers cannot be learned: there is nothing to key the entry on."""
    assert learn(normalize("anonymous"), Outcome.PASS, None, 0, LEARN, NOW) is None


@pytest.mark.parametrize(
    ("category", "e164", "outcome", "failures", "kind"),
    [
        ("toll_free", TELE_E164, Outcome.PASS, 0, ALLOW),
        ("toll_free", TELE_E164, Outcome.FAIL, 2, BLOCK),
        ("invalid", None, Outcome.PASS, 0, None),  # a verdict of invalid learns nothing
        ("no-such-category", None, Outcome.FAIL, 5, None),
    ],
)
def test_rule_reads_the_caller_from_the_call_log(
    category: str, e164: str | None, outcome: Outcome, failures: int, kind: ListKind | None
) -> None:
    """Without a remembered caller, the rule learns from the verdict the call log kept."""
    learned = rule(None, outcome, LEARN, NOW)(record(category, e164), None, failures)
    assert (learned.kind if learned else None) == kind
    if learned is not None:
        assert is_auto_block(learned) is (kind is BLOCK)


def test_rule_prefers_the_remembered_caller_and_needs_one() -> None:
    """A remembered caller is used as is; with neither caller nor record nothing is learned."""
    learned = rule(normalize(TELE), Outcome.PASS, LEARN, NOW)(None, None, 0)
    assert learned is not None and learned.number == TELE_E164
    assert rule(None, Outcome.PASS, LEARN, NOW)(None, None, 0) is None


def test_unknown_category_in_the_log_reads_as_invalid() -> None:
    """A category this screener does not know (a newer one, or damage) is taken as invalid."""
    assert caller_from_record(record("martian")).category is Category.INVALID


def test_learned_entries_say_what_was_learned_and_when() -> None:
    """A learned allow or block entry carries its label and the time it was learned."""
    allow = learn(normalize(TELE), Outcome.PASS, None, 0, LEARN, NOW)
    block = learn(normalize(TELE), Outcome.FAIL, None, 2, LEARN, NOW)
    assert allow is not None and block is not None
    assert (allow.label, allow.created_at) == ("passed the challenge", NOW)
    assert (block.label, block.created_at) == ("failed the challenge 3 times", NOW)


@pytest.mark.parametrize(
    ("threshold", "blocked"), [(0, False), (1, True), (2, False)]
)  # fmt: skip
def test_fail_threshold_zero_never_blocks_and_one_blocks_at_once(
    threshold: int, blocked: bool
) -> None:
    """fail_threshold 0 turns the auto-block off; 1 blocks on the first failure."""
    policy = Policy(fail_threshold=threshold)
    learned = learn(normalize(TELE), Outcome.TIMEOUT, None, 0, policy, NOW)
    assert (learned is not None and learned.kind is BLOCK) is blocked
