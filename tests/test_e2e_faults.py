"""Faults against the real Asterisk sandbox: Asterisk killed, frozen or misconfigured, the
screener killed mid-burst, the database locked, corrupt or on a full disk, and a hostile caller
ID over real SIP. Each test states what must still hold; each puts the sandbox back as it was.

Figures (reconnect times, routed/fallback counts, latencies) are printed: run with ``-s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import functools
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from screener.errors import AMIError
from tests.conftest import ScreenerProcess
from tests.probe import SANDBOX, Call, Probe, SandboxInfo, new_call_id, probe_client, user_event

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

HOLD = 4.0  # SCREEN_HOLD_SECONDS in asterisk-conf/extensions.conf
STAFF = ("staff", False)  # an unknown fixed-line caller, routed by the screener
FALLBACK = ("staff", True)  # the dialplan's fallback (fail open to staff)


# ---- the sandbox ------------------------------------------------------------------------------


def sandbox_json(*args: str) -> dict[str, Any]:
    """Run ``scripts/sandbox ARGS`` and return the JSON line it prints."""
    res = subprocess.run(
        [str(SANDBOX), *args], capture_output=True, text=True, timeout=120, check=False
    )
    if res.returncode != 0:
        pytest.fail(f"scripts/sandbox {' '.join(args)} failed: {res.stderr[-2000:]}")
    parsed: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return parsed


def pbx_pid() -> int | None:
    """The running PBX Asterisk's PID (``scripts/sandbox status``), None if it is down."""
    pid = sandbox_json("status")["instances"].get("pbx", {}).get("pid")
    return int(pid) if pid else None


def ensure_pbx_up() -> None:
    """Put the PBX back (same config and secrets) if a test left it down."""
    if pbx_pid() is None:
        sandbox_json("restart")


def spawn(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start a helper process (the caller waits for it, or kills it by PID)."""
    return subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def mount_tmpfs(path: Path, size: str) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)


def unmount(path: Path) -> None:
    """Unmount, lazily if something still holds a file there."""
    if subprocess.run(["umount", str(path)], check=False).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], check=False)


def ami_answers(port: int, within: float) -> float:
    """Poll until Asterisk's AMI greets a new connection; returns that moment (time.time())."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5) as s:
            s.settimeout(0.5)
            if s.recv(64).startswith(b"Asterisk Call Manager"):
                return time.time()
        time.sleep(0.02)
    pytest.fail(f"AMI on port {port} did not answer within {within}s")


@contextlib.asynccontextmanager
async def open_probe(
    sandbox: SandboxInfo, *, carrier: bool = False, patient: bool = False
) -> AsyncIterator[Probe]:
    """A probe on fresh AMI connections (``patient``: no watchdog, to ride out a freeze)."""
    slow = {"ping_interval": 60.0, "ping_timeout": 60.0} if patient else {}
    pbx_settings = dataclasses.replace(sandbox.pbx, events="call,user,dialplan,system", **slow)
    async with contextlib.AsyncExitStack() as stack:
        pbx = await stack.enter_async_context(probe_client(pbx_settings))
        other = None
        if carrier:
            assert sandbox.carrier is not None
            other = await stack.enter_async_context(probe_client(sandbox.carrier))
        probe = await stack.enter_async_context(Probe(pbx, other))
        try:
            yield probe
        finally:
            await probe.hangup_all()


# ---- the screener's log -----------------------------------------------------------------------


def stamp(line: dict[str, Any]) -> float:
    """A JSON log line's timestamp as unix seconds."""
    return dt.datetime.fromisoformat(line["timestamp"]).timestamp()


async def wait_lines(
    screener: ScreenerProcess,
    event: str,
    *,
    after: float = 0.0,
    count: int = 1,
    within: float = 10.0,
) -> list[dict[str, Any]]:
    """At least ``count`` log lines ``event`` logged after ``after``; never blocks the loop."""
    deadline = time.monotonic() + within
    while True:
        found = [x for x in screener.lines() if x.get("event") == event and stamp(x) >= after]
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            tail = screener.log.read_text(errors="replace")[-3000:]
            pytest.fail(f"{len(found)}/{count} {event!r} log lines in {within}s; tail:\n{tail}")
        await asyncio.sleep(0.05)


def screened_lines(
    screener: ScreenerProcess, call: Call, within: float = 3.0
) -> list[dict[str, Any]]:
    """The screener's canonical ``call screened`` lines for this call.

    The line is written just after the Redirect, so it may trail the ScreenRouted event the
    test saw: wait up to ``within`` seconds for at least one.
    """
    deadline = time.monotonic() + within
    while True:
        found = [
            x
            for x in screener.lines()
            if x.get("event") == "call screened" and x.get("call_id") == call.call_id
        ]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def run_screener(screener: ScreenerProcess, timeout: float, **env: str) -> tuple[int, str, float]:
    """``screener run`` to completion: (exit code, stderr, seconds it took)."""
    started = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "screener", "run"],
        env={**screener.env, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return res.returncode, res.stdout + res.stderr, time.monotonic() - started


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("screener: error:")]


