"""The local list only moves forward: a pull or a snapshot never replaces, even for a moment, a
local change not yet pushed, unless the conflict rule says the central row wins; and PostgreSQL
killed mid-snapshot leaves the local list as it was. Real PostgreSQL (tests/pgserver.py)."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path

import pytest

from screener.errors import SharedError
from screener.policy import SOURCE_LEARNED, ListKind
from screener.shared import central, engine, local
from screener.shared.engine import Sync
from screener.store import Store
from tests.pgserver import PGServer, bin_dir
from tests.sharedsites import NOW, allow, block, eventually, lists, site, two_sites

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bin_dir() is None, reason="PostgreSQL not installed (scripts/bootstrap)"),
]

X = "+81312345678"
ROWS = 200_000


async def shown(store: Store) -> tuple[str, str, str] | None:
    found = await store.lookup(X)
    return (found[0].kind.value, found[0].source, found[0].label) if found else None


async def pull_only(sync: Sync) -> int:
    """A pull with nothing pushed first (what a NOTIFY wakes while the outbox still waits)."""
    async with central.connect(sync.config) as conn:
        return await sync.pull(conn)


async def test_a_pulled_change_does_not_replace_an_unpushed_equal_one(
    pg_shared: PGServer, tmp_path: Path
) -> None:
    """B's manual allow waits in its outbox; A's manual block of the same number is pulled by B:
    B keeps showing its own (it reaches the centre later, so it wins), and after B's push both
    sites hold B's allow."""
    async with two_sites(pg_shared, tmp_path) as s:
        a, b, sa, sb = s.a, s.b, s.sa, s.sb
        await sa.once()
        await sb.once()
        await b.add(allow(X, label="b, by hand"))
        await a.add(block(X, label="a, by hand"))
        await sa.once()
        assert await pull_only(sb) == 1
        assert await shown(b) == ("allow", "manual", "b, by hand")
        assert (await b.run("s", local.state)).outbox == 1
        await sb.once()
        await sa.once()
        assert await shown(a) == await shown(b) == ("allow", "manual", "b, by hand")


async def test_a_change_pulled_after_the_local_one_was_made_does_not_replace_it(
    pg_shared: PGServer, tmp_path: Path
) -> None:
    """The other order: B pulled A's block, then changed the number by hand (not pushed); a
    later central row for that number (A's learned allow, which lost, sent out again) is pulled:
    B still shows its own change, and both sites converge on it."""
    async with two_sites(pg_shared, tmp_path) as s:
        a, b, sa, sb = s.a, s.b, s.sa, s.sb
        await a.add(block(X, label="a, by hand"))
        await sa.once()
        await sb.once()
        assert await shown(b) == ("block", "manual", "a, by hand")
        await b.add(allow(X, label="b, by hand"))  # made after the pull
        # A forgets its block and learns an allow: the removal is manual and wins, the learned
        # allow after it lands on a tombstone and wins too: two central rows for X, pulled by B.
        await a.remove(X, False)
        assert await a.learn(allow(X, source=SOURCE_LEARNED, label="a learned"), NOW)
        await sa.once()
        assert await pull_only(sb) >= 1
        assert await shown(b) == ("allow", "manual", "b, by hand")
        await sb.once()
        await sa.once()
        assert await shown(a) == await shown(b) == ("allow", "manual", "b, by hand")


async def test_the_rule_still_decides_a_pending_learned_change_against_a_pulled_manual_one(
    pg_shared: PGServer, tmp_path: Path
) -> None:
    """Unless the rule says otherwise: B's unpushed learned allow gives way at once to A's
    manual block when B pulls it; B's unpushed manual block is kept against A's learned allow."""
    y = "+81398765432"
    async with two_sites(pg_shared, tmp_path) as s:
        a, b, sa, sb = s.a, s.b, s.sa, s.sb
        await sa.once()
        await sb.once()
        assert await b.learn(allow(X, source=SOURCE_LEARNED), NOW)
        await b.add(block(y, label="b, by hand"))
        await a.add(block(X, label="a, by hand"))
        assert await a.learn(allow(y, source=SOURCE_LEARNED), NOW)
        await sa.once()
        assert await pull_only(sb) == 2
        assert await shown(b) == ("block", "manual", "a, by hand")
        [kept] = await b.lookup(y)
        assert (kept.kind, kept.source) == (ListKind.BLOCK, "manual")
        await sb.once()
        await sa.once()
        assert await lists(a) == await lists(b)
        assert (await lists(a))[(y, False)] == ("block", "manual")
        assert (await lists(a))[(X, False)] == ("block", "manual")


