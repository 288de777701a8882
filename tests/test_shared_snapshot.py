"""A snapshot's table is its own: two snapshots of one database at once each swap in whole, a
crashed one's table is dropped by the next, and a snapshot built on the engine's thread stops
when it is cancelled. Real PostgreSQL (tests/pgserver.py)."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import threading
from pathlib import Path

import pytest

from screener.shared import central, engine, local
from screener.shared.engine import Sync
from screener.store import Store
from tests.pgserver import PGServer, bin_dir
from tests.sharedsites import block, eventually, lists, shared_config, two_sites

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bin_dir() is None, reason="PostgreSQL not installed (scripts/bootstrap)"),
]

ROWS = 30_000


def _fill(server: PGServer, dsn: str, rows: int) -> None:
    """``rows`` live entries made in the central store itself."""
    with server.connect(dsn.rsplit("=", 1)[1]) as conn:
        conn.execute(
            "INSERT INTO entries (kind, number, prefix, source, created_at, seq, site)"
            " SELECT 'block', '+8131' || lpad(g::text, 7, '0'), false, 'manual', 0,"
            " nextval('change_seq'), 'a' FROM generate_series(1, %s) AS g",
            (rows,),
        )


async def test_two_snapshots_of_one_database_at_once_each_swap_in_whole(
    pg_shared: PGServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two engines on one site's database take a snapshot at the same time (the service's and
    a `screener sync`, say): each builds its own table, neither fails, and the list is the
    central one, whole, with no snapshot table left."""
    monkeypatch.setattr(engine, "SNAPSHOT_FETCH", 500)
    monkeypatch.setattr(engine, "SNAPSHOT_CHUNK", 1000)
    async with two_sites(pg_shared, tmp_path) as s:
        _fill(pg_shared, s.dsn, ROWS)
        async with Store.open(tmp_path / "b.db") as other:
            second = Sync(shared_config(pg_shared, s.dsn, "b"), other)
            await s.sb.join()
            async with central.connect(s.sb.config) as c1, central.connect(second.config) as c2:
                counts = await asyncio.gather(s.sb.snapshot(c1), second.snapshot(c2))
        assert counts == [ROWS, ROWS]
        assert len(await lists(s.b)) == ROWS
        assert await s.b.run("t", local.snapshot_tables) == []


async def test_a_crashed_snapshots_table_is_dropped_and_a_live_ones_kept(
    tmp_path: Path,
) -> None:
    """The next snapshot drops the table of one whose process died (and the one fixed name of
    before); another live process's table under way is left alone."""
    dead = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import os; print(os.getpid())", stdout=asyncio.subprocess.PIPE
    )
    dead_pid = int((await dead.communicate())[0])
    live = await asyncio.create_subprocess_exec(sys.executable, "-c", "import time; time.sleep(60)")
    kept = f"sync_snapshot_{live.pid}_89abcdef"
    try:
        async with Store.open(tmp_path / "b.db") as b:
            for name in (f"sync_snapshot_{dead_pid}_0123abcd", kept, "sync_snapshot_entries"):
                await b.run("t", lambda db, n=name: db.execute(f"CREATE TABLE {n} (id)"))
            table = await b.run("begin", local.snapshot_begin)
            assert sorted(await b.run("t", local.snapshot_tables)) == sorted([table, kept])
            await b.run("end", lambda db: local.snapshot_end(db, table))
            assert await b.run("t", local.snapshot_tables) == [kept]
    finally:
        live.kill()
        await live.wait()


async def test_a_cancelled_snapshot_on_the_engines_thread_stops_writing(
    pg_shared: PGServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small list's snapshot is built on a thread of the engine's process; cancelled while it
    writes, the thread stops before the cancel returns, the half-built table is gone and the
    list and sync state are as they were."""
    monkeypatch.setattr(engine, "SNAPSHOT_FETCH", 100)
    monkeypatch.setattr(engine, "SNAPSHOT_CHUNK", 100)
    async with two_sites(pg_shared, tmp_path) as s:
        await s.b.add(block("+81399990000"))
        await s.sb.once()
        before = await lists(s.b)
        state = await s.b.run("s", local.state)
        _fill(pg_shared, s.dsn, ROWS)
        watcher = sqlite3.connect(tmp_path / "b.db", isolation_level=None)

        def staged() -> int:
            tables = local.snapshot_tables(watcher)
            if not tables:
                return 0
            count = f"SELECT count(*) FROM {local.snapshot_table(tables[0])}"  # noqa: S608  # checked
            return int(watcher.execute(count).fetchone()[0])

        async with central.connect(s.sb.config) as conn:
            task = asyncio.create_task(s.sb.snapshot(conn))
            await eventually(lambda: staged() >= 200)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # Nothing of the snapshot runs on once the cancel returned.
            assert not [t for t in threading.enumerate() if t.name == "snapshot-writer"]
            assert local.snapshot_tables(watcher) == []
        watcher.close()
        assert await lists(s.b) == before
        assert (await s.b.run("s", local.state)).last_seq == state.last_seq
        assert (await s.sb.once()).snapshot is None  # the list is not due one: it pulls
        assert len(await lists(s.b)) == ROWS + 1
