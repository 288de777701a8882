"""Two sites, two SQLite stores, one real PostgreSQL (tests/pgserver.py): the shared list."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from screener.errors import SharedError
from screener.policy import SOURCE_LEARNED, ListKind
from screener.shared import engine, local, schema
from screener.shared.engine import Sync, init_central, status
from screener.store import Store
from tests.pgserver import PGServer, bin_dir
from tests.sharedsites import (
    NOW,
    allow,
    block,
    call_record,
    central_entries,
    eventually,
    fresh_central,
    lists,
    running,
    shared_config,
    site,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bin_dir() is None, reason="PostgreSQL not installed (scripts/bootstrap)"),
]

# ---- the central schema ----------------------------------------------------------------------


async def test_init_creates_the_schema_from_empty_and_again_is_a_no_op(pg_shared: PGServer) -> None:
    """shared init on an empty database applies every migration; run again, none."""
    dsn = pg_shared.create_database("t_init_empty")
    config = shared_config(pg_shared, dsn, "admin")
    assert await init_central(config) == (schema.SCHEMA_VERSION, [1, 2, 3])
    assert await init_central(config) == (schema.SCHEMA_VERSION, [])
    with pg_shared.connect("t_init_empty") as conn:
        tables = {
            r[0]
            for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
    assert {"entries", "applied", "sites", "calls", "screener_schema"} <= tables


async def test_init_migrates_from_the_previous_version(pg_shared: PGServer) -> None:
    """A central store at schema 1 (with data) is migrated to the current one, data kept."""
    import psycopg

    dsn = pg_shared.create_database("t_init_prev")
    config = shared_config(pg_shared, dsn, "admin")
    async with await psycopg.AsyncConnection.connect(dsn, password=pg_shared.password) as conn:
        assert await schema.migrate(conn, upto=1) == [1]
        await conn.execute(
            "INSERT INTO entries (kind, number, prefix, source, created_at, seq, site)"
            " VALUES ('block', '+81312345678', false, 'manual', 0, nextval('change_seq'), 'a')"
        )
        await conn.commit()
    with pytest.raises(SharedError, match="run `screener shared init`"):
        async with site(Path(os.environ.get("TMPDIR", "/tmp")), f"prev-{uuid.uuid4().hex}") as s:
            await Sync(config, s).once()
    assert await init_central(config) == (schema.SCHEMA_VERSION, [2, 3])
    assert central_entries(pg_shared, dsn) == {("+81312345678", False): ("block", "manual")}


async def test_a_newer_central_schema_is_refused(pg_shared: PGServer, tmp_path: Path) -> None:
    """A central schema newer than this screener stops the sync with a clear error."""
    dsn = await fresh_central(pg_shared)
    with pg_shared.connect(dsn.rsplit("=", 1)[1]) as conn:
        conn.execute("UPDATE screener_schema SET version = version + 1")
    config = shared_config(pg_shared, dsn, "a")
    async with site(tmp_path, "a") as a:
        with pytest.raises(SharedError, match="newer than this screener"):
            await Sync(config, a).once()
    with pytest.raises(SharedError, match="newer than this screener"):
        await init_central(config)


# ---- two sites -------------------------------------------------------------------------------


async def test_a_block_at_one_site_reaches_the_other(pg_shared: PGServer, tmp_path: Path) -> None:
    """A block added at A is at B after a sync at each; B's lookup finds it."""
    dsn = await fresh_central(pg_shared)
    async with site(tmp_path, "a") as a, site(tmp_path, "b") as b:
        sa, sb = (
            Sync(shared_config(pg_shared, dsn, "a"), a),
            Sync(shared_config(pg_shared, dsn, "b"), b),
        )
        await sa.once()
        await sb.once()
        await a.add(block("+81312345678", label="営業電話"))
        pushed = await sa.once()
        assert pushed.pushed == 1
        pulled = await sb.once()
        assert pulled.pulled == 1
        found = await b.lookup("+81312345678")
        assert [(e.kind, e.label) for e in found] == [(ListKind.BLOCK, "営業電話")]
        # Applying B's copy did not echo it back as a change of B's.
        assert (await b.run("state", local.state)).outbox == 0
        await a.remove("+81312345678", False)
        await sa.once()
        await sb.once()
        assert await b.lookup("+81312345678") == []


