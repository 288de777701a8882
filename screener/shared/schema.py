"""The central schema in PostgreSQL and its ordered migrations (``screener shared init``).

Its own list, apart from the local store's: each migration is applied in one transaction with
the bump of ``screener_schema.version``, under an advisory lock so that two sites running
``init`` at once apply each migration once. Never edit a released migration: append.

- ``entries``: one row per (number, prefix), the latest change to it, with ``seq`` from the one
  sequence ``change_seq``: ``WHERE seq > n ORDER BY seq`` is every change after ``n`` (the
  change log, compacted to the latest per key). A removal stays as a tombstone (``deleted``).
- ``applied``: the idempotency key of every site change already applied, so a replay after a
  lost acknowledgement is never applied twice.
- ``sites``: each site, when it was last seen and the last sequence it applied.
- ``calls``: the call records of every site, keyed by (site, call_id).
- ``retention``: how far tombstones have been pruned (``[shared] retention_days``); call
  records older than ``call_retention_days`` and idempotency keys older than
  ``retention_days`` are pruned with them.
"""

from __future__ import annotations

from typing import Any

import structlog

log = structlog.get_logger(__name__)

# The channel that every change is announced on (payload: "<site> <seq>").
CHANNEL = "screener_entries"
# pg_advisory_xact_lock keys: one for migrations, one that orders every write to entries (so
# that sequence numbers become visible in order: a puller never skips one).
MIGRATE_LOCK = 0x5343_0001
WRITE_LOCK = 0x5343_0002

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE SEQUENCE change_seq AS bigint",
        """
        CREATE TABLE entries (
            number text NOT NULL,
            prefix boolean NOT NULL,
            kind text NOT NULL CHECK (kind IN ('allow', 'block')),
            label text NOT NULL DEFAULT '',
            source text NOT NULL,
            created_at double precision NOT NULL,
            expires_at double precision,
            note text NOT NULL DEFAULT '',
            deleted boolean NOT NULL DEFAULT false,
            seq bigint NOT NULL,
            site text NOT NULL,
            changed_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (number, prefix)
        )
        """,
        "CREATE UNIQUE INDEX entries_seq ON entries (seq)",
        """
        CREATE TABLE applied (
            key text PRIMARY KEY,
            site text NOT NULL,
            at timestamptz NOT NULL DEFAULT now()
        )
        """,
        """
        CREATE TABLE sites (
            site text PRIMARY KEY,
            first_seen timestamptz NOT NULL DEFAULT now(),
            last_seen timestamptz NOT NULL DEFAULT now(),
            last_seq bigint NOT NULL DEFAULT 0
        )
        """,
    ),
    (
        """
        CREATE TABLE calls (
            site text NOT NULL,
            call_id text NOT NULL,
            received_at double precision NOT NULL,
            raw_number text NOT NULL,
            raw_name text NOT NULL,
            e164 text,
            category text NOT NULL,
            did text,
            route text NOT NULL,
            rule text NOT NULL,
            reasons text NOT NULL,
            latency_ms double precision NOT NULL,
            outcome text,
            outcome_at double precision,
            voicemail text,
            fallback boolean NOT NULL DEFAULT false,
            PRIMARY KEY (site, call_id)
        )
        """,
        "CREATE INDEX calls_received_at ON calls (received_at)",
        "CREATE INDEX calls_e164 ON calls (e164, received_at)",
    ),
    # 3: bounded retention (``central.prune``). ``tombstones_upto`` is the highest sequence of
    # a tombstone pruned so far: a site that has not applied everything up to it may have
    # missed a removal, and takes a snapshot instead of pulling.
    (
        """
        CREATE TABLE retention (
            id integer PRIMARY KEY CHECK (id = 1),
            tombstones_upto bigint NOT NULL DEFAULT 0,
            pruned_at timestamptz
        )
        """,
        "INSERT INTO retention (id) VALUES (1)",
        "CREATE INDEX entries_tombstones ON entries (changed_at) WHERE deleted",
        "CREATE INDEX applied_at ON applied (at)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


async def current_version(conn: Any) -> int:
    """The central schema's version: 0 for an empty database."""
    cur = await conn.execute("SELECT to_regclass('screener_schema') IS NOT NULL")
    row = await cur.fetchone()
    if not row or not row[0]:
        return 0
    cur = await conn.execute("SELECT version FROM screener_schema")
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def migrate(conn: Any, *, upto: int = SCHEMA_VERSION) -> list[int]:
    """Apply the migrations after the current version, up to ``upto``; returns those applied.

    ``conn`` is a psycopg ``AsyncConnection`` (autocommit off).
    """
    applied: list[int] = []
    for target in range(1, upto + 1):
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS screener_schema (version integer NOT NULL)"
            )
            cur = await conn.execute("SELECT version FROM screener_schema FOR UPDATE")
            row = await cur.fetchone()
            if row is None:
                await conn.execute("INSERT INTO screener_schema (version) VALUES (0)")
                version = 0
            else:
                version = int(row[0])
            if version >= target:
                continue
            for statement in MIGRATIONS[target - 1]:
                await conn.execute(statement)
            await conn.execute("UPDATE screener_schema SET version = %s", (target,))
        applied.append(target)
        log.info("shared.migrate", schema=target)
    return applied