async def test_a_snapshot_keeps_an_unpushed_local_change(
    pg_shared: PGServer, tmp_path: Path
) -> None:
    """A snapshot taken while B's change waits in the outbox lays that change over the snapshot;
    a number only B has (not pushed yet) is kept too, and hits of the entries that stay too."""
    y = "+81398765432"
    async with two_sites(pg_shared, tmp_path) as s:
        a, b, sa, sb = s.a, s.b, s.sa, s.sb
        await a.add(block(X, label="a, by hand"))
        await a.add(block("+81311110000"))
        await sa.once()
        await sb.once()
        [hit] = await b.lookup("+81311110000")
        await b.record_hit(hit.id, NOW)
        await b.add(allow(X, label="b, by hand"))
        await b.add(block(y))
        async with central.connect(sb.config) as conn:
            assert await sb.snapshot(conn) == 2
        assert await shown(b) == ("allow", "manual", "b, by hand")
        assert [e.kind for e in await b.lookup(y)] == [ListKind.BLOCK]
        [again] = await b.lookup("+81311110000")
        assert (again.id, again.hits) == (hit.id, 1)
        await sb.once()
        await sa.once()
        assert await lists(a) == await lists(b)
        assert await shown(a) == ("allow", "manual", "b, by hand")


async def test_a_prefix_rule_that_comes_by_snapshot_is_found_by_the_lookup(
    pg_shared: PGServer, tmp_path: Path
) -> None:
    """A prefix rule B first learns from a snapshot covers B's next lookup: the snapshot's rows
    go in with no trigger of entries' firing, so the swap must tell the lookup's prefix_heads
    (migration 9) about them itself."""
    async with two_sites(pg_shared, tmp_path) as s:
        a, b, sa, sb = s.a, s.b, s.sa, s.sb
        await a.add(block("+8150", prefix=True, label="a range"))
        await sa.once()
        async with central.connect(sb.config) as conn:
            assert await sb.snapshot(conn) == 1
        assert [(e.number, e.prefix) for e in await b.lookup("+815012345678")] == [("+8150", True)]


