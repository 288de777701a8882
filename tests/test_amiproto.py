"""Each panoramisk behaviour that screener.amiproto replaces, as panoramisk does it and as we do.

``test_panoramisk_*`` runs panoramisk 1.4's own ``AMIProtocol``/``Action`` and asserts the
behaviour we replace: if a panoramisk release fixes one, its test fails and tells us that our
replacement may go. ``test_ours_*`` is the same input through ``screener.amiproto``. No sockets:
both protocols are fed bytes and write to a recording transport.
"""

# the secrets here are test fixtures; the test is that they never leak

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections import deque
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from panoramisk.actions import Action
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message

from screener import amiproto
from screener.amiproto import Headers, Protocol, forget, new_action
from screener.errors import AMINotConnected

SECRET = "hunter2-Proto5"  # distinctive, so that a leak is easy to spot
NAME = "山田"


class Transport(asyncio.Transport):
    """Records what is written; ``fail`` makes every write raise, as a dead socket can."""

    def __init__(self, *, fail: bool = False) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.fail = fail
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.fail:
            raise OSError("Broken pipe")
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True


class Factory:
    """What panoramisk's protocol expects of its ``Manager``: dispatch and the replay queue."""

    def __init__(self) -> None:
        self.dispatched: list[Any] = []
        self.forgetable_actions = ("ping", "login")
        self.awaiting_actions: deque[Any] = deque()
        self.lost: list[Any] = []

    def dispatch(self, message: Any) -> None:
        self.dispatched.append(message)

    def connection_lost(self, exc: Any) -> None:
        self.lost.append(exc)


def theirs(*, encoding: str | None = "utf-8", fail: bool = False) -> tuple[Any, Factory]:
    """panoramisk's protocol, connected; ``encoding`` as its Manager sets it (None: it does not)."""
    protocol = AMIProtocol()
    protocol.connection_made(Transport(fail=fail))
    factory = Factory()
    protocol.factory = factory
    if encoding is not None:
        protocol.encoding = encoding
    return protocol, factory


def ours(
    wanted: frozenset[str] | None = None, *, fail: bool = False
) -> tuple[Protocol, list[tuple[Headers, frozenset[str]]]]:
    """Our protocol, connected; the events it delivers are collected."""
    events: list[tuple[Headers, frozenset[str]]] = []
    protocol = Protocol(lambda headers, duplicated: events.append((headers, duplicated)), wanted)
    protocol.connection_made(Transport(fail=fail))
    return protocol, events


