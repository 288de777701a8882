"""Staff phones' learning rules and feature codes, table-tested with a fixed clock
(screener.learning.learn_called, screener.featurecodes), and their transactions on a real
SQLite file (screener.store: StaffFeature, SetLastCaller, LearnCalled)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from screener.featurecodes import Code, Result, Rule, parse_code, source_of
from screener.learning import called_rule, learn_called
from screener.numbers import normalize
from screener.policy import (
    SOURCE_CALLED,
    SOURCE_LEARNED,
    SOURCE_MANUAL,
    Entry,
    ListKind,
    Policy,
    decide,
)
from screener.store import (
    CallRecord,
    FeatureResult,
    LastCaller,
    LearnCalled,
    RecordCall,
    SetLastCaller,
    StaffChange,
    StaffFeature,
    Store,
)

NOW = dt.datetime(2026, 11, 30, 3, 0, tzinfo=dt.UTC)
PAST = NOW - dt.timedelta(days=1)
NUM = "+81120121852"
ALLOW, BLOCK = ListKind.ALLOW, ListKind.BLOCK
POLICY = Policy(called_days=180)


def e(kind: ListKind, source: str = SOURCE_MANUAL, **kw: object) -> Entry:
    return Entry(kind=kind, number=NUM, created_at=PAST, source=source, **kw)  # type: ignore[arg-type]


# -- learning from outgoing calls -----------------------------------------------------------


@pytest.mark.parametrize(
    ("dialled", "existing", "learned"),
    [
        ("0120121852", None, True),  # a new number: learned
        ("0120121852", e(ALLOW, SOURCE_CALLED, hits=4), True),  # called again: refreshed
        ("0120121852", e(ALLOW, SOURCE_LEARNED), True),  # passed a challenge: now called
        ("0120121852", e(BLOCK, SOURCE_LEARNED), True),  # auto-blocked, but staff called it
        ("0120121852", e(BLOCK), False),  # a manual block wins
        ("0120121852", e(ALLOW), False),  # so does a manual allow (nothing to add)
        ("0120121852", e(BLOCK, "import:crm.csv"), False),  # an imported entry
        ("0120121852", e(BLOCK, source_of("staff2")), False),  # a staff phone's block
        ("0120121852", e(BLOCK, expires_at=PAST), True),  # an expired manual entry
        ("12", None, False),  # no usable number
        ("anonymous", None, False),
    ],
)
def test_learn_called(dialled: str, existing: Entry | None, learned: bool) -> None:
    """A number called out is a `called` allow entry for called_days, unless the office's
    own word holds the number; learned entries give way; an older `called` keeps its hits."""
    got = learn_called(normalize(dialled, "JP"), "staff1", existing, POLICY, NOW)
    assert (got is not None) == learned
    if got is not None:
        assert (got.kind, got.number, got.source) == (ALLOW, NUM, SOURCE_CALLED)
        assert got.expires_at == NOW + dt.timedelta(days=180)
        assert got.label == "staff called this number on 2026-11-30 (staff1)"
        kept = existing is not None and existing.source == SOURCE_CALLED
        assert got.hits == (existing.hits if kept and existing else 0)


def test_called_days_zero_learns_nothing() -> None:
    """learning.called_days = 0 turns learning from outgoing calls off."""
    rule = called_rule(normalize("0120121852", "JP"), "staff1", Policy(called_days=0), NOW)
    assert rule(None) is None


def test_called_entry_rings_staff_and_says_why_until_it_expires() -> None:
    """`check` shows a called entry's reason ("staff called this number on ..."); once
    expired, the caller is challenged again."""
    caller = normalize("0120121852", "JP")
    entry = learn_called(caller, "staff1", None, POLICY, NOW)
    assert entry is not None
    decision = decide(caller, [entry], POLICY, NOW + dt.timedelta(days=1))
    assert (decision.route.value, decision.rule) == ("staff", "exact-allow")
    assert any("staff called this number on 2026-11-30" in r for r in decision.reasons)
    expired = decide(caller, [entry], POLICY, NOW + dt.timedelta(days=181))
    assert expired.route.value == "challenge"


# -- feature codes ---------------------------------------------------------------------------


def last(e164: str | None = NUM) -> LastCaller:
    return LastCaller("staff1", "1700.1", e164, e164 or "anonymous", "toll_free", PAST)


def change(before: Entry | None, after: Entry | None) -> StaffChange:
    return StaffChange(7, "staff1", PAST, "blocklast", NUM, before, after)


STAFF_BLOCK = e(BLOCK, source_of("staff1"), label="blocked from staff1 (*32)")


@pytest.mark.parametrize(
    ("code", "number", "last_caller", "undo", "existing", "result", "after"),
    [
        (Code.BLOCK, NUM, None, None, None, Result.BLOCKED, BLOCK),
        (Code.BLOCK, NUM, None, None, e(ALLOW, SOURCE_CALLED), Result.BLOCKED, BLOCK),
        (Code.BLOCK, None, None, None, None, Result.INVALID, None),
        (Code.UNBLOCK, NUM, None, None, e(BLOCK), Result.REMOVED, None),
        (Code.UNBLOCK, NUM, None, None, e(ALLOW), Result.REMOVED, None),
        (Code.UNBLOCK, NUM, None, None, None, Result.NOT_LISTED, None),
        (Code.UNBLOCK, None, None, None, None, Result.INVALID, None),
        (Code.BLOCK_LAST, None, last(), None, None, Result.BLOCKED, BLOCK),
        (Code.BLOCK_LAST, None, last(), None, e(ALLOW), Result.BLOCKED, BLOCK),
        (Code.BLOCK_LAST, None, last(None), None, None, Result.WITHHELD, None),
        (Code.BLOCK_LAST, None, None, None, None, Result.NO_CALLER, None),
        (Code.ALLOW_LAST, None, last(), None, e(BLOCK, SOURCE_LEARNED), Result.ALLOWED, ALLOW),
        (Code.ALLOW_LAST, None, last(None), None, None, Result.WITHHELD, None),
        (Code.ALLOW_LAST, None, None, None, None, Result.NO_CALLER, None),
        (Code.UNDO, None, last(), None, None, Result.NOTHING, None),
        (Code.UNDO, None, None, change(None, STAFF_BLOCK), STAFF_BLOCK, Result.UNDONE, None),
        (Code.UNDO, None, None, change(e(ALLOW), STAFF_BLOCK), STAFF_BLOCK, Result.UNDONE, ALLOW),
        (Code.UNDO, None, None, change(e(BLOCK), None), None, Result.UNDONE, BLOCK),
        # changed since by someone else: not put back
        (Code.UNDO, None, None, change(None, STAFF_BLOCK), e(ALLOW), Result.CHANGED, None),
        (Code.UNDO, None, None, change(e(BLOCK), None), e(ALLOW), Result.CHANGED, None),
    ],
)
def test_feature_code_plan(
    code: Code,
    number: str | None,
    last_caller: LastCaller | None,
    undo: StaffChange | None,
    existing: Entry | None,
    result: Result,
    after: ListKind | None,
) -> None:
    """Each code's result and the exact entry it leaves (source staff:<endpoint>, no expiry)."""
    rule = Rule(code, "staff1", NOW, number)
    target = rule.target(last_caller, undo)
    plan = rule.plan(last_caller, undo, existing)
    assert plan.result is result or plan.result == result.value
    changes = result in (Result.BLOCKED, Result.ALLOWED, Result.REMOVED, Result.UNDONE)
    assert plan.apply == changes
    if changes:
        assert plan.number == target == NUM
        assert plan.before == existing
        assert (plan.after.kind if plan.after else None) == after
    if changes and code is not Code.UNDO and plan.after is not None:
        assert (plan.after.source, plan.after.expires_at) == ("staff:staff1", None)
    assert (plan.undo_of is not None) == (code is Code.UNDO and undo is not None)


