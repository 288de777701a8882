"""The demo: a real Asterisk, the real screener, five sample calls, a table of where they went,
then a staff phone blocking its last caller with *32 and that caller going to voicemail.

Callers hear Japanese (the office language for region JP): the prompts are rendered by
``screener prompts build`` when the sandbox comes up. Toll-free callers are recorded, after the
spoken warning, as the example configuration does.

Run through ``scripts/demo`` (which installs what is needed first). Everything it starts it
stops again, by PID, even when interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from screener.log import configure_logging
from tests.probe import (
    Call,
    Probe,
    SandboxError,
    SandboxInfo,
    ScreenerProcess,
    probe_client,
    sandbox_session,
    user_event,
)

# Wide enough for the table when the output is not a terminal (CI logs, a pipe).
console = Console() if sys.stdout.isatty() else Console(width=160)


@dataclass(frozen=True)
class Sample:
    """One sample caller and how it behaves when challenged."""

    who: str
    number: str
    name: str
    dtmf: str = ""  # "wait": keys in the code it hears; other digits: keys those
    repeat: float | None = None
    dtmf_delay: float = 3.5  # seconds after the answer before it keys in


SAMPLES = [
    Sample("known customer", "090-1111-2222", "Tanaka"),
    Sample("telemarketer", "0120-121-852", "Tele Sales"),
    Sample("robodialer, number withheld", "anonymous", "", dtmf="00", repeat=4),
    # Toll-free: recorded, so it first hears the warning (about 3 s), then the challenge.
    Sample("unknown 0800 caller (a person)", "0800-123-4567", "Sato", "wait", dtmf_delay=7.5),
    Sample("ordinary mobile", "080-3333-4444", "Suzuki"),
]


async def place_calls(info: SandboxInfo) -> tuple[list[Call], dict[str, dict[str, Any]]]:
    """Place every sample call over SIP from the carrier and follow it to its end."""
    carrier = info.carrier
    assert carrier is not None
    results: dict[str, dict[str, Any]] = {}
    async with (
        probe_client(info.pbx) as pbx,
        probe_client(carrier) as car,
        Probe(pbx, car) as probe,
    ):

        async def one(sample: Sample, delay: float) -> Call:
            await asyncio.sleep(delay)
            number = sample.number.replace("-", "")
            call = await probe.call_sip(
                number,
                name=sample.name,
                dtmf=sample.dtmf,
                dtmf_delay=sample.dtmf_delay,
                repeat=sample.repeat,
                hold=8,
                within=15,
            )
            route, fallback = await probe.routed(call, within=15)
            result: dict[str, Any] = {"route": route, "fallback": fallback}
            if route == "challenge":
                routed_at = time.monotonic()
                if sample.dtmf == "wait":
                    await probe.send_code(call, await probe.challenge_code(call))
                outcome = await probe.pbx.wait_for(user_event("ScreenChallenge", call.call_id), 60)
                result["outcome"] = (outcome.get("Outcome") or "").lower()
                if result["outcome"] == "pass":
                    await probe.staff_dialled(call)
                    result["to_staff_s"] = time.monotonic() - routed_at
            results[call.call_id] = result
            return call

        calls = await asyncio.gather(*(one(s, i * 0.7) for i, s in enumerate(SAMPLES)))
        await asyncio.sleep(2)  # let voicemail and hangup outcomes reach the screener
        await probe.hangup_all()
        await asyncio.sleep(1)  # the recording's length arrives with the hangup
    return list(calls), results


# The staff-phone scene: a caller rings staff1, staff1 keys *32, the caller's next call.
NUISANCE = "080-5555-6666"


async def block_last_caller(info: SandboxInfo, screener: ScreenerProcess) -> dict[str, Any]:
    """A mobile caller rings staff1 (who answers); staff1 keys *32 on its phone; the same
    caller calls again. Returns where each call went and how long the change took."""
    carrier = info.carrier
    assert carrier is not None
    number = NUISANCE.replace("-", "")
    async with (
        probe_client(info.pbx) as pbx,
        probe_client(carrier) as car,
        Probe(pbx, car) as probe,
    ):
        assert probe.carrier is not None
        earlier = {id(e) for e in probe.carrier.events}
        first = await probe.call_sip(number, name="Nuisance", hold=4, within=15)
        first_route, _ = await probe.routed(first, within=15)
        answered = await probe.carrier.wait_for(
            lambda e: user_event("StaffAnswered", Endpoint="staff1")(e) and id(e) not in earlier,
            15,
        )
        # *32 once the screener knows this call rang staff1 (its last caller).
        deadline = time.monotonic() + 15
        while not any(
            x.get("event") == "staff phone rang"
            and (x.get("endpoint"), x.get("call_id")) == ("staff1", first.call_id)
            for x in screener.lines()
        ):
            if time.monotonic() > deadline:
                raise SandboxError("the screener never saw the call ring staff1")
            await asyncio.sleep(0.05)
        result, pressed = await probe.feature("staff1", "*32")
        changed = next(
            (x for x in screener.lines() if x.get("event") == "staff feature"),
            {"changed_at": float("nan")},
        )
        second = await probe.call_sip(number, name="Nuisance", hold=6, within=15)
        second_route, _ = await probe.routed(second, within=15)
        await probe.pbx.wait_for(user_event("ScreenVoicemail", second.call_id), 30)
        await probe.hangup_all()
    return {
        "first": first_route,
        "answered": answered is not None,
        "result": result,
        "ms": (float(changed["changed_at"]) - float(pressed.get("Timestamp") or "nan")) * 1000,
        "second": second_route,
    }


CONSOLE_SECONDS = 60


def show_console(screener: ScreenerProcess, tmp: Path) -> None:
    """Serve the web console over the demo's calls for a minute, on a terminal; else say how."""
    password = secrets.token_urlsafe(12)
    (tmp / "pw").write_text(password + "\n")
    added = screener.cli(
        "user", "add", "demo", "--role", "admin", "--password-file", str(tmp / "pw")
    )
    if added.returncode != 0:
        console.print(f"[red]screener user add failed[/]: {added.stderr}")
        return
    if not sys.stdin.isatty():
        console.print(
            "web console: not started (no terminal); `screener web --db DB` serves it on "
            "http://127.0.0.1:8080/ after `screener user add NAME --role admin`"
        )
        return
    web = subprocess.Popen(
        [sys.executable, "-m", "screener", "web", "--port", "8080"],
        env=screener.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        console.print(
            f"web console with the demo's calls: http://127.0.0.1:8080/ (user demo, password "
            f"{password}) for {CONSOLE_SECONDS} s; Ctrl-C to skip"
        )
        with contextlib.suppress(subprocess.TimeoutExpired, KeyboardInterrupt):
            web.wait(CONSOLE_SECONDS)
    finally:
        web.terminate()
        web.wait(10)


def main() -> int:
    # The probe's own AMI connections log at info; the demo's output is the table.
    configure_logging("console", "warning", stream=sys.stderr)
    console.print("[bold]screener demo[/]: starting a real Asterisk 22 sandbox on loopback …")
    tmp = Path(tempfile.mkdtemp(prefix="screener-demo-"))
    try:
        with sandbox_session(with_carrier=True) as info:
            config = tmp / "screener.toml"
            config.write_text("[policy.record]\ntoll_free = true\n", encoding="utf-8")
            env = {
                **info.screener_env(),
                "SCREENER_CONFIG": str(config),
                "SCREENER_RECORDING_FOLDER": info.raw["recordings_dir"],
            }
            screener = ScreenerProcess(env, tmp / "screener.db", tmp / "log")
            try:
                for args in (
                    ("090-1111-2222", "--allow", "--label", "Tanaka (customer)"),
                    ("0120-121-852", "--block", "--label", "Tele Sales"),
                ):
                    added = screener.cli("list", "add", *args)
                    if added.returncode != 0:
                        console.print(f"[red]screener list add failed[/]: {added.stderr}")
                        return 1
                screener.start()
                if screener.find_log("screener running", 20) is None:
                    console.print(f"[red]screener did not start[/]:\n{screener.tail()}")
                    return 1
                console.print("screener is running; placing 5 sample calls over SIP …")
                calls, results = asyncio.run(place_calls(info))
                console.print(f"{NUISANCE} rings staff1, staff1 keys *32, then calls again …")
                scene = asyncio.run(block_last_caller(info, screener))
                done = screener.cli("calls", "--json")
                records = {r["call_id"]: r for r in json.loads(done.stdout)}
                lines = screener.lines()
                show_console(screener, tmp)
            finally:
                screener.stop()
    except SandboxError as exc:
        console.print(Text(str(exc), style="red"))
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the demo's database and log
    screened = {x["call_id"]: x for x in lines if x.get("event") == "call screened"}

    table = Table(title="Where each call went, and why")
    columns = (
        "caller",
        "number",
        "category",
        "route",
        "challenge",
        "recorded",
        "why",
        "decided in",
    )
    for column in columns:
        table.add_column(column)
    ok = True
    expected = ["staff", "voicemail", "challenge", "challenge", "staff"]
    for sample, call, want in zip(SAMPLES, calls, expected, strict=True):
        result = results.get(call.call_id, {})
        record = records.get(call.call_id, {})
        line = screened.get(call.call_id, {})
        outcome = result.get("outcome", "")
        if outcome == "pass":
            outcome += f" → staff rang after {result['to_staff_s']:.1f} s"
        elif outcome:
            outcome += " → voicemail"
        ok &= result.get("route") == want and not result.get("fallback")
        cells = (
            sample.who,
            sample.number,
            record.get("category", "?"),
            result.get("route", "?") + (" (fallback!)" if result.get("fallback") else ""),
            outcome,
            _recorded(record.get("recording")),
            (record.get("reasons") or ["?"])[-1],
            f"{line.get('decision_ms', float('nan')):.1f} ms",
        )
        # Text(): what came back from the database is shown as it is, never as rich markup.
        table.add_row(*(Text(str(cell)) for cell in cells))
    console.print(table)
    decisions = [x["decision_ms"] for x in screened.values()]
    redirects = [x["redirect_ms"] for x in screened.values()]
    if decisions:
        console.print(
            f"decision latency: median {statistics.median(decisions):.2f} ms, "
            f"worst {max(decisions):.2f} ms; request → Redirect sent: median "
            f"{statistics.median(redirects):.2f} ms, worst {max(redirects):.2f} ms "
            f"({len(decisions)} calls)"
        )
    recorded = [r["recording"] for r in records.values() if r.get("recording")]
    for rec in recorded:
        console.print(Text(f"recording: {rec['path']} ({_recorded(rec)})"))
    ok &= len(recorded) == 1
    staff = Table(title="A staff phone blocks its last caller (*32)")
    for column in ("step", "what happened"):
        staff.add_column(column)
    picked = "staff1 answers" if scene["answered"] else "nobody answers"
    staff.add_row(f"{NUISANCE} calls", f"route {scene['first']}; {picked}")
    staff.add_row(
        "staff1 keys *32",
        f"{scene['result']}: 「着信拒否に登録しました」 (list changed {scene['ms']:.0f} ms"
        " after the key)",
    )
    staff.add_row(f"{NUISANCE} calls again", f"route {scene['second']}")
    console.print(staff)
    ok &= (scene["first"], scene["result"], scene["second"]) == ("staff", "blocked", "voicemail")
    console.print("[green]every call went where it should[/]" if ok else "[red]unexpected route[/]")
    return 0 if ok else 1


def _recorded(recording: dict[str, Any] | None) -> str:
    if not recording:
        return ""
    seconds = recording.get("seconds")
    return "yes" if seconds is None else f"{seconds:.0f} s"


if __name__ == "__main__":
    sys.exit(main())
