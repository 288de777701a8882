"""Part 2: an AMI *server* on 127.0.0.1 that plays Asterisk at a rising call rate.

Built on the ideas of ``tests/fakeami.py`` (greeting, Login, Ping, a reply per action, bytes
split on CRLFCRLF), trimmed for throughput: each call is one pre-formatted ``transport.write``
of a ScreenRequest UserEvent with a full channel snapshot among ``NOISE`` unrelated events of
realistic sizes (Newchannel, Newstate, VarSet, Newexten, RTCPSent, ...), and every Redirect is
answered at once and timed against the moment its request was written.

The client under test (``screener run`` or the no-lookup floor in ``bench.floor``) runs as a
subprocess; it is started and stopped by PID here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.stats import summary

GREETING = b"Asterisk Call Manager/9.0.0\r\n"
SEP = b"\r\n\r\n"
USERNAME = "screener"
SECRET = "bench-secret"  # a throw-away secret for a loopback server that lives for one run  # noqa: S105
SUSTAINED_P99_MS = 50.0
DRAIN_SECONDS = 3.0

# One call as Asterisk would stream it: ~10 events before the request, ~11 after (RTCP etc.).
_SNAPSHOT = (
    "Channel: {chan}\r\nChannelState: 4\r\nChannelStateDesc: Ring\r\n"
    "CallerIDNum: {num}\r\nCallerIDName: {name}\r\nConnectedLineNum: <unknown>\r\n"
    "ConnectedLineName: <unknown>\r\nLanguage: ja\r\nAccountCode: \r\n"
    "Context: {ctx}\r\nExten: {did}\r\nPriority: {prio}\r\nUniqueid: {uid}\r\n"
    "Linkedid: {uid}\r\n"
)
_HEAD = "Event: {event}\r\nPrivilege: {priv}\r\nTimestamp: {ts}\r\nSystemName: pbx1\r\n"
_NOISE_BEFORE = (
    ("Newchannel", "call,all", ""),
    ("VarSet", "dialplan,all", "Variable: SIPCALLID\r\nValue: {uid}-a84c1e@192.0.2.10\r\n"),
    ("VarSet", "dialplan,all", "Variable: __SIPURI\r\nValue: sip:{num}@192.0.2.10:5060\r\n"),
    ("Newexten", "dialplan,all", "Extension: {did}\r\nApplication: NoOp\r\nAppData: inbound\r\n"),
    ("VarSet", "dialplan,all", "Variable: CHANNEL(language)\r\nValue: ja\r\n"),
    ("Newexten", "dialplan,all", "Extension: {did}\r\nApplication: Set\r\nAppData: X=1\r\n"),
    ("VarSet", "dialplan,all", "Variable: SCREEN_STATE\r\nValue: holding\r\n"),
    ("Newexten", "dialplan,all", "Extension: {did}\r\nApplication: UserEvent\r\nAppData: S\r\n"),
    ("DeviceStateChange", "call,all", "Device: PJSIP/carrier\r\nState: INUSE\r\n"),
    ("NewConnectedLine", "call,all", ""),
)
_NOISE_AFTER = (
    ("Newstate", "call,all", ""),
    ("Newexten", "dialplan,all", "Extension: {did}\r\nApplication: Ringing\r\nAppData: \r\n"),
    ("Newexten", "dialplan,all", "Extension: {did}\r\nApplication: Wait\r\nAppData: 4\r\n"),
    ("VarSet", "dialplan,all", "Variable: RTPAUDIOQOS\r\nValue: ssrc=1;themssrc=2;lp=0\r\n"),
    ("RTCPSent", "reporting,all", "{rtcp}"),
    ("RTCPReceived", "reporting,all", "{rtcp}"),
    ("VarSet", "dialplan,all", "Variable: BRIDGEPEER\r\nValue: \r\n"),
    ("Newexten", "dialplan,all", "Extension: {did}\r\nApplication: NoOp\r\nAppData: hold\r\n"),
    ("RTCPSent", "reporting,all", "{rtcp}"),
    ("VarSet", "dialplan,all", "Variable: DIALSTATUS\r\nValue: \r\n"),
    ("RTCPReceived", "reporting,all", "{rtcp}"),
)
NOISE = len(_NOISE_BEFORE) + len(_NOISE_AFTER)
_RTCP = (
    "To: 192.0.2.10:10001\r\nFrom: 127.0.0.1:10000\r\nSSRC: 0x2f1a6e0c\r\nPT: 200(SR)\r\n"
    "ReportCount: 1\r\nSentNTP: 1732700000.123456\r\nSentRTP: 160\r\nSentPackets: 50\r\n"
    "SentOctets: 8000\r\nReport0SourceSSRC: 0x1b2c3d4e\r\nReport0FractionLost: 0\r\n"
    "Report0CumulativeLost: 0\r\nReport0HighestSequence: 1234\r\nReport0SequenceNumberCycles: 0\r\n"
    "Report0IAJitter: 3\r\nReport0LSR: 0\r\nReport0DLSR: 0.0000\r\nMES: 93.2\r\n"
)


def _template() -> str:
    def event(name: str, priv: str, body: str, ctx: str, prio: str) -> str:
        head = _HEAD.replace("{event}", name).replace("{priv}", priv)
        return head + _SNAPSHOT.replace("{ctx}", ctx).replace("{prio}", prio) + body + "\r\n"

    # As the shipped dialplan raises them: the call's first steps in [from-trunk], the request
    # at [screen-hold]'s first priority, the Wait after it.
    parts = [event(n, p, b, "from-trunk", str(i + 1)) for i, (n, p, b) in enumerate(_NOISE_BEFORE)]
    request = "UserEvent: ScreenRequest\r\nVersion: 1\r\n"
    parts.append(event("UserEvent", "user,all", request, "screen-hold", "1"))
    parts += [event(n, p, b, "screen-hold", "2") for n, p, b in _NOISE_AFTER]
    return "".join(parts).replace("{rtcp}", _RTCP)


TEMPLATE = _template()
REQUEST_BYTES = len(TEMPLATE.split("\r\n\r\n")[len(_NOISE_BEFORE)]) + 4


def render(uid: str, chan: str, num: str, name: str, did: str, ts: str) -> bytes:
    """One call's events as bytes."""
    return (
        TEMPLATE.replace("{uid}", uid)
        .replace("{chan}", chan)
        .replace("{num}", num)
        .replace("{name}", name)
        .replace("{did}", did)
        .replace("{ts}", ts)
        .encode()
    )