@pytest.mark.parametrize(
    ("text", "code"),
    [("block", Code.BLOCK), ("BlockLast", Code.BLOCK_LAST), ("undo ", Code.UNDO), ("x", None)],
)
def test_parse_code(text: str, code: Code | None) -> None:
    """The event's Code header names a code, case-insensitively; anything else is None."""
    assert parse_code(text) == code


# -- the transactions ---------------------------------------------------------------------------


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store.open(tmp_path / "s.db") as s:
        yield s


def call(call_id: str, e164: str | None, raw: str, category: str) -> RecordCall:
    return RecordCall(
        CallRecord(call_id, NOW, raw, "", e164, category, None, "staff", "category", (), 1.0)
    )


async def feature(store: Store, endpoint: str, code: Code, number: str | None = None) -> str:
    (done,) = await store.apply(
        [StaffFeature(endpoint, code.value, NOW, Rule(code, endpoint, NOW, number))]
    )
    assert isinstance(done, FeatureResult)
    return done.plan.result


async def test_last_caller_is_per_endpoint_and_read_from_the_call_log(store: Store) -> None:
    """*32 blocks the last caller of the phone that keys it, never another phone's; a caller
    the service forgot (a restart) is read from the call log."""
    await store.apply(
        [
            call("c1", "+81120111111", "0120111111", "toll_free"),
            call("c2", "+81120222222", "0120222222", "toll_free"),
            SetLastCaller("staff1", "c1", NOW),
            SetLastCaller("staff2", "c1", NOW),
            SetLastCaller("staff1", "c2", NOW),  # staff1 only
            SetLastCaller("staff2", "unknown-call", NOW),  # not in the log: no change
        ]
    )
    assert {c.endpoint: c.e164 for c in await store.last_callers()} == {
        "staff1": "+81120222222",
        "staff2": "+81120111111",
    }
    assert await feature(store, "staff1", Code.BLOCK_LAST) == "blocked"
    assert [(x.number, x.kind, x.source) for x in await store.entries()] == [
        ("+81120222222", BLOCK, "staff:staff1")
    ]
    assert await feature(store, "staff2", Code.ALLOW_LAST) == "allowed"
    kinds = {x.number: (x.kind, x.source) for x in await store.entries()}
    assert kinds["+81120111111"] == (ALLOW, "staff:staff2")
    assert kinds["+81120222222"] == (BLOCK, "staff:staff1")
    outbox = await store.outbox(topic="staff_change")
    assert [(o.payload["endpoint"], o.payload["result"]) for o in outbox] == [
        ("staff1", "blocked"),
        ("staff2", "allowed"),
    ]


