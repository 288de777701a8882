"""screener.ami against a fake AMI server.

Each failure mode of panoramisk's Manager in docs/ami.md has a pair of tests:
``test_panoramisk_*`` shows that raw panoramisk 1.4 really has the problem, ``test_client_*``
shows that our adapter does not. The protocol-level ones are in tests/test_amiproto.py.
"""

# the secrets here are test fixtures; the test is that they never leak

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import ssl
import subprocess
import time
import unicodedata
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from panoramisk import Manager
from panoramisk.actions import Action

from screener.ami import AMIClient, AMISettings, Event, build_action, sanitize_value
from screener.amiproto import Protocol
from screener.errors import (
    AMIActionError,
    AMIAuthError,
    AMIConnectionError,
    AMIError,
    AMINotConnected,
    AMITimeout,
    ScreenerError,
)
from tests.fakeami import FakeAMI

SECRET = "hunter2-Zq9"  # distinctive, so that a leak is easy to spot


def make_settings(fake: FakeAMI, **overrides: Any) -> AMISettings:
    values: dict[str, Any] = {
        "secret": SECRET,
        "host": fake.host,
        "port": fake.port,
        "connect_timeout": 2.0,
        "action_timeout": 1.0,
        "ping_interval": 0.2,
        "ping_timeout": 0.5,
        "reconnect_delay": 0.05,
    }
    values.update(overrides)
    return AMISettings(**values)


@contextlib.asynccontextmanager
async def raw_manager(fake: FakeAMI, **config: Any) -> AsyncIterator[Any]:
    """Raw panoramisk, connected to the fake; its reconnect is neutralised on the way out."""
    config = {
        "host": fake.host,
        "port": fake.port,
        "username": "screener",
        "secret": SECRET,
        "ping_delay": 60,
        "reconnect_timeout": 3600,
        **config,
    }
    manager = Manager(**config)
    await manager.connect()
    try:
        yield manager
    finally:
        manager.connection_lost = lambda exc: None  # no reconnect scheduled by the teardown
        manager.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def user_event(n: int = 0, **extra: str) -> dict[str, str]:
    return {"Event": "UserEvent", "UserEvent": "ScreenRequest", "Uniqueid": f"1700.{n}", **extra}


# -- 1. connect() returns before login -----------------------------------------------------------


async def test_panoramisk_connect_returns_before_login() -> None:
    """Raw panoramisk: connect() returns unauthenticated, and actions go out without a login."""
    async with (
        FakeAMI(secret="other", close_on_auth_failure=False) as fake,
        raw_manager(fake) as manager,
    ):
        assert manager.authenticated is False
        future = manager.send_action({"Action": "Redirect", "Channel": "1700.1"})
        response = await asyncio.wait_for(future, 1)
        assert response.message == "Permission denied"
        assert fake.actions("Redirect")[0].authenticated is False


async def test_client_enters_only_after_login() -> None:
    """__aenter__ returns logged in; before it, send() raises and writes nothing."""
    async with FakeAMI(secret=SECRET) as fake:
        client = AMIClient(make_settings(fake))
        with pytest.raises(AMINotConnected):
            await client.redirect("1700.1", "screen-staff", "s")
        assert not client.connected
        async with client:
            assert client.connected
            assert fake.logins == 1
            await client.redirect("1700.1", "screen-staff", "s")
        assert [r.action for r in fake.actions() if r.action != "ping"] == ["login", "redirect"]
        assert all(r.authenticated for r in fake.actions("Redirect"))


# -- 2. exceptions in callbacks kill the connection -----------------------------------------------


async def test_panoramisk_callback_exception_kills_connection() -> None:
    """Raw panoramisk: a raising callback closes the connection and loses the rest of the chunk."""
    seen: list[str] = []

    def callback(manager: Any, event: Any) -> None:
        seen.append(event["Uniqueid"])
        if len(seen) == 1:
            raise RuntimeError("bug in a callback")

    async with FakeAMI(secret=SECRET) as fake, raw_manager(fake) as manager:
        await fake.wait_until(lambda: fake.logins == 1)
        await asyncio.sleep(0.05)  # the login response is handled
        manager.register_event("UserEvent", callback)
        await fake.emit(user_event(1), user_event(2))
        await fake.wait_until(lambda: not fake.conns)
        assert seen == ["1700.1"]


