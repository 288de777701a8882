"""The live agent end to end: the real ``screener run`` against a real Asterisk 22.

Calls enter ``[from-trunk]`` (through Local channels, and over real SIP from a second Asterisk
acting as the carrier) and are followed through the ``ScreenRouted`` events and the call log.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from screener.ami import AMIClient
from screener.errors import AMIActionError
from tests.conftest import ScreenerProcess
from tests.probe import Probe, SandboxInfo, user_event

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

CUSTOMER = "09011112222"
TELEMARKETER = "0120-121-852"

CASES = [
    # caller-ID number as the carrier sends it, route, category
    (CUSTOMER, "staff", "mobile"),  # allow-listed
    ("0120121852", "voicemail", "toll_free"),  # blocked telemarketer
    ("anonymous", "challenge", "withheld"),
    ("08001234567", "challenge", "toll_free"),  # unknown 0800
    ("09087654321", "staff", "mobile"),
    ("0312345678", "staff", "fixed_line"),
    ("0570000123", "challenge", "shared_cost"),
    ("+12125550100", "challenge", "international"),
    ("0990123456", "voicemail", "premium_rate"),  # prefix rule: block +81990
]


async def test_calls_reach_the_route_their_caller_deserves(
    screener: ScreenerProcess, probe: Probe
) -> None:
    """Every category and list entry routes as the policy says, not via the fallback."""
    assert screener.cli("list", "add", CUSTOMER, "--allow", "--label", "Customer").returncode == 0
    assert screener.cli("list", "add", TELEMARKETER, "--block").returncode == 0
    assert screener.cli("list", "add", "0990", "--prefix", "--block").returncode == 0
    screener.start()

    calls = [await probe.call_local(number, name="Caller") for number, _, _ in CASES]
    routes = await asyncio.gather(*(probe.routed(call, within=10) for call in calls))
    assert routes == [(route, False) for _, route, _ in CASES]

    by_id = screener.wait_calls([c.call_id for c in calls])
    for call, (number, route, category) in zip(calls, CASES, strict=True):
        row = by_id[call.call_id]
        assert (row["number"], row["route"], row["category"]) == (number, route, category)
        assert row["fallback"] is False and row["reasons"]
    screened = screener.wait_all("call screened", len(CASES))
    assert {line["call_id"] for line in screened} == {c.call_id for c in calls}
    assert all(line["decision_ms"] < 1000 for line in screened)


async def test_fallback_rings_staff_when_the_screener_is_down(
    screener: ScreenerProcess, probe: Probe, sandbox: SandboxInfo
) -> None:
    """With no screener, the call takes the fallback (staff) when the 4 s hold ends."""
    call = await probe.call_local(TELEMARKETER.replace("-", ""))
    request = await probe.pbx.wait_for(user_event("ScreenRequest", call.call_id), 10)
    fallback = await probe.pbx.wait_for(user_event("ScreenFallback", call.call_id), 10)
    held = float(fallback.get("Timestamp") or 0) - float(request.get("Timestamp") or 0)
    assert 3.5 <= held <= 5.0
    assert await probe.routed(call) == ("staff", True)


def ran(probe: Probe, call_id: str, context: str) -> list[str]:
    """The priorities and applications the call ran in ``context``, in order."""
    return [
        f"{e.get('Priority')} {e.get('Application')}"
        for e in probe.pbx.matching(
            lambda e: e.name.lower() == "newexten" and e.get("Uniqueid") == call_id
        )
        if e.get("Context") == context
    ]


# Asterisk can apply a Redirect while the held channel steps from one priority to the next; the
# channel then starts the target at 2, or at the priority it was about to run (2 or 3 in the
# shipped dialplan), instead of 1 (docs/architecture.md, "Where a Redirect lands"). The
# tests below send such a landing on purpose.
LANDINGS = [1, 2, 3]


@pytest.mark.parametrize("priority", LANDINGS)
async def test_a_redirect_landing_past_priority_1_takes_the_decision_through_the_check(
    probe: Probe, sandbox: SandboxInfo, priority: int
) -> None:
    """A decision's Redirect that lands on priority 2 or 3 of its gate still routes the call,
    and the gate's state check runs first."""
    call = await probe.call_local("0120121852")
    await probe.pbx.wait_for(user_event("ScreenRequest", call.call_id), 10)
    async with AMIClient(sandbox.screener) as decision:
        await decision.redirect(call.call_id, "screen-voicemail", "s", priority)
    assert await probe.routed(call, within=5) == ("voicemail", False)
    steps = ran(probe, call.call_id, "screen-voicemail")
    assert steps[0].startswith(f"{priority} "), steps  # it landed where it was sent
    assert steps[steps.index("1 GotoIf") + 1] == "4 Set", steps  # checked, then routed
    assert probe.pbx.matching(user_event("ScreenFallback", call.call_id)) == []


