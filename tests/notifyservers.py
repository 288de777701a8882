"""Real local servers for the notification tests: SMTP (aiosmtpd), an HTTP webhook receiver
(aiohttp) and Mosquitto (Debian's package), all on loopback, each stopped by the test."""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from screener.notify.message import SIGNATURE_HEADER, verify


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- SMTP -------------------------------------------------------------------------------------


@dataclass
class Mailbox:
    """What the SMTP server received."""

    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)

    # aiosmtpd calls the hook by this name.
    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content
        assert isinstance(raw, bytes)
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        self.envelopes.append((str(envelope.mail_from), list(envelope.rcpt_tos)))
        return "250 OK"


class _Auth:
    def __init__(self, box: Mailbox, user: str, password: str) -> None:
        self.box, self.user, self.password = box, user, password

    def __call__(
        self, server: Any, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword) and (data.login.decode(), data.password.decode()) == (
            self.user,
            self.password,
        ):
            self.box.logins.append(self.user)
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)


@contextmanager
def smtp_server(
    *, tls_context: Any = None, user: str | None = None, password: str | None = None
) -> Iterator[tuple[int, Mailbox]]:
    """aiosmtpd on 127.0.0.1 (STARTTLS and required login when given a context and a user)."""
    box = Mailbox()
    port = free_port()
    kwargs: dict[str, Any] = {}
    if tls_context is not None:
        kwargs.update(tls_context=tls_context, require_starttls=True)
    if user is not None:
        assert password is not None
        kwargs.update(authenticator=_Auth(box, user, password), auth_required=True)
    controller = Controller(box, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield port, box
    finally:
        controller.stop()


# --- webhook ----------------------------------------------------------------------------------


@dataclass
class Hooks:
    """What the webhook receiver got: every POST, and whether its signature was right."""

    secret: str
    posts: list[dict[str, Any]] = field(default_factory=list)
    bad_signatures: int = 0
    arrived: list[float] = field(default_factory=list)

    def keys(self) -> list[str]:
        return [p["key"] for p in self.posts]


@asynccontextmanager
async def webhook_receiver(hooks: Hooks, port: int | None = None) -> AsyncIterator[str]:
    """An aiohttp server that checks X-Screener-Signature; yields the URL to POST to."""

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        if not verify(hooks.secret, body, request.headers.get(SIGNATURE_HEADER, "")):
            hooks.bad_signatures += 1
            return web.Response(status=401)
        hooks.arrived.append(time.time())
        post = await request.json()
        assert request.headers["X-Screener-Idempotency-Key"] == post["key"]
        hooks.posts.append(post)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port or 0, reuse_address=True)
    await site.start()
    bound = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{bound}/hook"
    finally:
        await runner.cleanup()


# --- Mosquitto --------------------------------------------------------------------------------


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None
    )
    if found is None:
        pytest.fail("needs Debian's mosquitto package (scripts/bootstrap installs it)")
    return found


@contextmanager
def mosquitto(tmp: Path) -> Iterator[int]:
    """A Mosquitto broker on a free loopback port with a throw-away config; stopped by PID."""
    port = free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        f"log_dest file {tmp / 'mosquitto.log'}\n"
    )
    proc = subprocess.Popen(
        [mosquitto_binary(), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log = tmp / "mosquitto.log"
                    pytest.fail(
                        f"mosquitto did not start: {log.read_text() if log.exists() else ''}"
                    )
                time.sleep(0.05)
        yield port
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()


async def wait_for(predicate: Any, within: float = 10.0) -> None:
    """Poll ``predicate()`` until true; fail the test after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {within}s")
        await asyncio.sleep(0.02)
