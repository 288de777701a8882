"""The store's two possible engines side by side: our own thread vs aiosqlite's public API.

``Store`` runs the standard ``sqlite3`` module on one thread of its own
(``screener.dbthread``). The alternative was aiosqlite through its public surface only. Both
are timed here in one run, on the same file, interleaved round by round (so that drift of a
shared machine hits both alike), and compared by medians:

- ``lookup``: the store's one statement for a caller (every prefix of the number), rows turned
  into entries, for ``count`` distinct callers one at a time;
- ``commit_1`` / ``commit_20``: one group-commit transaction of 1 or 20 call records each with
  a list hit (BEGIN IMMEDIATE, executemany, executemany, COMMIT), on a copy of the call log.

With aiosqlite's public API every statement is one trip to its thread, so a transaction costs
four; with our thread a transaction is one function, one trip.
"""

from __future__ import annotations

import datetime as dt
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiosqlite

from bench.dataset import callers
from screener.numbers import normalize
from screener.policy import Entry, ListKind
from screener.store import (
    ENTRY_COLUMNS,
    CallRecord,
    RecordCall,
    RecordHit,
    Store,
    entry_from_row,
)
from screener.store.entries import _prefixes
from screener.store.writes import _RECORD_CALL, _RECORD_HIT, _call_params

NOW = dt.datetime(2026, 11, 25, 1, 30, tzinfo=dt.UTC)
ROUNDS = 5


def _lookup_sql(e164: str) -> tuple[str, list[str]]:
    candidates = _prefixes(e164)
    marks = ", ".join("?" * len(candidates))
    return f"SELECT {ENTRY_COLUMNS} FROM entries WHERE number IN ({marks})", candidates


def _record(n: int) -> CallRecord:
    return CallRecord(
        call_id=f"bench.{n}",
        received_at=NOW,
        raw_number="09012345678",
        raw_name="",
        e164="+819012345678",
        category="mobile",
        did=None,
        route="staff",
        rule="category",
        reasons=("caller +819012345678: mobile",),
        latency_ms=0.1,
    )


async def _timed(items: list[Any], fn: Callable[[Any], Awaitable[Any]]) -> list[float]:
    out = []
    clock = time.perf_counter
    for item in items:
        start = clock()
        await fn(item)
        out.append((clock() - start) * 1e6)
    return out


async def _ours_lookup(store: Store, e164s: list[str]) -> list[float]:
    return await _timed(e164s, store.lookup)


async def _theirs_lookup(db: aiosqlite.Connection, e164s: list[str]) -> list[float]:
    async def lookup(e164: str) -> list[Any]:
        sql, candidates = _lookup_sql(e164)
        rows = await db.execute_fetchall(sql, candidates)
        return [entry_from_row(r) for r in rows if r[3] == 1 or r[2] == e164]

    return await _timed(e164s, lookup)


async def _ours_commit(store: Store, batches: list[list[CallRecord]], entry_id: int) -> list[float]:
    async def commit(batch: list[CallRecord]) -> None:
        writes: list[RecordCall | RecordHit] = []
        for rec in batch:
            writes += [RecordCall(rec), RecordHit(entry_id, NOW)]
        await store.apply(writes)

    return await _timed(batches, commit)


async def _theirs_commit(
    db: aiosqlite.Connection, batches: list[list[CallRecord]], entry_id: int
) -> list[float]:
    async def commit(batch: list[CallRecord]) -> None:
        await db.execute("BEGIN IMMEDIATE")
        try:
            await db.executemany(_RECORD_CALL, [_call_params(r) for r in batch])
            await db.executemany(_RECORD_HIT, [(NOW.timestamp(), entry_id) for _ in batch])
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise

    return await _timed(batches, commit)


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median_us": statistics.median(ordered),
        "p99_us": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        "n": len(ordered),
    }


async def run(path: Path, size: int, count: int) -> dict[str, Any]:
    """Both engines, ``ROUNDS`` interleaved rounds, on the database at ``path``."""
    e164s = [c.e164 for c in (normalize(r, "JP") for r in callers(size, count)) if c.e164]
    times: dict[str, list[float]] = {
        f"{engine}_{part}": []
        for engine in ("ours", "aiosqlite")
        for part in ("lookup", "commit_1", "commit_20")
    }
    with tempfile.TemporaryDirectory(prefix="screener-storecmp-") as tmp:
        # Writes go to a small copy: the big file stays as cached, and both engines write alike.
        small = Path(tmp) / "writes.db"
        async with Store.open(small) as store:
            entry, _ = await store.add(Entry(kind=ListKind.BLOCK, number="+819012345678"))
        assert entry.id is not None
        entry_id = entry.id
        n = 0

        def batches(size: int, how_many: int) -> list[list[CallRecord]]:
            nonlocal n
            out = []
            for _ in range(how_many):
                out.append([_record(n + i) for i in range(size)])
                n += size
            return out

        uri = f"{path.absolute().as_uri()}?mode=ro"  # noqa: ASYNC240  # setup, not timed
        async with (
            Store.open(path, readonly=True) as ours_read,
            Store.open(small) as ours_write,
            aiosqlite.connect(uri, uri=True, isolation_level=None) as theirs_read,
            aiosqlite.connect(small, isolation_level=None, timeout=5) as theirs_write,
        ):
            await theirs_write.execute("PRAGMA synchronous = NORMAL")
            for e164 in e164s[:2000]:  # warm both connections' caches and the OS's
                await ours_read.lookup(e164)
                sql, candidates = _lookup_sql(e164)
                await theirs_read.execute_fetchall(sql, candidates)
            for _ in range(ROUNDS):
                times["ours_lookup"] += await _ours_lookup(ours_read, e164s)
                times["aiosqlite_lookup"] += await _theirs_lookup(theirs_read, e164s)
                for part, width, how_many in (("commit_1", 1, 200), ("commit_20", 20, 50)):
                    times[f"ours_{part}"] += await _ours_commit(
                        ours_write, batches(width, how_many), entry_id
                    )
                    times[f"aiosqlite_{part}"] += await _theirs_commit(
                        theirs_write, batches(width, how_many), entry_id
                    )
    result: dict[str, Any] = {"entries": size, "callers": len(e164s), "rounds": ROUNDS}
    for key, values in times.items():
        result[key] = _summary(values)
    for part in ("lookup", "commit_1", "commit_20"):
        ours = result[f"ours_{part}"]["median_us"]
        theirs = result[f"aiosqlite_{part}"]["median_us"]
        result[f"{part}_winner"] = "ours" if ours <= theirs else "aiosqlite"
        result[f"{part}_ratio"] = theirs / ours if ours else float("nan")
    return result


__all__ = ["run"]
