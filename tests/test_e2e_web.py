"""The console end to end: a call placed on the real Asterisk sandbox, screened by the real
``screener run``, appears live in a real browser (Debian's Chromium) on the real
``screener web``; staff block it from its row and the next call from it goes to voicemail."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import expect

from screener.numbers import parse_list_number
from tests.conftest import ScreenerProcess
from tests.probe import Probe, SandboxInfo, new_call_id, user_event

from .browser import chromium, log_in, shot, web_process
from .webutil import PASSWORD

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

NUMBER = "08001234567"  # unknown toll-free: challenged
NAME = "<script>alert(1)</script><b>x</b>"  # Asterisk would escape quotes


async def test_sandbox_call_appears_live_and_is_blocked_from_its_row(
    screener: ScreenerProcess, probe: Probe, tmp_path: Path
) -> None:
    """Log in; the sandbox call shows up live; block it; check says voicemail and the next
    call from it is routed there; after logout every page is closed."""
    screener.start()
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    added = screener.cli("user", "add", "sato", "--role", "staff", "--password-file", str(pw))
    assert added.returncode == 0, added.stderr
    e164 = parse_list_number(NUMBER, "JP", prefix=False)
    with web_process(screener.db, tmp_path / "web.log") as base:
        async with chromium() as browser:
            page = await browser.new_page(locale="ja-JP", viewport={"width": 1280, "height": 800})
            page.on("dialog", lambda d: d.accept())
            await log_in(page, base, "sato", PASSWORD)
            await expect(page.locator("#live")).to_be_visible()

            first = await probe.call_local(NUMBER, name=NAME)
            assert await probe.routed(first) == ("challenge", False)
            row = page.locator(f'tr[data-e164="{e164}"]')
            await expect(row).to_have_count(1, timeout=10_000)  # pushed, no reload
            await expect(row.locator(".c-route")).to_have_text("challenge")
            await expect(row.locator(".c-name")).to_have_text(NAME)  # as text, not markup
            await shot(page, "calls")

            await row.locator("button.block").click()
            await page.wait_for_url("**/calls?msg=*")
            await expect(page.locator(".msg")).to_contain_text(e164)
            check = screener.cli("check", NUMBER)
            assert "→ voicemail" in check.stdout, check.stdout + check.stderr

            second = await probe.call_local(NUMBER, name=NAME)
            assert await probe.routed(second) == ("voicemail", False)
            screener.wait_calls([first.call_id, second.call_id])

            await page.goto(f"{base}/numbers/{e164.replace('+', '%2B')}")
            await expect(page.locator("#check-route")).to_contain_text("voicemail")
            await expect(page.locator("body")).to_contain_text("web:sato")
            await expect(page.locator("tr[data-rowid]")).to_have_count(2)
            await shot(page, "number")
            await page.goto(f"{base}/")
            await shot(page, "dashboard")

            await page.click("#logout")
            await page.wait_for_url("**/login")
            for path in ("/", "/calls", f"/numbers/{e164}", "/lists", "/voicemail"):
                await page.goto(base + path)
                assert "/login" in page.url, path
    log = (tmp_path / "web.log").read_text()
    assert "Traceback" not in log, log


async def test_sandbox_voicemail_plays_in_the_browser(
    screener: ScreenerProcess, probe: Probe, sandbox: SandboxInfo, tmp_path: Path
) -> None:
    """A blocked caller who talks leaves a message in the sandbox's mailbox (app_voicemail,
    WAV); the console lists it and the browser's audio element loads, plays and seeks it."""
    caller = "0120121852"
    assert screener.cli("list", "add", caller, "--block").returncode == 0
    screener.start()
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    assert (
        screener.cli("user", "add", "ito", "--role", "staff", "--password-file", str(pw)).returncode
        == 0
    )
    mailbox = Path(sandbox.raw["instance_dir"]) / "spool" / "voicemail" / "office" / "100"

    # The caller's side plays a recording into the call (Local channel, then hangs up).
    call_id = new_call_id()
    response = await probe.pbx.ami.send(
        {
            "Action": "Originate",
            "Channel": "Local/0312345678@from-trunk",
            "CallerID": f"<{caller}>",
            "Application": "Playback",
            "Data": "tt-monkeys&tt-monkeys",
            "Async": "true",
            "ChannelId": call_id[:-1] + "a",
            "OtherChannelId": call_id,
            "Timeout": "30000",
        },
        timeout=5,
    )
    assert response.success, response.message
    await probe.pbx.wait_for(user_event("ScreenRouted", call_id, Route="voicemail"), 15)
    await probe.pbx.wait_for(user_event("ScreenVoicemail", call_id), 60)

    with web_process(
        screener.db, tmp_path / "web.log", SCREENER_VOICEMAIL_DIR=str(mailbox)
    ) as base:
        async with chromium() as browser:
            page = await browser.new_page(locale="en-US")
            await log_in(page, base, "ito", PASSWORD)
            await page.goto(f"{base}/voicemail")
            row = page.locator("tr", has_text=caller).first
            await expect(row).to_be_visible()
            played = await row.locator("audio").evaluate(
                """async (el) => {
                    el.muted = true;
                    await el.play();
                    await new Promise((ok) => setTimeout(ok, 300));
                    el.currentTime = 1.0;
                    await new Promise((ok) => el.addEventListener("seeked", ok, {once: true}));
                    return {time: el.currentTime, duration: el.duration, error: el.error};
                }"""
            )
            assert played["error"] is None and played["duration"] >= 3
            assert played["time"] >= 0.9
