"""Logging in and out, and the language switch: the only pages open without a session."""

from __future__ import annotations

import hmac
import time
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from screener.users import DUMMY_HASH, verify_password
from screener.web.core import (
    LANG_COOKIE,
    PRELOGIN_COOKIE,
    SESSION_COOKIE,
    SESSION_SECONDS,
    ConsoleDep,
    Writer,
    new_csrf,
    render,
    set_cookie,
)
from screener.web.i18n import LANGS

router = APIRouter(include_in_schema=False)


def safe_next(target: str | None) -> str:
    """Only a path on this site: never ``//elsewhere`` or ``https://elsewhere``."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _login_page(request: Request, error: str = "", status: int = 200) -> Response:
    token = new_csrf()
    response = render(
        request,
        "login.html",
        None,
        {"csrf": token, "error": error, "next": safe_next(request.query_params.get("next"))},
        status_code=status,
    )
    set_cookie(request, response, PRELOGIN_COOKIE, token, 3600)
    return response


@router.get("/login")
def login_form(request: Request) -> Response:
    return _login_page(request)


@router.post("/login")
def login(
    request: Request,
    con: ConsoleDep,
    user: Annotated[str, Form(max_length=64)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    csrf: Annotated[str, Form(max_length=100)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    expected = request.cookies.get(PRELOGIN_COOKIE, "")
    if not expected or not csrf or not hmac.compare_digest(expected, csrf):
        return _login_page(request, "csrf", 403)
    address = request.client.host if request.client else "?"
    now = time.monotonic()
    if con.limiter.wait(address, user, now) > 0:
        return _login_page(request, "login_wait", 429)
    record = con.store.login_record(user)
    # Verify against a dummy hash for unknown names, so both take the same time.
    ok = verify_password(record[1] if record else DUMMY_HASH, password) and record is not None
    if not ok or record is None:
        con.limiter.failed(address, user, now)
        return _login_page(request, "login_failed", 401)
    con.limiter.succeeded(user)
    account = record[0]
    cookie = con.serializer.dumps({"u": account.id, "e": account.epoch, "c": new_csrf()})
    response = RedirectResponse(safe_next(next), status_code=303)
    set_cookie(request, response, SESSION_COOKIE, cookie, SESSION_SECONDS)
    response.delete_cookie(PRELOGIN_COOKIE, path="/")
    return response


@router.post("/logout")
def logout(request: Request, con: ConsoleDep, auth: Writer) -> Response:
    """Ends every session of the user (the epoch moves on), not only this browser's."""
    con.store.end_sessions(auth.user.id)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/lang/{code}")
def switch_language(request: Request, code: str, next: str = "/") -> Response:
    """Remember the chosen language (a preference cookie; nothing on the server changes)."""
    response = RedirectResponse(safe_next(next), status_code=303)
    if code in LANGS:
        set_cookie(request, response, LANG_COOKIE, code, 365 * 86400)
    return response
