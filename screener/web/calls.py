"""The call log: a filtered, paged page; a live stream of new calls (SSE); block, allow and
forget from a row; the number detail page with ``check``'s explanation; and their API."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated
from urllib.parse import urlencode

import structlog
from fastapi import APIRouter, Form, HTTPException, Path, Query, Request
from fastapi.responses import RedirectResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from screener.config import did_key
from screener.errors import InputError, SharedError
from screener.numbers import normalize, parse_list_number
from screener.policy import Decision, ListKind, Outcome, Route, decide
from screener.web.core import Console, ConsoleDep, Reader, Writer, authenticate, render
from screener.web.lists import make_entry
from screener.web.models import CallOut, CallPage, CheckOut, EntryOut, Problem
from screener.webstore import CallFilter, CallRow

log = structlog.get_logger(__name__)

pages = APIRouter(include_in_schema=False)
api = APIRouter(prefix="/api", tags=["calls"])
PAGE = 50
ROUTES = tuple(r.value for r in Route)
OUTCOMES = tuple(o.value for o in Outcome)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def call_filter(con: Console, route: str, outcome: str, number: str, date: str) -> CallFilter:
    """The filter the query asks for; InputError naming the bad field otherwise."""
    if route and route not in ROUTES:
        raise InputError(f"route {route!r}: use one of {', '.join(ROUTES)}")
    if outcome and outcome not in OUTCOMES:
        raise InputError(f"outcome {outcome!r}: use one of {', '.join(OUTCOMES)}")
    e164 = None
    if number:
        try:
            e164 = parse_list_number(number, con.region, prefix=False)
        except ValueError as exc:
            raise InputError(f"number: {exc}") from exc
    since = until = None
    if date:
        try:
            day = dt.date.fromisoformat(date)
        except ValueError as exc:
            raise InputError(f"date {date!r}: use YYYY-MM-DD") from exc
        since = dt.datetime.combine(day, dt.time(), con.tz)
        until = since + dt.timedelta(days=1)
    return CallFilter(route or None, outcome or None, e164, since, until)


def _row_json(row: CallRow, con: Console) -> dict[str, object]:
    c = row.call
    return {
        "rowid": row.rowid,
        "time": c.received_at.astimezone(con.tz).strftime("%Y-%m-%d %H:%M:%S"),
        "number": c.raw_number,
        "name": c.raw_name,
        "e164": c.e164,
        "category": c.category,
        "route": c.route + (" (fallback)" if c.fallback else ""),
        "outcome": (c.outcome or "") + (f" vm:{c.voicemail}" if c.voicemail else ""),
        "reasons": list(c.reasons),
    }


@pages.get("/calls")
def calls_page(
    request: Request,
    con: ConsoleDep,
    auth: Reader,
    route: Annotated[str, Query(max_length=20)] = "",
    outcome: Annotated[str, Query(max_length=20)] = "",
    number: Annotated[str, Query(max_length=64)] = "",
    date: Annotated[str, Query(max_length=20)] = "",
    before: Annotated[int | None, Query(ge=0)] = None,
    site: Annotated[str, Query(max_length=32)] = "",
    after: Annotated[str, Query(max_length=200)] = "",
    msg: Annotated[str, Query(max_length=300)] = "",
    error: Annotated[str, Query(max_length=300)] = "",
) -> Response:
    """The call log. With ``[shared]``: every site's calls from the central store (a site
    column, a site filter), or this site's own with a notice when the central store is away."""
    status = 200
    shared = con.store.shared
    notice = ""
    central = False
    query = {"route": route, "outcome": outcome, "number": number, "date": date}
    try:
        where = call_filter(con, route, outcome, number, date)
        if shared is not None:
            try:
                rows = con.store.site_calls(
                    where, site=site or None, after=_after(after), limit=PAGE + 1
                )
                central = True
            except SharedError as exc:
                # The reason (it names the central host, database and user) goes to the log,
                # for the administrator; the page, which any reader sees, only says it is away.
                log.warning("console: the central call log is unavailable", error=str(exc))
                notice = "unavailable"
        if not central:
            rows = con.store.calls(where, before=before, limit=PAGE + 1)
    except InputError as exc:
        error, rows, status, where = str(exc), [], 400, CallFilter()
    if shared is not None:
        query["site"] = site
    # Live only on the first, unfiltered page of this site's own log: where new calls belong.
    live = not central and before is None and where == CallFilter() and not site
    older = ""
    if len(rows) > PAGE:
        last = rows[PAGE - 1]
        cursor = (
            {"after": f"{last.call.received_at.timestamp()!r}|{last.site}|{last.call.call_id}"}
            if central
            else {"before": str(last.rowid)}
        )
        older = "/calls?" + urlencode({**query, **cursor})
    return render(
        request,
        "calls.html",
        auth,
        {
            "rows": rows[:PAGE],
            "older": older,
            "live": live,
            "last": con.store.last_rowid(),
            "f": query,
            "routes": ROUTES,
            "outcomes": OUTCOMES,
            "msg": msg,
            "error": error,
            "sites": central,
            "shared": shared is not None,
            "notice": notice,
            "back": str(request.url.path) + ("?" + request.url.query if request.url.query else ""),
        },
        status_code=status,
    )


def _after(text: str) -> tuple[float, str, str] | None:
    """The all-sites log's page cursor: ``received_at|site|call_id`` of the last row shown."""
    if not text:
        return None
    parts = text.split("|", 2)
    try:
        if len(parts) != 3:
            raise ValueError(text)
        return float(parts[0]), parts[1], parts[2]
    except ValueError as exc:
        raise InputError(f"after {text!r}: not a page of the call log") from exc


