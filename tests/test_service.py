"""screener.service through its real lifecycle: ``run()`` against a FakeAMI and a real SQLite file.

Each test starts the service with :func:`serving`, drives it with the events the dialplan of
``asterisk-conf/extensions.conf`` raises (channel snapshot headers and ``Timestamp`` as Asterisk
sends them) and checks the Redirects on the wire and the call log in the database.
"""

# the secrets here are test fixtures; the test is that they never leak

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog

from screener import events, marker, service
from screener.config import AMIConfig, Config
from screener.errors import AMIAuthError, ConfigError, StoreCorruptError, StoreError
from screener.policy import SOURCE_LEARNED, SOURCE_MANUAL, Entry, ListKind
from screener.service import Screener, Stats
from screener.store import CallRecord, RecordCall, Store, Write
from tests.fakeami import FakeAMI, Received, encode

SECRET = "hunter2-Svc7"  # distinctive, so that a leak is easy to spot
TOLL_FREE = "0120121852"
TOLL_FREE_E164 = "+81120121852"
MOBILE = "09012345678"
MOBILE_E164 = "+819012345678"
FIXED = "0312345678"
FIXED_E164 = "+81312345678"
DID = "0355550000"

_ids = itertools.count(1)


def new_call_id() -> str:
    """A fresh Asterisk-style Uniqueid."""
    return f"1700000000.{next(_ids)}"


def make_config(fake: FakeAMI, db: Path, **changes: Any) -> Config:
    ami = AMIConfig(
        host=fake.host,
        port=fake.port,
        secret=changes.pop("secret", SECRET),
        connect_timeout=2.0,
        action_timeout=1.0,
        ping_interval=0.2,
        ping_timeout=0.5,
    )
    # No /metrics server unless a test asks for one (tests/test_service_observers.py).
    changes.setdefault("metrics_listen", "")
    return Config(db_path=db, ami=ami, hold_seconds=4.0, late_margin=0.5, **changes)


def snapshot(
    call_id: str,
    number: str,
    name: str = "",
    *,
    user_event: str = "ScreenRequest",
    exten: str = DID,
    context: str = "screen-hold",
    timestamp: float | None = None,
    **body: str,
) -> dict[str, str]:
    """A UserEvent as Asterisk 22 sends it: channel snapshot headers, then the body."""
    return {
        "Event": "UserEvent",
        "Privilege": "user,all",
        "Timestamp": f"{time.time() if timestamp is None else timestamp:.6f}",
        "Channel": f"PJSIP/trunk-{call_id.rsplit('.', 1)[-1].zfill(8)}",
        "ChannelState": "4",
        "ChannelStateDesc": "Ring",
        "CallerIDNum": number,
        "CallerIDName": name,
        "ConnectedLineNum": "<unknown>",
        "ConnectedLineName": "<unknown>",
        "Language": "en",
        "AccountCode": "",
        "Context": context,
        "Exten": exten,
        "Priority": "1",
        "Uniqueid": call_id,
        "Linkedid": call_id,
        "UserEvent": user_event,
        **body,
    }


def request(call_id: str, number: str, name: str = "", **kw: Any) -> dict[str, str]:
    return snapshot(call_id, number, name, Version="1", **kw)


@dataclass
class Running:
    """A service started by :func:`serving`, with the fake it talks to."""

    fake: FakeAMI
    screener: Screener
    config: Config
    stop: asyncio.Event
    task: asyncio.Task[Stats]

    async def redirects(self, count: int, within: float = 2.0) -> list[Received]:
        """Wait for ``count`` Redirects on the wire and return them."""
        await self.fake.wait_until(lambda: len(self.fake.actions("Redirect")) >= count, within)
        return self.fake.actions("Redirect")

    async def call(self, call_id: str, within: float = 2.0) -> CallRecord:
        """Wait until the call log holds ``call_id`` and return its record (read independently)."""
        record: CallRecord = await eventually(
            lambda: read_call(self.config.db_path, call_id), within
        )
        return record


@contextlib.asynccontextmanager
async def serving(config: Config, fake: FakeAMI) -> AsyncIterator[Running]:
    """Run ``service.run(config)`` as a task until the block ends; then stop it and await it.

    Like an admin would, it creates the database first (``screener init``) when there is none.
    """
    if not config.db_path.exists():
        async with Store.open(config.db_path):
            pass
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[Screener] = loop.create_future()
    task = asyncio.create_task(service.run(config, stop=stop, ready=ready.set_result))
    started: set[asyncio.Future[Any]] = {ready, task}
    await asyncio.wait(started, timeout=5, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        ready.cancel()
        task.result()  # raises the startup error
    assert ready.done(), "the service did not start"
    running = Running(fake, ready.result(), config, stop, task)
    try:
        yield running
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.shield(task), 10)


async def eventually(probe: Callable[[], Awaitable[Any]], within: float = 2.0) -> Any:
    """Poll ``probe`` until it returns something other than None."""
    async with asyncio.timeout(within):
        while True:
            value = await probe()
            if value is not None:
                return value
            await asyncio.sleep(0.02)


async def read_call(db: Path, call_id: str) -> CallRecord | None:
    async with Store.open(db, readonly=True) as store:
        return await store.get_call(call_id)


async def read_entry(db: Path, number: str) -> Entry | None:
    async with Store.open(db, readonly=True) as store:
        return await store.get(number, prefix=False)


async def add_entry(db: Path, kind: ListKind, number: str, **kw: Any) -> None:
    async with Store.open(db) as store:
        await store.add(Entry(kind=kind, number=number, **kw))


# -- routing -----------------------------------------------------------------------------------


async def test_toll_free_caller_is_challenged(fake: FakeAMI, db: Path) -> None:
    """A toll-free caller is Redirected to screen-challenge with a 2-digit code, and logged."""
    async with serving(make_config(fake, db), fake) as svc:
        call_id = new_call_id()
        await fake.emit(request(call_id, TOLL_FREE, "TELE SALES"))
        (redirect,) = await svc.redirects(1)
        record = await svc.call(call_id)
    assert redirect.get("Channel") == call_id
    assert redirect.get("Context") == "screen-challenge"
    code = redirect.get("Exten") or ""
    assert len(code) == 2 and code.isdigit() and len(set(code)) > 1
    assert redirect.get("Priority") == "1"
    assert (record.route, record.rule, record.category) == ("challenge", "category", "toll_free")
    assert record.e164 == TOLL_FREE_E164
    assert (record.raw_number, record.raw_name) == (TOLL_FREE, "TELE SALES")
    assert record.did == "+81355550000"
    assert any("category rule toll_free" in r for r in record.reasons)
    assert record.latency_ms > 0 and not record.fallback


