"""Static checks of asterisk-conf/, the sandbox carrier and the Docker files.

No Asterisk needed: these parse the files and hold them to docs/architecture.md.
The end-to-end behaviour is checked against the real sandbox (scripts/sandbox).
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "asterisk-conf"
CARRIER = REPO / "scripts" / "sandbox-carrier"

ROUTES = ("staff", "challenge", "voicemail", "reject")
CONTRACT_CONTEXTS = (
    "from-trunk",
    "screen-hold",
    "screen-staff",
    "screen-voicemail",
    "screen-reject",
    "screen-challenge",
    "screen-late",
    "screen-fallback",
    *(f"route-{r}" for r in ROUTES),
)
FORBIDDEN_WRITE = {"originate", "system", "command", "config", "all"}


# --------------------------------------------------------------------------
# A small parser for Asterisk's INI dialect (enough for these files)
# --------------------------------------------------------------------------

Section = tuple[str, list[tuple[str, str]]]


# Files #tryinclude'd into the middle of another file's section: their settings belong there.
FRAGMENTS = {"manager_tls.conf.example": "general"}


def parse_conf(path: Path) -> list[Section]:
    """Sections in order, each with its (key, value) lines; `=>` counts as `=`."""
    sections: list[Section] = [(FRAGMENTS[path.name], [])] if path.name in FRAGMENTS else []
    for raw in path.read_text().splitlines():
        line = raw.split(";", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        head = re.fullmatch(r"\[([^\]]+)\](\(.*\))?", line)
        if head:
            sections.append((head.group(1), []))
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not key = value: {raw!r}"
        assert sections, f"{path.name}: setting before any section: {raw!r}"
        sections[-1][1].append((key.strip(), value.lstrip(">").strip()))
    return sections


def section(path: Path, name: str, type_: str | None = None) -> dict[str, str]:
    """The named section as a dict (the one of the given pjsip type, if any)."""
    for sname, items in parse_conf(path):
        if sname == name and (type_ is None or dict(items).get("type") == type_):
            return dict(items)
    raise KeyError(f"{path.name}: no [{name}] {type_ or ''}")


def dialplan(path: Path = CONF / "extensions.conf") -> dict[str, list[str]]:
    """Context -> its extension lines (the text after `exten =>` / `same =>`)."""
    out: dict[str, list[str]] = {}
    for name, items in parse_conf(path):
        out.setdefault(name, []).extend(v for k, v in items if k in ("exten", "same"))
    return out


def app_calls(line: str) -> list[tuple[str, str]]:
    """(application, raw argument text) for the application of one dialplan line."""
    m = re.match(r"(?:[^,]*,)?(?:n|\d+)(?:\([a-z]+\))?,(\w+)\((.*)\)\s*$", line)
    return [(m.group(1), m.group(2))] if m else []


def expansions(text: str) -> list[str]:
    """Top-level `${...}` and `$[...]` expressions in text, balanced."""
    found, i = [], 0
    while i < len(text):
        if text.startswith(("${", "$["), i):
            close = "}" if text[i + 1] == "{" else "]"
            depth, j = 0, i + 1
            while j < len(text):
                if text[j] in "{[":
                    depth += 1
                elif text[j] in "}]":
                    depth -= 1
                    if depth == 0 and text[j] == close:
                        break
                j += 1
            found.append(text[i : j + 1])
            i = j + 1
        else:
            i += 1
    return found


def userevents() -> list[tuple[str, str]]:
    """(context, UserEvent argument text) for every UserEvent in extensions.conf."""
    return [
        (ctx, args)
        for ctx, lines in dialplan().items()
        for line in lines
        for app, args in app_calls(line)
        if app == "UserEvent"
    ]


# --------------------------------------------------------------------------
# A minimal YAML reader for docker-compose.yml (block maps, lists, scalars)
# --------------------------------------------------------------------------


def parse_yaml(text: str) -> object:
    """Parse the block-style subset of YAML that docker-compose.yml uses."""
    lines = []
    for raw in text.splitlines():
        stripped = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if stripped.strip():
            lines.append((len(stripped) - len(stripped.lstrip()), stripped.strip()))

    def scalar(s: str) -> object:
        if s[:1] in "\"'" and s[-1:] == s[:1]:
            return s[1:-1]
        return None if s in ("", "~", "null") else s

    def block(i: int, indent: int) -> tuple[object, int]:
        if lines[i][1].startswith("- "):
            items: list[object] = []
            while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
                item = lines[i][1][2:].strip()
                if re.match(r"[A-Za-z_][\w.-]*:( |$)", item):
                    # "- key: value" then more keys of the same mapping, indented past the "- ".
                    lines[i] = (indent + 2, item)
                    mapping, i = block(i, indent + 2)
                    items.append(mapping)
                else:
                    items.append(scalar(item))
                    i += 1
            return items, i
        mapping: dict[str, object] = {}
        while i < len(lines) and lines[i][0] == indent:
            key, sep, rest = lines[i][1].partition(":")
            assert sep, f"not a mapping line: {lines[i][1]!r}"
            i += 1
            if rest.strip():
                mapping[key] = scalar(rest.strip())
            elif i < len(lines) and lines[i][0] > indent:
                mapping[key], i = block(i, lines[i][0])
            else:
                mapping[key] = None
        return mapping, i

    value, end = block(0, lines[0][0])
    assert end == len(lines), f"unparsed YAML from line {end}: {lines[end]}"
    return value


def compose(name: str = "docker-compose.yml") -> dict[str, object]:
    data = parse_yaml((REPO / name).read_text())
    assert isinstance(data, dict)
    return data


# --------------------------------------------------------------------------
# manager.conf
# --------------------------------------------------------------------------


def test_manager_binds_loopback_with_timestamps() -> None:
    """AMI listens on 127.0.0.1:5038 only and stamps every event with Asterisk's clock."""
    general = section(CONF / "manager.conf", "general")
    assert general["enabled"] == "yes"
    assert general["bindaddr"] == "127.0.0.1"
    assert general["port"] == "5038"
    assert general["timestampevents"] == "yes"
    assert general.get("webenabled", "no") == "no"


