"""screener.dbthread: one thread of our own per sqlite3 connection, driven from asyncio."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from screener.dbthread import DBThread, DBThreadClosedError


async def test_functions_run_in_order_on_one_thread_that_is_not_the_loops(tmp_path: Path) -> None:
    """Everything submitted runs on the same dedicated thread, in the order submitted."""
    thread = await DBThread.start(lambda: sqlite3.connect(tmp_path / "x.db"))
    seen: list[tuple[int, int]] = []
    try:
        await asyncio.gather(
            *(
                thread.run(lambda db, n=n: seen.append((n, threading.get_ident())))  # type: ignore[misc]  # a default binds n
                for n in range(50)
            )
        )
    finally:
        await thread.close()
    assert [n for n, _ in seen] == list(range(50))
    (ident,) = {ident for _, ident in seen}
    assert ident != threading.get_ident()


async def test_an_error_reaches_the_caller_and_the_thread_goes_on(tmp_path: Path) -> None:
    """A function's exception is raised in the awaiting coroutine; later functions still run."""
    thread = await DBThread.start(lambda: sqlite3.connect(tmp_path / "x.db"))
    try:
        with pytest.raises(sqlite3.OperationalError, match="syntax"):
            await thread.run(lambda db: db.execute("SELEC 1"))
        assert await thread.run(lambda db: db.execute("SELECT 41 + 1").fetchone()[0]) == 42
    finally:
        await thread.close()


async def test_close_closes_the_connection_and_refuses_more(tmp_path: Path) -> None:
    """After close() the connection is closed and nothing more can be submitted."""
    connections: list[sqlite3.Connection] = []

    def connect() -> sqlite3.Connection:
        # check_same_thread off only so that this test can see it closed from here.
        connections.append(sqlite3.connect(tmp_path / "x.db", check_same_thread=False))
        return connections[-1]

    thread = await DBThread.start(connect)
    await thread.close()
    await thread.close()  # twice is harmless
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        connections[0].execute("SELECT 1")
    with pytest.raises(DBThreadClosedError):
        await thread.run(lambda db: None)


async def test_a_failed_connect_is_raised_and_leaves_no_thread(tmp_path: Path) -> None:
    """An error opening the connection comes back from start(); the thread ends."""
    before = threading.active_count()

    def connect() -> sqlite3.Connection:
        raise sqlite3.OperationalError("unable to open database file")

    with pytest.raises(sqlite3.OperationalError, match="unable to open"):
        await DBThread.start(connect)
    for _ in range(100):
        if threading.active_count() <= before:
            break
        await asyncio.sleep(0.01)
    assert threading.active_count() <= before


async def test_a_cancelled_caller_does_not_stop_the_function(tmp_path: Path) -> None:
    """Cancelling the awaiting task drops the result; the function itself runs to its end."""
    thread = await DBThread.start(lambda: sqlite3.connect(tmp_path / "x.db"))
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def slow(db: sqlite3.Connection) -> None:
        started.set()
        release.wait(5)
        finished.set()

    try:
        task = asyncio.create_task(thread.run(slow))
        await asyncio.to_thread(started.wait, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        assert await thread.run(lambda db: db.execute("SELECT 1").fetchone()[0]) == 1
        assert finished.is_set()
    finally:
        release.set()
        await thread.close()


async def test_a_cursor_comes_back_closed(tmp_path: Path) -> None:
    """A cursor a function returns is closed on the thread before it is handed back: freed open
    on the loop's thread, it would reset its statement there while the thread may be running
    that same cached statement for the next function."""
    thread = await DBThread.start(
        lambda: sqlite3.connect(tmp_path / "x.db", check_same_thread=False)
    )
    try:
        cursor = await thread.run(lambda db: db.execute("SELECT 1"))
        with pytest.raises(sqlite3.ProgrammingError, match="closed cursor"):
            cursor.fetchone()
        assert await thread.run(lambda db: db.execute("SELECT 2").fetchone()) == (2,)
    finally:
        await thread.close()


# A statement that would run for minutes; mark(x) says it is under way.
_ENDLESS = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10000000000)"
    " SELECT count(mark(x)) FROM c"
)


async def test_a_cancelled_interruptible_read_is_interrupted(tmp_path: Path) -> None:
    """A read run with interruptible=True whose caller is cancelled is interrupted mid-way
    (a long count must not keep a stopping service waiting); the thread goes on."""
    thread = await DBThread.start(lambda: sqlite3.connect(tmp_path / "x.db"))
    running = threading.Event()
    outcome: list[str] = []

    def endless(db: sqlite3.Connection) -> None:
        db.create_function("mark", 1, lambda x: running.set() or x)
        try:
            db.execute(_ENDLESS).fetchone()
            outcome.append("finished")
        except sqlite3.OperationalError as exc:
            outcome.append(str(exc))

    try:
        task = asyncio.create_task(thread.run(endless, interruptible=True))
        await asyncio.to_thread(running.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await thread.run(lambda db: db.execute("SELECT 1").fetchone()[0]) == 1
    finally:
        await thread.close()
    assert outcome == ["interrupted"]


async def test_an_interruptible_read_cancelled_before_it_began_is_skipped(tmp_path: Path) -> None:
    """Cancelled while it waits behind another function: it never runs."""
    thread = await DBThread.start(lambda: sqlite3.connect(tmp_path / "x.db"))
    started, release = threading.Event(), threading.Event()
    ran: list[str] = []

    def busy(db: sqlite3.Connection) -> None:
        started.set()
        release.wait(5)

    try:
        first = asyncio.create_task(thread.run(busy))
        await asyncio.to_thread(started.wait, 5)
        queued = asyncio.create_task(thread.run(lambda db: ran.append("x"), interruptible=True))
        await asyncio.sleep(0)  # submitted
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        release.set()
        await first
        assert await thread.run(lambda db: db.execute("SELECT 1").fetchone()[0]) == 1
    finally:
        release.set()
        await thread.close()
    assert ran == []