# ---- 1, 2: Asterisk killed, Asterisk frozen ---------------------------------------------------


async def test_asterisk_killed_and_restarted_reconnects_within_3s(
    screener: ScreenerProcess, sandbox: SandboxInfo
) -> None:
    """After a SIGKILLed Asterisk restarts the screener logs in within 3 s and screens again."""
    screener.start()
    async with open_probe(sandbox) as probe:
        first = await probe.call_local("0312340001")
        assert await probe.routed(first) == STAFF
    pid = pbx_pid()
    assert pid is not None
    killed = time.time()
    os.kill(pid, signal.SIGKILL)
    restart = None
    try:
        await wait_lines(screener, "ami.disconnect", after=killed, within=5)
        # Outlast a few reconnect attempts, then come back right after one failed: the next
        # attempt is then a whole backoff delay away (the worst case for "within 3 s").
        failed = await wait_lines(
            screener, "ami.reconnect_failed", after=killed, count=3, within=20
        )
        restart = spawn([str(SANDBOX), "restart"])
        answered = await asyncio.to_thread(ami_answers, sandbox.pbx.port, 20)
        async with open_probe(sandbox) as probe:
            await probe.pbx.wait_for(lambda e: e.name == "FullyBooted", 10)
            # Placed as soon as the PBX is up: likely before the screener is back.
            early = await probe.call_local("0312340002")
            _, err = await asyncio.to_thread(restart.communicate, timeout=60)
            assert restart.returncode == 0, err
            login = (await wait_lines(screener, "ami.login", after=killed, within=10))[0]
            early_request = await probe.pbx.wait_for(user_event("ScreenRequest", early.call_id))
            early_route = await probe.routed(early, within=HOLD + 6)
            requested_before_login = float(early_request.get("Timestamp") or 0) < stamp(login)
            assert early_route == (FALLBACK if requested_before_login else STAFF)
            later = await probe.call_local("0312340003")
            assert await probe.routed(later) == STAFF
            # Staff phones ring once the restart is done: it used to re-register them and
            # return while they were unregistered, and such a call went to voicemail.
            await probe.staff_dialled(later)
            assert len(screened_lines(screener, later)) == 1
    finally:
        if restart is not None and restart.returncode is None:
            restart.communicate(timeout=60)
        ensure_pbx_up()
    assert screener.proc is not None and screener.proc.poll() is None
    reconnect_s = stamp(login) - answered
    print(
        f"\n[killed] outage {answered - killed:.2f} s, {len(failed)}+ failed reconnects;"
        f" AMI answered → screener ami.login {reconnect_s:.3f} s;"
        f" call placed before the login: {requested_before_login}, route {early_route}"
    )
    assert reconnect_s <= 3.0


