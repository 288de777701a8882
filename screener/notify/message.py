"""What a notification says: pure functions from an outbox row to subject, body and JSON.

No I/O here (the audio file is only named, and read by the email channel). Subjects and bodies
are in Japanese by default (``notify.language = "en"`` for English); times are shown in the
office's time zone. Every message carries the outbox row's idempotency key, so that a receiver
can drop a delivery it has already seen (a crash between sending and recording the delivery
makes one possible).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from screener.store import OutboxRow

Language = Literal["ja", "en"]
TOPICS = ("voicemail", "auto_block", "staff_change", "degraded", "recovered", "test")
SIGNATURE_HEADER = "X-Screener-Signature"
KEY_HEADER = "X-Screener-Idempotency-Key"


@dataclass(frozen=True)
class Notice:
    """One event ready for any channel."""

    key: str
    topic: str
    created_at: dt.datetime
    data: dict[str, Any]
    subject: str
    body: str
    audio: Path | None = None

    def as_json(self) -> dict[str, Any]:
        """The JSON document the webhook and MQTT channels send."""
        return {
            "key": self.key,
            "topic": self.topic,
            "created_at": self.created_at.isoformat(),
            "subject": self.subject,
            "text": self.body,
            "data": self.data,
        }


def json_body(notice: Notice) -> bytes:
    """The exact bytes POSTed and published (and signed): compact UTF-8 JSON."""
    return json.dumps(notice.as_json(), ensure_ascii=False, separators=(",", ":")).encode()


def sign(secret: str, body: bytes) -> str:
    """The ``X-Screener-Signature`` value: ``sha256=`` and the HMAC-SHA256 of ``body``, hex."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, signature: str) -> bool:
    """True when ``signature`` is :func:`sign` of ``body`` (compared in constant time)."""
    return hmac.compare_digest(sign(secret, body), signature)


def _text(data: dict[str, Any], *keys: str, default: str = "") -> str:
    for key in keys:
        value = data.get(key)
        if value not in (None, ""):
            return str(value)
    return default


def _when(value: Any, tz: ZoneInfo) -> str:
    """An ISO time or unix seconds, shown in the office's zone; anything else as it is."""
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            moment = dt.datetime.fromtimestamp(value, dt.UTC)
        else:
            moment = dt.datetime.fromisoformat(str(value))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=dt.UTC)
    except (ValueError, OverflowError, OSError):
        return str(value)
    return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M")


def _flatten(data: dict[str, Any]) -> dict[str, Any]:
    """Accept the caller as a nested object too: ``{"caller": {"e164", "raw", "name"}}``."""
    caller = data.get("caller")
    if not isinstance(caller, dict):
        return data
    flat = {k: v for k, v in data.items() if k != "caller"}
    for key, alias in (("e164", "e164"), ("raw", "raw_number"), ("raw_number", "raw_number")):
        if key in caller:
            flat.setdefault(alias, caller[key])
    if "name" in caller:
        flat.setdefault("name", caller["name"])
    return flat


def _caller(data: dict[str, Any], language: Language) -> str:
    number = _text(data, "e164", "caller_e164")
    raw = _text(data, "raw_number", "caller_raw", "caller")
    shown = number or raw or ("非通知" if language == "ja" else "withheld")
    name = _text(data, "name", "caller_name")
    return f"{shown} ({name})" if name else shown


_COMPONENTS = {
    "ja": {"ami": "Asterisk (AMI) との接続", "database": "データベースへの書き込み"},
    "en": {"ami": "the connection to Asterisk (AMI)", "database": "writing to the database"},
}


# Feature codes as staff key them (the dialplan's defaults), and what each result did.
_STAFF_CODES = {
    "block": "*30",
    "unblock": "*31",
    "blocklast": "*32",
    "allowlast": "*33",
    "undo": "*34",
}
_STAFF_RESULTS = {
    "ja": {
        "blocked": "着信拒否に登録しました",
        "allowed": "着信許可に登録しました",
        "removed": "登録を解除しました",
        "undone": "直前の変更を取り消しました",
    },
    "en": {
        "blocked": "blocked",
        "allowed": "allowed",
        "removed": "taken off the lists",
        "undone": "change undone",
    },
}


