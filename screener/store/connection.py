"""Opening a database: its path checked before SQLite sees it, the connection set up and
migrated, the loop's read-only connection, the health checks; and :class:`Store`, which
joins the parts."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import NoReturn

import structlog

from screener.dbthread import DBThread
from screener.errors import StoreCorruptError, StoreError
from screener.store.calls import CallLogStore
from screener.store.common import _rollback, _translate
from screener.store.entries import EntriesStore
from screener.store.imports import ImportsStore
from screener.store.outbox import OutboxStore
from screener.store.schema import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION
from screener.store.staff import StaffStore
from screener.store.writes import WritesStore

log = structlog.get_logger("screener.store")  # the name it had as one module


# Shown when a database is missing and the caller asked us not to create one. The CLI names the
# command that does.
CREATE_HINT = "create it with `screener init` (or check the path)"


def _connect_loop_db(target: str, mmap_size: int) -> sqlite3.Connection:
    """The read-only connection for lookups on the event loop's thread: it never waits."""
    uri = target if target.startswith("file:") else f"{Path(target).absolute().as_uri()}?mode=ro"
    db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=0, check_same_thread=False)
    try:
        db.execute("PRAGMA busy_timeout = 0")
        if mmap_size:
            db.execute(f"PRAGMA mmap_size = {int(mmap_size)}")
        db.execute("SELECT 1 FROM entries WHERE number = '' LIMIT 1").fetchall()
    except BaseException:
        db.close()
        raise
    return db


def _fail(exc: OSError, message: str) -> NoReturn:
    raise StoreError(f"{message}: {exc.strerror or exc}") from exc


