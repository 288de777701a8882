"""What every part of the store shares: times as the REAL the tables keep (aware UTC
datetimes outside), and a ``sqlite3`` error turned into a
:class:`~screener.errors.StoreError` where it enters."""

from __future__ import annotations

import datetime as dt
import sqlite3
from contextlib import suppress

from screener.errors import StoreCorruptError, StoreError, StoreLockedError


def to_ts(value: dt.datetime) -> float:
    """A time as the REAL the tables store (seconds since the epoch; naive means UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


def to_opt_ts(value: dt.datetime | None) -> float | None:
    return None if value is None else to_ts(value)


def from_ts(value: float | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromtimestamp(value, dt.UTC)


def _translate(exc: sqlite3.Error, path: str, action: str) -> StoreError:
    """The StoreError for a sqlite3 error met while doing ``action`` on the database at ``path``."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    text = str(exc)
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "locked" in text:
        return StoreLockedError(
            f"database {path} is locked by another process ({action}); try again shortly"
        )
    if primary in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT) or "not a database" in text:
        return StoreCorruptError(f"database {path} is damaged or not a database ({action}): {text}")
    return StoreError(f"database {path}: {action} failed: {text}")


def _rollback(db: sqlite3.Connection) -> None:
    # SQLite has already rolled back after some errors; then there is nothing to undo.
    with suppress(sqlite3.Error):
        db.execute("ROLLBACK")
