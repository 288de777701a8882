"""The boundary with panoramisk: the one module that imports it, and what of it we replace.

We keep panoramisk 1.4 (the project's AMI library) for what it does well: ``Action`` (ActionID
generation, serialization), ``Message`` (response parsing) and ``AMIProtocol.handle_message``
(matching responses and EventList items to the action waiting for them). Its ``Manager`` is not
used at all (``screener.ami.AMIClient`` replaces its lifecycle; docs/ami.md). Of the six methods
of ``AMIProtocol``, ``Protocol`` below replaces five, and these helpers replace three behaviours
of ``Action``. Each is shown by a pair of tests in tests/test_amiproto.py: ``test_panoramisk_*``
runs panoramisk's own code and shows the behaviour (so it fails, and tells us, the day a
panoramisk release fixes it), ``test_ours_*`` shows what we do instead.

=================  ==================================================  ========================
replaced           panoramisk 1.4 does                                 we do
=================  ==================================================  ========================
connection_made    decodes as ASCII unless its ``Manager`` sets the    always UTF-8 (caller
                   encoding: Japanese caller names vanish              names are Japanese)
data_received      decodes each TCP chunk alone with                   an incremental decoder
                   ``errors='ignore'``: a character split across two   keeps the partial bytes
                   chunks is lost
data_received      a repeated header becomes a list, and one repeated  first value wins, the
                   in another case silently replaces the first:        repeat is reported
                   a forged ``uniqueid:`` wins                         (``parse_headers``)
data_received      calls event callbacks inside ``data_received``: an  events go to a callback
                   exception there kills the connection and the rest   that only enqueues; a
                   of the chunk                                        bad message is logged
data_received      parses every event, wanted or not                   drops unwanted events
                                                                       before parsing them
send               writes to a closing transport and returns a future  raises AMINotConnected
                   that never resolves; logs a failed write with the   at once; never logs an
                   whole action (a Login's ``Secret``)                 action
connection_lost,   keeps unanswered actions for its ``Manager`` to     fails every action in
close              replay after reconnect (a stale Redirect), or,      flight with
                   without one, leaves their futures pending forever   AMINotConnected
Action()           creates its future at construction: outside a       ``new_action`` is
                   running loop it binds to another loop               called only in the loop
Action (Async      holds an async Originate's future until its         the response resolves it
Originate)         OriginateResponse, i.e. until the call is answered  (``as_list=False``)
responses          a timed-out action stays in ``responses`` forever   ``forget`` removes it
=================  ==================================================  ========================
"""

from __future__ import annotations

import asyncio
import codecs
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import structlog
from panoramisk.actions import Action
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message

from screener.errors import AMINotConnected

log = structlog.get_logger(__name__)

__all__ = [
    "EOL",
    "SUCCESS_RESPONSES",
    "Headers",
    "Protocol",
    "forget",
    "headers_of",
    "new_action",
    "parse_headers",
]

EOL = "\r\n"
SUCCESS_RESPONSES = frozenset(Message.success_responses)  # Success, Follows, Goodbye
_ACTION_ID = re.compile(r"^actionid:", re.IGNORECASE | re.MULTILINE)


class Headers(Mapping[str, str]):
    """Read-only AMI headers with case-insensitive lookup; iteration keeps the received case."""

    __slots__ = ("_store",)

    def __init__(self, store: dict[str, tuple[str, str]]) -> None:
        self._store = store  # lower-cased key -> (key as received, value)

    def __getitem__(self, key: str) -> str:
        return self._store[key.lower()][1]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._store

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._store.values())

    def __len__(self) -> int:
        return len(self._store)

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"


def parse_headers(lines: list[str]) -> tuple[Headers, frozenset[str]]:
    """Parse ``Key: value`` lines; a repeated key keeps its FIRST value and is reported."""
    store: dict[str, tuple[str, str]] = {}
    duplicated: set[str] = set()
    for line in lines:
        key, sep, value = line.partition(":")
        if not sep:
            continue  # the greeting line, or noise
        if value.startswith(" "):
            value = value[1:]
        lower = key.lower()
        if lower in store:
            duplicated.add(lower)  # possible header injection through caller data
        else:
            store[lower] = (key, value)
    return Headers(store), frozenset(duplicated)