def event(**headers: str) -> bytes:
    return ("".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()


# -- connection_made: the encoding -------------------------------------------------------------


async def test_panoramisk_decodes_ascii_without_its_manager() -> None:
    """panoramisk's protocol alone decodes ASCII with errors ignored: a Japanese name vanishes."""
    protocol, factory = theirs(encoding=None)
    protocol.data_received(event(Event="UserEvent", CallerIDName=NAME, Uniqueid="1700.1"))
    assert factory.dispatched[0]["CallerIDName"] == ""


async def test_ours_decodes_utf8() -> None:
    """Our protocol always decodes UTF-8."""
    protocol, events = ours()
    protocol.data_received(event(Event="UserEvent", CallerIDName=NAME))
    assert events[0][0]["CallerIDName"] == NAME


# -- data_received: a character split across chunks ---------------------------------------------


def split_in_a_character() -> tuple[bytes, bytes]:
    data = event(Event="UserEvent", CallerIDName=NAME)
    cut = data.index(NAME.encode()) + 4  # inside the second character's three bytes
    return data[:cut], data[cut:]


async def test_panoramisk_drops_a_character_split_across_chunks() -> None:
    """panoramisk decodes each chunk alone, ignoring errors: the split character is lost."""
    protocol, factory = theirs()
    for chunk in split_in_a_character():
        protocol.data_received(chunk)
    assert factory.dispatched[0]["CallerIDName"] == "山"


async def test_ours_keeps_a_character_split_across_chunks() -> None:
    """Our incremental decoder keeps the partial bytes for the next chunk."""
    protocol, events = ours()
    for chunk in split_in_a_character():
        protocol.data_received(chunk)
    assert events[0][0]["CallerIDName"] == NAME


# -- data_received: repeated headers ------------------------------------------------------------

FORGED = b"Event: UserEvent\r\nUniqueid: 1700.1\r\nuniqueid: 1700.666\r\n\r\n"


async def test_panoramisk_lets_a_repeated_header_in_another_case_win() -> None:
    """panoramisk: a second ``uniqueid:`` (a forged one, say) silently replaces the first."""
    protocol, factory = theirs()
    protocol.data_received(FORGED)
    assert factory.dispatched[0]["Uniqueid"] == "1700.666"
    same_case = Message.from_line("Event: UserEvent\r\nUniqueid: 1\r\nUniqueid: 2")
    assert same_case["Uniqueid"] == ["1", "2"]  # and in the same case, a list


async def test_ours_keeps_the_first_value_and_reports_the_repeat() -> None:
    """Ours: the first value wins and the event says which header was repeated."""
    protocol, events = ours()
    protocol.data_received(FORGED)
    headers, duplicated = events[0]
    assert headers["Uniqueid"] == "1700.1"
    assert duplicated == frozenset({"uniqueid"})


# -- data_received: a failing callback --------------------------------------------------------


async def test_panoramisk_lets_a_callback_error_escape_data_received() -> None:
    """panoramisk: an exception in dispatch escapes data_received; the rest of the chunk is lost."""
    protocol, factory = theirs()

    def dispatch(message: Any) -> None:
        factory.dispatched.append(message)
        raise RuntimeError("bug in a callback")

    factory.dispatch = dispatch  # type: ignore[method-assign]  # the callback that fails
    with pytest.raises(RuntimeError):
        protocol.data_received(event(Event="UserEvent", N="1") + event(Event="UserEvent", N="2"))
    assert [m["N"] for m in factory.dispatched] == ["1"]


async def test_ours_logs_a_bad_message_and_goes_on() -> None:
    """Ours: a message whose handling fails is logged; the next one in the chunk is delivered."""
    seen: list[str] = []

    def on_event(headers: Headers, duplicated: frozenset[str]) -> None:
        seen.append(headers["N"])
        if len(seen) == 1:
            raise RuntimeError("bug in a callback")

    protocol = Protocol(on_event)
    protocol.connection_made(Transport())
    with structlog.testing.capture_logs() as logs:
        protocol.data_received(event(Event="UserEvent", N="1") + event(Event="UserEvent", N="2"))
    assert seen == ["1", "2"]
    assert [e["event"] for e in logs] == ["ami.bad_message"]


# -- data_received: unwanted events -------------------------------------------------------------


@pytest.fixture
def parse_counts(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """How often panoramisk's Message.from_line and our parse_headers run."""
    counts = {"from_line": 0, "parse_headers": 0}
    from_line = Message.from_line.__func__  # type: ignore[attr-defined]  # a classmethod
    parse_headers = amiproto.parse_headers

    def counted_from_line(cls: Any, line: str) -> Any:
        counts["from_line"] += 1
        return from_line(cls, line)

    def counted_parse(lines: list[str]) -> Any:
        counts["parse_headers"] += 1
        return parse_headers(lines)

    monkeypatch.setattr(Message, "from_line", classmethod(counted_from_line))
    monkeypatch.setattr(amiproto, "parse_headers", counted_parse)
    yield counts


NOISE = b"".join(event(Event="Newexten", Uniqueid=str(n), AppData="x" * 40) for n in range(50))


async def test_panoramisk_parses_every_event(parse_counts: dict[str, int]) -> None:
    """panoramisk parses and dispatches every event, also those nobody listens to."""
    protocol, factory = theirs()
    protocol.data_received(NOISE)
    assert parse_counts["from_line"] == 50 and len(factory.dispatched) == 50


async def test_ours_drops_unwanted_events_unparsed(parse_counts: dict[str, int]) -> None:
    """Ours drops events the client does not want before parsing them; wanted ones get through."""
    protocol, events = ours(frozenset({"userevent"}))
    protocol.data_received(NOISE + event(Event="UserEvent", Uniqueid="1"))
    assert parse_counts == {"from_line": 0, "parse_headers": 1}
    assert [h["Event"] for h, _ in events] == ["UserEvent"]


# -- send ----------------------------------------------------------------------------------------


async def test_panoramisk_sends_on_a_closing_transport_and_waits_forever() -> None:
    """panoramisk writes to a closing transport and returns a future nothing will ever resolve."""
    protocol, _ = theirs()
    protocol.transport.close()
    future = protocol.send(Action({"Action": "Redirect", "Channel": "1700.1"}))
    await asyncio.sleep(0.05)
    assert not future.done()
    future.cancel()


async def test_ours_refuses_to_send_on_a_closing_transport() -> None:
    """Ours raises AMINotConnected at once: the caller knows the action did not go out."""
    protocol, _ = ours()
    protocol.transport.close()
    with pytest.raises(AMINotConnected):
        protocol.send(new_action({"Action": "Redirect", "Channel": "1700.1"}))
    assert protocol.responses == {}


def login() -> dict[str, str]:
    return {"Action": "Login", "Username": "screener", "Secret": SECRET}


async def test_panoramisk_logs_the_secret_when_a_write_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """panoramisk logs a failed write with the whole action: a Login's Secret in clear."""
    caplog.set_level(logging.DEBUG)
    protocol, _ = theirs(fail=True)
    future = protocol.send(Action(login()))
    assert SECRET in caplog.text
    future.cancel()


async def test_ours_never_logs_an_action(caplog: pytest.LogCaptureFixture) -> None:
    """Ours lets the write error reach the caller and logs nothing of the action."""
    caplog.set_level(logging.DEBUG)
    protocol, _ = ours(fail=True)
    with structlog.testing.capture_logs() as logs, pytest.raises(OSError):
        protocol.send(new_action(login()))
    assert SECRET not in caplog.text and SECRET not in repr(logs)


# -- connection_lost and close ---------------------------------------------------------------------


async def test_panoramisk_keeps_unanswered_actions_for_replay() -> None:
    """panoramisk: an unanswered Redirect waits in the Manager's queue, to be sent again later."""
    protocol, factory = theirs()
    redirect = Action({"Action": "Redirect", "Channel": "1700.1"})
    future = protocol.send(redirect)
    protocol.connection_lost(None)
    assert list(factory.awaiting_actions) == [redirect]
    assert not future.done()
    future.cancel()


async def test_panoramisk_without_its_manager_leaves_actions_pending() -> None:
    """panoramisk's protocol without a Manager: an unanswered action's future never resolves."""
    protocol, _ = theirs()
    protocol.factory = None
    future = protocol.send(Action({"Action": "Redirect", "Channel": "1700.1"}))
    protocol.close()
    await asyncio.sleep(0.05)
    assert not future.done()
    future.cancel()


async def test_ours_fails_actions_in_flight_when_the_connection_drops() -> None:
    """Ours: every action in flight fails with AMINotConnected at once; nothing is kept."""
    protocol, _ = ours()
    future = protocol.send(new_action({"Action": "Redirect", "Channel": "1700.1"}))
    protocol.connection_lost(None)
    with pytest.raises(AMINotConnected):
        await future
    assert protocol.responses == {} and protocol.in_flight_at_loss == 1
    assert protocol.lost.done() and protocol.transport.is_closing()


async def test_ours_fails_actions_in_flight_on_shutdown() -> None:
    """Ours: Asterisk's Shutdown event is delivered, then what is in flight fails at once."""
    protocol, events = ours()
    future = protocol.send(new_action({"Action": "Ping"}))
    protocol.data_received(event(Event="Shutdown", Shutdown="Cleanly", Restart="True"))
    with pytest.raises(AMINotConnected):
        await future
    assert [h["Event"] for h, _ in events] == ["Shutdown"]


# -- Action --------------------------------------------------------------------------------------


def test_panoramisk_action_outside_a_loop_binds_to_another_loop() -> None:
    """panoramisk's Action made outside a running loop has a future bound to some other loop.

    In a fresh process (as a script or the CLI starts), so that no test's loop is about.
    """
    script = (
        "import asyncio\n"
        "from panoramisk.actions import Action\n"
        "action = Action({'Action': 'Ping'})\n"
        "async def main():\n"
        "    return asyncio.get_running_loop()\n"
        "print(asyncio.run(main()) is action.future.get_loop())\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", "-c", script],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert done.stdout.strip() == "False"


def test_ours_refuses_to_make_an_action_outside_a_loop() -> None:
    """new_action outside a running loop raises instead of binding a future elsewhere."""
    with pytest.raises(RuntimeError):
        new_action({"Action": "Ping"})


QUEUED = "Response: Success\r\nActionID: {id}\r\nMessage: Originate successfully queued"
ORIGINATE = {"Action": "Originate", "Channel": "Local/1@x", "Async": "true"}


async def test_panoramisk_holds_an_async_originate_until_it_is_answered() -> None:
    """panoramisk: an async Originate's future waits past its Response, for OriginateResponse."""
    protocol, _ = theirs()
    action = Action(dict(ORIGINATE))
    future = protocol.send(action, as_list=None)
    protocol.data_received((QUEUED.format(id=action.id) + "\r\n\r\n").encode())
    assert not future.done()
    future.cancel()


async def test_ours_resolves_an_async_originate_with_its_response() -> None:
    """Ours: the Response resolves an async Originate (the test probe places calls that way)."""
    protocol, _ = ours()
    action = new_action(ORIGINATE)
    future = protocol.send(action)
    protocol.data_received((QUEUED.format(id=action.id) + "\r\n\r\n").encode())
    assert (await future)["Message"] == "Originate successfully queued"


async def test_panoramisk_keeps_a_timed_out_action() -> None:
    """panoramisk: an action nobody answered stays in ``responses`` after its waiter gave up."""
    protocol, _ = theirs()
    future = protocol.send(Action({"Action": "Ping"}))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(future, 0.01)
    assert len(protocol.responses) == 1


async def test_ours_forgets_a_timed_out_action() -> None:
    """Ours: ``forget`` removes it, so repeated timeouts do not grow the table."""
    protocol, _ = ours()
    action = new_action({"Action": "Ping"})
    future = protocol.send(action)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(future, 0.01)
    forget(protocol, action)
    assert protocol.responses == {}


async def test_ours_answers_a_one_response_action_with_its_headers() -> None:
    """A Redirect's Response resolves it at once with its headers (no panoramisk Message), even
    split across chunks, and leaves nothing pending; an unknown ActionID resolves nothing."""
    protocol, events = ours(frozenset({"userevent"}))
    action = new_action({"Action": "Redirect", "Channel": "1700.1"})
    future = protocol.send(action)
    other = protocol.send(new_action({"Action": "Ping"}))
    reply = f"Response: Error\r\nActionID: {action.id}\r\nMessage: Channel does not exist\r\n\r\n"
    data = b"Response: Success\r\nActionID: nobody\r\n\r\n" + reply.encode()
    protocol.data_received(data[:30])
    protocol.data_received(data[30:])
    headers = await future
    assert isinstance(headers, Headers) and headers["message"] == "Channel does not exist"
    assert action.id not in protocol.responses and len(protocol.responses) == 1
    assert not other.done() and events == []