def test_manager_users_come_from_the_generated_include() -> None:
    """manager.conf defines no user itself; it includes the generated manager_users.conf."""
    text = (CONF / "manager.conf").read_text()
    assert re.search(r"^#tryinclude manager_users\.conf$", text, re.M)
    assert [name for name, _ in parse_conf(CONF / "manager.conf")] == ["general"]
    assert not (CONF / "manager_users.conf").exists()


def test_example_screener_user_is_least_privilege() -> None:
    """The example screener user reads only `user`, writes only `call`, loopback only."""
    user = section(CONF / "manager_users.conf.example", "screener")
    assert user["read"] == "user"
    assert user["write"] == "call"
    assert user["deny"] == "0.0.0.0/0.0.0.0"
    assert user["permit"] == "127.0.0.1/255.255.255.255"
    assert user["secret"] == "CHANGE_ME"


def test_tls_settings_are_included_into_general() -> None:
    """manager.conf pulls the optional TLS settings into [general], before any user section."""
    lines = [x.strip() for x in (CONF / "manager.conf").read_text().splitlines()]
    tls = lines.index("#tryinclude manager_tls.conf")
    sections = [i for i, x in enumerate(lines) if x.startswith("[")]
    assert lines[sections[0]] == "[general]" and sections[0] < tls
    assert all(i < tls for i in sections)  # no other section opened before it
    (general,) = parse_conf(CONF / "manager_tls.conf.example")
    assert dict(general[1])["tlsbindaddr"].startswith("127.0.0.1:")


def test_no_committed_manager_user_may_originate() -> None:
    """No AMI user under asterisk-conf/ gets originate, system, command, config or all."""
    for path in CONF.glob("manager*"):
        for name, items in parse_conf(path):
            for key, value in items:
                if key in ("read", "write"):
                    rights = {r.strip() for r in value.split(",")}
                    assert not rights & FORBIDDEN_WRITE, f"{path.name} [{name}] {key} = {value}"


# --------------------------------------------------------------------------
# extensions.conf: the contract
# --------------------------------------------------------------------------


def test_contract_contexts_exist() -> None:
    """Every context named by docs/architecture.md exists in extensions.conf."""
    missing = set(CONTRACT_CONTEXTS) - set(dialplan())
    assert not missing


