"""Staff phones end to end: outside calls, learning from them, and feature codes *30 to *34.

Real SIP on the sandbox: the carrier instance is registered to the PBX as staff1 and staff2,
and dials the PBX as either phone (``PJSIP/<dialled>@as-staff1``), digest-authenticated, so
the PBX runs ``[from-staff]`` for it as for any softphone. Outside calls the PBX places arrive
back at the carrier (``UserEvent(OutsideCall)`` in its ``[carrier-in]``), with the caller ID the
PBX sent. See scripts/sandbox-carrier/README.md.

Run with ``-s`` to see the measured time from a staff phone's key press (its INVITE for the
dialled code reaching the PBX's dialplan) to the list change being committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from screener.ami import Event
from tests.conftest import ScreenerProcess
from tests.probe import Call, Probe, SandboxInfo, user_event

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

OFFICE_CALLERID = "0312345678"  # asterisk-conf/extensions.conf, OFFICE_CALLERID


async def staff_dial(probe: Probe, phone: str, dialled: str) -> Event:
    return await probe.staff_dial(phone, dialled)


async def feature(probe: Probe, phone: str, dialled: str) -> tuple[str, Event]:
    return await probe.feature(phone, dialled)


def entries(screener: ScreenerProcess, *args: str) -> dict[str, tuple[str, str]]:
    shown = screener.cli("list", "show", "--json", *args)
    assert shown.returncode == 0, shown.stderr
    return {e["number"]: (e["kind"], e["source"]) for e in json.loads(shown.stdout)}


def feature_lines(screener: ScreenerProcess) -> list[dict[str, Any]]:
    return [line for line in screener.lines() if line.get("event") == "staff feature"]


@contextlib.asynccontextmanager
async def staff_dial_only(probe: Probe, dial: str) -> AsyncIterator[None]:
    """Ring only these staff phones (the PBX's STAFF_DIAL global) while inside; then put back
    what it was (read, not assumed: later tests in the session ring whatever it was)."""
    got = await probe.pbx.ami.send({"Action": "Getvar", "Variable": "STAFF_DIAL"}, 5)
    original = got.get("Value") or ""
    assert original, "the PBX has no STAFF_DIAL to put back"
    await probe.pbx.ami.send({"Action": "Setvar", "Variable": "STAFF_DIAL", "Value": dial}, 5)
    try:
        yield
    finally:
        await probe.pbx.ami.send(
            {"Action": "Setvar", "Variable": "STAFF_DIAL", "Value": original}, 5
        )


async def rang(screener: ScreenerProcess, phone: str, call: Call, within: float = 20) -> None:
    """Wait until the screener noted that ``call`` rang ``phone``."""
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        if any(
            line.get("event") == "staff phone rang"
            and line.get("endpoint") == phone
            and line.get("call_id") == call.call_id
            for line in screener.lines()
        ):
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"the screener never saw {call.number} ring {phone}:\n{screener.tail()}")


async def test_outside_call_carries_the_office_id_and_its_number_rings_staff_after(
    screener: ScreenerProcess, probe: Probe
) -> None:
    """0 + number goes out through the trunk with the office caller ID and is learned as
    `called`, so the number's next call rings staff at once; 110 goes out directly, unlearned;
    a number without the prefix never reaches the trunk."""
    screener.start()
    assert probe.carrier is not None
    number = "0120444555"  # toll free: challenged, until staff call it
    await staff_dial(probe, "staff1", "0" + number)
    out = await probe.carrier.wait_for(user_event("OutsideCall", Number=number), 15)
    assert out.get("CallerIDNum") == OFFICE_CALLERID
    line = screener.wait_log("staff called out", 10)
    assert (line["endpoint"], line["number"]) == ("staff1", "+81120444555")
    assert entries(screener, "--source", "called") == {"+81120444555": ("allow", "called")}
    check = screener.cli("check", number)
    assert "staff called this number on" in check.stdout, check.stdout

    call = await probe.call_sip(number, hold=3)
    assert await probe.routed(call) == ("staff", False)

    await staff_dial(probe, "staff2", "110")
    emergency = await probe.carrier.wait_for(user_event("OutsideCall", Number="110"), 15)
    assert emergency.get("CallerIDNum") == OFFICE_CALLERID
    invalid = await staff_dial(probe, "staff2", "5551234")
    await probe.pbx.wait_for(
        lambda e: (
            e.name.lower() == "newexten"
            and e.get("Uniqueid") == invalid.get("Uniqueid")
            and e.get("Context") == "staff-invalid"
        ),
        10,
    )
    assert not probe.carrier.matching(user_event("OutsideCall", Number="5551234"))
    assert not probe.carrier.matching(user_event("OutsideCall", Number="551234"))
    # Toll fraud: calls abroad and to premium lines are refused by default.
    for refused in ("010442071234567", "0990123456"):
        dialled = await staff_dial(probe, "staff2", "0" + refused)
        await probe.pbx.wait_for(
            lambda e, d=dialled: (
                e.name.lower() == "newexten"
                and e.get("Uniqueid") == d.get("Uniqueid")
                and e.get("Context") == "staff-invalid"
            ),
            10,
        )
        assert not probe.carrier.matching(user_event("OutsideCall", Number=refused))
    called = [x for x in screener.lines() if x.get("event") == "staff called out"]
    assert len(called) == 1  # 110 was not learned, nor was the invalid number
    forgot = screener.cli("list", "forget", number)
    assert "forgot 1 learned entries" in forgot.stdout
    assert entries(screener) == {}


async def test_feature_codes_block_remove_and_undo(screener: ScreenerProcess, probe: Probe) -> None:
    """*30 + number blocks it, *31 removes it, *34 undoes one change at a time; each says so."""
    screener.start()
    number, e164 = "0120555666", "+81120555666"
    assert (await feature(probe, "staff1", "*30" + number))[0] == "blocked"
    assert entries(screener) == {e164: ("block", "staff:staff1")}
    assert (await feature(probe, "staff1", "*31" + number))[0] == "removed"
    assert entries(screener) == {}
    assert (await feature(probe, "staff1", "*31" + number))[0] == "notlisted"
    assert (await feature(probe, "staff2", "*34"))[0] == "nothing"  # not staff2's change
    assert (await feature(probe, "staff1", "*34"))[0] == "undone"
    assert entries(screener) == {e164: ("block", "staff:staff1")}
    assert (await feature(probe, "staff1", "*34"))[0] == "undone"
    assert entries(screener) == {}
    assert (await feature(probe, "staff1", "*34"))[0] == "nothing"
    alone = await staff_dial(probe, "staff1", "*30")  # no number: the screener is not asked
    await probe.pbx.wait_for(
        lambda e: (
            e.get("Uniqueid") == alone.get("Uniqueid") and e.get("Context") == "staff-invalid"
        ),
        10,
    )
    results = [line["result"] for line in feature_lines(screener)]
    assert results == ["blocked", "removed", "notlisted", "nothing", "undone", "undone", "nothing"]


async def test_block_last_caller_is_per_phone_survives_a_restart_and_is_measured(
    screener: ScreenerProcess, probe: Probe
) -> None:
    """*32 blocks the last caller that rang the phone that keys it (known after a restart),
    never another phone's, and that caller's next call goes to voicemail; *33 on the other
    phone allows its own last caller."""
    screener.start()
    first, second = "0312340001", "0312340002"  # fixed lines: staff ring at once
    a = await probe.call_sip(first, hold=4)
    assert await probe.routed(a) == ("staff", False)
    await rang(screener, "staff1", a)
    await rang(screener, "staff2", a)
    async with staff_dial_only(probe, "PJSIP/staff1"):
        b = await probe.call_sip(second, hold=4)
        assert await probe.routed(b) == ("staff", False)
        await rang(screener, "staff1", b)
    assert screener.stop() == 0
    screener.start(wait=False)  # the last callers are in the database, not only in memory
    screener.wait_all("screener running", 2, within=20)

    result, pressed = await feature(probe, "staff1", "*32")
    assert result == "blocked"
    assert entries(screener) == {"+81312340002": ("block", "staff:staff1")}
    assert (await feature(probe, "staff2", "*33"))[0] == "allowed"
    assert entries(screener) == {
        "+81312340002": ("block", "staff:staff1"),
        "+81312340001": ("allow", "staff:staff2"),
    }
    again = await probe.call_sip(second, hold=3)
    assert await probe.routed(again) == ("voicemail", False)

    line = feature_lines(screener)[0]
    key_to_change = float(line["changed_at"]) - float(pressed.get("Timestamp") or "nan")
    print(
        f"\n[staff *32] key press (INVITE in the PBX's dialplan) → list change committed:"
        f" {key_to_change * 1000:.1f} ms (screener's own share, event → commit:"
        f" {line['key_to_change_ms']:.1f} ms)"
    )
    assert 0 < key_to_change < 10


async def test_withheld_last_caller_cannot_be_listed(
    sandbox: SandboxInfo, probe: Probe, tmp_path: Path
) -> None:
    """A withheld caller that rang staff cannot be blocked by number: the phone is told so."""
    config = tmp_path / "screener.toml"
    config.write_text('[policy.categories]\nwithheld = "staff"\n', encoding="utf-8")
    screener = ScreenerProcess(sandbox, tmp_path / "run", SCREENER_CONFIG=str(config))
    try:
        screener.start()
        assert (await feature(probe, "staff1", "*32"))[0] == "nocaller"
        call = await probe.call_sip("anonymous", hold=4)
        assert await probe.routed(call) == ("staff", False)
        await rang(screener, "staff1", call)
        assert (await feature(probe, "staff1", "*32"))[0] == "withheld"
        assert entries(screener) == {}
    finally:
        screener.stop()