async def test_mobile_caller_goes_to_staff(fake: FakeAMI, db: Path) -> None:
    """A mobile caller is Redirected to screen-staff/s; the raw name is logged exactly as sent."""
    async with serving(make_config(fake, db), fake) as svc:
        call_id = new_call_id()
        await fake.emit(request(call_id, MOBILE, "山田 太郎"))
        (redirect,) = await svc.redirects(1)
        record = await svc.call(call_id)
        assert svc.screener.stats.routed == 1
    assert (redirect.get("Channel"), redirect.get("Context"), redirect.get("Exten")) == (
        call_id,
        "screen-staff",
        "s",
    )
    assert (record.route, record.category, record.e164) == ("staff", "mobile", MOBILE_E164)
    assert (record.raw_number, record.raw_name) == (MOBILE, "山田 太郎")


async def test_blocked_caller_goes_to_voicemail(fake: FakeAMI, db: Path) -> None:
    """A number on the block list is Redirected to screen-voicemail/s and the entry gets a hit."""
    await add_entry(db, ListKind.BLOCK, FIXED_E164, label="pest")
    async with serving(make_config(fake, db), fake) as svc:
        call_id = new_call_id()
        await fake.emit(request(call_id, FIXED))
        (redirect,) = await svc.redirects(1)
        record = await svc.call(call_id)
        entry = await eventually(
            lambda: _hit_entry(db, FIXED_E164),
        )
    assert (redirect.get("Channel"), redirect.get("Context"), redirect.get("Exten")) == (
        call_id,
        "screen-voicemail",
        "s",
    )
    assert (record.route, record.rule) == ("voicemail", "exact-block")
    assert any("exact block" in r and "pest" in r for r in record.reasons)
    assert entry.hits == 1 and entry.last_seen is not None


async def _hit_entry(db: Path, number: str) -> Entry | None:
    entry = await read_entry(db, number)
    return entry if entry is not None and entry.hits > 0 else None


async def test_allow_listed_toll_free_caller_goes_to_staff(fake: FakeAMI, db: Path) -> None:
    """An allow-listed number skips its category's challenge and goes to screen-staff."""
    await add_entry(db, ListKind.ALLOW, TOLL_FREE_E164, label="our bank")
    async with serving(make_config(fake, db), fake) as svc:
        call_id = new_call_id()
        await fake.emit(request(call_id, TOLL_FREE))
        (redirect,) = await svc.redirects(1)
        record = await svc.call(call_id)
    assert (redirect.get("Context"), redirect.get("Exten")) == ("screen-staff", "s")
    assert (record.route, record.rule, record.category) == ("staff", "exact-allow", "toll_free")


async def test_late_request_is_not_redirected(fake: FakeAMI, db: Path) -> None:
    """A request older than hold - margin is not Redirected; the log says fallback, and why."""
    async with serving(make_config(fake, db), fake) as svc:
        call_id = new_call_id()
        await fake.emit(request(call_id, MOBILE, timestamp=time.time() - 3.6))
        record = await svc.call(call_id)
        ok_id = new_call_id()
        await fake.emit(request(ok_id, MOBILE))
        (redirect,) = await svc.redirects(1)
        assert svc.screener.stats.late == 1
    assert redirect.get("Channel") == ok_id
    assert record.fallback
    assert any("too late" in r for r in record.reasons)


async def test_redirect_error_is_survived(fake: FakeAMI, db: Path) -> None:
    """'Channel does not exist' is logged; the service goes on screening the next call."""
    fake.replies["redirect"] = {"Response": "Error", "Message": "Channel does not exist"}
    with structlog.testing.capture_logs() as logs:
        async with serving(make_config(fake, db), fake) as svc:
            gone = new_call_id()
            await fake.emit(request(gone, MOBILE))
            await svc.redirects(1)
            await fake.wait_until(lambda: svc.screener.stats.failed == 1)
            del fake.replies["redirect"]
            next_id = new_call_id()
            await fake.emit(request(next_id, MOBILE))
            await fake.wait_until(lambda: svc.screener.stats.routed == 1)
            assert (await svc.call(gone)).route == "staff"  # the decision is still logged
    assert fake.actions("Redirect")[1].get("Channel") == next_id
    (failed,) = [e for e in logs if e["event"].startswith("redirect failed")]
    assert "Channel does not exist" in failed["error"]
    assert svc.task.result().failed == 1


# -- outcomes ----------------------------------------------------------------------------------


async def challenged(svc: Running, number: str) -> str:
    """Send a request for ``number`` and wait for its challenge Redirect; returns the call id."""
    call_id = new_call_id()
    count = len(svc.fake.actions("Redirect"))
    await svc.fake.emit(request(call_id, number))
    redirect = (await svc.redirects(count + 1))[-1]
    assert (redirect.get("Channel"), redirect.get("Context")) == (call_id, "screen-challenge")
    return call_id


def challenge_event(call_id: str, number: str, outcome: str, attempts: str = "1") -> dict[str, str]:
    return snapshot(
        call_id,
        number,
        user_event="ScreenChallenge",
        context="route-challenge",
        exten="s",
        Outcome=outcome,
        Attempts=attempts,
    )


async def outcome_of(svc: Running, call_id: str) -> str:
    async def probe() -> str | None:
        record = await read_call(svc.config.db_path, call_id)
        return None if record is None else record.outcome

    result: str = await eventually(probe)
    return result


async def test_challenge_pass_learns_allow_entry(fake: FakeAMI, db: Path) -> None:
    """A passed challenge is stored on the call and earns a learned allow for verified_days."""
    async with serving(make_config(fake, db), fake) as svc:
        call_id = await challenged(svc, TOLL_FREE)
        before = dt.datetime.now(dt.UTC)
        await fake.emit(challenge_event(call_id, TOLL_FREE, "pass"))
        assert await outcome_of(svc, call_id) == "pass"
        entry = await eventually(lambda: read_entry(db, TOLL_FREE_E164))
        record = await svc.call(call_id)
    assert record.outcome_at is not None and record.outcome_at >= before - dt.timedelta(seconds=1)
    assert (entry.kind, entry.source) == (ListKind.ALLOW, SOURCE_LEARNED)
    assert entry.expires_at is not None
    days = svc.config.policy.verified_days
    expected = before + dt.timedelta(days=days)
    assert abs((entry.expires_at - expected).total_seconds()) < 5