async def test_asterisk_frozen_is_detected_and_recovered(
    screener: ScreenerProcess, sandbox: SandboxInfo
) -> None:
    """A SIGSTOPped Asterisk is aborted by the watchdog within 5 s; after SIGCONT calls route."""
    screener.start()
    async with open_probe(sandbox, carrier=True, patient=True) as probe:
        first = await probe.call_local("0312340011")
        assert await probe.routed(first) == STAFF
        await probe.hangup(first)
        pid = pbx_pid()
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        stopped = time.time()
        try:
            abort = (await wait_lines(screener, "ami.watchdog_abort", after=stopped, within=8))[0]
            # A SIP call while the PBX is frozen: its INVITE waits in the PBX's socket buffer.
            frozen_call = asyncio.create_task(probe.call_sip("0312340012", hold=3, within=40))
            await asyncio.sleep(max(0.0, stopped + 10 - time.time()))
        finally:
            os.kill(pid, signal.SIGCONT)
        resumed = time.time()
        login = (await wait_lines(screener, "ami.login", after=stopped, within=15))[0]
        during = await frozen_call
        during_route = await probe.routed(during, within=15)
        after = await probe.call_local("0312340013")
        assert await probe.routed(after) == STAFF
        assert len(screened_lines(screener, after)) == 1
    detected_s = stamp(abort) - stopped
    print(
        f"\n[frozen] watchdog abort {detected_s:.2f} s after SIGSTOP;"
        f" ami.login {stamp(login) - resumed:.3f} s after SIGCONT;"
        f" SIP call placed during the freeze: route {during_route}"
    )
    assert detected_s <= 5.0
    assert during_route in (STAFF, FALLBACK)


# ---- 3: a wrong AMI secret --------------------------------------------------------------------


def test_wrong_ami_secret_exits_6_with_one_clear_line(
    screener: ScreenerProcess, sandbox: SandboxInfo
) -> None:
    """A refused AMI login exits 6 within 10 s with one line naming user and address, no secret."""
    wrong = "wrong-Secret-5a8c1f"
    assert screener.cli("init").returncode == 0
    code, output, took = run_screener(screener, 30, SCREENER_AMI_SECRET=wrong)
    print(f"\n[wrong secret] exit {code} after {took:.2f} s: {error_lines(output)}")
    assert code == 6 and took <= 10
    assert error_lines(output) == [
        "screener: error: AMI login refused for user 'screener' at 127.0.0.1:5038:"
        " Authentication failed"
    ]
    assert wrong not in output and sandbox.raw["screener_secret"] not in output
    assert "Traceback" not in output


# ---- 4: the screener killed during a burst -----------------------------------------------------