async def test_client_survives_event_burst_with_full_queue() -> None:
    """A burst into a full queue drops the oldest, counts them, and keeps the connection."""
    async with (
        FakeAMI(secret=SECRET) as fake,
        AMIClient(make_settings(fake), event_names={"UserEvent"}, queue_size=10) as client,
    ):
        await fake.emit(*(user_event(n) for n in range(1000)))
        await fake.wait_until(lambda: client.drops == 990)
        assert await client.ping() >= 0
        assert client.reconnects == 0 and fake.accepted == 1
        first = client.events.get_nowait()
        assert first.get("Uniqueid") == "1700.990"


# -- 3. timed-out actions leak -----------------------------------------------------------------


async def test_panoramisk_leaks_timed_out_actions() -> None:
    """Raw panoramisk: every timed-out action stays in protocol.responses."""
    async with FakeAMI(secret=SECRET) as fake, raw_manager(fake) as manager:
        fake.replies["redirect"] = None
        await fake.wait_until(lambda: fake.logins == 1)
        futures = [manager.send_action({"Action": "Redirect"}) for _ in range(100)]
        results = await asyncio.gather(
            *(asyncio.wait_for(f, 0.05) for f in futures), return_exceptions=True
        )
        assert all(isinstance(r, TimeoutError) for r in results)
        assert len(manager.protocol.responses) == 100


async def test_client_removes_timed_out_actions() -> None:
    """100 timeouts leave no pending action behind, and the connection keeps working."""
    async with FakeAMI(secret=SECRET) as fake, AMIClient(make_settings(fake)) as client:
        fake.replies["redirect"] = None
        results = await asyncio.gather(
            *(client.send({"Action": "Redirect"}, timeout=0.05) for _ in range(100)),
            return_exceptions=True,
        )
        assert all(isinstance(r, AMITimeout) for r in results)
        assert client.timeouts == 100
        assert client.pending_actions == 0
        await client.ping()


# -- 4. half-open connections -------------------------------------------------------------------


@pytest.mark.slow  # seconds of waiting: the full suite runs it, the fast path skips it
async def test_panoramisk_never_detects_half_open() -> None:
    """Raw panoramisk: pings go unanswered for seconds and nothing notices."""
    async with (
        FakeAMI(secret=SECRET) as fake,
        raw_manager(fake, ping_delay=1, ping_interval=1) as manager,
    ):
        await fake.wait_until(lambda: fake.logins == 1)
        protocol = manager.protocol
        fake.freeze()
        await asyncio.sleep(2.3)
        assert manager.protocol is protocol and not protocol.closed
        assert fake.accepted == 1
        fake.thaw()
        await fake.wait_until(lambda: len(fake.actions("Ping")) >= 2)


async def test_client_watchdog_aborts_half_open_and_reconnects() -> None:
    """An unanswered Ping aborts the connection within interval+timeout; it comes back on thaw."""
    async with FakeAMI(secret=SECRET) as fake:
        config = make_settings(fake, ping_interval=0.1, ping_timeout=0.2)
        async with AMIClient(config) as client:
            fake.freeze()
            start = time.monotonic()
            await fake.wait_until(lambda: not client.connected, within=1.0)
            assert time.monotonic() - start < 0.1 + 0.2 + 0.3  # interval + timeout + slack
            fake.thaw()
            await client.wait_connected(2.0)
            assert client.reconnects == 1
            assert fake.accepted >= 2 and fake.logins == 2
            await client.ping()


