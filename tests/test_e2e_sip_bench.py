"""The SIP benchmark (bench/sip.py) against the real sandbox: SIPp as carrier and staff phone."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from bench import sip
from tests.probe import SandboxInfo, probe_client

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


async def _staff_dial(sandbox: SandboxInfo) -> str:
    async with probe_client(sandbox.pbx) as ami:
        got = await ami.send({"Action": "Getvar", "Variable": "STAFF_DIAL"}, timeout=5)
        return got.get("Value") or ""


def test_sip_bench_direct_and_screened(sandbox: SandboxInfo, tmp_path: Path) -> None:
    """One low rate, direct and screened: every call completes, the screener decides each
    screened call as its policy says (none falls back), staff-bound calls reach the SIPp staff
    side with a set-up time, and the PBX's STAFF_DIAL is put back afterwards."""
    if shutil.which("sipp") is None:
        pytest.fail("sipp is missing: scripts/bootstrap installs Debian's sip-tester")
    before = asyncio.run(_staff_dial(sandbox))
    result = sip.run_on(
        sandbox,
        entries=100_000,
        rates=(5,),
        step_seconds=3,
        hold_s=1,
        astdb=1000,
        dialplans=("direct", "screened"),
        workdir=tmp_path / "sip",
        log=lambda _: None,
    )
    steps = {s["dialplan"]: s for s in result["steps"]}
    assert set(steps) == {"direct", "screened"}
    for name, s in steps.items():
        assert s["attempted"] == 15, (name, s)
        assert s["completed"] == 15 and s["failed"] == 0, (name, s)
        assert s["peak_in_flight"] >= 1, (name, s)
    direct, screened = steps["direct"], steps["screened"]
    assert direct["routes"] == {"staff": 15} and direct["to_staff"] == 15
    assert direct["setup_to_staff"]["n"] == 15
    assert screened["fallback"] == 0 and screened["routed_by_decision"] == 15, screened
    assert screened["unexpected_route"] == 0, screened
    staff_bound = sum(
        n for kind, n in screened["kinds"].items() if sip.SCREENED_ROUTE[kind] == "staff"
    )
    assert screened["to_staff"] == staff_bound == screened["routes"].get("staff", 0), screened
    assert screened["setup_to_staff"]["p50_ms"] > 0
    assert screened["processes"]["asterisk"]["peak_rss_mb"] > 0
    assert screened["processes"]["screener"]["peak_rss_mb"] > 0
    assert asyncio.run(_staff_dial(sandbox)) == before


def test_sip_bench_side_by_side_steps_time_the_screener_and_the_floor(
    sandbox: SandboxInfo, tmp_path: Path
) -> None:
    """The two side-by-side steps: direct calls alternate with screened ones, answered first by
    the screener and then by bench/floor.py; each half's set-up is timed from its own calls,
    no call takes the fallback, and only the screener's step has its log's times."""
    if shutil.which("sipp") is None:
        pytest.fail("sipp is missing: scripts/bootstrap installs Debian's sip-tester")
    result = sip.run_on(
        sandbox,
        entries=100_000,
        rates=(5,),
        step_seconds=2,
        hold_s=1,
        astdb=1000,
        dialplans=("direct", "screened"),
        workdir=tmp_path / "sip",
        paired_rate=5,
        log=lambda _: None,
    )
    for key in ("paired", "paired_floor"):
        step = result[key]
        assert step["attempted"] == 10 and step["completed"] == 10, (key, step)
        # The direct half routes through route-staff too, whose ScreenRouted says no fallback.
        assert step["fallback"] == 0 and step["routed_by_decision"] == 10, (key, step)
        assert step["to_staff"] == 10, (key, step)
        halves = step["paired"]
        assert halves["screened_calls"] == 5
        assert halves["direct"]["n"] == 5 and halves["screened"]["n"] == 5, (key, halves)
        assert halves["screened"]["p50_ms"] > 0 and halves["direct"]["p50_ms"] > 0
    assert result["paired"]["screener"]["decision"]["n"] == 5
    assert "screener" not in result["paired_floor"]