async def test_screener_killed_mid_burst_leaves_no_call_unrouted(
    screener: ScreenerProcess, sandbox: SandboxInfo
) -> None:
    """SIGKILL mid-burst: all 100 calls get a route; every screener-routed call is in the log."""
    screener.start()
    numbers = [f"0350{i:06d}" for i in range(100)]
    async with open_probe(sandbox) as probe:

        async def follow(call: Call) -> tuple[str, bool] | None:
            try:
                route = await probe.routed(call, within=HOLD + 8)
            except TimeoutError:
                return None  # reported and failed below, with what the call did instead
            await probe.hangup(call)  # keep the load on the machine down
            return route

        loop = asyncio.get_running_loop()
        start = loop.time()
        followers = []
        for i, number in enumerate(numbers):  # 100 calls over 2 s
            await asyncio.sleep(max(0.0, start + i * 0.02 - loop.time()))
            followers.append(asyncio.create_task(follow(await probe.call_local(number))))
            if i == 49:
                assert screener.proc is not None
                screener.proc.kill()
        routes = await asyncio.gather(*followers)
        calls = list(probe.calls)
        events = list(probe.pbx.events)
        fallbacks = {e.get("Uniqueid") for e in probe.pbx.matching(user_event("ScreenFallback"))}
    lost = {
        c.call_id: [
            (e.name, e.get("UserEvent"), e.get("Context"), e.get("Exten"), e.get("AppData"))
            for e in events
            if e.get("Uniqueid") == c.call_id
        ][-4:]
        for c, r in zip(calls, routes, strict=True)
        if r is None
    }
    assert not lost, f"calls without a route: {lost}"
    assert screener.proc is not None and screener.proc.wait(5) == -signal.SIGKILL
    by_screener = {c.call_id for c, r in zip(calls, routes, strict=True) if r == STAFF}
    by_fallback = {c.call_id for c, r in zip(calls, routes, strict=True) if r == FALLBACK}
    assert len(by_screener) + len(by_fallback) == 100
    assert by_fallback <= fallbacks

    screener.start(wait=False)
    await wait_lines(screener, "screener running", count=2, within=20)
    # The records the killed run journaled but had not committed are replayed by this start,
    # queued ahead of every new write (docs/architecture.md, the journal): they land within a
    # commit or two of "screener running", not necessarily before it.
    deadline = time.monotonic() + 20
    while True:
        with contextlib.closing(sqlite3.connect(f"file:{screener.db}?mode=ro", uri=True)) as db:
            integrity = db.execute("PRAGMA integrity_check").fetchall()
            rows = dict(db.execute("SELECT call_id, fallback FROM calls").fetchall())
        missing = by_screener - rows.keys()
        if not missing or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    print(
        f"\n[burst] routed by the screener {len(by_screener)}, fallback {len(by_fallback)},"
        f" records {len(rows)}; screener-routed calls without a record: {len(missing)};"
        f" integrity {integrity}"
    )
    assert integrity == [("ok",)]
    assert not missing
    assert all(rows[c] == 0 for c in by_screener)


# ---- 5: the database locked by a long import ---------------------------------------------------


def write_lock_held(db: Path) -> bool:
    """True if another connection holds the database's write lock right now."""
    with contextlib.closing(sqlite3.connect(db, timeout=0, isolation_level=None)) as con:
        try:
            con.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return True
        con.execute("ROLLBACK")
        return False


@pytest.mark.timeout(600)  # parsing and staging a million rows comes before the lock
async def test_calls_are_routed_while_an_import_holds_the_write_lock(
    screener: ScreenerProcess, sandbox: SandboxInfo, tmp_path: Path
) -> None:
    """While `list import` holds the write lock, calls are still routed by the screener."""
    csv = tmp_path / "big.csv"
    with csv.open("w") as out:
        out.write("number,kind\n")
        out.writelines(f"+8160{i:07d},block\n" for i in range(1_000_000))
    screener.start()
    importer = spawn([sys.executable, "-m", "screener", "list", "import", str(csv)], screener.env)
    try:
        # The import parses and stages the whole file first; it takes the write lock only for
        # its last statement, which puts the staged rows into the lists.
        deadline = time.monotonic() + 300
        while not write_lock_held(screener.db):
            assert importer.poll() is None, "the import ended before it took the write lock"
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        locked = time.monotonic()
        async with open_probe(sandbox) as probe:
            calls = []
            for i in range(4):
                calls.append(await probe.call_local(f"031234002{i}"))
                await asyncio.sleep(0.3)
            routes = await asyncio.gather(*(probe.routed(c, within=HOLD + 4) for c in calls))
            routed_at = time.monotonic()
            still_locked = write_lock_held(screener.db)
            latencies = []
            for call in calls:
                request = await probe.pbx.wait_for(user_event("ScreenRequest", call.call_id))
                routed = await probe.pbx.wait_for(user_event("ScreenRouted", call.call_id))
                latencies.append(
                    float(routed.get("Timestamp") or 0) - float(request.get("Timestamp") or 0)
                )
        _, err = await asyncio.to_thread(importer.communicate, timeout=60)
        assert importer.returncode == 0, err
        released = time.monotonic()
    finally:
        if importer.poll() is None:
            importer.kill()
        importer.communicate()
    lines = [x for c in calls for x in screened_lines(screener, c)]
    await asyncio.sleep(0.5)
    rows = json.loads(screener.cli("calls", "--json").stdout)
    recorded = {r["call_id"] for r in rows} & {c.call_id for c in calls}
    write_errors = [
        x
        for x in screener.lines()
        if x.get("event") == "could not write to the database; the call is still routed"
    ]
    print(
        f"\n[import lock] lock held ≥ {released - locked:.2f} s (routed {routed_at - locked:.2f} s"
        f" in, still locked then: {still_locked}); request → ScreenRouted (Asterisk clock) ms:"
        f" {[round(x * 1000) for x in latencies]}; screener redirect_ms:"
        f" {[round(x['redirect_ms']) for x in lines]}; recorded {len(recorded)}/{len(calls)},"
        f" write errors {len(write_errors)}"
    )
    assert routes == [STAFF] * len(calls)
    assert still_locked
    assert max(latencies) < HOLD - 0.5


