"""Voicemail: list, play in the browser (HTTP range requests, so seeking works), mark heard
(staff), delete (admin)."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import RedirectResponse
from starlette.responses import Response, StreamingResponse

from screener.voicemail import Mailbox, Message, RangeError, parse_range
from screener.web.core import AdminWriter, Console, ConsoleDep, Reader, Writer, render
from screener.web.models import VoicemailOut

pages = APIRouter(include_in_schema=False)
api = APIRouter(prefix="/api", tags=["voicemail"])
CHUNK = 64 * 1024


def _mailbox(con: Console) -> Mailbox:
    if con.mailbox is None:
        raise HTTPException(404, "no voicemail folder configured (SCREENER_VOICEMAIL_DIR)")
    return con.mailbox


def _message(con: Console, msg_id: str) -> Message:
    message = _mailbox(con).find(msg_id)
    if message is None:
        raise HTTPException(404, "no such message")
    return message


@pages.get("/voicemail")
def voicemail_page(request: Request, con: ConsoleDep, auth: Reader) -> Response:
    messages = con.mailbox.messages() if con.mailbox else []
    return render(
        request,
        "voicemail.html",
        auth,
        {"messages": messages, "heard": con.store.heard(), "configured": con.mailbox is not None},
    )


def _read(path: str, first: int, last: int) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        fh.seek(first)
        left = last - first + 1
        while left > 0:
            chunk = fh.read(min(CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk


@pages.get("/voicemail/{msg_id}/audio")
def voicemail_audio(request: Request, con: ConsoleDep, auth: Reader, msg_id: str) -> Response:
    message = _message(con, msg_id)
    try:
        size = os.stat(message.audio).st_size
    except OSError as exc:
        raise HTTPException(404, "message gone") from exc
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "no-store"}
    try:
        wanted = parse_range(request.headers.get("range"), size)
    except RangeError:
        return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"})
    first, last = wanted if wanted else (0, size - 1)
    headers["Content-Length"] = str(max(0, last - first + 1))
    status = 200
    if wanted:
        status = 206
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    return StreamingResponse(
        _read(str(message.audio), first, last),
        status_code=status,
        media_type="audio/wav",
        headers=headers,
    )


@pages.post("/voicemail/{msg_id}/heard")
def voicemail_heard(con: ConsoleDep, auth: Writer, msg_id: str) -> Response:
    message = _message(con, msg_id)
    con.store.mark_heard(message.id, auth.user.name, dt.datetime.now(dt.UTC))
    return RedirectResponse("/voicemail", status_code=303)


@pages.post("/voicemail/{msg_id}/delete")
def voicemail_delete(con: ConsoleDep, auth: AdminWriter, msg_id: str) -> Response:
    message = _message(con, msg_id)
    _mailbox(con).delete(message.id)
    con.store.audit_voicemail_delete(message.id, auth.user.name, dt.datetime.now(dt.UTC))
    return RedirectResponse("/voicemail", status_code=303)


@api.get("/voicemail", response_model=list[VoicemailOut])
def api_voicemail(con: ConsoleDep, auth: Reader) -> list[VoicemailOut]:
    """The voicemail messages, newest first (audio at /voicemail/{id}/audio)."""
    heard = con.store.heard()
    return [VoicemailOut.of(m, heard) for m in (con.mailbox.messages() if con.mailbox else [])]
