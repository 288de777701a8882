"""The service's staff-phone handlers (screener/staffphones.py) through the real lifecycle,
against the fake AMI server: outside calls learned, last callers, feature codes answered with a
Redirect, forged events ignored, and a feature code that waits out a held database lock."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import structlog

from screener import events, service
from screener.ami import Event
from screener.amiproto import parse_headers
from screener.policy import ListKind
from screener.staffphones import digits_of, endpoint_of
from screener.store import Store
from tests.fakeami import FakeAMI
from tests.test_service import (
    MOBILE,
    TOLL_FREE_E164,
    eventually,
    make_config,
    new_call_id,
    read_entry,
    request,
    serving,
    snapshot,
    write_locked,
)

# The service tests run the service for up to a second each: slow. The table tests are not.
slow = pytest.mark.slow


def staff_event(
    kind: str, phone: str = "staff1", context: str | None = None, **body: str
) -> dict[str, str]:
    """A UserEvent raised on a staff phone's channel, as Asterisk sends it."""
    channel_id = new_call_id()
    contexts = {"StaffDialled": "staff-outside", "StaffRang": "staff-rang"}
    event = snapshot(
        channel_id,
        "101",
        user_event=kind,
        context=context or contexts.get(kind, "staff-feature"),
        exten="s",
        Version="1",
        **body,
    )
    event["Channel"] = f"PJSIP/{phone}-0000002a"
    return event


@slow
async def test_outside_call_then_feature_code(fake: FakeAMI, db: Path) -> None:
    """A number dialled out is learned `called`; *32 blocks the call that rang the phone and
    the phone's channel is Redirected to the result; both are published."""
    seen: list[events.Event] = []
    async with serving(make_config(fake, db), fake) as svc:
        svc.screener.hub.subscribe(seen.append)
        await fake.emit(staff_event("StaffDialled", Number="0120121852"))
        called = await eventually(lambda: read_entry(db, TOLL_FREE_E164))
        assert (called.kind, called.source) == (ListKind.ALLOW, "called")
        call_id = new_call_id()
        await fake.emit(request(call_id, MOBILE))
        await svc.redirects(1)
        await fake.emit(staff_event("StaffRang", Call=call_id))
        pressed = staff_event("StaffFeature", Code="blocklast", Number="")
        await fake.emit(pressed)
        redirects = await svc.redirects(2)
    told = redirects[-1]
    assert (told.get("Channel"), told.get("Context"), told.get("Exten")) == (
        pressed["Uniqueid"],
        "staff-feature-result",
        "blocked",
    )
    blocked = await read_entry(db, "+819012345678")
    assert blocked is not None and (blocked.kind, blocked.source) == (
        ListKind.BLOCK,
        "staff:staff1",
    )
    kinds = [type(e).__name__ for e in seen]
    assert "NumberCalled" in kinds and "StaffChanged" in kinds


@slow
async def test_forged_staff_events_change_nothing(fake: FakeAMI, db: Path) -> None:
    """Feature codes from the trunk's context, a non-PJSIP channel or with repeated headers
    are ignored: no Redirect, no entry."""
    async with serving(make_config(fake, db), fake) as svc:
        with structlog.testing.capture_logs() as logs:
            wrong_place = staff_event("StaffFeature", context="from-trunk", Code="block")
            wrong_place["Number"] = "0120121852"
            local = staff_event("StaffFeature", Code="block", Number="0120121852")
            local["Channel"] = "Local/123@from-staff-0000001;1"
            await fake.emit(wrong_place, local)
            raw = "".join(
                f"{k}: {v}\r\n"
                for k, v in staff_event("StaffFeature", Code="block", Number="0120121852").items()
            )
            await fake.send_raw((raw + "Channel: PJSIP/staff2-00000001\r\n\r\n").encode())
            await asyncio.sleep(0.5)
        assert svc.screener.stats.failed == 0
    assert fake.actions("Redirect") == []
    async with Store.open(db, readonly=True) as store:
        assert await store.entries() == []
    ignored = [e for e in logs if e["event"] == "feature code event ignored"]
    assert len(ignored) == 3


