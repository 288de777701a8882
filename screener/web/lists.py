"""The allow and block lists: search, add, edit, remove, CSV import (admin) and export (admin)."""

from __future__ import annotations

import datetime as dt
import io
import re
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import RedirectResponse, StreamingResponse
from starlette.responses import Response

from screener.errors import InputError
from screener.numbers import broad_prefix, parse_list_number
from screener.policy import Entry, ListKind
from screener.transfer import read_csv, write_csv
from screener.web.core import (
    AdminReader,
    AdminWriter,
    Console,
    ConsoleDep,
    Reader,
    Writer,
    render,
)
from screener.web.models import EntryChange, EntryEdit, EntryIn, EntryOut, Problem, Removed
from screener.when import parse_future

pages = APIRouter(include_in_schema=False)
api = APIRouter(prefix="/api/entries", tags=["entries"])
MAX_IMPORT_BYTES = 20 * 1024 * 1024
PAGE = 100
_ERRORS: dict[int | str, dict[str, Any]] = {400: {"model": Problem}, 403: {"model": Problem}}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key(con: Console, number: str, prefix: bool) -> str:
    try:
        return parse_list_number(number, con.region, prefix=prefix)
    except ValueError as exc:
        raise InputError(str(exc)) from exc


def _expiry(text: str | None, now: dt.datetime) -> dt.datetime | None:
    if not text or not text.strip():
        return None
    try:
        when = parse_future(text.strip(), now)
    except ValueError as exc:
        raise InputError(f"expiry {text!r}: {exc}") from exc
    if when <= now:
        raise InputError(f"expiry {text!r} has already passed")
    return when


def _limited(text: str, name: str, most: int) -> str:
    if len(text) > most:
        raise InputError(f"{name} is too long (at most {most} characters)")
    if any(not ch.isprintable() for ch in text):
        raise InputError(f"{name} may not hold control characters")
    return text


def make_entry(
    con: Console,
    *,
    number: str,
    kind: ListKind,
    prefix: bool,
    label: str,
    note: str,
    expires: str | None,
    source: str,
    now: dt.datetime,
) -> Entry:
    """A validated entry from what a user typed; InputError saying what is wrong otherwise.

    A prefix rule too broad for `screener list add` without ``--force`` is refused here: the
    console has no such override, so a click can never block a whole region.
    """
    key = _key(con, number, prefix)
    broad = broad_prefix(key, con.region) if prefix else None
    if broad is not None:
        raise InputError(f"{broad}; only `screener list add --force` on the PBX host adds it")
    return Entry(
        kind=kind,
        number=key,
        prefix=prefix,
        label=_limited(label, "label", 200),
        note=_limited(note, "note", 1000),
        source=source,
        created_at=now,
        expires_at=_expiry(expires, now),
    )


_NUMBERISH = re.compile(r"[0-9０-９+＋\-－()（） ]+")


def search_terms(con: Console, query: str) -> tuple[str, str]:
    """(number prefix, text) to search for: a query that looks like a number searches the
    numbers that start with it (``0120`` finds ``+81120…``), anything else labels and notes."""
    query = query.strip()
    if query and _NUMBERISH.fullmatch(query):
        try:
            return parse_list_number(query, con.region, prefix=True), ""
        except ValueError:
            pass
    return "", query


def _kind(text: str | None) -> ListKind | None:
    if not text:
        return None
    try:
        return ListKind(text)
    except ValueError as exc:
        raise InputError(f"list {text!r}: use allow or block") from exc


def _back(message: str = "", error: str = "", **params: str) -> Response:
    query = {k: v for k, v in {"msg": message, "error": error, **params}.items() if v}
    return RedirectResponse("/lists" + (f"?{urlencode(query)}" if query else ""), status_code=303)


# --- pages -------------------------------------------------------------------------------------


