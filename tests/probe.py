"""Place calls through a real Asterisk and watch where they go.

Used by the demo, the end-to-end tests and the benchmark, never by the service: it logs in as
the sandbox's test-only AMI user, which may ``Originate`` (the screener's own user never can).
It lives beside the tests, outside the ``screener`` package, so that an installed screener
holds no module that can originate calls (tests/test_packaging.py checks the wheel).
Two ways in:

- ``call_local``: ``Originate Local/<DID>@from-trunk``; the ``;2`` half runs the inbound
  dialplan with the caller ID we set, and we choose its Uniqueid (``OtherChannelId``) so every
  event of the call can be matched to it.
- ``call_sip``: the sandbox carrier (a second Asterisk) dials the PBX over real SIP with the
  caller ID in the From header; its ``caller`` context can key in DTMF with ``SendDTMF``.

A probe of site B (``scripts/sandbox up --site-b``, ``SandboxInfo.site_b``) watches B's AMI
and has the same carrier dial B's address (``carrier_dial``) instead of the first PBX's.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from screener.ami import AMIClient, AMISettings, Event
from screener.errors import AMIError

# The events a probe keeps. Asterisk sends the test user every event of every call (VarSet
# alone is dozens per call): keeping them all overflowed the event queue in a burst of calls,
# dropping the very ScreenRouted events a test waits for.
WATCHED = (
    "UserEvent",
    "Newexten",
    "Newchannel",
    "Newstate",
    "BridgeEnter",
    "Hangup",
    "OriginateResponse",
    "DialBegin",
    "FullyBooted",
)
PROBE_QUEUE = 200_000


def probe_client(settings: AMISettings) -> AMIClient:
    """An AMI client for a probe: only the events probes look at, and a deep queue."""
    return AMIClient(settings, event_names=WATCHED, queue_size=PROBE_QUEUE)


SANDBOX = Path(__file__).resolve().parent.parent / "scripts" / "sandbox"


class SandboxError(RuntimeError):
    """The sandbox could not be brought up."""


@contextlib.contextmanager
def sandbox_session(*, with_carrier: bool = True, wait: float = 900) -> Iterator[SandboxInfo]:
    """``scripts/sandbox up`` … ``down``, holding a lock so that one user has it at a time.

    The sandbox uses fixed loopback ports and one chroot: the test suite, the demo and the
    benchmark each take it whole, and a second one waits (up to ``wait`` seconds) for the first.
    """
    run_dir = Path(os.environ.get("SCREENER_SANDBOX_RUN", "/run/screener-sandbox"))
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir.parent / f"{run_dir.name}.lock").open("w") as lock:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise SandboxError(f"the sandbox stayed busy for {wait:g}s") from None
                time.sleep(0.5)
        args = [str(SANDBOX), "up", *(["--with-carrier"] if with_carrier else [])]
        up = subprocess.run(args, capture_output=True, text=True, timeout=900, check=False)
        try:
            if up.returncode != 0:
                raise SandboxError(f"scripts/sandbox up failed: {up.stderr.strip()[-2000:]}")
            yield SandboxInfo(json.loads(up.stdout.strip().splitlines()[-1]))
        finally:
            subprocess.run([str(SANDBOX), "down"], capture_output=True, timeout=120, check=False)


class ScreenerProcess:
    """``screener run`` as a real subprocess (stopped by its PID), logging JSON to a file."""

    def __init__(self, env: Mapping[str, str], db: Path, log: Path) -> None:
        self.db = db
        self.log = log
        self.env = {
            **os.environ,
            "SCREENER_DB": str(db),
            "SCREENER_CONFIG": "",
            "SCREENER_LOG_FORMAT": "json",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run an admin command against the same database."""
        return subprocess.run(
            [sys.executable, "-m", "screener", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def start(self) -> None:
        """Start the service (``find_log("screener running", ...)`` waits for its login).

        As an admin would, it runs ``screener init`` first when there is no database yet:
        ``screener run`` itself refuses to start without one.
        """
        if not self.db.exists():
            init = self.cli("init")
            if init.returncode != 0:
                raise RuntimeError(f"screener init failed: {init.stderr.strip()}")
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "screener", "run"],
                env=self.env,
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
            )

    def lines(self) -> list[dict[str, Any]]:
        """The JSON log lines so far (anything else is skipped)."""
        if not self.log.exists():
            return []
        result = []
        for line in self.log.read_text(encoding="utf-8", errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                result.append(json.loads(line))
        return result

    def find_log(self, event: str, within: float) -> dict[str, Any] | None:
        """The first log line whose event is ``event``, waiting up to ``within`` seconds."""
        deadline = time.monotonic() + within
        while True:
            for line in self.lines():
                if line.get("event") == event:
                    return line
            exited = self.proc is not None and self.proc.poll() is not None
            if exited or time.monotonic() > deadline:
                return None
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, within: float = 15) -> int | None:
        """Stop it by PID; SIGKILL if it does not exit in time. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(within)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def tail(self, chars: int = 3000) -> str:
        """The end of the log, for error messages."""
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


@dataclass(frozen=True)
class SandboxInfo:
    """What ``scripts/sandbox up`` prints."""

    # Not in the repr: pytest prints a failed test's arguments, and raw holds the AMI secrets.
    raw: dict[str, Any] = field(repr=False)

    @staticmethod
    def _login(where: Mapping[str, Any], user: str, events: str = "user") -> AMISettings:
        """AMI settings for one of the users ``scripts/sandbox up`` reported."""
        return AMISettings(
            host=where["ami_host"],
            port=int(where["ami_port"]),
            username=where[f"{user}_user"],
            secret=where[f"{user}_secret"],
            events=events,
        )

    @property
    def pbx(self) -> AMISettings:
        """The PBX's test-only AMI user."""
        return self._login(self.raw, "test", "call,user,dialplan")

    @property
    def carrier(self) -> AMISettings | None:
        """The carrier's test AMI user, when the carrier runs."""
        c = self.raw.get("carrier")
        return self._login(c, "test", "call,user,dialplan") if c else None

    @property
    def site_b(self) -> SandboxInfo | None:
        """Site B's PBX (the same keys as the first PBX's), when the sandbox runs it."""
        b = self.raw.get("site_b")
        return SandboxInfo(b) if b else None

    @property
    def carrier_dial(self) -> str:
        """How the carrier's caller dials this PBX (``{did}`` filled in per call)."""
        return str(self.raw.get("carrier_dial") or "PJSIP/{did}@pbx")

    @property
    def screener(self) -> AMISettings:
        """The PBX's least-privilege screener user (what ``screener run`` logs in as)."""
        return self._login(self.raw, "screener")

    def screener_env(self) -> dict[str, str]:
        """The environment ``screener run`` needs to reach this sandbox."""
        r = self.raw
        return {
            "SCREENER_AMI_HOST": r["ami_host"],
            "SCREENER_AMI_PORT": str(r["ami_port"]),
            "SCREENER_AMI_USER": r["screener_user"],
            "SCREENER_AMI_SECRET": r["screener_secret"],
        }