async def test_client_reports_supervisor_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in the reconnect path becomes a fatal AMIConnectionError, not a silent stop."""
    async with FakeAMI(secret=SECRET) as fake, AMIClient(make_settings(fake)) as client:

        async def broken() -> None:
            raise RuntimeError("bug")

        monkeypatch.setattr(client, "_open", broken)
        fake.kill_connections()
        with pytest.raises(AMIConnectionError, match="crashed") as info:
            await asyncio.wait_for(client.wait_failed(), 2.0)
        assert isinstance(info.value.__cause__, RuntimeError)
        assert not client.connected


# -- 5. failed login --------------------------------------------------------------------------


async def test_panoramisk_failed_login_is_silent(caplog: pytest.LogCaptureFixture) -> None:
    """Raw panoramisk: a refused login raises nothing and logs nothing above INFO."""
    caplog.set_level(logging.DEBUG)
    async with (
        FakeAMI(secret="other", close_on_auth_failure=False) as fake,
        raw_manager(fake) as manager,
    ):
        await fake.wait_until(lambda: fake.login_failures == 1)
        await asyncio.sleep(0.05)
        assert manager.authenticated is False
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_client_raises_auth_error_at_once() -> None:
    """A refused login raises AMIAuthError on the first answer, naming user and address."""
    async with FakeAMI(secret="other") as fake:
        start = time.monotonic()
        with pytest.raises(AMIAuthError) as info:
            async with AMIClient(make_settings(fake, connect_timeout=5.0)):
                pass
        assert time.monotonic() - start < 1.0
        assert fake.login_failures == 1
        message = str(info.value)
        assert "'screener'" in message and f"127.0.0.1:{fake.port}" in message
        assert "Authentication failed" in message
        assert SECRET not in message


async def test_client_connection_error_within_connect_timeout() -> None:
    """Nothing listening: AMIConnectionError after connect_timeout, with the OSError as cause."""
    config = AMISettings(secret=SECRET, port=free_port(), connect_timeout=0.3, reconnect_delay=0.05)
    start = time.monotonic()
    with pytest.raises(AMIConnectionError) as info:
        async with AMIClient(config):
            pass
    assert 0.25 < time.monotonic() - start < 1.0
    assert isinstance(info.value.__cause__, OSError)


async def test_client_reports_auth_failure_after_reconnect() -> None:
    """A login refused after a reconnect surfaces through wait_failed() and wait_connected()."""
    async with FakeAMI(secret=SECRET) as fake, AMIClient(make_settings(fake)) as client:
        fake.secret = "rotated"
        fake.kill_connections()
        with pytest.raises(AMIAuthError):
            await asyncio.wait_for(client.wait_failed(), 2.0)
        with pytest.raises(AMIAuthError):
            await client.wait_connected(0.1)
        assert not client.connected
        with pytest.raises(AMINotConnected):
            await client.ping()


# -- 6. header injection ---------------------------------------------------------------------

NASTY = st.sampled_from(
    ["\r\n", "\r\n\r\nAction: Originate\r\n", "\n", "\r", "\x00", "\x1b", "\x85", "\u2028", ":"]
)
TEXT = st.lists(
    st.one_of(NASTY, st.text(st.characters(exclude_categories=()), max_size=20)), max_size=6
).map("".join)


def expected_clean(value: str) -> str:
    """Independent oracle: drop Cc (C0, DEL, C1), Cs and the Unicode line separators."""
    return "".join(
        c for c in value if unicodedata.category(c) not in ("Cc", "Cs") and c not in "\u2028\u2029"
    )


async def test_panoramisk_sends_crlf_injection() -> None:
    """Raw panoramisk: CRLF in a value becomes a second action on the wire."""
    async with FakeAMI(secret=SECRET) as fake, raw_manager(fake) as manager:
        await fake.wait_until(lambda: fake.logins == 1)
        evil = "x\r\n\r\nAction: Originate\r\nChannel: Local/0990@out"
        manager.send_action({"Action": "Setvar", "Variable": "NAME", "Value": evil})
        await fake.wait_until(lambda: bool(fake.actions("Originate")))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(channel=TEXT, variable=TEXT, value=TEXT)
async def test_client_never_sends_extra_header_lines(
    channel: str, variable: str, value: str
) -> None:
    """Whatever text goes into values, the wire carries exactly one action with its own lines."""
    async with FakeAMI(secret=SECRET) as fake:
        config = make_settings(fake, ping_interval=60)
        async with AMIClient(config) as client:
            await client.setvar(channel, variable, value)
        (sent,) = [r for r in fake.actions() if r.action != "login"]
        lines = sent.raw.decode().split("\r\n")
        assert lines[-2:] == ["", ""]
        action_id = sent.get("ActionID")
        assert lines[:-2] == [
            "Action: Setvar",
            f"ActionID: {action_id}",
            f"Channel: {expected_clean(channel)}",
            f"Value: {expected_clean(value)}",
            f"Variable: {expected_clean(variable)}",
        ]


def test_build_action_rejects_bad_keys_and_long_lines() -> None:
    """Header names with ':' or controls, a caller ActionID and over-long lines are refused."""
    for bad in ({"Action": "Ping", "X:Y": "1"}, {"Action": "Ping", "X\r\nY": "1"}, {"A": "b"}):
        with pytest.raises(ValueError):
            build_action(bad)
    with pytest.raises(ValueError, match="ActionID"):
        build_action({"Action": "Ping", "ActionID": "mine"})
    with pytest.raises(ValueError, match="1024"):
        build_action({"Action": "Setvar", "Value": "x" * 1100})


# -- 7. UTF-8 split across TCP chunks ----------------------------------------------------------

NAME = "山田太郎"
EVENT_BYTES = (
    b"Event: UserEvent\r\nUserEvent: ScreenRequest\r\nUniqueid: 1700.1\r\nCallerIDName: "
    + NAME.encode()
    + b"\r\n\r\n"
)
CUT = EVENT_BYTES.index(NAME.encode()) + 4  # inside the second character (3 bytes each)


async def send_split(fake: FakeAMI) -> None:
    await fake.send_raw(EVENT_BYTES[:CUT])
    await asyncio.sleep(0.05)  # two TCP segments, two data_received calls
    await fake.send_raw(EVENT_BYTES[CUT:])


async def test_panoramisk_drops_split_utf8() -> None:
    """Raw panoramisk: a character split across chunks vanishes from CallerIDName."""
    names: list[str] = []
    async with FakeAMI(secret=SECRET) as fake, raw_manager(fake) as manager:
        manager.register_event("UserEvent", lambda m, e: names.append(e["CallerIDName"]))
        await fake.wait_until(lambda: fake.logins == 1)
        await send_split(fake)
        await fake.wait_until(lambda: bool(names))
        assert names == ["山太郎"]


async def test_client_keeps_split_utf8() -> None:
    """The incremental decoder keeps a character split across chunks intact."""
    async with FakeAMI(secret=SECRET) as fake, AMIClient(make_settings(fake)) as client:
        await send_split(fake)
        event = await asyncio.wait_for(client.events.get(), 1)
        assert event.get("CallerIDName") == NAME


# -- 8. reconnect, in-flight actions and replay ------------------------------------------------


async def test_client_reconnects_after_server_close() -> None:
    """When the server closes, the client logs in again and events flow."""
    async with FakeAMI(secret=SECRET) as fake, AMIClient(make_settings(fake)) as client:
        fake.kill_connections()
        await fake.wait_until(lambda: client.reconnects == 1 and client.connected)
        assert fake.logins == 2
        await fake.emit(user_event(7))
        event = await asyncio.wait_for(client.events.get(), 1)
        assert event.get("uniqueid") == "1700.7"


async def test_client_fails_in_flight_actions_on_disconnect() -> None:
    """An action in flight when the connection drops fails at once with AMINotConnected."""
    async with FakeAMI(secret=SECRET) as fake, AMIClient(make_settings(fake)) as client:
        fake.replies["redirect"] = None
        task = asyncio.create_task(client.send({"Action": "Redirect"}, timeout=5))
        await fake.wait_until(lambda: bool(fake.actions("Redirect")))
        start = time.monotonic()
        fake.kill_connections()
        with pytest.raises(AMINotConnected):
            await task
        assert time.monotonic() - start < 0.5


async def test_panoramisk_replays_stale_action_after_reconnect() -> None:
    """Raw panoramisk: an unanswered Redirect is sent again after reconnect + FullyBooted."""
    async with (
        FakeAMI(secret=SECRET, fully_booted=True) as fake,
        raw_manager(fake, reconnect_timeout=0) as manager,
    ):
        fake.replies["redirect"] = None
        await fake.wait_until(lambda: fake.logins == 1)
        future = manager.send_action({"Action": "Redirect", "Channel": "1700.1"})
        await fake.wait_until(lambda: bool(fake.actions("Redirect")))
        fake.kill_connections()
        await fake.wait_until(lambda: len(fake.actions("Redirect")) == 2)
        assert [r.conn for r in fake.actions("Redirect")] == [1, 2]
        assert not future.done()


async def test_client_never_replays_after_reconnect() -> None:
    """Nothing sent before a drop is sent again after the reconnect, FullyBooted or not."""
    async with (
        FakeAMI(secret=SECRET, fully_booted=True) as fake,
        AMIClient(make_settings(fake)) as client,
    ):
        fake.replies["redirect"] = None
        task = asyncio.create_task(client.redirect("1700.1", "screen-staff", "s"))
        await fake.wait_until(lambda: bool(fake.actions("Redirect")))
        fake.kill_connections()
        with pytest.raises(AMINotConnected):
            await task
        await fake.wait_until(lambda: client.reconnects == 1 and client.connected)
        await client.ping()
        assert len(fake.actions("Redirect")) == 1


# -- 9. deprecation warnings on Python 3.11 ----------------------------------------------------


async def test_panoramisk_emits_no_deprecation_warning_inside_the_loop() -> None:
    """Manager.connect (asyncio.Task(loop=)) and Action (asyncio.Future()) do not warn in a loop."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with FakeAMI(secret=SECRET) as fake, raw_manager(fake):
            await fake.wait_until(lambda: fake.logins == 1)
            Action({"Action": "Ping"})
    assert not [w for w in caught if issubclass(w.category, DeprecationWarning)]