def headers_of(message: Any) -> Headers:
    """Convert a panoramisk ``Message`` (its repeated headers are lists: first wins)."""
    store: dict[str, tuple[str, str]] = {}
    for key, value in message.items():
        first = value[0] if isinstance(value, list) else value
        store[key.lower()] = (key, str(first))
    return Headers(store)


def new_action(headers: Mapping[str, str]) -> Any:
    """A panoramisk ``Action``; call it only inside the running loop (its future binds there)."""
    asyncio.get_running_loop()  # RuntimeError outside a loop, instead of a future bound elsewhere
    # An async Originate is answered by its Response; panoramisk would hold the future open until
    # the OriginateResponse event, which comes only when the call is answered.
    single = (
        headers.get("Action", "").lower() == "originate"
        and headers.get("Async", "").lower() == "true"
    )
    return Action(dict(headers), as_list=False if single else None)


def forget(protocol: Protocol, action: Any) -> None:
    """Stop waiting for ``action`` (answered or timed out): panoramisk would keep it forever."""
    protocol.responses.pop(action.id, None)


class Protocol(AMIProtocol):  # type: ignore[misc]  # panoramisk ships no types
    """panoramisk's protocol with incremental UTF-8, our event parsing and prompt failure."""

    def __init__(
        self,
        on_event: Callable[[Headers, frozenset[str]], None],
        wanted: frozenset[str] | None = None,
    ) -> None:
        self._on_event = on_event
        # Lower-cased event names the client keeps (None: all). The others are dropped before
        # their headers are parsed: a server that ignores the Login ``Events:`` filter sends
        # ~20 unrelated events per call, and parsing them was most of the per-call CPU time.
        self._wanted = None if wanted is None else wanted | {"shutdown"}
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self.closed = False
        self.responses: dict[str, Any] = {}
        self.in_flight_at_loss = 0  # actions failed by the drop: the pending table's size then
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.encoding = "utf-8"

    def send(self, data: Any, as_list: bool | None = None) -> asyncio.Future[Any]:
        """Register and write an ``Action``; never logs it (a Login carries the secret)."""
        if self.closed or self.transport.is_closing():
            raise AMINotConnected("AMI connection is closing")
        self.responses[data.id] = data
        self.transport.write(str(data).encode("utf-8"))
        future: asyncio.Future[Any] = data.future
        return future

    def data_received(self, data: bytes) -> None:
        text = self._buffer + self._decoder.decode(data)
        blocks = text.split(EOL + EOL)
        self._buffer = blocks.pop()
        for block in blocks:
            try:
                self._handle_block(block.strip("\r\n"))
            except Exception:
                # An exception escaping data_received kills the connection and the rest of the
                # chunk; one bad message must not do that.
                log.exception("ami.bad_message")

    def _unwanted(self, block: str) -> bool:
        """True for an event the client filters out anyway and no action is waiting for."""
        if self._wanted is None or block[:6].lower() != "event:":
            return False
        end = block.find(EOL)
        name = (block[6:] if end < 0 else block[6:end]).strip().lower()
        if name in self._wanted:
            return False
        # EventList items carry the ActionID of the action waiting for them: never drop those.
        return not (self.responses and _ACTION_ID.search(block))

    def _handle_block(self, block: str) -> None:
        if self._unwanted(block):
            return
        lines = block.split(EOL)
        if lines[0].startswith("Asterisk Call Manager/"):  # the greeting precedes the first message
            del lines[0]
        if not lines:
            return
        if lines[0][:9].lower() != "response:":
            headers, duplicated = parse_headers(lines)
            action_id = headers.get("ActionID")
            if action_id is None or action_id not in self.responses:  # not an EventList item
                if "Event" in headers:
                    self._on_event(headers, duplicated)
                    if headers["Event"].lower() == "shutdown":
                        self.close()  # Asterisk is going away: fail what is in flight, reconnect
                return
        message = Message.from_line(EOL.join(lines))
        if message is not None:
            self.handle_message(message)

    def connection_lost(self, exc: Exception | None) -> None:
        self.in_flight_at_loss = len(self.responses)
        self.close()
        if not self.lost.done():
            self.lost.set_result(None)

    def close(self) -> None:
        # Fail what is in flight now instead of letting panoramisk queue it for replay.
        for key in list(self.responses):
            action = self.responses.pop(key)
            if not action.future.done():
                action.future.set_exception(AMINotConnected("AMI connection lost"))
        if not self.closed:
            self.closed = True
            self.transport.close()