# ---- 6: an unusable database at start-up ---------------------------------------------------------


async def test_unusable_database_exits_4_and_calls_fall_back(
    screener: ScreenerProcess, sandbox: SandboxInfo, tmp_path: Path
) -> None:
    """An unusable, empty or missing database stops `screener run` (exit 4); calls fall back."""
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"these are not the lists you are looking for\n" * 200)
    damaged = tmp_path / "damaged.db"
    good = ScreenerProcess(sandbox, tmp_path / "good")
    assert good.cli("list", "add", "0312345678", "--allow").returncode == 0
    assert good.cli("list", "add", "0120", "--prefix", "--block").returncode == 0
    data = bytearray(good.db.read_bytes())
    page = 4096
    data[page : 3 * page] = b"\xa5" * (2 * page)  # wreck the tables' pages, keep the header
    damaged.write_bytes(bytes(data))
    directory = tmp_path / "directory.db"
    directory.mkdir()
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    missing = tmp_path / "missing.db"  # a typo in the path must not start with empty lists
    async with open_probe(sandbox) as probe:
        call = await probe.call_local("0312340031")
        results = {}
        for path in (garbage, damaged, directory, empty, missing):
            results[path.name] = run_screener(screener, 30, SCREENER_DB=str(path))
        assert await probe.routed(call, within=HOLD + 4) == FALLBACK
        assert probe.pbx.matching(user_event("ScreenFallback", call.call_id))
    for name, (code, output, took) in results.items():
        print(f"\n[{name}] exit {code} in {took:.2f} s: {error_lines(output)}")
        assert code == 4, output
        assert len(error_lines(output)) == 1 and "Traceback" not in output
        assert name in error_lines(output)[0]
        assert "screener running" not in output
    assert not missing.exists()


# ---- 7: a full disk ----------------------------------------------------------------------------


