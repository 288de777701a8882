"""Hostile caller data through the whole chain, property-based (issue 6).

Caller ID is attacker-controlled: a carrier, a SIP peer or a spoofing service chooses the
number and the name. Each test pushes arbitrary text (any Unicode, control characters, CR/LF
followed by ``Action: Originate``, 2,000-character strings, SQL metacharacters, AMI header and
rich-markup lookalikes) through one link of the chain, from the pure decision to the AMI wire:

- normalization and decision never raise, and every decision has a route, a rule and reasons;
- the call log keeps the raw number and name exactly;
- a JSON (or console) log line is always one line with no raw control character;
- ``screener calls`` never lets a control character (or rich markup) reach the terminal;
- end to end, a ScreenRequest carrying the text on the wire (as Asterisk would frame it) gives
  exactly the Redirects an independent model of AMI framing predicts, each with its six clean
  header lines, and never anything else (no Originate).

Examples are derandomized (the same ones on every run), so CI is reproducible.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import os
import re
import tempfile
import time
import unicodedata
from pathlib import Path

import pytest
import structlog
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from screener.cli import main
from screener.config import did_key
from screener.dialplan import redirect_target
from screener.log import configure_logging
from screener.numbers import Caller, Category, normalize
from screener.policy import (
    DidPolicy,
    Entry,
    Hours,
    ListKind,
    Policy,
    Route,
    challenge_code,
    decide,
)
from screener.screening import Screening, screen
from screener.store import CallRecord, Store
from tests.fakeami import FakeAMI
from tests.test_service import SECRET, make_config, serving

NOW = dt.datetime(2026, 3, 2, 10, 30, tzinfo=dt.UTC)  # a Monday


def props(examples: int) -> settings:
    """Derandomized settings: the same examples on every run, no per-example deadline.

    The fast path runs a quarter of them (``SCREENER_QUICK_PROPERTIES``, set by conftest.py).
    """
    if os.environ.get("SCREENER_QUICK_PROPERTIES"):
        examples = max(10, examples // 4)
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


# -- what an attacker may put in a caller ID ---------------------------------------------------

ORIGINATE = "\r\nAction: Originate\r\nChannel: Local/0990@out\r\nApplication: System\r\nData: id"
SAMPLES = (
    "",
    " ",
    "0312345678",
    "0120121852",
    ORIGINATE,
    "0312345678" + ORIGINATE,
    "0312345678\r\n\r\nAction: Originate\r\nChannel: Local/s@default\r\n\r\n",
    # A whole forged request for another call, framed by CRLFCRLF.
    "\r\n\r\nEvent: UserEvent\r\nUserEvent: ScreenRequest\r\nUniqueid: 1699999999.9\r\n"
    "CallerIDNum: 0312345678\r\n\r\n",
    "\r\n\r\nEvent: UserEvent\r\nUserEvent: ScreenRequest\r\nUniqueid: 16999\r\nOriginate\r\n",
    "\r\nUniqueid: 1699999999.8",
    "\r\nCallerIDNum: 0120121852",
    "\r\nCallerIDName: Bank",
    "\r\nTimestamp: 1",
    "\r\nActionID: 1",
    "\r\nExten: 0355550000",
    "\rAction: Originate",
    "\nAction: Originate",
    "'; DROP TABLE calls; --",
    '" OR 1=1 --',
    "%_\\",
    "\x00",
    "a\x00b",
    "\x1b[2J\x1b]0;pwned\x07",
    "\x9b31m\x85",
    "\u202egnp.exe",
    "\u2028\u2029",
    "=cmd|' /C calc'!A0",
    "+81 120 121 852",
    "@SUM(1)",
    "[link=http://evil.example]click[/link]",
    "[/bold]",
    "[red]",
    "０１２０１２１８５２",
    "sip:0312345678@10.0.0.1",
    "<sip:0120121852@carrier>",
    "P",
    "anonymous",
    "タナカ ショウジ",
    "x" * 2000,
    "0" * 2000,
    "\r\n" * 300,
)
_PIECE = st.one_of(
    st.sampled_from(SAMPLES),
    st.text(max_size=30),
    st.text(st.characters(max_codepoint=0xBF), max_size=30),  # C0, DEL, C1 densely
)
# What can travel on the AMI wire: any Unicode but lone surrogates (not encodable as UTF-8).
WIRE_TEXT = st.one_of(
    st.sampled_from(SAMPLES),
    st.lists(_PIECE, max_size=6).map("".join),
    st.text(min_size=1000, max_size=2000),
)
# For the pure functions: lone surrogates too (a non-UTF-8 argv byte becomes one).
ANY_TEXT = st.one_of(WIRE_TEXT, st.text(st.characters(exclude_categories=()), max_size=40))

LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def terminal_unsafe(text: str) -> list[str]:
    """Characters that can drive a terminal or break a line: Cc (C0, DEL, C1), Zl, Zp, Cs."""
    return [c for c in text if unicodedata.category(c) in ("Cc", "Zl", "Zp", "Cs")]


# -- 1. normalization and decision -------------------------------------------------------------

POLICIES = (
    Policy(),
    Policy(withheld_announcement=True),
    Policy(dids={"+81355550000": DidPolicy(default=Route.VOICEMAIL)}),
    Policy(hours=Hours(open={0: ((dt.time(9), dt.time(10)),)})),  # closed at NOW
    Policy(hours=Hours(quiet={0: ((dt.time(19), dt.time(20)),)})),  # quiet at NOW (Tokyo)
)
ENTRIES = (
    Entry(ListKind.BLOCK, "+81120", prefix=True, created_at=NOW),
    Entry(ListKind.ALLOW, "+81312345678", created_at=NOW),
    Entry(ListKind.BLOCK, "+81312345678", created_at=NOW, expires_at=NOW - dt.timedelta(1)),
)


@props(300)
@given(
    raw=ANY_TEXT,
    did=ANY_TEXT,
    region=st.sampled_from(["JP", "US", "GB", "jp"]),
    policy=st.sampled_from(POLICIES),
    entries=st.lists(st.sampled_from(ENTRIES), max_size=3),
)
def test_any_caller_gets_a_route_and_reasons(
    raw: str, did: str, region: str, policy: Policy, entries: list[Entry]
) -> None:
    """normalize, did_key, decide and redirect_target never raise; every decision is explained."""
    caller = normalize(raw, region)
    assert caller.raw == raw
    assert isinstance(caller.category, Category)
    assert caller.e164 is None or re.fullmatch(r"\+[1-9][0-9]{6,14}", caller.e164)
    key = did_key(did, region.upper())
    assert re.fullmatch(r"[0-9A-Za-z+*#]*", key)
    decision = decide(caller, entries, policy, NOW, key)
    assert isinstance(decision.route, Route)
    assert decision.rule
    assert decision.reasons and all(isinstance(r, str) and r for r in decision.reasons)
    assert decision.reasons[0].startswith(f"caller {caller.display}: {caller.category.value}")
    code = challenge_code(2) if decision.route is Route.CHALLENGE else None
    context, exten = redirect_target(Screening(caller, key, tuple(entries), decision), code)
    assert context == f"screen-{decision.route.value}"
    assert re.fullmatch(r"s|withheld|after-hours|[0-9]{2}", exten)


# -- 2. storage: the call log keeps the raw caller exactly -------------------------------------


@props(40)
@given(number=WIRE_TEXT, name=WIRE_TEXT, did=WIRE_TEXT)
def test_call_log_keeps_the_raw_caller_exactly(number: str, name: str, did: str) -> None:
    """screen() then record_call/record_fallback: raw number and name come back exactly."""

    async def go(path: Path) -> None:
        async with Store.open(path) as store:
            await store.add(Entry(ListKind.BLOCK, "+81120", prefix=True, created_at=NOW))
            screening = await screen(store, number, Policy(), "JP", NOW, did)
            record = CallRecord(
                call_id="1700000000.1",
                received_at=NOW,
                raw_number=number,
                raw_name=name,
                e164=screening.caller.e164,
                category=screening.caller.category.value,
                did=screening.did,
                route=screening.decision.route.value,
                rule=screening.decision.rule,
                reasons=screening.decision.reasons,
                latency_ms=0.5,
            )
            await store.record_call(record)
            (listed,) = await store.calls()
            assert listed == record
            # A fallback for an unseen call stores the raw values of its own event.
            await store.record_fallback(
                CallRecord("1700000000.2", NOW, number, name, None, "invalid", did, "staff",
                           "fallback", ("no decision within the hold time",), 0.0, fallback=True)
            )  # fmt: skip
            fallback = await store.get_call("1700000000.2")
            assert fallback is not None
            assert (fallback.raw_number, fallback.raw_name, fallback.did) == (number, name, did)
            assert fallback.fallback

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(go(Path(tmp) / "s.db"))


# -- 3. logging: one line, no raw control character --------------------------------------------


@props(200)
@given(call_id=ANY_TEXT, number=ANY_TEXT, name=ANY_TEXT)
def test_json_log_line_is_one_clean_line(call_id: str, number: str, name: str) -> None:
    """A 'call screened' JSON line is one line, decodes back exactly, and is printable UTF-8."""
    out = io.StringIO()
    configure_logging("json", "info", stream=out)
    caller = normalize(number)
    log = structlog.get_logger("screener.service")
    with structlog.contextvars.bound_contextvars(call_id=call_id):
        log.info(
            "call screened",
            caller=caller.display,
            raw=number,
            name=name,
            reasons=[f"caller {caller.display}", name],
            decision_ms=0.1,
        )
    text = out.getvalue()
    assert text.endswith("\n") and text.count("\n") == 1
    assert len(text.splitlines()) == 1  # no U+2028, U+0085, VT, FF... either
    assert terminal_unsafe(text[:-1]) == []
    text.encode("utf-8")  # writable to any UTF-8 stream (a lone surrogate is escaped)
    line = json.loads(text)
    assert (line["call_id"], line["raw"], line["name"]) == (call_id, number, name)
    assert line["reasons"][1] == name


@props(100)
@given(call_id=ANY_TEXT, name=ANY_TEXT)
def test_console_log_line_is_one_clean_line(call_id: str, name: str) -> None:
    """The console renderer (a terminal) shows caller data escaped, on one line."""
    out = io.StringIO()
    configure_logging("console", "info", stream=out)
    with structlog.contextvars.bound_contextvars(call_id=call_id):
        structlog.get_logger("screener.service").info("call screened", name=name)
    text = out.getvalue()
    assert text.endswith("\n") and len(text.splitlines()) == 1
    assert terminal_unsafe(text[:-1]) == []


# -- 4. the terminal: `screener calls` ---------------------------------------------------------


@props(30)
@given(number=WIRE_TEXT, name=WIRE_TEXT, forged=WIRE_TEXT)
@example(number="[/bold]", name="x", forged="[link=http://evil.example]click[/link]")
@example(number="\x1b]8;;http://evil.example\x1b\\x", name="\x9b2J", forged="\u2028\x85")
def test_calls_table_never_drives_the_terminal(number: str, name: str, forged: str) -> None:
    """`screener calls` prints hostile caller data escaped and inert (no control, no markup).

    ``forged`` stands for what header injection could put in the other stored columns: the
    Route of a forged ScreenFallback, the Status of a forged ScreenVoicemail.
    """

    async def fill(path: Path) -> None:
        async with Store.open(path) as store:
            await store.record_call(
                CallRecord("1700000000.1", NOW, number, name, None, "invalid", forged[:20],
                           forged[:20], "fallback", (forged,), 1.0, voicemail=forged[:40],
                           fallback=True)
            )  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "s.db"
        asyncio.run(fill(db))
        env = {"SCREENER_CONFIG": "", "COLUMNS": "400"}
        table = CliRunner().invoke(main, ["calls", "--db", str(db)], env=env)
        assert table.exit_code == 0, table.output
        assert terminal_unsafe(table.output.replace("\n", "")) == []
        if "[" in number and not terminal_unsafe(number) and len(number) < 60:
            assert number.strip() in table.output  # shown verbatim: not read as markup
        as_json = CliRunner().invoke(main, ["calls", "--json", "--db", str(db)], env=env)
        assert as_json.exit_code == 0, as_json.output
        assert terminal_unsafe(as_json.output.replace("\n", "")) == []
        (call,) = json.loads(as_json.output)
        assert (call["number"], call["name"], call["reasons"]) == (number, name, [forged])


# -- 5. the AMI adapter and the service, end to end --------------------------------------------

CALL_ID = "1700000000.4242"  # a Uniqueid no sample contains
SENTINEL = "1700000000.4243"
DID = "0355550000"
REDIRECT_KEYS = ["Action", "ActionID", "Channel", "Context", "Exten", "Priority"]
_C_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
              "\v": "\\v", "\\": "\\\\", "'": "\\'", '"': '\\"', "?": "\\?"}  # fmt: skip


def asterisk_value(text: str) -> str:
    """A C string: Asterisk's values end at the first NUL."""
    return text.split("\x00", 1)[0]


