"""The central side of the sync: every statement the sites send to PostgreSQL (psycopg 3).

Every write to ``entries`` takes the one advisory lock ``WRITE_LOCK`` first, so that writes
are serialised: sequence numbers are taken and become visible in order, and a site that has
applied everything up to ``n`` never misses a change below ``n``. The writes are short (one
batch of a site's outbox), and a handful of sites share one list.

psycopg's and the socket's errors are turned into :class:`~screener.errors.SharedError` where
they enter; their text never holds the password (libpq does not quote it, and ``_clean`` takes
out anything that looks like one all the same).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
import structlog

from screener.config import SharedConfig, redact_dsn
from screener.errors import SharedError
from screener.shared import schema
from screener.shared.rules import Change, Key, Row, fold

log = structlog.get_logger(__name__)

# A pruned tombstone may have been the latest change: the list's sequence is never below it.
_TOP_SEQ = (
    "SELECT greatest(coalesce(max(seq), 0), (SELECT tombstones_upto FROM retention)) FROM entries"
)
_ROW = "kind, number, prefix, label, source, created_at, expires_at, note, deleted"


def _clean(text: str, config: SharedConfig) -> str:
    text = redact_dsn(text)
    if config.password:
        text = text.replace(config.password, "***")
    return re.sub(r"\s+", " ", text).strip()


def wrap(exc: BaseException, config: SharedConfig, action: str) -> SharedError:
    """A SharedError for ``exc`` that names the action and the server, never the password."""
    return SharedError(f"PostgreSQL {config.display}: {action}: {_clean(str(exc), config)}")


@asynccontextmanager
async def connect(
    config: SharedConfig, *, autocommit: bool = False, check_schema: bool = True
) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A connection to the central store (its schema checked); always closed."""
    try:
        conn = await psycopg.AsyncConnection.connect(
            config.dsn, autocommit=autocommit, **config.connect_kwargs()
        )
    except (psycopg.Error, OSError) as exc:
        raise wrap(exc, config, "connect") from exc
    try:
        if check_schema:
            try:
                version = await schema.current_version(conn)
                if not autocommit:
                    await conn.rollback()
            except psycopg.Error as exc:
                raise wrap(exc, config, "read the schema version") from exc
            if version < schema.SCHEMA_VERSION:
                raise SharedError(
                    f"PostgreSQL {config.display}: central schema {version} <"
                    f" {schema.SCHEMA_VERSION}; run `screener shared init`"
                )
            if version > schema.SCHEMA_VERSION:
                raise SharedError(
                    f"PostgreSQL {config.display}: central schema {version} is newer than this"
                    f" screener knows ({schema.SCHEMA_VERSION}); upgrade screener"
                )
        yield conn
    finally:
        await conn.close()


def _row(values: Sequence[Any]) -> Row:
    kind, number, prefix, label, source, created_at, expires_at, note, deleted = values
    return Row(kind, number, bool(prefix), label, source, created_at, expires_at, note, deleted)