async def test_three_failed_challenges_learn_block_entry(fake: FakeAMI, db: Path) -> None:
    """Three failed or timed-out challenges from one number (three calls) learn a block entry."""
    async with serving(make_config(fake, db), fake) as svc:
        for n, outcome in enumerate(("fail", "timeout", "fail"), start=1):
            call_id = await challenged(svc, TOLL_FREE)
            await fake.emit(challenge_event(call_id, TOLL_FREE, outcome, attempts="3"))
            assert await outcome_of(svc, call_id) == outcome
            await fake.wait_until(lambda: svc.screener.stats.outcomes == n)  # noqa: B023  # awaited here
            if n < 3:
                assert await read_entry(db, TOLL_FREE_E164) is None
        entry = await eventually(lambda: read_entry(db, TOLL_FREE_E164))
        # The next call from the number goes straight to voicemail.
        blocked = new_call_id()
        await fake.emit(request(blocked, TOLL_FREE))
        redirect = (await svc.redirects(4))[-1]
    assert (entry.kind, entry.source) == (ListKind.BLOCK, SOURCE_LEARNED)
    assert (redirect.get("Channel"), redirect.get("Context")) == (blocked, "screen-voicemail")


async def test_manual_entry_is_never_overridden_by_learning(fake: FakeAMI, db: Path) -> None:
    """A manual block entry stays as it is, whatever challenge outcome the number reports."""
    await add_entry(db, ListKind.BLOCK, TOLL_FREE_E164, label="office says no")
    async with serving(make_config(fake, db), fake) as svc:
        call_id = new_call_id()
        await fake.emit(request(call_id, TOLL_FREE))
        (redirect,) = await svc.redirects(1)
        assert redirect.get("Context") == "screen-voicemail"
        await svc.call(call_id)
        await fake.emit(challenge_event(call_id, TOLL_FREE, "pass"))
        assert await outcome_of(svc, call_id) == "pass"
        await fake.wait_until(lambda: svc.screener.stats.outcomes == 1)
        await asyncio.sleep(0.1)  # the learning step runs after the outcome is stored
    entry = await read_entry(db, TOLL_FREE_E164)
    assert entry is not None
    assert (entry.kind, entry.source, entry.label) == (
        ListKind.BLOCK,
        SOURCE_MANUAL,
        "office says no",
    )


async def test_garbage_outcome_is_ignored(fake: FakeAMI, db: Path) -> None:
    """An Outcome that is not pass/fail/timeout/hangup changes nothing and is logged."""
    with structlog.testing.capture_logs() as logs:
        async with serving(make_config(fake, db), fake) as svc:
            call_id = await challenged(svc, TOLL_FREE)
            await svc.call(call_id)
            await fake.emit(challenge_event(call_id, TOLL_FREE, "PASS; DROP TABLE calls"))
            await fake.wait_until(
                lambda: any(e["event"] == "unknown challenge outcome ignored" for e in logs)
            )
            record = await svc.call(call_id)
            assert svc.screener.stats.outcomes == 0
    assert record.outcome is None
    assert await read_entry(db, TOLL_FREE_E164) is None


async def test_voicemail_status_is_stored(fake: FakeAMI, db: Path) -> None:
    """ScreenVoicemail's Status is stored on the call's record."""
    await add_entry(db, ListKind.BLOCK, FIXED_E164)
    async with serving(make_config(fake, db), fake) as svc:
        call_id = new_call_id()
        await fake.emit(request(call_id, FIXED))
        await svc.redirects(1)
        await svc.call(call_id)
        await fake.emit(
            snapshot(
                call_id,
                FIXED,
                user_event="ScreenVoicemail",
                context="route-voicemail",
                exten="s",
                Status="SUCCESS",
            )
        )

        async def voicemail() -> str | None:
            record = await read_call(db, call_id)
            return None if record is None else record.voicemail

        assert await eventually(voicemail) == "SUCCESS"


async def test_fallback_for_unseen_call_is_logged(fake: FakeAMI, db: Path) -> None:
    """ScreenFallback for a call the service never saw makes a fallback row with rule 'fallback'."""
    async with serving(make_config(fake, db), fake) as svc:
        call_id = new_call_id()
        await fake.emit(
            snapshot(
                call_id,
                MOBILE,
                "Sato",
                user_event="ScreenFallback",
                context="screen-fallback",
                exten="s",
                Route="staff",
            )
        )
        record = await svc.call(call_id)
        assert svc.screener.stats.fallbacks == 1
    assert record.fallback and record.rule == "fallback" and record.route == "staff"
    assert (record.raw_number, record.raw_name, record.e164) == (MOBILE, "Sato", MOBILE_E164)
    assert record.did is None
    assert not fake.actions("Redirect")


async def test_late_redirect_of_a_routed_call_keeps_its_route(fake: FakeAMI, db: Path) -> None:
    """ScreenLate with State routed (a repeated Redirect) leaves the decided route alone."""
    await add_entry(db, ListKind.BLOCK, FIXED_E164)
    async with serving(make_config(fake, db), fake) as svc:
        call_id = new_call_id()
        await fake.emit(request(call_id, FIXED))
        await svc.redirects(1)
        await svc.call(call_id)
        with structlog.testing.capture_logs() as logs:
            await fake.emit(
                snapshot(
                    call_id,
                    FIXED,
                    user_event="ScreenLate",
                    context="screen-late",
                    exten="s",
                    State="routed",
                )
            )
            # The handler ran (it says so) before we look: not just 0.2 s of hoping.
            await eventually(
                lambda: _true_if(any(e["event"].startswith("late redirect") for e in logs))
            )
        record = await svc.call(call_id)
    assert (record.route, record.fallback) == ("voicemail", False)


async def test_late_redirect_after_fallback_keeps_fallback_route(fake: FakeAMI, db: Path) -> None:
    """ScreenLate after ScreenFallback keeps the route the fallback took and notes the late try."""
    async with serving(make_config(fake, db), fake):
        call_id = new_call_id()
        where: dict[str, Any] = {"context": "screen-fallback", "exten": "s"}
        await fake.emit(
            snapshot(call_id, MOBILE, user_event="ScreenFallback", Route="voicemail", **where),
            snapshot(call_id, MOBILE, user_event="ScreenLate", State="fallback", **where),
        )

        async def noted() -> CallRecord | None:
            record = await read_call(db, call_id)
            return record if record is not None and len(record.reasons) >= 2 else None

        record = await eventually(noted)
    assert (record.route, record.fallback) == ("voicemail", True)
    assert any("after the fallback" in r for r in record.reasons)