@pages.get("/lists")
def lists_page(
    request: Request,
    con: ConsoleDep,
    auth: Reader,
    q: Annotated[str, Query(max_length=64)] = "",
    kind: str = "",
    source: Annotated[str, Query(max_length=100)] = "",
    page: Annotated[int, Query(ge=0, le=100000)] = 0,
    msg: Annotated[str, Query(max_length=300)] = "",
    error: Annotated[str, Query(max_length=2000)] = "",
) -> Response:
    kind_ = kind if kind in ("allow", "block") else ""
    number, text = search_terms(con, q)
    entries = con.store.search_entries(
        number=number,
        text=text,
        kind=ListKind(kind_) if kind_ else None,
        source=source or None,
        offset=page * PAGE,
        limit=PAGE + 1,
    )
    return render(
        request,
        "lists.html",
        auth,
        {
            "entries": entries[:PAGE],
            "more": len(entries) > PAGE,
            "q": q,
            "kind": kind_,
            "source": source,
            "page": page,
            "msg": msg,
            "error": error,
            "now": _now(),
        },
    )


@pages.post("/lists/add")
def lists_add(
    con: ConsoleDep,
    auth: Writer,
    number: Annotated[str, Form(max_length=64)] = "",
    kind: Annotated[str, Form(max_length=10)] = "",
    prefix: Annotated[bool, Form()] = False,
    label: Annotated[str, Form(max_length=200)] = "",
    note: Annotated[str, Form(max_length=1000)] = "",
    expires: Annotated[str, Form(max_length=40)] = "",
) -> Response:
    now = _now()
    try:
        list_kind = _kind(kind)
        if list_kind is None:
            raise InputError("choose a list: allow or block")
        entry = make_entry(
            con,
            number=number,
            kind=list_kind,
            prefix=prefix,
            label=label,
            note=note,
            expires=expires,
            source=auth.source,
            now=now,
        )
    except InputError as exc:
        return _back(error=str(exc))
    stored, _ = con.store.put_entry(entry, auth.user.name, now)
    return _back(message=stored.describe(), q=stored.number)


@pages.post("/lists/edit")
def lists_edit(
    con: ConsoleDep,
    auth: Writer,
    number: Annotated[str, Form(max_length=64)] = "",
    prefix: Annotated[bool, Form()] = False,
    label: Annotated[str, Form(max_length=200)] = "",
    note: Annotated[str, Form(max_length=1000)] = "",
    expires: Annotated[str, Form(max_length=40)] = "",
) -> Response:
    now = _now()
    try:
        key = _key(con, number, prefix)
        stored = con.store.edit_entry(
            key,
            prefix,
            label=_limited(label, "label", 200),
            note=_limited(note, "note", 1000),
            expires_at=_expiry(expires, now),
            user=auth.user.name,
            now=now,
        )
        if stored is None:
            raise InputError(f"{key} is on no list")
    except InputError as exc:
        return _back(error=str(exc))
    return _back(message=stored.describe(), q=stored.number)


@pages.post("/lists/remove")
def lists_remove(
    con: ConsoleDep,
    auth: Writer,
    number: Annotated[str, Form(max_length=64)] = "",
    prefix: Annotated[bool, Form()] = False,
) -> Response:
    try:
        key = _key(con, number, prefix)
        gone = con.store.remove_entry(key, prefix, auth.user.name, _now())
        if gone is None:
            raise InputError(f"{key} is on no list")
    except InputError as exc:
        return _back(error=str(exc))
    return _back(message=gone.describe())