async def push(
    conn: psycopg.AsyncConnection[Any], site: str, changes: Sequence[Change]
) -> int | None:
    """Apply a site's changes, in order, by the conflict rule, in one transaction.

    Changes whose idempotency key was applied before are skipped (a replay). Returns the
    highest sequence number given out, or None when every change was a replay.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (schema.WRITE_LOCK,))
        cur = await conn.execute(
            "INSERT INTO applied (key, site) SELECT k, %s FROM unnest(%s::text[]) AS k"
            " ON CONFLICT (key) DO NOTHING RETURNING key",
            (site, [c.key for c in changes]),
        )
        new = {r[0] for r in await cur.fetchall()}
        fresh = [c for c in changes if c.key in new]
        if not fresh:
            return None
        keys = list(dict.fromkeys(c.row.key for c in fresh))
        cur = await conn.execute(
            f"SELECT {_ROW}, site FROM entries WHERE (number, prefix) IN"  # noqa: S608  # fixed columns
            " (SELECT * FROM unnest(%s::text[], %s::boolean[]))",
            ([k[0] for k in keys], [k[1] for k in keys]),
        )
        current: dict[Key, Row] = {}
        made_by: dict[Key, str] = {}
        for r in await cur.fetchall():
            row = _row(r[:9])
            current[row.key] = row
            made_by[row.key] = r[9]
        touched = fold(current, fresh)
        rows = list(touched.values())
        # A row that lost keeps its maker; an accepted one is this site's.
        sites = [made_by[r.key] if current.get(r.key) is r else site for r in rows]
        cur = await conn.execute(
            "INSERT INTO entries (kind, number, prefix, label, source, created_at, expires_at,"
            " note, deleted, site, seq)"
            " SELECT u.*, nextval('change_seq') FROM unnest(%s::text[], %s::text[],"
            " %s::boolean[], %s::text[], %s::text[], %s::float8[], %s::float8[], %s::text[],"
            " %s::boolean[], %s::text[]) AS u"
            " ON CONFLICT (number, prefix) DO UPDATE SET kind = excluded.kind,"
            " label = excluded.label, source = excluded.source,"
            " created_at = excluded.created_at, expires_at = excluded.expires_at,"
            " note = excluded.note, deleted = excluded.deleted, site = excluded.site,"
            " seq = excluded.seq, changed_at = now()"
            " RETURNING seq",
            (
                [r.kind for r in rows],
                [r.number for r in rows],
                [r.prefix for r in rows],
                [r.label for r in rows],
                [r.source for r in rows],
                [r.created_at for r in rows],
                [r.expires_at for r in rows],
                [r.note for r in rows],
                [r.deleted for r in rows],
                sites,
            ),
        )
        top = max(r[0] for r in await cur.fetchall())
        await conn.execute("SELECT pg_notify(%s, %s)", (schema.CHANNEL, f"{site} {top}"))
        return int(top)


async def pull(
    conn: psycopg.AsyncConnection[Any], after: int, limit: int
) -> list[tuple[int, Row]] | None:
    """The central rows changed after sequence ``after``, oldest first, at most ``limit``.

    None when a tombstone after ``after`` has been pruned (:func:`prune`): the site may have
    missed a removal and must take a snapshot. The rows and the pruning horizon are read in one
    REPEATABLE READ transaction, so a prune in between cannot slip past.
    """
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        cur = await conn.execute("SELECT tombstones_upto FROM retention")
        horizon = await cur.fetchone()
        if horizon is not None and int(horizon[0]) > after:
            return None
        cur = await conn.execute(
            f"SELECT seq, {_ROW} FROM entries WHERE seq > %s ORDER BY seq LIMIT %s",  # noqa: S608  # fixed columns
            (after, limit),
        )
        return [(int(r[0]), _row(r[1:])) for r in await cur.fetchall()]


async def horizon(conn: psycopg.AsyncConnection[Any]) -> int:
    """The highest sequence of a pruned tombstone (0: none pruned)."""
    cur = await conn.execute("SELECT tombstones_upto FROM retention")
    row = await cur.fetchone()
    await conn.rollback()
    return int(row[0]) if row else 0


@dataclass(frozen=True)
class Pruned:
    """What one :func:`prune` removed."""

    tombstones: int
    keys: int
    calls: int
    horizon: int


async def prune(
    conn: psycopg.AsyncConnection[Any], retention_s: float, call_retention_s: float
) -> Pruned:
    """Remove tombstones and idempotency keys older than ``retention_s``, and call records
    older than ``call_retention_s``; raise the pruning horizon over the tombstones removed.

    The tombstones go under the write lock, with the horizon, in one transaction: a site that
    pulls sees either the tombstones or the horizon that tells it to take a snapshot.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (schema.WRITE_LOCK,))
        cur = await conn.execute(
            "WITH gone AS (DELETE FROM entries WHERE deleted"
            " AND changed_at < now() - make_interval(secs => %s) RETURNING seq)"
            " SELECT count(*), coalesce(max(seq), 0) FROM gone",
            (retention_s,),
        )
        row = await cur.fetchone()
        tombstones, top = (int(row[0]), int(row[1])) if row else (0, 0)
        cur = await conn.execute(
            "UPDATE retention SET tombstones_upto = greatest(tombstones_upto, %s),"
            " pruned_at = now() RETURNING tombstones_upto",
            (top,),
        )
        row = await cur.fetchone()
        upto = int(row[0]) if row else 0
        cur = await conn.execute(
            "DELETE FROM applied WHERE at < now() - make_interval(secs => %s)", (retention_s,)
        )
        keys = cur.rowcount
    async with conn.transaction():
        cur = await conn.execute(
            "DELETE FROM calls WHERE received_at < extract(epoch FROM now()) - %s",
            (call_retention_s,),
        )
        calls = cur.rowcount
    return Pruned(tombstones, keys, calls, upto)


async def top_seq(conn: psycopg.AsyncConnection[Any]) -> int:
    """The highest sequence number of a change still visible or pruned (0: an empty list)."""
    cur = await conn.execute(_TOP_SEQ)
    row = await cur.fetchone()
    await conn.rollback()
    return int(row[0]) if row else 0