async def test_disk_full_calls_are_still_routed_and_the_error_logged(
    screener: ScreenerProcess, sandbox: SandboxInfo, tmp_path: Path
) -> None:
    """With the database's disk full, calls are still routed and the write error is logged."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    mount_tmpfs(mount, "512k")
    try:
        screener.db = mount / "screener.db"
        screener.env["SCREENER_DB"] = str(screener.db)
        assert screener.cli("init").returncode == 0
        screener.start()
        with (mount / "filler").open(
            "wb", buffering=0
        ) as filler:  # fill what is left, to the last byte
            for size in (65536, 4096, 512, 1):
                with contextlib.suppress(OSError):
                    while True:
                        filler.write(b"\0" * size)
                        filler.flush()
        assert os.statvfs(mount).f_bavail == 0
        async with open_probe(sandbox) as probe:
            calls = [await probe.call_local(f"031234004{i}") for i in range(3)]
            routes = await asyncio.gather(*(probe.routed(c, within=HOLD + 4) for c in calls))
        errors = await wait_lines(
            screener, "could not write to the database; the call is still routed", within=5
        )
        lines = [x for c in calls for x in screened_lines(screener, c)]
        print(
            f"\n[disk full] routes {routes}; write errors logged {len(errors)}:"
            f" {errors[0].get('error')}; redirect_ms {[round(x['redirect_ms']) for x in lines]}"
        )
        assert routes == [STAFF] * 3
        assert len(lines) == 3
        code = screener.stop()
        print(f"[disk full] screener exit code on SIGTERM: {code}")
    finally:
        screener.stop()
        unmount(mount)
    assert not os.path.ismount(mount)


# ---- 8: a hostile caller ID over real SIP -------------------------------------------------------

# Quotes, ";", a literal %0D%0A and AMI header lookalikes, without raw control characters.
HOSTILE_NUM = '0312340051;tag=x%0D%0AAction: Originate"<sip:a@b>'
HOSTILE_NAME = 'Evil" Action: Originate; Channel: Local/101@from-staff; x %0D%0A <sip:a@b>'
# The same with raw CR/LF, which the carrier's Asterisk puts on the wire as they are.
CRLF = "\r\nAction: Originate\r\nChannel: Local/101@from-staff\r\n\r\n"
# A whole forged UserEvent: the blank lines frame it as its own AMI message.
FORGED_ID = "1700000000.4242"
FORGED = (
    "0312340053\r\n\r\nEvent: UserEvent\r\nPrivilege: user,all\r\nChannel: PJSIP/trunk-x\r\n"
    f"CallerIDNum: 0120121852\r\nExten: 0312345678\r\nUniqueid: {FORGED_ID}\r\n"
    "UserEvent: ScreenRequest\r\nVersion: 1\r\n\r\nX: "
)


async def inject(probe: Probe, did: str, number: str, name: str) -> str:
    """The carrier calls the PBX over SIP with this caller ID; returns its channel's id."""
    assert probe.carrier is not None
    channel_id = new_call_id("c")
    quote = functools.partial(urllib.parse.quote, safe="")  # no "," (Variable separator)
    await probe.carrier.ami.send(
        {
            "Action": "Originate",
            "Channel": f"Local/{did}@inject",
            "Application": "Wait",
            "Data": "8",
            "Async": "true",
            "Timeout": "30000",
            "ChannelId": channel_id,
            "Variable": f"INJECT_NAME={quote(name)},INJECT_NUM={quote(number)}",
        },
        timeout=5,
    )
    return channel_id


async def new_trunk_channel(probe: Probe, before: int) -> str:
    """The PBX channel of the next SIP call in (Newchannel's first headers survive a split)."""
    event = await probe.pbx.wait_for(
        lambda e: (
            probe.pbx.events.index(e) >= before
            and e.name == "Newchannel"
            and (e.get("Channel") or "").startswith("PJSIP/trunk-")
        ),
        10,
    )
    return event.get("Channel") or ""


async def getvar(probe: Probe, channel: str, name: str) -> str:
    return (
        await probe.pbx.ami.send({"Action": "Getvar", "Channel": channel, "Variable": name})
    ).get("Value") or ""


