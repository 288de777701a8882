"""The staff phones' tables (migration 6): each endpoint's last outside caller and its
feature-code changes (entries before and after, as JSON), their reads, and the contract of
a feature code's decision (:class:`FeatureRule`)."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from screener.policy import Entry, ListKind
from screener.store.base import StoreBase
from screener.store.common import from_ts, to_opt_ts, to_ts


@dataclass(frozen=True, slots=True)
class LastCaller:
    """The last outside caller that rang one staff endpoint (a call the screener saw)."""

    endpoint: str
    call_id: str
    e164: str | None  # None: withheld or no usable number
    raw_number: str
    category: str
    at: dt.datetime


@dataclass(frozen=True, slots=True)
class StaffChange:
    """One feature-code change a staff endpoint made: the exact entry before and after."""

    id: int
    endpoint: str
    at: dt.datetime
    code: str
    number: str
    before: Entry | None
    after: Entry | None
    undone_at: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class FeaturePlan:
    """What a feature code does, as :mod:`screener.featurecodes` decides it.

    ``result`` is what the staff phone is told (``blocked``, ``withheld``...). When ``apply``
    is set, the exact entry for ``number`` becomes ``after`` (None: removed); ``before`` is the
    entry it replaces, kept for undo. ``undo_of`` names the change this one takes back (that
    change is then marked undone instead of a new one being recorded).
    """

    result: str
    number: str | None = None
    apply: bool = False
    before: Entry | None = None
    after: Entry | None = None
    undo_of: int | None = None


class FeatureRule(Protocol):
    """A feature code's pure decision, run inside its own transaction (see StaffFeature)."""

    def target(self, last: LastCaller | None, undo: StaffChange | None) -> str | None:
        """The number whose exact entry the code reads and may change, if any."""

    def plan(
        self, last: LastCaller | None, undo: StaffChange | None, existing: Entry | None
    ) -> FeaturePlan:
        """What to do, given the endpoint's last caller, its last change and the entry."""


# Staff choices that put the caller's number on a list from now on (announce keys 3 and 4, *0).
STAFF_SOURCE_PREFIX = "staff:"


def entry_json(entry: Entry | None) -> str | None:
    """An entry as the JSON text ``staff_changes`` keeps (None stays None)."""
    if entry is None:
        return None
    return json.dumps(
        {
            "kind": str(entry.kind),
            "number": entry.number,
            "prefix": entry.prefix,
            "label": entry.label,
            "source": entry.source,
            "created_at": to_ts(entry.created_at),
            "expires_at": to_opt_ts(entry.expires_at),
            "note": entry.note,
            "hits": entry.hits,
            "last_seen": to_opt_ts(entry.last_seen),
        },
        ensure_ascii=False,
    )


def entry_from_json(text: str | None) -> Entry | None:
    """The entry :func:`entry_json` wrote (its id is not kept: rows may come and go)."""
    if text is None:
        return None
    d = json.loads(text)
    created = from_ts(d["created_at"])
    assert created is not None
    return Entry(
        kind=ListKind(d["kind"]),
        number=d["number"],
        prefix=bool(d["prefix"]),
        label=d["label"],
        source=d["source"],
        created_at=created,
        expires_at=from_ts(d["expires_at"]),
        note=d["note"],
        hits=int(d["hits"]),
        last_seen=from_ts(d["last_seen"]),
    )


_LAST_CALLER_COLUMNS = "endpoint, call_id, e164, raw_number, category, at"
_STAFF_CHANGE_COLUMNS = "id, endpoint, at, code, number, before, after, undone_at"


def _last_caller_from_row(row: Sequence[Any]) -> LastCaller:
    at = from_ts(row[5])
    assert at is not None
    return LastCaller(row[0], row[1], row[2], row[3], row[4], at)


def _staff_change_from_row(row: Sequence[Any]) -> StaffChange:
    at = from_ts(row[2])
    assert at is not None
    return StaffChange(
        id=row[0],
        endpoint=row[1],
        at=at,
        code=row[3],
        number=row[4],
        before=entry_from_json(row[5]),
        after=entry_from_json(row[6]),
        undone_at=from_ts(row[7]),
    )


def _last_caller(db: sqlite3.Connection, endpoint: str) -> LastCaller | None:
    row = db.execute(
        f"SELECT {_LAST_CALLER_COLUMNS} FROM staff_last_caller WHERE endpoint = ?",  # noqa: S608
        (endpoint,),
    ).fetchone()
    return None if row is None else _last_caller_from_row(row)


def _last_change(db: sqlite3.Connection, endpoint: str) -> StaffChange | None:
    # The newest change this endpoint has not taken back: *34 walks back one at a time.
    row = db.execute(
        f"SELECT {_STAFF_CHANGE_COLUMNS} FROM staff_changes"  # noqa: S608
        " WHERE endpoint = ? AND undone_at IS NULL ORDER BY id DESC LIMIT 1",
        (endpoint,),
    ).fetchone()
    return None if row is None else _staff_change_from_row(row)


class StaffStore(StoreBase):
    """The staff phones' reads, part of :class:`~screener.store.Store`."""

    async def last_callers(self) -> list[LastCaller]:
        """Each staff endpoint's last outside caller, by endpoint."""
        rows = await self._fetchall(
            "staff last callers",
            f"SELECT {_LAST_CALLER_COLUMNS} FROM staff_last_caller ORDER BY endpoint",  # noqa: S608
        )
        return [_last_caller_from_row(row) for row in rows]

    async def staff_changes(self, endpoint: str | None = None) -> list[StaffChange]:
        """Feature-code changes, oldest first (one endpoint's, or all)."""
        where, params = ("WHERE endpoint = ?", [endpoint]) if endpoint is not None else ("", [])
        rows = await self._fetchall(
            "staff changes",
            f"SELECT {_STAFF_CHANGE_COLUMNS} FROM staff_changes {where} ORDER BY id",  # noqa: S608
            params,
        )
        return [_staff_change_from_row(row) for row in rows]