_SNAPSHOT_SQL = (
    "SELECT kind, number, prefix::int, label, source, created_at, expires_at, note"
    " FROM entries WHERE NOT deleted"
)


def snapshot(conn: psycopg.Connection[Any], fetch: int) -> tuple[int, Iterator[list[Any]]]:
    """The live central entries as of one moment: (its sequence, batches of rows).

    Synchronous: the snapshot runs in a process of its own (screener/shared/snapshot.py). One
    REPEATABLE READ transaction, so the rows and the sequence agree however many sites write
    meanwhile (``conn`` must not be in a transaction yet, nor autocommit). Rows come in the
    local store's column order (kind, number, prefix as 0/1, label, source, created_at,
    expires_at, note).
    """
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    row = conn.execute(_TOP_SEQ).fetchone()
    seq = int(row[0]) if row else 0

    def batches() -> Iterator[list[Any]]:
        # Binary: about a third less of the snapshot process's time decoding (no text to parse).
        with conn.cursor(name="screener_snapshot", binary=True) as named:
            named.execute(_SNAPSHOT_SQL)
            while rows := named.fetchmany(fetch):
                yield rows

    return seq, batches()


async def ship_calls(
    conn: psycopg.AsyncConnection[Any],
    site: str,
    columns: Sequence[str],
    records: Sequence[tuple[Any, ...]],
) -> None:
    """Upsert a batch of this site's call records (one transaction)."""
    names = ", ".join(columns)
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != "call_id")
    placeholders = ", ".join(["%s"] * (len(columns) + 1))
    sql = (
        f"INSERT INTO calls (site, {names}) VALUES ({placeholders})"  # noqa: S608  # fixed columns
        f" ON CONFLICT (site, call_id) DO UPDATE SET {updates}"
    )
    fallback = columns.index("fallback")
    async with conn.transaction(), conn.cursor() as cur:
        await cur.executemany(
            sql,
            [(site, *r[:fallback], bool(r[fallback]), *r[fallback + 1 :]) for r in records],
        )


async def touch_site(conn: psycopg.AsyncConnection[Any], site: str, last_seq: int) -> None:
    """This site is alive and has applied everything up to ``last_seq``."""
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO sites (site, last_seq) VALUES (%s, %s) ON CONFLICT (site) DO UPDATE"
            " SET last_seen = now(), last_seq = excluded.last_seq",
            (site, last_seq),
        )


# The console's all-sites call log: a short wait, never the sync's connection, never on a call.
CALL_LOG_TIMEOUT_S = 2.0
_CALL_LOG_COLUMNS = (
    "site, call_id, received_at, raw_number, raw_name, e164, category, did, route, rule,"
    " reasons, latency_ms, outcome, outcome_at, voicemail, fallback"
)


def call_log(
    config: SharedConfig,
    filters: Sequence[tuple[str, Any]],
    after: tuple[float, str, str] | None,
    limit: int,
) -> list[tuple[Any, ...]]:
    """A page of every site's call records, newest first (synchronous: the console's thread).

    ``filters``: (column, value) pairs from a fixed set (site, route, outcome, e164) and
    (``received_at >=``/``<``) bounds, as ``"since"``/``"until"``; ``after``: the last row of
    the previous page (received_at, site, call_id). Connecting and the statement each wait at
    most ``CALL_LOG_TIMEOUT_S``; any failure is a SharedError (the console falls back).
    """
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in filters:
        if column == "since":
            clauses.append("received_at >= %s")
        elif column == "until":
            clauses.append("received_at < %s")
        elif column in ("site", "route", "outcome", "e164"):
            clauses.append(f"{column} = %s")
        else:
            raise ValueError(f"no such call log filter: {column}")
        params.append(value)
    if after is not None:
        clauses.append("(received_at, site, call_id) < (%s, %s, %s)")
        params += list(after)
    sql = f"SELECT {_CALL_LOG_COLUMNS} FROM calls"  # noqa: S608  # fixed columns and clauses
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    sql += " ORDER BY received_at DESC, site DESC, call_id DESC LIMIT %s"
    params.append(limit)
    kwargs = config.connect_kwargs()
    kwargs["connect_timeout"] = max(2, round(CALL_LOG_TIMEOUT_S))  # libpq's least is 2 s
    kwargs["options"] = f"-c statement_timeout={int(CALL_LOG_TIMEOUT_S * 1000)}"
    try:
        with psycopg.connect(config.dsn, **kwargs) as conn:
            return list(conn.execute(sql, params).fetchall())
    except (psycopg.Error, OSError) as exc:
        raise wrap(exc, config, "read the call log") from exc
