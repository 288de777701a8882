"""Bounded retention of the central store: old tombstones, idempotency keys and call records
are pruned, and a site offline for longer takes a snapshot rather than miss a removal. Real
PostgreSQL (tests/pgserver.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from screener.shared import central
from screener.shared.engine import Sync
from tests.pgserver import PGServer, bin_dir
from tests.sharedsites import (
    block,
    call_record,
    fresh_central,
    lists,
    shared_config,
    site,
    two_sites,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bin_dir() is None, reason="PostgreSQL not installed (scripts/bootstrap)"),
]


def _age(server: PGServer, dsn: str, days: int) -> None:
    """Make every central change, key and call record ``days`` older (as if time passed)."""
    with server.connect(dsn.rsplit("=", 1)[1]) as conn:
        conn.execute(
            "UPDATE entries SET changed_at = changed_at - make_interval(days => %s)", (days,)
        )
        conn.execute("UPDATE applied SET at = at - make_interval(days => %s)", (days,))
        conn.execute("UPDATE calls SET received_at = received_at - %s", (days * 86400,))


def _count(server: PGServer, dsn: str, sql: str) -> int:
    with server.connect(dsn.rsplit("=", 1)[1]) as conn:
        row = conn.execute(sql).fetchone()
    return int(row[0]) if row else 0


async def test_a_site_offline_longer_than_the_retention_takes_a_snapshot(
    pg_shared: PGServer, tmp_path: Path
) -> None:
    """B holds X; A removes X; B stays away while the tombstone ages past retention_days and is
    pruned. B's next sync takes a snapshot (a pull would never see the removal) and drops X;
    A, which had applied everything, just pulls."""
    async with two_sites(pg_shared, tmp_path, retention_days=30) as s:
        a, b, sa, sb, dsn = s.a, s.b, s.sa, s.sb, s.dsn
        await a.add(block("+81312345678"))
        await a.add(block("+81311112222"))
        await sa.once()
        await sb.once()
        assert ("+81312345678", False) in await lists(b)
        await a.remove("+81312345678", False)
        await sa.once()
        _age(pg_shared, dsn, 31)
        async with central.connect(sa.config) as conn:
            pruned = await sa.prune(conn)
        assert pruned.tombstones == 1
        assert _count(pg_shared, dsn, "SELECT count(*) FROM entries WHERE deleted") == 0
        assert (await sb.once()).snapshot == 1
        assert await lists(b) == await lists(a) == {("+81311112222", False): ("block", "manual")}
        again = await sa.once()
        assert again.snapshot is None
        assert (await sb.once()).snapshot is None  # now up to date: pulls again


async def test_a_tombstone_younger_than_the_retention_is_kept(
    pg_shared: PGServer, tmp_path: Path
) -> None:
    """Pruning keeps what is within retention_days: a late site still pulls the removal."""
    async with two_sites(pg_shared, tmp_path, retention_days=30) as s:
        a, b, sa, sb, dsn = s.a, s.b, s.sa, s.sb, s.dsn
        await a.add(block("+81312345678"))
        await sa.once()
        await sb.once()
        await a.remove("+81312345678", False)
        await sa.once()
        _age(pg_shared, dsn, 29)
        async with central.connect(sa.config) as conn:
            assert (await sa.prune(conn)).tombstones == 0
        result = await sb.once()
        assert (result.snapshot, result.pulled) == (None, 1)
        assert await lists(b) == {}


async def test_old_call_records_and_idempotency_keys_are_pruned(
    pg_shared: PGServer, tmp_path: Path
) -> None:
    """Central call records older than call_retention_days go, newer ones stay; applied keys
    older than retention_days go. The first round of an engine prunes."""
    dsn = await fresh_central(pg_shared)
    async with site(tmp_path, "a") as a:
        config = shared_config(pg_shared, dsn, "a", retention_days=30, call_retention_days=90)
        sync = Sync(config, a)
        await sync.join()
        await a.add(block("+81312345678"))
        for n in range(3):
            await a.record_call(call_record(f"c{n}"))
        await sync.once()
        _age(pg_shared, dsn, 100)
        await a.record_call(call_record("recent"))
        fresh = Sync(config, a)  # a new engine: its first round prunes
        await fresh.once()
    with pg_shared.connect(dsn.rsplit("=", 1)[1]) as conn:
        calls = [r[0] for r in conn.execute("SELECT call_id FROM calls ORDER BY call_id")]
        keys = conn.execute("SELECT count(*) FROM applied").fetchone()
    # NOW-based records: the aged ones are 100 days older than NOW (and than the clock).
    assert "recent" in calls and not {"c0", "c1", "c2"} & set(calls)
    assert keys == (0,)