def escape_c(text: str) -> str:
    """Asterisk's ast_escape_c, which the channel snapshot applies to CallerIDName only."""
    return "".join(_C_ESCAPES.get(c, c) for c in asterisk_value(text))


def wire_request(call_id: str, number: bytes, name: bytes, stamp: float) -> bytes:
    """A ScreenRequest as Asterisk 22 writes it: snapshot headers in order, values verbatim.

    A CR/LF inside a value simply ends its header line there: that is the injection.
    """
    head: list[tuple[str, bytes]] = [
        ("Event", b"UserEvent"),
        ("Privilege", b"user,all"),
        ("Timestamp", f"{stamp:.6f}".encode()),
        ("Channel", b"PJSIP/trunk-00000001"),
        ("ChannelState", b"4"),
        ("ChannelStateDesc", b"Ring"),
        ("CallerIDNum", number),
        ("CallerIDName", name),
        ("ConnectedLineNum", b"<unknown>"),
        ("ConnectedLineName", b"<unknown>"),
        ("Language", b"ja"),
        ("AccountCode", b""),
        ("Context", b"from-trunk"),
        ("Exten", DID.encode()),
        ("Priority", b"2"),
        ("Uniqueid", call_id.encode()),
        ("Linkedid", call_id.encode()),
        ("UserEvent", b"ScreenRequest"),
        ("Version", b"1"),
    ]
    return b"".join(k.encode() + b": " + v + b"\r\n" for k, v in head) + b"\r\n"


