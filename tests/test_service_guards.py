"""Guards of the live agent that mutation testing found unprotected, through its public lifecycle.

Each test starts ``service.run()`` against the fake AMI and a real SQLite file, as the tests of
tests/test_service.py do, and checks what reaches the wire and the call log: a refactor of the
service's internals keeps them meaningful. docs/mutation.md says how these mutants were found.
"""

# the secrets here are test fixtures

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import structlog

from screener.policy import SOURCE_LEARNED, ListKind, Policy
from screener.store import CallRecord
from tests.fakeami import FakeAMI
from tests.test_service import (
    DID,
    FIXED,
    FIXED_E164,
    MOBILE,
    SECRET,
    TOLL_FREE,
    TOLL_FREE_E164,
    add_entry,
    challenge_event,
    challenged,
    eventually,
    make_config,
    new_call_id,
    outcome_of,
    read_call,
    read_entry,
    request,
    serving,
    snapshot,
    write_locked,
)


def _raw(headers: list[tuple[str, str]]) -> bytes:
    """One AMI message with the headers in this order, repeated ones included."""
    return ("".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n").encode()


def _forged(event: dict[str, str], key: str, forged: str) -> bytes:
    """``event`` with a forged ``key`` header smuggled in before the real one (first wins).

    It sits where a CR/LF in the caller's name would put it: in the channel snapshot, ahead of
    the body the dialplan wrote.
    """
    headers: list[tuple[str, str]] = []
    for k, v in event.items():
        headers.append((k, v))
        if k == "CallerIDName":
            headers.append((key, forged))
    return _raw(headers)


async def _voicemail_of(db: Path, call_id: str) -> str | None:
    record = await read_call(db, call_id)
    return None if record is None else record.voicemail


# -- ScreenVoicemail ---------------------------------------------------------------------------


async def test_repeated_voicemail_status_is_stored_as_unknown(fake: FakeAMI, db: Path) -> None:
    """A ScreenVoicemail with two Status headers (one forged) is recorded as UNKNOWN."""
    await add_entry(db, ListKind.BLOCK, FIXED_E164)
    async with serving(make_config(fake, db), fake) as svc:
        call_id = new_call_id()
        await fake.emit(request(call_id, FIXED))
        await svc.redirects(1)
        await svc.call(call_id)
        event = snapshot(
            call_id,
            FIXED,
            user_event="ScreenVoicemail",
            context="route-voicemail",
            exten="s",
            Status="FAILED",
        )
        await fake.send_raw(_forged(event, "Status", "SUCCESS"))
        assert await eventually(lambda: _voicemail_of(db, call_id)) == "UNKNOWN"


@pytest.mark.parametrize(
    ("status", "stored"),
    [
        ("SUCCESS", "SUCCESS"),
        (" USEREXIT ", "USEREXIT"),  # surrounding blanks are not part of the word
        ("success", "UNKNOWN"),  # VMSTATUS is upper case: anything else is not Asterisk's
        ("SUCCESS1", "UNKNOWN"),
        ("", "UNKNOWN"),
        ("A" * 21, "UNKNOWN"),
    ],
)
async def test_voicemail_status_is_one_upper_case_word(
    fake: FakeAMI, db: Path, status: str, stored: str
) -> None:
    """Only an upper-case word of at most 20 letters is stored as the voicemail status."""
    await add_entry(db, ListKind.BLOCK, FIXED_E164)
    async with serving(make_config(fake, db), fake) as svc:
        call_id = new_call_id()
        await fake.emit(request(call_id, FIXED))
        await svc.redirects(1)
        await svc.call(call_id)
        event = snapshot(
            call_id, FIXED, user_event="ScreenVoicemail", context="route-voicemail", exten="s"
        )
        await fake.send_raw(_raw([*event.items(), ("Status", status)]))
        assert await eventually(lambda: _voicemail_of(db, call_id)) == stored


# -- ScreenFallback ----------------------------------------------------------------------------


def _fallback(call_id: str, route: str) -> dict[str, str]:
    return snapshot(
        call_id, MOBILE, "Sato", user_event="ScreenFallback", context="screen-fallback",
        exten="s", Route=route,
    )  # fmt: skip


async def test_forged_fallback_route_is_not_kept(fake: FakeAMI, db: Path) -> None:
    """A ScreenFallback with two Route headers (one forged) records the fail-open route, staff."""
    async with serving(make_config(fake, db), fake) as svc:
        call_id = new_call_id()
        await fake.send_raw(_forged(_fallback(call_id, "staff"), "Route", "reject"))
        record = await svc.call(call_id)
    assert (record.route, record.rule, record.fallback) == ("staff", "fallback", True)


@pytest.mark.parametrize(
    ("said", "kept"),
    [
        ("voicemail", "voicemail"),
        (" Voicemail ", "voicemail"),  # blanks and case are the dialplan's, not a new route
        ("reject", "reject"),
        ("elsewhere", "staff"),  # not a route: the fallback fails open to staff
        ("", "staff"),
    ],
)
async def test_fallback_keeps_the_route_the_dialplan_reports(
    fake: FakeAMI, db: Path, said: str, kept: str
) -> None:
    """ScreenFallback's Route is kept when it names a route; anything else is recorded as staff."""
    async with serving(make_config(fake, db), fake) as svc:
        call_id = new_call_id()
        await fake.emit(_fallback(call_id, said))
        record = await svc.call(call_id)
        assert svc.screener.stats.fallbacks == 1
    assert (record.route, record.fallback, record.did) == (kept, True, None)
    assert record.reasons == ("no decision within the hold time: dialplan fallback",)


async def test_fallback_records_the_did_it_was_dialled_on(fake: FakeAMI, db: Path) -> None:
    """A fallback raised in the number's own extension keeps the DID on its record."""
    async with serving(make_config(fake, db), fake) as svc:
        call_id = new_call_id()
        event = snapshot(
            call_id, MOBILE, user_event="ScreenFallback", context="from-trunk", exten=DID,
            Route="staff",
        )  # fmt: skip
        await fake.emit(event)
        record = await svc.call(call_id)
    assert record.did == DID


# -- the deadline before a Redirect ------------------------------------------------------------


class _SlowTimers(asyncio.SelectorEventLoop):
    """An event loop whose timers run late, like one stalled by a busy or overloaded machine.

    ``loop.time()`` runs at an eighth of real time, so every ``asyncio.timeout``/``wait`` lasts
    eight times as long as asked, while the wall clock (the one the hold is timed on) keeps
    going at its own pace.
    """

    def time(self) -> float:
        return super().time() / 8


@pytest.mark.slow  # seconds of waiting: the full suite runs it, the fast path skips it
def test_no_redirect_once_the_wait_for_the_record_overran_the_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call whose wait for its record outlasted the hold is left to the fallback: no Redirect.

    Without the journal (off, or a full disk) and with the writer locked, the call waits its
    whole record budget; on a stalled loop that wait ends after the deadline, and the Redirect
    must not go out: the dialplan's fallback already has the call.
    """
    monkeypatch.setenv("SCREENER_JOURNAL", "off")

    async def scenario() -> tuple[CallRecord, int, int]:
        db = tmp_path / "screener.db"
        async with FakeAMI(secret=SECRET) as fake, serving(make_config(fake, db), fake) as svc:
            config = svc.config
            call_id = new_call_id()
            # One second (wall clock) before the deadline: the first check passes at once,
            # and the record budget (0.25 s on the loop's clock) outlasts it.
            stamp = time.time() - (config.hold_seconds - config.late_margin) + 1.0
            with write_locked(db), structlog.testing.capture_logs() as logs:
                await fake.emit(request(call_id, MOBILE, timestamp=stamp))
                await eventually(
                    lambda: _true_if(any(e["event"].startswith("decision too late") for e in logs)),
                    within=4,
                )
            record = await svc.call(call_id, within=4)
            redirects = len(fake.actions("Redirect"))
        return record, redirects, svc.task.result().late

    with asyncio.Runner(loop_factory=_SlowTimers) as runner:
        record, redirects, late = runner.run(scenario())
    assert redirects == 0
    assert late == 1
    assert record.fallback and record.route == "staff"
    assert any("too late" in r for r in record.reasons)


async def _true_if(condition: bool) -> bool | None:
    return True if condition else None


# -- more edges found by mutation testing (docs/mutation.md) -----------------------------------


async def test_every_fallback_is_counted(fake: FakeAMI, db: Path) -> None:
    """Each ScreenFallback adds one to the service's fallback count."""
    async with serving(make_config(fake, db), fake) as svc:
        calls = [new_call_id(), new_call_id()]
        await fake.emit(*(_fallback(c, "staff") for c in calls))
        for call_id in calls:
            await svc.call(call_id)
    assert svc.task.result().fallbacks == 2


async def test_late_redirect_of_an_unrecorded_fallback_is_recorded(fake: FakeAMI, db: Path) -> None:
    """ScreenLate in the fallback for a call the log does not hold yet: recorded, route staff."""
    async with serving(make_config(fake, db), fake) as svc:
        call_id = new_call_id()
        await fake.emit(
            snapshot(call_id, MOBILE, user_event="ScreenLate", context="screen-late",
                     exten="s", State="fallback")
        )  # fmt: skip
        record = await svc.call(call_id)
    assert (record.route, record.rule, record.fallback) == ("staff", "fallback", True)
    assert record.reasons == ("decision arrived after the fallback began: ignored",)


async def test_fallback_numbers_are_read_in_the_configured_region(fake: FakeAMI, db: Path) -> None:
    """A fallback record normalizes the caller in the office's region, as a screened call does."""
    async with serving(make_config(fake, db, region="US"), fake) as svc:
        call_id = new_call_id()
        event = snapshot(
            call_id, "2125550100", user_event="ScreenFallback", context="screen-fallback",
            exten="s", Route="staff",
        )  # fmt: skip
        await fake.emit(event)
        record = await svc.call(call_id)
    assert (record.e164, record.category) == ("+12125550100", "fixed_line")


async def test_challenge_outcome_with_repeated_uniqueid_is_ignored(fake: FakeAMI, db: Path) -> None:
    """A ScreenChallenge whose Uniqueid is repeated (forged) stores and learns nothing."""
    async with serving(make_config(fake, db), fake) as svc:
        call_id = await challenged(svc, TOLL_FREE)
        forged = _forged(challenge_event(call_id, TOLL_FREE, "pass"), "Uniqueid", call_id)
        with structlog.testing.capture_logs() as logs:
            await fake.send_raw(forged)
            await eventually(
                lambda: _true_if(any(e["event"].endswith("repeated headers ignored") for e in logs))
            )
        record = await svc.call(call_id)
        learned = await svc.screener.reader.entries(source=SOURCE_LEARNED)
    assert record.outcome is None and learned == []


async def test_an_outcome_after_a_restart_still_learns(fake: FakeAMI, db: Path) -> None:
    """A call challenged before a restart: its pass, reported after it, still verifies it."""
    async with serving(make_config(fake, db), fake) as svc:
        call_id = await challenged(svc, TOLL_FREE)
        await svc.call(call_id)
    async with serving(make_config(fake, db), fake) as svc:
        await fake.emit(challenge_event(call_id, TOLL_FREE, "pass"))
        assert await outcome_of(svc, call_id) == "pass"
        entry = await eventually(lambda: read_entry(db, TOLL_FREE_E164))
    assert (entry.kind, entry.source) == (ListKind.ALLOW, SOURCE_LEARNED)


async def test_two_failures_block_with_a_threshold_of_two(fake: FakeAMI, db: Path) -> None:
    """With fail_threshold 2, the first failed challenge blocks nothing and the second blocks."""
    config = make_config(fake, db, policy=Policy(fail_threshold=2))
    with structlog.testing.capture_logs() as logs:
        async with serving(config, fake) as svc:
            for n in (1, 2):
                call_id = await challenged(svc, TOLL_FREE)
                await fake.emit(challenge_event(call_id, TOLL_FREE, "fail"))
                # The handler's last word: the outcome is stored and the learning step done.
                await eventually(
                    lambda n=n: _true_if(sum(e["event"] == "challenge outcome" for e in logs) == n)
                )
                if n == 1:
                    assert await read_entry(db, TOLL_FREE_E164) is None
            entry = await eventually(lambda: read_entry(db, TOLL_FREE_E164))
    assert (entry.kind, entry.source) == (ListKind.BLOCK, SOURCE_LEARNED)


async def test_the_counters_count_every_request(fake: FakeAMI, db: Path) -> None:
    """Two routed, two late and two ambiguous requests: the final counters say so."""
    async with serving(make_config(fake, db), fake) as svc:
        routed = [new_call_id(), new_call_id()]
        late = [new_call_id(), new_call_id()]
        for call_id in late:
            await fake.emit(request(call_id, MOBILE, timestamp=time.time() - 3.6))
        for call_id in routed:
            await fake.emit(request(call_id, MOBILE))
        for _ in range(2):
            event = request(new_call_id(), MOBILE)
            await fake.send_raw(_forged(event, "Uniqueid", "1699999999.1"))
        await svc.redirects(2)
        for call_id in [*routed, *late]:
            await svc.call(call_id)
        await fake.wait_until(lambda: svc.screener.stats.requests == 6)
    stats = svc.task.result()
    assert (stats.requests, stats.routed, stats.late, stats.failed) == (6, 2, 2, 2)


@pytest.mark.parametrize("stamp", [None, "", "not-a-time"])
async def test_a_request_without_a_usable_timestamp_is_still_routed(
    fake: FakeAMI, db: Path, stamp: str | None
) -> None:
    """No Timestamp (timestampevents off) or a garbled one: timed on our clock, still routed."""
    async with serving(make_config(fake, db), fake) as svc:
        call_id = new_call_id()
        event = request(call_id, MOBILE)
        if stamp is None:
            del event["Timestamp"]
        else:
            event["Timestamp"] = stamp
        await fake.emit(event)
        (redirect,) = await svc.redirects(1)
        record = await svc.call(call_id)
    assert (redirect.get("Channel"), redirect.get("Context")) == (call_id, "screen-staff")
    assert (record.route, record.fallback) == ("staff", False)


async def test_the_line_per_call_carries_every_fact(fake: FakeAMI, db: Path) -> None:
    """The 'call screened' line names caller, name, DID, route, rule, reasons and both latencies."""
    started = time.perf_counter()
    with structlog.testing.capture_logs() as logs:
        async with serving(make_config(fake, db), fake) as svc:
            await fake.emit(request(new_call_id(), MOBILE, "Sato"))
            await svc.redirects(1)
            await fake.wait_until(lambda: svc.screener.stats.routed == 1)
            latencies = list(svc.screener.stats.latencies_ms)
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    (line,) = [e for e in logs if e["event"] == "call screened"]
    assert (line["caller"], line["name"], line["did"]) == ("+819012345678", "Sato", "+81355550000")
    assert (line["category"], line["route"], line["rule"]) == ("mobile", "staff", "category")
    assert line["reasons"][-1] == "category rule mobile → staff"
    # Both latencies are measured from the same start, the Redirect after the decision, and
    # the service keeps the one it logged.
    assert 0 <= line["decision_ms"] <= line["redirect_ms"] <= elapsed_ms
    assert latencies == [pytest.approx(line["redirect_ms"], abs=0.001)]
