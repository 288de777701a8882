"""The plumbing every part of the Store stands on: its database thread, its lock, and
statements and transactions run in one trip to that thread."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

from screener.dbthread import DBThread
from screener.errors import StoreError
from screener.store.common import _rollback, _translate

_T = TypeVar("_T")


class StoreBase:
    """What every part of :class:`~screener.store.Store` shares: the database thread
    that runs its statements in order, the lock that keeps one coroutine's statements out
    of another's transaction, and their errors translated."""

    def __init__(
        self,
        thread: DBThread,
        path: str,
        *,
        readonly: bool,
        loop_db: sqlite3.Connection | None = None,
    ) -> None:
        self._thread = thread
        self.path = path
        self.readonly = readonly
        # The read-only connection :meth:`lookup` uses on the event loop's own thread, if any.
        self._loop_db = loop_db
        # Lookups that found the loop's connection busy and went to the database thread.
        self.loop_fallbacks = 0
        # Every operation holds this while it talks to the connection, so that no statement of
        # one coroutine ever runs inside another's transaction (or sees its uncommitted rows).
        self._lock = asyncio.Lock()

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise _translate(exc, self.path, action) from exc
        except UnicodeEncodeError as exc:
            # A str with a lone surrogate cannot be stored as UTF-8 text.
            raise StoreError(f"database {self.path}: {action}: text is not valid Unicode") from exc

    async def _call(
        self,
        action: str,
        function: Callable[[sqlite3.Connection], _T],
        *,
        interruptible: bool = False,
    ) -> _T:
        """Run ``function(connection)`` on the database thread, in one trip, under the lock.

        ``interruptible`` (reads only): a cancelled caller interrupts it (a long count must not
        hold up a service that stops; see :class:`~screener.dbthread.DBThread`).
        """
        async with self._lock:
            with self._guard(action):
                return await self._thread.run(function, interruptible=interruptible)

    async def _in_transaction(
        self, action: str, function: Callable[[sqlite3.Connection], _T]
    ) -> _T:
        """``function`` inside BEGIN IMMEDIATE ... COMMIT (ROLLBACK on any error), one trip."""

        def transaction(db: sqlite3.Connection) -> _T:
            db.execute("BEGIN IMMEDIATE")
            try:
                result = function(db)
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise
            return result

        return await self._call(action, transaction)

    @asynccontextmanager
    async def _transaction(self, action: str) -> AsyncIterator[None]:
        """BEGIN IMMEDIATE ... COMMIT over several trips, or ROLLBACK on any error, under the lock.

        For work fed from an async source (an import); everything else uses one trip.
        """
        async with self._lock:
            with self._guard(action):
                await self._thread.run(lambda db: db.execute("BEGIN IMMEDIATE"))
                try:
                    yield
                    await self._thread.run(lambda db: db.execute("COMMIT"))
                except BaseException:
                    await self._thread.run(_rollback)
                    raise

    async def run(self, action: str, function: Callable[[sqlite3.Connection], _T]) -> _T:
        """``function(connection)`` in one trip, for a room's own tables (screener/shared/)."""
        return await self._call(action, function)

    async def run_in_transaction(
        self, action: str, function: Callable[[sqlite3.Connection], _T]
    ) -> _T:
        """``function(connection)`` inside one BEGIN IMMEDIATE ... COMMIT, or rolled back."""
        return await self._in_transaction(action, function)

    async def _fetchall(
        self, action: str, sql: str, params: Sequence[Any] = (), *, interruptible: bool = False
    ) -> list[Any]:
        return await self._call(
            action, lambda db: db.execute(sql, params).fetchall(), interruptible=interruptible
        )

    async def _write(self, action: str, sql: str, params: Sequence[Any] = ()) -> int:
        """One statement in autocommit mode; returns the number of rows it changed."""
        return await self._call(action, lambda db: db.execute(sql, params).rowcount)
