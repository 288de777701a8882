"""Notifications: message text, backoff, the watcher's transitions, and delivery through real
local servers (aiosmtpd, an aiohttp receiver, Mosquitto) from real SQLite outboxes."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import re
import ssl
import subprocess
import time
import wave
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from screener.config import (
    Config,
    EmailConfig,
    MqttConfig,
    NotifyConfig,
    WebhookConfig,
    load_config,
)
from screener.errors import ConfigError
from screener.notify.mail import EmailChannel
from screener.notify.message import compose, json_body, sign, verify
from screener.notify.mqtt import MqttChannel
from screener.notify.sender import Channel, Sender, backoff
from screener.notify.voicemail import locate, message_parts
from screener.notify.watcher import Trouble, transitions
from screener.notify.webhook import WebhookChannel
from screener.store import OutboxRow, Store
from tests.notifyservers import (
    Hooks,
    free_port,
    mosquitto,
    smtp_server,
    wait_for,
    webhook_receiver,
)

NOW = dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.UTC)


def clock_from(start: dt.datetime) -> Callable[[], dt.datetime]:
    """A clock that reads ``start`` now and runs on from it in real time: the outbox rows are
    made at NOW, so a Sender on the real clock would find them older than ``max_age_hours``
    once that much time has passed since NOW was written."""
    began = time.monotonic()
    return lambda: start + dt.timedelta(seconds=time.monotonic() - began)


SECRET = "webhook-test-secret"


def voicemail_payload(call_id: str, audio: Path | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "call_id": call_id,
        "e164": "+81312345678",
        "raw_number": "03-1234-5678",
        "name": "ヤマダ",
        "reasons": ["caller +81312345678: fixed_line", "block entry → voicemail"],
        "status": "SUCCESS",
    }
    if audio is not None:
        payload["audio"] = str(audio)
    return payload


def make_wav(path: Path, seconds: float = 0.5) -> bytes:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(bytes(range(256)) * int(8000 * 2 * seconds / 256))
    return path.read_bytes()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store.open(tmp_path / "screener.db") as s:
        yield s


def config_with(tmp_path: Path, **notify: Any) -> Config:
    defaults = {"poll_interval": 0.05, "retry_base": 0.05, "retry_max": 0.2}
    return Config(db_path=tmp_path / "screener.db", notify=NotifyConfig(**{**defaults, **notify}))


def sender_at_now(tmp_path: Path, store: Store, channel: Channel, **notify: Any) -> Sender:
    """A Sender of ``channel`` whose clock reads NOW, when the test's outbox rows were made."""
    return Sender(config_with(tmp_path, **notify), store, [channel], clock=lambda: NOW)


# --- pure parts -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failures", "expected"),
    [(0, 0.0), (1, 2.0), (2, 4.0), (3, 8.0), (5, 32.0), (6, 60.0), (50, 60.0), (10_000, 60.0)],
)
def test_backoff_doubles_up_to_the_cap(failures: int, expected: float) -> None:
    """Retry waits double from retry_base after each failure and stop growing at retry_max."""
    assert backoff(failures, 2.0, 60.0) == expected