def _check_path(path: str, *, create: bool, readonly: bool) -> tuple[str, bool]:
    """Check the path before SQLite sees it; returns (what to connect to, whether it existed).

    SQLite's own messages ("unable to open database file") name neither the path nor the reason.
    The file itself is never opened here: closing any descriptor of a database file drops every
    POSIX lock this process holds on it, including those of SQLite connections already open
    (the service opens a writer and then a reader). Another process could then think it is the
    last user, checkpoint and reset the WAL under our writer, and commits would vanish. A file
    that is not a database is refused by SQLite itself (SQLITE_NOTADB) on the first read, before
    anything is written.
    """
    if path == ":memory:":
        return path, False
    file = Path(path)
    parent = file.parent
    try:
        os.stat(parent)
    except OSError as exc:
        _fail(exc, f"cannot open database {path}: directory {parent}")
    try:
        info = os.stat(file)
    except FileNotFoundError:
        info = None
    except OSError as exc:
        _fail(exc, f"cannot open database {path}")
    if info is None:
        if not create or readonly:
            raise StoreError(f"database {path} does not exist; {CREATE_HINT}")
        if not os.access(parent, os.W_OK):
            raise StoreError(f"cannot create database {path}: directory {parent} is not writable")
        return path, False
    if stat.S_ISDIR(info.st_mode):
        raise StoreError(f"database {path} is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise StoreError(f"database {path} is not a regular file")
    if not os.access(file, os.R_OK):
        raise StoreError(f"cannot open database {path}: permission denied")
    if readonly:
        return f"{file.absolute().as_uri()}?mode=ro", True
    if not os.access(file, os.W_OK):
        raise StoreError(f"database {path} is not writable (use readonly mode to only read it)")
    if not os.access(parent, os.W_OK):
        raise StoreError(
            f"directory {parent} is not writable; SQLite needs to create {file.name}-wal and"
            f" {file.name}-shm beside the database"
        )
    return path, True


class Store(EntriesStore, CallLogStore, WritesStore, StaffStore, OutboxStore, ImportsStore):
    """The allow/block lists and the call log in one SQLite file. Use :meth:`open`."""

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        create: bool = True,
        busy_timeout: float = 5.0,
        readonly: bool = False,
        loop_lookups: bool = False,
        mmap_size: int = 0,
    ) -> AsyncIterator[Store]:
        """Open (and if need be create and migrate) the database at ``path``; always closes.

        Opening reads only what is cheap whatever the size of the lists: the file header (SQLite
        refuses a file that is not a database), ``application_id``, ``user_version``, the
        schema, and the first pages of each table and of the lookup's index. Damage deeper in
        the tables is found by :meth:`integrity_check` (``screener doctor``), or by the
        statement that meets it.

        ``loop_lookups`` (read-only stores only): :meth:`lookup` runs on the event loop's own
        thread, on a second read-only connection, instead of making the trip to the database
        thread, which costs several times the index probe itself. It never waits: in WAL mode a
        reader takes no lock a writer holds, and the connection's busy timeout is 0, so a busy
        answer (a WAL being reset, a database not in WAL mode) sends that lookup to the
        database thread instead (counted in :attr:`loop_fallbacks`). What it can cost the loop
        is the disk reads of a cold page cache: a few page reads per probe.
        ``mmap_size``: SQLite's ``PRAGMA mmap_size`` for the read connections (0: off).
        """
        name = os.fspath(path)
        target, exists = _check_path(name, create=create, readonly=readonly)
        if loop_lookups and not readonly:
            raise ValueError("loop_lookups is for read-only stores")

        def connect() -> sqlite3.Connection:
            return sqlite3.connect(
                target,
                uri=target.startswith("file:"),
                isolation_level=None,  # we say BEGIN and COMMIT ourselves
                timeout=busy_timeout,
            )

        try:
            thread = await DBThread.start(connect, name="screener-db")
        except sqlite3.Error as exc:
            raise _translate(exc, name, "open") from exc
        loop_db: sqlite3.Connection | None = None
        try:
            store = cls(thread, name, readonly=readonly)
            await store._setup(
                busy_timeout=busy_timeout, existed=exists, create=create, mmap_size=mmap_size
            )
            if loop_lookups:
                # Opened on the database thread (its file I/O off the loop), used on the loop's
                # thread only from then on.
                with store._guard("open"):
                    loop_db = await thread.run(lambda _: _connect_loop_db(target, mmap_size))
                store._loop_db = loop_db
            yield store
        finally:
            if loop_db is not None:
                store._loop_db = None
                with suppress(sqlite3.Error):
                    loop_db.close()
            await thread.close()

    async def _setup(
        self, *, busy_timeout: float, existed: bool, create: bool = True, mmap_size: int = 0
    ) -> None:
        path, readonly = self.path, self.readonly

        def setup(db: sqlite3.Connection) -> tuple[int, bool]:
            db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            if mmap_size and readonly:
                db.execute(f"PRAGMA mmap_size = {int(mmap_size)}")
            # Read-only checks first: nothing is written to a file until we know it is ours.
            app_id = int(db.execute("PRAGMA application_id").fetchone()[0])
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            tables = [
                r[0]
                for r in db.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
                )
            ]
            fresh = app_id == 0 and version == 0 and not tables
            if fresh and not create:
                # A zero-length file (truncated, or created by hand) is not a list to screen by.
                raise StoreError(f"database {path} is empty; {CREATE_HINT}")
            if not fresh and app_id != APPLICATION_ID:
                what = f"tables {', '.join(tables)}" if tables else "no tables"
                raise StoreCorruptError(
                    f"{path} is not a screener database (application_id {app_id:#x},"
                    f" {what}); refusing to touch it"
                )
            if version > SCHEMA_VERSION:
                raise StoreCorruptError(
                    f"database {path} has schema version {version}, newer than this"
                    f" screener knows ({SCHEMA_VERSION}); upgrade screener"
                )
            # The first page of every table, and the lookup's index: a handful of page reads
            # whatever the size, enough to refuse a file whose tables were wrecked (the full
            # check is integrity_check).
            for table in tables:
                if not table.startswith("sqlite_"):
                    db.execute(f'SELECT 1 FROM "{table}" LIMIT 1').fetchall()  # noqa: S608
            if "entries" in tables:
                db.execute("SELECT 1 FROM entries WHERE number = '' LIMIT 1").fetchall()
            if readonly:
                if version < SCHEMA_VERSION:
                    raise StoreError(
                        f"database {path} needs upgrading (schema {version} <"
                        f" {SCHEMA_VERSION}); `screener init` upgrades it"
                    )
            else:
                mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal" and path != ":memory:":
                    log.warning("store.no_wal", path=path, journal_mode=mode)
                db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA foreign_keys = ON")
            return version, fresh

        with self._guard("open"):
            version, fresh = await self._thread.run(setup)
            if version < SCHEMA_VERSION:
                await self._migrate(version)
        log.info(
            "store.open",
            path=self.path,
            schema=SCHEMA_VERSION,
            created=not existed or fresh,
            readonly=self.readonly,
        )

    async def _migrate(self, version: int) -> None:
        path = self.path

        def migrate(db: sqlite3.Connection) -> list[int]:
            applied = []
            for target, statements in enumerate(MIGRATIONS[version:], start=version + 1):
                db.execute("BEGIN IMMEDIATE")
                try:
                    # Another process may have migrated while we waited for the write lock.
                    current = int(db.execute("PRAGMA user_version").fetchone()[0])
                    if current >= target:
                        db.execute("COMMIT")
                        continue
                    for statement in statements:
                        db.execute(statement)
                    db.execute(f"PRAGMA user_version = {target}")
                    db.execute("COMMIT")
                except BaseException:
                    _rollback(db)
                    raise
                applied.append(target)
            return applied

        for target in await self._thread.run(migrate):
            log.info("store.migrate", path=path, schema=target)

    async def integrity_check(self) -> str:
        """SQLite's full integrity check: ``"ok"``, or its findings one per line.

        It reads every page: seconds for millions of entries. ``screener doctor`` runs it, and
        the service after an unclean shutdown; opening a database never does.
        """

        def check(db: sqlite3.Connection) -> str:
            try:
                rows = db.execute("PRAGMA integrity_check").fetchall()
            except sqlite3.DatabaseError as exc:
                if not isinstance(_translate(exc, self.path, "check"), StoreCorruptError):
                    raise
                return str(exc)  # damage bad enough to stop the check is its finding
            return "\n".join(str(row[0]) for row in rows)

        return await self._call("integrity check", check)

    async def check_writable(self) -> None:
        """Take and release the write lock (nothing written); StoreError when that fails."""

        def check(db: sqlite3.Connection) -> None:
            # In one trip to the thread: the lock is never held across a hop to the event loop.
            db.execute("BEGIN IMMEDIATE")
            db.execute("ROLLBACK")

        await self._call("check writable", check)
