"""The console in a real browser (Debian's Chromium via Playwright) over a real ``screener web``.

The calls here are written by the store's own recording path (what the agent calls), not placed
on Asterisk: tests/test_e2e_web.py does the same with a call on the real sandbox.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import wave
from pathlib import Path

import pytest
from playwright.async_api import expect

from screener.store import Store

from .browser import chromium, log_in, shot, web_process
from .webutil import PASSWORD, call

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def _cli(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "screener", *args, "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _mailbox(root: Path) -> Path:
    box = root / "voicemail" / "office" / "100"
    (box / "INBOX").mkdir(parents=True)
    with wave.open(str(box / "INBOX" / "msg0000.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        # Two seconds of a quiet square wave: something to play and to seek in.
        w.writeframes((b"\x00\x08" * 20 + b"\x00\xf8" * 20) * 400)
    (box / "INBOX" / "msg0000.txt").write_text(
        '[message]\ncallerid="迷惑 <script>" <0120121852>\n'
        f"origtime={int(dt.datetime.now(dt.UTC).timestamp()) - 600}\nduration=2\n"
        "msg_id=1700000000-00000001\n"
    )
    return box


async def test_browser_live_call_block_voicemail_logout(tmp_path: Path) -> None:
    """Log in; a new call shows up live; block it from its row; check says voicemail; a
    voicemail plays and seeks; after logout the pages are closed."""
    db = tmp_path / "screener.db"
    now = dt.datetime.now(dt.UTC)
    async with Store.open(db) as store:
        await store.record_calls(
            [
                call(
                    n,
                    number=num,
                    e164=e,
                    name=name,
                    route=route,
                    at=now - dt.timedelta(hours=n * 7),
                )
                for n, (num, e, name, route) in enumerate(
                    [
                        ("09011112222", "+819011112222", "山田商店", "staff"),
                        ("0312345678", "+81312345678", "", "staff"),
                        ("anonymous", None, "", "challenge"),
                        ("0570000123", "+81570000123", "<b>ナビ</b>", "challenge"),
                        ("0990123456", "+81990123456", "", "voicemail"),
                    ]
                    * 4,
                    start=1,
                )
            ]
        )
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    assert (
        _cli(db, "user", "add", "suzuki", "--role", "staff", "--password-file", str(pw)).returncode
        == 0
    )
    box = _mailbox(tmp_path)
    with web_process(db, tmp_path / "web.log", SCREENER_VOICEMAIL_DIR=str(box)) as base:
        async with chromium() as browser:
            page = await browser.new_page(locale="ja-JP", viewport={"width": 1280, "height": 900})
            page.on("dialog", lambda d: d.accept())
            await log_in(page, base, "suzuki", PASSWORD)
            await expect(page.locator("#live")).to_be_visible()

            async with Store.open(db) as store:
                await store.record_call(
                    call(
                        999,
                        number="0120-121-852",
                        e164="+81120121852",
                        name='<img src=x onerror="alert(1)">',
                        route="challenge",
                        at=now,
                    )
                )
            row = page.locator('tr[data-e164="+81120121852"]')
            await expect(row).to_have_count(1, timeout=5000)
            await expect(row.locator(".c-name")).to_have_text('<img src=x onerror="alert(1)">')
            await shot(page, "calls")

            await row.locator("button.block").click()
            await page.wait_for_url("**/calls?msg=*")
            await expect(page.locator(".msg")).to_contain_text("+81120121852")
            check = _cli(db, "check", "0120121852")
            assert "→ voicemail" in check.stdout, check.stdout

            await page.goto(f"{base}/numbers/%2B81120121852")
            await expect(page.locator("#check-route")).to_contain_text("voicemail")
            await expect(page.locator("body")).to_contain_text("web:suzuki")
            await shot(page, "number")

            await page.goto(f"{base}/")
            await shot(page, "dashboard")

            await page.goto(f"{base}/voicemail")
            audio = page.locator("audio")
            await expect(audio).to_have_count(1)
            played = await audio.evaluate(
                """async (el) => {
                    el.muted = true;
                    await el.play();
                    await new Promise((ok) => setTimeout(ok, 300));
                    el.currentTime = 1.5;
                    await new Promise((ok) => el.addEventListener("seeked", ok, {once: true}));
                    return {time: el.currentTime, duration: el.duration, error: el.error};
                }"""
            )
            assert played["error"] is None and played["duration"] == pytest.approx(2.0, abs=0.1)
            assert played["time"] >= 1.4

            await page.click("#logout")
            await page.wait_for_url("**/login")
            for path in ("/", "/calls", "/lists", "/voicemail"):
                await page.goto(base + path)
                assert "/login" in page.url
    log = (tmp_path / "web.log").read_text()
    assert "Traceback" not in log, log