@pytest.mark.parametrize(
    ("language", "topic", "payload", "subject", "in_body"),
    [
        ("ja", "voicemail", voicemail_payload("c1"),
         "留守番電話: +81312345678 (ヤマダ) からのメッセージ", "block entry → voicemail"),
        ("en", "voicemail", voicemail_payload("c1"), "Voicemail from +81312345678 (ヤマダ)",
         "Call id: c1"),
        ("ja", "voicemail", {"call_id": "c2", "raw_number": "anonymous"},
         "留守番電話: anonymous からのメッセージ", "通話 ID: c2"),
        ("ja", "auto_block", {"number": "+81120121852", "failures": 3,
         "expires_at": "2026-12-31T00:00:00+00:00"}, "自動ブロック: +81120121852",
         "ブロック期限: 2026-12-31 09:00"),
        ("en", "auto_block", {"number": "+81120121852", "failures": 3},
         "Auto-blocked: +81120121852", "Blocked until: never"),
        ("ja", "degraded", {"component": "ami", "since": "2026-12-01T09:00:00+00:00"},
         "【screener 障害】Asterisk (AMI) との接続", "18:00 から"),
        ("en", "recovered", {"component": "database", "since": "2026-12-01T09:00:00+00:00"},
         "[screener recovered] writing to the database", "trouble since 2026-12-01 18:00"),
        ("en", "voicemail", {"call_id": "c4", "voicemail": "SUCCESS",
         "caller": {"e164": "+81312345678", "raw": "0312345678", "name": "Sato"}},
         "Voicemail from +81312345678 (Sato)",
         "Caller ID: 0312345678\nStatus: SUCCESS"),
        ("ja", "staff_change", {"endpoint": "staff1", "code": "blocklast", "result": "blocked",
         "number": "+81312340002"}, "電話機から着信拒否に登録しました: +81312340002",
         "staff1 の電話機で *32 が押され"),
        ("en", "staff_change", {"endpoint": "staff2", "code": "undo", "result": "undone",
         "number": "+81312340002"}, "Staff phone: +81312340002 change undone",
         "*34 was keyed on staff2"),
        ("ja", "voicemail", {"call_id": "c3", "name": "Evil\r\nBcc: x@example.org"},
         "留守番電話: 非通知 (Evil Bcc: x@example.org) からのメッセージ", "c3"),
    ],
)  # fmt: skip
def test_compose(
    language: Any, topic: str, payload: dict[str, Any], subject: str, in_body: str
) -> None:
    """Subjects and bodies per topic and language; times in Tokyo; no line break in a subject."""
    notice = compose(OutboxRow(1, topic, f"{topic}:k", payload, NOW), language, "Asia/Tokyo")
    assert notice.subject == subject
    assert in_body in notice.body
    assert f"{topic}:k" in notice.body  # the idempotency key, for whoever reads it


def test_signature_is_hmac_sha256_of_the_exact_body() -> None:
    """sign() is the hex HMAC-SHA256 under the secret; verify() accepts it and nothing else."""
    notice = compose(
        OutboxRow(1, "voicemail", "voicemail:c1", voicemail_payload("c1"), NOW), "ja", "Asia/Tokyo"
    )
    body = json_body(notice)
    # A value computed independently: `openssl dgst -sha256 -hmac SECRET`.
    done = subprocess.run(
        ["openssl", "dgst", "-sha256", "-hmac", SECRET, "-r"],
        input=body,
        capture_output=True,
        check=True,
    )
    assert sign(SECRET, body) == "sha256=" + done.stdout.split()[0].decode()
    assert verify(SECRET, body, sign(SECRET, body))
    assert not verify(SECRET, body + b" ", sign(SECRET, body))
    assert not verify("other", body, sign(SECRET, body))
    assert json.loads(body)["data"]["name"] == "ヤマダ"  # UTF-8, not \\u escapes


T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("seen", "expected"),
    [
        ([(0, True), (10, True), (29, True)], []),  # not yet 30 s
        ([(0, True), (31, True)], ["degraded"]),
        ([(0, True), (31, True), (40, True)], ["degraded"]),  # once per spell
        ([(0, True), (31, True), (50, False)], ["degraded", "recovered"]),
        ([(0, True), (10, False)], []),  # a blip: nothing to say
        ([(0, True), (31, True), (50, False), (60, True), (95, True)],
         ["degraded", "recovered", "degraded"]),
    ],
)  # fmt: skip
def test_watcher_transitions(seen: list[tuple[float, bool]], expected: list[str]) -> None:
    """Degraded after 30 s of trouble (once), recovered when it ends; short blips say nothing."""
    state = Trouble()
    topics = [
        c.topic for t, failing in seen for c in transitions("ami", state, failing, "x", at(t), 30)
    ]
    assert topics == expected