# -- hostile input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tainted", "context"), [("yes", "screen-challenge"), ("no", "screen-staff")]
)
async def test_tainted_number_makes_the_caller_invalid(
    fake: FakeAMI, db: Path, tainted: str, context: str
) -> None:
    """Tainted: yes (the dialplan stripped control characters) screens the caller as invalid."""
    call_id = new_call_id()
    async with serving(make_config(fake, db), fake) as svc:
        await fake.emit(request(call_id, MOBILE, "Mobile", Tainted=tainted))
        (redirect,) = await svc.redirects(1)
        record = await svc.call(call_id)
    assert redirect.get("Context") == context
    assert record.raw_number == MOBILE
    if tainted == "yes":
        assert (record.category, record.e164) == ("invalid", None)
        assert "caller number carried control characters" in record.reasons[0]


async def test_forged_header_makes_the_caller_invalid(fake: FakeAMI, db: Path) -> None:
    """A name that smuggles a CallerIDNum header: nothing is trusted, the caller is challenged."""
    call_id = new_call_id()
    raw = (
        "Event: UserEvent\r\nPrivilege: user,all\r\n"
        f"Timestamp: {time.time():.6f}\r\n"
        "Channel: PJSIP/trunk-00000042\r\n"
        f"CallerIDNum: {MOBILE}\r\n"
        "CallerIDName: Bank\r\n"
        f"CallerIDNum: {TOLL_FREE}\r\n"  # what a CR/LF in the name would look like on the wire
        f"Context: screen-hold\r\nExten: {DID}\r\nPriority: 1\r\n"
        f"Uniqueid: {call_id}\r\nLinkedid: {call_id}\r\n"
        "UserEvent: ScreenRequest\r\nVersion: 1\r\n\r\n"
    )
    async with serving(make_config(fake, db), fake) as svc:
        await fake.send_raw(raw.encode())
        (redirect,) = await svc.redirects(1)
        record = await svc.call(call_id)
    # The first CallerIDNum is a mobile (staff), but a forged snapshot earns the challenge.
    assert redirect.get("Context") == "screen-challenge"
    assert record.raw_number == MOBILE and record.raw_name == "Bank"
    assert (record.category, record.e164) == ("invalid", None)
    assert any("caller data forged AMI headers: calleridnum" in r for r in record.reasons)
    keys = [k for k, _ in redirect.headers]
    assert sorted(keys) == ["Action", "ActionID", "Channel", "Context", "Exten", "Priority"]


async def test_control_characters_never_reach_the_wire(fake: FakeAMI, db: Path) -> None:
    """A bare CR in the Uniqueid never reaches the wire: the Redirect has its six lines only."""
    call_id = new_call_id()
    async with serving(make_config(fake, db), fake) as svc:
        # A value with a bare CR (no LF) survives AMI framing; it must not survive into a Redirect.
        await fake.emit(request(call_id + "\rAction: Originate", MOBILE, "x\ry"))
        (redirect,) = await svc.redirects(1)
        record = await svc.call(call_id + "\rAction: Originate")
    assert not fake.actions("Originate")
    assert redirect.get("Channel") == call_id + "Action: Originate"
    assert redirect.raw.count(b"\r\n") == 6 + 1  # six header lines and the blank line
    assert record.raw_name == "x\ry"


async def test_ambiguous_uniqueid_is_not_redirected(fake: FakeAMI, db: Path) -> None:
    """A request with two Uniqueid headers is not routed: redirecting the wrong call is worse."""
    call_id = new_call_id()
    raw = (
        f"Event: UserEvent\r\nPrivilege: user,all\r\nTimestamp: {time.time():.6f}\r\n"
        f"CallerIDNum: {MOBILE}\r\nUniqueid: 1699999999.1\r\nCallerIDName: x\r\n"
        f"Uniqueid: {call_id}\r\nUserEvent: ScreenRequest\r\n\r\n"
    )
    async with serving(make_config(fake, db), fake) as svc:
        await fake.send_raw(raw.encode())
        await fake.wait_until(lambda: svc.screener.stats.requests == 1)
        ok = new_call_id()
        await fake.emit(request(ok, MOBILE))
        (redirect,) = await svc.redirects(1)
    assert redirect.get("Channel") == ok


# -- startup errors ----------------------------------------------------------------------------


async def test_wrong_secret_raises_auth_error_quickly(fake: FakeAMI, db: Path) -> None:
    """A refused login makes run() raise AMIAuthError at once, not retry silently."""
    async with Store.open(db):  # screener init
        pass
    started = time.monotonic()
    with pytest.raises(AMIAuthError):
        await service.run(make_config(fake, db, secret="wrong"), stop=asyncio.Event())
    assert time.monotonic() - started < 1.5
    assert fake.login_failures == 1


async def test_missing_secret_is_a_config_error(fake: FakeAMI, db: Path) -> None:
    """No AMI secret: ConfigError before any connection (or database file) is made."""
    with pytest.raises(ConfigError, match="SCREENER_AMI_SECRET"):
        await service.run(make_config(fake, db, secret=None), stop=asyncio.Event())
    assert fake.accepted == 0
    assert not db.exists()


@pytest.mark.parametrize(
    "content",
    [b"this is not a database at all, just text" * 100, b"SQLite format 3\x00" + b"\xff" * 4000],
    ids=["text", "damaged"],
)
async def test_corrupt_database_stops_before_ami(fake: FakeAMI, db: Path, content: bytes) -> None:
    """A corrupt database file raises StoreCorruptError; no AMI login is attempted."""
    db.write_bytes(content)
    with pytest.raises(StoreCorruptError):
        await service.run(make_config(fake, db), stop=asyncio.Event())
    assert fake.accepted == 0 and not fake.actions("Login")
    assert db.read_bytes() == content


# -- lifecycle ---------------------------------------------------------------------------------


async def test_stop_waits_for_the_call_in_flight(fake: FakeAMI, db: Path) -> None:
    """Stop during a Redirect: run() returns once that call is done, leaving no task behind."""
    before = asyncio.all_tasks()
    held: list[Received] = []

    def hold(received: Received) -> None:
        held.append(received)

    fake.replies["redirect"] = hold
    async with serving(make_config(fake, db), fake) as svc:
        call_id = new_call_id()
        await fake.emit(request(call_id, MOBILE))
        await fake.wait_until(lambda: bool(held))
        svc.stop.set()
        await asyncio.sleep(0.2)
        assert not svc.task.done(), "run() returned with a call in flight"
        action_id = held[0].get("ActionID") or ""
        await fake.send_raw(
            encode([("Response", "Success"), ("ActionID", action_id), ("Message", "ok")])
        )
        stats = await asyncio.wait_for(svc.task, 3)
    assert stats.routed == 1 and stats.failed == 0
    record = await read_call(db, call_id)
    assert record is not None and record.route == "staff"
    assert asyncio.all_tasks() == before


