"""`screener notify status` and `screener notify test` through click's runner, against a real
local HTTP receiver (a thread: the command runs its own event loop)."""

from __future__ import annotations

import asyncio
import datetime as dt
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from click.testing import CliRunner, Result

from screener.cli import main
from screener.notify.message import SIGNATURE_HEADER, verify
from screener.store import Store
from tests.notifyservers import free_port

SECRET = "cli-hook-secret"


class _Receiver(http.server.BaseHTTPRequestHandler):
    posts: ClassVar[list[dict[str, object]]] = []

    def do_POST(self) -> None:  # the name http.server calls
        body = self.rfile.read(int(self.headers["Content-Length"]))
        ok = verify(SECRET, body, self.headers.get(SIGNATURE_HEADER, ""))
        if ok:
            self.posts.append(json.loads(body))
        self.send_response(204 if ok else 401)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    _Receiver.posts = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def run(tmp_path: Path, url: str, *args: str) -> Result:
    config = tmp_path / "screener.toml"
    config.write_text(f'[notify]\nlanguage = "en"\n[notify.webhook]\nurl = "{url}"\n')
    return CliRunner().invoke(
        main,
        [*args, "--db", str(tmp_path / "screener.db"), "--config", str(config)],
        env={"SCREENER_NOTIFY_WEBHOOK_SECRET": SECRET},
    )


def test_notify_test_delivers_through_the_webhook(tmp_path: Path, receiver: str) -> None:
    """`notify test` sends one signed test message and says it was delivered."""
    result = run(tmp_path, receiver, "notify", "test")
    assert result.exit_code == 0, result.output
    assert result.stdout == "webhook: delivered\n"
    (post,) = _Receiver.posts
    assert post["topic"] == "test" and str(post["key"]).startswith("test:")


def test_notify_test_reports_a_channel_that_fails(tmp_path: Path) -> None:
    """A receiver that is down: the line names the failure and the exit code is 7."""
    result = run(tmp_path, f"http://127.0.0.1:{free_port()}/hook", "notify", "test")
    assert result.exit_code == 7
    assert result.stdout.startswith("webhook: failed: webhook http://127.0.0.1:")
    assert "not delivered through webhook" in result.stderr


def test_notify_status_counts_delivered_and_waiting(tmp_path: Path, receiver: str) -> None:
    """`notify status --json` shows each channel's delivered and waiting rows and last error."""

    async def prepare() -> None:
        async with Store.open(tmp_path / "screener.db") as store:
            now = dt.datetime.now(dt.UTC)
            for n in range(3):
                await store.add_outbox("voicemail", f"voicemail:{n}", {"call_id": str(n)}, now)
            await store.record_delivery(1, "webhook", delivered_at=now)
            await store.record_delivery(2, "webhook", delivered_at=None, next_at=now, error="503")

    asyncio.run(prepare())
    result = run(tmp_path, receiver, "notify", "status", "--json")
    assert result.exit_code == 0, result.output
    status = json.loads(result.stdout)
    assert status["outbox"] == 3
    (webhook,) = status["channels"]
    assert (webhook["channel"], webhook["delivered"], webhook["waiting"]) == ("webhook", 1, 2)
    assert webhook["last_error"] == "503"
    table = run(tmp_path, receiver, "notify", "status")
    assert table.exit_code == 0 and "3 events in the outbox" in table.stdout
