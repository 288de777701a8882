"""Our AMI client: one supervised, logged-in connection over panoramisk's protocol.

panoramisk 1.4 parses AMI and correlates responses well, but its ``Manager`` connection
lifecycle has the failure modes listed in docs/ami.md. We use its ``Action``, ``Message`` and
protocol through screener.amiproto (which states each of its behaviours we replace, with the
tests that show them) and replace the ``Manager`` with ``AMIClient``:

- ``__aenter__`` returns only after ``Login`` succeeded (``Manager.connect()`` returns at TCP
  connect). A refused login raises ``AMIAuthError`` at once instead of being retried silently.
- Events reach a callback that only ``put_nowait()``s into ``AMIClient.events``: nothing that
  can raise or block runs in ``data_received``.
- One task we own supervises the connection: it pings with a deadline (a half-open connection is
  aborted), reconnects with backoff and logs in again. If the login is refused after a reconnect,
  the error is reported through ``wait_failed()`` so that the service can exit non-zero.
- Actions in flight fail with ``AMINotConnected`` as soon as the connection drops; nothing is ever
  queued and replayed after a reconnect (a stale Redirect must not reach a call that has moved on).
- Every header we send is sanitized: no CR/LF injection through caller data (``build_action``).
"""

from __future__ import annotations

import asyncio
import re
import ssl as ssl_module
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import structlog

from screener.amiproto import (
    SUCCESS_RESPONSES,
    Headers,
    Protocol,
    forget,
    headers_of,
    new_action,
    parse_headers,
)
from screener.errors import (
    AMIActionError,
    AMIAuthError,
    AMIConnectionError,
    AMIError,
    AMINotConnected,
    AMITimeout,
)

log = structlog.get_logger(__name__)

__all__ = [
    "AMIClient",
    "AMISettings",
    "Event",
    "Headers",
    "Response",
    "build_action",
    "parse_headers",
    "sanitize_value",
]

MAX_LINE_BYTES = 1024  # Asterisk discards longer input lines
MAX_HEADERS = 128  # Asterisk's limit per message
# Reconnect backoff cap. Every call that arrives while we are away takes the dialplan's fallback,
# so once Asterisk is back we must be too within seconds: a refused connect on loopback costs
# Asterisk nothing (a frozen one holds each attempt for connect_timeout anyway). With 30 s, a
# 4 s Asterisk restart left the screener away 4 s more (tests/test_e2e_faults.py).
MAX_BACKOFF = 2.0

# C0, DEL, C1, the Unicode line/paragraph separators, and lone surrogates (cannot be encoded).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_KEY = re.compile(r"[A-Za-z0-9_-]+")
_KEYS: dict[str, str] = {}  # header names already checked -> lower-cased


@dataclass(frozen=True)
class AMISettings:
    """How to reach and log in to the Asterisk Manager Interface."""

    secret: str = field(repr=False)
    host: str = "127.0.0.1"
    port: int = 5038
    username: str = "screener"
    ssl: bool | ssl_module.SSLContext = False  # AMI over TLS (manager.conf tlsenable, port 5039)
    ca_file: str | None = None  # with ssl=True: trust this CA instead of the system store
    connect_timeout: float = 10.0
    action_timeout: float = 2.0
    ping_interval: float = 1.0
    ping_timeout: float = 2.0
    reconnect_delay: float = 0.5
    events: str = "user"  # Login ``Events:`` class list: Asterisk filters cheaply for us

    @property
    def address(self) -> str:
        """``host:port``, for messages."""
        return f"{self.host}:{self.port}"

    def ssl_context(self) -> ssl_module.SSLContext | None:
        """The TLS context to connect with, or None for plain TCP."""
        if isinstance(self.ssl, ssl_module.SSLContext):
            return self.ssl
        if self.ssl:
            return ssl_module.create_default_context(cafile=self.ca_file)
        return None


