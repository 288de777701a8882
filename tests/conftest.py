"""Shared fixtures. The sandbox ones start a real Asterisk (scripts/sandbox; needs root) and
the real ``screener run``; only tests marked ``e2e`` ask for them."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from tests.fakeami import FakeAMI
from tests.probe import (
    SANDBOX,
    Probe,
    SandboxError,
    SandboxInfo,
    probe_client,
    sandbox_session,
)
from tests.probe import ScreenerProcess as BaseScreenerProcess

REPO = Path(__file__).resolve().parent.parent

# Where a failed e2e test's sandbox logs are kept: `sandbox up` rewrites them, so without a
# copy a CI failure could not be read afterwards.
KEPT_LOGS = Path(os.environ.get("SCREENER_E2E_LOGS", "/var/tmp/screener-e2e-logs"))
_LOG_STARTS = pytest.StashKey[dict[str, int]]()


def _sandbox_logs(info: SandboxInfo) -> dict[str, Path]:
    """Each sandbox instance's Asterisk log (asterisk-conf/logger.conf's messages.log)."""
    dirs = {
        "pbx": info.raw["instance_dir"],
        "carrier": (info.raw.get("carrier") or {}).get("instance_dir"),
    }
    return {name: Path(d) / "log" / "messages.log" for name, d in dirs.items() if d}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Note where each sandbox log stood when an e2e test began (what it added is its own)."""
    info = getattr(item, "funcargs", {}).get("sandbox")
    if isinstance(info, SandboxInfo):
        starts = {}
        for name, path in _sandbox_logs(info).items():
            with contextlib.suppress(OSError):
                starts[name] = path.stat().st_size
        item.stash[_LOG_STARTS] = starts
    yield


def keep_sandbox_logs(
    info: SandboxInfo, nodeid: str, starts: dict[str, int], tmp: Path | None
) -> Path:
    """Copy a failed test's logs to a folder of its own under KEPT_LOGS: each sandbox log whole
    (``pbx.log``, ``carrier.log``), the part written during the test (``pbx-test.log``...), and
    the screener logs in the test's ``tmp`` folder."""
    name = "".join(c if c.isalnum() or c in "._-" else "_" for c in nodeid)[-120:]
    folder = KEPT_LOGS / f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    for instance, path in _sandbox_logs(info).items():
        with contextlib.suppress(OSError):
            shutil.copyfile(path, folder / f"{instance}.log")
            with path.open("rb") as whole, (folder / f"{instance}-test.log").open("wb") as part:
                whole.seek(starts.get(instance, 0))
                shutil.copyfileobj(whole, part)
    for log in sorted(tmp.rglob("*.log")) if tmp is not None else []:
        with contextlib.suppress(OSError):
            shutil.copyfile(log, folder / "_".join(log.relative_to(tmp).parts))
    return folder


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    """A failed test that used the sandbox keeps its logs; the report says where."""
    outcome = yield
    report = outcome.get_result()
    info = getattr(item, "funcargs", {}).get("sandbox")
    if report.failed and isinstance(info, SandboxInfo):
        tmp = getattr(item, "funcargs", {}).get("tmp_path")
        try:
            folder = keep_sandbox_logs(info, item.nodeid, item.stash.get(_LOG_STARTS, {}), tmp)
            report.sections.append(("sandbox logs", f"PBX and carrier logs kept in {folder}"))
        except OSError as exc:
            report.sections.append(("sandbox logs", f"could not keep the sandbox logs: {exc}"))


