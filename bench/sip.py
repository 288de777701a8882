"""Part 10 (``--only sip``): the PBX under real SIP load, with and without the screener.

SIPp plays both ends of every call on the real sandbox PBX (``scripts/sandbox``, Asterisk 22):

- the carrier (``bench/sipp/carrier.xml``) sends INVITEs into the trunk from a fresh injection
  CSV per step, a mix of callers (``MIX``): customers on the allow list, block-listed numbers,
  unknown mobiles and fixed lines, toll-free numbers and withheld callers. It talks for
  ``hold`` seconds after the answer (or until the PBX hangs up first) and sends BYE;
- the staff side (``bench/sipp/staff.xml``) answers every INVITE at once. During the bench the
  PBX's global ``STAFF_DIAL`` points at it (``PJSIP/trunk/sip:staff@127.0.0.1:<port>``).

Three dialplans on the same Asterisk, chosen by the dialled number: ``screened`` is the
shipped ``[from-trunk]`` (DID 0312345678) with the real ``screener run`` deciding on the
10 M-entry list; ``direct`` goes straight to ``route-staff`` (no screening); ``blacklist`` is
Asterisk's built-in ``BLACKLIST()`` (func_blacklist: the AstDB family ``blacklist``, filled with
``astdb`` numbers) in front of ``route-staff``, its hits to ``route-voicemail``. The two
comparison entries (``bench-direct``, ``bench-blacklist``) are added to ``[from-trunk]`` at run
time through the sandbox's test AMI user; nothing of the bench is in ``asterisk-conf/``. The
bench also copies ``bench/asterisk/rtp.conf`` (a wider RTP port range) into the sandbox PBX and
reloads its RTP module, and puts ``STAFF_DIAL`` back when it is done.

Rates rise step by step; each step runs the three dialplans one after the other, each for
``step_seconds``, and a dialplan leaves the ladder after its first step with a failed call or
(for the screener) a fallback. Per step and dialplan:

- attempted, completed (answered and ended with a BYE either way) and failed (no answer,
  refused, or SIPp gave up on it); the refusal codes;
- routed by a decision vs by the fallback, from the dialplan's ``UserEvent(ScreenRouted,
  Fallback: yes|no)``, joined to the call by its caller ID name;
- set-up time of staff-bound calls: from the carrier's INVITE to the staff side's INVITE, both
  SIPp's ``gettimeofday`` (one machine, one clock), joined by the display name that Asterisk
  copies from the carrier's From to the staff INVITE's From; and, for every answered call,
  the carrier's INVITE to its 200 OK;
- peak calls in flight (SIPp's ``CurrentCall``, sampled every second);
- CPU (% of one core) and peak RSS of Asterisk and of ``screener run``, from ``/proc/<pid>``.

Challenged callers (toll free, withheld) are counted as routed by the screener when the
challenge answers (``ScreenRouted Route: challenge, Fallback: no`` and a 200 OK); they key in
nothing (the code is the screener's random choice, unknown to SIPp) and hang up after the hold.

With ``paired_rate``, two side-by-side steps follow the ladder (``PAIRED_STEPS``): staff-bound
calls alternate between the direct and the screened DID, answered first by the screener, then
by ``bench/floor.py``; the difference of the halves' set-up is the responder's added delay.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import dataset
from bench.stats import summary
from screener.ami import AMIClient, AMISettings, Event
from screener.errors import AMIActionError
from tests.probe import SANDBOX, SandboxError, SandboxInfo, ScreenerProcess, sandbox_session

HERE = Path(__file__).resolve().parent
SCENARIOS = HERE / "sipp"
RTP_CONF = HERE / "asterisk" / "rtp.conf"
HOST = "127.0.0.1"

# The side-by-side steps: who answers the screened half, its callers' tag, its result's key.
PAIRED_STEPS = (("screener", "p-", "paired"), ("floor", "q-", "paired_floor"))
DIALPLANS = ("direct", "blacklist", "screened")  # "floor" too, when asked (Agent)
DID = {
    "direct": "bench-direct",
    "blacklist": "bench-blacklist",
    "screened": "0312345678",
    "floor": "0312345678",
}
# The comparison entries, added to [from-trunk] (the trunk's context) for the bench only.
# Their names are not digits, so the shipped _X. / _+X. / s patterns never match them.
EXTENSIONS = {
    "bench-direct": [("Goto", "route-staff,s,1")],
    "bench-blacklist": [
        ("GotoIf", "$[${BLACKLIST()}]?route-voicemail,s,1"),
        ("Goto", "route-staff,s,1"),
    ],
}
MODULES = ("func_db.so", "func_blacklist.so")  # not in the shipped modules.conf

# The caller mix, in percent, and where each kind goes under the screener's default policy.
MIX: tuple[tuple[str, int], ...] = (
    ("allow", 30),  # customers on the allow list
    ("mobile", 25),  # unknown mobiles
    ("fixed", 15),  # unknown fixed lines
    ("block", 12),  # on the block list (and in the AstDB blacklist)
    ("toll_free", 10),  # 0800 toll free (no list entry: the challenge)
    ("withheld", 8),  # anonymous (the challenge)
)
SCREENED_ROUTE = {
    "allow": "staff",
    "mobile": "staff",
    "fixed": "staff",
    "block": "voicemail",
    "toll_free": "challenge",
    "withheld": "challenge",
}
# A step whose staff-bound calls take longer than this to ring staff (median) has saturated
# the PBX: callers would hear seconds of silence. The ladder stops there for that dialplan.
SATURATED_MS = 1000.0
REFUSALS = (403, 404, 408, 480, 486, 487, 500, 503, 603)

Log = Callable[[str], None]


def national(e164: str) -> str:
    """+81 3 ... as a Japanese carrier sends it: 03 ..."""
    return "0" + e164[3:]


def astdb_numbers(count: int) -> list[str]:
    """The AstDB blacklist: ``count`` block-listed mobiles of the list database, national form.

    Block entries are the exact mobiles ``i`` with ``i % 3 != 0`` (dataset.py); the same
    numbers are blocked in the screener's list, so both dialplans block the mix's callers.
    """
    out: list[str] = []
    i = 0
    while len(out) < count:
        if i % 3:
            out.append(national(dataset.exact_number(dataset.MOBILE, i)))
        i += 1
    return out


def caller_mix(entries: int, astdb: int, count: int, seed: int) -> list[tuple[str, str]]:
    """``count`` (kind, number as sent) pairs in the proportions of ``MIX``, shuffled."""
    layout = dataset.Layout(entries)
    rng = random.Random(seed)
    # Block-listed callers come from both lists: the first astdb blocked mobiles, unexpired.
    blocked_span = max(3, min(layout.mobile, astdb * 3 // 2))
    kinds = [kind for kind, share in MIX for _ in range(share)]
    out: list[tuple[str, str]] = []
    for _ in range(count):
        kind = rng.choice(kinds)
        if kind == "allow":
            block = dataset.FIXED if rng.random() < 0.5 else dataset.MOBILE
            n = layout.fixed if block == dataset.FIXED else layout.mobile
            i = 3 * rng.randrange(max(1, n // 3))
            while i % 50 == 49:  # expired: no longer on the list
                i = 3 * rng.randrange(max(1, n // 3))
            number = national(dataset.exact_number(block, i))
        elif kind == "block":
            i = rng.randrange(blocked_span)
            while i % 3 == 0 or i % 50 == 49:
                i = rng.randrange(blocked_span)
            number = national(dataset.exact_number(dataset.MOBILE, i))
        elif kind in ("mobile", "fixed"):
            block = dataset.MOBILE if kind == "mobile" else dataset.FIXED
            n = layout.mobile if kind == "mobile" else layout.fixed
            number = national(dataset.exact_number(block, rng.randrange(max(1, n)), miss=True))
        elif kind == "toll_free":
            number = f"0800{rng.randrange(1_000_000, 9_999_999)}"
        else:
            number = "anonymous"
        out.append((kind, number))
    return out


def write_csv(path: Path, callers: Sequence[tuple[str, str]], dids: Sequence[str]) -> None:
    """SIPp's injection file: field0 the number, field1 the kind (for the reader), field2 the
    number dialled (the dialplan), row by row."""
    with path.open("w", newline="") as f:
        f.write("SEQUENTIAL\n")
        w = csv.writer(f, delimiter=";", lineterminator="\n")
        for (kind, number), did in zip(callers, dids, strict=True):
            w.writerow((number, kind, did))


# The kinds the screener sends to staff: the side-by-side step compares set-up on them alone.
STAFF_KINDS = frozenset(k for k, route in SCREENED_ROUTE.items() if route == "staff")


def paired_callers(
    entries: int, astdb: int, count: int, seed: int
) -> tuple[list[tuple[str, str]], list[str]]:
    """``count`` staff-bound callers of the mix, and their dialled numbers: direct and
    screened in turn, so that both halves share the same seconds of the machine."""
    if not STAFF_KINDS & {kind for kind, share in MIX if share}:
        raise ValueError("the caller mix has no staff-bound callers to compare")
    callers: list[tuple[str, str]] = []
    while len(callers) < count:
        more = caller_mix(entries, astdb, 2 * count, seed + len(callers))
        callers += [c for c in more if c[0] in STAFF_KINDS][: count - len(callers)]
    dids = [DID["direct"] if i % 2 == 0 else DID["screened"] for i in range(count)]
    return callers, dids


def carrier_scenario(hold_s: float) -> str:
    """bench/sipp/carrier.xml with the talk time and the refusal branches filled in."""
    refusals = "\n  ".join(
        f'<recv response="{code}" optional="true" next="refused">'
        f'<action><log message="R [$name] {code}"/></action></recv>'
        for code in REFUSALS
    )
    text = (SCENARIOS / "carrier.xml").read_text()
    return text.replace("@HOLD_MS@", str(int(hold_s * 1000))).replace("@REFUSALS@", refusals)


def free_udp_port() -> int:
    """A UDP port free on loopback right now (SIPp binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# --- /proc ----------------------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def pbx_pid(info: SandboxInfo) -> int:
    """The PBX's Asterisk PID now: `scripts/sandbox restart` (a test that kills the PBX) gives
    it a new one, which the session's SandboxInfo does not know."""
    out = subprocess.run(
        [str(SANDBOX), "status"], capture_output=True, text=True, check=False, timeout=30
    )
    try:
        return int(json.loads(out.stdout)["instances"]["pbx"]["pid"])
    except (ValueError, KeyError, TypeError):
        return int(info.raw["asterisk_pid"])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), NaN once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_bytes(pid: int) -> int:
    """Resident set size from /proc/<pid>/status (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class Sampler:
    """CPU and peak RSS of some processes while a step runs (polled every 0.25 s)."""

    pids: dict[str, int]
    cpu0: dict[str, float] = field(default_factory=dict)
    peak: dict[str, int] = field(default_factory=dict)
    started: float = 0.0

    def start(self) -> None:
        self.started = time.perf_counter()
        self.cpu0 = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self.peak = {name: rss_bytes(pid) for name, pid in self.pids.items()}

    def poll(self) -> None:
        for name, pid in self.pids.items():
            self.peak[name] = max(self.peak[name], rss_bytes(pid))

    def result(self) -> dict[str, dict[str, float]]:
        wall = time.perf_counter() - self.started
        return {
            name: {
                "cpu_pct": 100.0 * (cpu_seconds(pid) - self.cpu0[name]) / wall,
                "peak_rss_mb": self.peak[name] / 1e6,
            }
            for name, pid in self.pids.items()
        }


# --- SIPp -----------------------------------------------------------------------------------


def _log_lines(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split() for line in path.read_text(errors="replace").splitlines() if line]


def _stamp(parts: Sequence[str]) -> float:
    return float(parts[2]) + float(parts[3]) / 1e6


def spawn(argv: list[str], out: Path) -> subprocess.Popen[bytes]:
    """Start SIPp (or anything) with its output to a file."""
    with out.open("wb") as f:
        return subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process we started, by its PID: SIGTERM, then SIGKILL after 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class Staff:
    """The staff side: one SIPp UAS for the whole bench, stopped by its PID."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_udp_port()
        self.log = tmp / "staff.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.tmp = tmp

    def start(self) -> None:
        # Every socket on loopback: SIP and media (-i/-mi with -bind_local) and SIPp's remote
        # control port (-ci; it listens on all addresses otherwise).
        argv = [
            "sipp", "-sf", str(SCENARIOS / "staff.xml"), "-i", HOST, "-bind_local", "-ci", HOST,
            "-p", str(self.port), "-mi", HOST, "-mp", str(free_udp_port()), "-nostdin",
            "-trace_logs", "-log_file", str(self.log), "-trace_err",
            "-error_file", str(self.tmp / "staff-errors.log"),
        ]  # fmt: skip
        self.proc = spawn(argv, self.tmp / "staff.out")
        time.sleep(0.5)  # a bad scenario makes SIPp exit at once
        if self.proc.poll() is not None:
            said = (self.tmp / "staff.out").read_text(errors="replace")[-500:]
            raise SandboxError(f"the staff-side SIPp exited ({self.proc.returncode}): {said}")

    def arrivals(self) -> dict[str, float]:
        """When each call's INVITE reached the staff side, by display name."""
        return {
            p[1].strip('"'): _stamp(p) for p in _log_lines(self.log) if len(p) == 4 and p[0] == "S"
        }

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)