@dataclass(frozen=True)
class Event:
    """One AMI event. ``duplicated`` holds the (lower-cased) names of headers seen twice."""

    name: str
    headers: Headers
    received_at: float
    duplicated: frozenset[str] = frozenset()

    def get(self, key: str, default: str | None = None) -> str | None:
        """Header value by case-insensitive name."""
        return self.headers.get(key, default)


@dataclass(frozen=True)
class Response:
    """The response to an action; ``events`` holds the items of an EventList response."""

    headers: Headers
    events: tuple[Headers, ...] = ()

    @property
    def success(self) -> bool:
        """True for ``Response: Success`` (or ``Follows``/``Goodbye``)."""
        return self.headers.get("Response", "") in SUCCESS_RESPONSES

    @property
    def message(self) -> str:
        """The ``Message:`` header, or ``""``."""
        return self.headers.get("Message", "")

    def get(self, key: str, default: str | None = None) -> str | None:
        """Header value by case-insensitive name."""
        return self.headers.get(key, default)


def sanitize_value(value: str) -> str:
    """Strip every control character (CR, LF, NUL, other C0/C1, U+2028/9, lone surrogates)."""
    # Every character _CONTROL matches is one isprintable() refuses (Cc, Zl, Zp, Cs): a
    # printable value (nearly all of them) is clean without the regex.
    return value if value.isprintable() else _CONTROL.sub("", value)


def build_action(action: Mapping[str, str]) -> dict[str, str]:
    """Check keys and sanitize values of an action; ValueError if it cannot be sent safely."""
    headers: dict[str, str] = {}
    seen: set[str] = set()
    for key, value in action.items():
        # Keys come from our code, never from callers: a bad one is a bug, so refuse it loudly.
        lower = _KEYS.get(key) if isinstance(key, str) else None
        if lower is None:
            if not isinstance(key, str) or not _KEY.fullmatch(key):
                raise ValueError(f"invalid AMI header name {key!r}")
            lower = key.lower()
            if len(_KEYS) < 256:  # the names our code uses: a handful
                _KEYS[key] = lower
        if lower == "actionid":
            raise ValueError("ActionID is set by the AMI client")
        if lower in seen:
            raise ValueError(f"header {key!r} given twice (case-insensitively)")
        seen.add(lower)
        clean = sanitize_value(str(value))
        # At most 4 bytes a character: a short line needs no encoding to be measured.
        if len(key) + 2 + 4 * len(clean) > MAX_LINE_BYTES - 2 and (
            len(f"{key}: {clean}".encode()) > MAX_LINE_BYTES - 2
        ):
            raise ValueError(f"header {key!r} is longer than Asterisk's {MAX_LINE_BYTES}-byte line")
        headers[key] = clean
    if "action" not in seen:
        raise ValueError("an AMI action needs an 'Action' header")
    if len(headers) + 1 > MAX_HEADERS:
        raise ValueError(f"more than {MAX_HEADERS} headers")
    return headers