async def test_live_changes_reach_the_other_site_both_ways(
    pg_shared: PGServer, tmp_path: Path
) -> None:
    """With both engines running: a block at A shows at B, a learned allow at B shows at A."""
    dsn = await fresh_central(pg_shared)
    async with site(tmp_path, "a") as a, site(tmp_path, "b") as b:
        sa = Sync(shared_config(pg_shared, dsn, "a", pull_interval=3600), a)
        sb = Sync(shared_config(pg_shared, dsn, "b", pull_interval=3600), b)
        async with running(sa), running(sb):
            await a.add(block("+81312345678"))
            await eventually(lambda: b.lookup("+81312345678"))
            verified = allow(
                "+81398765432", source=SOURCE_LEARNED, expires_at=NOW + dt.timedelta(days=90)
            )
            assert await b.learn(verified, NOW)
            await eventually(lambda: a.lookup("+81398765432"))
            assert [e.source for e in await a.lookup("+81398765432")] == [SOURCE_LEARNED]
        assert await lists(a) == await lists(b) == central_entries(pg_shared, dsn)


async def test_an_existing_local_list_is_shared_when_the_site_joins(
    pg_shared: PGServer, tmp_path: Path
) -> None:
    """A site with a list of its own before it joined keeps it, and the others get it."""
    dsn = await fresh_central(pg_shared)
    async with site(tmp_path, "a") as a, site(tmp_path, "b") as b:
        await a.add(block("+81311112222"))
        await b.add(allow("+81333334444"))
        await Sync(shared_config(pg_shared, dsn, "a"), a).once()
        await Sync(shared_config(pg_shared, dsn, "b"), b).once()
        await Sync(shared_config(pg_shared, dsn, "a"), a).once()
        want = {
            ("+81311112222", False): ("block", "manual"),
            ("+81333334444", False): ("allow", "manual"),
        }
        assert await lists(a) == await lists(b) == want


async def test_call_records_are_shipped_with_the_site(pg_shared: PGServer, tmp_path: Path) -> None:
    """Call records reach the central calls table, once each, with their site and outcome."""
    dsn = await fresh_central(pg_shared)
    async with site(tmp_path, "a") as a:
        sync = Sync(shared_config(pg_shared, dsn, "a", call_batch=2), a)
        await sync.join()
        for n in range(5):
            await a.record_call(call_record(f"c{n}"))
        assert (await sync.once()).calls == 5
        await a.set_outcome("c3", "pass", NOW)
        assert (await sync.once()).calls == 1
        assert (await sync.once()).calls == 0
    with pg_shared.connect(dsn.rsplit("=", 1)[1]) as conn:
        rows = conn.execute("SELECT site, call_id, outcome FROM calls ORDER BY call_id").fetchall()
    assert rows == [("a", f"c{n}", "pass" if n == 3 else None) for n in range(5)]


# ---- PostgreSQL down, killed, partitioned ------------------------------------------------------


async def test_both_sites_keep_working_while_postgres_is_down(
    pg_own: PGServer, tmp_path: Path
) -> None:
    """PG stopped: lookups and edits go on; every change made meanwhile is everywhere after."""
    dsn = await fresh_central(pg_own)
    async with site(tmp_path, "a") as a, site(tmp_path, "b") as b:
        sa = Sync(shared_config(pg_own, dsn, "a", pull_interval=0.5), a)
        sb = Sync(shared_config(pg_own, dsn, "b", pull_interval=0.5), b)
        await a.add(block("+81311110000"))
        async with running(sa), running(sb):
            await eventually(lambda: b.lookup("+81311110000"))
            pg_own.stop()
            await eventually(lambda: a.run("s", local.state))  # the store still answers
            await a.add(block("+81322220000"))
            await b.add(allow("+81333330000"))
            await b.remove("+81311110000", False)
            assert [e.kind for e in await a.lookup("+81322220000")] == [ListKind.BLOCK]
            assert await b.lookup("+81311110000") == []
            await eventually(lambda: _has_error(b))
            assert (await a.run("s", local.state)).outbox == 1
            assert (await b.run("s", local.state)).outbox == 2
            pg_own.start()
            want = {
                ("+81322220000", False): ("block", "manual"),
                ("+81333330000", False): ("allow", "manual"),
            }

            async def converged() -> bool:
                return await lists(a) == await lists(b) == want

            await eventually(converged, within=60)
        assert central_entries(pg_own, dsn) == want
        for store in (a, b):
            state = await store.run("s", local.state)
            assert state.outbox == 0 and state.last_error is None


