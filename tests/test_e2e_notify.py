"""Notifications end to end: a blocked caller leaves a voicemail on the real Asterisk sandbox
(over real SIP, the carrier playing a recording into it), and the real ``screener run`` mails it
(to aiosmtpd, with the WAV Asterisk recorded attached) and posts it to a webhook, each with that
call's id and number, while /metrics counts the call under its route."""

from __future__ import annotations

import asyncio
import json
from email.message import EmailMessage
from pathlib import Path

import pytest

from screener.notify.voicemail import message_parts
from tests.conftest import ScreenerProcess
from tests.notifyservers import Hooks, free_port, smtp_server, wait_for, webhook_receiver
from tests.probe import Probe, SandboxInfo, user_event
from tests.test_e2e_observe import fetch, metric_value

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

BLOCKED = "0120121852"  # a toll-free telemarketer on the block list
SECRET = "e2e-webhook-secret"


def spool(sandbox: SandboxInfo) -> Path:
    """Asterisk runs in a chroot: its voicemail spool as this host sees it."""
    return Path(sandbox.raw["instance_dir"]) / "spool" / "voicemail"


def config_text(sandbox: SandboxInfo, metrics_port: int, smtp_port: int, hook_url: str) -> str:
    return f"""
metrics_listen = "127.0.0.1:{metrics_port}"

[notify]
language = "en"
poll_interval = 0.2
voicemail_dir = "{spool(sandbox)}"

[notify.email]
host = "127.0.0.1"
port = {smtp_port}
security = "none"
from = "pbx@example.jp"
to = ["office@example.jp"]

[notify.webhook]
url = "{hook_url}"
"""


def audio_of(mail: EmailMessage) -> tuple[str, bytes] | None:
    for part in mail.iter_attachments():
        if part.get_content_type() == "audio/wav":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return part.get_filename() or "", payload
    return None


async def delivered_once(base: str, within: float) -> str:
    """/metrics once email and the webhook each count one delivery, or as it is after
    ``within`` seconds (the asserts that follow then fail)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        _, text = await asyncio.to_thread(fetch, base + "/metrics")
        name = "screener_notifications_total"
        counts = {
            metric_value(text, name, {"channel": c, "result": "delivered"})
            for c in ("email", "webhook")
        }
        if counts == {1} or asyncio.get_running_loop().time() > deadline:
            return text
        await asyncio.sleep(0.05)


async def test_voicemail_of_a_blocked_caller_is_mailed_posted_and_counted(
    sandbox: SandboxInfo, probe: Probe, tmp_path: Path
) -> None:
    metrics_port = free_port()
    hooks = Hooks(SECRET)
    with smtp_server() as (smtp_port, box):
        async with webhook_receiver(hooks) as hook_url:
            config = tmp_path / "screener.toml"
            config.write_text(config_text(sandbox, metrics_port, smtp_port, hook_url))
            screener = ScreenerProcess(
                sandbox,
                tmp_path,
                SCREENER_CONFIG=str(config),
                SCREENER_NOTIFY_WEBHOOK_SECRET=SECRET,
            )
            assert screener.cli("list", "add", BLOCKED, "--block").returncode == 0
            screener.start()
            try:
                call = await probe.call_sip(
                    BLOCKED, name="Sales", dtmf_delay=1, play="tt-monkeys", hold=2
                )
                assert await probe.routed(call) == ("voicemail", False)
                left = await probe.pbx.wait_for(
                    user_event("ScreenVoicemail", call.call_id), within=90
                )
                assert left.get("Status") == "SUCCESS", left
                assert "/INBOX/msg" in (left.get("File") or ""), left

                await wait_for(lambda: box.messages and hooks.posts, within=20)

                mail = box.messages[0]
                assert BLOCKED in str(mail["Subject"]) or "+81120121852" in str(mail["Subject"])
                body = mail.get_body(preferencelist=("plain",))
                assert body is not None
                text = body.get_content()
                assert call.call_id in text and BLOCKED in text
                attached = audio_of(mail)
                assert attached is not None, "the mail carries no WAV"
                name, wav = attached
                parts = message_parts(left.get("File"))
                assert parts is not None and name == f"{parts[3]}.wav"
                recorded = spool(sandbox).joinpath(*parts[:3], name)
                assert wav[:4] == b"RIFF" and wav == recorded.read_bytes()

                (post,) = hooks.posts
                assert hooks.bad_signatures == 0
                assert post["topic"] == "voicemail"
                assert post["key"] == f"voicemail:{call.call_id}"
                data = post["data"]
                assert data["call_id"] == call.call_id
                assert (data["e164"], data["raw_number"]) == ("+81120121852", BLOCKED)
                assert data["voicemail"] == "SUCCESS"

                # The receivers hold a message before the screener has heard their answer and
                # recorded the delivery; the counters follow that record, a moment later.
                base = f"http://127.0.0.1:{metrics_port}"
                text = await delivered_once(base, within=10)
                labels = {"route": "voicemail", "category": "toll_free", "fallback": "false"}
                assert metric_value(text, "screener_calls_total", labels) == 1
                assert metric_value(text, "screener_voicemails_total", {"status": "SUCCESS"}) == 1
                delivered = {"channel": "email", "result": "delivered"}
                assert metric_value(text, "screener_notifications_total", delivered) == 1
                posted = {"channel": "webhook", "result": "delivered"}
                assert metric_value(text, "screener_notifications_total", posted) == 1
                assert metric_value(text, "screener_redirect_seconds_count", {}) >= 1

                done = screener.cli("notify", "status", "--json")
                status = {c["channel"]: c for c in json.loads(done.stdout)["channels"]}
                assert status["email"]["delivered"] == status["webhook"]["delivered"] == 1
                # Nothing is sent twice: a few more polls of the outbox deliver nothing new.
                await asyncio.sleep(1.0)
                assert len(box.messages) == 1 and len(hooks.posts) == 1
            finally:
                screener.stop()