@dataclass
class Watcher:
    """Collects events from one AMI connection and lets callers wait for a match."""

    ami: AMIClient
    events: list[Event] = field(default_factory=list)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin collecting (in a task this object owns)."""
        self._task = asyncio.create_task(self._collect())

    async def stop(self) -> None:
        """Stop collecting."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _collect(self) -> None:
        while True:
            event = await self.ami.events.get()
            async with self._changed:
                self.events.append(event)
                self._changed.notify_all()

    async def wait_for(self, match: Callable[[Event], bool], within: float = 10.0) -> Event:
        """The first event (already seen or yet to come) that matches; TimeoutError if none."""

        # Each waiter scans only the events that arrived since it last looked: with a hundred
        # calls in flight, rescanning the whole history on every event made the test's own
        # event loop the bottleneck (quadratic in the events seen), and waits timed out.
        scanned = 0
        hit: list[Event] = []

        def found() -> bool:
            nonlocal scanned
            events = self.events
            while scanned < len(events):
                event = events[scanned]
                scanned += 1
                if match(event):
                    hit.append(event)
                    return True
            return False

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(found), within)
            return hit[0]

    def matching(self, match: Callable[[Event], bool]) -> list[Event]:
        """Every event seen so far that matches."""
        return [e for e in self.events if match(e)]


def user_event(name: str, call_id: str | None = None, **headers: str) -> Callable[[Event], bool]:
    """A matcher for ``UserEvent(name)`` of one call (by Uniqueid) with the given headers."""
    lowered = name.lower()

    def match(event: Event) -> bool:
        if event.name.lower() != "userevent":
            return False
        if (event.get("UserEvent") or "").lower() != lowered:
            return False
        if call_id is not None and event.get("Uniqueid") != call_id:
            return False
        return all((event.get(k) or "").lower() == v.lower() for k, v in headers.items())

    return match


def new_call_id(half: str = "b") -> str:
    """A Uniqueid for a test call that cannot collide with Asterisk's own.

    All have the same length: Asterisk refuses a Uniqueid that is a prefix of one in use.
    """
    return f"probe-{uuid.uuid4().hex[:16]}-{half}"


