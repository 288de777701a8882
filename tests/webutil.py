"""Helpers for the web console tests: a real database file, users, and a logged-in client."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx

from screener.policy import Policy
from screener.store import CallRecord, Store
from screener.users import Role, hash_password, new_token, token_digest
from screener.voicemail import Mailbox
from screener.web.app import create_app
from screener.web.core import Console
from screener.webstore import WebStore

PASSWORD = "correct horse battery"
BASE = "http://console.test"


async def make_db(path: Path, calls: Sequence[CallRecord] = ()) -> None:
    """A migrated database holding ``calls``, written as the agent writes them."""
    async with Store.open(path) as store:
        if calls:
            await store.record_calls(calls)


def call(
    n: int,
    *,
    number: str = "0312345678",
    name: str = "",
    route: str = "challenge",
    e164: str | None = "+81312345678",
    at: dt.datetime | None = None,
) -> CallRecord:
    return CallRecord(
        call_id=f"c{n}",
        received_at=at or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=n),
        raw_number=number,
        raw_name=name,
        e164=e164,
        category="valid" if e164 else "anonymous",
        did="0120000000",
        route=route,
        rule="default",
        reasons=(f"reason for {name}",),
        latency_ms=1.5,
    )


_HASHES: dict[str, str] = {}


def password_hash(password: str = PASSWORD) -> str:
    """The real Argon2id hash, computed once per test run (it is slow on purpose)."""
    if password not in _HASHES:
        _HASHES[password] = hash_password(password)
    return _HASHES[password]


@contextmanager
def console(path: Path, mailbox: Path | None = None) -> Iterator[tuple[Console, dict[str, str]]]:
    """The console over ``path`` with users admin and staff; yields it and their API tokens."""
    with WebStore.open(path) as store:
        now = dt.datetime.now(dt.UTC)
        tokens: dict[str, str] = {}
        for name, role in (("admin", Role.ADMIN), ("staff", Role.STAFF)):
            if store.login_record(name) is None:
                store.add_user(name, role, password_hash(), now)
            tokens[name] = new_token()
            store.add_token(name, token_digest(tokens[name]), now)
        con = Console(
            store=store,
            policy=Policy(),
            region="JP",
            mailbox=Mailbox(mailbox) if mailbox else None,
            secret=store.secret_key(),
            live_poll=0.05,
            live_lifetime=0.3,
        )
        yield con, tokens


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]*)"', html)
    assert match, "no CSRF field in the page"
    return match[1]


@asynccontextmanager
async def client(con: Console) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(con))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as c:
        yield c


async def login(c: httpx.AsyncClient, user: str, password: str = PASSWORD) -> str:
    """Log in through the form; returns the session's CSRF token."""
    page = await c.get("/login")
    done = await c.post(
        "/login", data={"user": user, "password": password, "csrf": csrf_of(page.text)}
    )
    assert done.status_code == 303, done.text
    home = await c.get("/lists")
    assert home.status_code == 200
    return csrf_of(home.text)