def test_watcher_keys_are_stable_per_spell() -> None:
    """A spell's degraded and recovered rows share its start in their keys (a retry dedupes)."""
    state = Trouble()
    transitions("ami", state, True, "down", at(0), 30)
    (degraded,) = transitions("ami", state, True, "down", at(31), 30)
    (recovered,) = transitions("ami", state, False, "", at(40), 30)
    assert degraded.key == f"degraded:ami:{at(0).isoformat()}"
    assert recovered.key == f"recovered:ami:{at(0).isoformat()}"
    assert degraded.payload["detail"] == "down"


# --- configuration ----------------------------------------------------------------------------


def test_notify_config_from_file_and_environment(tmp_path: Path) -> None:
    """[notify] builds each channel; secrets come from the environment or a file, never TOML."""
    pw = tmp_path / "smtp-password"
    pw.write_text("mail-pw\n")
    path = tmp_path / "screener.toml"
    path.write_text(
        f"""
metrics_listen = "127.0.0.1:9333"
[notify]
language = "en"
[notify.email]
host = "mail.example.org"
security = "tls"
username = "office"
password_file = "{pw}"
from = "pbx@example.org"
to = ["a@example.org", "b@example.org"]
[notify.webhook]
url = "https://hooks.example.org/T0/abc"
[notify.mqtt]
host = "127.0.0.1"
prefix = "office/screener"
"""
    )
    config = load_config(
        path,
        env={"SCREENER_NOTIFY_WEBHOOK_SECRET": "s3", "SCREENER_NOTIFY_MQTT_PASSWORD": "mq-pw-42"},
    )
    n = config.notify
    assert config.metrics_listen == "127.0.0.1:9333"
    assert n.channels == ("email", "webhook", "mqtt") and n.language == "en"
    assert n.email == EmailConfig(
        host="mail.example.org", to=("a@example.org", "b@example.org"), sender="pbx@example.org",
        port=465, security="tls", username="office", password="mail-pw",
    )  # fmt: skip
    assert n.webhook is not None and n.webhook.secret == "s3"
    assert (
        n.mqtt is not None and n.mqtt.password == "mq-pw-42" and n.mqtt.prefix == "office/screener"
    )
    for secret in ("mail-pw", "s3", "mq-pw-42", "T0/abc"):
        assert secret not in repr(config)


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        ('[notify]\nwebhook = { url = "ftp://x" }', {}, "notify.webhook.url: expected an http"),
        ('[notify.email]\nhost = "m"', {}, "notify.email: needs host and to"),
        ('[notify.email]\nhost = "m"\nto = ["a@b"]\nsecurity = "ssl"', {}, "notify.email.security"),
        ('[notify.email]\nhost = "m"\nto = ["a@b"]\npassword = "x"', {},
         "notify.email.password: unknown key"),
        ('[notify.mqtt]\nhost = "m"\nprefix = "a/#"', {}, "notify.mqtt.prefix"),
        ("[notify]\nretry_base = 10\nretry_max = 1", {}, "notify.retry_max"),
        ("[notify]\nkeep_days = 1\nmax_age_hours = 48", {}, "notify.keep_days: must cover"),
        ("[notify]\nkeep_days = 0", {}, "notify.keep_days"),
        ('metrics_listen = "9120"', {}, "metrics_listen"),
        ("", {"SCREENER_METRICS_LISTEN": "localhost"}, "metrics_listen"),
    ],
)  # fmt: skip
def test_notify_config_errors(tmp_path: Path, toml: str, env: dict[str, str], message: str) -> None:
    """A mistake in [notify] or metrics_listen names the key."""
    path = tmp_path / "screener.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(path, env=env)


def test_metrics_listen_defaults_and_turns_off() -> None:
    """127.0.0.1:9120 by default; an empty SCREENER_METRICS_LISTEN turns the server off."""
    assert load_config(env={}).metrics_listen == "127.0.0.1:9120"
    assert load_config(env={"SCREENER_METRICS_LISTEN": ""}).metrics_listen == ""
    assert load_config(env={}, overrides={"metrics_listen": ""}).metrics_listen == ""


# --- delivery through real servers --------------------------------------------------------------