@dataclass
class Step:
    """One dialplan at one rate: a SIPp carrier run and what it saw."""

    dialplan: str
    rate: int
    tag: str
    callers: list[tuple[str, str]]
    tmp: Path
    dids: list[str] = field(default_factory=list)  # per caller; empty: DID[dialplan] for all

    @property
    def log(self) -> Path:
        return self.tmp / f"{self.tag}carrier.log"

    @property
    def stat(self) -> Path:
        return self.tmp / f"{self.tag}stat.csv"

    def argv(self, scenario: Path, seconds: float, hold_s: float) -> list[str]:
        """SIPp's command line; it gives up ``hold_s`` + 20 s after the last call is placed
        (an overloaded PBX would otherwise keep a step going for minutes)."""
        csv_path = self.tmp / f"{self.tag}callers.csv"
        write_csv(csv_path, self.callers, self.dids or [DID[self.dialplan]] * len(self.callers))
        return [
            "sipp", f"{HOST}:5060", "-sf", str(scenario), "-inf", str(csv_path),
            "-key", "tag", self.tag,
            "-r", str(self.rate), "-m", str(len(self.callers)), "-l", "100000",
            "-i", HOST, "-bind_local", "-ci", HOST, "-mi", HOST, "-mp", str(free_udp_port()),
            "-nostdin", "-trace_logs", "-log_file", str(self.log),
            "-trace_stat", "-stf", str(self.stat), "-fd", "1",
            "-trace_err", "-error_file", str(self.tmp / f"{self.tag}errors.log"),
            "-timeout", f"{int(seconds + hold_s) + 20}s", "-max_recv_loops", "10000",
            "-max_sched_loops", "10000",
        ]  # fmt: skip

    def peak_in_flight(self) -> int:
        """The highest ``CurrentCall`` of SIPp's per-second statistics."""
        try:
            with self.stat.open() as f:
                rows = list(csv.DictReader(f, delimiter=";"))
        except OSError:
            return 0
        return max((int(r.get("CurrentCall", 0) or 0) for r in rows), default=0)