class _Conn(asyncio.Protocol):
    def __init__(self, server: LoadServer) -> None:
        self.server = server
        self.buffer = b""
        self.authenticated = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(GREETING)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.server.client is self:
            self.server.client = None

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self.buffer += data
        if SEP not in self.buffer:
            return
        *messages, self.buffer = self.buffer.split(SEP)
        for message in messages:
            self.handle(message, now)

    def handle(self, message: bytes, now: float) -> None:
        headers: dict[str, str] = {}
        for line in message.decode("utf-8", "replace").strip("\r\n").split("\r\n"):
            key, _, value = line.partition(": ")
            headers.setdefault(key.lower(), value)
        action = headers.get("action", "").lower()
        aid = headers.get("actionid")
        head = f"ActionID: {aid}\r\n" if aid is not None else ""
        assert self.transport is not None
        server = self.server
        if action == "login":
            if headers.get("username") == USERNAME and headers.get("secret") == SECRET:
                self.authenticated = True
                server.client = self
                server.logged_in.set()
                reply = f"Response: Success\r\n{head}Message: Authentication accepted\r\n\r\n"
            else:
                reply = f"Response: Error\r\n{head}Message: Authentication failed\r\n\r\n"
            self.transport.write(reply.encode())
        elif not self.authenticated:
            self.transport.write(
                f"Response: Error\r\n{head}Message: Permission denied\r\n\r\n".encode()
            )
        elif action == "ping":
            reply = f"Response: Success\r\n{head}Ping: Pong\r\nTimestamp: {time.time():.6f}\r\n\r\n"
            self.transport.write(reply.encode())
        elif action == "redirect":
            server.on_redirect(headers.get("channel", ""), headers.get("context", ""), now)
            self.transport.write(
                f"Response: Success\r\n{head}Message: Redirect successful\r\n\r\n".encode()
            )
        elif action == "setvar":  # the call's options, sent just before its Redirect
            self.transport.write(
                f"Response: Success\r\n{head}Message: Variable Set\r\n\r\n".encode()
            )
        else:
            reply = f"Response: Error\r\n{head}Message: Invalid/unknown command\r\n\r\n"
            self.transport.write(reply.encode())


