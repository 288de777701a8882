"""The short soak profile (bench/soak.py) as CI runs it: ``screener run`` survives AMI cuts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_short_soak_profile_holds_its_invariants(tmp_path: Path) -> None:
    """1,500 calls with the AMI link cut every ~300: every call routed or excused, flat memory.

    bench/soak.py exits non-zero when a call that reached the connected screener went
    unrouted, a Redirect was late, duplicated or unknown, RSS grew after warm-up, the pending
    action table did not end empty, or ``screener run`` did not exit 0.
    """
    figures = tmp_path / "soak.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--calls", "1500", "--disconnect-every", "300",
         "--warmup", "500", "--json", str(figures)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert figures.exists()
