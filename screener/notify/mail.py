"""The email channel: one message per event over SMTP (aiosmtplib), the voicemail attached."""

from __future__ import annotations

import re
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import aiosmtplib

from screener.config import EmailConfig
from screener.errors import NotifyError
from screener.notify.message import KEY_HEADER, Notice

# Voicemail bigger than this is not attached (the mail says so): most servers refuse ~25 MB.
MAX_ATTACHMENT = 20 * 1024 * 1024


def message_id(key: str) -> str:
    """A Message-ID derived from the idempotency key: a resent mail is the same mail."""
    return "<" + re.sub(r"[^A-Za-z0-9.\-_]", "-", key) + "@screener>"


def build_message(notice: Notice, config: EmailConfig) -> EmailMessage:
    """The mail for ``notice``: UTF-8 subject and body, and the audio file when it exists."""
    msg = EmailMessage()
    msg["From"] = config.sender
    msg["To"] = ", ".join(config.to)
    msg["Subject"] = notice.subject
    msg["Date"] = formatdate(notice.created_at.timestamp(), localtime=False)
    msg["Message-ID"] = message_id(notice.key) if notice.key else make_msgid("screener")
    msg[KEY_HEADER] = notice.key
    body = notice.body
    audio = None
    if notice.audio is not None:
        try:
            size = notice.audio.stat().st_size
            if size > MAX_ATTACHMENT:
                body += f"\n(録音ファイルが大きすぎるため添付していません: {size} bytes)\n"
            else:
                audio = notice.audio.read_bytes()
        except OSError as exc:
            body += f"\n(録音ファイルを読めません: {exc.strerror})\n"
    msg.set_content(body, charset="utf-8")
    if audio is not None and notice.audio is not None:
        msg.add_attachment(audio, maintype="audio", subtype="wav", filename=notice.audio.name)
    return msg


class EmailChannel:
    """Sends each notice as one mail to every address in ``to``."""

    name = "email"

    def __init__(self, config: EmailConfig) -> None:
        self.config = config

    async def deliver(self, notice: Notice) -> None:
        """Send the mail; NotifyError naming the server and the reason on failure."""
        c = self.config
        context = None
        if c.security != "none":
            context = ssl.create_default_context(cafile=str(c.ca_file) if c.ca_file else None)
        try:
            await aiosmtplib.send(
                build_message(notice, c),
                hostname=c.host,
                port=c.port,
                username=c.username,
                password=c.password,
                use_tls=c.security == "tls",
                start_tls=c.security == "starttls",
                tls_context=context,
                timeout=c.timeout,
            )
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise NotifyError(f"mail to {c.host}:{c.port} failed: {exc}") from exc

    async def aclose(self) -> None:
        """Nothing is kept open between mails."""