@pages.get("/calls/stream")
async def calls_stream(request: Request, after: Annotated[int, Query(ge=0)] = 0) -> Response:
    """Server-sent events, one per call written after rowid ``after``, as the log grows.

    Polls the call log (by rowid, an index walk) every ``live_poll`` seconds, re-checks the
    session each time (a logout closes the stream), and ends after ``live_lifetime`` seconds;
    the browser's EventSource reconnects with the last event id.
    """
    auth = await run_in_threadpool(authenticate, request)
    if auth is None:
        raise HTTPException(401, "log in first")
    con: Console = request.app.state.console
    start = request.headers.get("last-event-id", "")
    cursor = int(start) if start.isdigit() else after

    async def events() -> AsyncIterator[str]:
        nonlocal cursor
        deadline = time.monotonic() + con.live_lifetime
        yield "retry: 1000\n\n"
        while time.monotonic() < deadline:
            rows = await run_in_threadpool(con.store.calls_after, cursor)
            for row in rows:
                cursor = row.rowid
                data = json.dumps(_row_json(row, con), ensure_ascii=False)
                yield f"id: {row.rowid}\nevent: call\ndata: {data}\n\n"
            await asyncio.sleep(con.live_poll)
            if await run_in_threadpool(authenticate, request) is None:
                yield "event: logout\ndata: {}\n\n"
                return

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@pages.post("/calls/action")
def call_action(
    con: ConsoleDep,
    auth: Writer,
    number: Annotated[str, Form(max_length=64)] = "",
    action: Annotated[str, Form(max_length=10)] = "",
    back: Annotated[str, Form(max_length=2000)] = "/calls",
) -> Response:
    """Block, allow or forget the caller of a row; takes effect for the next call at once."""
    from screener.web.auth import safe_next

    target = safe_next(back)
    sep = "&" if "?" in target else "?"
    now = _now()
    try:
        if action in ("block", "allow"):
            entry = make_entry(
                con,
                number=number,
                kind=ListKind(action),
                prefix=False,
                label="",
                note="",
                expires=None,
                source=auth.source,
                now=now,
            )
            stored, _ = con.store.put_entry(entry, auth.user.name, now)
            message = stored.describe()
        elif action == "forget":
            key = parse_list_number(number, con.region, prefix=False)
            gone = con.store.remove_entry(key, False, auth.user.name, now)
            message = f"forgot {gone.describe()}" if gone else f"{key} was on no list"
        else:
            raise InputError(f"action {action!r}: use block, allow or forget")
    except (InputError, ValueError) as exc:
        return RedirectResponse(f"{target}{sep}{urlencode({'error': str(exc)})}", 303)
    return RedirectResponse(f"{target}{sep}{urlencode({'msg': message})}", 303)


def explain(
    con: Console, number: str, did: str | None, now: dt.datetime
) -> tuple[str | None, str, Decision]:
    """What `screener check` says for ``number``: (e164, category, decision)."""
    caller = normalize(number, con.region)
    matches = con.store.entries_for(caller.e164) if caller.e164 else []
    key = did_key(did, con.region) if did else None
    return caller.e164, caller.category.value, decide(caller, matches, con.policy, now, key)


@pages.get("/numbers/{number}")
def number_page(request: Request, con: ConsoleDep, auth: Reader, number: str) -> Response:
    if len(number) > 64:
        raise HTTPException(400, "number too long")
    e164, category, decision = explain(con, number, None, _now())
    rows = con.store.calls(CallFilter(e164=e164), before=None, limit=200) if e164 else []
    entries = con.store.entries_for(e164) if e164 else []
    return render(
        request,
        "number.html",
        auth,
        {
            "number": number,
            "e164": e164,
            "category": category,
            "decision": decision,
            "rows": rows,
            "entries": entries,
            "back": str(request.url.path),
        },
    )


# --- API ---------------------------------------------------------------------------------------


@api.get("/calls", response_model=CallPage, responses={400: {"model": Problem}})
def api_calls(
    con: ConsoleDep,
    auth: Reader,
    route: Route | None = None,
    outcome: Outcome | None = None,
    number: Annotated[str, Query(max_length=64)] = "",
    date: dt.date | None = None,
    before: Annotated[int | None, Query(ge=0, le=2**62)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = PAGE,
) -> CallPage:
    """The call log, newest first; ``before`` pages to older calls."""
    try:
        where = call_filter(
            con,
            route.value if route else "",
            outcome.value if outcome else "",
            number,
            date.isoformat() if date else "",
        )
    except InputError as exc:
        raise HTTPException(400, str(exc)) from exc
    rows = con.store.calls(where, before=before, limit=limit + 1)
    more = len(rows) > limit
    return CallPage(
        calls=[CallOut.of(r) for r in rows[:limit]],
        next_before=rows[limit - 1].rowid if more else None,
    )


@api.get("/calls/{call_id}", response_model=CallOut, responses={404: {"model": Problem}})
def api_call(
    con: ConsoleDep, auth: Reader, call_id: Annotated[str, Path(max_length=200)]
) -> CallOut:
    row = con.store.call(call_id)
    if row is None:
        raise HTTPException(404, "no such call")
    return CallOut.of(row)


@api.get("/check", response_model=CheckOut, tags=["check"], responses={400: {"model": Problem}})
def api_check(
    con: ConsoleDep,
    auth: Reader,
    number: Annotated[str, Query(max_length=64)],
    did: Annotated[str | None, Query(max_length=64)] = None,
) -> CheckOut:
    """Where a call from ``number`` would go now, and why (as `screener check`)."""
    e164, category, decision = explain(con, number, did, _now())
    return CheckOut(
        input=number,
        e164=e164,
        category=category,
        route=decision.route.value,
        rule=decision.rule,
        reasons=list(decision.reasons),
        entry=EntryOut.of(decision.entry) if decision.entry else None,
    )
