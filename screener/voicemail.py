"""Voicemail messages as Asterisk's app_voicemail stores them, read from its spool directory.

With ``format = wav`` (asterisk-conf/voicemail.conf) a mailbox directory
(``<astspooldir>/voicemail/<context>/<box>``) holds folders ``INBOX`` and ``Old``, and each
message is ``msgNNNN.wav`` with its metadata in ``msgNNNN.txt`` (``key=value`` lines under
``[message]``: ``callerid``, ``origtime``, ``duration``, ``msg_id``...). Messages are named by
their ``msg_id``, which stays the same when Asterisk renumbers the files.

Also here, pure: :func:`parse_range`, the one ``bytes=`` range an HTTP ``Range`` header asks for.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

FOLDERS = ("INBOX", "Old")
_MSG = re.compile(r"msg(\d{4})\.txt")
_SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_CALLERID = re.compile(r"^(?P<name>.*)<(?P<number>[^<>]*)>\s*$")


@dataclass(frozen=True, slots=True)
class Message:
    """One voicemail message: where it is, and what its metadata says."""

    id: str
    folder: str
    audio: Path
    caller_name: str
    caller_number: str
    received_at: dt.datetime | None
    duration: int


def _metadata(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith((";", "[")):
            values[key.strip()] = value.strip()
    return values


def _caller(callerid: str) -> tuple[str, str]:
    match = _CALLERID.match(callerid)
    if match:
        name = match["name"].strip()
        if len(name) >= 2 and name[0] == name[-1] == '"':
            name = name[1:-1]
        return name, match["number"].strip()
    return "", callerid.strip()


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


class Mailbox:
    """One mailbox directory; every method re-reads it (Asterisk writes it meanwhile)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def messages(self) -> list[Message]:
        """Every message with its audio file, newest first."""
        found: list[Message] = []
        for folder in FOLDERS:
            directory = self.path / folder
            if not directory.is_dir():
                continue
            for meta in directory.iterdir():
                match = _MSG.fullmatch(meta.name)
                audio = meta.with_suffix(".wav")
                if not match or not audio.is_file():
                    continue
                try:
                    values = _metadata(meta.read_text(encoding="utf-8", errors="replace"))
                except OSError:
                    continue
                msg_id = values.get("msg_id", "")
                if not _SAFE_ID.fullmatch(msg_id):
                    msg_id = f"{folder}-{match[1]}"
                origtime = _int(values.get("origtime"))
                name, number = _caller(values.get("callerid", ""))
                found.append(
                    Message(
                        id=msg_id,
                        folder=folder,
                        audio=audio,
                        caller_name=name,
                        caller_number=number,
                        received_at=None
                        if origtime is None
                        else dt.datetime.fromtimestamp(origtime, dt.UTC),
                        duration=_int(values.get("duration")) or 0,
                    )
                )
        epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
        found.sort(key=lambda m: (m.received_at or epoch, m.id), reverse=True)
        return found

    def find(self, msg_id: str) -> Message | None:
        if not _SAFE_ID.fullmatch(msg_id):
            return None
        return next((m for m in self.messages() if m.id == msg_id), None)

    def delete(self, msg_id: str) -> bool:
        """Remove the message's audio and metadata; False if there is no such message."""
        message = self.find(msg_id)
        if message is None:
            return False
        message.audio.unlink(missing_ok=True)
        message.audio.with_suffix(".txt").unlink(missing_ok=True)
        return True


class RangeError(ValueError):
    """The Range header asks for nothing the file has (HTTP 416)."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive (first, last) byte a ``Range`` header asks for; None for the whole file.

    Only one ``bytes=`` range is honoured (browsers seeking audio ask for one); a header we do
    not understand is ignored, as RFC 9110 allows. RangeError when it cannot be satisfied.
    """
    if not header:
        return None
    match = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if not match or (not match[1] and not match[2]):
        return None
    if not match[1]:  # the last N bytes
        count = int(match[2])
        if count == 0 or size == 0:
            raise RangeError(header)
        return max(0, size - count), size - 1
    first = int(match[1])
    last = int(match[2]) if match[2] else size - 1
    if first >= size or last < first:
        raise RangeError(header)
    return first, min(last, size - 1)
