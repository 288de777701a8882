"""``service.run()`` wires the observers: one hub for the service and for /metrics, and the
voicemail outbox row that names the message's WAV. Against a FakeAMI and a real SQLite file."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from screener import events, service
from screener.config import NotifyConfig
from screener.policy import ListKind
from screener.service import Screener
from screener.store import Store
from tests.fakeami import FakeAMI
from tests.notifyservers import free_port
from tests.test_service import (
    FIXED,
    FIXED_E164,
    MOBILE,
    Running,
    add_entry,
    eventually,
    make_config,
    new_call_id,
    request,
    snapshot,
    voicemail_event,
)


@contextlib.asynccontextmanager
async def running(config: service.Config, fake: FakeAMI, hub: events.Hub) -> AsyncIterator[Running]:
    async with Store.open(config.db_path):
        pass
    stop = asyncio.Event()
    ready: asyncio.Future[Screener] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(service.run(config, stop=stop, ready=ready.set_result, hub=hub))
    await asyncio.wait({ready, task}, timeout=5, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    try:
        yield Running(fake, ready.result(), config, stop, task)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(url, timeout=2) as reply:  # noqa: S310  # a loopback URL we built
        text = reply.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): float(s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_count_what_the_service_publishes_on_the_one_hub(
    fake: FakeAMI, db: Path
) -> None:
    """A routed call and a fallback reach /metrics through the hub run() shares with the
    observers: the call under its route and category, its Redirect time, the fallback under
    the caller's category."""
    await add_entry(db, ListKind.BLOCK, FIXED_E164)
    port = free_port()
    hub = events.Hub()
    seen: list[events.Event] = []
    hub.subscribe(seen.append)
    config = make_config(fake, db, metrics_listen=f"127.0.0.1:{port}")
    async with running(config, fake, hub) as svc:
        assert svc.screener.hub is hub
        routed, fell_back = new_call_id(), new_call_id()
        await fake.emit(request(routed, FIXED))
        await svc.redirects(1)
        await fake.emit(
            snapshot(
                fell_back,
                MOBILE,
                user_event="ScreenFallback",
                context="screen-fallback",
                exten="s",
                Route="staff",
            )
        )

        async def counted() -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
            samples = await asyncio.to_thread(scrape, f"http://127.0.0.1:{port}/metrics")
            fallback = (
                "screener_calls_total",
                frozenset({"route": "staff", "category": "mobile", "fallback": "true"}.items()),
            )
            return samples if samples.get(fallback) == 1 else None

        samples = await eventually(counted, within=5)
    call = (
        "screener_calls_total",
        frozenset({"route": "voicemail", "category": "fixed_line", "fallback": "false"}.items()),
    )
    assert samples[call] == 1
    assert samples[("screener_redirect_seconds_count", frozenset())] == 1
    (screened,) = [e for e in seen if isinstance(e, events.CallScreened)]
    assert screened.call_id == routed and screened.redirect_ms is not None
    assert screened.redirect_ms >= screened.decision_ms
    (fallback,) = [e for e in seen if isinstance(e, events.Fallback)]
    assert (fallback.call_id, fallback.category) == (fell_back, "mobile")


@pytest.mark.parametrize(
    ("file_header", "exists", "attached"),
    [
        ("/var/spool/asterisk/voicemail/office/100/INBOX/msg0003", True, True),
        ("/srv/sandbox/pbx/spool/voicemail/office/100/INBOX/msg0003", True, True),  # chroot
        ("/var/spool/asterisk/voicemail/office/100/INBOX/msg0003", False, False),
        ("/etc/passwd", True, False),
        ("", True, False),
    ],
)
async def test_voicemail_outbox_row_names_the_message_wav(
    fake: FakeAMI, db: Path, tmp_path: Path, file_header: str, exists: bool, attached: bool
) -> None:
    """ScreenVoicemail's File names the message; the outbox row carries its WAV under
    notify.voicemail_dir only when that file is there, whatever the header says."""
    spool = tmp_path / "spool"
    wav = spool / "office" / "100" / "INBOX" / "msg0003.wav"
    if exists:
        wav.parent.mkdir(parents=True)
        wav.write_bytes(b"RIFF....WAVE")
    config = make_config(fake, db)
    config = dataclasses.replace(config, notify=NotifyConfig(voicemail_dir=spool))
    async with running(config, fake, events.Hub()) as svc:
        call_id = new_call_id()
        await fake.emit(request(call_id, FIXED))
        await svc.redirects(1)
        await svc.call(call_id)
        await fake.emit({**voicemail_event(call_id, FIXED, "SUCCESS"), "File": file_header})

        async def row() -> dict[str, object] | None:
            async with Store.open(db, readonly=True) as store:
                rows = await store.outbox(topic="voicemail")
            return rows[0].payload if rows else None

        payload = await eventually(row)
    assert payload["call_id"] == call_id and payload["e164"] == FIXED_E164
    assert payload.get("audio") == (str(wav) if attached else None)
