"""A fake Asterisk Manager Interface on 127.0.0.1, for tests, load generation and soak tests.

    async with FakeAMI(secret="s3cret") as fake:
        ...connect to fake.port...
        await fake.emit({"Event": "UserEvent", "UserEvent": "ScreenRequest", ...})
        fake.replies["redirect"] = {"Response": "Error", "Message": "Channel does not exist"}
        fake.freeze(); ...; fake.thaw()        # stop answering, as a SIGSTOPped Asterisk would
        fake.kill_connections()
        fake.actions("Redirect")               # every action received, with its raw bytes

It speaks just enough AMI: the greeting, Login (``Authentication failed`` on wrong credentials,
then closes the connection as Asterisk does), ``Permission denied`` before login, Ping, and a
configurable answer per action. Messages are parsed by splitting a byte buffer on CRLFCRLF, and
events are written straight to the transports, so it can push thousands of events a second.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

GREETING = b"Asterisk Call Manager/9.0.0\r\n"
SEP = b"\r\n\r\n"

Reply = Mapping[str, str] | Callable[["Received"], Mapping[str, str] | None] | None

DEFAULT_REPLIES: dict[str, Mapping[str, str]] = {
    "redirect": {"Response": "Success", "Message": "Redirect successful"},
    "setvar": {"Response": "Success", "Message": "Variable Set"},
}
UNKNOWN_ACTION: Mapping[str, str] = {"Response": "Error", "Message": "Invalid/unknown command"}


def encode(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> bytes:
    """One AMI message: ``Key: value`` lines and the blank line. Values are sent as given."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    return "".join(f"{k}: {v}\r\n" for k, v in items).encode() + b"\r\n"


@dataclass(frozen=True)
class Received:
    """One action as the fake read it off the wire."""

    conn: int  # which connection (1 for the first accepted)
    raw: bytes  # exactly the bytes received, terminating CRLFCRLF included
    headers: tuple[tuple[str, str], ...]
    authenticated: bool  # whether the session was logged in when it arrived
    at: float = field(default_factory=time.monotonic)

    def get(self, key: str, default: str | None = None) -> str | None:
        """First value of a header, case-insensitively."""
        lower = key.lower()
        return next((v for k, v in self.headers if k.lower() == lower), default)

    @property
    def action(self) -> str:
        """The ``Action:`` header, lower-cased."""
        return (self.get("Action") or "").lower()