async def test_postgres_killed_mid_snapshot_leaves_the_local_list_as_it_was(
    pg_own: PGServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PG killed (immediate shutdown) after part of a snapshot was written: B's list, ids and
    sync state are exactly what they were, the half-built table is gone; the next sync takes
    the whole snapshot. (The snapshot's process is held at its next chunk by a write lock on
    B's database, so PG dies while it is surely in the middle.)"""
    monkeypatch.setattr(engine, "SNAPSHOT_FETCH", 100)
    monkeypatch.setattr(engine, "SNAPSHOT_CHUNK", 300)
    monkeypatch.setattr(engine, "SNAPSHOT_INLINE", 0)  # the snapshot's own process
    async with two_sites(pg_own, tmp_path) as s:
        a, b, sa, sb, dsn = s.a, s.b, s.sa, s.sb, s.dsn
        await b.add(block("+81399990000", label="b's own"))
        await sb.once()
        # Many rows, made in the central store itself: far more chunks than the snapshot's
        # process can write before the test holds it.
        with pg_own.connect(dsn.rsplit("=", 1)[1]) as conn:
            conn.execute(
                "INSERT INTO entries (kind, number, prefix, source, created_at, seq, site)"
                " SELECT 'block', '+8131' || lpad(g::text, 7, '0'), false, 'manual', 0,"
                " nextval('change_seq'), 'a' FROM generate_series(1, %s) AS g",
                (ROWS,),
            )
        before = [(e.id, e.number, e.kind, e.label) for e in await b.entries()]
        state = await b.run("s", local.state)
        await b.run("s", lambda db: db.execute("UPDATE sync_state SET snapshot_at = NULL"))
        watcher = sqlite3.connect(tmp_path / "b.db", isolation_level=None)

        def staged() -> int:
            tables = local.snapshot_tables(watcher)
            if not tables:  # not created yet
                return 0
            count = f"SELECT count(*) FROM {local.snapshot_table(tables[0])}"  # noqa: S608  # checked
            return int(watcher.execute(count).fetchone()[0])

        syncing = asyncio.create_task(sb.once())
        await eventually(lambda: staged() >= 300)
        watcher.execute("BEGIN IMMEDIATE")  # the next chunk waits for this lock
        pg_own.stop(signal.SIGQUIT)
        watcher.execute("ROLLBACK")
        watcher.close()
        with pytest.raises(SharedError, match="snapshot"):
            await syncing
        assert [(e.id, e.number, e.kind, e.label) for e in await b.entries()] == before
        after = await b.run("s", local.state)
        assert (after.last_seq, after.snapshot_at) == (state.last_seq, None)
        assert await b.run("t", local.snapshot_tables) == []
        pg_own.start()
        assert (await sb.once()).snapshot == ROWS + 1
        await sa.once()
        assert await lists(b) == await lists(a)
        assert len(await lists(b)) == ROWS + 1
        # The swapped-in table fired no trigger: the kept list sizes were counted by the swap.
        assert await b.check_list_counts() == (ROWS + 1, True)


async def test_an_entry_added_while_a_snapshot_is_built_keeps_the_swap_whole(
    tmp_path: Path,
) -> None:
    """An entry made here while the snapshot table is being written (its change in the outbox)
    can hold an id that a snapshot row holds too: the swap still succeeds, with that change
    laid over the snapshot and every snapshot row present."""
    async with site(tmp_path, "b") as b:
        await b.run_in_transaction("join", lambda db: local.join(db, "b"))
        table = await b.run("begin", local.snapshot_begin)  # the list is empty: ids from 1
        rows = [
            ("block", number, 0, "", "manual", 0.0, None, "")
            for number in ("+81311110001", "+81311110002")
        ]
        await b.run_in_transaction("stage", lambda db: local.snapshot_stage(db, table, rows))
        await b.add(allow("+81311110002", label="made meanwhile"))  # id 1 in the old list
        await b.run_in_transaction("swap", lambda db: local.snapshot_apply(db, table, 7))
        got = {e.number: (e.kind, e.label) for e in await b.entries()}
        assert got == {
            "+81311110001": (ListKind.BLOCK, ""),
            "+81311110002": (ListKind.ALLOW, "made meanwhile"),
        }
        assert (await b.run("s", local.state)).last_seq == 7


async def test_no_id_names_another_number_after_a_swap(tmp_path: Path) -> None:
    """Ids handed out while a snapshot was built (entries made here meanwhile) are never held
    by another number after the swap: a list hit queued for such an id cannot land on another
    entry."""
    async with site(tmp_path, "b") as b:
        await b.run_in_transaction("join", lambda db: local.join(db, "b"))
        await b.add(block("+81311110000"))  # id 1: the list the build begins from
        table = await b.run("begin", local.snapshot_begin)
        rows = [("block", f"+8131111{n:04d}", 0, "", "manual", 0.0, None, "") for n in range(0, 6)]
        await b.run_in_transaction("stage", lambda db: local.snapshot_stage(db, table, rows))
        for number in ("+81322220001", "+81322220002", "+81322220003"):
            await b.add(allow(number))  # ids 2, 3, 4, which snapshot rows hold too
        before = {e.id: e.number for e in await b.entries()}
        await b.run_in_transaction("swap", lambda db: local.snapshot_apply(db, table, 9))
        after = {e.id: e.number for e in await b.entries()}
        assert len(after) == 6 + 3
        for entry_id, number in after.items():
            assert entry_id > 4 or before.get(entry_id) == number, (entry_id, number)
        new, _ = await b.add(block("+81333330000"))
        assert new.id is not None and new.id > max(after)