async def test_a_did_with_a_comma_is_still_screened(
    screener: ScreenerProcess, probe: Probe
) -> None:
    """A comma in the dialled number (``_X.`` matches it) would split the hold's Goto: it is
    left out, and the call is screened under the rest of the number."""
    screener.start()
    call = await probe.call_local("0312345678", did="0355,550100")
    request = await probe.pbx.wait_for(user_event("ScreenRequest", call.call_id), 10)
    assert (request.get("Context"), request.get("Exten")) == ("screen-hold", "0355550100")
    assert await probe.routed(call, within=10) == ("staff", False)


@pytest.mark.parametrize("priority", LANDINGS)
async def test_late_redirect_does_no_harm(
    probe: Probe, sandbox: SandboxInfo, priority: int
) -> None:
    """A Redirect arriving after the fallback began is refused by the dialplan's gate, on
    whichever of its priorities it lands."""
    call = await probe.call_local("0120121852")
    await probe.pbx.wait_for(user_event("ScreenFallback", call.call_id), 10)
    async with AMIClient(sandbox.screener) as late:
        await late.redirect(call.call_id, "screen-voicemail", "s", priority)
    await probe.pbx.wait_for(user_event("ScreenLate", call.call_id), 5)
    await asyncio.sleep(0.5)
    routed = probe.pbx.matching(user_event("ScreenRouted", call.call_id))
    assert [(e.get("Route"), e.get("Fallback")) for e in routed] == [("staff", "yes")] * 2


async def test_sip_call_from_the_carrier_rings_a_staff_phone(
    screener: ScreenerProcess, probe: Probe
) -> None:
    """Over real SIP the caller ID comes from the From header and a staff endpoint rings."""
    screener.start()
    call = await probe.call_sip("09055556666", name="Suzuki", hold=5)
    assert await probe.routed(call) == ("staff", False)
    assert probe.carrier is not None
    await probe.carrier.wait_for(user_event("StaffRinging"), 10)
    row = screener.wait_calls([call.call_id])[call.call_id]
    assert (row["number"], row["e164"], row["name"]) == ("09055556666", "+819055556666", "Suzuki")


async def test_screener_user_cannot_originate(sandbox: SandboxInfo) -> None:
    """The least-privilege AMI user is refused Originate and Command by the real Asterisk."""
    async with AMIClient(sandbox.screener) as ami:
        for action in (
            {"Action": "Originate", "Channel": "Local/100@from-staff", "Application": "Wait"},
            {"Action": "Command", "Command": "core show version"},
            {"Action": "GetConfig", "Filename": "manager.conf"},
        ):
            with pytest.raises(AMIActionError, match="Permission denied"):
                await ami.send(action)


async def test_screener_over_tls(sandbox: SandboxInfo, probe: Probe, tmp_path: Path) -> None:
    """With ami.tls on, the screener logs in over AMI-over-TLS (verified cert) and screens calls."""
    tls = ScreenerProcess(
        sandbox,
        tmp_path / "tls",
        SCREENER_AMI_PORT=str(sandbox.raw["ami_tls_port"]),
        SCREENER_AMI_TLS="yes",
        SCREENER_AMI_TLS_CA_FILE=sandbox.raw["ami_tls_ca"],
    )
    try:
        tls.start()
        login = tls.wait_log("ami.login", 5)
        assert login["address"] == f"127.0.0.1:{sandbox.raw['ami_tls_port']}"
        call = await probe.call_local("09012340077")
        assert await probe.routed(call) == ("staff", False)
        assert tls.wait_calls([call.call_id])[call.call_id]["category"] == "mobile"
    finally:
        tls.stop()


def test_tls_refuses_an_unknown_certificate(sandbox: SandboxInfo, tmp_path: Path) -> None:
    """Without the CA that signed Asterisk's certificate, the screener refuses to connect (5)."""
    tls = ScreenerProcess(
        sandbox,
        tmp_path / "tls",
        SCREENER_AMI_PORT=str(sandbox.raw["ami_tls_port"]),
        SCREENER_AMI_TLS="yes",
    )
    assert tls.cli("init").returncode == 0
    done = subprocess.run(
        [sys.executable, "-m", "screener", "run"],
        env={**tls.env, "SCREENER_CONFIG": ""},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 5
    assert "CERTIFICATE_VERIFY_FAILED" in done.stderr or "certificate" in done.stderr.lower()


async def test_the_dialplan_sends_its_hold(
    sandbox: SandboxInfo, probe: Probe, tmp_path: Path
) -> None:
    """The real dialplan sends SCREEN_HOLD_SECONDS (4) in each ScreenRequest; it is what counts."""
    other = ScreenerProcess(sandbox, tmp_path / "hold", SCREENER_HOLD_SECONDS="3")
    try:
        other.start()
        call = await probe.call_local("09012340078")
        assert await probe.routed(call) == ("staff", False)
        warning = other.wait_log(
            "the dialplan's hold differs from the configured one; timing calls by the dialplan's",
            5,
        )
        assert (warning["dialplan_hold_s"], warning["configured_hold_s"]) == (4.0, 3.0)
    finally:
        other.stop()