def test_every_goto_target_context_exists() -> None:
    """Every fixed context in a Goto/GotoIf/Gosub/hangup handler is defined."""
    plan = dialplan()
    destinations = []
    for line in (line for lines in plan.values() for line in lines):
        for app, args in app_calls(line):
            if app in ("Goto", "Gosub"):
                destinations.append(args)
            elif app == "GotoIf":
                destinations += args.split("?", 1)[1].split(":")
            elif "hangup_handler_push)=" in args:
                destinations.append(args.split(")=", 1)[1])
    targets = {
        d.split(",")[0] for d in destinations if d.count(",") == 2 and "$" not in d.split(",")[0]
    }
    assert targets, "no Goto found: the parser is broken"
    assert targets <= set(plan), targets - set(plan)
    # Computed targets route-${...} must exist for every route name.
    assert {f"route-{r}" for r in ROUTES} <= set(plan)


def extensions(context: str) -> dict[str, list[str]]:
    """The context's extensions, each with its lines in priority order (``exten,1,...`` first,
    then its ``n,...`` / ``n(label),...`` lines)."""
    out: dict[str, list[str]] = {}
    current = ""
    for line in dialplan()[context]:
        name = line.split(",", 1)[0]
        if name != "n" and not name.startswith("n("):
            current = name
        out.setdefault(current, []).append(line)
    return out


def test_contract_extensions() -> None:
    """from-trunk answers `_X.`, `_+X.` and `s` and holds each in screen-hold under the same
    extension (`_X!`, `_+X!`: one digit is left of a DID like `1,`); decisions land on `s`;
    challenge on `_X.`."""
    assert set(extensions("from-trunk")) == {"_X.", "_+X.", "s"}
    assert set(extensions("screen-hold")) == {"_X!", "_+X!", "s"}
    for route in ("staff", "voicemail", "reject"):
        assert "s" in extensions(f"screen-{route}")
    assert "_X." in extensions("screen-challenge")
    assert "s" in extensions("screen-fallback")


REQUEST = (
    "ScreenRequest,Version: 1,Tainted: ${FILTER(a-z,${SCREEN_TAINTED})}"
    ",Hold: ${FILTER(0-9.,${SCREEN_HOLD_SECONDS})}"
)


def test_request_holds_then_falls_back() -> None:
    """from-trunk holds, sanitizes the number, rings, then screen-hold asks, waits the hold,
    and falls back."""
    for ext, lines in extensions("from-trunk").items():
        assert [app_calls(line)[0] for line in lines] == [
            ("Set", "SCREEN_STATE=holding"),
            ("Gosub", "screen-sanitize,s,1"),
            ("Ringing", ""),
            # No comma (it would split the Goto's arguments) and no space.
            ("Goto", r"screen-hold,${FILTER(\x21-\x2b\x2d-\x7e,${EXTEN})},1"),
        ], ext
    for ext, lines in extensions("screen-hold").items():
        assert [app_calls(line)[0] for line in lines] == [
            ("UserEvent", REQUEST),
            ("Wait", "${SCREEN_HOLD_SECONDS}"),
            ("Goto", "screen-fallback,s,1"),
        ], ext


# Where the screener's Redirects go (screener/dialplan.py, screener/staffphones.py), and the
# extensions that raise the event each answers: a Redirect comes after its event, while the
# channel runs what follows it there.
REDIRECT_TARGETS = {
    **{f"screen-{route}": ("screen-hold", "UserEvent(ScreenRequest,") for route in ROUTES},
    "staff-feature-result": ("staff-feature", "UserEvent(StaffFeature,"),
}


def test_the_staff_feature_asks_then_waits_in_three_steps() -> None:
    """staff-feature answers before it asks; its extension `wait` asks, waits and fails."""
    plan = extensions("staff-feature")
    ask = plan["s"][-3:]
    assert [app_calls(line)[0][0] for line in ask] == ["Set", "Answer", "Goto"], ask
    assert app_calls(ask[-1]) == [("Goto", "wait,1")]
    (event, body), *rest = [app_calls(line)[0] for line in plan["wait"]]
    assert event == "UserEvent" and body.startswith("StaffFeature,"), body
    assert rest == [("Wait", "${FEATURE_WAIT}"), ("Goto", "staff-feature-result,failed,1")]


