"""The DTMF challenge end to end: real Asterisk, real SIP (RFC 4733 DTMF from the carrier).

The caller side is the sandbox carrier's ``caller`` context, which keys digits in with
``SendDTMF``; the code it must key is the one the screener picked, read off the PBX's
``Newexten`` event for ``screen-challenge`` (a robodialer has no such view).
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from tests.conftest import ScreenerProcess
from tests.probe import Call, Probe, user_event

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


async def outcome_of(probe: Probe, call: Call, within: float = 60) -> str:
    event = await probe.pbx.wait_for(user_event("ScreenChallenge", call.call_id), within)
    return (event.get("Outcome") or "").lower()


async def routes_of(probe: Probe, call: Call) -> list[str]:
    return [
        (e.get("Route") or "").lower()
        for e in probe.pbx.matching(user_event("ScreenRouted", call.call_id))
    ]


def call_row(screener: ScreenerProcess, call: Call) -> dict[str, object] | None:
    rows = json.loads(screener.cli("calls", "--json", "--limit", "200").stdout)
    return next((r for r in rows if r["call_id"] == call.call_id), None)


async def wait_row(
    screener: ScreenerProcess, call: Call, key: str = "route", within: float = 10
) -> dict[str, object]:
    """The call's log row once ``key`` is filled in (outcomes arrive after the event)."""
    deadline = time.monotonic() + within
    while True:
        row = call_row(screener, call)
        if row is not None and row.get(key):
            return row
        if time.monotonic() > deadline:
            rows = screener.cli("calls", "--json").stdout
            pytest.fail(f"call {call.call_id} has no {key} in the call log: {row}; {rows}")
        await asyncio.sleep(0.2)


async def test_right_code_rings_staff_and_verifies_the_caller(
    screener: ScreenerProcess, probe: Probe
) -> None:
    """A caller who keys the code it hears reaches staff; its next call skips the challenge."""
    screener.start()
    number = "08001230001"
    call = await probe.call_sip(number, dtmf="wait", dtmf_delay=3.5, hold=6)
    assert await probe.routed(call) == ("challenge", False)
    answered = time.monotonic()
    code = await probe.challenge_code(call)
    assert len(code) == 2 and code.isdigit() and len(set(code)) == 2
    await probe.send_code(call, code)
    assert await outcome_of(probe, call) == "pass"
    await probe.staff_dialled(call)
    to_staff = time.monotonic() - answered
    assert probe.carrier is not None
    await probe.carrier.wait_for(user_event("StaffRinging"), 10)
    assert await routes_of(probe, call) == ["challenge", "staff"]
    assert (await wait_row(screener, call, "outcome"))["outcome"] == "pass"
    print(f"answer → staff dialled: {to_staff:.2f} s")  # the figure quoted in the README

    learned = json.loads(screener.cli("list", "show", "--source", "learned", "--json").stdout)
    assert [(e["number"], e["kind"]) for e in learned] == [("+818001230001", "allow")]
    again = await probe.call_sip(number, hold=3)
    assert await probe.routed(again) == ("staff", False)
    assert (await wait_row(screener, again))["rule"] == "exact-allow"


async def test_wrong_code_every_attempt_goes_to_voicemail(
    screener: ScreenerProcess, probe: Probe
) -> None:
    """A robodialer keying wrong digits fails all three attempts and lands in voicemail."""
    screener.start()
    # "00" is never a code: codes are never one repeated digit.
    call = await probe.call_sip("0120999001", dtmf="00", dtmf_delay=3, repeat=3, hold=5)
    assert await probe.routed(call) == ("challenge", False)
    assert await outcome_of(probe, call) == "fail"
    await probe.pbx.wait_for(user_event("ScreenRouted", call.call_id, Route="voicemail"), 10)
    row = await wait_row(screener, call, "outcome")
    assert (row["route"], row["outcome"]) == ("challenge", "fail")


async def test_silence_times_out_to_voicemail(screener: ScreenerProcess, probe: Probe) -> None:
    """A caller that keys nothing times out (after every attempt) into voicemail."""
    screener.start()
    call = await probe.call_sip("0120999002", hold=60)
    assert await probe.routed(call) == ("challenge", False)
    assert await outcome_of(probe, call, within=90) == "timeout"
    await probe.pbx.wait_for(user_event("ScreenRouted", call.call_id, Route="voicemail"), 10)
    assert (await wait_row(screener, call, "outcome"))["outcome"] == "timeout"


async def test_hangup_during_the_challenge_is_recorded(
    screener: ScreenerProcess, probe: Probe
) -> None:
    """A caller that hangs up mid-challenge is recorded with outcome hangup."""
    screener.start()
    call = await probe.call_local("0120999003")
    assert await probe.routed(call) == ("challenge", False)
    await asyncio.sleep(1)
    await probe.hangup(call)
    assert await outcome_of(probe, call, within=10) == "hangup"
    assert (await wait_row(screener, call, "outcome"))["outcome"] == "hangup"


async def test_third_failure_auto_blocks(screener: ScreenerProcess, probe: Probe) -> None:
    """Three failed challenges within the window block the number; the next call → voicemail."""
    screener.start()
    number = "0120999004"
    calls = [
        await probe.call_sip(number, dtmf="00", dtmf_delay=3, repeat=3, hold=5) for _ in range(3)
    ]
    outcomes = await asyncio.gather(*(outcome_of(probe, c) for c in calls))
    assert outcomes == ["fail"] * 3
    for c in calls:
        await wait_row(screener, c, "outcome")
    await asyncio.sleep(0.5)
    learned = json.loads(screener.cli("list", "show", "--source", "learned", "--json").stdout)
    assert [(e["number"], e["kind"]) for e in learned] == [("+81120999004", "block")]
    fourth = await probe.call_sip(number, hold=3)
    assert await probe.routed(fourth) == ("voicemail", False)
    assert (await wait_row(screener, fourth))["rule"] == "exact-block"
