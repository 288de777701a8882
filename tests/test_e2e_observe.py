"""Metrics and health of the real ``screener run`` against the real Asterisk sandbox: Asterisk
stopped turns /healthz to 503 and screener_ami_connected to 0 within the watchdog time, and
started again back to 200 and 1."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ScreenerProcess
from tests.notifyservers import free_port
from tests.probe import SANDBOX, SandboxInfo
from tests.test_e2e_faults import ami_answers, ensure_pbx_up, pbx_pid, spawn

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:  # noqa: S310  # a loopback http URL we built
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metric(text: str, name: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"{name} not in /metrics")


def metric_value(text: str, name: str, labels: dict[str, str]) -> float:
    """The sample ``name`` whose labels include ``labels``; 0 when there is none."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return float(sample.value)
    return 0.0


async def wait_health(base: str, status: int, connected: float, within: float) -> float:
    """Seconds until /healthz answers ``status`` and the gauge reads ``connected``."""
    started = time.monotonic()
    while True:
        code, body = await asyncio.to_thread(fetch, base + "/healthz")
        _, text = await asyncio.to_thread(fetch, base + "/metrics")
        if code == status and metric(text, "screener_ami_connected") == connected:
            return time.monotonic() - started
        if time.monotonic() - started > within:
            pytest.fail(f"/healthz stayed {code} {body} for {within}s")
        await asyncio.sleep(0.1)


async def test_healthz_and_ami_gauge_follow_asterisk(sandbox: SandboxInfo, tmp_path: Path) -> None:
    """200/1 while logged in; 503 naming AMI and 0 once Asterisk is killed; 200/1 again after
    it restarts, with the reconnect counted."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    screener = ScreenerProcess(sandbox, tmp_path, SCREENER_METRICS_LISTEN=f"127.0.0.1:{port}")
    screener.start()
    restart = None
    try:
        await wait_health(base, 200, 1.0, 10)
        _, body = await asyncio.to_thread(fetch, base + "/healthz")
        assert json.loads(body) == {"status": "ok", "ami": "logged in", "database": "writable"}
        pid = pbx_pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        down_s = await wait_health(base, 503, 0.0, 10)
        _, body = await asyncio.to_thread(fetch, base + "/healthz")
        assert "ami: not logged in" in json.loads(body)["problems"]
        restart = spawn([str(SANDBOX), "restart"])
        await asyncio.to_thread(ami_answers, sandbox.pbx.port, 30)
        up_s = await wait_health(base, 200, 1.0, 20)
        _, text = await asyncio.to_thread(fetch, base + "/metrics")
        assert metric(text, "screener_ami_reconnects_total") >= 1
        assert metric(text, "process_resident_memory_bytes") > 0
        print(f"\n[healthz] 503 {down_s:.2f} s after the kill; 200 {up_s:.2f} s after AMI answered")
    finally:
        if restart is not None and restart.returncode is None:
            restart.communicate(timeout=60)
        ensure_pbx_up()
        screener.stop()