def clean(value: str) -> str:
    """What may reach the AMI socket of a value: no Cc, no Cs, no line/paragraph separator."""
    return "".join(c for c in value if unicodedata.category(c) not in ("Cc", "Cs", "Zl", "Zp"))


def expected_redirects(wire: bytes, now: float) -> tuple[int, list[tuple[str, str]]]:
    """An independent model of AMI framing and of the service's routing rules.

    Returns how many ScreenRequests with a Uniqueid the service will see, and the (Channel,
    Context) of every Redirect it must send for them.
    """
    requests = 0
    redirects: list[tuple[str, str]] = []
    for block in wire.decode("utf-8", "replace").split("\r\n\r\n")[:-1]:
        lines = block.strip("\r\n").split("\r\n")
        if lines[0][:9].lower() == "response:":
            continue  # a response to an action, not an event
        headers: dict[str, str] = {}
        twice: set[str] = set()
        for line in lines:
            key, sep, value = line.partition(":")
            if sep:
                key = key.lower()
                if key in headers:
                    twice.add(key)
                else:
                    headers[key] = value[1:] if value.startswith(" ") else value
        assert headers.get("event", "").lower() != "shutdown", "a sample forged a Shutdown"
        if headers.get("event", "").lower() != "userevent":
            continue
        if headers.get("userevent", "").lower() != "screenrequest":
            continue
        uid = headers.get("uniqueid", "")
        if not uid:
            continue
        requests += 1
        if "uniqueid" in twice:
            continue  # ambiguous: which call is it? the fallback takes it
        try:
            stamp: float | None = float(headers.get("timestamp") or "x")
        except ValueError:
            stamp = None
        if stamp is not None and stamp + 4.0 - 0.5 < now:
            continue  # too late: the fallback has begun
        channel = clean(uid)
        if len(f"Channel: {channel}".encode()) > 1022:
            continue  # longer than an AMI line: cannot be sent
        if twice:
            route = Route.CHALLENGE  # forged headers: the caller counts as invalid
        else:
            caller: Caller = normalize(headers.get("calleridnum", ""), "JP")
            route = decide(caller, (), Policy(), dt.datetime.now(dt.UTC)).route
        redirects.append((channel, f"screen-{route.value}"))
    return requests, redirects