def test_a_redirect_lands_on_a_priority_that_leads_to_its_check() -> None:
    """Asterisk can apply a Redirect while the channel steps from one priority to the next,
    and the channel then starts the target at 2, or at the priority it was about to run,
    instead of 1 (docs/architecture.md, "Where a Redirect lands"). Every extension a Redirect
    targets has each priority the held channel can be at, and every one of them but the first
    only goes back to the first, the check."""
    for target, (held, event) in REDIRECT_TARGETS.items():
        # Every extension that raises the event: the Redirect comes after it, and the channel
        # may be about to run any later priority of that extension (the last, at most: its
        # own Goto leaves it), or 2.
        reach, found = 2, 0
        for ext, lines in extensions(held).items():
            apps = [app_calls(line)[0] for line in lines]
            at = next(
                (i for i, (app, args) in enumerate(apps) if f"{app}({args}".startswith(event)), None
            )
            if at is None:
                continue
            # No Gosub after the event: its steps elsewhere would be about to run too.
            assert not [a for a, _ in apps[at:] if a.startswith("Gosub")], (held, ext)
            reach, found = max(reach, len(lines)), found + 1
        assert found, f"{held}: no extension raises {event}"
        for ext, lines in extensions(target).items():
            assert len(lines) > reach, (target, ext)
            check = app_calls(lines[0])
            assert check[0][0] == "GotoIf" and check[0][1].endswith(":go"), (target, ext, check)
            for line in lines[1:reach]:
                assert app_calls(line) == [("Goto", "1")], (target, ext, line)
            assert lines[reach].startswith("n(go),"), (target, ext, lines[reach])


def test_decision_gates_check_state_first() -> None:
    """Each screen-<route> gate first sends a non-holding call to screen-late."""
    for route in ROUTES:
        for ext, lines in extensions(f"screen-{route}").items():
            assert app_calls(lines[0]) == [
                ("GotoIf", '$["${SCREEN_STATE}" != "holding"]?screen-late,s,1:go')
            ], (route, ext)


def test_route_bodies_report_screenrouted_first() -> None:
    """Each route body's first UserEvent is ScreenRouted naming its route and Fallback."""
    for route in ROUTES:
        events = [args for ctx, args in userevents() if ctx == f"route-{route}"]
        assert events, route
        assert events[0].startswith(f"ScreenRouted,Route: {route},Fallback: "), events[0]


def test_outcome_events_are_present() -> None:
    """The dialplan emits ScreenFallback, ScreenLate, every challenge outcome, ScreenVoicemail."""
    text = "\n".join(args for _, args in userevents())
    for needle in (
        "ScreenFallback,Route: ",
        "ScreenLate,",
        "ScreenChallenge,Outcome: pass,Attempts: ",
        "ScreenChallenge,Outcome: hangup,Attempts: ",
        "ScreenChallenge,Outcome: ${FILTER(a-z,${SCREEN_OUTCOME})},Attempts: ",
        "ScreenVoicemail,Status: ",
    ):
        assert needle in text, needle


def test_userevent_bodies_carry_only_fixed_or_filtered_values() -> None:
    """Every ${...} in a UserEvent body is FILTER()-wrapped; no raw caller data, no $[...]."""
    events = userevents()
    assert len(events) >= 10, "parser found too few UserEvents"
    for ctx, args in events:
        for expr in expansions(args):
            assert expr.startswith("${FILTER("), f"[{ctx}] UserEvent({args}): {expr}"
        outside = re.sub(r"\$\{FILTER\(.*?\)\}", "", args)
        assert "$" not in outside, f"[{ctx}] UserEvent({args})"


def test_challenge_code_is_sanitized() -> None:
    """The challenge code taken from the Redirect's extension keeps digits only."""
    assert "Set(SCREEN_CODE=${FILTER(0-9,${EXTEN})})" in "\n".join(dialplan()["screen-challenge"])