@slow
async def test_feature_code_survives_a_held_lock(
    fake: FakeAMI, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """*30 keyed while another process holds the write lock past busy_timeout: the change is
    kept and committed once the lock is free, and only then is the phone told."""
    monkeypatch.setattr(service, "WRITER_BUSY_TIMEOUT", 0.2)
    async with serving(make_config(fake, db), fake) as svc:
        with write_locked(db):
            await fake.emit(staff_event("StaffFeature", Code="block", Number="0120121852"))
            await fake.wait_until(lambda: svc.screener.stats.write_retries >= 2, 5)
            assert fake.actions("Redirect") == []
        (told,) = await svc.redirects(1, within=5)
    assert told.get("Exten") == "blocked"
    entry = await read_entry(db, TOLL_FREE_E164)
    assert entry is not None and entry.kind is ListKind.BLOCK
    assert svc.task.result().record_errors == 0


@slow
async def test_a_feature_code_held_past_the_phones_wait_changes_nothing(
    fake: FakeAMI, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """*30 under a lock held longer than the phone waits (Wait: 1 s here, FEATURE_WAIT in the
    dialplan): the phone is told "failed", and once the lock goes no entry was made, so what it
    heard is true."""
    monkeypatch.setattr(service, "WRITER_BUSY_TIMEOUT", 0.2)
    async with serving(make_config(fake, db), fake) as svc:
        with write_locked(db):
            await fake.emit(
                staff_event("StaffFeature", Code="block", Number="0120121852", Wait="1")
            )
            await asyncio.sleep(1.2)  # past the phone's wait: the dialplan said "failed"
            assert fake.actions("Redirect") == []
        (told,) = await svc.redirects(1, within=5)
        await svc.screener.writer.flushed()
    assert told.get("Exten") == "failed"
    assert await read_entry(db, TOLL_FREE_E164) is None
    async with Store.open(db, readonly=True) as store:
        assert await store.staff_changes() == []


@slow
async def test_a_feature_code_from_an_asterisk_whose_clock_is_behind_still_counts(
    fake: FakeAMI, db: Path
) -> None:
    """Asterisk on another host, its clock 30 s behind ours: the phone's wait is counted from
    the event's arrival here, so *30 still blocks (counted from its Timestamp, every code would
    be planned "failed")."""
    async with serving(make_config(fake, db), fake) as svc:
        pressed = staff_event("StaffFeature", Code="block", Number="0120121852")
        pressed["Timestamp"] = f"{time.time() - 30:.6f}"
        await fake.emit(pressed)
        (told,) = await svc.redirects(1, within=5)
    assert told.get("Exten") == "blocked"
    entry = await read_entry(db, TOLL_FREE_E164)
    assert entry is not None and entry.kind is ListKind.BLOCK


def event(lines: list[str]) -> Event:
    headers, duplicated = parse_headers(lines)
    return Event("UserEvent", headers, 0.0, duplicated)


@pytest.mark.parametrize(
    ("lines", "endpoint"),
    [
        (
            ["UserEvent: StaffFeature", "Context: staff-feature", "Channel: PJSIP/staff1-0a"],
            "staff1",
        ),
        (
            ["UserEvent: StaffRang", "Context: staff-rang", "Channel: PJSIP/desk.3-00000001"],
            "desk.3",
        ),
        (["UserEvent: StaffFeature", "Context: from-trunk", "Channel: PJSIP/staff1-0a"], None),
        (["UserEvent: StaffFeature", "Context: staff-feature", "Channel: PJSIP/trunk"], None),
        (["UserEvent: StaffFeature", "Context: staff-feature", "Channel: Local/1@x-01;1"], None),
        (
            [
                "UserEvent: StaffFeature",
                "Context: staff-feature",
                "Channel: PJSIP/staff1-0a",
                "Channel: PJSIP/staff2-0b",
            ],
            None,
        ),
        (["UserEvent: Other", "Context: staff-feature", "Channel: PJSIP/staff1-0a"], None),
    ],
)
def test_endpoint_of(lines: list[str], endpoint: str | None) -> None:
    """Only a PJSIP channel in the context that raises the event names a staff endpoint."""
    assert endpoint_of(event(lines)) == endpoint


@pytest.mark.parametrize(
    ("lines", "digits"),
    [
        (["Number: 0312345678"], "0312345678"),
        (["Number: "], None),
        (["Number: 03-1234"], None),
        (["Number: 1", "Number: 2"], None),
        (["Number: " + "1" * 21], None),
    ],
)
def test_digits_of(lines: list[str], digits: str | None) -> None:
    """A Number header is digits only, not repeated, at most 20 long."""
    assert digits_of(event(lines)) == digits