@pytest.fixture(autouse=True)
def _fresh_caches() -> None:
    """Each test sees the code as it is, not results an earlier test left in a cache.

    ``normalize`` keeps an ``lru_cache``. scripts/mutation forks each mutant's test run from a
    process that ran the suite once: a warm cache would answer with the unmutated code's
    results, and the mutant would survive.
    """
    for name, module in list(sys.modules.items()):
        if name == "screener" or name.startswith("screener."):
            for value in list(vars(module).values()):
                clear = getattr(value, "cache_clear", None)
                if callable(clear):
                    clear()


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """Each test starts from structlog's defaults, whatever a CLI test configured before."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxInfo]:
    """A real Asterisk 22 (the PBX, with asterisk-conf/) and a carrier instance, on loopback."""
    try:
        with sandbox_session(with_carrier=True) as info:
            yield info
    except SandboxError as exc:
        pytest.fail(str(exc))


class ScreenerProcess(BaseScreenerProcess):
    """``screener run`` against the sandbox, with waits that fail the test when they time out."""

    def __init__(self, sandbox: SandboxInfo, tmp: Path, **env: str) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        super().__init__(
            {**sandbox.screener_env(), **env}, tmp / "screener.db", tmp / "screener.log"
        )

    def start(self, wait: bool = True) -> None:
        """Start the service; with ``wait``, return once it logged in to AMI."""
        super().start()
        if wait:
            self.wait_log("screener running", 20)

    def wait_log(self, event: str, within: float) -> dict[str, Any]:
        """The first log line whose event is ``event``; fails the test after ``within`` s."""
        line = self.find_log(event, within)
        if line is None:
            pytest.fail(
                f"screener never logged {event!r} within {within}s; log tail:\n{self.tail()}"
            )
        return line

    def wait_calls(self, call_ids: list[str], within: float = 10) -> dict[str, dict[str, Any]]:
        """The call log rows of these calls (``screener calls --json``), once all are there."""
        deadline = time.monotonic() + within
        rows: dict[str, dict[str, Any]] = {}
        while True:
            done = self.cli("calls", "--json", "--limit", "1000")
            rows = {r["call_id"]: r for r in json.loads(done.stdout or "[]")}
            if all(c in rows for c in call_ids) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        missing = [c for c in call_ids if c not in rows]
        if missing:
            pytest.fail(f"calls missing from the call log after {within}s: {missing}")
        return rows

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
    async with probe_client(sandbox.pbx) as pbx:
        if carrier_settings is None:
            async with Probe(pbx) as p:
                yield p
                await p.hangup_all()
            return
        async with (
            probe_client(carrier_settings) as carrier,
            Probe(pbx, carrier) as p,
        ):
            yield p
            await p.hangup_all()


# ---- site B: a second screening PBX (scripts/sandbox up --site-b) -----------------------------


@pytest.fixture(scope="module")
def site_b(sandbox: SandboxInfo) -> Iterator[SandboxInfo]:
    """Site B's PBX, added to the session's sandbox for one module's tests and stopped after.

    The other e2e modules never see it: without this fixture the sandbox is as before."""
    up = subprocess.run(
        [str(SANDBOX), "up", "--with-carrier", "--site-b"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if up.returncode != 0:
        pytest.fail(f"scripts/sandbox up --site-b failed: {up.stderr.strip()[-2000:]}")
    info = SandboxInfo(json.loads(up.stdout.strip().splitlines()[-1])).site_b
    if info is None:
        pytest.fail(f"scripts/sandbox up --site-b printed no site_b: {up.stdout[-2000:]}")
    try:
        yield info
    finally:
        subprocess.run(
            [str(SANDBOX), "down", "--site-b"], capture_output=True, timeout=120, check=False
        )


@pytest.fixture
async def probe_b(sandbox: SandboxInfo, site_b: SandboxInfo) -> AsyncIterator[Probe]:
    """Originates calls on site B: the carrier dials B over SIP; watches B's AMI."""
    carrier_settings = sandbox.carrier
    assert carrier_settings is not None
    async with (
        probe_client(site_b.pbx) as pbx,
        probe_client(carrier_settings) as carrier,
        Probe(pbx, carrier, dial=site_b.carrier_dial) as p,
    ):
        yield p
        await p.hangup_all()


# ---- PostgreSQL for the shared list (tests/pgserver.py) ---------------------------------------


@pytest.fixture(scope="session")
def pg_template() -> Iterator[Any]:
    """One initdb for the whole session; each server is a copy of it."""
    from tests.pgserver import Template

    template = Template.make()
    yield template
    template.remove()


@pytest.fixture(scope="module")
def pg_shared(pg_template: Any) -> Iterator[Any]:
    """A server shared by a module's tests that never stop it (each uses its own database)."""
    from tests.pgserver import PGServer

    server = PGServer(pg_template)
    server.start()
    yield server
    server.remove()


@pytest.fixture
def pg_own(pg_template: Any) -> Iterator[Any]:
    """A server of this test's own, which it may stop, kill and start again."""
    from tests.pgserver import PGServer

    server = PGServer(pg_template)
    server.start()
    yield server
    server.remove()


def pytest_configure(config: pytest.Config) -> None:
    """The fast path (``-m "not e2e and not slow"``) runs each property test on a quarter of
    its examples (tests/test_properties.py ``props``); the whole suite runs them all."""
    if "not slow" in (config.option.markexpr or ""):
        os.environ["SCREENER_QUICK_PROPERTIES"] = "1"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """Where a test's database goes (its Store.open or `screener init` makes it)."""
    return tmp_path / "screener.db"


@pytest.fixture
async def fake() -> AsyncIterator[FakeAMI]:
    """A fake AMI server that knows the service tests' secret (tests/test_service.py)."""
    from tests.test_service import SECRET  # when a test asks: conftest imports no test module

    async with FakeAMI(secret=SECRET) as server:
        yield server