def test_globals_have_contract_defaults() -> None:
    """[globals] sets the hold, fallback, staff, voicemail and challenge defaults."""
    g = section(CONF / "extensions.conf", "globals")
    assert g["SCREEN_HOLD_SECONDS"] == "4"
    assert g["SCREEN_FALLBACK_ROUTE"] == "staff"
    assert g["STAFF_DIAL"] == "PJSIP/staff1&PJSIP/staff2"
    assert g["STAFF_RING_SECONDS"] == "20"
    assert g["VOICEMAIL_BOX"] == "100@office"
    assert g["CHALLENGE_ATTEMPTS"] == "3"
    assert g["CHALLENGE_TIMEOUT"] == "8"
    assert g["CHALLENGE_FAIL_ROUTE"] == "voicemail"


def test_voicemail_box_exists() -> None:
    """The VOICEMAIL_BOX global names a mailbox defined in voicemail.conf."""
    box, ctx = section(CONF / "extensions.conf", "globals")["VOICEMAIL_BOX"].split("@")
    assert box in section(CONF / "voicemail.conf", ctx)


# Applications built into the Asterisk core (no module to load).
CORE_APPS = {"Answer", "Goto", "GotoIf", "Hangup", "Ringing", "Set", "Wait", "SayDigits", "NoOp"}
APP_MODULES = {
    "Dial": "app_dial.so",
    "Read": "app_read.so",
    "Playback": "app_playback.so",
    "SendDTMF": "app_senddtmf.so",
    "UserEvent": "app_userevent.so",
    "Return": "app_stack.so",
    "Gosub": "app_stack.so",
    "GosubIf": "app_stack.so",
    "ExecIf": "app_exec.so",
    "VoiceMail": "app_voicemail.so",
    "VoiceMailMain": "app_voicemail.so",
    "MixMonitor": "app_mixmonitor.so",
    "Record": "app_record.so",
    "ChannelRedirect": "app_channelredirect.so",
}
FUNC_MODULES = {
    "FILTER": "func_strings.so",
    "LEN": "func_strings.so",
    "IF": "func_logic.so",
    "CHANNEL": "func_channel.so",
    "RAND": "func_rand.so",
    "CUT": "func_cut.so",
    "SHARED": "func_global.so",
}


@pytest.mark.parametrize("plan_path", [CONF / "extensions.conf", CARRIER / "extensions.conf"])
def test_modules_conf_loads_what_the_dialplan_uses(plan_path: Path) -> None:
    """Every application and function in the dialplan is core or loaded by modules.conf."""
    loaded = {v for k, v in parse_conf(CONF / "modules.conf")[0][1] if k == "load"}
    assert section(CONF / "modules.conf", "modules")["autoload"] == "no"
    text = "\n".join(line for lines in dialplan(plan_path).values() for line in lines)
    apps = {app for line in text.splitlines() for app, _ in app_calls(line)}
    apps |= set(re.findall(r"\?(\w+)\(", text))  # ExecIf's inner application
    unknown = apps - CORE_APPS - APP_MODULES.keys()
    assert not unknown, f"add these to APP_MODULES: {unknown}"
    needed = {APP_MODULES[a] for a in apps if a in APP_MODULES}
    needed |= {mod for fn, mod in FUNC_MODULES.items() if f"{fn}(" in text}
    assert needed <= loaded, needed - loaded


# --------------------------------------------------------------------------
# pjsip.conf, rtp.conf
# --------------------------------------------------------------------------


def test_pjsip_transport_is_loopback() -> None:
    """SIP binds UDP 127.0.0.1:5060 (the carrier sandbox 127.0.0.1:5062)."""
    assert section(CONF / "pjsip.conf", "transport-udp", "transport")["bind"] == "127.0.0.1:5060"
    assert section(CARRIER / "pjsip.conf", "transport-udp", "transport")["bind"] == "127.0.0.1:5062"


def test_staff_identified_by_username_before_trunk_ip() -> None:
    """Staff phones are identified by username before the trunk's IP match."""
    assert (
        section(CONF / "pjsip.conf", "global", "global")["endpoint_identifier_order"]
        == "username,ip"
    )
    trunk = section(CONF / "pjsip.conf", "trunk", "endpoint")
    assert trunk["context"] == "from-trunk"
    assert trunk["identify_by"] == "ip"
    assert section(CONF / "pjsip.conf", "trunk", "identify")["endpoint"] == "trunk"