def analyse(
    step: Step, arrivals: dict[str, float], routed: dict[str, tuple[str, bool]]
) -> dict[str, Any]:
    """The step's figures from the carrier's log, the staff arrivals and the ScreenRouted."""
    invite: dict[str, float] = {}
    answer: dict[str, float] = {}
    ended: set[str] = set()
    refused: Counter[str] = Counter()
    for p in _log_lines(step.log):
        if len(p) == 4 and p[0] == "I":
            invite[p[1]] = _stamp(p)
        elif len(p) == 4 and p[0] == "A":
            answer[p[1]] = _stamp(p)
        elif len(p) == 4 and p[0] in "EH":
            ended.add(p[1])
        elif len(p) == 3 and p[0] == "R":
            refused[p[2]] += 1
    kinds = {f"{step.tag}{n}": kind for n, (kind, _) in enumerate(step.callers, start=1)}
    staff_ms = [(arrivals[name] - t) * 1000.0 for name, t in invite.items() if name in arrivals]
    answer_ms = [(answer[name] - t) * 1000.0 for name, t in invite.items() if name in answer]
    fallback = sum(1 for name in invite if routed.get(name, ("", False))[1])
    decided = sum(1 for name in invite if name in routed and not routed[name][1])
    routes = Counter(routed[name][0] for name in invite if name in routed)
    # Calls the screener sent somewhere other than its policy says (a learned block, say).
    unexpected = sum(
        1
        for name in invite
        if step.dialplan == "screened"
        and name in routed
        and not routed[name][1]
        and routed[name][0] != SCREENED_ROUTE.get(kinds.get(name, ""), "")
    )
    completed = len(ended)
    return {
        "dialplan": step.dialplan,
        "rate": step.rate,
        "attempted": len(invite),
        "completed": completed,
        "failed": len(invite) - completed,
        "refused": dict(refused),
        "routed_by_decision": decided,
        "fallback": fallback,
        "no_route_event": len(invite) - decided - fallback,
        "routes": dict(routes),
        "kinds": dict(Counter(kind for kind, _ in step.callers)),
        "unexpected_route": unexpected,
        "to_staff": len(staff_ms),
        "setup_to_staff": summary(staff_ms),
        "setup_to_answer": summary(answer_ms),
        "peak_in_flight": step.peak_in_flight(),
    }