class AMIClient:
    """One logged-in AMI connection, supervised: use ``async with AMIClient(settings) as ami``."""

    def __init__(
        self,
        settings: AMISettings,
        *,
        event_names: Collection[str] | None = None,
        queue_size: int = 10000,
    ) -> None:
        self.settings = settings
        self.events: asyncio.Queue[Event] = asyncio.Queue(maxsize=queue_size)
        self._names = None if event_names is None else frozenset(n.lower() for n in event_names)
        self.reconnects = 0
        self.drops = 0
        self.timeouts = 0
        self._protocol: Protocol | None = None
        self._up = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._failed: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"<AMIClient {self.settings.username}@{self.settings.address} up={self.connected}>"

    # -- state -------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while logged in on a live connection."""
        return self._up.is_set()

    @property
    def pending_actions(self) -> int:
        """Actions sent and still awaiting a response (size of panoramisk's responses dict)."""
        return 0 if self._protocol is None else len(self._protocol.responses)

    async def wait_connected(self, timeout: float | None = None) -> None:  # noqa: ASYNC109  # the API
        """Wait until logged in; AMINotConnected after ``timeout``, or the fatal error."""
        waiter = asyncio.ensure_future(self._up.wait())
        waits: set[asyncio.Future[Any]] = {waiter}
        if self._failed is not None:
            waits.add(self._failed)
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if self._failed is not None and self._failed.done():
            self._failed.result()
        if not self.connected:
            raise AMINotConnected(f"not connected to AMI at {self.settings.address}")

    async def wait_failed(self) -> None:
        """Return never; raise the fatal error (e.g. login refused after a reconnect)."""
        if self._failed is None:
            raise AMINotConnected("AMI client is not running")
        await asyncio.shield(self._failed)

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> AMIClient:
        loop = asyncio.get_running_loop()
        self._failed = loop.create_future()
        protocol = await self._connect_with_retry(self.settings.connect_timeout)
        self._set_up(protocol)
        self._supervisor = asyncio.create_task(self._supervise(protocol), name="ami-supervisor")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            try:
                await self._supervisor
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
            self._supervisor = None
        protocol, self._protocol = self._protocol, None
        self._up.clear()
        # The counters a soak test watches: the pending-action table must not grow.
        pending = 0 if protocol is None else len(protocol.responses)
        if protocol is not None:
            await _close(protocol)
        if self._failed is not None:
            if self._failed.done():
                self._failed.exception()  # retrieved: no "exception never retrieved" noise
            else:
                self._failed.cancel()
        log.info(
            "ami.closed",
            address=self.settings.address,
            pending=pending,
            reconnects=self.reconnects,
            timeouts=self.timeouts,
            drops=self.drops,
        )

    async def _open(self) -> Protocol:
        """Connect and log in once. Raises OSError, AMIAuthError or AMIConnectionError."""
        s = self.settings
        loop = asyncio.get_running_loop()
        log.info("ami.connect", address=s.address, tls=s.ssl is not False)
        _, protocol = await loop.create_connection(
            lambda: Protocol(self._deliver, self._names), s.host, s.port, ssl=s.ssl_context()
        )
        try:
            login = new_action(
                build_action(
                    {
                        "Action": "Login",
                        "Username": s.username,
                        "Secret": s.secret,
                        "Events": s.events,
                    }
                )
            )
            try:
                message = await protocol.send(login)
            except AMINotConnected as exc:
                raise AMIConnectionError(
                    f"AMI at {s.address} closed the connection during login"
                ) from exc
            if isinstance(message, list):
                message = message[0]
            if not message.success:
                reason = sanitize_value(str(message.get("Message", "")))
                raise AMIAuthError(
                    f"AMI login refused for user {s.username!r} at {s.address}: {reason}"
                )
        except BaseException:
            protocol.transport.abort()
            raise
        log.info("ami.login", address=s.address, username=s.username)
        return protocol

    async def _connect_with_retry(self, budget: float) -> Protocol:
        """Connect and log in, retrying connection errors until ``budget`` seconds have passed."""
        s = self.settings
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        delay = s.reconnect_delay
        last: BaseException | None = None
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AMIConnectionError(
                    f"cannot connect to AMI at {s.address} within {budget:g}s: {last}"
                ) from last
            try:
                async with asyncio.timeout(remaining):
                    return await self._open()
            except AMIAuthError:
                raise
            except (OSError, TimeoutError, AMIConnectionError) as exc:
                last = exc
                log.warning("ami.connect_failed", address=s.address, error=_describe(exc))
            await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
            delay = min(delay * 2, MAX_BACKOFF)

    def _set_up(self, protocol: Protocol) -> None:
        self._protocol = protocol
        self._up.set()

    async def _supervise(self, protocol: Protocol) -> None:
        """Run the supervision loop; a bug in it becomes a fatal error, never a silent stop."""
        try:
            await self._supervise_forever(protocol)
        except Exception as exc:
            log.exception("ami.supervisor_crashed", address=self.settings.address)
            error = AMIConnectionError(f"AMI supervisor crashed: {_describe(exc)}")
            error.__cause__ = exc
            self._fail(error)
        self._up.clear()

    def _fail(self, error: AMIError) -> None:
        """Report a fatal error through ``wait_failed()``."""
        if self._failed is not None and not self._failed.done():
            self._failed.set_exception(error)

    async def _supervise_forever(self, protocol: Protocol) -> None:
        """Watch the connection; when it drops, reconnect and log in again, until auth fails."""
        s = self.settings
        while True:
            await self._watch(protocol)
            self._up.clear()
            self._protocol = None
            log.warning("ami.disconnect", address=s.address, in_flight=protocol.in_flight_at_loss)
            delay = s.reconnect_delay
            while True:
                await asyncio.sleep(delay)
                try:
                    async with asyncio.timeout(s.connect_timeout):
                        protocol = await self._open()
                    break
                except AMIAuthError as exc:
                    # Retrying will not fix a changed secret, and Asterisk's authlimit would
                    # count the attempts: report it and let the service exit non-zero.
                    log.error("ami.auth_failed", address=s.address, username=s.username)
                    self._fail(exc)
                    return
                except (OSError, TimeoutError, AMIConnectionError) as exc:
                    log.warning(
                        "ami.reconnect_failed", address=s.address, error=_describe(exc), delay=delay
                    )
                    delay = min(delay * 2, MAX_BACKOFF)
            self.reconnects += 1
            self._set_up(protocol)
            log.info("ami.reconnect", address=s.address, reconnects=self.reconnects)

    async def _watch(self, protocol: Protocol) -> None:
        """Ping with a deadline until the connection is lost; abort it if a Ping goes unanswered."""
        s = self.settings
        while not protocol.lost.done():
            await asyncio.wait([protocol.lost], timeout=s.ping_interval)
            if protocol.lost.done():
                return
            try:
                await self._send_on(protocol, {"Action": "Ping"}, s.ping_timeout)
            except AMITimeout:
                # Half-open (peer stopped, cable cut): TCP would not notice for minutes.
                log.warning("ami.watchdog_abort", address=s.address, ping_timeout=s.ping_timeout)
                protocol.transport.abort()
                await protocol.lost
                return
            except AMIActionError:
                pass  # an error response is still a response: the peer is alive
            except AMINotConnected:
                await protocol.lost
                return

    # -- events ------------------------------------------------------------------------------

    def _deliver(self, headers: Headers, duplicated: frozenset[str]) -> None:
        """Called inside data_received: filter, build and ``put_nowait``; never raises."""
        name = headers.get("Event", "")
        try:
            if self._names is not None and name.lower() not in self._names:
                return
            event = Event(name, headers, time.time(), duplicated)
            try:
                self.events.put_nowait(event)
            except asyncio.QueueFull:
                # Drop the oldest: it is the likeliest to be past its hold deadline already.
                self.events.get_nowait()
                self.events.put_nowait(event)
                self.drops += 1
        except Exception:
            self.drops += 1
            log.exception("ami.deliver_failed", event=name)

    # -- actions -----------------------------------------------------------------------------

    async def send(
        self,
        action: Mapping[str, str],
        timeout: float | None = None,  # noqa: ASYNC109  # a per-action deadline is the API
    ) -> Response:
        """Send one action and return its response.

        Raises AMINotConnected when not logged in (nothing is queued for later), AMITimeout,
        AMIActionError on ``Response: Error``, ValueError for an action that cannot be sent.
        """
        headers = build_action(action)
        protocol = self._protocol
        if protocol is None or not self.connected:
            raise AMINotConnected(f"not connected to AMI at {self.settings.address}")
        return await self._send_on(
            protocol, headers, self.settings.action_timeout if timeout is None else timeout
        )

    async def send_in_order(
        self,
        actions: Sequence[Mapping[str, str]],
        timeout: float | None = None,  # noqa: ASYNC109  # a per-action deadline is the API
    ) -> list[Response]:
        """Send ``actions`` back to back, then wait for all their responses.

        Asterisk runs one session's actions one at a time, in the order they arrive
        (docs/ami.md), so each one sees what the ones before it did, for one round trip in all
        instead of one each. Raises as :meth:`send` does, for the first action that failed.
        """
        headers = [build_action(action) for action in actions]
        protocol = self._protocol
        if protocol is None or not self.connected:
            raise AMINotConnected(f"not connected to AMI at {self.settings.address}")
        seconds = self.settings.action_timeout if timeout is None else timeout
        sent = [new_action(h) for h in headers]
        # Every action in one write, before any response is awaited; a link already closing
        # raises here, before any of them is registered.
        futures = protocol.send_all(sent)
        responses: list[Response] = []
        # One deadline for all (their answers come in order), one timer: no task per action,
        # and none of asyncio.timeout's rescheduling.
        timer = asyncio.get_running_loop().call_later(seconds, _expire, futures)
        try:
            for h, future in zip(headers, futures, strict=True):
                responses.append(_response(h["Action"], await future))
        except _Expired as exc:
            # The first action unanswered (responses holds those before it); the ones after it
            # are unanswered too.
            self.timeouts += len(headers) - len(responses)
            name = headers[len(responses)]["Action"]
            raise AMITimeout(f"{name}: no response within {seconds:g}s") from exc
        finally:
            timer.cancel()
            for action, future in zip(sent, futures, strict=True):
                forget(protocol, action)
                # Those after a failure are never awaited: cancelled, or their error retrieved,
                # so none fails later unseen ("Future exception was never retrieved").
                if not future.done():
                    future.cancel()
                elif not future.cancelled():
                    future.exception()
        return responses

    @staticmethod
    def _start(protocol: Protocol, headers: Mapping[str, str]) -> tuple[Any, asyncio.Future[Any]]:
        action = new_action(headers)
        return action, protocol.send(action)

    async def _send_on(
        self, protocol: Protocol, headers: Mapping[str, str], seconds: float
    ) -> Response:
        action, future = self._start(protocol, headers)
        return await self._wait(protocol, headers["Action"], action, future, seconds)

    async def _wait(
        self,
        protocol: Protocol,
        name: str,
        action: Any,
        future: asyncio.Future[Any],
        seconds: float,
    ) -> Response:
        try:
            async with asyncio.timeout(seconds):
                result = await future
        except TimeoutError as exc:
            self.timeouts += 1
            raise AMITimeout(f"{name}: no response within {seconds:g}s") from exc
        finally:
            forget(protocol, action)
        return _response(name, result)

    async def ping(self) -> float:
        """Send a Ping and return the round-trip time in seconds."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        await self.send({"Action": "Ping"})
        return loop.time() - start

    async def redirect(self, channel: str, context: str, exten: str, priority: int = 1) -> None:
        """Send the channel (name or Uniqueid) to ``context,exten,priority``."""
        await self.send(
            {
                "Action": "Redirect",
                "Channel": channel,
                "Context": context,
                "Exten": exten,
                "Priority": str(priority),
            }
        )

    async def setvar(self, channel: str, variable: str, value: str) -> None:
        """Set a channel variable."""
        await self.send(
            {"Action": "Setvar", "Channel": channel, "Variable": variable, "Value": value}
        )


async def _close(protocol: Protocol, grace: float = 1.0) -> None:
    """Close gracefully; abort if the peer (e.g. a TLS shutdown) does not finish in time."""
    protocol.close()
    try:
        async with asyncio.timeout(grace):
            await asyncio.shield(protocol.lost)
    except TimeoutError:
        protocol.transport.abort()
        await protocol.lost


class _Expired(Exception):
    """An action's deadline passed before its answer (send_in_order's timer)."""


def _expire(futures: Sequence[asyncio.Future[Any]]) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(_Expired())


def _response(name: str, result: Any) -> Response:
    """The answer to action ``name`` as a Response; AMIActionError unless it succeeded."""
    if isinstance(result, list):
        response = Response(headers_of(result[0]), tuple(headers_of(m) for m in result[1:]))
    else:
        response = Response(headers_of(result))
    if not response.success:
        raise AMIActionError(f"{name} failed: {response.message or 'no message'}")
    return response


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