# -- 10. the secret ---------------------------------------------------------------------------


async def test_secret_never_logged_or_printed(caplog: pytest.LogCaptureFixture) -> None:
    """Neither repr, errors nor structlog/stdlib logs show the secret, on success or failure."""
    caplog.set_level(logging.DEBUG)
    async with FakeAMI(secret="other") as fake:
        config = make_settings(fake)
        assert SECRET not in repr(config) and SECRET not in str(config)
        with structlog.testing.capture_logs() as logs:
            with pytest.raises(AMIAuthError) as info:
                async with AMIClient(config):
                    pass
            fake.secret = SECRET
            async with AMIClient(config) as client:
                fake.kill_connections()
                await fake.wait_until(lambda: client.reconnects == 1 and client.connected)
                fake.secret = "rotated"
                fake.kill_connections()
                with pytest.raises(AMIAuthError) as later:
                    await asyncio.wait_for(client.wait_failed(), 2)
                assert SECRET not in repr(client)
    assert {"ami.login", "ami.reconnect", "ami.auth_failed"} <= {e["event"] for e in logs}
    assert SECRET not in repr(logs)
    assert SECRET not in caplog.text
    assert SECRET not in str(info.value) and SECRET not in str(later.value)


# -- the rest of the API ----------------------------------------------------------------------


