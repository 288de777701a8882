"""A real SIP softphone for the end-to-end tests: Debian's baresip, scripted.

It registers to the sandbox PBX as a staff phone (``staff3``, whose endpoint and password only
the sandbox makes), answers every call by itself, and is driven over baresip's own control
socket (``ctrl_tcp``: netstring-framed JSON on a loopback port): events such as
``CALL_ESTABLISHED`` and ``CALL_CLOSED`` come in (baresip does not keep events for a client
that connects later, so whether it registered is read from the PBX), commands such as
``sndcode`` (key a digit, sent as RFC 4733 telephone-events) go out. Everything binds to
127.0.0.1; the process is stopped by its PID. Nobody here wrote this client: that is the point.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import wave
from pathlib import Path
from typing import Any

BARESIP = "baresip"


def free_port() -> int:
    """A free TCP port on loopback (for the control socket)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_udp_port() -> int:
    """A free UDP port on loopback (for SIP)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Softphone:
    """One baresip process registered as ``user`` to the PBX at ``pbx`` (host:port)."""

    def __init__(self, folder: Path, user: str, password: str, pbx: str) -> None:
        self.folder = folder
        self.user = user
        self.ctrl_port = free_port()
        self.sip_port = free_udp_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.events: list[dict[str, Any]] = []
        self._changed = asyncio.Condition()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        folder.mkdir(parents=True, exist_ok=True)
        silence = folder / "silence.wav"
        with wave.open(str(silence), "wb") as w:  # what the phone's microphone "hears"
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(b"\0" * 8000 * 2 * 30)
        (folder / "config").write_text(
            "poll_method epoll\n"
            "net_interface 127.0.0.1\n"
            f"sip_listen 127.0.0.1:{self.sip_port}\n"
            f"audio_source aufile,{silence}\n"
            "rtp_ports 12000-12999\n"
            "module_path /usr/lib/baresip/modules\n"
            "module g711.so\n"
            "module aufile.so\n"
            "module ctrl_tcp.so\n"
            "module_tmp account.so\n"
            "module_app menu.so\n"
            f"ctrl_tcp_listen 127.0.0.1:{self.ctrl_port}\n"
        )
        # G.711 only, as the PBX's staff endpoints allow; baresip sends DTMF as RFC 4733.
        accounts = folder / "accounts"
        accounts.write_text(
            f"<sip:{user}@{pbx}>;auth_pass={password};answermode=auto;"
            "audio_codecs=PCMU,PCMA;regint=120\n"
        )
        accounts.chmod(0o600)

    @staticmethod
    def available() -> bool:
        """True when Debian's baresip is installed (scripts/bootstrap installs it)."""
        return shutil.which(BARESIP) is not None

    async def __aenter__(self) -> Softphone:
        log = (self.folder / "baresip.log").open("ab")
        self.proc = subprocess.Popen(  # noqa: ASYNC220 (a fork-exec: milliseconds, once per test)
            [BARESIP, "-f", str(self.folder)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = asyncio.get_running_loop().time() + 15
        while True:
            try:
                self._reader, self._writer = await asyncio.open_connection(
                    "127.0.0.1", self.ctrl_port
                )
                break
            except OSError:
                if self.proc.poll() is not None or asyncio.get_running_loop().time() > deadline:
                    raise RuntimeError(f"baresip did not start: {self.log_tail()}") from None
                await asyncio.sleep(0.1)
        self._task = asyncio.create_task(self._collect())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # by its PID
            try:
                await asyncio.to_thread(self.proc.wait, 10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait, 5)

    def log_tail(self, chars: int = 2000) -> str:
        """The end of baresip's own output, for failure messages."""
        path = self.folder / "baresip.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    async def _collect(self) -> None:
        assert self._reader is not None
        while True:
            length = await self._reader.readuntil(b":")
            body = await self._reader.readexactly(int(length[:-1]))
            await self._reader.readexactly(1)  # the netstring's closing ","
            with contextlib.suppress(ValueError):
                message = json.loads(body)
                async with self._changed:
                    self.events.append(message)
                    self._changed.notify_all()

    async def wait_event(self, kind: str, within: float = 20.0) -> dict[str, Any]:
        """The first event of this type (seen already or yet to come)."""

        def found() -> dict[str, Any] | None:
            return next((e for e in self.events if e.get("type") == kind), None)

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: found() is not None), within)
            except TimeoutError:
                seen = [e.get("type") for e in self.events]
                raise AssertionError(
                    f"baresip sent no {kind} within {within}s (saw {seen}); {self.log_tail()}"
                ) from None
        event = found()
        assert event is not None
        return event

    async def command(self, name: str, params: str = "") -> None:
        """Run one of baresip's commands (as its menu would), e.g. ``sndcode 3``."""
        assert self._writer is not None
        body = json.dumps({"command": name, "params": params, "token": name}).encode()
        self._writer.write(str(len(body)).encode() + b":" + body + b",")
        await self._writer.drain()

    async def key(self, digits: str) -> None:
        """Key digits on the phone's keypad during the call (RFC 4733 telephone-events)."""
        for digit in digits:
            await self.command("sndcode", digit)
            await asyncio.sleep(0.3)  # a key held and released, as a finger would