def test_staff_endpoints() -> None:
    """staff1/staff2 use from-staff, RFC 4733 DTMF, digest auth and one contact each."""
    template = section(CONF / "pjsip.conf", "staff-endpoint")
    aor_template = section(CONF / "pjsip.conf", "staff-aor")
    assert template["context"] == "from-staff"
    assert template["dtmf_mode"] == "rfc4733"
    assert template["direct_media"] == "no"
    assert aor_template["max_contacts"] == "1"
    for name in ("staff1", "staff2"):
        assert section(CONF / "pjsip.conf", name)["auth"] == f"{name}-auth"
        example = section(CONF / "pjsip_auth.conf.example", f"{name}-auth")
        assert example["username"] == name
        assert example["password"] == "CHANGE_ME"
    assert "#tryinclude pjsip_auth.conf" in (CONF / "pjsip.conf").read_text()


def test_rtp_binds_to_media_address_on_every_endpoint() -> None:
    """Every endpoint keeps RTP on 127.0.0.1 and never sends media directly."""
    for path in (CONF / "pjsip.conf", CARRIER / "pjsip.conf"):
        for name, items in parse_conf(path):
            d = dict(items)
            if d.get("type") == "endpoint":
                assert d.get("bind_rtp_to_media_address") == "yes", f"{path.name} [{name}]"
                assert d.get("media_address") == "127.0.0.1", f"{path.name} [{name}]"
                assert d.get("direct_media") == "no", f"{path.name} [{name}]"
    pbx = section(CONF / "rtp.conf", "general")
    carrier = section(CARRIER / "rtp.conf", "general")
    assert int(pbx["rtpend"]) < int(carrier["rtpstart"])


def test_carrier_ami_is_loopback_on_its_own_port() -> None:
    """The sandbox carrier's AMI listens on 127.0.0.1:5039."""
    general = section(CARRIER / "manager.conf", "general")
    assert (general["bindaddr"], general["port"]) == ("127.0.0.1", "5039")


# --------------------------------------------------------------------------
# scripts/sandbox
# --------------------------------------------------------------------------


def test_sandbox_script_uses_only_the_standard_library() -> None:
    """scripts/sandbox imports nothing outside the standard library."""
    tree = ast.parse((REPO / "scripts" / "sandbox").read_text())
    names = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
    }
    assert names - {"__future__"} <= sys.stdlib_module_names


def test_no_mirror_host_is_hard_coded() -> None:
    """No package mirror host name appears in the sandbox, Docker or Asterisk files."""
    files = [REPO / "scripts" / "sandbox", REPO / "docker-compose.yml", *REPO.glob("docker/*")]
    files += [REPO / "scripts" / "compose-test", REPO / ".env.example", REPO / ".ci" / "run"]
    files += [*CONF.iterdir(), *CARRIER.iterdir()]
    for path in files:
        text = path.read_text()
        assert not re.search(r"[a-z0-9-]+\.debian\.(org|net)|pypi\.org|pythonhosted", text), path


# --------------------------------------------------------------------------
# docker-compose.yml
# --------------------------------------------------------------------------


def test_compose_parses_with_the_three_services() -> None:
    """docker-compose.yml parses and defines the asterisk, screener and web services."""
    data = compose()
    services = data["services"]
    assert isinstance(services, dict)
    assert set(services) == {"asterisk", "screener", "web"}
    # The shared list's PostgreSQL is an override of its own, never started by default.
    shared = compose("docker/compose.shared.yml")["services"]
    assert isinstance(shared, dict)
    assert set(shared) == {"screener", "postgres", "shared-init"}
    try:
        import yaml  # optional cross-check: PyYAML is not a project dependency
    except ImportError:
        return
    assert yaml.safe_load((REPO / "docker-compose.yml").read_text()) == data


def test_compose_keeps_ami_on_loopback() -> None:
    """Both services use the host network and publish no ports, so AMI stays on 127.0.0.1."""
    services = compose()["services"]
    assert isinstance(services, dict)
    for name, svc in services.items():
        assert svc["network_mode"] == "host", name
        assert "ports" not in svc, name
    env = services["screener"]["environment"]
    manager = section(CONF / "manager.conf", "general")
    assert env["SCREENER_AMI_HOST"] == manager["bindaddr"]
    assert env["SCREENER_AMI_PORT"] == manager["port"]
    assert env["SCREENER_AMI_USER"] == "screener"


