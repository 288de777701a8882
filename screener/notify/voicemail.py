"""Where a voicemail message's audio is: the dialplan's ``File`` header, checked.

The dialplan sends ``File: ${VM_MESSAGEFILE}`` with ScreenVoicemail: the message's path as
Asterisk sees it, without the extension (``.../voicemail/office/100/INBOX/msg0000``). Asterisk
may see its spool under another root (a container, a chroot), so only the last four parts are
kept (context, mailbox, folder, message) and looked up under the configured ``voicemail_dir``:
a header cannot name any other file, whatever it says (a forged UserEvent can carry anything).
"""

from __future__ import annotations

import re
from pathlib import Path

# context / mailbox / folder / msgNNNN, as app_voicemail names them.
_TAIL = re.compile(
    r"(?:^|/)([A-Za-z0-9_-]{1,80})/([A-Za-z0-9_-]{1,80})/(INBOX|Old|Urgent)/(msg\d{4})$"
)
# voicemail.conf's first format is the one kept; "wav" is ours (asterisk-conf/voicemail.conf).
EXTENSIONS = (".wav", ".WAV", ".gsm")


def message_parts(header: str | None) -> tuple[str, str, str, str] | None:
    """The (context, mailbox, folder, message) a ``File`` header names, or None (pure)."""
    if not header:
        return None
    match = _TAIL.search(header.strip())
    if match is None:
        return None
    context, mailbox, folder, message = match.groups()
    return context, mailbox, folder, message


def locate(header: str | None, spool: Path | None) -> Path | None:
    """The audio file of the message ``header`` names, under ``spool``, if it is there."""
    parts = message_parts(header)
    if parts is None or spool is None:
        return None
    base = spool.joinpath(*parts)
    for extension in EXTENSIONS:
        candidate = base.with_name(base.name + extension)
        if candidate.is_file():
            return candidate
    return None


__all__ = ["EXTENSIONS", "locate", "message_parts"]
