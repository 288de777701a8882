"""What every router of the console shares: its settings, the store, sessions, CSRF and roles.

Authentication is either a session cookie (signed with itsdangerous; ``HttpOnly``,
``SameSite=Strict``, ``Secure`` over HTTPS) or an ``Authorization: Bearer`` API token. Every
state-changing request made with a session must carry the session's CSRF token, in the form
field ``csrf`` or the ``X-CSRF-Token`` header; bearer requests carry no ambient credential, so
they need none. A session names the user and their ``epoch``: logging out or changing the
password bumps it, which ends every older session at once.
"""

from __future__ import annotations

import datetime as dt
import hmac
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import Depends, HTTPException, Request
from fastapi.templating import Jinja2Templates
from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.responses import Response

from screener.policy import Policy
from screener.users import User, token_digest
from screener.voicemail import Mailbox
from screener.web.i18n import pick, translator
from screener.web.ratelimit import LoginLimiter
from screener.webstore import WebStore

SESSION_COOKIE = "screener_session"
PRELOGIN_COOKIE = "screener_prelogin"
LANG_COOKIE = "screener_lang"
SESSION_SECONDS = 12 * 3600
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
TEMPLATES = Path(__file__).parent / "templates"


@dataclass
class Console:
    """The console's state for one app: built once in :func:`screener.web.app.create_app`."""

    store: WebStore
    policy: Policy
    region: str
    mailbox: Mailbox | None
    secret: str
    live_poll: float = 0.5  # how often the live view looks for new calls
    live_lifetime: float = 300.0  # then the stream ends; the browser reconnects by itself
    limiter: LoginLimiter = field(default_factory=LoginLimiter)
    templates: Jinja2Templates = field(
        default_factory=lambda: Jinja2Templates(directory=str(TEMPLATES))
    )

    def __post_init__(self) -> None:
        # Autoescape on for every template, whatever its extension; nothing is marked safe.
        self.templates.env.autoescape = True
        self.serializer = URLSafeTimedSerializer(self.secret, salt="screener-session")

    @property
    def tz(self) -> dt.tzinfo:
        return ZoneInfo(self.policy.hours.timezone)


@dataclass(frozen=True, slots=True)
class Auth:
    """Who made a request, and how (session or token)."""

    user: User
    csrf: str | None  # the session's CSRF token; None for bearer-token requests

    @property
    def source(self) -> str:
        """What list entries made by this user carry as their source."""
        return f"web:{self.user.name}"


class NotLoggedIn(Exception):
    """No valid session or token: pages redirect to the login page, the API answers 401."""


def console(request: Request) -> Console:
    state: Console = request.app.state.console
    return state


def _session(request: Request, con: Console) -> Auth | None:
    raw = request.cookies.get(SESSION_COOKIE)
    if not raw:
        return None
    try:
        data = con.serializer.loads(raw, max_age=SESSION_SECONDS)
    except BadSignature:
        return None
    if not isinstance(data, dict):
        return None
    uid, epoch, csrf = data.get("u"), data.get("e"), data.get("c")
    if not isinstance(uid, int) or not isinstance(epoch, int) or not isinstance(csrf, str):
        return None
    user = con.store.user(uid)
    if user is None or user.epoch != epoch:
        return None
    return Auth(user, csrf)


def authenticate(request: Request) -> Auth | None:
    """The request's user, by bearer token or session cookie; None if neither is valid."""
    con = console(request)
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        user = con.store.token_user(token_digest(token.strip()))
        return Auth(user, None) if user else None
    return _session(request, con)


async def _csrf_given(request: Request) -> str:
    given = request.headers.get("x-csrf-token", "")
    if given:
        return given
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        value = form.get("csrf")
        return value if isinstance(value, str) else ""
    return ""


def reader(request: Request) -> Auth:
    """Any logged-in user (a dependency)."""
    auth = authenticate(request)
    if auth is None:
        raise NotLoggedIn()
    return auth


async def writer(request: Request) -> Auth:
    """A logged-in user making a change: with a session, the CSRF token must match."""
    auth = reader(request)
    if request.method in STATE_CHANGING and auth.csrf is not None:
        given = await _csrf_given(request)
        if not given or not hmac.compare_digest(given, auth.csrf):
            raise HTTPException(403, "missing or wrong CSRF token; reload the page and retry")
    return auth


def admin_reader(auth: Annotated[Auth, Depends(reader)]) -> Auth:
    if not auth.user.is_admin:
        raise HTTPException(403, "only an admin may do this")
    return auth


def admin_writer(auth: Annotated[Auth, Depends(writer)]) -> Auth:
    if not auth.user.is_admin:
        raise HTTPException(403, "only an admin may do this")
    return auth


Reader = Annotated[Auth, Depends(reader)]
Writer = Annotated[Auth, Depends(writer)]
AdminReader = Annotated[Auth, Depends(admin_reader)]
AdminWriter = Annotated[Auth, Depends(admin_writer)]
ConsoleDep = Annotated[Console, Depends(console)]


def language(request: Request) -> str:
    return pick(request.cookies.get(LANG_COOKIE), request.headers.get("accept-language"))


def is_https(request: Request) -> bool:
    return request.url.scheme == "https"


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        httponly=True,
        samesite="strict",
        secure=is_https(request),
        path="/",
    )


def new_csrf() -> str:
    return secrets.token_urlsafe(32)


def render(
    request: Request,
    name: str,
    auth: Auth | None,
    context: dict[str, Any],
    status_code: int = 200,
) -> Response:
    """A page: the template with the language, the user, the CSRF token and ``context``."""
    con = console(request)
    lang = language(request)
    full = {
        "t": translator(lang),
        "lang": lang,
        "auth": auth,
        "csrf": auth.csrf if auth else context.get("csrf", ""),
        "tz": con.tz,
        **context,
    }
    response = con.templates.TemplateResponse(request, name, full, status_code=status_code)
    response.headers["Cache-Control"] = "no-store"
    return response


def local_time(value: dt.datetime | None, tz: dt.tzinfo) -> str:
    return "" if value is None else value.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")