@dataclass
class Step:
    """One rate step's outcome."""

    rate: int
    seconds: float
    sent: int = 0
    answered: int = 0
    late_answers: int = 0
    send_seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    contexts: dict[str, int] = field(default_factory=dict)

    def report(self) -> dict[str, Any]:
        stats = summary(self.latencies_ms)
        lost = self.sent - self.answered
        return {
            "rate": self.rate,
            "sent": self.sent,
            "achieved_rate": round(self.sent / self.send_seconds, 1) if self.send_seconds else 0,
            "answered": self.answered,
            "lost": lost,
            **stats,
            "sustained": lost == 0 and stats["p99_ms"] <= SUSTAINED_P99_MS,
            "contexts": self.contexts,
        }


class LoadServer:
    """The fake Asterisk: one listening socket, one logged-in client at a time."""

    def __init__(self) -> None:
        self.port = 0
        self.client: _Conn | None = None
        self.logged_in = asyncio.Event()
        self.pending: dict[str, float] = {}
        self.step: Step | None = None
        self._server: asyncio.Server | None = None
        self._seq = 0
        self.total_sent = 0  # every request written, warm-up included

    async def __aenter__(self) -> LoadServer:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Conn(self), "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        if self.client is not None and self.client.transport is not None:
            self.client.transport.abort()
        await self._server.wait_closed()

    def on_redirect(self, channel: str, context: str, now: float) -> None:
        sent = self.pending.pop(channel, None)
        step = self.step
        if sent is None or step is None:
            if step is not None:
                step.late_answers += 1
            return
        step.answered += 1
        step.latencies_ms.append((now - sent) * 1000.0)
        step.contexts[context] = step.contexts.get(context, 0) + 1

    async def run_step(self, rate: int, seconds: float, numbers: Sequence[str]) -> Step:
        """Send ``rate`` calls a second for ``seconds``, then wait for the answers (bounded)."""
        step = Step(rate, seconds)
        self.step = step
        self.pending.clear()
        total = max(1, int(rate * seconds))
        clock = time.perf_counter
        start = clock()
        deadline = start + seconds + 5.0  # never let a slow client stretch a step unbounded
        while step.sent < total and clock() < deadline:
            client = self.client
            if client is None or client.transport is None or client.transport.is_closing():
                break
            due = min(total, int((clock() - start) * rate) + 1)
            while step.sent < due:
                uid, data = self._render(numbers)
                self.pending[uid] = clock()
                client.transport.write(data)
                step.sent += 1
            next_at = start + step.sent / rate
            await asyncio.sleep(max(0.0, next_at - clock()))
        step.send_seconds = clock() - start
        await self._drain()
        self.step = None
        return step

    def _render(self, numbers: Sequence[str]) -> tuple[str, bytes]:
        self.total_sent += 1
        self._seq += 1
        seq = self._seq
        uid = f"1732700000.{seq}"
        data = render(
            uid,
            f"PJSIP/carrier-{seq:08x}",
            numbers[seq % len(numbers)],
            "Tele Sales" if seq % 5 else "タナカ ショウジ",
            "0355550100",
            f"{time.time():.6f}",
        )
        return uid, data

    async def run_burst(self, count: int, numbers: Sequence[str]) -> Step:
        """``count`` calls in one write, all on hold at once; each timed from that write."""
        step = Step(count, 0.0)
        self.step = step
        self.pending.clear()
        client = self.client
        if client is None or client.transport is None or client.transport.is_closing():
            self.step = None
            return step
        calls = [self._render(numbers) for _ in range(count)]
        now = time.perf_counter()
        for uid, _ in calls:
            self.pending[uid] = now
        client.transport.write(b"".join(data for _, data in calls))
        step.sent = count
        await self._drain()
        self.step = None
        return step

    async def _drain(self) -> None:
        clock = time.perf_counter
        drain_until = clock() + DRAIN_SECONDS
        # Polled: the answers arrive in data_received, which should stay a plain callback.
        while self.pending and clock() < drain_until:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


