"""A real ``screener web`` process and Debian's Chromium driven by Playwright, for browser tests.

No browser is downloaded: Playwright launches /usr/bin/chromium (the ``chromium`` package that
scripts/bootstrap installs). Screenshots go to $SCREENER_SCREENSHOTS when it is set (the README's
pictures in docs/img/ are made that way).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from playwright.async_api import Browser, Page, async_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def web_process(db: Path, log: Path, **env: str) -> Iterator[str]:
    """``screener web`` on a free loopback port; yields its base URL; stopped by its PID."""
    port = free_port()
    full = {**os.environ, "SCREENER_DB": str(db), "SCREENER_CONFIG": "", **env}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "screener", "web", "--host", "127.0.0.1", "--port", str(port)],
            env=full,
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{base}/login", timeout=2) as r:  # noqa: S310  # a fixed http URL on loopback
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"screener web did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def shot(page: Page, name: str) -> None:
    """Save a screenshot as $SCREENER_SCREENSHOTS/<name>.png, when that is set."""
    folder = os.environ.get("SCREENER_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


async def log_in(page: Page, base: str, user: str, password: str) -> None:
    await page.goto(f"{base}/calls")
    assert "/login" in page.url  # closed until logged in
    await page.fill("input[name=user]", user)
    await page.fill("input[name=password]", password)
    await page.click("form.login button[type=submit]")
    await page.wait_for_url(f"{base}/calls")
