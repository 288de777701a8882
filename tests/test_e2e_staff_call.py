"""Staff in control during a call, end to end over real SIP: announce screening and *0.

The caller is the sandbox carrier's ``caller`` context; the staff phone is the carrier's staff1
(its ``[carrier-in]`` answers and keys ``STAFF1_DTMF``, a global each test sets and puts back)
or, in one test, Debian's baresip registered as staff3 (tests/softphone.py). Every wait is for
an event: the PBX's ``ScreenStaffChoice``, the carrier's ``StaffKeyed`` and ``CallerKeyed``,
the call's ``Newexten`` into the context it was sent to, or baresip's own call events.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from screener.ami import Event
from tests.conftest import ScreenerProcess
from tests.probe import Call, Probe, SandboxInfo, user_event
from tests.softphone import Softphone

# Generous: the first test also waits for the sandbox, which other e2e runs may hold.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

# Announce screening for mobiles (straight to staff) and toll-free callers (after the challenge).
CONFIG = "[policy.announce]\nmobile = true\ntoll_free = true\n"


def configured(sandbox: SandboxInfo, tmp: Path) -> ScreenerProcess:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "screener.toml").write_text(CONFIG)
    return ScreenerProcess(sandbox, tmp, SCREENER_CONFIG=str(tmp / "screener.toml"))


@contextlib.asynccontextmanager
async def globals_set(ami: Any, **values: str) -> AsyncIterator[None]:
    """Set dialplan globals on one Asterisk for the block, then put the old values back."""
    old: dict[str, str] = {}
    for name, value in values.items():
        got = await ami.send({"Action": "Getvar", "Variable": name}, timeout=5)
        old[name] = got.get("Value") or ""
        await ami.send({"Action": "Setvar", "Variable": name, "Value": value}, timeout=5)
    try:
        yield
    finally:
        for name, value in old.items():
            await ami.send({"Action": "Setvar", "Variable": name, "Value": value}, timeout=5)


def staff_choice(call: Call):  # type: ignore[no-untyped-def]
    def match(event: Event) -> bool:
        return user_event("ScreenStaffChoice")(event) and event.get("Call") == call.call_id

    return match


async def entered(probe: Probe, call: Call, context: str, within: float = 30) -> Event:
    """The call's channel entering a dialplan context."""
    return await probe.pbx.wait_for(
        lambda e: (
            e.name.lower() == "newexten"
            and e.get("Uniqueid") == call.call_id
            and e.get("Context") == context
        ),
        within,
    )


async def bridged(probe: Probe, call: Call, within: float = 30) -> Event:
    """The caller's channel joining a bridge with a staff phone."""
    return await probe.pbx.wait_for(
        lambda e: e.name.lower() == "bridgeenter" and e.get("Uniqueid") == call.call_id, within
    )


def entries(screener: ScreenerProcess, number: str) -> list[tuple[str, str]]:
    shown = json.loads(screener.cli("list", "show", "--json").stdout or "[]")
    return [(e["kind"], e["source"]) for e in shown if e["number"] == number]


async def registered_contact(probe: Probe, aor: str, within: float = 20) -> None:
    """Wait until the PBX has a registered contact for ``aor`` (PJSIPShowContacts)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        shown = await probe.pbx.ami.send({"Action": "PJSIPShowContacts"}, timeout=5)
        if any((e.get("ObjectName") or "").startswith(f"{aor};") for e in shown.events):
            return
        if loop.time() > deadline:
            pytest.fail(f"{aor} did not register within {within}s")
        await asyncio.sleep(0.3)


async def stored_choice(
    screener: ScreenerProcess, call: Call, within: float = 10
) -> dict[str, Any]:
    """The call's row once its staff choice is stored."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        rows = json.loads(screener.cli("calls", "--json").stdout or "[]")
        row = next((r for r in rows if r["call_id"] == call.call_id), None)
        if row is not None and row.get("staff_choice"):
            return row
        if loop.time() > deadline:
            pytest.fail(f"no staff_choice for {call.call_id}: {row}")
        await asyncio.sleep(0.2)


# key staff1 presses, choice reported, where the caller goes, list entry made
ANNOUNCE = [
    ("1", "connect", "bridge", None),
    ("2", "voicemail", "route-voicemail", None),
    ("3", "block", "screen-staff-rejected", "block"),
    ("4", "allow", "bridge", "allow"),
    ("", "timeout", "route-voicemail", None),
]


@pytest.mark.parametrize(("key", "choice", "then", "kind"), ANNOUNCE, ids=[c[1] for c in ANNOUNCE])
async def test_announce_key_decides_the_call(
    sandbox: SandboxInfo,
    tmp_path: Path,
    probe: Probe,
    key: str,
    choice: str,
    then: str,
    kind: str | None,
) -> None:
    """A mobile caller (announce on) says who it is; staff1 hears it and keys: 1 connects,
    2 sends to voicemail, 3 blocks from now on and rejects, 4 allows from now on and
    connects, no key within the timeout sends to voicemail. Stored as staff_choice."""
    screener = configured(sandbox, tmp_path)
    screener.start()
    assert probe.carrier is not None
    number = f"0901234{ANNOUNCE.index((key, choice, then, kind)):04d}"
    e164 = "+81" + number[1:]
    try:
        async with (
            globals_set(
                probe.carrier.ami, STAFF1_DTMF=key, STAFF1_DTMF_DELAY="2", STAFF1_HOLD="40"
            ),
            # No key: a short timeout keeps the test quick (the default is 10 s).
            globals_set(probe.pbx.ami, ANNOUNCE_TIMEOUT="2"),
        ):
            call = await probe.call_sip(number, hold=40)
            assert await probe.routed(call) == ("staff", False)
            await entered(probe, call, "screen-announce")
            event = await probe.pbx.wait_for(staff_choice(call), 60)
            assert (event.get("Choice"), event.get("Staff")) == (choice, "staff1")
            if then == "bridge":
                await bridged(probe, call)
            else:
                await entered(probe, call, then)
        row = await stored_choice(screener, call)
        assert (row["staff_choice"], row["staff_choice_by"]) == (choice, "staff1")
        made = entries(screener, e164)
        assert made == ([(kind, "staff:staff1")] if kind else [])
    finally:
        screener.stop()


