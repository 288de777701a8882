"""The AMI secret of a running ``screener run`` never shows in ``ps`` (docs/security.md)."""

# the secrets here are test fixtures; the test is that they never leak

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fakeami import FakeAMI

SECRET = "hunter2-Ps5wq"  # distinctive, so that a leak is easy to spot
REPO = Path(__file__).resolve().parent.parent


@contextlib.asynccontextmanager
async def screener_run(
    fake: FakeAMI, tmp: Path, **extra_env: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """The real ``screener run`` logged in to ``fake``; stopped by PID on the way out."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCREENER_")}
    env.update(
        SCREENER_AMI_HOST=fake.host,
        SCREENER_AMI_PORT=str(fake.port),
        SCREENER_DB=str(tmp / "screener.db"),
        SCREENER_CONFIG="",
        SCREENER_LOG_FORMAT="json",
        **extra_env,
    )
    init = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "screener", "init", env=env, cwd=REPO,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert await init.wait() == 0
    log = (tmp / "screener.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "screener", "run",
        env=env, cwd=REPO, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
    )  # fmt: skip
    try:
        await fake.wait_until(lambda: fake.logins >= 1 or proc.returncode is not None, 20)
        assert fake.logins == 1, (tmp / "screener.log").read_text()
        yield proc
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                os.kill(proc.pid, signal.SIGKILL)
                await proc.wait()
        log.close()


async def ps_args(pid: int) -> str:
    """``ps -o args=`` for one PID: what any local user sees."""
    ps = await asyncio.create_subprocess_exec(
        "ps", "-ww", "-o", "args=", "-p", str(pid), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await ps.communicate()
    return out.decode("utf-8", "replace")


@pytest.mark.slow
@pytest.mark.parametrize("via", ["env", "file"])
async def test_secret_never_in_ps_or_cmdline(tmp_path: Path, via: str) -> None:
    """The secret is never a flag: /proc/PID/cmdline and ps show no trace of it.

    From SCREENER_AMI_SECRET_FILE it is not even in the process environment (which only the
    same user and root can read, /proc/PID/environ is mode 0400).
    """
    if shutil.which("ps") is None:
        pytest.skip("no ps on this machine")
    secret_file = tmp_path / "ami-secret"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)
    env = (
        {"SCREENER_AMI_SECRET": SECRET}
        if via == "env"
        else {"SCREENER_AMI_SECRET_FILE": str(secret_file)}
    )
    async with FakeAMI(secret=SECRET) as fake, screener_run(fake, tmp_path, **env) as proc:
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        args = await ps_args(proc.pid)
        assert "screener" in args and "run" in args
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes()
        mode = Path(f"/proc/{proc.pid}/environ").stat().st_mode & 0o777
    assert SECRET.encode() not in cmdline
    assert SECRET not in args
    assert mode == 0o400
    assert (SECRET.encode() in environ) is (via == "env")
    assert SECRET not in (tmp_path / "screener.log").read_text()