@dataclass
class Call:
    """One test call: the Uniqueid of the PBX channel that runs ``[from-trunk]``."""

    call_id: str
    number: str
    did: str
    started: float


class Probe:
    """Originates calls on the sandbox PBX (and carrier) and reports where they went."""

    def __init__(
        self, pbx: AMIClient, carrier: AMIClient | None = None, dial: str = "PJSIP/{did}@pbx"
    ) -> None:
        self.pbx = Watcher(pbx)
        self.carrier = Watcher(carrier) if carrier is not None else None
        # The carrier's dial string to this PBX (SandboxInfo.carrier_dial): site B's differs.
        self.dial = dial
        self._carrier_ids: dict[str, str] = {}
        self.calls: list[Call] = []

    async def __aenter__(self) -> Probe:
        self.pbx.start()
        if self.carrier is not None:
            self.carrier.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.pbx.stop()
        if self.carrier is not None:
            await self.carrier.stop()

    async def call_local(
        self, number: str, *, did: str = "0312345678", name: str = "", hold: int = 60
    ) -> Call:
        """An inbound call through a Local channel; returns once Asterisk accepted it."""
        call_id = new_call_id()
        caller_id = f'"{name}" <{number}>' if name else f"<{number}>"
        response = await self.pbx.ami.send(
            {
                "Action": "Originate",
                "Channel": f"Local/{did}@from-trunk",
                "CallerID": caller_id,
                "Application": "Wait",
                "Data": str(hold),
                "Async": "true",
                "ChannelId": call_id[:-1] + "a",
                "OtherChannelId": call_id,
                "Timeout": "30000",
            },
            timeout=5,
        )
        if not response.success:
            raise RuntimeError(f"Originate refused: {response.message}")
        call = Call(call_id, number, did, time.monotonic())
        self.calls.append(call)
        return call

    async def call_sip(
        self,
        number: str,
        *,
        did: str = "0312345678",
        name: str = "",
        dtmf: str = "",
        dtmf_delay: float = 4.0,
        repeat: float | None = None,
        hold: int = 20,
        within: float = 10.0,
        play: str = "",
        hear: str | None = None,
    ) -> Call:
        """An inbound call over real SIP from the carrier. Returns once the PBX asked the
        screener. The caller keys in ``dtmf`` ``dtmf_delay`` seconds after the PBX answers
        (``"wait"``: the code the screener picked, see ``send_code``), again every ``repeat``
        seconds if given, plays the sound ``play`` (a message for voicemail), then stays
        ``hold`` seconds."""
        assert self.carrier is not None, "the sandbox runs without a carrier"
        carrier_id = new_call_id("c")
        caller_id = f'"{name}" <{number}>' if name else f"<{number}>"
        variables = [f"DTMF={dtmf}", f"DTMF_DELAY={dtmf_delay:g}", f"HOLD={hold}"]
        if repeat is not None:
            variables.append(f"REPEAT={repeat:g}")
        if play:
            variables.append(f"PLAY={play}")
        if hear is not None:  # record what the caller hears (sandbox-carrier/README.md)
            variables.append(f"HEAR={hear}")
        response = await self.carrier.ami.send(
            {
                "Action": "Originate",
                "Channel": self.dial.format(did=did),
                "CallerID": caller_id,
                "Context": "caller",
                "Exten": "s",
                "Priority": "1",
                "Async": "true",
                "ChannelId": carrier_id,
                "Timeout": "30000",
                "Variable": ",".join(variables),
            },
            timeout=5,
        )
        if not response.success:
            raise RuntimeError(f"Originate refused: {response.message}")
        known = {c.call_id for c in self.calls}
        request = await self.pbx.wait_for(
            lambda e: (
                user_event("ScreenRequest")(e)
                and e.get("CallerIDNum") == number
                and e.get("Uniqueid") not in known
            ),
            within,
        )
        call = Call(request.get("Uniqueid") or "", number, did, time.monotonic())
        self._carrier_ids[call.call_id] = carrier_id
        self.calls.append(call)
        return call

    async def challenge_code(self, call: Call, within: float = 10.0) -> str:
        """The code the screener sent this call to key in (seen as the Redirect target)."""
        event = await self.pbx.wait_for(
            lambda e: (
                e.name.lower() == "newexten"
                and e.get("Uniqueid") == call.call_id
                and e.get("Context") == "screen-challenge"
            ),
            within,
        )
        return event.get("Exten") or ""

    def carrier_channel(self, call: Call) -> str:
        """The Uniqueid of the carrier's half of a ``call_sip`` call (the caller's side)."""
        return self._carrier_ids[call.call_id]

    async def send_code(self, call: Call, code: str) -> None:
        """Tell the carrier's caller (``dtmf="wait"``) which digits to key in."""
        assert self.carrier is not None
        carrier_id = self._carrier_ids[call.call_id]
        await self.carrier.ami.send(
            {"Action": "Setvar", "Channel": carrier_id, "Variable": "CODE", "Value": code},
            timeout=5,
        )

    async def routed(self, call: Call, within: float = 10.0) -> tuple[str, bool]:
        """The first route the call took (``ScreenRouted``) and whether it was the fallback."""
        event = await self.pbx.wait_for(user_event("ScreenRouted", call.call_id), within)
        return (event.get("Route") or "").lower(), (event.get("Fallback") or "").lower() == "yes"

    async def hangup(self, call: Call) -> None:
        """Hang the call up (whichever half still exists)."""
        targets = [(self.pbx.ami, call.call_id)]
        carrier_id = self._carrier_ids.get(call.call_id)
        if carrier_id is not None and self.carrier is not None:
            targets.append((self.carrier.ami, carrier_id))
        for ami, channel in targets:
            # The call may already be gone ("No such channel"): that is fine.
            with contextlib.suppress(AMIError):
                await ami.send({"Action": "Hangup", "Channel": channel}, timeout=5)

    async def staff_dialled(self, call: Call, within: float = 15.0) -> Event:
        """The moment the PBX starts dialling staff for this call (its ``DialBegin``).

        If it never comes, the AssertionError says where the call went instead: its last
        dialplan steps and whether it hung up (the sandbox logs say why)."""
        try:
            return await self.pbx.wait_for(
                lambda e: e.name.lower() == "dialbegin" and e.get("Uniqueid") == call.call_id,
                within,
            )
        except TimeoutError:
            raise AssertionError(
                f"no DialBegin for {call.call_id} within {within:g}s; {self.trail(call)}"
            ) from None

    def trail(self, call: Call, steps: int = 8) -> str:
        """The call's last dialplan steps (``Newexten``) and its hangup, for failure messages."""
        mine = self.pbx.matching(lambda e: e.get("Uniqueid") == call.call_id)
        seen = [
            f"{e.get('Context')},{e.get('Exten')},{e.get('Priority')} {e.get('Application')}"
            for e in mine
            if e.name.lower() == "newexten"
        ]
        hangup = next((e for e in mine if e.name.lower() == "hangup"), None)
        ended = f"hung up ({hangup.get('Cause-txt')})" if hangup is not None else "still up"
        return f"last steps: {seen[-steps:]}; {ended}"

    async def staff_dial(self, phone: str, dialled: str, hold: int = 8) -> Event:
        """Staff phone ``phone`` (the carrier, registered as it) dials ``dialled`` on the PBX
        over SIP; returns the PBX's first dialplan step for it (``Newexten`` in from-staff)."""
        assert self.carrier is not None, "the sandbox runs without a carrier"
        seen = {id(e) for e in self.pbx.events}
        response = await self.carrier.ami.send(
            {
                "Action": "Originate",
                "Channel": f"PJSIP/{dialled}@as-{phone}",
                "Application": "Wait",
                "Data": str(hold),
                "Async": "true",
                "ChannelId": new_call_id("s"),
                "Timeout": "15000",
            },
            timeout=5,
        )
        if not response.success:
            raise RuntimeError(f"Originate refused: {response.message}")

        def first_step(event: Event) -> bool:
            return (
                event.name.lower() == "newexten"
                and event.get("Context") == "from-staff"
                and event.get("Exten") == dialled
                and (event.get("Channel") or "").startswith(f"PJSIP/{phone}-")
                and id(event) not in seen
            )

        return await self.pbx.wait_for(first_step, 15)

    async def feature(self, phone: str, dialled: str) -> tuple[str, Event]:
        """``phone`` keys a feature code (``*32``); returns the result the PBX played to it
        (``blocked``, ``withheld``...: the extension of staff-feature-result) and the first
        dialplan step (its ``Timestamp`` is when the PBX had the code)."""
        step = await self.staff_dial(phone, dialled)
        channel = step.get("Uniqueid")
        result = await self.pbx.wait_for(
            lambda e: (
                e.name.lower() == "newexten"
                and e.get("Uniqueid") == channel
                and e.get("Context") == "staff-feature-result"
                and e.get("Priority") == "1"
            ),
            15,
        )
        return result.get("Exten") or "", step

    async def hangup_all(self) -> None:
        """Hang up every call this probe placed."""
        for call in self.calls:
            await self.hangup(call)