async def test_challenge_passer_is_announced_then_connected(
    sandbox: SandboxInfo, tmp_path: Path, probe: Probe
) -> None:
    """A toll-free caller passes the challenge, then says who it is before staff1 connects."""
    screener = configured(sandbox, tmp_path)
    screener.start()
    assert probe.carrier is not None
    try:
        async with globals_set(probe.carrier.ami, STAFF1_DTMF="1", STAFF1_DTMF_DELAY="2"):
            call = await probe.call_sip("0120999101", dtmf="wait", dtmf_delay=2, hold=40)
            assert await probe.routed(call) == ("challenge", False)
            await probe.send_code(call, await probe.challenge_code(call))
            await probe.pbx.wait_for(user_event("ScreenChallenge", call.call_id, Outcome="pass"))
            await entered(probe, call, "screen-announce")
            event = await probe.pbx.wait_for(staff_choice(call), 60)
            assert event.get("Choice") == "connect"
            await bridged(probe, call)
    finally:
        screener.stop()


async def test_star_zero_from_staff_blocks_and_the_callers_does_nothing(
    sandbox: SandboxInfo, tmp_path: Path, probe: Probe
) -> None:
    """The caller keys *0 first: nothing happens. Then staff1 keys *0: the caller is blocked
    (source staff:staff1), sent to the rejection, and the call ends."""
    screener = ScreenerProcess(sandbox, tmp_path)
    screener.start()
    assert probe.carrier is not None
    number, e164 = "0312349901", "+81312349901"
    try:
        async with globals_set(probe.carrier.ami, STAFF1_DTMF="*0", STAFF1_DTMF_DELAY="5"):
            call = await probe.call_sip(number, dtmf="*0", dtmf_delay=1, hold=40)
            assert await probe.routed(call) == ("staff", False)
            await bridged(probe, call)
            await probe.carrier.wait_for(user_event("CallerKeyed"), 20)
            keying = await probe.carrier.wait_for(user_event("StaffKeying"), 20)
            # The caller keyed *0 four seconds before staff1 begins to: by now it would show.
            assert probe.pbx.matching(staff_choice(call)) == []
            assert not probe.pbx.matching(
                lambda e: e.name.lower() == "hangup" and e.get("Uniqueid") == call.call_id
            )
            event = await probe.pbx.wait_for(staff_choice(call), 20)
            assert (event.get("Choice"), event.get("Staff")) == ("block-in-call", "staff1")
            # Both on this machine's clock: the carrier starts keying "*0", the PBX reports it.
            to_event = event.received_at - keying.received_at
            await entered(probe, call, "screen-staff-rejected")
            await probe.pbx.wait_for(
                lambda e: e.name.lower() == "hangup" and e.get("Uniqueid") == call.call_id, 20
            )
        row = await stored_choice(screener, call)
        assert row["staff_choice"] == "block-in-call"
        assert entries(screener, e164) == [("block", "staff:staff1")]
        # The service logs "staff choice" once the block entry is committed.
        listed = screener.wait_log("staff choice", 10)
        stamp = dt.datetime.fromisoformat(listed["timestamp"].replace("Z", "+00:00"))
        to_list = stamp.timestamp() - keying.received_at
        # The figures quoted in the README (run with -s); keying "*0" itself takes about 0.6 s.
        print(f"*0 keyed → ScreenStaffChoice {to_event:.2f} s, → entry committed {to_list:.2f} s")
        again = await probe.call_sip(number, hold=3)
        assert await probe.routed(again) == ("voicemail", False)
    finally:
        screener.stop()


async def test_baresip_softphone_hears_the_caller_and_blocks_it(
    sandbox: SandboxInfo, tmp_path: Path, probe: Probe
) -> None:
    """Debian's baresip, registered as staff3, auto-answers an announced call and keys 3: the
    caller is blocked from now on (staff:staff3) and hears the rejection."""
    assert Softphone.available(), "baresip is missing: scripts/bootstrap installs it"
    screener = configured(sandbox, tmp_path / "screener")
    screener.start()
    staff3 = next(s for s in sandbox.raw["staff"] if s["user"] == "staff3")
    number, e164 = "09012349999", "+819012349999"
    try:
        async with (
            Softphone(
                tmp_path / "baresip",
                "staff3",
                staff3["password"],
                f"127.0.0.1:{sandbox.raw['sip_port']}",
            ) as phone,
            globals_set(probe.pbx.ami, STAFF_DIAL="PJSIP/staff3"),
        ):
            await registered_contact(probe, "staff3")
            call = await probe.call_sip(number, hold=40)
            assert await probe.routed(call) == ("staff", False)
            await phone.wait_event("CALL_ESTABLISHED", 40)
            await phone.key("3")
            event = await probe.pbx.wait_for(staff_choice(call), 30)
            assert (event.get("Choice"), event.get("Staff")) == ("block", "staff3")
            await entered(probe, call, "screen-staff-rejected")
            await phone.wait_event("CALL_CLOSED", 30)
        assert (await stored_choice(screener, call))["staff_choice_by"] == "staff3"
        assert entries(screener, e164) == [("block", "staff:staff3")]
    finally:
        screener.stop()