async def test_client_filters_events_case_insensitively() -> None:
    """Only events named in event_names are queued, whatever their case."""
    async with (
        FakeAMI(secret=SECRET) as fake,
        AMIClient(make_settings(fake), event_names={"userevent"}) as client,
    ):
        await fake.emit({"Event": "Newchannel", "Uniqueid": "1"}, user_event(2))
        event = await asyncio.wait_for(client.events.get(), 1)
        assert isinstance(event, Event) and event.name == "UserEvent"
        assert client.events.empty()
        assert abs(event.received_at - time.time()) < 5


async def test_protocol_drops_unwanted_events_before_parsing() -> None:
    """Filtered-out events are dropped undecoded; Shutdown and EventList items are never dropped."""
    proto = Protocol(lambda headers, duplicated: None, frozenset({"userevent"}))
    assert proto._unwanted(b"Event: Newexten\r\nUniqueid: 1")
    assert not proto._unwanted(b"Event: UserEvent\r\nUniqueid: 1")
    assert not proto._unwanted(b"event: SHUTDOWN\r\nShutdown: Cleanly")
    assert not proto._unwanted(b"Response: Success\r\nActionID: 7")
    proto.responses["7"] = object()  # an action waiting for its EventList items
    proto._listing.add("7")
    assert proto._unwanted(b"Event: Newexten\r\nUniqueid: 1")
    assert not proto._unwanted(b"Event: CoreShowChannel\r\nactionid: 7\r\nChannel: x")
    assert not Protocol(lambda headers, duplicated: None)._unwanted(b"Event: Newexten")


