"""What a staff phone chose (announce screening, *0 during a call): the event read by the contract
(pure, table-tested) and its way through the service into the call log and the lists."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from screener.ami import Event
from screener.dialplan import STAFF_CHOICES, StaffChoice, screen_options
from screener.numbers import Category, normalize
from screener.policy import Decision, ListKind, Route
from screener.screening import Screening
from screener.store import Store
from tests.fakeami import FakeAMI
from tests.test_service import (
    TOLL_FREE,
    eventually,
    make_config,
    new_call_id,
    request,
    serving,
    snapshot,
)


def staff_event(duplicated: frozenset[str] = frozenset(), **body: str) -> Event:
    headers = {"Event": "UserEvent", "UserEvent": "ScreenStaffChoice", "Uniqueid": "9.9", **body}
    return Event("UserEvent", headers, 0.0, duplicated)  # type: ignore[arg-type]


PARSE_CASES = [
    # id, body, duplicated, expected (call id, choice, staff, kind) or None
    (
        "connect",
        {"Call": "1.5", "Choice": "connect", "Staff": "staff1"},
        (),
        ("1.5", "connect", None),
    ),
    ("block", {"Call": "1.5", "Choice": "BLOCK", "Staff": "staff3"}, (), ("1.5", "block", "block")),
    ("allow", {"Call": "1.5", "Choice": "allow", "Staff": "s"}, (), ("1.5", "allow", "allow")),
    (
        "*0",
        {"Call": "p-1_a", "Choice": "block-in-call", "Staff": "staff2"},
        (),
        ("p-1_a", "block-in-call", "block"),
    ),
    (
        "timeout",
        {"Call": "1.5", "Choice": "timeout", "Staff": "staff1"},
        (),
        ("1.5", "timeout", None),
    ),
    ("unknown choice", {"Call": "1.5", "Choice": "torture", "Staff": "staff1"}, (), None),
    ("no call", {"Choice": "block", "Staff": "staff1"}, (), None),
    ("no staff", {"Call": "1.5", "Choice": "block"}, (), None),
    ("odd staff", {"Call": "1.5", "Choice": "block", "Staff": "staff 1"}, (), None),
    ("odd call id", {"Call": "1.5\x00", "Choice": "block", "Staff": "staff1"}, (), None),
    ("repeated choice", {"Call": "1.5", "Choice": "allow", "Staff": "staff1"}, ("choice",), None),
    ("repeated call", {"Call": "1.5", "Choice": "allow", "Staff": "staff1"}, ("call",), None),
]


@pytest.mark.parametrize(
    ("body", "duplicated", "expected"),
    [c[1:] for c in PARSE_CASES],
    ids=[c[0] for c in PARSE_CASES],
)
def test_staff_choice_event_is_read_strictly(
    body: dict[str, str], duplicated: tuple[str, ...], expected: tuple[str, str, str | None] | None
) -> None:
    """Only the choices the dialplan sends, with a call id and an endpoint, never repeated."""
    got = StaffChoice.from_event(staff_event(frozenset(duplicated), **body))
    if expected is None:
        assert got is None
        return
    assert got is not None
    kind = None if got.kind is None else str(got.kind)
    assert (got.call_id, got.choice, kind) == expected


def test_only_block_and_allow_choices_make_entries() -> None:
    """Keys 3 and *0 block the number from now on, key 4 allows it; nothing else lists it."""
    listed = {c: k for c, k in STAFF_CHOICES.items() if k is not None}
    assert listed == {
        "block": ListKind.BLOCK,
        "block-in-call": ListKind.BLOCK,
        "allow": ListKind.ALLOW,
    }


@pytest.mark.parametrize(
    ("language", "record", "announce", "expected"),
    [("ja", False, False, "ja-no-no"), ("en", True, False, "en-yes-no"),
     ("ja", True, True, "ja-yes-yes"), ("ja", False, True, "ja-no-yes")],
)  # fmt: skip
def test_screen_options_carry_announce_third(
    language: str, record: bool, announce: bool, expected: str
) -> None:
    """SCREEN_OPTIONS is <language>-<record>-<announce>: older fields keep their places."""
    decision = Decision(
        Route.STAFF, "category", (), language=language, record=record, announce=announce
    )
    screening = Screening(normalize("0312345678", "JP"), None, (), decision)
    assert screen_options(screening) == expected


@pytest.mark.slow
async def test_staff_block_lists_the_caller_and_is_shown_on_the_call(
    fake: FakeAMI, tmp_path: Path
) -> None:
    """Key 3 on an announced toll-free call blocks the number as staff:<phone>; a forged event
    (a repeated Choice) changes nothing."""
    db = tmp_path / "screener.db"
    config = make_config(fake, db)
    config = dataclasses.replace(
        config,
        policy=dataclasses.replace(config.policy, announce=frozenset({Category.TOLL_FREE})),
    )
    async with serving(config, fake) as svc:
        call_id, forged = new_call_id(), new_call_id()
        for c in (call_id, forged):
            await fake.emit(request(c, TOLL_FREE))
        await svc.redirects(2)
        await svc.call(forged)
        options = {a.get("Channel"): a.get("Value") for a in fake.actions("Setvar")}
        assert options[call_id] == "ja-no-yes"
        staff_leg = new_call_id()
        leg = {"Channel": "PJSIP/staff3-0000002a"}
        await fake.emit(
            snapshot(staff_leg, TOLL_FREE, user_event="ScreenStaffChoice",
                     context="screen-staff-choice", Call=forged, Choice="allow", Staff="staff3")
            | leg
            | {"choice": "allow"}  # the same header twice, as forged caller data would make it
        )  # fmt: skip
        # Raised anywhere but the dialplan's own context, or naming another phone than the one
        # whose channel raised it: ignored.
        await fake.emit(
            snapshot(staff_leg, TOLL_FREE, user_event="ScreenStaffChoice",
                     Call=forged, Choice="allow", Staff="staff3") | leg
        )  # fmt: skip
        await fake.emit(
            snapshot(staff_leg, TOLL_FREE, user_event="ScreenStaffChoice",
                     context="screen-staff-choice", Call=forged, Choice="allow", Staff="staff1")
            | leg
        )  # fmt: skip
        await fake.emit(
            snapshot(staff_leg, TOLL_FREE, user_event="ScreenStaffChoice",
                     context="screen-staff-choice", Call=call_id, Choice="block", Staff="staff3")
            | leg
        )  # fmt: skip

        async def chosen() -> dict[str, tuple[str, str | None]] | None:
            async with Store.open(db, readonly=True) as store:
                found = await store.staff_choices([call_id, forged])
            return found or None

        assert await eventually(chosen) == {call_id: ("block", "staff3")}
    async with Store.open(db, readonly=True) as store:
        entry = await store.get("+81120121852", False)
    assert entry is not None and (entry.kind, entry.source) == (ListKind.BLOCK, "staff:staff3")
