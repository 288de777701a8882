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

from screener.policy import SOURCE_LEARNED, Entry, ListKind
from screener.shared import local
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


# ---- PostgreSQL killed mid-sync, and a partition ---------------------------------------------

Listed = dict[tuple[str, bool], tuple[str, str]]


async def site_list(site: ScreenerProcess) -> Listed:
    """The site's whole list, (number, prefix) → (kind, source), from its SQLite."""
    async with Store.open(site.db, readonly=True, create=False) as store:
        return {(e.number, e.prefix): (e.kind.value, e.source) for e in await store.entries()}


def central_list(server: Any, dbname: str) -> Listed:
    """The central list's live entries, the same way."""
    with server.connect(dbname) as conn:
        rows = conn.execute(
            "SELECT number, prefix, kind, source FROM entries WHERE NOT deleted"
        ).fetchall()
    return {(r[0], r[1]): (r[2], r[3]) for r in rows}


async def converged(sites: Sites, server: Any, within: float = 120) -> Listed:
    """Wait until both sites' outboxes are empty and both lists equal the central one."""
    deadline = time.monotonic() + within
    while True:
        central = central_list(server, sites.dbname)
        a, b = await asyncio.gather(site_list(sites.a), site_list(sites.b))
        if a == b == central:
            states = await asyncio.gather(sync_status(sites.a), sync_status(sites.b))
            if all(s["outbox"] == 0 for s in states):
                return central
        if time.monotonic() > deadline:
            pytest.fail(
                f"no convergence within {within}s: central {len(central)}, a {len(a)},"
                f" b {len(b)} entries; at a only: {sorted(a.items() - central.items())[:5]},"
                f" at b only: {sorted(b.items() - central.items())[:5]}"
            )
        await asyncio.sleep(0.5)


IMPORTED = 12_000


async def test_postgresql_killed_mid_sync_leaves_no_site_with_a_half_applied_batch(
    make_sites: MakeSites, pg_own: Any, probe: Probe, probe_b: Probe, tmp_path: Path
) -> None:
    """A list import at A (12,000 entries) is being pushed in batches while B pulls them, and
    PostgreSQL is SIGKILLed by PID in the middle: B then holds exactly the central changes up
    to the sequence it applied (whole batches, nothing of one half-applied); after the restart
    every change of the import is applied centrally once, both sites' lists equal the central
    one, and a call at each site from an imported number goes to voicemail."""
    sites = make_sites(pg_own)
    a, b = sites.a, sites.b
    numbers = [f"+816{10_000_000 + i:08d}" for i in range(IMPORTED)]
    csv = tmp_path / "import.csv"
    csv.write_text("number,kind\n" + "".join(f"0{n[3:]},block\n" for n in numbers))
    importing = asyncio.create_task(cli(a, "list", "import", str(csv)))

    def central_count() -> int:
        with pg_own.connect(sites.dbname) as conn:
            row = conn.execute("SELECT count(*) FROM entries WHERE number LIKE '+816%'").fetchone()
        return int(row[0]) if row else 0

    deadline = time.monotonic() + 120
    while not 0 < (pushed := central_count()) < IMPORTED:
        if pushed >= IMPORTED or time.monotonic() > deadline:
            pytest.fail(f"never caught the push in the middle: {pushed} of {IMPORTED} central")
        await asyncio.sleep(0.02)
    pg_own.kill()
    killed = time.monotonic()
    await importing  # done: its entries were reaching the centre
    print(f"PostgreSQL killed with {pushed} of {IMPORTED} imported entries central")
    b.wait_log("sync.unavailable", 60)
    a.wait_log("sync.unavailable", 60)
    async with Store.open(b.db, readonly=True, create=False) as store:
        held_b = {e.number for e in await store.entries() if e.number.startswith("+816")}
        last_b = (await store.run("sync state", local.state)).last_seq

    pg_own.start()
    restarted = time.monotonic()
    with pg_own.connect(sites.dbname) as conn:
        upto_b = {
            r[0]
            for r in conn.execute(
                "SELECT number FROM entries WHERE number LIKE '+816%%' AND seq <= %s", (last_b,)
            )
        }
    # A pull is one local transaction with the sequence it reaches: all of a batch or none.
    assert held_b == upto_b, (len(held_b), len(upto_b), last_b)
    final = await converged(sites, pg_own)
    print(
        f"down {restarted - killed:.1f} s; restart → both sites equal to the central list:"
        f" {time.monotonic() - restarted:.1f} s"
    )
    assert {n for n, _ in final} >= set(numbers)
    with pg_own.connect(sites.dbname) as conn:
        keys = conn.execute("SELECT count(*) FROM applied WHERE site = 'a'").fetchone()
    assert keys == (IMPORTED,)  # each change of the import applied once, replayed or not
    routes = await asyncio.gather(
        route_of(probe, f"0{numbers[-1][3:]}"), route_of(probe_b, f"0{numbers[-2][3:]}")
    )
    assert [r for r, _ in routes] == ["voicemail", "voicemail"]


