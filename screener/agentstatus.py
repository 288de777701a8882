"""The agent's last word on its AMI connection, for the web console to read.

``screener run`` writes ``<database>.agent`` (JSON: ``ami`` connected or not, ``at`` the Unix
time it was written) when it starts screening, whenever the AMI connection comes or goes, and
every :data:`HEARTBEAT` seconds in between; it removes the file when it stops. The console is
another process (maybe another container sharing the database's volume) and can see neither the
agent's PID nor its socket, so it believes a report only while it is fresh: a report older than
:data:`STALE_AFTER` means an agent that stopped without removing it (killed, a crash).
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
from dataclasses import dataclass
from pathlib import Path

SUFFIX = ".agent"
HEARTBEAT = 30.0
STALE_AFTER = 3 * HEARTBEAT


@dataclass(frozen=True, slots=True)
class Report:
    """What the agent last wrote: whether AMI was connected, and when (Unix time)."""

    ami: bool
    at: float


class State(enum.StrEnum):
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"  # the agent runs, but has no AMI connection to Asterisk
    STALE = "stale"  # a report too old to believe: the agent stopped without saying so
    NOT_RUNNING = "not_running"  # no report: no agent ran, or the last one stopped cleanly


def status_path(db_path: Path) -> Path:
    """Where the report of the agent on the database at ``db_path`` lives (beside it)."""
    return db_path.with_name(db_path.name + SUFFIX)


def write(db_path: Path, ami: bool, at: float) -> None:
    """Replace the report in one step (a reader sees the old one or the new one, never half)."""
    path = status_path(db_path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"ami": ami, "at": at}) + "\n", encoding="ascii")
    os.replace(tmp, path)


def remove(db_path: Path) -> None:
    """Take the report away (a clean stop)."""
    with contextlib.suppress(FileNotFoundError):
        status_path(db_path).unlink()


def read(db_path: Path) -> Report | None:
    """The agent's report; None when there is none or it cannot be read as one."""
    try:
        data = json.loads(status_path(db_path).read_text(encoding="ascii"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    ami, at = data.get("ami"), data.get("at")
    if not isinstance(ami, bool) or not isinstance(at, int | float) or isinstance(at, bool):
        return None
    return Report(ami, float(at))


def judge(report: Report | None, now: float) -> State:
    """What the console may say about the agent from its report at Unix time ``now``."""
    if report is None:
        return State.NOT_RUNNING
    if now - report.at > STALE_AFTER:
        return State.STALE
    return State.CONNECTED if report.ami else State.DISCONNECTED


__all__ = [
    "HEARTBEAT",
    "STALE_AFTER",
    "SUFFIX",
    "Report",
    "State",
    "judge",
    "read",
    "remove",
    "status_path",
    "write",
]