def tls_cert(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=localhost", "-addext",
         "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_email_with_starttls_login_and_the_wav_attached(store: Store, tmp_path: Path) -> None:
    """The voicemail mail arrives over STARTTLS after login, in Japanese, the WAV byte for byte."""
    cert, key = tls_cert(tmp_path)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    audio = make_wav(tmp_path / "msg0000.wav")
    await store.add_outbox(
        "voicemail",
        "voicemail:1700000000.1",
        voicemail_payload("1700000000.1", tmp_path / "msg0000.wav"),
        NOW,
    )
    with smtp_server(tls_context=server_tls, user="office", password="pw") as (port, box):
        email_config = EmailConfig(
            host="127.0.0.1", port=port, to=("staff@example.org",), sender="pbx@example.org",
            security="starttls", username="office", password="pw", ca_file=cert,
        )  # fmt: skip
        channel = EmailChannel(email_config)
        sender = sender_at_now(tmp_path, store, channel, email=email_config)
        assert await sender.deliver_due(channel) == (1, 0)
        await wait_for(lambda: len(box.messages) == 1)
    (mail,) = box.messages
    assert box.logins == ["office"]
    assert box.envelopes == [("pbx@example.org", ["staff@example.org"])]
    assert mail["Subject"] == "留守番電話: +81312345678 (ヤマダ) からのメッセージ"
    assert mail["X-Screener-Idempotency-Key"] == "voicemail:1700000000.1"
    assert mail["Message-ID"] == "<voicemail-1700000000.1@screener>"
    body = mail.get_body(("plain",))
    assert body is not None and "1700000000.1" in body.get_content()
    (attachment,) = list(mail.iter_attachments())
    assert attachment.get_content_type() == "audio/wav"
    assert attachment.get_filename() == "msg0000.wav"
    assert attachment.get_content() == audio
    # Delivered once: nothing is due any more.
    assert await sender.deliver_due(channel) == (0, 0)


async def test_email_refused_login_is_a_failed_attempt_kept_for_retry(
    store: Store, tmp_path: Path
) -> None:
    """A wrong password fails the attempt, records the error, and leaves the row to retry."""
    await store.add_outbox(
        "auto_block", "auto_block:+81120121852:1", {"number": "+81120121852", "failures": 3}, NOW
    )
    cert, key = tls_cert(tmp_path)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    with smtp_server(tls_context=server_tls, user="office", password="pw") as (port, box):
        email_config = EmailConfig(
            host="127.0.0.1", port=port, to=("a@example.org",), username="office",
            password="wrong", ca_file=cert,
        )  # fmt: skip
        channel = EmailChannel(email_config)
        sender = sender_at_now(tmp_path, store, channel, email=email_config)
        assert await sender.deliver_due(channel) == (0, 1)
    assert box.messages == []
    (status,) = await store.delivery_status(["email"], since=NOW - dt.timedelta(days=1))
    assert (status.delivered, status.waiting) == (0, 1)
    assert status.last_error is not None and "535" in status.last_error
    assert "wrong" not in status.last_error


async def test_webhook_signed_post_per_event(store: Store, tmp_path: Path) -> None:
    """Each event is one POST whose signature the receiver verifies, carrying its key."""
    hooks = Hooks(SECRET)
    for n in range(3):
        await store.add_outbox("voicemail", f"voicemail:c{n}", voicemail_payload(f"c{n}"), NOW)
    async with webhook_receiver(hooks) as url:
        hook_config = WebhookConfig(url=url, secret=SECRET)
        channel = WebhookChannel(hook_config)
        sender = sender_at_now(tmp_path, store, channel, webhook=hook_config)
        try:
            assert await sender.deliver_due(channel) == (3, 0)
        finally:
            await channel.aclose()
    assert hooks.bad_signatures == 0
    assert hooks.keys() == ["voicemail:c0", "voicemail:c1", "voicemail:c2"]
    assert hooks.posts[0]["data"]["e164"] == "+81312345678"
    assert hooks.posts[0]["topic"] == "voicemail"


async def test_webhook_with_a_wrong_secret_is_refused_and_retried(
    store: Store, tmp_path: Path
) -> None:
    """A receiver that rejects the signature (401) is a failure, not a delivery."""
    hooks = Hooks(SECRET)
    await store.add_outbox("voicemail", "voicemail:x", voicemail_payload("x"), NOW)
    async with webhook_receiver(hooks) as url:
        hook_config = WebhookConfig(url=url, secret="not-the-secret")
        channel = WebhookChannel(hook_config)
        sender = sender_at_now(tmp_path, store, channel, webhook=hook_config)
        try:
            assert await sender.deliver_due(channel) == (0, 1)
        finally:
            await channel.aclose()
    assert hooks.bad_signatures == 1 and hooks.posts == []


async def test_receiver_down_then_back_every_event_arrives_once(
    store: Store, tmp_path: Path
) -> None:
    """With the receiver down, events are retried with backoff; once it is back all arrive,
    none twice, and the metrics count both the failures and the deliveries."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    hook_config = WebhookConfig(url=url, secret=SECRET, timeout=2)
    counted: list[tuple[str, str]] = []
    channel = WebhookChannel(hook_config)
    sender = Sender(
        config_with(tmp_path, webhook=hook_config),
        store,
        [channel],
        count=lambda c, r: counted.append((c, r)),
        clock=clock_from(NOW),
    )
    keys = [f"voicemail:down{n}" for n in range(5)]
    running = asyncio.create_task(sender.run())
    try:
        for key in keys:
            await store.add_outbox(
                "voicemail", key, voicemail_payload(key), dt.datetime.now(dt.UTC)
            )
            sender.wake()
        await wait_for(
            lambda: counted.count(("webhook", "failed")) >= 10
        )  # each tried twice at least
        hooks = Hooks(SECRET)
        async with webhook_receiver(hooks, port):
            await wait_for(lambda: len(hooks.posts) == 5)
            await store.add_outbox(
                "voicemail", "voicemail:after", voicemail_payload("after"), dt.datetime.now(dt.UTC)
            )
            sender.wake()
            await wait_for(lambda: len(hooks.posts) == 6)
            await asyncio.sleep(0.5)  # time for a duplicate to show, if there were one
    finally:
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
    assert sorted(hooks.keys()) == sorted([*keys, "voicemail:after"])  # all, none twice
    assert counted.count(("webhook", "delivered")) == 6
    (status,) = await store.delivery_status(
        ["webhook"], since=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    )
    assert (status.delivered, status.waiting, status.given_up) == (6, 0, 0)


async def test_a_restart_loses_nothing(tmp_path: Path) -> None:
    """Rows queued while no sender ran are delivered by the next one, on a fresh connection."""
    db = tmp_path / "screener.db"
    async with Store.open(db) as first:
        for n in range(4):
            await first.add_outbox("voicemail", f"voicemail:r{n}", voicemail_payload(f"r{n}"), NOW)
        assert not await first.add_outbox("voicemail", "voicemail:r0", {}, NOW)  # one per key
    hooks = Hooks(SECRET)
    async with Store.open(db) as again, webhook_receiver(hooks) as url:
        hook_config = WebhookConfig(url=url, secret=SECRET)
        channel = WebhookChannel(hook_config)
        sender = Sender(
            dataclasses.replace(config_with(tmp_path, webhook=hook_config)),
            again,
            [channel],
            clock=lambda: NOW,
        )
        try:
            assert await sender.deliver_due(channel) == (4, 0)
        finally:
            await channel.aclose()
    assert hooks.keys() == [f"voicemail:r{n}" for n in range(4)]


async def test_rows_older_than_max_age_are_given_up(store: Store, tmp_path: Path) -> None:
    """A row older than max_age_hours is no longer tried and counts as given up."""
    await store.add_outbox(
        "voicemail", "voicemail:old", voicemail_payload("old"), NOW - dt.timedelta(hours=49)
    )
    channel = WebhookChannel(WebhookConfig(url=f"http://127.0.0.1:{free_port()}/"))
    sender = sender_at_now(tmp_path, store, channel, max_age_hours=48)
    assert await sender.deliver_due(channel) == (0, 0)
    (status,) = await store.delivery_status(["webhook"], since=NOW - dt.timedelta(hours=48))
    assert (status.waiting, status.given_up) == (0, 1)


async def test_mqtt_topic_per_event_and_retained_health(store: Store, tmp_path: Path) -> None:
    """Mosquitto receives each event on <prefix>/<topic>; degraded sets retained <prefix>/health."""
    await store.add_outbox("voicemail", "voicemail:m1", voicemail_payload("m1"), NOW)
    await store.add_outbox(
        "degraded", "degraded:ami:t", {"component": "ami", "since": NOW.isoformat()}, NOW
    )
    with mosquitto(tmp_path) as port:
        mqtt_config = MqttConfig(host="127.0.0.1", port=port, prefix="office/screener")
        channel = MqttChannel(mqtt_config)
        sender = sender_at_now(tmp_path, store, channel, mqtt=mqtt_config)
        got: list[tuple[str, dict[str, Any]]] = []
        async with aiomqtt.Client("127.0.0.1", port=port) as watcher:
            await watcher.subscribe("office/screener/#", qos=1)
            assert await sender.deliver_due(channel) == (2, 0)
            async with asyncio.timeout(10):
                async for message in watcher.messages:
                    assert isinstance(message.payload, bytes)
                    got.append((str(message.topic), json.loads(message.payload)))
                    if len(got) == 3:
                        break
        # A subscriber that comes later still learns the health state (retained).
        async with aiomqtt.Client("127.0.0.1", port=port) as late:
            await late.subscribe("office/screener/health", qos=1)
            async with asyncio.timeout(10):
                async for message in late.messages:
                    assert message.retain
                    assert isinstance(message.payload, bytes)
                    health = json.loads(message.payload)
                    break
    topics = [t for t, _ in got]
    assert topics == [
        "office/screener/voicemail",
        "office/screener/degraded",
        "office/screener/health",
    ]
    assert got[0][1]["key"] == "voicemail:m1" and got[0][1]["data"]["call_id"] == "m1"
    assert health["state"] == "degraded" and health["event"]["key"] == "degraded:ami:t"


def test_readme_channel_configs_load(tmp_path: Path) -> None:
    """Each copy-paste [notify.*] block of the README loads (secret files put in tmp_path)."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```toml\n(.*?)```", readme, re.S) if "[notify." in b]
    assert len(blocks) == 3
    for name in ("smtp-password", "webhook-secret", "mqtt-password"):
        (tmp_path / name).write_text("s3cr3t-from-file\n")
    path = tmp_path / "screener.toml"
    path.write_text("\n".join(blocks).replace("/etc/screener/", f"{tmp_path}/"))
    notify = load_config(path, env={}).notify
    assert notify.channels == ("email", "webhook", "mqtt")
    assert notify.email is not None and notify.email.password == "s3cr3t-from-file"
    assert notify.webhook is not None and notify.webhook.secret == "s3cr3t-from-file"
    assert notify.mqtt is not None and notify.mqtt.password == "s3cr3t-from-file"


