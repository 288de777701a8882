"""The sync engine: a site's local SQLite and the central PostgreSQL, kept in step.

One :class:`Sync` per site. ``once()`` (``screener sync``) does one full round; ``run(stop)``
(inside ``screener run``) keeps going until ``stop``:

1. push: the local outbox, oldest first, in batches, each batch one central transaction; the
   outbox rows are forgotten only after that transaction committed, and a replay of a batch
   whose acknowledgement was lost is skipped by its idempotency keys;
2. snapshot, when the local copy never had one, is older than ``snapshot_after_days``, or is
   ahead of the central store (a central database restored from an older backup);
3. pull: the central rows changed since the last sequence applied, in batches, each applied in
   one local transaction together with the sequence it reaches (all or nothing);
4. the call records not yet shipped, in batches; and this site's last-seen time.

Live: a second connection LISTENs on ``screener_entries``; a notification wakes a pull at once,
a local change (the outbox, looked at every ``push_interval``) wakes a push, and a full round
runs every ``pull_interval`` whatever happens. Central store unreachable: the error is kept in
``sync_state`` (``screener sync status``), and the engine tries again with a growing back-off;
the local list goes on answering calls, which never wait for any of this.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import psycopg
import structlog

from screener.config import SharedConfig
from screener.errors import SharedError, StoreError
from screener.shared import central, local, schema
from screener.shared.snapshot import build as snapshot_build
from screener.store import Store

log = structlog.get_logger("screener.sync")

PUSH_BATCH = 2000
PULL_BATCH = 5000
# Rows fetched per trip, and written per transaction, by the snapshot's process.
SNAPSHOT_FETCH = 10_000
SNAPSHOT_CHUNK = 50_000
# A central list of at most this many changes is snapshotted on a thread, not a process.
SNAPSHOT_INLINE = 100_000
CALLS_INTERVAL = 1.0
# How often a site prunes the central store by its retention (seconds; the first round does).
PRUNE_INTERVAL = 3600.0
BACKOFF_MIN, BACKOFF_MAX = 0.5, 30.0


# The snapshot's connections (its process's, and the sync's own for the swap, never the
# service's reader) get a page cache big enough to keep the key index of a 10 M-entry snapshot
# in memory while it is built and indexed (KiB), and the sync's gives it back afterwards.
SNAPSHOT_CACHE_KIB = 256 * 1024


def _import_pragmas(db: sqlite3.Connection) -> int:
    before = int(db.execute("PRAGMA cache_size").fetchone()[0])
    db.execute(f"PRAGMA cache_size = -{SNAPSHOT_CACHE_KIB}")
    return before


def _restore_pragmas(db: sqlite3.Connection, cache: int) -> None:
    db.execute(f"PRAGMA cache_size = {int(cache)}")
    db.execute("PRAGMA shrink_memory")


@dataclass
class Round:
    """What one round did."""

    pushed: int = 0
    pulled: int = 0
    snapshot: int | None = None  # rows in the snapshot, if one was taken
    calls: int = 0
    last_seq: int = 0


class Sync:
    """The sync of one site's store with the central store."""

    def __init__(self, config: SharedConfig, store: Store) -> None:
        self.config = config
        self.store = store
        self._wake = asyncio.Event()
        self._notified = False
        self._last_calls = 0.0
        self._last_prune = -PRUNE_INTERVAL  # the first full round prunes
        self.snapshots = 0  # taken by this engine (a fresh site, a stale or a late one)
        self.snapshot_rows = 0  # in the last one
        self.snapshot_spent: dict[str, float] = {}  # and where its time went (seconds)

    # --- one round -----------------------------------------------------------------------------

    async def join(self) -> None:
        """Join the shared list as this site (idempotent)."""
        if await self.store.run_in_transaction(
            "join the shared list", lambda db: local.join(db, self.config.site)
        ):
            log.info("sync.joined", site=self.config.site)

    async def once(self) -> Round:
        """Connect, do one full round, disconnect. Raises SharedError when unreachable."""
        await self.join()
        try:
            async with central.connect(self.config) as conn:
                result = await self.round(conn, calls=True)
        except SharedError as exc:
            await self._error(str(exc))
            raise
        except (psycopg.Error, OSError) as exc:
            error = central.wrap(exc, self.config, "sync")
            await self._error(str(error))
            raise error from exc
        await self.store.run("sync state", lambda db: local.record_error(db, None))
        return result

    async def round(self, conn: psycopg.AsyncConnection[Any], *, calls: bool) -> Round:
        """Push, snapshot if need be, pull, ship calls."""
        result = Round()
        result.pushed = await self.push(conn)
        state = await self.store.run("sync state", local.state)
        top = await central.top_seq(conn)
        snapshots = self.snapshots
        if self._needs_snapshot(state, top):
            await self.snapshot(conn)
        result.pulled = await self.pull(conn)  # may take one too: behind the pruning horizon
        if self.snapshots > snapshots:
            result.snapshot = self.snapshot_rows
        if calls:
            result.calls = await self.ship_calls(conn)
        if time.monotonic() - self._last_prune >= PRUNE_INTERVAL:
            await self.prune(conn)
        state = await self.store.run("sync state", local.state)
        result.last_seq = state.last_seq
        await central.touch_site(conn, self.config.site, state.last_seq)
        return result

    def _needs_snapshot(self, state: local.State, top: int) -> bool:
        if state.snapshot_at is None:
            return True
        if state.last_seq > top:
            return True  # the central store is behind us: restored from a backup, or new
        age = time.time() - (state.synced_at or 0.0)
        return age > self.config.snapshot_after_days * 86400

    async def push(self, conn: psycopg.AsyncConnection[Any]) -> int:
        """Send the whole outbox, batch by batch; returns how many changes were sent."""
        sent = 0
        while True:
            batch = await self.store.run(
                "read the sync outbox", lambda db: local.outbox(db, PUSH_BATCH)
            )
            if not batch:
                return sent
            top = await central.push(conn, self.config.site, [c for _, c in batch])
            last_id = batch[-1][0]
            await self.store.run_in_transaction(
                "clear the sync outbox", partial(local.done, last_id=last_id)
            )
            if top is not None:
                await self.store.run("sync state", partial(local.note_central, central_seq=top))
            sent += len(batch)

    async def pull(self, conn: psycopg.AsyncConnection[Any]) -> int:
        """Apply every central change after the last one applied; returns how many.

        A site that has fallen behind the pruning horizon (a removal it never applied may be
        gone from the centre) takes a snapshot instead, and pulls on from there.
        """
        applied = 0
        caught_up = False
        while True:
            state = await self.store.run("sync state", local.state)
            rows = await central.pull(conn, state.last_seq, PULL_BATCH)
            if rows is None:
                if caught_up:  # a snapshot is never behind the horizon: the centre is wrong
                    raise SharedError(
                        f"PostgreSQL {self.config.display}: still behind the pruning horizon"
                        f" after a snapshot (at {state.last_seq})"
                    )
                log.warning("sync.behind_retention", last_seq=state.last_seq)
                await self.snapshot(conn)
                caught_up = True
                continue
            if not rows:
                return applied
            top = rows[-1][0]
            await self.store.run_in_transaction(
                "apply central changes", partial(local.apply, rows=rows, central_seq=top)
            )
            applied += len(rows)
            if len(rows) < PULL_BATCH:
                return applied

    async def snapshot(self, conn: psycopg.AsyncConnection[Any]) -> int:
        """Replace the local list by the central one; returns the number of rows.

        A process of its own (screener/shared/snapshot.py) fetches the rows and writes them
        into a table of their own, a transaction per ``SNAPSHOT_CHUNK`` rows (so the site's
        other writers never wait long); one short transaction then swaps that table in (all
        or nothing). ``conn`` is not used for the rows: the child has its own connection.
        """
        began = time.monotonic()
        # At most this many live rows (the sequence counts every change ever made).
        inline = await central.top_seq(conn) <= SNAPSHOT_INLINE
        table = await self.store.run("begin a snapshot", local.snapshot_begin)
        spent: dict[str, float] = {}
        try:
            seq, count, heads = await self._build_snapshot(table, inline=inline, spent=spent)
            built = time.monotonic()
            cache = await self.store.run("snapshot cache", _import_pragmas)
            try:
                removed, written = await self.store.run_in_transaction(
                    "apply a snapshot",
                    lambda db: local.snapshot_apply(db, table, seq, rows=count, heads=heads),
                )
            finally:
                await self.store.run("snapshot cache", partial(_restore_pragmas, cache=cache))
            spent.update(build_s=built - began, swap_s=time.monotonic() - built)
        finally:
            await self.store.run("end a snapshot", partial(local.snapshot_end, table=table))
        self.snapshot_spent = {k: round(v, 3) for k, v in spent.items()}
        log.info(
            "sync.snapshot",
            rows=count,
            seq=seq,
            removed=removed,
            written=written,
            seconds=round(time.monotonic() - began, 3),
            **self.snapshot_spent,
        )
        self.snapshots += 1
        self.snapshot_rows = count
        return count

    async def _build_snapshot(
        self, table: str, *, inline: bool, spent: dict[str, float]
    ) -> tuple[int, int, list[tuple[str, int]]]:
        """Run the snapshot's process; (sequence, rows, prefix heads). Killed by its PID if
        cancelled.

        ``inline``: a small list, built on a thread of this process instead (the process's
        start costs more than the whole snapshot, and a few thousand rows are no stall); if
        cancelled, the thread is told to stop and waited for (it stops at its next batch), so
        nothing writes into the snapshot's table once this returns.
        """
        orders = {
            "table": table,
            "dsn": self.config.dsn,
            "connect": self.config.connect_kwargs(),  # the password: on its stdin only
            "db": str(self.store.path),
            "fetch": SNAPSHOT_FETCH,
            "chunk": SNAPSHOT_CHUNK,
            "cache_kib": SNAPSHOT_CACHE_KIB,
            "busy_timeout_ms": 30_000,
        }
        if inline:
            cancel = threading.Event()
            job = asyncio.ensure_future(asyncio.to_thread(snapshot_build, orders, spent, cancel))
            try:
                return await asyncio.shield(job)
            except asyncio.CancelledError:
                cancel.set()
                with contextlib.suppress(Exception):  # its Cancelled, or what failed first
                    await job
                raise
            except (psycopg.Error, OSError, sqlite3.Error) as exc:
                raise central.wrap(exc, self.config, "snapshot") from exc
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-P",  # not the working directory first on sys.path: it gets the password
            "-m",
            "screener.shared.snapshot",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await proc.communicate(json.dumps(orders).encode())
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        lines = out.decode(errors="replace").strip().splitlines()
        try:
            answer = json.loads(lines[-1]) if lines else {}
        except ValueError:
            answer = {}
        if proc.returncode == 0 and "seq" in answer:
            spent.update({k: float(answer[k]) for k in ("fetch_s", "write_s") if k in answer})
            heads = [(str(h), int(n)) for h, n in answer.get("heads", [])]
            return int(answer["seq"]), int(answer["rows"]), heads
        reason = answer.get("error") or err.decode(errors="replace").strip()[-500:]
        raise central.wrap(
            RuntimeError(reason or f"exit status {proc.returncode}"), self.config, "snapshot"
        )

    async def prune(self, conn: psycopg.AsyncConnection[Any]) -> central.Pruned:
        """Prune the central store by this site's retention (any site may; at most hourly)."""
        self._last_prune = time.monotonic()
        pruned = await central.prune(
            conn, self.config.retention_days * 86400, self.config.call_retention_days * 86400
        )
        if pruned.tombstones or pruned.keys or pruned.calls:
            log.info(
                "sync.pruned",
                tombstones=pruned.tombstones,
                keys=pruned.keys,
                calls=pruned.calls,
                horizon=pruned.horizon,
            )
        return pruned

    async def ship_calls(self, conn: psycopg.AsyncConnection[Any]) -> int:
        """Ship every call record not yet in the central store; returns how many."""
        columns = local.call_columns()
        shipped = 0
        while True:
            batch = await self.store.run(
                "read unshipped calls",
                lambda db: local.pending_calls(db, self.config.call_batch),
            )
            if not batch:
                return shipped
            await central.ship_calls(conn, self.config.site, columns, [r for _, r in batch])
            done = [(r[0], version) for version, r in batch]
            await self.store.run_in_transaction(
                "mark calls shipped", partial(local.shipped, calls=done)
            )
            shipped += len(batch)
            if len(batch) < self.config.call_batch:
                return shipped

    async def _error(self, error: str) -> None:
        with contextlib.suppress(Exception):  # the store may be the thing that failed
            await self.store.run("sync state", lambda db: local.record_error(db, error))

    # --- live ----------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Keep this site in step until ``stop``; never raises for the central store's sake."""
        backoff = BACKOFF_MIN
        while not stop.is_set():
            try:
                await self.join()
                async with self._connections() as (conn, listener):
                    backoff = BACKOFF_MIN
                    await self._live(conn, listener, stop)
            except (SharedError, StoreError, psycopg.Error, OSError) as exc:
                # StoreError: the local database was locked or failed; tried again like the rest.
                error: Exception = (
                    exc
                    if isinstance(exc, SharedError | StoreError)
                    else central.wrap(exc, self.config, "sync")
                )
                log.warning("sync.unavailable", error=str(error), retry_s=backoff)
                await self._error(str(error))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
            except Exception as exc:  # a bug or a malformed central row
                # Anything else would end the task silently while calls go on: log it with its
                # traceback, show it in `sync status`, and try again like an outage.
                log.exception("sync.failed", error=type(exc).__name__, retry_s=backoff)
                await self._error(f"{type(exc).__name__}: {exc}"[:500])
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)

    @contextlib.asynccontextmanager
    async def _connections(
        self,
    ) -> AsyncIterator[tuple[psycopg.AsyncConnection[Any], psycopg.AsyncConnection[Any]]]:
        async with (
            central.connect(self.config) as conn,
            central.connect(self.config, autocommit=True, check_schema=False) as listener,
        ):
            await listener.execute(f"LISTEN {schema.CHANNEL}")
            yield conn, listener

    async def _listen(self, listener: psycopg.AsyncConnection[Any]) -> None:
        async for notify in listener.notifies():
            site = notify.payload.partition(" ")[0]
            if site != self.config.site:
                self._notified = True
                self._wake.set()

    async def _live(
        self,
        conn: psycopg.AsyncConnection[Any],
        listener: psycopg.AsyncConnection[Any],
        stop: asyncio.Event,
    ) -> None:
        await self.round(conn, calls=True)
        await self.store.run("sync state", lambda db: local.record_error(db, None))
        log.info("sync.connected", site=self.config.site, central=self.config.display)
        last_round = time.monotonic()
        listening = asyncio.create_task(self._listen(listener), name="sync-listen")
        try:
            while not stop.is_set():
                if listening.done():
                    listening.result()  # the listener's connection failed: raise its error
                    raise SharedError("the LISTEN connection closed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.config.push_interval)
                self._wake.clear()
                now = time.monotonic()
                if now - last_round >= self.config.pull_interval:
                    await self.round(conn, calls=True)
                    last_round = now
                    continue
                if await self.store.run("sync outbox", local.has_outbox):
                    await self.push(conn)
                    await self.pull(conn)  # our own change back, and any others before it
                if self._notified:
                    self._notified = False
                    await self.pull(conn)
                if now - self._last_calls >= CALLS_INTERVAL:
                    self._last_calls = now
                    await self.ship_calls(conn)
        finally:
            listening.cancel()
            with contextlib.suppress(asyncio.CancelledError, psycopg.Error, OSError):
                await listening

    def wake(self) -> None:
        """Look at the outbox now (a local change was just made in this process)."""
        self._wake.set()


async def status(config: SharedConfig | None, store: Store, *, probe: bool) -> dict[str, Any]:
    """``screener sync status``: the local sync state, and the central store's if ``probe``."""
    state = await store.run("sync state", local.state)
    now = time.time()
    result: dict[str, Any] = {
        "site": state.site or (config.site if config else None),
        "joined": state.enabled,
        "configured": config is not None,
        "last_seq": state.last_seq,
        "central_seq": state.central_seq,
        "lag_changes": max(0, state.central_seq - state.last_seq),
        "synced_s_ago": round(now - state.synced_at, 3) if state.synced_at else None,
        "snapshot_s_ago": round(now - state.snapshot_at, 3) if state.snapshot_at else None,
        "outbox": state.outbox,
        "calls_pending": state.calls_pending,
        "last_error": state.last_error,
        "error_s_ago": round(now - state.error_at, 3) if state.error_at else None,
        "central": None,
    }
    if config is not None and probe:
        try:
            async with central.connect(config) as conn:
                top = await central.top_seq(conn)
            result["central_seq"] = top
            result["lag_changes"] = max(0, top - state.last_seq)
            result["central"] = "reachable"
        except SharedError as exc:
            result["central"] = f"unreachable: {exc}"
    return result


async def init_central(config: SharedConfig) -> tuple[int, list[int]]:
    """``screener shared init``: create or migrate the central schema; (version, applied)."""
    async with central.connect(config, check_schema=False) as conn:
        try:
            before = await schema.current_version(conn)
            await conn.rollback()
            if before > schema.SCHEMA_VERSION:
                raise SharedError(
                    f"PostgreSQL {config.display}: central schema {before} is newer than this"
                    f" screener knows ({schema.SCHEMA_VERSION}); upgrade screener"
                )
            applied = await schema.migrate(conn)
        except psycopg.Error as exc:
            raise central.wrap(exc, config, "migrate the central schema") from exc
    return schema.SCHEMA_VERSION, applied