_WIRE_BYTES = st.one_of(
    WIRE_TEXT.map(lambda t: t.encode()),
    st.tuples(WIRE_TEXT, st.binary(max_size=6), WIRE_TEXT).map(
        lambda p: p[0].encode() + p[1] + p[2].encode()  # invalid UTF-8 too: Asterisk sends bytes
    ),
)


@pytest.mark.slow
@props(40)
@given(number=_WIRE_BYTES, name=WIRE_TEXT, escaped=st.booleans())
@example(number=b"0312345678" + ORIGINATE.encode(), name="Bank\r\nAction: Originate", escaped=False)
@example(number=SAMPLES[7].encode(), name="x", escaped=True)
async def test_hostile_request_end_to_end(number: bytes, name: str, escaped: bool) -> None:
    """A ScreenRequest with hostile CallerIDNum/CallerIDName, through AMIClient and run().

    CallerIDNum goes on the wire verbatim (Asterisk does not escape it); CallerIDName is
    C-escaped as Asterisk does, or (``escaped=False``) verbatim, as if it were not. Nothing
    raises; the fake receives exactly the predicted Redirects, each with its six clean lines.
    """
    number = number.split(b"\x00", 1)[0]
    name_wire = (escape_c(name) if escaped else asterisk_value(name)).encode()
    with tempfile.TemporaryDirectory() as tmp:
        async with FakeAMI(secret=SECRET) as fake:
            async with serving(make_config(fake, Path(tmp) / "s.db"), fake) as svc:
                now = time.time()
                wire = wire_request(CALL_ID, number, name_wire, now)
                requests, expected = expected_redirects(wire, now)
                await fake.send_raw(wire)
                await fake.send_raw(wire_request(SENTINEL, b"09012345678", b"ok", time.time()))
                expected.append((SENTINEL, "screen-staff"))
                stats = svc.screener.stats
                await fake.wait_until(
                    lambda: (
                        stats.requests == requests + 1
                        and len(fake.actions("Redirect")) >= len(expected)
                    ),
                    within=5,
                )
            final = svc.task.result()  # run() returned normally: nothing raised in the service
        assert final.requests == requests + 1
        assert {r.action for r in fake.received} <= {"login", "ping", "setvar", "redirect"}
        redirects = fake.actions("Redirect")
        # Each Redirect is preceded by its call's options, and nothing but the options is set.
        setvars = fake.actions("Setvar")
        assert sorted(r.get("Channel") or "" for r in setvars) == sorted(
            r.get("Channel") or "" for r in redirects
        )
        assert all(
            r.get("Variable") == "SCREEN_OPTIONS"
            and re.fullmatch(r"(ja|en)-(yes|no)-(yes|no)", r.get("Value") or "")
            for r in setvars
        )
        got = sorted((r.get("Channel") or "", r.get("Context") or "") for r in redirects)
        assert got == sorted(expected)
        for sent in redirects:
            text = sent.raw.decode("utf-8")
            lines = text.split("\r\n")
            assert lines[-2:] == ["", ""] and len(lines) == len(REDIRECT_KEYS) + 2
            assert sorted(k for k, _ in sent.headers) == REDIRECT_KEYS
            assert all(clean(v) == v for _, v in sent.headers)
            exten = sent.get("Exten") or ""
            challenge = sent.get("Context") == "screen-challenge"
            assert re.fullmatch(r"[0-9]{2}", exten) if challenge else exten == "s"
            assert sent.get("Priority") == "1"