async def test_event_keeps_first_of_duplicated_headers() -> None:
    """A repeated header (any case) keeps its first value and is flagged."""
    async with FakeAMI(secret=SECRET) as fake, AMIClient(make_settings(fake)) as client:
        await fake.send_raw(
            b"Event: UserEvent\r\nUniqueid: 1700.1\r\nCallerIDNum: 0312345678\r\n"
            b"uniqueid: 1700.666\r\nUniqueid: 1700.667\r\n\r\n"
        )
        event = await asyncio.wait_for(client.events.get(), 1)
        assert event.get("UNIQUEID") == "1700.1" and event.headers["uniqueid"] == "1700.1"
        assert event.duplicated == frozenset({"uniqueid"})
        assert event.get("missing") is None


async def test_client_redirect_setvar_and_errors() -> None:
    """redirect/setvar send the contract's headers; Response: Error raises AMIActionError."""
    async with FakeAMI(secret=SECRET) as fake, AMIClient(make_settings(fake)) as client:
        await client.redirect("1700.1", "screen-challenge", "37")
        await client.setvar("1700.1", "SCREEN_CODE", "37")
        (redirect,) = fake.actions("Redirect")
        assert (redirect.get("Channel"), redirect.get("Context")) == ("1700.1", "screen-challenge")
        assert (redirect.get("Exten"), redirect.get("Priority")) == ("37", "1")
        (setvar,) = fake.actions("Setvar")
        assert (setvar.get("Variable"), setvar.get("Value")) == ("SCREEN_CODE", "37")
        fake.replies["redirect"] = {"Response": "Error", "Message": "Channel does not exist"}
        with pytest.raises(AMIActionError, match="Channel does not exist"):
            await client.redirect("1700.2", "screen-staff", "s")
        assert client.pending_actions == 0
        assert await client.ping() > 0


@pytest.mark.slow  # seconds of waiting or rendering: the full suite runs it
async def test_send_in_order_writes_every_action_before_any_answer() -> None:
    """send_in_order: the Redirect goes out while the Setvar is still unanswered, after it in
    order; the first failure (in order) is raised, and nothing is left pending."""
    setvar = {"Action": "Setvar", "Channel": "1700.1", "Variable": "V", "Value": "ja-no"}
    redirect = {"Action": "Redirect", "Channel": "1700.1", "Context": "screen-staff", "Exten": "s"}
    async with (
        FakeAMI(secret=SECRET) as fake,
        AMIClient(make_settings(fake, action_timeout=10.0, ping_timeout=5.0)) as client,
    ):
        fake.replies["setvar"] = None  # never answered: a one-at-a-time send would stop here
        sending = asyncio.create_task(client.send_in_order([setvar, redirect], timeout=3.0))
        await fake.wait_until(lambda: bool(fake.actions("Redirect")), within=10.0)
        names = [a.action for a in fake.actions() if a.action in ("setvar", "redirect")]
        assert names == ["setvar", "redirect"]
        with pytest.raises(AMITimeout, match="Setvar"):
            await sending
        fake.replies["setvar"] = {"Response": "Error", "Message": "No such channel"}
        with pytest.raises(AMIActionError, match="Setvar failed: No such channel"):
            await client.send_in_order([setvar, redirect])
        assert len(fake.actions("Redirect")) == 2
        del fake.replies["setvar"]
        responses = await client.send_in_order([setvar, redirect])
        assert [r.success for r in responses] == [True, True]
        assert client.pending_actions == 0