def compose(row: OutboxRow, language: Language, timezone: str) -> Notice:
    """The subject, body and JSON for one outbox row, in ``language``."""
    tz = ZoneInfo(timezone)
    data = _flatten(row.payload)
    ja = language == "ja"
    at = _when(row.created_at.isoformat(), tz)
    lines: list[str]
    topic = row.topic
    if topic == "voicemail":
        caller = _caller(data, language)
        status = _text(data, "status", "voicemail", default="?")
        reasons = data.get("reasons") or []
        reason_lines = [f"  - {r}" for r in reasons] if isinstance(reasons, list) else []
        if ja:
            subject = f"留守番電話: {caller} からのメッセージ"
            lines = [
                f"{caller} から留守番電話にメッセージがありました。",
                "",
                f"日時: {at}",
                f"発信者番号: {_text(data, 'raw_number', 'caller_raw', 'caller', default='-')}",
                f"録音の状態: {status}",
                "振り分けの理由:",
                *(reason_lines or ["  -"]),
            ]
        else:
            subject = f"Voicemail from {caller}"
            lines = [
                f"{caller} left a voicemail.",
                "",
                f"Time: {at}",
                f"Caller ID: {_text(data, 'raw_number', 'caller_raw', 'caller', default='-')}",
                f"Status: {status}",
                "Why it went to voicemail:",
                *(reason_lines or ["  -"]),
            ]
        lines.append(f"{'通話 ID' if ja else 'Call id'}: {_text(data, 'call_id', default='-')}")
    elif topic == "auto_block":
        number = _text(data, "number", "e164", default="?")
        failures = _text(data, "failures", default="?")
        expiry = data.get("expires_at", data.get("expiry"))
        until = _when(expiry, tz) if expiry is not None else ("無期限" if ja else "never")
        if ja:
            subject = f"自動ブロック: {number}"
            lines = [
                f"{number} は確認番号の入力に {failures} 回失敗したため、自動でブロックしました。",
                f"ブロック期限: {until}",
                "解除するには: screener list forget " + number,
            ]
        else:
            subject = f"Auto-blocked: {number}"
            lines = [
                f"{number} failed the challenge {failures} times and was blocked.",
                f"Blocked until: {until}",
                "To undo: screener list forget " + number,
            ]
    elif topic == "staff_change":
        number = _text(data, "number", default="?")
        phone = _text(data, "endpoint", default="?")
        result = _text(data, "result", default="?")
        code = _STAFF_CODES.get(_text(data, "code"), _text(data, "code", default="?"))
        what = _STAFF_RESULTS[language].get(result, result)
        if ja:
            subject = f"電話機から{what}: {number}"
            lines = [f"{phone} の電話機で {code} が押され、{number} を{what}。"]
        else:
            subject = f"Staff phone: {number} {what}"
            lines = [f"{code} was keyed on {phone}: {number} {what}."]
        lines.append("取り消すには、同じ電話機で *34" if ja else "To undo: *34 on the same phone")
    elif topic in ("degraded", "recovered"):
        component = _text(data, "component", default="?")
        what = _COMPONENTS[language].get(component, component)
        since = _when(data["since"], tz) if "since" in data else at
        detail = _text(data, "detail")
        if topic == "degraded":
            subject = f"【screener 障害】{what}" if ja else f"[screener degraded] {what}"
            lines = (
                [f"{what}に問題があります ({since} から)。", "着信は代替ルートで受けています。"]
                if ja
                else [f"Trouble with {what} since {since}.", "Calls take the dialplan fallback."]
            )
        else:
            subject = f"【screener 復旧】{what}" if ja else f"[screener recovered] {what}"
            lines = (
                [f"{what}は復旧しました ({since} からの障害)。"]
                if ja
                else [f"{what} works again (trouble since {since})."]
            )
        if detail:
            lines.append(f"{'詳細' if ja else 'Detail'}: {detail}")
    elif topic == "test":
        subject = "screener 通知テスト" if ja else "screener notification test"
        lines = [
            "これは screener の通知テストです。" if ja else "This is a screener test message.",
            f"{'日時' if ja else 'Time'}: {at}",
        ]
    else:
        subject = f"screener: {topic}"
        lines = [json.dumps(data, ensure_ascii=False, indent=2)]
    lines += ["", f"{'識別キー' if ja else 'Key'}: {row.key}"]
    audio = data.get("audio")
    return Notice(
        key=row.key,
        topic=topic,
        created_at=row.created_at,
        data=data,
        subject=_one_line(subject),
        body="\n".join(lines) + "\n",
        audio=Path(audio) if isinstance(audio, str) and audio else None,
    )


def _one_line(text: str) -> str:
    """Caller data is hostile: no line break may reach a mail header or an MQTT topic."""
    return " ".join(text.split())[:200]


def sample_notice(now: dt.datetime, language: Language, timezone: str) -> Notice:
    """The message ``screener notify test`` sends through every channel."""
    key = f"test:{now.strftime('%Y%m%dT%H%M%S.%f')}"
    return compose(OutboxRow(0, "test", key, {}, now), language, timezone)