async def test_first_retry_that_succeeds_releases_the_rest(store: Store, tmp_path: Path) -> None:
    """Once a failed row goes through, the receiver is back: the other waiting rows are tried
    at once instead of each waiting out its own (long) backoff."""
    clock = [NOW]
    port = free_port()
    hook_config = WebhookConfig(url=f"http://127.0.0.1:{port}/hook", secret=SECRET, timeout=2)
    config = config_with(tmp_path, webhook=hook_config, retry_base=600.0, retry_max=3600.0)
    channel = WebhookChannel(hook_config)
    sender = Sender(config, store, [channel], clock=lambda: clock[0])
    try:
        await store.add_outbox("voicemail", "voicemail:a", voicemail_payload("a"), NOW)
        assert await sender.deliver_due(channel) == (0, 1)  # a: next try in 600 s
        clock[0] = NOW + dt.timedelta(seconds=300)
        await store.add_outbox("voicemail", "voicemail:b", voicemail_payload("b"), clock[0])
        assert await sender.deliver_due(channel) == (0, 1)  # b: next try at 900 s
        hooks = Hooks(SECRET)
        async with webhook_receiver(hooks, port):
            clock[0] = NOW + dt.timedelta(seconds=601)  # only a is due
            assert await sender.deliver_due(channel) == (2, 0)
    finally:
        await channel.aclose()
    assert hooks.keys() == ["voicemail:a", "voicemail:b"]


