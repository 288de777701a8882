"""A snapshot of the central list, written into the local SQLite by a process of its own.

``python -m screener.shared.snapshot`` reads its orders as JSON on stdin (the DSN, the
connection's keyword arguments with the password, the database file, the batch sizes: never on
its command line or in its environment, which ``ps`` shows), fetches the central rows
(central.snapshot) on one thread while another writes them into the snapshot table the engine
made for it (``table``; local.snapshot_stage, a transaction per chunk), and prints
``{"seq": n, "rows": n, "heads": [...]}`` or ``{"error": "..."}`` as its one line of output.
The engine swaps the table in afterwards.

Why a process: decoding millions of rows and binding them to SQLite statements is Python work
that holds the interpreter lock; in the service's process it would take turns with the calls'
lookups on the event loop. Here it runs on the machine's other core, and the service only
waits for one line.
"""

from __future__ import annotations

import json
import queue
import sqlite3
import sys
import threading
import time
from typing import Any

import psycopg

from screener.shared import central, local

_DONE = object()


class Cancelled(Exception):
    """The snapshot was called off (``cancel`` set) before it was built."""


def build(
    orders: dict[str, Any],
    spent: dict[str, float] | None = None,
    cancel: threading.Event | None = None,
) -> tuple[int, int, list[tuple[str, int]]]:
    """Fetch the snapshot and write it into the snapshot table: (its sequence, its rows, the
    heads of its prefix rules for the lookup's ``prefix_heads``: found here, so that the swap
    need not read the whole table for them).

    ``spent``, if given, gets the seconds spent waiting for PostgreSQL (``fetch_s``) and
    writing (``write_s``, on the other thread): where a slow snapshot's time went. ``cancel``
    (the engine's thread, when the snapshot is built in its process): once set, both threads
    stop at their next batch and :class:`Cancelled` is raised, nothing more written.
    """
    fetch_s = write_s = 0.0
    table = local.snapshot_table(orders["table"])
    stopped = cancel if cancel is not None else threading.Event()
    db = sqlite3.connect(orders["db"], isolation_level=None, check_same_thread=False)
    try:
        db.execute(f"PRAGMA busy_timeout = {int(orders['busy_timeout_ms'])}")
        db.execute(f"PRAGMA cache_size = -{int(orders['cache_kib'])}")
        # As the store's own connections: in WAL, a commit is not an fsync (a checkpoint is);
        # a crash loses at most the last chunks of a table that is dropped anyway.
        db.execute("PRAGMA synchronous = NORMAL")
        chunks: queue.Queue[Any] = queue.Queue(maxsize=2)
        failed: list[BaseException] = []
        heads: set[tuple[str, int]] = set()

        def write() -> None:
            nonlocal write_s
            while (rows := chunks.get()) is not _DONE:
                if failed or stopped.is_set():
                    continue  # drain: the fetcher stops at its next put
                try:
                    began = time.perf_counter()
                    db.execute("BEGIN IMMEDIATE")
                    local.snapshot_stage(db, table, rows)
                    heads.update((r[1][:4], len(r[1])) for r in rows if r[2])
                    db.execute("COMMIT")
                    write_s += time.perf_counter() - began
                except BaseException as exc:  # handed to the main thread, which raises it
                    failed.append(exc)
                    if db.in_transaction:
                        db.execute("ROLLBACK")

        writer = threading.Thread(target=write, name="snapshot-writer")
        writer.start()
        count = 0
        try:
            with psycopg.connect(orders["dsn"], **orders["connect"]) as conn:
                began = time.perf_counter()
                seq, batches = central.snapshot(conn, int(orders["fetch"]))
                staged: list[Any] = []
                for rows in batches:
                    fetch_s += time.perf_counter() - began
                    if failed or stopped.is_set():
                        break
                    staged.extend(rows)
                    count += len(rows)
                    if len(staged) >= int(orders["chunk"]):
                        chunks.put(staged)
                        staged = []
                    began = time.perf_counter()
                fetch_s += time.perf_counter() - began
                if staged:
                    chunks.put(staged)
        finally:
            chunks.put(_DONE)
            writer.join()
        if failed:
            raise failed[0]
        if stopped.is_set():
            raise Cancelled("the snapshot was cancelled")
        if spent is not None:
            spent.update(fetch_s=fetch_s, write_s=write_s)
        return seq, count, sorted(heads)
    finally:
        db.close()


def main() -> int:
    """Read the orders from stdin, build, print one JSON line; 0 on success."""
    orders = json.loads(sys.stdin.read())
    spent: dict[str, float] = {}
    try:
        seq, rows, heads = build(orders, spent)
    except (psycopg.Error, OSError, sqlite3.Error) as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    print(json.dumps({"seq": seq, "rows": rows, "heads": heads, **spent}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
