"""The call log: one :class:`CallRecord` per screened call, and its reads (recent calls,
recordings, staff choices, failed challenges)."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from screener.store.base import StoreBase
from screener.store.common import from_ts, to_ts

_CALL_COLUMNS = (
    "call_id, received_at, raw_number, raw_name, e164, category, did, route, rule, reasons,"
    " latency_ms, outcome, outcome_at, voicemail, fallback"
)

_FAILED_OUTCOMES = ("fail", "timeout")


@dataclass(frozen=True)
class CallRecord:
    """One screened call as the call log keeps it: the raw caller ID verbatim, and the decision."""

    call_id: str
    received_at: dt.datetime
    raw_number: str
    raw_name: str
    e164: str | None
    category: str
    did: str | None
    route: str
    rule: str
    reasons: tuple[str, ...]
    latency_ms: float
    outcome: str | None = None
    outcome_at: dt.datetime | None = None
    voicemail: str | None = None
    fallback: bool = False


def _call_from_row(row: Sequence[Any]) -> CallRecord:
    received = from_ts(row[1])
    assert received is not None  # NOT NULL column
    return CallRecord(
        call_id=row[0],
        received_at=received,
        raw_number=row[2],
        raw_name=row[3],
        e164=row[4],
        category=row[5],
        did=row[6],
        route=row[7],
        rule=row[8],
        reasons=tuple(json.loads(row[9])),
        latency_ms=row[10],
        outcome=row[11],
        outcome_at=from_ts(row[12]),
        voicemail=row[13],
        fallback=bool(row[14]),
    )


def _failures(db: sqlite3.Connection, e164: str, since: dt.datetime, other_than: str | None) -> int:
    row = db.execute(
        "SELECT count(*) FROM calls WHERE e164 = ? AND outcome IN (?, ?) AND received_at >= ?"
        " AND call_id IS NOT ?",
        (e164, *_FAILED_OUTCOMES, to_ts(since), other_than),
    ).fetchone()
    return int(row[0])


def _get_call(db: sqlite3.Connection, call_id: str) -> CallRecord | None:
    row = db.execute(
        f"SELECT {_CALL_COLUMNS} FROM calls WHERE call_id = ?",  # noqa: S608
        (call_id,),
    ).fetchone()
    return None if row is None else _call_from_row(row)


class CallLogStore(StoreBase):
    """The call log's reads, part of :class:`~screener.store.Store`."""

    async def recordings(
        self, call_ids: Sequence[str] | None = None, *, limit: int = 100
    ) -> dict[str, tuple[str, float | None]]:
        """Recorded calls: call id → (path, seconds), newest first; only ``call_ids`` if given."""
        if call_ids is not None:
            return await self._of_calls(
                "list recordings", "recording_path", "recording_seconds", call_ids
            )
        rows = await self._fetchall(
            "list recordings",
            "SELECT call_id, recording_path, recording_seconds FROM calls"
            " WHERE recording_path IS NOT NULL ORDER BY received_at DESC LIMIT ?",
            (limit,),
        )
        return {r[0]: (r[1], r[2]) for r in rows}

    async def staff_choices(self, call_ids: Sequence[str]) -> dict[str, tuple[str, str | None]]:
        """What a staff phone chose for these calls: call id → (choice, endpoint), if any."""
        return await self._of_calls(
            "list staff choices", "staff_choice", "staff_choice_by", call_ids
        )

    async def _of_calls(
        self, action: str, column: str, other: str, call_ids: Sequence[str]
    ) -> dict[str, tuple[Any, Any]]:
        """call id → (``column``, ``other``) for those of ``call_ids`` whose ``column`` is set,
        500 ids per statement (SQLite's limit on bound values is far above that)."""
        found: dict[str, tuple[Any, Any]] = {}
        for start in range(0, len(call_ids), 500):
            chunk = list(call_ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            rows = await self._fetchall(
                action,
                f"SELECT call_id, {column}, {other} FROM calls"  # noqa: S608  # fixed names only
                f" WHERE {column} IS NOT NULL AND call_id IN ({marks})",
                chunk,
            )
            found.update({r[0]: (r[1], r[2]) for r in rows})
        return found

    async def calls(
        self, *, since: dt.datetime | None = None, limit: int = 100
    ) -> list[CallRecord]:
        """The most recent calls (received at or after ``since``), newest first."""
        where, params = ("WHERE received_at >= ?", [to_ts(since)]) if since else ("", [])
        rows = await self._fetchall(
            "list calls",
            f"SELECT {_CALL_COLUMNS} FROM calls {where}"  # noqa: S608
            " ORDER BY received_at DESC, call_id DESC LIMIT ?",
            [*params, limit],
        )
        return [_call_from_row(row) for row in rows]

    async def get_call(self, call_id: str) -> CallRecord | None:
        """The log record of ``call_id``, if any."""
        rows = await self._fetchall(
            "get call",
            f"SELECT {_CALL_COLUMNS} FROM calls WHERE call_id = ?",  # noqa: S608
            (call_id,),
        )
        return _call_from_row(rows[0]) if rows else None

    async def recent_failures(self, e164: str, since: dt.datetime) -> int:
        """How many calls from ``e164`` received since ``since`` failed or timed out a challenge."""
        return await self._call("count failures", lambda db: _failures(db, e164, since, None))
