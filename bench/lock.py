"""Another process holding the database's write lock: ``BEGIN IMMEDIATE``, held until released.

What a long ``screener list import`` (or any other writer) does to the agent. The holder is a
subprocess of its own (a lock held by a connection of the bench's own process would not be
"another process"), started and stopped by PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

_HOLDER = (
    "import sqlite3, sys\n"
    "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
    "db.execute('BEGIN IMMEDIATE')\n"
    "print('locked', flush=True)\n"
    "sys.stdin.read()\n"  # until the bench closes our stdin (or kills us)
    "db.execute('ROLLBACK')\n"
)


@contextlib.asynccontextmanager
async def held_write_lock(db: Path) -> AsyncIterator[None]:
    """Hold ``db``'s write lock from another process for the duration of the block."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _HOLDER,
        str(db),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        if line.strip() != b"locked":
            raise RuntimeError(f"the lock holder did not take the lock: {line!r}")
        yield
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()


def count_calls(db: Path) -> int:
    """Rows in the call log (one per request the agent saw, routed or too late)."""
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM calls").fetchone()[0])
    finally:
        conn.close()
