"""The "service running" marker: how the next start knows the last one did not stop cleanly.

``screener run`` creates ``<database>.running`` (holding its PID) once the database is open and
removes it when it stops, whatever the reason, after the database is closed. A marker found at
start means the last run ended without that: killed, a crash, a power cut. The service then runs
the full integrity check before it screens, since a database that stops cleanly never needs it
and a full check of millions of entries costs seconds on every start.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

SUFFIX = ".running"


def marker_path(db_path: Path) -> Path:
    """Where the marker of the database at ``db_path`` lives (beside it)."""
    return db_path.with_name(db_path.name + SUFFIX)


def left_behind(db_path: Path) -> bool:
    """Whether the last run on ``db_path`` left its marker, i.e. did not stop cleanly."""
    return marker_path(db_path).exists()


@contextlib.contextmanager
def running(db_path: Path) -> Iterator[Path]:
    """Hold the marker while the block runs; it is removed however the block ends."""
    path = marker_path(db_path)
    path.write_text(f"{os.getpid()}\n", encoding="ascii")
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


__all__ = ["SUFFIX", "left_behind", "marker_path", "running"]
