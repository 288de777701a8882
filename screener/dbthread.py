"""One thread of our own that owns one ``sqlite3`` connection, driven from asyncio.

A ``sqlite3`` connection must be used from one thread at a time, and every statement of the
service must run in order. :class:`DBThread` runs functions ``fn(connection)`` on its thread,
one after the other in the order they were submitted, and hands each result (or exception) back
to the event loop that asked::

    thread = await DBThread.start(lambda: sqlite3.connect(path), name="screener-db")
    rows = await thread.run(lambda db: db.execute("SELECT 1").fetchall())
    await thread.close()  # closes the connection on its thread, then ends the thread

A whole transaction is one function, so it costs one trip to the thread however many statements
it holds. Only the standard library's public API is used (a ``SimpleQueue`` in, the loop's
``call_soon_threadsafe`` out). A caller cancelled while its function runs does not stop the
function: it finishes and its result is dropped (a write half-way is not to be abandoned). A
read can be: ``run(fn, interruptible=True)`` (a count of millions of entries) is interrupted
(``Connection.interrupt()``) when its caller is cancelled, or skipped if it has not begun, so
that a service stopping does not wait for it; :meth:`DBThread.close` interrupts such a read
again in case the first interrupt came just before its statement began.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar

_T = TypeVar("_T")


class DBThreadClosedError(RuntimeError):
    """The thread was closed: nothing more runs on it."""


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class _Job:
    __slots__ = ("abandoned", "fn", "future", "interruptible", "loop")

    def __init__(
        self,
        fn: Callable[[Any], Any],
        future: asyncio.Future[Any],
        loop: asyncio.AbstractEventLoop,
        interruptible: bool = False,
    ) -> None:
        self.fn = fn
        self.future = future
        self.loop = loop
        self.interruptible = interruptible
        self.abandoned = False  # an interruptible job whose caller was cancelled


class DBThread:
    """A dedicated thread owning one ``sqlite3`` connection; use :meth:`start`."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._connection: sqlite3.Connection | None = None
        self._closed = False
        # The job running on the thread, set and read under _switch, so that an interrupt
        # never reaches the job after the one it was meant for.
        self._running: _Job | None = None
        self._switch = threading.Lock()
        # A daemon thread: a loop that dies without close() must not hang the interpreter's exit.
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)

    @classmethod
    async def start(
        cls, connect: Callable[[], sqlite3.Connection], *, name: str = "screener-db"
    ) -> DBThread:
        """Start the thread and open its connection there with ``connect()`` (errors re-raised)."""
        thread = cls(name)
        thread._thread.start()

        def opened(_: Any) -> None:
            thread._connection = connect()

        try:
            await thread._submit(opened).future
        except BaseException:
            thread._jobs.put(None)
            thread._closed = True
            raise
        return thread

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            with self._switch:
                if job.abandoned:
                    continue  # its caller was cancelled before it began: nobody wants it
                self._running = job
            result: Any = None
            error: BaseException | None = None
            try:
                result = job.fn(self._connection)
                if isinstance(result, sqlite3.Cursor):
                    # A cursor must not leave its thread open: freed on the loop's thread, it
                    # resets its statement there while this thread may be running the same
                    # cached statement for the next job (an import's executemany failed with
                    # "bad parameter or other API misuse"). Closed here, it holds nothing.
                    result.close()
            except BaseException as exc:  # handed back to the caller, whatever it is
                error = exc
            with self._switch:
                self._running = None
            # RuntimeError: the loop is closed, so nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                job.loop.call_soon_threadsafe(_resolve, job.future, result, error)
            del job, result, error

    def _submit(self, fn: Callable[[Any], _T], interruptible: bool = False) -> _Job:
        if self._closed:
            raise DBThreadClosedError("the database thread is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        job = _Job(fn, future, loop, interruptible)
        self._jobs.put(job)
        return job

    async def run(
        self, fn: Callable[[sqlite3.Connection], _T], *, interruptible: bool = False
    ) -> _T:
        """Run ``fn(connection)`` on the thread after everything submitted before it.

        ``interruptible`` (reads only): if the caller is cancelled, ``fn`` is not begun, or its
        statement is interrupted, instead of finishing for nobody.
        """
        job = self._submit(fn, interruptible)
        try:
            result: _T = await job.future
        except asyncio.CancelledError:
            if interruptible:
                job.abandoned = True
                self._interrupt(job)
            raise
        return result

    def _interrupt(self, job: _Job) -> None:
        with self._switch:
            if self._running is job and self._connection is not None:
                self._connection.interrupt()  # the one sqlite3 call meant for another thread

    async def close(self) -> None:
        """Close the connection on its thread (if it has ``close()``), then end the thread."""
        if self._closed:
            return
        running = self._running
        if running is not None and running.abandoned:
            self._interrupt(running)

        def closing(connection: sqlite3.Connection | None) -> None:
            if connection is not None:
                connection.close()

        try:
            await self._submit(closing).future
        finally:
            self._closed = True
            self._jobs.put(None)
            # The thread has nothing left to do but return: joining it is immediate.
            self._thread.join(timeout=5)


__all__ = ["DBThread", "DBThreadClosedError"]