async def _has_error(store: Store) -> bool:
    return (await store.run("s", local.state)).last_error is not None


async def test_the_same_number_changed_at_both_sites_during_a_partition_converges(
    pg_own: PGServer, tmp_path: Path
) -> None:
    """Partition: A blocks by hand, B learns an allow; after it, both hold A's manual block.

    And between equals (both manual), the change that reaches the central store later wins.
    """
    dsn = await fresh_central(pg_own)
    async with site(tmp_path, "a") as a, site(tmp_path, "b") as b:
        sa, sb = Sync(shared_config(pg_own, dsn, "a"), a), Sync(shared_config(pg_own, dsn, "b"), b)
        await sa.once()
        await sb.once()
        pg_own.stop()
        await a.add(block("+81312345678", label="by hand"))
        assert await b.learn(allow("+81312345678", source=SOURCE_LEARNED), NOW)
        await a.add(block("+81399990000", label="a says block"))
        await b.add(allow("+81399990000", label="b says allow"))
        for sync in (sa, sb):
            with pytest.raises(SharedError):
                await sync.once()
        pg_own.start()
        # B heals first: its learned allow reaches the centre first, and loses anyway.
        await sb.once()
        await sa.once()
        await sb.once()
        for store in (a, b):
            [entry] = await store.lookup("+81312345678")
            assert (entry.kind, entry.source, entry.label) == (ListKind.BLOCK, "manual", "by hand")
            [other] = await store.lookup("+81399990000")
            assert (other.kind, other.label) == (ListKind.BLOCK, "a says block")  # A came later
        assert await lists(a) == await lists(b) == central_entries(pg_own, dsn)