class _Conn(asyncio.Protocol):
    def __init__(self, fake: FakeAMI) -> None:
        self.fake = fake
        self.id = 0
        self.buffer = b""
        self.authenticated = False
        self.transport: asyncio.Transport | None = None
        self.held: list[bytes] = []  # written while frozen, flushed at thaw
        self.paused = False
        self.drained: asyncio.Event = asyncio.Event()
        self.drained.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        fake = self.fake
        fake.accepted += 1
        self.id = fake.accepted
        fake.conns.add(self)
        if fake.frozen:
            transport.pause_reading()
        self.write(GREETING)
        fake.changed()

    def connection_lost(self, exc: Exception | None) -> None:
        self.fake.conns.discard(self)
        self.drained.set()
        self.fake.changed()

    def pause_writing(self) -> None:
        self.drained.clear()

    def resume_writing(self) -> None:
        self.drained.set()

    def write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if self.fake.frozen:
            self.held.append(data)
        else:
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if SEP not in self.buffer:
            return
        *messages, self.buffer = self.buffer.split(SEP)
        for message in messages:
            self.handle(message)

    def handle(self, message: bytes) -> None:
        stripped = message.lstrip(b"\r\n")
        headers = []
        for line in stripped.decode("utf-8", "replace").split("\r\n"):
            key, sep, value = line.partition(": ")
            if sep:
                headers.append((key, value))
            elif line:
                headers.append((line, ""))  # a malformed line: keep it visible to tests
        received = Received(self.id, message + SEP, tuple(headers), self.authenticated)
        fake = self.fake
        fake.received.append(received)
        action = received.action
        action_id = received.get("ActionID")
        head = [("ActionID", action_id)] if action_id is not None else []
        if action == "login":
            self.login(received, head)
        elif not self.authenticated:
            self.reply([("Response", "Error"), *head, ("Message", "Permission denied")])
        elif action == "ping":
            now = f"{time.time():.6f}"
            self.reply([("Response", "Success"), *head, ("Ping", "Pong"), ("Timestamp", now)])
        else:
            if action in fake.replies:
                spec = fake.replies[action]
            else:
                spec = DEFAULT_REPLIES.get(action, UNKNOWN_ACTION)
            answer = spec(received) if callable(spec) else spec
            if answer is not None:
                items = list(answer.items())
                self.reply([items[0], *head, *items[1:]])
        fake.changed()

    def login(self, received: Received, head: list[tuple[str, str]]) -> None:
        fake = self.fake
        if received.get("Username") == fake.username and received.get("Secret") == fake.secret:
            self.authenticated = True
            fake.logins += 1
            self.reply([("Response", "Success"), *head, ("Message", "Authentication accepted")])
            if fake.fully_booted:
                self.reply([("Event", "FullyBooted"), ("Privilege", "system,all")])
        else:
            fake.login_failures += 1
            self.reply([("Response", "Error"), *head, ("Message", "Authentication failed")])
            if fake.close_on_auth_failure and self.transport is not None:
                self.transport.close()  # Asterisk ends the session after a failed login

    def reply(self, headers: list[tuple[str, str]]) -> None:
        self.write(encode(headers))

    def thaw(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        for data in self.held:
            self.transport.write(data)
        self.held.clear()
        self.transport.resume_reading()


class FakeAMI:
    """A loopback AMI server: ``async with FakeAMI() as fake`` then connect to ``fake.port``."""

    def __init__(
        self,
        *,
        username: str = "screener",
        secret: str = "s3cret",  # a test server's default, not a real secret
        fully_booted: bool = False,
        close_on_auth_failure: bool = True,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = "127.0.0.1"
        self.port = 0
        self.username = username
        self.secret = secret
        # Asterisk sends FullyBooted at login only to sessions that may read the ``system`` class.
        self.fully_booted = fully_booted
        self.close_on_auth_failure = close_on_auth_failure
        self.ssl_context = ssl_context
        # Lower-cased action -> headers to answer with (Response first), a callable returning
        # them, or None to never answer.
        self.replies: dict[str, Reply] = {}
        self.received: list[Received] = []
        self.conns: set[_Conn] = set()
        self.accepted = 0
        self.logins = 0
        self.login_failures = 0
        self.frozen = False
        self._server: asyncio.Server | None = None
        self._changed = asyncio.Event()

    async def __aenter__(self) -> FakeAMI:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Conn(self), self.host, 0, ssl=self.ssl_context
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.close()
            self.kill_connections(abort=True)
            await self._server.wait_closed()
            self._server = None
        await self.wait_until(lambda: not self.conns, within=1.0)  # let connection_lost run

    # -- observing --------------------------------------------------------------------------

    def changed(self) -> None:
        self._changed.set()

    async def wait_until(self, predicate: Callable[[], bool], within: float = 2.0) -> None:
        """Wait until ``predicate()`` holds (re-checked whenever the fake sees traffic)."""
        async with asyncio.timeout(within):
            while not predicate():
                self._changed.clear()
                try:
                    async with asyncio.timeout(0.05):  # also re-check for client-side state
                        await self._changed.wait()
                except TimeoutError:
                    pass

    def actions(self, name: str | None = None) -> list[Received]:
        """Received actions, optionally only those named ``name`` (case-insensitive)."""
        if name is None:
            return list(self.received)
        return [r for r in self.received if r.action == name.lower()]

    @property
    def authenticated(self) -> list[_Conn]:
        """Open, logged-in connections."""
        return [c for c in self.conns if c.authenticated]

    # -- acting -----------------------------------------------------------------------------

    async def emit(self, *events: Mapping[str, str]) -> None:
        """Send events to every logged-in connection, in one write, and wait for the drain."""
        data = b"".join(encode(e) for e in events)
        for conn in self.authenticated:
            conn.write(data)
        await self.drain()

    async def send_raw(self, data: bytes) -> None:
        """Write bytes as they are to every open connection, and wait for the drain."""
        for conn in list(self.conns):
            conn.write(data)
        await self.drain()

    async def drain(self) -> None:
        """Wait until every connection's write buffer is below its high-water mark."""
        for conn in list(self.conns):
            await conn.drained.wait()

    def freeze(self) -> None:
        """Stop reading and answering, keeping sockets open (like a SIGSTOPped Asterisk)."""
        self.frozen = True
        for conn in self.conns:
            if conn.transport is not None and not conn.transport.is_closing():
                conn.transport.pause_reading()

    def thaw(self) -> None:
        """Resume: read what queued up, answer it, and flush what was held back."""
        self.frozen = False
        for conn in list(self.conns):
            conn.thaw()

    def kill_connections(self, *, abort: bool = False) -> None:
        """Close (FIN) or abort (RST) every open connection."""
        for conn in list(self.conns):
            if conn.transport is not None:
                if abort:
                    conn.transport.abort()
                else:
                    conn.transport.close()
