"""The boundary with panoramisk: the one module that imports it, and what of it we replace.

We keep panoramisk 1.4 (the project's AMI library) for what it does well: ``Action`` (built
more cheaply by ``_Action``, a subclass), ``Message`` (response parsing) and
``AMIProtocol.handle_message`` (matching EventList items to the action waiting for them; a
one-response action's answer is matched here, before them). Its ``Manager`` is not
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
data_received      decodes each TCP chunk alone with                   bytes are kept until a
                   ``errors='ignore'``: a character split across two   whole message came, then
                   chunks is lost                                      that message is decoded
data_received      a repeated header becomes a list, and one repeated  first value wins, the
                   in another case silently replaces the first:        repeat is reported
                   a forged ``uniqueid:`` wins                         (``parse_headers``)
data_received      calls event callbacks inside ``data_received``: an  events go to a callback
                   exception there kills the connection and the rest   that only enqueues; a
                   of the chunk                                        bad message is logged
data_received      parses every event, wanted or not                   drops unwanted events
                                                                       before decoding them
data_received      parses each response into a ``Message`` and lets    a one-response action
                   the ``Action`` decide (per message, in Python)      (Ping, Setvar, Redirect)
                   whether more will follow                            is resolved with its
                                                                       ``Headers`` at once
send               writes to a closing transport and returns a future  raises AMINotConnected
                   that never resolves; logs a failed write with the   at once; never logs an
                   whole action (a Login's ``Secret``)                 action
connection_lost,   keeps unanswered actions for its ``Manager`` to     fails every action in
close              replay after reconnect (a stale Redirect), or,      flight with
                   without one, leaves their futures pending forever   AMINotConnected
Action()           creates its future at construction: outside a       ``new_action`` is
                   running loop it binds to another loop; reads its    called only in the loop;
                   id through ``__getattr__`` and serializes itself    its id and its bytes are
                   at each use                                         made once
Action (Async      holds an async Originate's future until its         the response resolves it
Originate)         OriginateResponse, i.e. until the call is answered  (``as_list=False``)
responses          a timed-out action stays in ``responses`` forever   ``forget`` removes it
=================  ==================================================  ========================
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar, overload

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
SEP = b"\r\n\r\n"  # ends every AMI message
_T = TypeVar("_T")
# ActionIDs unique to this process (panoramisk's generator formats four fields per action).
_ID_PREFIX = f"screener/{uuid.uuid4().hex[:12]}/"
_ids = itertools.count(1)
SUCCESS_RESPONSES = frozenset(Message.success_responses)  # Success, Follows, Goodbye
# Actions Asterisk answers with exactly one Response (no EventList, no later event): their
# answer resolves them at once, without panoramisk's per-message "is more coming?" test.
SINGLE_RESPONSE_ACTIONS = frozenset({"ping", "redirect", "setvar", "hangup", "userevent"})


class Headers(Mapping[str, str]):
    """Read-only AMI headers with case-insensitive lookup; iteration keeps the received case."""

    __slots__ = ("_store",)

    def __init__(self, store: dict[str, tuple[str, str]]) -> None:
        self._store = store  # lower-cased key -> (key as received, value)

    def __getitem__(self, key: str) -> str:
        return self._store[key.lower()][1]

    @overload
    def get(self, key: str, /) -> str | None: ...
    @overload
    def get(self, key: str, /, default: str | _T) -> str | _T: ...

    def get(self, key: str, /, default: object = None) -> object:
        """The value of ``key`` (any case), or ``default`` (Mapping's is a try/except)."""
        item = self._store.get(key.lower())
        return default if item is None else item[1]

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
    if isinstance(message, Headers):  # a one-response action's answer (Protocol._answer)
        return message
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
    return _Action(headers, as_list=False if single else None)


class _Action(Action):  # type: ignore[misc]  # panoramisk ships no types
    """panoramisk's ``Action`` made cheaply: what it computes per use is computed once here.

    Still an ``Action`` (its ``add_message``, ``multi`` and ``completed`` answer an EventList
    through ``AMIProtocol.handle_message``); ``id`` is a plain attribute instead of a
    ``__getattr__`` lookup, and the bytes to send are made once (panoramisk's, sorted by name).
    """

    id = ""  # a plain attribute, shadowing panoramisk's property (set in __init__)

    def __init__(self, headers: Mapping[str, str], as_list: bool | None) -> None:
        # Not Action.__init__: it builds the dict through MutableMapping.update, one key at a
        # time, and its future with asyncio.Future() (the loop is looked up again).
        action_id = f"{_ID_PREFIX}{next(_ids)}"
        store = {key.lower(): (key, value) for key, value in headers.items()}
        store["actionid"] = ("ActionID", action_id)
        self._store = store
        self.as_list = as_list
        self.responses: list[Any] = []
        self.future = asyncio.get_running_loop().create_future()
        self.id = action_id
        name = store["action"][1] if "action" in store else ""
        self.single = as_list is not True and name.lower() in SINGLE_RESPONSE_ACTIONS
        # Sorted by name, as panoramisk writes them.
        lines = [f"{key}: {value}" for key, value in sorted(store.values())]
        self.wire = (EOL.join(lines) + EOL + EOL).encode("utf-8")

    def __str__(self) -> str:
        return str(self.wire.decode("utf-8"))


def forget(protocol: Protocol, action: Any) -> None:
    """Stop waiting for ``action`` (answered or timed out): panoramisk would keep it forever."""
    protocol.responses.pop(action.id, None)


class Protocol(AMIProtocol):  # type: ignore[misc]  # panoramisk ships no types
    """panoramisk's protocol with whole-message UTF-8, our event parsing and prompt failure."""

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
        self._wanted_bytes = (
            None if self._wanted is None else frozenset(w.encode() for w in self._wanted)
        )
        # Bytes, split on CRLFCRLF before decoding: no UTF-8 sequence holds a CR or LF byte,
        # so a whole message is decoded at once and a character split across two TCP chunks
        # is never cut (panoramisk decodes each chunk alone).
        self._buffer = b""
        self.closed = False
        self.responses: dict[str, Any] = {}
        # ActionIDs of the actions in flight that may be answered by events (an EventList):
        # only while one is, an unwanted event must be looked into for its ActionID.
        self._listing: set[str] = set()
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
        if not getattr(data, "single", False):
            self._listing.add(data.id)
        wire = data.wire if isinstance(data, _Action) else str(data).encode("utf-8")
        self.transport.write(wire)
        future: asyncio.Future[Any] = data.future
        return future

    def send_all(self, actions: list[Any]) -> list[asyncio.Future[Any]]:
        """:meth:`send` for several actions, in order, in one write (one system call)."""
        if self.closed or self.transport.is_closing():
            raise AMINotConnected("AMI connection is closing")
        for action in actions:
            self.responses[action.id] = action
            if not getattr(action, "single", False):
                self._listing.add(action.id)
        self.transport.write(
            b"".join(a.wire if isinstance(a, _Action) else str(a).encode() for a in actions)
        )
        return [action.future for action in actions]

    def data_received(self, data: bytes) -> None:
        blocks = (self._buffer + data).split(SEP) if self._buffer else data.split(SEP)
        self._buffer = blocks.pop()
        for block in blocks:
            try:
                if not self._unwanted(block):
                    self._handle_block(block.decode("utf-8", "replace").strip("\r\n"))
            except Exception:
                # An exception escaping data_received kills the connection and the rest of the
                # chunk; one bad message must not do that.
                log.exception("ami.bad_message")

    def _unwanted(self, block: bytes) -> bool:
        """True for an event the client filters out anyway and no action is waiting for.

        Looked at as bytes, before decoding: most of what a server that ignores the Login
        ``Events:`` filter sends is dropped here for the cost of a slice and a set lookup.
        """
        wanted = self._wanted_bytes
        if wanted is None:
            return False
        if block.startswith(b"Event: "):  # as Asterisk writes it: the name is what follows
            end = block.find(b"\r\n", 7)
            name = block[7:] if end < 0 else block[7:end]
        else:
            block = block.lstrip(b"\r\n")
            if block[:6].lower() != b"event:":
                return False
            end = block.find(b"\r\n")
            name = block[6:] if end < 0 else block[6:end]
        if name.strip().lower() in wanted:
            return False
        # EventList items carry the ActionID of the action waiting for them: never drop those.
        listing = self._listing
        if listing:
            listing.intersection_update(self.responses)  # forget those answered meanwhile
            if listing and b"\nactionid:" in block.lower():
                return False
        return True

    def _handle_block(self, block: str) -> None:
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
        elif self._answer(lines):
            return
        message = Message.from_line(EOL.join(lines))
        if message is not None:
            self.handle_message(message)

    def _answer(self, lines: list[str]) -> bool:
        """Resolve a one-response action with its response's headers; False if not one."""
        headers, _ = parse_headers(lines)
        action = self.responses.get(headers.get("ActionID", ""))
        if action is None or not getattr(action, "single", False):
            return False
        del self.responses[action.id]
        if not action.future.done():
            action.future.set_result(headers)
        return True

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