async def test_postgres_killed_mid_sync_leaves_no_half_applied_batch(
    pg_own: PGServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PG killed (immediate shutdown) while B pulls many batches: B's list is exactly the
    central list up to the sequence B says it applied; after PG returns, B catches up."""
    monkeypatch.setattr(engine, "PULL_BATCH", 200)
    monkeypatch.setattr(engine, "PUSH_BATCH", 200)
    dsn = await fresh_central(pg_own)
    async with site(tmp_path, "a") as a, site(tmp_path, "b") as b:
        sa, sb = Sync(shared_config(pg_own, dsn, "a"), a), Sync(shared_config(pg_own, dsn, "b"), b)
        await sb.once()  # B's snapshot (empty): from here on B pulls incrementally
        await sa.join()
        await a.import_entries([block(f"+8131{n:07d}") for n in range(6000)])
        await sa.once()
        pulling = asyncio.create_task(sb.once())
        await eventually(lambda: _applied_some(b))
        pg_own.stop(signal.SIGQUIT)
        with pytest.raises(SharedError):
            await pulling
        state = await b.run("s", local.state)
        pg_own.start()
        dbname = dsn.rsplit("=", 1)[1]
        with pg_own.connect(dbname) as conn:
            upto = conn.execute(
                "SELECT number, prefix, kind, source FROM entries WHERE seq <= %s AND NOT deleted",
                (state.last_seq,),
            ).fetchall()
        assert await lists(b) == {(r[0], r[1]): (r[2], r[3]) for r in upto}
        await sb.once()
        assert await lists(b) == await lists(a)
        assert len(await lists(b)) == 6000


async def _applied_some(store: Store) -> bool:
    return (await store.run("s", local.state)).last_seq > 0


async def test_a_replayed_push_is_not_applied_twice(pg_shared: PGServer, tmp_path: Path) -> None:
    """An outbox batch whose acknowledgement was lost is sent again and skipped centrally."""
    dsn = await fresh_central(pg_shared)
    async with site(tmp_path, "a") as a:
        sync = Sync(shared_config(pg_shared, dsn, "a"), a)
        await sync.join()
        await a.add(block("+81312345678"))
        batch = await a.run("o", lambda db: local.outbox(db, 10))
        from screener.shared import central

        async with central.connect(sync.config) as conn:
            first = await central.push(conn, "a", [c for _, c in batch])
            again = await central.push(conn, "a", [c for _, c in batch])  # the ack was lost
        assert first is not None and again is None
        await sync.once()
    with pg_shared.connect(dsn.rsplit("=", 1)[1]) as conn:
        assert conn.execute("SELECT count(*), max(seq) FROM entries").fetchone() == (1, first)


# ---- the secret ------------------------------------------------------------------------------


def _screener(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "screener", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_the_password_is_never_in_the_output_the_log_or_ps(
    pg_shared: PGServer, tmp_path: Path
) -> None:
    """The password (from SCREENER_SHARED_PASSWORD, or inside SCREENER_SHARED_DSN) shows in no
    output, log line, error or process listing of screener sync and sync status."""
    dsn = await fresh_central(pg_shared)
    db = tmp_path / "a.db"
    async with site(tmp_path, "a"):
        pass
    base = {k: v for k, v in os.environ.items() if not k.startswith("SCREENER_")}
    env = {
        **base,
        "SCREENER_DB": str(db),
        "SCREENER_SITE": "tokyo",
        "SCREENER_SHARED_DSN": dsn + " sslmode=disable",
    }
    right = {**env, "SCREENER_SHARED_PASSWORD": pg_shared.password}
    wrong_pw = "Wr0ng-" + pg_shared.password[::-1]
    wrong = {**env, "SCREENER_SHARED_PASSWORD": wrong_pw}
    dbname = dsn.rsplit("=", 1)[1]
    url = f"postgresql://screener:{pg_shared.password}@127.0.0.1:{pg_shared.port}/{dbname}?sslmode=disable"
    in_url = {**base, "SCREENER_DB": str(db), "SCREENER_SITE": "tokyo", "SCREENER_SHARED_DSN": url}
    outputs = []
    for args, environment, code in (
        (("sync",), right, 0),
        (("sync", "status", "--json"), right, 0),
        (("sync",), in_url, 0),
        (("sync",), wrong, 8),
        (("sync", "status"), wrong, 0),
    ):
        proc = _screener(*args, env=environment)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == code, (args, out, err)
        outputs.append(out + err)
    text = "\n".join(outputs)
    assert "password authentication failed" in text  # the wrong password was reported
    assert pg_shared.password not in text and wrong_pw not in text

    # ps: a sync waiting on a server that never answers shows no password on its command line.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        accepted: list[socket.socket] = []
        thread = threading.Thread(target=lambda: accepted.append(silent.accept()[0]), daemon=True)
        thread.start()
        stuck = _screener(
            "sync",
            env={
                **right,
                "SCREENER_SHARED_DSN": f"host=127.0.0.1 port={port} user=screener dbname=x",
            },
        )
        thread.join(30)
        listing = subprocess.run(  # noqa: ASYNC221  # a moment's ps, in a test
            ["ps", "-eo", "pid,args"], capture_output=True, text=True
        ).stdout
        cmdline = Path(f"/proc/{stuck.pid}/cmdline").read_bytes().decode()
        stuck.kill()
        stuck.communicate(timeout=30)
        for conn in accepted:
            conn.close()
    assert "sync" in cmdline
    assert pg_shared.password not in cmdline and pg_shared.password not in listing


async def test_sync_status_reports_site_sequence_lag_outbox_and_error(
    pg_own: PGServer, tmp_path: Path
) -> None:
    """sync status: the site, last sequence, the lag behind the centre, the outbox, the error."""
    dsn = await fresh_central(pg_own)
    async with site(tmp_path, "a") as a, site(tmp_path, "b") as b:
        ca, cb = shared_config(pg_own, dsn, "a"), shared_config(pg_own, dsn, "b")
        await Sync(cb, b).once()
        await a.add(block("+81311112222"))
        await a.add(block("+81311113333"))
        await Sync(ca, a).once()
        report = await status(cb, b, probe=True)
        assert (report["site"], report["central"], report["lag_changes"]) == ("b", "reachable", 2)
        await b.add(allow("+81344445555"))
        pg_own.stop()
        with pytest.raises(SharedError):
            await Sync(cb, b).once()
        report = await status(cb, b, probe=True)
        assert report["outbox"] == 1
        assert report["central"].startswith("unreachable")
        assert "connect" in report["last_error"]
        assert dataclasses.replace(cb).password not in str(report)
