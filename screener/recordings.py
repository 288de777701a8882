"""Call recordings on disk: where a call's file is, and the retention sweep.

The dialplan's MixMonitor writes ``RECORDING_DIR/<call id>.wav`` (asterisk-conf/extensions.conf);
the screener names the same file from its own ``screening.recording_folder`` and deletes files
older than ``recording_retention_days``. ``expired`` is pure; ``sweep`` does the I/O.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# The dialplan keeps these characters of the Uniqueid in the file name (FILTER(0-9A-Za-z._)).
_UNSAFE = re.compile(r"[^0-9A-Za-z._]")
SUFFIX = ".wav"


def recording_path(folder: Path, call_id: str) -> Path:
    """The file the dialplan records ``call_id`` into, as this process sees the folder."""
    return folder / f"{_UNSAFE.sub('', call_id)}{SUFFIX}"


def expired(files: Iterable[tuple[str, float]], now: float, days: float) -> list[str]:
    """Names of the files (name, modified time) older than ``days`` at ``now``."""
    cutoff = now - days * 86400.0
    return sorted(name for name, mtime in files if mtime < cutoff)


@dataclass(frozen=True)
class SweepResult:
    """What one retention sweep did."""

    deleted: tuple[str, ...]
    kept: int
    made_private: int


def sweep(folder: Path, now: float, days: float) -> SweepResult:
    """Delete recordings older than ``days``; make the others private (mode 0600) if ours."""
    try:
        listing = [e for e in os.scandir(folder) if e.name.endswith(SUFFIX) and e.is_file()]
    except FileNotFoundError:
        return SweepResult((), 0, 0)
    files = {e.name: e.stat() for e in listing}
    old = expired(((n, st.st_mtime) for n, st in files.items()), now, days)
    deleted = []
    for name in old:
        with contextlib.suppress(FileNotFoundError):
            (folder / name).unlink()
            deleted.append(name)
    private = 0
    uid = os.geteuid()
    for name, st in files.items():
        if name in old or st.st_uid != uid or not st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            continue
        with contextlib.suppress(OSError):
            os.chmod(folder / name, 0o600)
            private += 1
    return SweepResult(tuple(deleted), len(files) - len(deleted), private)