def analyse_paired(
    step: Step, arrivals: dict[str, float], routed: dict[str, tuple[str, bool]]
) -> dict[str, Any]:
    """The side-by-side step: set-up to staff of its direct and its screened calls apart, and
    the difference of their medians and p99s (the screener's added delay, both halves under
    the same load at the same moments)."""
    figures = analyse(step, arrivals, routed)
    invite = {p[1]: _stamp(p) for p in _log_lines(step.log) if len(p) == 4 and p[0] == "I"}
    setup: dict[str, list[float]] = {"direct": [], "screened": []}
    for n, did in enumerate(step.dids, start=1):
        name = f"{step.tag}{n}"
        if name in invite and name in arrivals:
            half = "direct" if did == DID["direct"] else "screened"
            setup[half].append((arrivals[name] - invite[name]) * 1000.0)
    direct, screened = summary(setup["direct"]), summary(setup["screened"])
    figures["paired"] = {
        "direct": direct,
        "screened": screened,
        "added": {
            "p50_ms": screened["p50_ms"] - direct["p50_ms"],
            "p99_ms": screened["p99_ms"] - direct["p99_ms"],
        },
        "screened_calls": sum(1 for did in step.dids if did == DID["screened"]),
    }
    return figures


def screener_times(lines: Sequence[dict[str, Any]], tag: str) -> dict[str, Any]:
    """The screener's own timing of one step's calls (its ``call screened`` log lines):
    the decision (normalize, lookup, policy) and request → Redirect answered (which includes
    the wait for the call record's commit, at most ``RECORD_BUDGET``, and the AMI round trip).
    """
    mine = [
        line
        for line in lines
        if line.get("event") == "call screened" and str(line.get("name", "")).startswith(tag)
    ]
    return {
        "decision": summary([float(line["decision_ms"]) for line in mine]),
        "redirect": summary(
            [float(line["redirect_ms"]) for line in mine if line.get("redirect_ms") is not None]
        ),
    }