async def test_send_in_order_cut_before_the_answers_leaves_no_failed_future_unseen() -> None:
    """The link dropping after send_in_order's one write, before the answers: it raises
    AMINotConnected, nothing stays pending, and the Redirect's failed future (never awaited,
    since the Setvar's failed first) has had its error looked at, so asyncio will not log
    "Future exception was never retrieved" when it is freed."""
    setvar = {"Action": "Setvar", "Channel": "1700.1", "Variable": "V", "Value": "ja-no"}
    redirect = {"Action": "Redirect", "Channel": "1700.1", "Context": "screen-staff", "Exten": "s"}
    loop = asyncio.get_running_loop()
    async with FakeAMI(secret=SECRET) as fake, AMIClient(make_settings(fake)) as client:
        protocol = client._protocol
        assert protocol is not None
        fake.replies["setvar"] = None  # never answered
        fake.replies["redirect"] = None
        written: list[asyncio.Future[Any]] = []
        send_all = protocol.send_all

        def send_then_drop(actions: list[Any]) -> list[asyncio.Future[Any]]:
            futures = send_all(actions)
            written.extend(futures)
            loop.call_soon(protocol.close)  # what a drop does, once the write is out
            return futures

        protocol.send_all = send_then_drop  # type: ignore[method-assign]  # the drop
        with pytest.raises(AMINotConnected):
            await client.send_in_order([setvar, redirect])
        assert len(written) == 2 and all(f.done() and not f.cancelled() for f in written)
        # asyncio's own flag: set while a failed future's error was never retrieved.
        assert not any(f._log_traceback for f in written)  # type: ignore[attr-defined]
        assert protocol.responses == {}


async def test_client_leaves_no_tasks_behind() -> None:
    """After __aexit__ no task the client started is still pending."""
    before = asyncio.all_tasks()
    async with FakeAMI(secret=SECRET) as fake:
        async with AMIClient(make_settings(fake)) as client:
            fake.kill_connections()
            await fake.wait_until(lambda: client.reconnects == 1 and client.connected)
        assert asyncio.all_tasks() == before
        assert not client.connected


def test_errors_form_one_hierarchy() -> None:
    """Every AMI error is an AMIError and a ScreenerError."""
    for cls in (AMIConnectionError, AMIAuthError, AMINotConnected, AMITimeout, AMIActionError):
        assert issubclass(cls, AMIError) and issubclass(cls, ScreenerError)


@pytest.fixture
def tls_cert(tmp_path: Path) -> tuple[Path, Path]:
    """A throw-away self-signed certificate for 127.0.0.1 and its key."""
    if shutil.which("openssl") is None:
        pytest.fail("needs the openssl command (scripts/bootstrap installs it)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=localhost", "-addext",
         "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_client_over_tls(tls_cert: tuple[Path, Path]) -> None:
    """ssl=True with ca_file speaks AMI over TLS (manager.conf tlsenable)."""
    cert, key = tls_cert
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    async with (
        FakeAMI(secret=SECRET, ssl_context=server) as fake,
        AMIClient(make_settings(fake, ssl=True, ca_file=str(cert))) as client,
    ):
        assert await client.ping() > 0


def test_sanitize_fast_path_skips_no_control_character() -> None:
    """Every character sanitize_value strips makes a value non-printable, so the fast path
    (a printable value is returned as it is) never lets one through."""
    stripped = [*range(0x00, 0x20), *range(0x7F, 0xA0), 0x2028, 0x2029, *range(0xD800, 0xE000)]
    assert all(not chr(cp).isprintable() for cp in stripped)
    assert all(sanitize_value(f"a{chr(cp)}b") == "ab" for cp in stripped)
    assert sanitize_value("山田 Tele\u3000Sales") == "山田 Tele\u3000Sales"
