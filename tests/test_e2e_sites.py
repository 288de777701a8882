"""Two sites, one list, end to end (issue 15): two real Asterisk PBXs, two real ``screener run``
processes, one real PostgreSQL.

Site A is the sandbox's PBX, site B its second PBX (``scripts/sandbox up --site-b``, the same
shipped asterisk-conf/ on its own ports). Each site has its own ``screener run``, its own SQLite
and its own config file whose ``[shared]`` table points at one PostgreSQL (tests/pgserver.py)
as ``site = "a"`` or ``"b"``. Calls come from the sandbox carrier over real SIP into each PBX's
``[from-trunk]``; where a call went is read off that PBX's own ``ScreenRouted`` event.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from screener.policy import SOURCE_LEARNED, Entry
from screener.store import CallRecord, Store
from tests.conftest import ScreenerProcess
from tests.probe import Probe, SandboxInfo, user_event

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@dataclass(frozen=True)
class Sites:
    """Both sites' ``screener run`` and the central database they share."""

    a: ScreenerProcess
    b: ScreenerProcess
    dbname: str


MakeSites = Callable[[Any], Sites]


def site_config(folder: Path, server: Any, dsn: str, site: str) -> Path:
    """A site's own config file: ``[shared]`` with the DSN and a password file (never the DSN)."""
    password = folder / "pg-password"
    fd = os.open(password, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(server.password)
    config = folder / "screener.toml"
    config.write_text(
        "[shared]\n"
        f"dsn = {json.dumps(dsn)}\n"
        f"site = {json.dumps(site)}\n"
        f"password_file = {json.dumps(str(password))}\n"
        'sslmode = "disable"\n'
    )
    return config


@pytest.fixture
def make_sites(sandbox: SandboxInfo, site_b: SandboxInfo, tmp_path: Path) -> Iterator[MakeSites]:
    """Starts site A's and site B's ``screener run`` on a new database of ``server`` (after
    ``screener shared init``), once both are in step with it; stops them by PID afterwards."""
    started: list[ScreenerProcess] = []

    def make(server: Any) -> Sites:
        dbname = f"sites_{uuid.uuid4().hex[:12]}"
        dsn = server.create_database(dbname)
        procs = []
        for site, pbx in (("a", sandbox), ("b", site_b)):
            folder = tmp_path / site
            folder.mkdir()
            config = site_config(folder, server, dsn, site)
            proc = ScreenerProcess(pbx, folder, SCREENER_CONFIG=str(config))
            started.append(proc)
            procs.append(proc)
        a, b = procs
        # Side by side (each command takes seconds on a loaded machine): both local databases
        # and the central schema, then both services.
        with ThreadPoolExecutor(3) as pool:
            jobs = [
                pool.submit(a.cli, "init"),
                pool.submit(b.cli, "init"),
                pool.submit(a.cli, "shared", "init"),
            ]
        for job in jobs:
            done = job.result()
            assert done.returncode == 0, done.stderr
        for proc in procs:
            proc.start(wait=False)
        for proc in procs:
            proc.wait_log("screener running", 60)
            proc.wait_log("sync.connected", 60)
        return Sites(a, b, dbname)

    try:
        yield make
    finally:
        for proc in started:
            proc.stop()


async def cli(site: ScreenerProcess, *args: str) -> str:
    """Run a ``screener`` command at a site (off the event loop: the probes keep collecting)."""
    done = await asyncio.to_thread(site.cli, *args)
    assert done.returncode == 0, f"screener {' '.join(args)}: {done.stderr}"
    return done.stdout


# The waits read the site's SQLite through the store's own read path (the lookup a call makes),
# not through a `screener` command per poll: on a loaded machine each command takes seconds.


async def wait_entry(site: ScreenerProcess, number: str, kind: str, within: float = 60) -> Entry:
    """The site's exact list entry for ``number`` (E.164) once it is there with this kind."""
    deadline = time.monotonic() + within
    while True:
        async with Store.open(site.db, readonly=True, create=False) as store:
            found = [e for e in await store.lookup(number) if e.number == number and not e.prefix]
        if found and found[0].kind.value == kind:
            return found[0]
        if time.monotonic() > deadline:
            pytest.fail(f"{number} never became {kind} at this site within {within}s: {found}")
        await asyncio.sleep(0.1)


async def wait_row(site: ScreenerProcess, call_id: str, within: float = 30) -> CallRecord:
    """The site's call log row of this call, once it is written."""
    deadline = time.monotonic() + within
    while True:
        async with Store.open(site.db, readonly=True, create=False) as store:
            row = await store.get_call(call_id)
        if row is not None:
            return row
        if time.monotonic() > deadline:
            pytest.fail(f"call {call_id} not in this site's call log within {within}s")
        await asyncio.sleep(0.1)


async def route_of(probe: Probe, number: str) -> tuple[str, str]:
    """A real SIP call from ``number`` at the probe's PBX: its first route and its Uniqueid."""
    call = await probe.call_sip(number, hold=3, within=30)
    route, fallback = await probe.routed(call, within=30)
    assert not fallback, f"the call from {number} took the dialplan's fallback"
    return route, call.call_id


async def sync_status(site: ScreenerProcess) -> dict[str, Any]:
    """``screener sync status --offline --json``: the site's own view, without PostgreSQL."""
    return dict(json.loads(await cli(site, "sync", "status", "--offline", "--json")))


async def test_a_block_at_a_sends_bs_next_call_to_voicemail_and_a_pass_at_b_verifies_at_a(
    make_sites: MakeSites, pg_shared: Any, probe: Probe, probe_b: Probe
) -> None:
    """A block added at site A (``screener list add`` there) routes B's next call from that
    number to voicemail; a caller who passes the challenge at B is verified at A, whose next
    call from it rings staff at once; both calls are in the central call log under their site."""
    sites = make_sites(pg_shared)
    a, b = sites.a, sites.b

    await cli(a, "list", "add", "0312349001", "--block", "--label", "営業電話")
    added = time.monotonic()
    await wait_entry(b, "+81312349001", "block")
    print(f"block added at A (command done) → in B's list: {time.monotonic() - added:.2f} s")
    route, blocked_at_b = await route_of(probe_b, "0312349001")
    assert route == "voicemail"
    assert (await wait_row(b, blocked_at_b)).rule == "exact-block"

    caller = "08001239001"
    call = await probe_b.call_sip(caller, dtmf="wait", dtmf_delay=3.5, hold=6, within=30)
    assert await probe_b.routed(call, within=30) == ("challenge", False)
    await probe_b.send_code(call, await probe_b.challenge_code(call, within=30))
    outcome = await probe_b.pbx.wait_for(user_event("ScreenChallenge", call.call_id), 60)
    assert (outcome.get("Outcome") or "").lower() == "pass"
    passed = time.monotonic()

    verified = await wait_entry(a, "+818001239001", "allow")
    print(f"challenge passed at B → verified in A's list: {time.monotonic() - passed:.2f} s")
    assert verified.source == SOURCE_LEARNED
    route, verified_at_a = await route_of(probe, caller)
    assert route == "staff"
    assert (await wait_row(a, verified_at_a)).rule == "exact-allow"

    # Each site ships its call records to the central store, with its name.
    deadline = time.monotonic() + 30
    while True:
        with pg_shared.connect(sites.dbname) as conn:
            shipped = dict(conn.execute("SELECT call_id, site FROM calls").fetchall())
        if {blocked_at_b, verified_at_a} <= set(shipped) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert (shipped.get(blocked_at_b), shipped.get(verified_at_a)) == ("b", "a")


async def test_without_postgresql_both_sites_screen_on_and_catch_up_when_it_returns(
    make_sites: MakeSites, pg_own: Any, probe: Probe, probe_b: Probe
) -> None:
    """PostgreSQL stopped: each site goes on screening real calls from its local list (an
    entry shared before, and its own change made during the outage); the change made at each
    site while it was down waits in its outbox, and is in force at both once it returns."""
    sites = make_sites(pg_own)
    a, b = sites.a, sites.b
    await cli(a, "list", "add", "0312349101", "--block")
    await wait_entry(b, "+81312349101", "block")

    pg_own.stop()
    stopped = time.monotonic()
    a.wait_log("sync.unavailable", 60)
    b.wait_log("sync.unavailable", 60)
    await asyncio.gather(
        cli(a, "list", "add", "0312349102", "--block"),
        cli(b, "list", "add", "0312349103", "--block"),
    )
    # Both sites keep screening, each from its own list.
    assert (await route_of(probe_b, "0312349101"))[0] == "voicemail"
    assert (await route_of(probe, "0312349102"))[0] == "voicemail"
    assert (await route_of(probe_b, "0312349103"))[0] == "voicemail"
    status_a, status_b = await asyncio.gather(sync_status(a), sync_status(b))
    assert (status_a["outbox"], status_b["outbox"]) == (1, 1)
    assert status_a["last_error"] and status_b["last_error"]

    pg_own.start()
    back = time.monotonic()
    await asyncio.gather(
        wait_entry(a, "+81312349103", "block", within=90),
        wait_entry(b, "+81312349102", "block", within=90),
    )
    print(
        f"PostgreSQL down {back - stopped:.1f} s; back → each outage change at the other site:"
        f" {time.monotonic() - back:.2f} s"
    )
    assert (await route_of(probe_b, "0312349102"))[0] == "voicemail"
    assert (await route_of(probe, "0312349103"))[0] == "voicemail"
    status_a, status_b = await asyncio.gather(sync_status(a), sync_status(b))
    assert (status_a["outbox"], status_b["outbox"]) == (0, 0)
    assert (status_a["last_seq"], status_a["last_error"]) == (status_b["last_seq"], None)
    assert status_b["last_error"] is None