# --- the PBX --------------------------------------------------------------------------------


async def _action(ami: AMIClient, action: dict[str, str]) -> str:
    response = await ami.send(action, timeout=10)
    if not response.success:
        raise SandboxError(f"AMI {action['Action']} refused: {response.message}")
    return response.get("Value") or ""


def _write_astdb(path: Path, numbers: Sequence[str]) -> None:
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        db.executemany(
            "INSERT OR REPLACE INTO astdb (key, value) VALUES (?, '1')",
            ((f"/blacklist/{n}",) for n in numbers),
        )
        db.execute("COMMIT")
    finally:
        db.close()


async def fill_astdb(ami: AMIClient, info: SandboxInfo, numbers: Sequence[str]) -> float:
    """The AstDB family ``blacklist`` (value 1 per number); returns seconds.

    Through AMI ``DBPut`` it takes minutes (about 2,500 a second here), so the rows go
    straight into the PBX's ``astdb.sqlite3`` in one transaction. Asterisk keeps that file in
    an open, deferred transaction that it commits within a second of each write: one
    ``DBPut`` first makes it commit and hold no lock, then ``busy_timeout`` covers a read that
    comes between. Two ``DBGet`` through Asterisk check that it sees the rows.
    """
    started = time.perf_counter()
    await _action(ami, {"Action": "DBPut", "Family": "bench", "Key": "sync", "Val": "1"})
    await asyncio.sleep(1.5)
    path = Path(info.raw["instance_dir"]) / "lib" / "astdb.sqlite3"
    await asyncio.to_thread(_write_astdb, path, numbers)  # the AMI client keeps pinging
    for key in (numbers[len(numbers) // 2], numbers[-1]):
        got = await ami.send({"Action": "DBGet", "Family": "blacklist", "Key": key}, timeout=10)
        if not got.success or not got.events or got.events[0].get("Val") != "1":
            raise SandboxError(f"Asterisk does not see the AstDB blacklist entry {key}")
    return time.perf_counter() - started


async def prepare_pbx(ami: AMIClient, info: SandboxInfo, staff_port: int) -> str:
    """Bench-only state on the sandbox PBX; returns STAFF_DIAL's value to put back."""
    for module in MODULES:
        # An earlier run on this sandbox leaves them loaded, and a second load is an error.
        try:
            await ami.send({"Action": "ModuleCheck", "Module": module}, timeout=10)
        except AMIActionError:
            await _action(ami, {"Action": "ModuleLoad", "Module": module, "LoadType": "load"})
    rtp = Path(info.raw["instance_dir"]) / "etc" / "rtp.conf"
    shipped = rtp.with_name("rtp.conf.shipped")
    if not shipped.exists():
        shutil.copyfile(rtp, shipped)
    shutil.copyfile(RTP_CONF, rtp)
    await _action(ami, {"Action": "Reload", "Module": "res_rtp_asterisk.so"})
    for exten, steps in EXTENSIONS.items():
        for priority, (app, data) in enumerate(steps, start=1):
            await _action(
                ami,
                {
                    "Action": "DialplanExtensionAdd",
                    "Context": "from-trunk",
                    "Extension": exten,
                    "Priority": str(priority),
                    "Application": app,
                    "ApplicationData": data,
                    "Replace": "yes",
                },
            )
    before = await _action(ami, {"Action": "Getvar", "Variable": "STAFF_DIAL"})
    await _action(
        ami,
        {
            "Action": "Setvar",
            "Variable": "STAFF_DIAL",
            "Value": f"PJSIP/trunk/sip:staff@{HOST}:{staff_port}",
        },
    )
    return before


async def restore_pbx(ami: AMIClient, info: SandboxInfo, staff_dial: str) -> None:
    """Put the shared sandbox back as the tests expect it: STAFF_DIAL, no bench extensions,
    the shipped RTP range (the two modules stay loaded; nothing else calls them)."""
    rtp = Path(info.raw["instance_dir"]) / "etc" / "rtp.conf"
    shipped = rtp.with_name("rtp.conf.shipped")
    if shipped.exists():
        shipped.replace(rtp)
        await ami.send({"Action": "Reload", "Module": "res_rtp_asterisk.so"}, timeout=10)
    await ami.send({"Action": "Setvar", "Variable": "STAFF_DIAL", "Value": staff_dial}, timeout=10)
    for exten in EXTENSIONS:
        await ami.send(
            {"Action": "DialplanExtensionRemove", "Context": "from-trunk", "Extension": exten},
            timeout=10,
        )


async def _collect(ami: AMIClient, routed: dict[str, tuple[str, bool]]) -> None:
    """ScreenRouted of every call, by caller ID name (the bench's tag + SIPp call number)."""
    while True:
        event: Event = await ami.events.get()
        if (event.get("UserEvent") or "").lower() != "screenrouted":
            continue
        name = event.get("CallerIDName") or ""
        if name and name not in routed:  # the first route counts (a challenge goes on to staff)
            routed[name] = (
                (event.get("Route") or "").lower(),
                (event.get("Fallback") or "").lower() == "yes",
            )


class Agent:
    """Whoever answers the PBX's ScreenRequests: ``screener run`` (info level, JSON lines, as
    in production), or for the ``floor`` dialplan ``bench/floor.py``, which redirects every
    request to staff at once (no lookup, no record: Asterisk's and AMI's share of the cost)."""

    def __init__(self, info: SandboxInfo, db: Path, tmp: Path) -> None:
        self.info, self.db, self.tmp = info, db, tmp
        self.kind = ""
        self.screener: ScreenerProcess | None = None
        self.floor: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._lines: list[dict[str, Any]] = []

    def ensure(self, kind: str) -> int:
        """Make ``kind`` (screener or floor) the one logged in; returns its PID."""
        if kind != self.kind:
            self.stop()
            self.starts += 1
            env = {**self.info.screener_env(), "SCREENER_LOG_LEVEL": "info"}
            if kind == "floor":
                argv = [sys.executable, "-m", "bench.floor"]
                self.floor = subprocess.Popen(
                    argv, env={**os.environ, **env}, stdin=subprocess.DEVNULL, cwd=HERE.parent
                )
                time.sleep(1.0)  # it logs in at once and says nothing
                if self.floor.poll() is not None:
                    raise SandboxError("bench/floor.py exited at start")
            else:
                log_path = self.tmp / f"screener-{self.starts}.log"
                self.screener = ScreenerProcess(env, self.db, log_path)
                self.screener.start()
                if self.screener.find_log("screener running", 30) is None:
                    raise SandboxError(f"screener did not start: {self.screener.tail(800)}")
            self.kind = kind
        proc = self.floor if kind == "floor" else (self.screener and self.screener.proc)
        assert proc is not None
        return proc.pid

    def lines(self) -> list[dict[str, Any]]:
        """The running screener's JSON log lines."""
        return self.screener.lines() if self.screener is not None else []

    def profile(self, tag: str, seconds: float) -> subprocess.Popen[bytes] | None:
        """py-spy on the screener for one step (when installed), collapsed stacks to a file."""
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if self.screener is None or self.screener.proc is None or not Path(spy).exists():
            return None
        out = self.tmp / f"{tag}profile.txt"
        argv = [spy, "record", "--format", "raw", "--rate", "250", "--nonblocking",
                "--duration", str(int(seconds)), "--pid", str(self.screener.proc.pid),
                "--output", str(out)]  # fmt: skip
        return spawn(argv, self.tmp / f"{tag}py-spy.out")

    def stop(self) -> None:
        """Stop whichever runs, by its PID."""
        if self.screener is not None:
            self.screener.stop()
            self.screener = None
        if self.floor is not None:
            stop(self.floor)
            self.floor = None
        self.kind = ""


async def run_step(
    step: Step, scenario: Path, seconds: float, hold_s: float, sampler: Sampler
) -> subprocess.CompletedProcess[bytes]:
    """Run one SIPp carrier to the end, sampling the PBX and the screener meanwhile."""
    sampler.start()
    proc = spawn(step.argv(scenario, seconds, hold_s), step.tmp / f"{step.tag}sipp.out")
    try:
        deadline = time.monotonic() + seconds + hold_s + 40
        while proc.poll() is None and time.monotonic() < deadline:
            sampler.poll()
            await asyncio.sleep(0.25)
    finally:
        stop(proc)
    return subprocess.CompletedProcess(proc.args, proc.returncode)


async def measure(
    info: SandboxInfo,
    *,
    entries: int,
    db: Path,
    rates: Sequence[int],
    step_seconds: float,
    hold_s: float,
    astdb: int,
    dialplans: Sequence[str],
    tmp: Path,
    log: Log,
    profile: bool = False,
    paired_rate: int = 0,
) -> dict[str, Any]:
    """Everything between the sandbox being up and it going down."""
    settings = AMISettings(
        host=info.raw["ami_host"],
        port=int(info.raw["ami_port"]),
        username=info.raw["test_user"],
        secret=info.raw["test_secret"],
        events="user",
    )
    agent = Agent(info, db, tmp)
    staff = Staff(tmp)
    scenario = tmp / "carrier.xml"
    scenario.write_text(carrier_scenario(hold_s))
    routed: dict[str, tuple[str, bool]] = {}
    steps: list[dict[str, Any]] = []
    result: dict[str, Any] = {}
    async with AMIClient(settings, event_names=("UserEvent",), queue_size=1_000_000) as ami:
        collector = asyncio.create_task(_collect(ami, routed))
        staff_dial = await prepare_pbx(ami, info, staff.port)
        try:
            if "blacklist" in dialplans:
                log(f"sip: {astdb:,} numbers into the AstDB blacklist")
                result["astdb_fill_s"] = await fill_astdb(ami, info, astdb_numbers(astdb))
            staff.start()
            live = list(dialplans)
            asterisk = pbx_pid(info)
            for index, rate in enumerate(rates):
                for dialplan in list(live):
                    tag = f"{dialplan[0]}{index}-"
                    callers = caller_mix(
                        entries, astdb, max(1, round(rate * step_seconds)), seed=index * 7 + 1
                    )
                    step = Step(dialplan, rate, tag, callers, tmp)
                    log(f"sip: {dialplan} at {rate}/s for {step_seconds:g}s")
                    pid = agent.ensure("floor" if dialplan == "floor" else "screener")
                    sampler = Sampler({"asterisk": asterisk, "screener": pid})
                    spy = (
                        agent.profile(tag, step_seconds)
                        if profile and dialplan == "screened"
                        else None
                    )
                    done = await run_step(step, scenario, step_seconds, hold_s, sampler)
                    if spy is not None:
                        stop(spy)
                    await asyncio.sleep(0.5)  # the last ScreenRouted events arrive
                    figures = analyse(step, staff.arrivals(), routed)
                    figures["sipp_exit"] = done.returncode
                    if dialplan == "screened":
                        figures["screener"] = screener_times(agent.lines(), tag)
                    figures["processes"] = sampler.result()
                    steps.append(figures)
                    if not unsaturated(figures) or figures["fallback"]:
                        live.remove(dialplan)
                if not live:
                    break
            if paired_rate and {"direct", "screened"} <= set(dialplans):
                # The screener's added set-up measured side by side: one step whose calls
                # alternate between the direct and the screened dialplan (staff-bound callers
                # only), so that a difference of medians is not two moments' noise. Then the
                # same step with bench/floor.py answering the screened half instead: what the
                # hold, the AMI round trip and the Redirect cost in Asterisk with a responder
                # that does nothing else, the part of the added set-up no screener can save.
                for kind, tag, key in PAIRED_STEPS:
                    callers, dids = paired_callers(
                        entries, astdb, max(2, round(paired_rate * step_seconds)), seed=9001
                    )
                    step = Step("paired", paired_rate, tag, callers, tmp, dids)
                    log(f"sip: direct and {kind} in turn at {paired_rate}/s for {step_seconds:g}s")
                    pid = agent.ensure(kind)
                    sampler = Sampler({"asterisk": asterisk, "screener": pid})
                    done = await run_step(step, scenario, step_seconds, hold_s, sampler)
                    await asyncio.sleep(0.5)
                    figures = analyse_paired(step, staff.arrivals(), routed)
                    figures["sipp_exit"] = done.returncode
                    if kind == "screener":
                        figures["screener"] = screener_times(agent.lines(), tag)
                    figures["processes"] = sampler.result()
                    result[key] = figures
        finally:
            agent.stop()
            staff.stop()
            await restore_pbx(ami, info, staff_dial)
            collector.cancel()
            await asyncio.gather(collector, return_exceptions=True)
    result["steps"] = steps
    return result


def unsaturated(step: dict[str, Any]) -> bool:
    """Every call completed and staff rang within ``SATURATED_MS`` (median)."""
    p50 = step["setup_to_staff"]["p50_ms"]
    return not step["failed"] and not p50 > SATURATED_MS  # NaN (no staff call) passes


def summarise(result: dict[str, Any], dialplans: Sequence[str]) -> dict[str, Any]:
    """Highest completed rate per dialplan, the screener's added set-up, and the targets."""
    steps = result["steps"]
    clean = {
        d: [s["rate"] for s in steps if s["dialplan"] == d and unsaturated(s)] for d in dialplans
    }
    result["max_completed_rate"] = {d: max(r, default=0) for d, r in clean.items()}
    by = {(s["dialplan"], s["rate"]): s for s in steps}
    added: dict[str, dict[str, float]] = {}
    for (dialplan, rate), s in by.items():
        direct = by.get(("direct", rate))
        if dialplan == "direct" or direct is None:
            continue
        added.setdefault(dialplan, {})[str(rate)] = {
            "p50_ms": s["setup_to_staff"]["p50_ms"] - direct["setup_to_staff"]["p50_ms"],
            "p99_ms": s["setup_to_staff"]["p99_ms"] - direct["setup_to_staff"]["p99_ms"],
        }
    result["added_vs_direct"] = added
    return result


def run_on(
    info: SandboxInfo,
    *,
    entries: int = 10_000_000,
    rates: Sequence[int] = (10, 25, 50, 100, 200),
    step_seconds: float = 20.0,
    hold_s: float = 3.0,
    astdb: int = 1_000_000,
    dialplans: Sequence[str] = DIALPLANS,
    workdir: Path | None = None,
    profile: bool = False,
    paired_rate: int = 0,
    log: Log = print,
) -> dict[str, Any]:
    """The SIP part on a sandbox that is already up (the e2e test's session).

    SIPp's logs, the injection CSVs and the screener's log go to ``workdir`` (default
    ``/var/tmp/screener-bench/sip``, emptied first)."""
    if shutil.which("sipp") is None:
        raise SandboxError("sipp is not installed (Debian's sip-tester; scripts/bootstrap)")
    db, _ = dataset.ensure_db(entries, log=log)
    tmp = workdir or dataset.CACHE / "sip"
    shutil.rmtree(tmp, ignore_errors=True)  # the last run's SIPp logs and CSVs
    tmp.mkdir(parents=True)
    try:
        result = asyncio.run(
            measure(
                info, entries=entries, db=db, rates=rates, step_seconds=step_seconds,
                hold_s=hold_s, astdb=astdb, dialplans=dialplans, tmp=tmp, log=log, profile=profile,
                paired_rate=paired_rate,
            )
        )  # fmt: skip
    finally:
        dataset.reset_calls(db)
    result.update(
        entries=entries,
        rates=list(rates),
        step_seconds=step_seconds,
        hold_s=hold_s,
        astdb_entries=astdb if "blacklist" in dialplans else 0,
        dialplans=list(dialplans),
        mix=dict(MIX),
        workdir=str(tmp),
    )
    return summarise(result, dialplans)


def run(**kwargs: Any) -> dict[str, Any]:
    """Bring the sandbox up (holding its lock), run the SIP part, tear it down."""
    try:
        with sandbox_session(with_carrier=False) as info:
            return run_on(info, **kwargs)
    except SandboxError as exc:
        return {"error": str(exc)[-800:]}