@pages.post("/lists/import")
async def lists_import(
    con: ConsoleDep,
    auth: AdminWriter,
    file: UploadFile,
    kind: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    """All or nothing, as `screener list import`: one bad row and nothing changes."""
    try:
        default_kind = _kind(kind)
        data = await file.read(MAX_IMPORT_BYTES + 1)
        if len(data) > MAX_IMPORT_BYTES:
            raise InputError(f"file too large (at most {MAX_IMPORT_BYTES // 1024 // 1024} MB)")
        name = file.filename or "upload.csv"
        parsed = read_csv(
            io.BytesIO(data),
            region=con.region,
            default_kind=default_kind,
            source=f"import:{name}",
            now=_now(),
        )
        if parsed.rejects:
            lines = [f"line {r.line}: {r.reason}" for r in parsed.rejects[:20]]
            more = len(parsed.rejects) - 20
            if more > 0:
                lines.append(f"... and {more} more")
            raise InputError(
                f"{len(parsed.rejects)} of {parsed.rows} rows rejected; nothing imported\n"
                + "\n".join(lines)
            )
    except InputError as exc:
        return _back(error=str(exc))
    from starlette.concurrency import run_in_threadpool

    added, replaced = await run_in_threadpool(
        con.store.import_entries, parsed.entries, auth.user.name, name, _now()
    )
    return _back(message=f"imported {len(parsed.entries)} ({added} new, {replaced} replaced)")


@pages.get("/lists/export")
def lists_export(con: ConsoleDep, auth: AdminReader, kind: str = "") -> Response:
    list_kind = ListKind(kind) if kind in ("allow", "block") else None
    con.store.audit_export(auth.user.name, kind or "all", _now())

    def body() -> io.StringIO:
        out = io.StringIO()
        write_csv(con.store.export_entries(list_kind), out, bom=True)
        out.seek(0)
        return out

    return StreamingResponse(
        iter([body().getvalue()]),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="screener-lists.csv"'},
    )


# --- API ---------------------------------------------------------------------------------------


@api.get("", response_model=list[EntryOut])
def api_entries(
    con: ConsoleDep,
    auth: Reader,
    q: Annotated[str, Query(max_length=64)] = "",
    kind: ListKind | None = None,
    source: Annotated[str | None, Query(max_length=100)] = None,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[EntryOut]:
    """Entries whose number starts with ``q`` or whose label or note holds it."""
    number, text = search_terms(con, q)
    found = con.store.search_entries(
        number=number, text=text, kind=kind, source=source, offset=offset, limit=limit
    )
    return [EntryOut.of(e) for e in found]


@api.post("", response_model=EntryChange, responses=_ERRORS)
def api_add(con: ConsoleDep, auth: Writer, body: EntryIn) -> EntryChange:
    """Add (or replace) an entry; its source is ``web:<user>``."""
    now = _now()
    try:
        entry = make_entry(
            con,
            number=body.number,
            kind=body.kind,
            prefix=body.prefix,
            label=body.label,
            note=body.note,
            expires=body.expires,
            source=auth.source,
            now=now,
        )
    except InputError as exc:
        raise HTTPException(400, str(exc)) from exc
    stored, previous = con.store.put_entry(entry, auth.user.name, now)
    return EntryChange(
        entry=EntryOut.of(stored), replaced=EntryOut.of(previous) if previous else None
    )


@api.patch("", response_model=EntryOut, responses={**_ERRORS, 404: {"model": Problem}})
def api_edit(con: ConsoleDep, auth: Writer, body: EntryEdit) -> EntryOut:
    """Change an entry's label, note and expiry."""
    now = _now()
    try:
        key = _key(con, body.number, body.prefix)
        stored = con.store.edit_entry(
            key,
            body.prefix,
            label=_limited(body.label, "label", 200),
            note=_limited(body.note, "note", 1000),
            expires_at=_expiry(body.expires, now),
            user=auth.user.name,
            now=now,
        )
    except InputError as exc:
        raise HTTPException(400, str(exc)) from exc
    if stored is None:
        raise HTTPException(404, f"{key} is on no list")
    return EntryOut.of(stored)


@api.delete("", response_model=Removed, responses={**_ERRORS, 404: {"model": Problem}})
def api_remove(
    con: ConsoleDep,
    auth: Writer,
    number: Annotated[str, Query(max_length=64)],
    prefix: bool = False,
) -> Removed:
    """Remove the entry for the number (or the prefix rule)."""
    try:
        key = _key(con, number, prefix)
    except InputError as exc:
        raise HTTPException(400, str(exc)) from exc
    gone = con.store.remove_entry(key, prefix, auth.user.name, _now())
    if gone is None:
        raise HTTPException(404, f"{key} is on no list")
    return Removed(removed=EntryOut.of(gone))