def test_compose_mounts_match_the_images() -> None:
    """asterisk-conf is mounted read-only where the entrypoint reads it; the DB is on a volume."""
    data = compose()
    services = data["services"]
    assert isinstance(services, dict)
    ast_vols = services["asterisk"]["volumes"]
    conf_mount = next(v for v in ast_vols if v.startswith("./asterisk-conf:"))
    source, target, mode = conf_mount.split(":")
    assert (REPO / source).resolve() == CONF
    assert mode == "ro"
    entrypoint = (REPO / "docker" / "asterisk-entrypoint.sh").read_text()
    assert f"CONF_SRC=${{SCREENER_ASTERISK_CONF:-{target}}}" in entrypoint
    assert "docker/asterisk-entrypoint.sh" in (REPO / "docker" / "asterisk.Dockerfile").read_text()
    db_volume, db_target = services["screener"]["volumes"][0].split(":")
    assert db_target == "/var/lib/screener"
    assert db_volume in data["volumes"]
    assert services["screener"]["environment"]["SCREENER_DB"].startswith("/var/lib/screener/")
    for svc, dockerfile in (("asterisk", "asterisk"), ("screener", "screener")):
        build = services[svc]["build"]
        assert build["dockerfile"] == f"docker/{dockerfile}.Dockerfile"
        assert (REPO / build["dockerfile"]).is_file()


def test_entrypoint_writes_the_least_privilege_screener_user() -> None:
    """The Docker entrypoint generates the same screener rights as the committed example."""
    text = (REPO / "docker" / "asterisk-entrypoint.sh").read_text()
    block = text.split("[screener]", 1)[1].split("EOT", 1)[0]
    rights = dict(
        (k.strip(), v.strip())
        for k, _, v in (line.partition("=") for line in block.splitlines())
        if _
    )
    assert (rights["read"], rights["write"]) == ("user", "call")
    assert rights["permit"] == "127.0.0.1/255.255.255.255"