async def test_reconnects_after_connection_drop(fake: FakeAMI, db: Path) -> None:
    """When the AMI connection drops the service logs in again and screens the next call."""
    async with serving(make_config(fake, db), fake) as svc:
        first = new_call_id()
        await fake.emit(request(first, MOBILE))
        await svc.redirects(1)
        fake.kill_connections()
        await fake.wait_until(lambda: fake.logins == 2 and bool(fake.authenticated), within=5)
        await fake.wait_until(lambda: svc.screener.ami.connected)
        second = new_call_id()
        await fake.emit(request(second, TOLL_FREE))
        redirects = await svc.redirects(2)
    assert redirects[1].get("Channel") == second and redirects[1].conn == 2
    assert svc.task.result().routed == 2


async def test_one_log_line_per_call_and_no_secret(fake: FakeAMI, db: Path) -> None:
    """Each call gives one 'call screened' line with its facts; the secret is never logged."""
    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as logs:
        async with serving(make_config(fake, db), fake) as svc:
            calls = [(new_call_id(), MOBILE), (new_call_id(), TOLL_FREE)]
            await fake.emit(*(request(c, n) for c, n in calls))
            await svc.redirects(2)
            await fake.wait_until(lambda: svc.screener.stats.routed == 2)
    lines = [e for e in logs if e["event"] == "call screened"]
    assert sorted(e["call_id"] for e in lines) == sorted(c for c, _ in calls)
    by_id = {e["call_id"]: e for e in lines}
    mobile = by_id[calls[0][0]]
    assert (mobile["caller"], mobile["category"], mobile["route"]) == (
        MOBILE_E164,
        "mobile",
        "staff",
    )
    assert by_id[calls[1][0]]["route"] == "challenge"
    for line in lines:
        assert isinstance(line["reasons"], list) and line["reasons"]
        assert isinstance(line["decision_ms"], float) and line["decision_ms"] >= 0
    assert SECRET not in repr(logs)


# -- a locked database -------------------------------------------------------------------------


@contextlib.contextmanager
def write_locked(db: Path) -> Any:
    """Another process's writer: BEGIN IMMEDIATE held on a separate sqlite3 connection."""
    other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield other
    finally:
        with contextlib.suppress(sqlite3.Error):
            other.execute("ROLLBACK")
        other.close()


async def test_locked_database_does_not_delay_routing(fake: FakeAMI, db: Path) -> None:
    """With the write lock held elsewhere, calls are routed promptly and logged once it is free."""
    await add_entry(db, ListKind.BLOCK, FIXED_E164)
    async with serving(make_config(fake, db), fake) as svc:
        with write_locked(db):
            emitted = time.monotonic()
            call_id = new_call_id()
            await fake.emit(request(call_id, FIXED))
            (redirect,) = await svc.redirects(1)
            assert redirect.at - emitted < 1.0  # well within the 4 s hold
            assert redirect.get("Context") == "screen-voicemail"  # the lookup still works
            assert await read_call(db, call_id) is None  # the record waits for the lock
            await asyncio.sleep(0.3)
        record = await svc.call(call_id, within=3)
    assert record.route == "voicemail"
    assert svc.task.result().record_errors == 0


async def test_locked_database_near_the_deadline_still_beats_it(fake: FakeAMI, db: Path) -> None:
    """Waiting for a locked writer never pushes the Redirect past the deadline."""
    async with serving(make_config(fake, db), fake) as svc:
        config = svc.config
        with write_locked(db):
            call_id = new_call_id()
            # The deadline (Timestamp + hold - margin) is 0.2 s away, less than RECORD_BUDGET.
            left = 0.2
            assert left < service.RECORD_BUDGET
            stamp = time.time() - (config.hold_seconds - config.late_margin) + left
            deadline = time.monotonic() + left
            await fake.emit(request(call_id, MOBILE, timestamp=stamp))
            (redirect,) = await svc.redirects(1)
            assert redirect.at < deadline
            await asyncio.sleep(0.1)
        record = await svc.call(call_id, within=3)
    assert (record.route, record.fallback) == ("staff", False)
    assert svc.task.result().late == 0