async def test_a_partition_where_both_sites_change_one_number_heals_to_the_rules_entry(
    make_sites: MakeSites, pg_own: Any, probe: Probe, probe_b: Probe
) -> None:
    """PostgreSQL unreachable to both sites; meanwhile X gets a manual block at A and a manual
    allow at B (equals: the later central sequence wins), Y a manual block at A and a learned
    allow at B, Z a learned allow at A and a manual block at B (manual wins, whichever site
    reaches the centre last). After healing both sites hold the rule's entry for each, the
    central one, and real calls at each site are routed by it."""
    sites = make_sites(pg_own)
    a, b = sites.a, sites.b
    x, y, z = "0312349201", "0312349202", "0312349203"

    def e164(national: str) -> str:
        return "+81" + national[1:]

    async def learned_allow(site: ScreenerProcess, number: str) -> None:
        # As a challenge passed at that site records it: a learned allow in its store (the
        # store's triggers put it in the outbox, in the same transaction).
        async with Store.open(site.db, create=False) as store:
            await store.add(Entry(ListKind.ALLOW, e164(number), source=SOURCE_LEARNED))

    pg_own.stop()
    a.wait_log("sync.unavailable", 60)
    b.wait_log("sync.unavailable", 60)
    await asyncio.gather(
        cli(a, "list", "add", x, "--block"),
        cli(b, "list", "add", x, "--allow"),
        cli(a, "list", "add", y, "--block"),
        learned_allow(b, y),
        learned_allow(a, z),
        cli(b, "list", "add", z, "--block"),
    )
    # Each site screens by its own change meanwhile.
    assert (await wait_entry(a, e164(x), "block", within=5)).source == "manual"
    assert (await wait_entry(b, e164(x), "allow", within=5)).source == "manual"

    pg_own.start()
    final = await converged(sites, pg_own)
    with pg_own.connect(sites.dbname) as conn:
        # Each site's outbox went in one push (three changes); the later push's transaction
        # took its id later, under the write lock.
        last = dict(
            conn.execute(
                "SELECT site, max(xmin::text::bigint) FROM applied GROUP BY site"
            ).fetchall()
        )
    later = "a" if last["a"] > last["b"] else "b"
    print(f"healed: site {later}'s push reached the centre last (X is its change)")
    assert final[(e164(x), False)] == (("block" if later == "a" else "allow"), "manual")
    assert final[(e164(y), False)] == ("block", "manual")
    assert final[(e164(z), False)] == ("block", "manual")
    expected_x = "voicemail" if later == "a" else "staff"
    at_a, at_b = await asyncio.gather(_routes(probe, [x, z]), _routes(probe_b, [x, y]))
    assert at_a == [expected_x, "voicemail"]
    assert at_b == [expected_x, "voicemail"]


async def _routes(probe: Probe, numbers: list[str]) -> list[str]:
    """Calls from ``numbers`` one after another at the probe's PBX: their routes."""
    return [(await route_of(probe, n))[0] for n in numbers]