async def test_webhook_errors_never_name_the_url_path(store: Store, tmp_path: Path) -> None:
    """A URL's path or user info may hold a token: errors name the scheme and host only."""
    port = free_port()
    hook_config = WebhookConfig(url=f"http://bot:pw-77@127.0.0.1:{port}/T0/tok-99", timeout=2)
    await store.add_outbox("voicemail", "voicemail:t", voicemail_payload("t"), NOW)
    channel = WebhookChannel(hook_config)
    sender = sender_at_now(tmp_path, store, channel, webhook=hook_config)
    try:
        assert await sender.deliver_due(channel) == (0, 1)
    finally:
        await channel.aclose()
    (status,) = await store.delivery_status(["webhook"], since=NOW - dt.timedelta(days=1))
    assert status.last_error is not None
    assert status.last_error.startswith(f"webhook http://127.0.0.1:{port} failed")
    assert "tok-99" not in status.last_error and "pw-77" not in status.last_error


@pytest.mark.parametrize(
    ("header", "parts"),
    [
        ("/var/spool/asterisk/voicemail/office/100/INBOX/msg0000",
         ("office", "100", "INBOX", "msg0000")),
        ("/srv/sandbox/pbx/spool/voicemail/default/2001/Urgent/msg0042",
         ("default", "2001", "Urgent", "msg0042")),
        ("office/100/Old/msg9999", ("office", "100", "Old", "msg9999")),
        ("", None),
        (None, None),
        ("/etc/passwd", None),
        ("/var/spool/asterisk/voicemail/office/100/INBOX/msg0000.wav", None),
        ("/var/spool/asterisk/voicemail/office/../INBOX/msg0000", None),
        ("/var/spool/asterisk/voicemail/office/100/Family/msg0000", None),
        ("office/100/INBOX/msg000", None),
    ],
)  # fmt: skip
def test_voicemail_file_header_names_only_a_message(
    header: str | None, parts: tuple[str, str, str, str] | None
) -> None:
    """Only context/mailbox/folder/msgNNNN is taken from ScreenVoicemail's File header."""
    assert message_parts(header) == parts