async def test_hostile_sip_caller_id_is_screened_and_runs_no_action(
    screener: ScreenerProcess, sandbox: SandboxInfo
) -> None:
    """Hostile SIP caller IDs get a route and run no AMI action; printable ones are screened."""
    screener.start()
    async with open_probe(sandbox, carrier=True) as probe:
        assert probe.carrier is not None
        before = len(probe.pbx.events)
        # Raw CR/LF in the display name: the PBX's pjproject refuses the INVITE (bad From).
        crlf_name = await inject(probe, "0312349998", "0312340050", f"Evil{CRLF}")
        await asyncio.sleep(1.0)
        assert not [e for e in probe.pbx.events[before:] if e.name == "Newchannel"]
        with contextlib.suppress(AMIError):
            await probe.carrier.ami.send({"Action": "Hangup", "Channel": crlf_name}, timeout=5)

        # Raw CR/LF in the number: it reaches the PBX's CALLERID(num), which AMI sends raw.
        mark = len(probe.pbx.events)
        await inject(probe, "0312349997", f"0312340051{CRLF}", "Split")
        split_channel = await new_trunk_channel(probe, mark)
        await asyncio.sleep(HOLD + 1.0)
        split_state = await getvar(probe, split_channel, "SCREEN_STATE")

        # Quotes, ";", %0D%0A and header lookalikes, printable: screened as any call.
        mark = len(probe.pbx.events)
        await inject(probe, "0312349999", HOSTILE_NUM, HOSTILE_NAME)
        request = await probe.pbx.wait_for(
            lambda e: user_event("ScreenRequest")(e) and e.get("Exten") == "0312349999", 15
        )
        call = Call(request.get("Uniqueid") or "", "", "0312349999", time.monotonic())
        probe.calls.append(call)
        route = await probe.routed(call, within=HOLD + 4)
        seen = probe.pbx.events[before:]
        channels = sorted({e.get("Channel") or "" for e in seen if e.name == "Newchannel"})
        originates = [e for e in seen if e.name == "OriginateResponse"]
    rows = json.loads(screener.cli("calls", "--json").stdout)
    row = next(r for r in rows if r["call_id"] == call.call_id)
    lines = screened_lines(screener, call)
    print(
        f"\n[hostile SIP] CR/LF in the name: INVITE dropped by the PBX; CR/LF in the number:"
        f" {split_channel} SCREEN_STATE={split_state!r}, call log rows {len(rows) - 1}"
        f" besides the printable call; printable: PBX CallerIDNum={request.get('CallerIDNum')!r}"
        f" CallerIDName={request.get('CallerIDName')!r}; call log number={row['number']!r}"
        f" name={row['name']!r} category={row['category']} route={row['route']}; ScreenRouted"
        f" {route}; PBX channels {channels}"
    )
    assert split_state in ("fallback", "routed")  # either way the call has a route
    assert route[1] is False  # decided by the screener, not the fallback
    assert len(lines) == 1 and lines[0]["route"] == route[0]
    # Recorded verbatim as the PBX reported it (its SIP stack cut the number at ";").
    assert (row["number"], row["name"]) == (request.get("CallerIDNum"), request.get("CallerIDName"))
    assert not originates
    # Only the test calls and the staff phones a routed call rings (how soon that Dial shows up
    # is a race); never the Local/ channel an injected Originate would create.
    assert all(c.startswith(("PJSIP/trunk-", "PJSIP/staff1-", "PJSIP/staff2-")) for c in channels)
    assert screener.proc is not None and screener.proc.poll() is None


async def test_event_forged_in_a_caller_number_is_not_acted_on(
    screener: ScreenerProcess, sandbox: SandboxInfo
) -> None:
    """A ScreenRequest forged inside a SIP caller number is never screened nor redirected."""
    screener.start()
    async with open_probe(sandbox, carrier=True) as probe:
        before = len(probe.pbx.events)
        await inject(probe, "0312349996", FORGED, "Forger")
        channel = await new_trunk_channel(probe, before)
        await asyncio.sleep(HOLD + 1.0)
        state = await getvar(probe, channel, "SCREEN_STATE")
        originates = [e for e in probe.pbx.events[before:] if e.name == "OriginateResponse"]
    forged = [x for x in screener.lines() if x.get("call_id") == FORGED_ID]
    rows = json.loads(screener.cli("calls", "--json").stdout)
    print(
        f"\n[forged event] SCREEN_STATE={state!r}; screener lines for the forged Uniqueid:"
        f" {len(forged)}; call log: {[(r['number'], r['name'], r['route']) for r in rows]}"
    )
    assert not forged and not originates
    assert state in ("fallback", "routed")
