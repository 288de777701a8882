"""The JSON API's request and response shapes (Pydantic), and their conversions."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field

from screener.policy import Entry, ListKind
from screener.voicemail import Message
from screener.webstore import CallRow


class CallOut(BaseModel):
    rowid: int
    call_id: str
    received_at: dt.datetime
    number: str = Field(description="The caller number exactly as Asterisk sent it.")
    name: str = Field(description="The caller name exactly as Asterisk sent it.")
    e164: str | None
    category: str
    did: str | None
    route: str
    rule: str
    reasons: list[str]
    latency_ms: float
    outcome: str | None
    voicemail: str | None
    fallback: bool

    @classmethod
    def of(cls, row: CallRow) -> CallOut:
        c = row.call
        return cls(
            rowid=row.rowid,
            call_id=c.call_id,
            received_at=c.received_at,
            number=c.raw_number,
            name=c.raw_name,
            e164=c.e164,
            category=c.category,
            did=c.did,
            route=c.route,
            rule=c.rule,
            reasons=list(c.reasons),
            latency_ms=c.latency_ms,
            outcome=c.outcome,
            voicemail=c.voicemail,
            fallback=c.fallback,
        )


class CallPage(BaseModel):
    calls: list[CallOut]
    next_before: int | None = Field(description="Pass as `before` for the next (older) page.")


class EntryOut(BaseModel):
    number: str
    kind: ListKind
    prefix: bool
    label: str
    source: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    note: str
    hits: int
    last_seen: dt.datetime | None

    @classmethod
    def of(cls, e: Entry) -> EntryOut:
        return cls(
            number=e.number,
            kind=e.kind,
            prefix=e.prefix,
            label=e.label,
            source=e.source,
            created_at=e.created_at,
            expires_at=e.expires_at,
            note=e.note,
            hits=e.hits,
            last_seen=e.last_seen,
        )


class EntryIn(BaseModel):
    number: str = Field(
        max_length=64, description="A number (any format) or, with prefix, a prefix."
    )
    kind: ListKind
    prefix: bool = False
    label: str = Field(default="", max_length=200)
    note: str = Field(default="", max_length=1000)
    expires: str | None = Field(default=None, max_length=40, description="30d, 12h, or ISO time.")


class EntryEdit(BaseModel):
    number: str = Field(max_length=64)
    prefix: bool = False
    label: str = Field(default="", max_length=200)
    note: str = Field(default="", max_length=1000)
    expires: str | None = Field(default=None, max_length=40)


class EntryChange(BaseModel):
    entry: EntryOut
    replaced: EntryOut | None = None


class Removed(BaseModel):
    removed: EntryOut


class CheckOut(BaseModel):
    input: str
    e164: str | None
    category: str
    route: str
    rule: str
    reasons: list[str]
    entry: EntryOut | None


class VoicemailOut(BaseModel):
    id: str
    folder: str
    caller_name: str
    caller_number: str
    received_at: dt.datetime | None
    duration: int
    heard: bool

    @classmethod
    def of(cls, m: Message, heard: set[str]) -> VoicemailOut:
        return cls(
            id=m.id,
            folder=m.folder,
            caller_name=m.caller_name,
            caller_number=m.caller_number,
            received_at=m.received_at,
            duration=m.duration,
            heard=m.id in heard,
        )


class DayOut(BaseModel):
    date: dt.date
    calls: dict[str, int] = Field(description="Calls that day by route.")


class DashboardOut(BaseModel):
    today: dict[str, int]
    week: dict[str, int]
    days: list[DayOut]
    challenged: int
    passed: int
    last_call: dt.datetime | None
    agent: str = Field(
        description="connected, disconnected (from Asterisk), stale (no fresh report: stopped"
        " without saying so) or not_running (no report); see screener.agentstatus"
    )
    agent_reported_at: dt.datetime | None


class Problem(BaseModel):
    detail: str