async def test_withheld_last_caller_and_no_caller(store: Store) -> None:
    """A withheld last caller cannot be listed; a phone no call rang has no last caller."""
    await store.apply([call("w", None, "anonymous", "withheld"), SetLastCaller("staff1", "w", NOW)])
    assert await feature(store, "staff1", Code.BLOCK_LAST) == "withheld"
    assert await feature(store, "staff2", Code.BLOCK_LAST) == "nocaller"
    assert await store.entries() == []


async def test_undo_walks_back_one_change_at_a_time(store: Store) -> None:
    """*34 restores the entry each change replaced, newest first, then has nothing left."""
    await store.add(Entry(kind=ALLOW, number=NUM, created_at=PAST, label="customer"))
    assert await feature(store, "staff1", Code.BLOCK, NUM) == "blocked"
    assert await feature(store, "staff1", Code.UNBLOCK, NUM) == "removed"
    assert await store.entries() == []
    assert await feature(store, "staff2", Code.UNDO) == "nothing"  # not staff2's change
    assert await feature(store, "staff1", Code.UNDO) == "undone"  # the removal
    assert [(x.kind, x.source) for x in await store.entries()] == [(BLOCK, "staff:staff1")]
    assert await feature(store, "staff1", Code.UNDO) == "undone"  # the block
    (back,) = await store.entries()
    assert (back.kind, back.source, back.label, back.created_at) == (
        ALLOW,
        "manual",
        "customer",
        PAST,
    )
    assert await feature(store, "staff1", Code.UNDO) == "nothing"
    assert [c.undone_at is not None for c in await store.staff_changes("staff1")] == [True, True]


async def test_undo_does_not_overwrite_a_later_change(store: Store) -> None:
    """A change someone else made since is kept: *34 says `changed` and moves on."""
    assert await feature(store, "staff1", Code.BLOCK, NUM) == "blocked"
    await store.add(Entry(kind=ALLOW, number=NUM, created_at=NOW, label="the boss says so"))
    assert await feature(store, "staff1", Code.UNDO) == "changed"
    assert [(x.kind, x.label) for x in await store.entries()] == [(ALLOW, "the boss says so")]
    assert await feature(store, "staff1", Code.UNDO) == "nothing"


async def test_called_entries_are_listed_and_forgotten_but_manual_ones_win(store: Store) -> None:
    """LearnCalled stores a `called` entry; a manual block stays; forget removes `called`."""
    rule = called_rule(normalize("0120121852", "JP"), "staff1", POLICY, NOW)
    (stored,) = await store.apply([LearnCalled(NUM, NOW, rule)])
    assert isinstance(stored, Entry) and stored.source == SOURCE_CALLED
    assert [x.number for x in await store.entries(source=SOURCE_CALLED)] == [NUM]
    assert await store.forget_learned(sources=(SOURCE_LEARNED,)) == 0
    assert await store.forget_learned(NUM, sources=(SOURCE_LEARNED, SOURCE_CALLED)) == 1
    await store.add(Entry(kind=BLOCK, number=NUM, created_at=PAST))
    (kept,) = await store.apply([LearnCalled(NUM, NOW, rule)])
    assert kept is None
    assert [(x.kind, x.source) for x in await store.entries()] == [(BLOCK, "manual")]
    with pytest.raises(ValueError, match="forget takes only"):
        await store.forget_learned(sources=(SOURCE_MANUAL,))


def test_every_result_has_a_prompt() -> None:
    """Each result the screener can send has a rendered Japanese prompt and dialplan globals."""
    from screener.prompts import PROMPT_NAMES, STAFF_RESULTS

    assert set(STAFF_RESULTS) == {r.value for r in Result}
    assert {f"staff-{r.value}" for r in Result} <= set(PROMPT_NAMES)


@pytest.mark.slow  # the console's store (and its imports) take half a second the first time
async def test_the_console_forgets_called_entries_too(store: Store, tmp_path: Path) -> None:
    """The web console's forget takes a `called` entry off the lists, and leaves staff ones."""
    from screener.webstore import WebStore

    rule = called_rule(normalize("0120121852", "JP"), "staff1", POLICY, NOW)
    await store.apply([LearnCalled(NUM, NOW, rule)])
    assert await feature(store, "staff1", Code.BLOCK, "+81312345678") == "blocked"
    with WebStore.open(tmp_path / "s.db") as web:
        assert web.forget(NUM, "admin", NOW) == 1
        assert web.forget("+81312345678", "admin", NOW) == 0
    assert [x.source for x in await store.entries()] == ["staff:staff1"]