async def test_records_survive_a_lock_longer_than_the_busy_timeout(
    fake: FakeAMI, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lock held past busy_timeout (a long import) delays the call records; none is lost."""
    monkeypatch.setattr(service, "WRITER_BUSY_TIMEOUT", 0.2)
    async with serving(make_config(fake, db), fake) as svc:
        with write_locked(db):
            calls = [new_call_id() for _ in range(3)]
            for call_id in calls:
                await fake.emit(request(call_id, MOBILE))
                await asyncio.sleep(0.3)  # each turn of the writer times out meanwhile
            await svc.redirects(3)
            assert svc.screener.stats.write_retries >= 2
        records = [await svc.call(c, within=3) for c in calls]
    assert [r.route for r in records] == ["staff"] * 3
    assert svc.task.result().record_errors == 0


@pytest.mark.slow
async def test_calls_stop_waiting_for_a_stalled_writer(
    fake: FakeAMI, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the journal, once the writer has waited for a held lock longer than a call's
    budget, later calls are Redirected without waiting for their records; every record is
    committed once it is free."""
    monkeypatch.setenv("SCREENER_JOURNAL", "off")
    monkeypatch.setattr(service, "RECORD_BUDGET", 1.5)
    async with serving(make_config(fake, db), fake) as svc:
        writer = svc.screener.writer
        with write_locked(db):
            first, second = new_call_id(), new_call_id()
            emitted = time.monotonic()
            await fake.emit(request(first, MOBILE))
            (redirect,) = await svc.redirects(1, within=5)
            assert redirect.at - emitted >= 1.5  # the first call waited its whole budget
            await fake.wait_until(lambda: writer.stalled(1.5), 5)
            emitted = time.monotonic()
            await fake.emit(request(second, MOBILE))
            redirects = await svc.redirects(2, within=5)
            assert redirects[1].get("Channel") == second
            assert redirects[1].at - emitted < 1.0  # not its budget: the writer was stalled
            assert await read_call(db, second) is None
        records = [await svc.call(c, within=8) for c in (first, second)]
        assert not writer.stalled(0)
    assert [r.route for r in records] == ["staff", "staff"]
    assert svc.task.result().record_errors == 0


# -- the writer: group commit ------------------------------------------------------------------


async def test_a_burst_of_calls_shares_commits(fake: FakeAMI, db: Path) -> None:
    """Calls decided while the writer is busy are committed together, each call logged once."""
    async with serving(make_config(fake, db), fake) as svc:
        with write_locked(db):
            calls = [new_call_id() for _ in range(20)]
            await fake.emit(*(request(c, MOBILE) for c in calls))
            redirects = await svc.redirects(20)  # each after its budget: the lock is held
            await asyncio.sleep(0.1)
        records = [await svc.call(c, within=3) for c in calls]
        assert svc.screener.stats.write_batches <= 3  # the first call's, then all the others'
    assert sorted(r.get("Channel") or "" for r in redirects) == sorted(calls)
    assert all(r.route == "staff" and not r.fallback for r in records)
    assert svc.task.result().record_errors == 0


async def test_shutdown_flushes_queued_records(fake: FakeAMI, db: Path) -> None:
    """Stop while records wait for a locked database: run() commits them before it returns."""
    await add_entry(db, ListKind.BLOCK, FIXED_E164)
    async with serving(make_config(fake, db), fake) as svc:
        with write_locked(db):
            calls = [new_call_id() for _ in range(5)]
            await fake.emit(*(request(c, FIXED) for c in calls))
            await svc.redirects(5)
            await fake.wait_until(lambda: svc.screener.stats.routed == 5)
            svc.stop.set()
            await asyncio.sleep(0.3)
            assert not svc.task.done(), "run() returned with records not yet written"
            assert await read_call(db, calls[0]) is None
        stats = await asyncio.wait_for(asyncio.shield(svc.task), 5)
    assert stats.record_errors == 0
    for call_id in calls:
        record = await read_call(db, call_id)
        assert record is not None and record.route == "voicemail"
    entry = await read_entry(db, FIXED_E164)
    assert entry is not None and entry.hits == 5


async def test_a_failed_batch_costs_no_other_call_its_record(fake: FakeAMI, db: Path) -> None:
    """One bad record in a batch: it is logged, every call is routed, the others are logged."""
    poisoned = new_call_id()
    with structlog.testing.capture_logs() as logs:
        async with serving(make_config(fake, db), fake) as svc:
            store = svc.screener.writer.store
            apply = store.apply

            async def failing(writes: Sequence[Write]) -> list[Any]:
                # A fake disk error for one call's row; the rest of the batch is fine.
                if any(isinstance(w, RecordCall) and w.record.call_id == poisoned for w in writes):
                    raise StoreError("database: record calls failed: disk I/O error")
                return await apply(writes)

            store.apply = failing  # type: ignore[method-assign]
            with write_locked(db):
                calls = [new_call_id() for _ in range(6)]
                await fake.emit(*(request(c, MOBILE) for c in [*calls, poisoned]))
                redirects = await svc.redirects(7)
                await asyncio.sleep(0.1)
            records = [await svc.call(c, within=3) for c in calls]
            await fake.wait_until(lambda: svc.screener.stats.record_errors == 1)
            assert await read_call(db, poisoned) is None
    assert sorted(r.get("Channel") or "" for r in redirects) == sorted([*calls, poisoned])
    assert all(r.route == "staff" for r in records)
    assert any(e["event"] == "batch write failed; writing its records one by one" for e in logs)
    (failed,) = [e for e in logs if e["event"].startswith("could not write to the database")]
    assert failed["call_id"] == poisoned and "disk I/O error" in failed["error"]
    assert svc.task.result().failed == 0


@pytest.mark.parametrize("empty", [False, True], ids=["missing", "zero-length"])
async def test_missing_or_empty_database_stops_before_ami(
    fake: FakeAMI, db: Path, empty: bool
) -> None:
    """run() never starts with empty lists: a missing or empty database is an error, no login."""
    if empty:
        db.write_bytes(b"")
    with pytest.raises(StoreError, match="screener init"):
        await service.run(make_config(fake, db), stop=asyncio.Event())
    assert fake.accepted == 0
    assert db.exists() == empty


async def test_late_decision_after_the_fallback_keeps_the_fallback_route(
    fake: FakeAMI, db: Path
) -> None:
    """ScreenFallback first, then a too-late decision: the log keeps the route the call took."""
    blocked = "+81312349999"
    async with serving(make_config(fake, db), fake) as svc:
        await svc.screener.writer.store.add(Entry(kind=ListKind.BLOCK, number=blocked))
        call_id = new_call_id()
        stale = time.time() - 3.8
        await fake.emit(snapshot(call_id, blocked, user_event="ScreenFallback", Route="staff"))
        await eventually(lambda: read_call(db, call_id))
        await fake.emit(request(call_id, blocked, timestamp=stale))
        record = await eventually(lambda: _with_reason(read_call(db, call_id), "decided too late"))
    assert not fake.actions("Redirect")
    assert (record.route, record.rule, record.fallback) == ("staff", "fallback", True)


async def _with_reason(pending: Awaitable[CallRecord | None], text: str) -> CallRecord | None:
    record = await pending
    return record if record is not None and any(text in r for r in record.reasons) else None


async def test_repeated_chanvariable_headers_are_not_forgery(fake: FakeAMI, db: Path) -> None:
    """Asterisk repeats ChanVariable for each channelvars entry: that is not a forged request."""
    call_id = new_call_id()
    event = request(call_id, MOBILE)
    raw = "".join(f"{k}: {v}\r\n" for k, v in event.items())
    raw += "ChanVariable: SCREEN_STATE=holding\r\nChanVariable: SCREEN_DID=0312345678\r\n\r\n"
    async with serving(make_config(fake, db), fake) as svc:
        await fake.send_raw(raw.encode())
        (redirect,) = await svc.redirects(1)
        record = await svc.call(call_id)
    assert redirect.get("Context") == "screen-staff"
    assert record.category == "mobile"


async def test_challenge_outcome_with_repeated_headers_is_ignored(fake: FakeAMI, db: Path) -> None:
    """A ScreenChallenge with two Outcome headers (forged) stores nothing and learns nothing."""
    async with serving(make_config(fake, db), fake) as svc:
        call_id = await challenged(svc, TOLL_FREE)
        event = challenge_event(call_id, TOLL_FREE, "fail")
        raw = "".join(f"{k}: {v}\r\n" for k, v in event.items() if k != "Outcome")
        raw += "Outcome: pass\r\nOutcome: fail\r\n\r\n"
        with structlog.testing.capture_logs() as logs:
            await fake.send_raw(raw.encode())
            await asyncio.sleep(0.3)
        record = await svc.call(call_id)
        learned = await svc.screener.reader.entries(source=SOURCE_LEARNED)
    assert record.outcome is None and learned == []
    assert any(e["event"] == "challenge outcome with repeated headers ignored" for e in logs)


async def test_invalid_verdict_survives_a_restart(fake: FakeAMI, db: Path) -> None:
    """An outcome for a call screened before a restart uses the logged verdict, not a re-parse."""
    call_id = new_call_id()
    async with serving(make_config(fake, db), fake) as svc:
        await fake.emit(request(call_id, MOBILE, Tainted="yes"))
        await svc.redirects(1)
        await svc.call(call_id)
    async with serving(make_config(fake, db), fake) as svc:
        await fake.emit(challenge_event(call_id, MOBILE, "pass"))
        record = await eventually(lambda: _with_outcome(read_call(db, call_id)))
        learned = await svc.screener.reader.entries(source=SOURCE_LEARNED)
    assert (record.category, record.outcome) == ("invalid", "pass")
    assert learned == []  # the number itself was never trusted: nothing to verify


async def _with_outcome(pending: Awaitable[CallRecord | None]) -> CallRecord | None:
    record = await pending
    return record if record is not None and record.outcome else None


async def test_skewed_asterisk_clock_still_gets_calls_routed(fake: FakeAMI, db: Path) -> None:
    """Asterisk's clock a minute behind ours: requests are timed on the estimated skew, routed."""
    async with serving(make_config(fake, db), fake) as svc:
        ids = [new_call_id() for _ in range(3)]
        for call_id in ids:
            await fake.emit(request(call_id, MOBILE, timestamp=time.time() - 60))
        redirects = await svc.redirects(3)
    assert [r.get("Channel") for r in redirects] == ids


async def _true_if(condition: bool) -> bool | None:
    return True if condition else None


# -- nothing lost while the database is locked ---------------------------------------------------


def voicemail_event(call_id: str, number: str, status: str) -> dict[str, str]:
    return snapshot(
        call_id,
        number,
        user_event="ScreenVoicemail",
        context="route-voicemail",
        exten="s",
        Status=status,
    )


async def test_every_write_survives_a_lock_longer_than_the_busy_timeout(
    fake: FakeAMI, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Held past busy_timeout: a failed challenge, a voicemail and a fallback all reach the log."""
    monkeypatch.setattr(service, "WRITER_BUSY_TIMEOUT", 0.2)
    async with serving(make_config(fake, db), fake) as svc:
        with write_locked(db):
            challenged_id = await challenged(svc, TOLL_FREE)
            await fake.emit(challenge_event(challenged_id, TOLL_FREE, "fail"))
            await fake.emit(voicemail_event(challenged_id, TOLL_FREE, "SUCCESS"))
            fell = new_call_id()
            await fake.emit(snapshot(fell, MOBILE, user_event="ScreenFallback", Route="voicemail"))
            await fake.wait_until(lambda: svc.screener.stats.write_retries >= 3, 5)
            assert await read_call(db, challenged_id) is None  # all of it waits for the lock
        record = await eventually(lambda: _with_voicemail(read_call(db, challenged_id)), 5)
        fallback = await svc.call(fell, within=5)
    assert (record.route, record.outcome, record.voicemail) == ("challenge", "fail", "SUCCESS")
    assert (fallback.route, fallback.fallback, fallback.rule) == ("voicemail", True, "fallback")
    assert svc.task.result().record_errors == 0


async def _with_voicemail(pending: Awaitable[CallRecord | None]) -> CallRecord | None:
    record = await pending
    return record if record is not None and record.voicemail is not None else None


async def test_three_failures_under_a_held_lock_still_auto_block(
    fake: FakeAMI, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three failed challenges committed together after a long lock: the third one blocks."""
    monkeypatch.setattr(service, "WRITER_BUSY_TIMEOUT", 0.2)
    async with serving(make_config(fake, db), fake) as svc:
        with write_locked(db):
            for outcome in ("fail", "timeout", "fail"):
                call_id = await challenged(svc, TOLL_FREE)
                await fake.emit(challenge_event(call_id, TOLL_FREE, outcome, attempts="3"))
            await fake.wait_until(lambda: svc.screener.stats.write_retries >= 2, 5)
            assert await read_entry(db, TOLL_FREE_E164) is None
        entry = await eventually(lambda: read_entry(db, TOLL_FREE_E164), 5)
        await fake.wait_until(lambda: svc.screener.stats.learned == 1, 5)
        async with Store.open(db, readonly=True) as store:
            (event,) = await store.outbox(topic="auto_block")
    assert (entry.kind, entry.source) == (ListKind.BLOCK, SOURCE_LEARNED)
    assert event.payload["number"] == TOLL_FREE_E164 and event.payload["failures"] == 3
    assert svc.task.result().record_errors == 0


# -- what the service publishes ------------------------------------------------------------------


async def test_the_service_publishes_what_happened(fake: FakeAMI, db: Path) -> None:
    """One hub sees the screened call, its outcome, the learned entry, voicemail and fallback."""
    seen: list[events.Event] = []
    hub = events.Hub()
    hub.subscribe(seen.append)

    def broken(event: events.Event) -> None:
        raise RuntimeError("a subscriber with a bug")

    hub.subscribe(broken)  # must cost the calls nothing
    config = make_config(fake, db)
    if not db.exists():
        async with Store.open(db):
            pass
    stop = asyncio.Event()
    ready: asyncio.Future[Screener] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(service.run(config, stop=stop, ready=ready.set_result, hub=hub))
    try:
        await asyncio.wait_for(asyncio.shield(ready), 5)
        call_id = new_call_id()
        await fake.emit(request(call_id, TOLL_FREE))
        await fake.wait_until(lambda: len(fake.actions("Redirect")) == 1)
        await fake.emit(challenge_event(call_id, TOLL_FREE, "pass"))
        await fake.emit(voicemail_event(call_id, TOLL_FREE, "SUCCESS"))
        fell = new_call_id()
        await fake.emit(snapshot(fell, MOBILE, user_event="ScreenFallback", Route="staff"))
        await fake.wait_until(lambda: any(isinstance(e, events.Fallback) for e in seen))
        await fake.wait_until(lambda: any(isinstance(e, events.VoicemailLeft) for e in seen))
    finally:
        stop.set()
        stats = await asyncio.wait_for(task, 10)
    kinds = [type(e).__name__ for e in seen]
    assert kinds[0] == "AMIConnected"
    for kind in ("CallScreened", "EntryLearned", "ChallengeOutcome", "VoicemailLeft", "Fallback"):
        assert kind in kinds
    screened = next(e for e in seen if isinstance(e, events.CallScreened))
    assert (screened.call_id, screened.route) == (call_id, "challenge")
    learned = next(e for e in seen if isinstance(e, events.EntryLearned))
    assert (learned.number, learned.kind, learned.auto_block) == (TOLL_FREE_E164, "allow", False)
    assert stats.failed == 0


async def test_voicemail_is_put_in_the_outbox_with_its_call(fake: FakeAMI, db: Path) -> None:
    """A voicemail status writes one outbox event (idempotent key) with the caller and reasons."""
    await add_entry(db, ListKind.BLOCK, FIXED_E164, label="pest")
    async with serving(make_config(fake, db), fake) as svc:
        call_id = new_call_id()
        await fake.emit(request(call_id, FIXED, "Tanaka"))
        await svc.redirects(1)
        await fake.emit(voicemail_event(call_id, FIXED, "SUCCESS"))
        await fake.emit(voicemail_event(call_id, FIXED, "SUCCESS"))  # a repeated event
        await eventually(lambda: _with_voicemail(read_call(db, call_id)))
        await fake.wait_until(lambda: svc.screener.stats.voicemails == 2)
        await svc.screener.writer.flushed()
    async with Store.open(db, readonly=True) as store:
        (event,) = await store.outbox()
    assert (event.topic, event.key) == ("voicemail", f"voicemail:{call_id}")
    payload = event.payload
    assert (payload["call_id"], payload["e164"], payload["raw_number"]) == (
        call_id,
        FIXED_E164,
        FIXED,
    )
    assert (payload["name"], payload["voicemail"]) == ("Tanaka", "SUCCESS")
    assert any("pest" in r for r in payload["reasons"])


# -- the hold time comes from the dialplan -------------------------------------------------------


async def test_hold_sent_by_the_dialplan_times_the_call(fake: FakeAMI, db: Path) -> None:
    """ScreenRequest's Hold is the hold used (here longer than configured), with one warning."""
    with structlog.testing.capture_logs() as logs:
        async with serving(make_config(fake, db), fake) as svc:
            # 3.6 s old: too late for the configured 4 s hold (less the 0.5 s margin), in time
            # for the dialplan's 8 s.
            stamp = time.time() - 3.6
            call_id, again = new_call_id(), new_call_id()
            await fake.emit(request(call_id, MOBILE, timestamp=stamp, Hold="8"))
            await fake.emit(request(again, MOBILE, timestamp=stamp, Hold="8"))
            redirects = await svc.redirects(2)
    assert sorted(r.get("Channel") or "" for r in redirects) == sorted([call_id, again])
    warnings = [e for e in logs if e["event"].startswith("the dialplan's hold differs")]
    assert len(warnings) == 1
    assert (warnings[0]["dialplan_hold_s"], warnings[0]["configured_hold_s"]) == (8.0, 4.0)


@pytest.mark.parametrize(
    "hold", ["", "soon", "0", "600", "nan"], ids=["empty", "text", "zero", "huge", "nan"]
)
async def test_a_hold_that_makes_no_sense_is_not_used(fake: FakeAMI, db: Path, hold: str) -> None:
    """A missing, unreadable or out-of-range Hold falls back to the configured hold time."""
    async with serving(make_config(fake, db), fake) as svc:
        stamp = time.time() - 3.6  # too late for the configured 4 s (less the 0.5 s margin)
        call_id = new_call_id()
        await fake.emit(request(call_id, MOBILE, timestamp=stamp, Hold=hold))
        record = await svc.call(call_id)
    assert record.fallback and not fake.actions("Redirect")


async def test_a_repeated_hold_header_is_not_trusted(fake: FakeAMI, db: Path) -> None:
    """Two Hold headers (caller data forging one): the configured hold times the call."""
    async with serving(make_config(fake, db), fake) as svc:
        call_id = new_call_id()
        headers = list(request(call_id, MOBILE, timestamp=time.time() - 3.6).items())
        await fake.send_raw(encode([*headers, ("Hold", "30"), ("Hold", "30")]))
        record = await svc.call(call_id)
    assert record.fallback and not fake.actions("Redirect")


# -- status line and unclean stops ---------------------------------------------------------------


async def test_status_line_sums_up_the_service(
    fake: FakeAMI, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every STATUS_INTERVAL one status line: calls screened, routes, fallbacks, backlog."""
    monkeypatch.setattr(service, "STATUS_INTERVAL", 0.2)
    with structlog.testing.capture_logs() as logs:
        async with serving(make_config(fake, db), fake) as svc:
            await fake.emit(request(new_call_id(), MOBILE))
            await fake.emit(snapshot(new_call_id(), MOBILE, user_event="ScreenFallback"))
            await svc.redirects(1)
            await fake.wait_until(
                lambda: any(e["event"] == "status" and e["fallbacks"] == 1 for e in logs), 3
            )
    line = next(e for e in logs if e["event"] == "status" and e["fallbacks"] == 1)
    assert (line["screened"], line["routes"], line["write_backlog"]) == (1, {"staff": 1}, 0)
    assert any(e["event"] == "screener stopping" for e in logs)


async def test_a_run_that_did_not_stop_cleanly_is_checked_next_time(
    fake: FakeAMI, db: Path
) -> None:
    """The marker of a run killed mid-way makes the next start run the integrity check."""
    with structlog.testing.capture_logs() as logs:
        async with serving(make_config(fake, db), fake):
            assert marker.left_behind(db)
        assert not marker.left_behind(db)  # a clean stop removes it
        assert not any(e["event"].startswith("the last run did not stop") for e in logs)
        marker.marker_path(db).write_text("4242\n")  # as a killed run leaves it
        async with serving(make_config(fake, db), fake):
            pass
    assert any(e["event"].startswith("the last run did not stop cleanly") for e in logs)
    assert any(e["event"] == "database integrity ok" for e in logs)
    assert not marker.left_behind(db)


async def test_the_agent_reports_its_ami_connection_beside_the_database(
    fake: FakeAMI, db: Path
) -> None:
    """While running, ``<db>.agent`` says AMI is connected (for the web console); a clean stop
    removes it, so a report left behind can only be a run that did not stop cleanly."""
    from screener import agentstatus

    before = time.time()
    async with serving(make_config(fake, db), fake):
        for _ in range(100):
            report = agentstatus.read(db)
            if report is not None:
                break
            await asyncio.sleep(0.05)
        assert report is not None and report.ami and report.at >= before - 1
        assert agentstatus.judge(report, time.time()) is agentstatus.State.CONNECTED
    assert agentstatus.read(db) is None
    assert not agentstatus.status_path(db).exists()