def test_compose_secrets_are_all_in_env_example() -> None:
    """Every secret docker-compose.yml reads is in .env.example, as a placeholder only."""
    data = compose()
    secrets = data["secrets"]
    assert isinstance(secrets, dict)
    required = {s["environment"] for s in secrets.values() if "environment" in s}
    assert required == {
        "SCREENER_AMI_SECRET",
        "SCREENER_STAFF1_PASSWORD",
        "SCREENER_STAFF2_PASSWORD",
    }
    example = dict(
        line.split("=", 1)
        for line in (REPO / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert set(example) == required
    assert set(example.values()) == {"CHANGE_ME"}  # too short: the entrypoint refuses it
    assert ".env" in (REPO / ".gitignore").read_text().splitlines()


def test_compose_secrets_are_files_never_container_environment() -> None:
    """No service's environment holds a secret (docker inspect would show it): each service
    gets the files it needs under /run/secrets and is told their paths (*_FILE)."""
    given = {}
    for file, name, svc in [
        (f, n, svc)
        for f in ("docker-compose.yml", "docker/compose.shared.yml")
        for n, svc in compose(f)["services"].items()  # type: ignore[attr-defined]
    ]:
        assert isinstance(svc, dict), file
        env = svc.get("environment") or {}
        assert not [k for k in env if re.search(r"SECRET$|PASSWORD$", k)], name
        for item in svc.get("secrets") or []:
            given[name, item["source"]] = item.get("mode")
        for key, path in env.items():
            if key.endswith("_FILE") and str(path).startswith("/run/secrets/"):
                assert (name, path.removeprefix("/run/secrets/")) in given, (name, key)
    assert given == {
        ("asterisk", "ami_secret"): "0o400",
        ("asterisk", "staff1_password"): "0o400",
        ("asterisk", "staff2_password"): "0o400",
        ("screener", "ami_secret"): "0o444",
        ("screener", "shared_password"): "0o444",
        ("postgres", "shared_password"): "0o444",
        ("shared-init", "shared_password"): "0o444",
    }
    shared = compose("docker/compose.shared.yml")["secrets"]
    assert shared == {"shared_password": {"environment": "SCREENER_SHARED_PASSWORD"}}


def test_compose_starts_the_screener_after_a_healthy_asterisk() -> None:
    """Both restart unless stopped; the screener waits for Asterisk's healthcheck."""
    services = compose()["services"]
    assert isinstance(services, dict)
    for name, svc in services.items():
        assert svc["restart"] == "unless-stopped", name
        assert svc["build"]["network"] == "host", name
    assert services["screener"]["depends_on"] == {"asterisk": {"condition": "service_healthy"}}
    # With the shared list, the screener also waits for the one-shot `screener shared init`.
    shared = compose("docker/compose.shared.yml")["services"]
    assert isinstance(shared, dict)
    assert shared["postgres"]["restart"] == "unless-stopped"
    assert shared["shared-init"]["restart"] == "no"
    assert shared["shared-init"]["command"] == ["screener", "shared", "init"]
    assert shared["screener"]["depends_on"] == {
        "shared-init": {"condition": "service_completed_successfully"}
    }


def test_compose_web_is_the_screener_image_on_loopback_over_its_volume() -> None:
    """The console: the screener's own build, `screener web` on 127.0.0.1, the same database
    volume and path, started once the screener (whose `screener init` makes the database) is
    healthy, and health-checked on its login page."""
    services = compose()["services"]
    assert isinstance(services, dict)
    web, screener = services["web"], services["screener"]
    assert web["build"] == screener["build"]
    assert web["command"] == ["screener", "web", "--host", "127.0.0.1"]
    assert web["volumes"] == screener["volumes"]
    assert web["environment"]["SCREENER_DB"] == screener["environment"]["SCREENER_DB"]
    assert web["depends_on"] == {"screener": {"condition": "service_healthy"}}
    url = web["environment"]["SCREENER_HEALTHCHECK_URL"]
    assert url.startswith("http://127.0.0.1:") and url.endswith("/login")
    assert "SCREENER_HEALTHCHECK_URL" in (REPO / "docker" / "healthcheck.py").read_text()


def dockerfile_lines(name: str) -> list[str]:
    """The instructions of docker/<name>.Dockerfile, continuation lines joined."""
    text = (REPO / "docker" / f"{name}.Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", text)
    return [line.strip() for line in joined.splitlines() if line.strip() and line[0] != "#"]


@pytest.mark.parametrize(
    ("name", "bases"),
    [
        # asterisk: the prompts are rendered in a bookworm stage (Python 3.11 and the voice).
        ("asterisk", ["debian:bookworm-slim", "debian:sid-slim"]),
        ("screener", ["debian:bookworm-slim"] * 2),
    ],
)
def test_dockerfiles_build_from_debian_with_a_healthcheck(name: str, bases: list[str]) -> None:
    """Only Debian base images (what scripts/compose-test makes locally); a HEALTHCHECK."""
    lines = dockerfile_lines(name)
    assert [line.split()[1] for line in lines if line.startswith("FROM ")] == bases
    assert sum(line.startswith("HEALTHCHECK ") for line in lines) == 1
    assert not any(re.search(r"SECRET|PASSWORD", line) for line in lines if line[:4] != "HEAL")


def test_screener_image_runs_unprivileged_and_checks_its_health() -> None:
    """The last USER is the unprivileged screener; the healthcheck script is copied in."""
    lines = dockerfile_lines("screener")
    assert [line for line in lines if line.startswith("USER ")][-1] == "USER screener"
    health = next(line for line in lines if line.startswith("HEALTHCHECK "))
    assert "/opt/screener/healthcheck.py" in health
    assert "COPY docker/healthcheck.py /opt/screener/healthcheck.py" in lines


def test_ci_runs_the_compose_test_after_the_suite() -> None:
    """.ci/run runs scripts/test, which ends (with no arguments) in scripts/compose-test."""
    ci = [
        line.strip()
        for line in (REPO / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ci[-1] == "exec scripts/test"
    test = (REPO / "scripts" / "test").read_text()
    assert test.rindex("    scripts/compose-test") > test.index(".venv/bin/pytest")
    assert "if (($# == 0)); then" in test  # pytest arguments (the fast path) skip Docker
    script = (REPO / "scripts" / "compose-test").read_text()
    assert "cp .env.example" in script and "up -d" in script and "down -v" in script
    assert "flock" in script and "screener-sandbox" in script  # the sandbox's ports and lock