def test_voicemail_audio_is_found_under_the_spool_only(tmp_path: Path) -> None:
    """The WAV is looked up under voicemail_dir; a missing file or no spool: no attachment."""
    wav = tmp_path / "office" / "100" / "INBOX" / "msg0001.wav"
    wav.parent.mkdir(parents=True)
    wav.write_bytes(b"RIFF")
    header = "/elsewhere/voicemail/office/100/INBOX/msg0001"
    assert locate(header, tmp_path) == wav
    assert locate(header.replace("0001", "0002"), tmp_path) is None
    assert locate(header, None) is None


def test_voicemail_dir_config(tmp_path: Path) -> None:
    """notify.voicemail_dir defaults to Asterisk's spool; "" turns attachments off."""
    assert load_config(env={}).notify.voicemail_dir == Path("/var/spool/asterisk/voicemail")
    path = tmp_path / "screener.toml"
    path.write_text('[notify]\nvoicemail_dir = "/srv/vm"\n')
    assert load_config(path, env={}).notify.voicemail_dir == Path("/srv/vm")
    path.write_text('[notify]\nvoicemail_dir = ""\n')
    assert load_config(path, env={}).notify.voicemail_dir is None
    path.write_text("[notify]\nvoicemail_dir = 3\n")
    with pytest.raises(ConfigError, match=r"notify\.voicemail_dir"):
        load_config(path, env={})
