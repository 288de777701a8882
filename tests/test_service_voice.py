"""The service tells the dialplan the language and recording with each decision, and keeps the
recording on the call's record. Through the real lifecycle against the fake AMI."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

from screener.numbers import Category
from screener.policy import DidPolicy, Hours
from screener.recordings import expired, recording_path, sweep
from screener.store import Store
from tests.fakeami import FakeAMI
from tests.test_service import (
    DID,
    MOBILE,
    TOLL_FREE,
    eventually,
    make_config,
    new_call_id,
    request,
    serving,
    snapshot,
)


async def test_language_and_recording_are_set_before_the_redirect(fake: FakeAMI, db: Path) -> None:
    """SCREEN_OPTIONS (ja, record yes for toll-free) reaches the channel before its Redirect."""
    config = make_config(fake, db)
    config = dataclasses.replace(
        config,
        policy=dataclasses.replace(config.policy, record=frozenset({Category.TOLL_FREE})),
    )
    async with serving(config, fake) as svc:
        first, second = new_call_id(), new_call_id()
        await fake.emit(request(first, TOLL_FREE))
        await fake.emit(request(second, MOBILE))
        await svc.redirects(2)
    actions = [(a.action, a.get("Channel")) for a in fake.received if a.action != "ping"]
    for call_id in (first, second):
        mine = [a for a, channel in actions if channel == call_id]
        assert mine == ["setvar", "redirect"], mine
    values = {a.get("Channel"): a.get("Value") for a in fake.actions("Setvar")}
    assert {a.get("Variable") for a in fake.actions("Setvar")} == {"SCREEN_OPTIONS"}
    assert values == {first: "ja-yes-no", second: "ja-no-no"}


async def test_an_english_line_gets_english(fake: FakeAMI, db: Path) -> None:
    """A DID configured for English sends en; the office default stays ja."""
    config = make_config(fake, db)
    dids = {"+81355550000": DidPolicy(language="en")}
    config = dataclasses.replace(config, policy=dataclasses.replace(config.policy, dids=dids))
    async with serving(config, fake) as svc:
        english, japanese = new_call_id(), new_call_id()
        await fake.emit(request(english, MOBILE))
        await fake.emit(request(japanese, MOBILE, exten="0355551111"))
        await svc.redirects(2)
    values = {a.get("Channel"): a.get("Value") for a in fake.actions("Setvar")}
    assert values == {english: "en-no-no", japanese: "ja-no-no"}
    assert DID == "0355550000"  # the DID the request carries, configured for English above


async def test_after_hours_voicemail_says_the_hours(fake: FakeAMI, db: Path) -> None:
    """Outside business hours the Redirect is screen-voicemail/after-hours (the hours message)."""
    config = make_config(fake, db)
    closed = Hours(open={d: () for d in range(7)})  # hours set, but no window: always closed
    config = dataclasses.replace(config, policy=dataclasses.replace(config.policy, hours=closed))
    async with serving(config, fake) as svc:
        await fake.emit(request(new_call_id(), MOBILE))
        (redirect,) = await svc.redirects(1)
    assert (redirect.get("Context"), redirect.get("Exten")) == ("screen-voicemail", "after-hours")


async def test_recording_is_kept_on_the_call(fake: FakeAMI, db: Path, tmp_path: Path) -> None:
    """ScreenRecording started/done puts the file path, then its length, on the call's record."""
    config = dataclasses.replace(make_config(fake, db), recording_folder=tmp_path / "rec")
    async with serving(config, fake) as svc:
        call_id = new_call_id()
        await fake.emit(request(call_id, TOLL_FREE))
        await svc.redirects(1)
        await svc.call(call_id)
        await fake.emit(
            snapshot(call_id, TOLL_FREE, user_event="ScreenRecording", Status="started")
        )
        await fake.emit(
            snapshot(call_id, TOLL_FREE, user_event="ScreenRecording", Status="done", Seconds="17")
        )

        async def stored() -> object:
            async with Store.open(db, readonly=True) as store:
                found = await store.recordings([call_id])
            return found if found.get(call_id, ("", None))[1] is not None else None

        found = await eventually(stored)
    assert found == {call_id: (str(recording_path(tmp_path / "rec", call_id)), 17.0)}


def test_recording_file_names_keep_only_safe_characters() -> None:
    """The path is the dialplan's: the Uniqueid with anything but [0-9A-Za-z._] dropped."""
    assert recording_path(Path("/r"), "1733.42") == Path("/r/1733.42.wav")
    assert recording_path(Path("/r"), "probe-1-b") == Path("/r/probe1b.wav")
    assert recording_path(Path("/r"), "../../etc/x y") == Path("/r/....etcxy.wav")


def test_expired_by_age() -> None:
    """Files older than the retention are expired; younger ones are not."""
    day = 86400.0
    files = [("old.wav", 0.0), ("edge.wav", 10 * day), ("new.wav", 95 * day)]
    assert expired(files, now=100 * day, days=90) == ["old.wav"]


def test_sweep_deletes_old_recordings_and_makes_the_rest_private(tmp_path: Path) -> None:
    """The sweep removes recordings past retention and sets the others to mode 0600."""
    old, new, other = tmp_path / "a.wav", tmp_path / "b.wav", tmp_path / "notes.txt"
    for f in (old, new, other):
        f.write_bytes(b"x")
        os.chmod(f, 0o644)
    now = time.time()
    os.utime(old, (now - 91 * 86400, now - 91 * 86400))
    result = sweep(tmp_path, now, 90)
    assert result.deleted == ("a.wav",) and result.kept == 1
    assert not old.exists() and new.exists() and other.exists()
    assert new.stat().st_mode & 0o777 == 0o600
    assert sweep(tmp_path / "missing", now, 90).deleted == ()