@dataclass
class Client:
    """A subprocess that logs in to the LoadServer: ``screener run`` or the floor."""

    label: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: asyncio.subprocess.Process | None = None
    peak_rss: int = 0
    cwd: Path | None = None  # run from here (``-m screener`` then imports the code found there)
    _log: Any = None

    async def start(self, server: LoadServer, within: float = 30.0) -> None:
        self._log = self.log_path.open("wb")
        server.logged_in.clear()
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            env=self.env,
            cwd=self.cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
        )
        try:
            async with asyncio.timeout(within):
                waiter = asyncio.ensure_future(server.logged_in.wait())
                exited = asyncio.ensure_future(self.proc.wait())
                await asyncio.wait({waiter, exited}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                exited.cancel()
        except TimeoutError:
            pass
        if not server.logged_in.is_set():
            await self.stop()
            raise RuntimeError(f"{self.label} did not log in; see {self.log_path}")

    def sample_rss(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        with contextlib.suppress(psutil.Error):
            self.peak_rss = max(self.peak_rss, psutil.Process(self.proc.pid).memory_info().rss)

    def hwm(self) -> int | None:
        """VmHWM (peak resident set) from /proc, in bytes."""
        if self.proc is None:
            return None
        try:
            text = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return None

    async def stop(self) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                async with asyncio.timeout(15):
                    await proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                await proc.wait()
        if self._log is not None:
            self._log.close()
        return proc.returncode


async def _sampler(client: Client, stop: asyncio.Event) -> None:
    while not stop.is_set():
        client.sample_rss()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.2)


def client_env(port: int, extra: dict[str, str]) -> dict[str, str]:
    """The environment for a client subprocess (no secrets of ours beyond the bench's own)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCREENER_")}
    env.update(
        SCREENER_AMI_HOST="127.0.0.1",
        SCREENER_AMI_PORT=str(port),
        SCREENER_AMI_USER=USERNAME,
        SCREENER_AMI_SECRET=SECRET,
        # No /metrics server unless a run asks for one (bench/scrape.py picks a free port):
        # the default 127.0.0.1:9120 is taken whenever another screener runs on this machine
        # (a test suite, a second bench), and the run would then measure nothing.
        SCREENER_METRICS_LISTEN="",
        PYTHONUNBUFFERED="0",
    )
    env.update(extra)
    return env


def screener_argv() -> list[str]:
    """``screener run`` from this interpreter's environment."""
    return [sys.executable, "-m", "screener", "run"]


def floor_argv() -> list[str]:
    """The minimal no-lookup responder."""
    return [sys.executable, "-m", "bench.floor"]


async def run_client(
    client: Client,
    rates: Sequence[int],
    seconds: float,
    numbers: Sequence[str],
    warmup: int = 300,
    *,
    bursts: Sequence[int] = (),
    rounds: int = 3,
    during: Callable[[], AbstractAsyncContextManager[object]] | None = None,
) -> dict[str, Any]:
    """Start ``client``, warm it up, run every rate step (then every burst size, ``rounds``
    times), stop it; the per-step reports. ``during``: a context entered after the warm-up and
    left before the client is stopped (the bench's held write lock)."""
    async with LoadServer() as server:
        client.env = client_env(server.port, client.env)
        await client.start(server)
        stop = asyncio.Event()
        sampler = asyncio.create_task(_sampler(client, stop))
        steps = []
        burst_steps = []
        try:
            await server.run_step(max(50, warmup // 2), warmup / max(50, warmup // 2), numbers)
            async with during() if during is not None else contextlib.nullcontext():
                for rate in rates:
                    step = await server.run_step(rate, seconds, numbers)
                    steps.append(step.report())
                    if server.client is None:
                        break  # the client died or dropped the connection
                for count in bursts:
                    merged = Step(count, 0.0)
                    for _ in range(rounds):
                        one = await server.run_burst(count, numbers)
                        merged.sent += one.sent
                        merged.answered += one.answered
                        merged.latencies_ms += one.latencies_ms
                        await asyncio.sleep(0.2)
                    burst_steps.append(merged.report())
                client.sample_rss()
                hwm = client.hwm()
        finally:
            stop.set()
            await sampler
            code = await client.stop()
    sustained = [s["rate"] for s in steps if s["sustained"]]
    return {
        "label": client.label,
        "steps": steps,
        "bursts": burst_steps,
        "requests_sent": server.total_sent,
        "max_sustained_rate": max(sustained) if sustained else 0,
        "peak_rss_bytes": max(client.peak_rss, hwm or 0),
        "vmhwm_bytes": hwm,
        "exit_code": code,
        "log": str(client.log_path),
        "noise_events_per_call": NOISE,
        "bytes_per_call": len(
            render("1732700000.1", "PJSIP/carrier-00000001", "0312345678", "x", "0355550100", "1.0")
        ),
    }


def shuffled(numbers: Sequence[str], seed: int = 7) -> list[str]:
    """A shuffled copy (so that consecutive calls do not walk the index in order)."""
    out = list(numbers)
    random.Random(seed).shuffle(out)
    return out
