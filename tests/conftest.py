"""Shared fixtures. The sandbox ones start a real Asterisk (scripts/sandbox; needs root) and
the real ``screener run``; only tests marked ``e2e`` ask for them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from screener.ami import AMIClient
from screener.probe import Probe, SandboxInfo

REPO = Path(__file__).resolve().parent.parent
SANDBOX = REPO / "scripts" / "sandbox"


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """Each test starts from structlog's defaults, whatever a CLI test configured before."""
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxInfo]:
    """A real Asterisk 22 (the PBX, with asterisk-conf/) and a carrier instance, on loopback."""
    up = subprocess.run(
        [str(SANDBOX), "up", "--with-carrier"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if up.returncode != 0:
        pytest.fail(f"scripts/sandbox up failed ({up.returncode}): {up.stderr[-2000:]}")
    info = SandboxInfo(json.loads(up.stdout.strip().splitlines()[-1]))
    try:
        yield info
    finally:
        subprocess.run([str(SANDBOX), "down"], capture_output=True, timeout=120, check=False)


class ScreenerProcess:
    """``screener run`` as a real subprocess against the sandbox, logging JSON to a file."""

    def __init__(self, sandbox: SandboxInfo, tmp: Path, **env: str) -> None:
        self.db = tmp / "screener.db"
        self.log = tmp / "screener.log"
        self.env = {
            **os.environ,
            **sandbox.screener_env(),
            "SCREENER_DB": str(self.db),
            "SCREENER_CONFIG": "",
            "SCREENER_LOG_FORMAT": "json",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run an admin command against the same database."""
        return subprocess.run(
            [sys.executable, "-m", "screener", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def start(self, wait: bool = True) -> None:
        """Start the service; with ``wait``, return once it logged in to AMI."""
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "screener", "run"],
            env=self.env,
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
        )
        out.close()
        if wait:
            self.wait_log("screener running", 20)

    def lines(self) -> list[dict[str, Any]]:
        """The JSON log lines so far (anything else is skipped)."""
        result = []
        for line in self.log.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                result.append(json.loads(line))
            except ValueError:
                continue
        return result

    def wait_log(self, event: str, within: float) -> dict[str, Any]:
        """The first log line whose event is ``event``; fails the test after ``within`` s."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for line in self.lines():
                if line.get("event") == event:
                    return line
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.05)
        tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
        pytest.fail(f"screener never logged {event!r} within {within}s; log tail:\n{tail}")

    def wait_all(self, event: str, count: int, within: float = 10) -> list[dict[str, Any]]:
        """At least ``count`` log lines with this event; fails the test after ``within`` s."""
        deadline = time.monotonic() + within
        found: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            found = [line for line in self.lines() if line.get("event") == event]
            if len(found) >= count:
                return found
            time.sleep(0.05)
        pytest.fail(f"only {len(found)} of {count} {event!r} log lines within {within}s")

    def stop(self, sig: int = signal.SIGTERM, within: float = 15) -> int | None:
        """Stop it by PID; SIGKILL if it does not exit in time. Returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(within)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


@pytest.fixture
def screener(sandbox: SandboxInfo, tmp_path: Path) -> Iterator[ScreenerProcess]:
    """A stopped ``screener run`` wired to the sandbox; the test starts it (and may stop it)."""
    proc = ScreenerProcess(sandbox, tmp_path)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
async def probe(sandbox: SandboxInfo) -> AsyncIterator[Probe]:
    """Originates calls on the sandbox; hangs up whatever is still up afterwards."""
    carrier_settings = sandbox.carrier
    async with AMIClient(sandbox.pbx, event_names=None) as pbx:
        if carrier_settings is None:
            async with Probe(pbx) as p:
                yield p
                await p.hangup_all()
            return
        async with (
            AMIClient(carrier_settings, event_names=None) as carrier,
            Probe(pbx, carrier) as p,
        ):
            yield p
            await p.hangup_all()
