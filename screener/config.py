"""Configuration: one frozen object built once, in one place, from every source.

Precedence, highest first: command-line flags > ``SCREENER_*`` environment variables > the TOML
file (``--config`` / ``SCREENER_CONFIG``) > defaults. ``load_config`` validates everything up
front and raises :class:`~screener.errors.ConfigError` naming the file, the key and what is
allowed, so a broken configuration stops the program before it touches a call.

Secrets (the AMI secret) come only from ``SCREENER_AMI_SECRET`` or a file
(``ami.secret_file`` / ``SCREENER_AMI_SECRET_FILE``); the TOML file cannot hold one, and there
is no default.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from screener.errors import ConfigError
from screener.numbers import Category, is_valid_region, normalize
from screener.policy import DidPolicy, Hours, Policy, Route, Window

LogFormat = Literal["auto", "json", "console"]
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ROUTES = tuple(r.value for r in Route)
CATEGORIES = tuple(c.value for c in Category)


@dataclass(frozen=True)
class AMIConfig:
    """How to reach the Asterisk Manager Interface."""

    host: str = "127.0.0.1"
    port: int = 5038
    username: str = "screener"
    secret: str | None = field(default=None, repr=False)
    tls: bool = False
    tls_ca_file: Path | None = None
    connect_timeout: float = 10.0
    action_timeout: float = 2.0
    ping_interval: float = 1.0
    ping_timeout: float = 2.0


@dataclass(frozen=True)
class Config:
    """Everything the CLI and the service need, validated."""

    db_path: Path = Path("screener.db")
    region: str = "JP"
    ami: AMIConfig = field(default_factory=AMIConfig)
    # The dialplan sends its own (SCREEN_HOLD_SECONDS) with each request, and that wins: this
    # stands in for requests without one. After the hold the dialplan's fallback runs.
    hold_seconds: float = 4.0
    # A decision not sent this long before the hold ends is dropped: the fallback wins.
    late_margin: float = 0.5
    policy: Policy = field(default_factory=Policy)
    log_format: LogFormat = "auto"
    log_level: str = "info"
    source: str = "defaults"
    # GET /metrics and /healthz ("host:port"); empty: no server.
    metrics_listen: str = "127.0.0.1:9120"
    notify: NotifyConfig = field(default_factory=lambda: NotifyConfig())
    # Where the dialplan's MixMonitor writes recordings (RECORDING_DIR in extensions.conf,
    # relative to Asterisk's spool/monitor folder), as this process sees it.
    recording_folder: Path = Path("/var/spool/asterisk/monitor/screener")
    recording_retention_days: float = 90.0
    # The office's wording, per language ([prompts.ja]); screener.prompts fills in the rest.
    prompt_words: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # [shared]: many sites, one list through PostgreSQL (screener/shared/); None: this site alone.
    shared: SharedConfig | None = None


# ---- the TOML schema -------------------------------------------------------------------------


class _Ctx:
    """Where a value came from, for error messages: the file, or the variable that set a key."""

    def __init__(self, origin: str, sources: Mapping[str, str] | None = None) -> None:
        self.origin = origin
        self.sources = dict(sources or {})

    def where(self, key: str) -> str:
        return self.sources.get(key, self.origin)

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.where(key)}: {key}: {problem}")


def _check_keys(ctx: _Ctx, where: str, table: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    for key in table:
        if key not in allowed:
            name = f"{where}.{key}" if where else key
            raise ctx.fail(name, f"unknown key; allowed: {', '.join(allowed)}")


def _table(ctx: _Ctx, key: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ctx.fail(key, f"expected a table, got {type(value).__name__}")
    return value


def _typed(ctx: _Ctx, key: str, value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    # bool is an int in Python; TOML keeps them apart and so do we.
    if isinstance(value, bool) and kind is not bool:
        raise ctx.fail(key, f"expected {what}, got a boolean")
    if not isinstance(value, kind):
        raise ctx.fail(key, f"expected {what}, got {value!r}")
    return value


def _number(ctx: _Ctx, key: str, value: Any, minimum: float, maximum: float) -> float:
    number = float(_typed(ctx, key, value, (int, float), "a number"))
    if not minimum <= number <= maximum:
        raise ctx.fail(key, f"expected a number from {minimum:g} to {maximum:g}, got {value!r}")
    return number


def _integer(ctx: _Ctx, key: str, value: Any, minimum: int, maximum: int) -> int:
    number = _typed(ctx, key, value, int, "a whole number")
    if not minimum <= number <= maximum:
        raise ctx.fail(key, f"expected a whole number from {minimum} to {maximum}, got {value!r}")
    return int(number)


def _choice(ctx: _Ctx, key: str, value: Any, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ctx.fail(key, f"expected one of {', '.join(allowed)}; got {value!r}")
    return value


def _route(ctx: _Ctx, key: str, value: Any) -> Route:
    return Route(_choice(ctx, key, value, ROUTES))


def _categories(ctx: _Ctx, key: str, value: Any) -> dict[Category, Route]:
    table = _table(ctx, key, value)
    _check_keys(ctx, key, table, CATEGORIES)
    return {Category(name): _route(ctx, f"{key}.{name}", v) for name, v in table.items()}


_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-(?:([01]\d|2[0-3]):([0-5]\d)|(24):(00))$")


def _windows(ctx: _Ctx, key: str, value: Any) -> dict[int, tuple[Window, ...]]:
    table = _table(ctx, key, value)
    _check_keys(ctx, key, table, WEEKDAYS)
    result: dict[int, tuple[Window, ...]] = {}
    for day, spans in table.items():
        name = f"{key}.{day}"
        if not isinstance(spans, list):
            raise ctx.fail(name, 'expected a list of "HH:MM-HH:MM" strings')
        windows: list[Window] = []
        for span in spans:
            match = _WINDOW.match(span) if isinstance(span, str) else None
            if not match:
                raise ctx.fail(name, f'expected "HH:MM-HH:MM" (24-hour), got {span!r}')
            h1, m1 = int(match.group(1)), int(match.group(2))
            # "24:00" is the end of the day; any other end is an ordinary time.
            end = (
                dt.time.max if match.group(5) else dt.time(int(match.group(3)), int(match.group(4)))
            )
            if end == dt.time(h1, m1):
                raise ctx.fail(name, f"{span!r} starts where it ends, so it never matches")
            windows.append((dt.time(h1, m1), end))
        result[WEEKDAYS.index(day)] = tuple(windows)
    return result


def _hours(ctx: _Ctx, value: Any) -> Hours:
    table = _table(ctx, "hours", value)
    _check_keys(ctx, "hours", table, ("timezone", "open", "quiet", "after_hours", "quiet_route"))
    tz = table.get("timezone", "Asia/Tokyo")
    try:
        ZoneInfo(_typed(ctx, "hours.timezone", tz, str, "a time zone name"))
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ctx.fail("hours.timezone", f"unknown time zone {tz!r}") from exc
    defaults = Hours()
    return Hours(
        timezone=tz,
        open=_windows(ctx, "hours.open", table["open"]) if "open" in table else {},
        quiet=_windows(ctx, "hours.quiet", table["quiet"]) if "quiet" in table else {},
        after_hours_route=_route(ctx, "hours.after_hours", table["after_hours"])
        if "after_hours" in table
        else defaults.after_hours_route,
        quiet_route=_route(ctx, "hours.quiet_route", table["quiet_route"])
        if "quiet_route" in table
        else defaults.quiet_route,
    )


def did_key(did: str, region: str) -> str:
    """The form a DID is compared in: E.164 when it is a valid number, else its digits."""
    caller = normalize(did, region)
    return caller.e164 or re.sub(r"[^0-9A-Za-z+*#]", "", did)


def _dids(ctx: _Ctx, value: Any, region: str) -> dict[str, DidPolicy]:
    table = _table(ctx, "dids", value)
    result: dict[str, DidPolicy] = {}
    for did, spec in table.items():
        key = f"dids.{did}"
        body = _table(ctx, key, spec)
        _check_keys(ctx, key, body, ("categories", "default", "language", "record", "announce"))
        result[did_key(did, region)] = DidPolicy(
            categories=_categories(ctx, f"{key}.categories", body.get("categories", {})),
            default=_route(ctx, f"{key}.default", body["default"]) if "default" in body else None,
            language=_choice(ctx, f"{key}.language", body["language"], LANGUAGES)
            if "language" in body
            else None,
            record=_typed(ctx, f"{key}.record", body["record"], bool, "true or false")
            if "record" in body
            else None,
            announce=_typed(ctx, f"{key}.announce", body["announce"], bool, "true or false")
            if "announce" in body
            else None,
        )
    return result


_TOP = (
    *("region", "database", "ami", "screening", "policy", "hours", "learning", "dids", "log"),
    *("metrics_listen", "notify", "prompts", "shared"),
)
_AMI = (
    "host",
    "port",
    "username",
    "secret_file",
    "tls",
    "tls_ca_file",
    "connect_timeout",
    "action_timeout",
    "ping_interval",
    "ping_timeout",
)
_SCREENING = (
    "hold_seconds",
    "late_margin",
    "challenge_digits",
    "withheld_announcement",
    "language",
    "recording_folder",
    "recording_retention_days",
)
_POLICY = ("allow", "block", "default", "categories", "record", "announce")
LANGUAGES = ("ja", "en")
# [prompts.<lang>] keys: the fields of screener.prompts.PromptWords (a test keeps them equal).
PROMPT_KEYS = (
    "greeting",
    "challenge_intro",
    "challenge_suffix",
    "challenge_retry",
    "challenge_thanks",
    "withheld",
    "reject",
    "voicemail",
    "after_hours_closed",
    "after_hours_times",
    "recording",
    "announce",
    "announce_intro",
    "announce_menu",
    "call_blocked",
    "digits",
    "staff_blocked",
    "staff_allowed",
    "staff_removed",
    "staff_undone",
    "staff_notlisted",
    "staff_nocaller",
    "staff_withheld",
    "staff_invalid",
    "staff_nothing",
    "staff_changed",
    "staff_failed",
)
_LEARNING = (
    "verified_days",
    "fail_threshold",
    "fail_window_days",
    "autoblock_days",
    "called_days",
)
_LOG = ("format", "level")
LOG_LEVELS = ("debug", "info", "warning", "error")
# Config.source when no file is given: every setting is a default or from the environment.
NO_FILE = "no config file (defaults and SCREENER_* environment)"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: config file not found") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text") from exc


def _read_secret_file(origin: str, key: str, path: Path) -> str:
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{origin}: {key}: cannot read {path}: {exc.strerror}") from exc
    if not secret:
        raise ConfigError(f"{origin}: {key}: {path} is empty")
    return secret


def _env_bool(text: str) -> bool:
    """A yes/no environment value; a typo must not quietly mean "no" (TLS off, say)."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected one of 1, true, yes, on, 0, false, no, off")


# Environment variables: name -> (dotted key, converter from string).
_ENV: dict[str, tuple[str, Callable[[str], Any]]] = {
    "SCREENER_DB": ("database", str),
    "SCREENER_REGION": ("region", str),
    "SCREENER_AMI_HOST": ("ami.host", str),
    "SCREENER_AMI_PORT": ("ami.port", int),
    "SCREENER_AMI_USER": ("ami.username", str),
    "SCREENER_AMI_SECRET_FILE": ("ami.secret_file", str),
    "SCREENER_AMI_TLS": ("ami.tls", lambda s: _env_bool(s)),
    "SCREENER_AMI_TLS_CA_FILE": ("ami.tls_ca_file", str),
    "SCREENER_HOLD_SECONDS": ("screening.hold_seconds", float),
    "SCREENER_LANGUAGE": ("screening.language", str),
    "SCREENER_RECORDING_FOLDER": ("screening.recording_folder", str),
    "SCREENER_LOG_FORMAT": ("log.format", str),
    "SCREENER_LOG_LEVEL": ("log.level", str),
    "SCREENER_METRICS_LISTEN": ("metrics_listen", str),
    "SCREENER_NOTIFY_WEBHOOK_URL": ("notify.webhook.url", str),
    "SCREENER_SHARED_DSN": ("shared.dsn", str),
    "SCREENER_SHARED_PASSWORD_FILE": ("shared.password_file", str),
    "SCREENER_SITE": ("shared.site", str),
}


def _set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            return  # the file has a scalar where a table belongs; validation reports it
    target[leaf] = value


def load_config(
    path: Path | str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the one Config from flags (``overrides``, dotted keys), environment, file, defaults."""
    env = os.environ if env is None else env
    if path is None and env.get("SCREENER_CONFIG"):
        path = env["SCREENER_CONFIG"]
    raw: dict[str, Any] = _read_toml(Path(path)) if path is not None else {}
    origin = str(path) if path is not None else NO_FILE
    sources: dict[str, str] = {}
    ctx = _Ctx(origin, sources)
    _check_keys(ctx, "", raw, _TOP)
    shared_in_file = "shared" in raw
    for name, (dotted, convert) in _ENV.items():
        if name in env and env[name] != "":
            try:
                _set_dotted(raw, dotted, convert(env[name]))
            except ValueError as exc:
                raise ConfigError(f"environment: {name}: cannot use {env[name]!r} ({exc})") from exc
            ctx.sources[dotted] = f"environment variable {name}"
    if env.get("SCREENER_METRICS_LISTEN") == "":
        raw["metrics_listen"] = ""  # set but empty: no metrics server (unlike other variables)
        ctx.sources["metrics_listen"] = "environment variable SCREENER_METRICS_LISTEN"
    if not shared_in_file and not env.get("SCREENER_SHARED_DSN"):
        # SCREENER_SITE (or the password file) alone, as an .env may leave it: no shared list.
        raw.pop("shared", None)
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(raw, dotted, value)
            ctx.sources[dotted] = "command line"
    config = _build(ctx, raw)
    config = dataclasses.replace(
        config,
        metrics_listen=_listen(ctx, raw.get("metrics_listen", Config.metrics_listen)),
        notify=_notify(ctx, raw.get("notify", {}), env),
        shared=_shared(ctx, raw["shared"], env) if "shared" in raw else None,
    )
    secret = env.get("SCREENER_AMI_SECRET") or None
    secret_file = _table(ctx, "ami", raw.get("ami", {})).get("secret_file")
    if secret is None and secret_file:
        secret = _read_secret_file(
            ctx.where("ami.secret_file"), "ami.secret_file", Path(secret_file)
        )
    return dataclasses.replace(
        config, ami=dataclasses.replace(config.ami, secret=secret), source=origin
    )


def _build(ctx: _Ctx, raw: Mapping[str, Any]) -> Config:
    defaults = Config()
    region = raw.get("region", defaults.region)
    _typed(ctx, "region", region, str, "a two-letter region code such as JP")
    if not is_valid_region(region):
        raise ctx.fail("region", f"unknown region {region!r}; expected a code such as JP or US")
    region = region.upper()
    database = _typed(ctx, "database", raw.get("database", str(defaults.db_path)), str, "a path")

    ami_raw = _table(ctx, "ami", raw.get("ami", {}))
    _check_keys(ctx, "ami", ami_raw, _AMI)
    d = defaults.ami
    ca = ami_raw.get("tls_ca_file")
    ami = AMIConfig(
        host=_typed(ctx, "ami.host", ami_raw.get("host", d.host), str, "a host name or address"),
        port=_integer(ctx, "ami.port", ami_raw.get("port", d.port), 1, 65535),
        username=_typed(ctx, "ami.username", ami_raw.get("username", d.username), str, "a name"),
        tls=_typed(ctx, "ami.tls", ami_raw.get("tls", d.tls), bool, "true or false"),
        tls_ca_file=Path(_typed(ctx, "ami.tls_ca_file", ca, str, "a path")) if ca else None,
        connect_timeout=_number(
            ctx, "ami.connect_timeout", ami_raw.get("connect_timeout", d.connect_timeout), 0.1, 300
        ),
        action_timeout=_number(
            ctx, "ami.action_timeout", ami_raw.get("action_timeout", d.action_timeout), 0.05, 60
        ),
        ping_interval=_number(
            ctx, "ami.ping_interval", ami_raw.get("ping_interval", d.ping_interval), 0.1, 60
        ),
        ping_timeout=_number(
            ctx, "ami.ping_timeout", ami_raw.get("ping_timeout", d.ping_timeout), 0.1, 60
        ),
    )
    if "secret_file" in ami_raw:
        _typed(ctx, "ami.secret_file", ami_raw["secret_file"], str, "a path")

    scr = _table(ctx, "screening", raw.get("screening", {}))
    _check_keys(ctx, "screening", scr, _SCREENING)
    hold = _number(ctx, "screening.hold_seconds", scr.get("hold_seconds", 4.0), 0.5, 60)
    margin = _number(ctx, "screening.late_margin", scr.get("late_margin", 0.5), 0, 30)
    if margin >= hold:
        raise ctx.fail("screening.late_margin", f"must be less than hold_seconds ({hold:g})")
    dp = Policy()
    digits = _integer(ctx, "screening.challenge_digits", scr.get("challenge_digits", 2), 2, 8)
    announce = _typed(
        ctx,
        "screening.withheld_announcement",
        scr.get("withheld_announcement", dp.withheld_announcement),
        bool,
        "true or false",
    )

    pol = _table(ctx, "policy", raw.get("policy", {}))
    _check_keys(ctx, "policy", pol, _POLICY)
    categories = dict(dp.categories)
    categories.update(_categories(ctx, "policy.categories", pol.get("categories", {})))
    record_raw = _table(ctx, "policy.record", pol.get("record", {}))
    _check_keys(ctx, "policy.record", record_raw, CATEGORIES)
    record = frozenset(
        Category(name)
        for name, on in record_raw.items()
        if _typed(ctx, f"policy.record.{name}", on, bool, "true or false")
    )
    announce_raw = _table(ctx, "policy.announce", pol.get("announce", {}))
    _check_keys(ctx, "policy.announce", announce_raw, CATEGORIES)
    announced = frozenset(
        Category(name)
        for name, on in announce_raw.items()
        if _typed(ctx, f"policy.announce.{name}", on, bool, "true or false")
    )
    # Japanese for a Japanese office, English elsewhere, unless the file says otherwise.
    language = _choice(
        ctx, "screening.language", scr.get("language", "ja" if region == "JP" else "en"), LANGUAGES
    )
    rec_folder = _typed(
        ctx,
        "screening.recording_folder",
        scr.get("recording_folder", str(defaults.recording_folder)),
        str,
        "a folder path",
    )
    retention = _number(
        ctx,
        "screening.recording_retention_days",
        scr.get("recording_retention_days", defaults.recording_retention_days),
        1,
        3650,
    )
    prompt_words = _prompt_words(ctx, raw.get("prompts", {}))

    learn_raw = _table(ctx, "learning", raw.get("learning", {}))
    _check_keys(ctx, "learning", learn_raw, _LEARNING)

    def learned(key: str, default: float, minimum: float, maximum: float) -> float:
        return _number(ctx, f"learning.{key}", learn_raw.get(key, default), minimum, maximum)

    policy = Policy(
        allow_route=_route(ctx, "policy.allow", pol.get("allow", dp.allow_route.value)),
        block_route=_route(ctx, "policy.block", pol.get("block", dp.block_route.value)),
        default_route=_route(ctx, "policy.default", pol.get("default", dp.default_route.value)),
        categories=categories,
        hours=_hours(ctx, raw["hours"]) if "hours" in raw else Hours(),
        dids=_dids(ctx, raw["dids"], region) if "dids" in raw else {},
        challenge_digits=digits,
        withheld_announcement=announce,
        verified_days=learned("verified_days", dp.verified_days, 0, 3650),
        fail_threshold=_integer(
            ctx,
            "learning.fail_threshold",
            learn_raw.get("fail_threshold", dp.fail_threshold),
            0,
            100,
        ),
        fail_window_days=learned("fail_window_days", dp.fail_window_days, 0, 3650),
        autoblock_days=learned("autoblock_days", dp.autoblock_days, 0, 3650),
        called_days=learned("called_days", dp.called_days, 0, 3650),
        language=language,
        record=record,
        announce=announced,
    )

    log = _table(ctx, "log", raw.get("log", {}))
    _check_keys(ctx, "log", log, _LOG)
    log_format = _choice(ctx, "log.format", log.get("format", "auto"), ("auto", "json", "console"))
    level = log.get("level", "info")
    # INFO and info are the same level (logging's own names are upper case).
    log_level = _choice(
        ctx, "log.level", level.lower() if isinstance(level, str) else level, LOG_LEVELS
    )
    return Config(
        db_path=Path(database),
        region=region,
        ami=ami,
        hold_seconds=hold,
        late_margin=margin,
        policy=policy,
        log_format=log_format,  # type: ignore[arg-type]  # checked by _choice above
        log_level=log_level,
        recording_folder=Path(rec_folder),
        recording_retention_days=retention,
        prompt_words=prompt_words,
    )


# ---- metrics and notifications (docs: README "Metrics and health", "Notifications") ----------


@dataclass(frozen=True)
class EmailConfig:
    """SMTP delivery of notifications (aiosmtplib)."""

    host: str
    to: tuple[str, ...]
    sender: str = "screener@localhost"
    port: int = 587
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    timeout: float = 30.0


@dataclass(frozen=True)
class WebhookConfig:
    """A JSON POST per event, signed with HMAC-SHA256 under ``secret``."""

    url: str = field(repr=False)  # may carry a token (Slack, LINE bridges)
    secret: str | None = field(default=None, repr=False)
    timeout: float = 10.0


@dataclass(frozen=True)
class MqttConfig:
    """MQTT publication (aiomqtt): one topic per event type under ``prefix``."""

    host: str
    port: int = 1883
    prefix: str = "screener"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca_file: Path | None = None
    qos: int = 1
    timeout: float = 10.0


@dataclass(frozen=True)
class NotifyConfig:
    """The ``[notify]`` table: which channels, how to retry, in which language."""

    email: EmailConfig | None = None
    webhook: WebhookConfig | None = None
    mqtt: MqttConfig | None = None
    language: Literal["ja", "en"] = "ja"
    poll_interval: float = 1.0
    retry_base: float = 2.0
    retry_max: float = 60.0
    max_age_hours: float = 48.0
    # Events (delivered or given up) are deleted from the outbox after this many days.
    keep_days: float = 30.0
    # AMI down this long (seconds) counts as degraded and is notified.
    degraded_after: float = 30.0
    # Asterisk's voicemail spool as this host sees it: the mail attaches a message's WAV from
    # here (screener/notify/voicemail.py); None: no attachment.
    voicemail_dir: Path | None = Path("/var/spool/asterisk/voicemail")

    @property
    def channels(self) -> tuple[str, ...]:
        """The names of the configured channels."""
        pairs = (("email", self.email), ("webhook", self.webhook), ("mqtt", self.mqtt))
        return tuple(name for name, value in pairs if value is not None)


_NOTIFY = (
    "language",
    "poll_interval",
    "retry_base",
    "retry_max",
    "max_age_hours",
    "keep_days",
    "degraded_after",
    "voicemail_dir",
    "email",
    "webhook",
    "mqtt",
)
_EMAIL = (
    "host",
    "port",
    "security",
    "username",
    "password_file",
    "from",
    "to",
    "ca_file",
    "timeout",
)
_WEBHOOK = ("url", "secret_file", "timeout")
_MQTT = (
    "host",
    "port",
    "prefix",
    "username",
    "password_file",
    "tls",
    "ca_file",
    "qos",
    "timeout",
)


def _listen(ctx: _Ctx, value: Any) -> str:
    """``host:port`` (``[::1]:9120`` for IPv6), or empty for no server."""
    text = str(_typed(ctx, "metrics_listen", value, str, 'an address such as "127.0.0.1:9120"'))
    if text == "":
        return text
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ctx.fail("metrics_listen", f'expected "host:port" or "" (off), got {text!r}')
    return text


def _secret(ctx: _Ctx, key: str, where: Any, env: Mapping[str, str], name: str) -> str | None:
    """A secret from the environment variable ``name``, else from the file ``where`` (``key``)."""
    if env.get(name):
        return env[name]
    if where is None:
        return None
    path = _typed(ctx, key, where, str, "a path")
    return _read_secret_file(ctx.origin, key, Path(path))


def _optional_str(ctx: _Ctx, key: str, value: Any) -> str | None:
    return None if value is None else _typed(ctx, key, value, str, "a string")


def _notify(ctx: _Ctx, value: Any, env: Mapping[str, str]) -> NotifyConfig:
    table = _table(ctx, "notify", value)
    _check_keys(ctx, "notify", table, _NOTIFY)
    d = NotifyConfig()

    def num(key: str, default: float, lo: float, hi: float) -> float:
        return _number(ctx, f"notify.{key}", table.get(key, default), lo, hi)

    email = webhook = mqtt = None
    if "email" in table:
        e = _table(ctx, "notify.email", table["email"])
        _check_keys(ctx, "notify.email", e, _EMAIL)
        if "host" not in e or "to" not in e:
            raise ctx.fail("notify.email", "needs host and to (a list of addresses)")
        to = e["to"]
        if isinstance(to, str):
            to = [to]
        if not isinstance(to, list) or not to or not all(isinstance(a, str) and a for a in to):
            raise ctx.fail("notify.email.to", "expected a list of e-mail addresses")
        ca = _optional_str(ctx, "notify.email.ca_file", e.get("ca_file"))
        security = _choice(
            ctx, "notify.email.security", e.get("security", "starttls"), ("starttls", "tls", "none")
        )
        email = EmailConfig(
            host=_typed(ctx, "notify.email.host", e["host"], str, "a host name"),
            to=tuple(to),
            sender=_typed(
                ctx, "notify.email.from", e.get("from", EmailConfig.sender), str, "an address"
            ),
            port=_integer(
                ctx, "notify.email.port", e.get("port", 465 if security == "tls" else 587), 1, 65535
            ),
            security=security,  # type: ignore[arg-type]  # checked by _choice above
            username=_optional_str(ctx, "notify.email.username", e.get("username")),
            password=_secret(
                ctx,
                "notify.email.password_file",
                e.get("password_file"),
                env,
                "SCREENER_NOTIFY_EMAIL_PASSWORD",
            ),
            ca_file=Path(ca) if ca else None,
            timeout=_number(ctx, "notify.email.timeout", e.get("timeout", 30.0), 0.1, 600),
        )
    if "webhook" in table:
        w = _table(ctx, "notify.webhook", table["webhook"])
        _check_keys(ctx, "notify.webhook", w, _WEBHOOK)
        url = w.get("url")
        if not isinstance(url, str) or not re.match(r"^https?://[^/\s]+", url):
            raise ctx.fail("notify.webhook.url", "expected an http:// or https:// URL")
        webhook = WebhookConfig(
            url=url,
            secret=_secret(
                ctx,
                "notify.webhook.secret_file",
                w.get("secret_file"),
                env,
                "SCREENER_NOTIFY_WEBHOOK_SECRET",
            ),
            timeout=_number(ctx, "notify.webhook.timeout", w.get("timeout", 10.0), 0.1, 600),
        )
    if "mqtt" in table:
        m = _table(ctx, "notify.mqtt", table["mqtt"])
        _check_keys(ctx, "notify.mqtt", m, _MQTT)
        if "host" not in m:
            raise ctx.fail("notify.mqtt", "needs host")
        tls = _typed(ctx, "notify.mqtt.tls", m.get("tls", False), bool, "true or false")
        prefix = _typed(ctx, "notify.mqtt.prefix", m.get("prefix", "screener"), str, "a topic")
        if not prefix or any(c in prefix for c in "#+\0") or prefix.endswith("/"):
            raise ctx.fail("notify.mqtt.prefix", f"not a topic prefix: {prefix!r}")
        ca = _optional_str(ctx, "notify.mqtt.ca_file", m.get("ca_file"))
        mqtt = MqttConfig(
            host=_typed(ctx, "notify.mqtt.host", m["host"], str, "a host name"),
            port=_integer(ctx, "notify.mqtt.port", m.get("port", 8883 if tls else 1883), 1, 65535),
            prefix=prefix,
            username=_optional_str(ctx, "notify.mqtt.username", m.get("username")),
            password=_secret(
                ctx,
                "notify.mqtt.password_file",
                m.get("password_file"),
                env,
                "SCREENER_NOTIFY_MQTT_PASSWORD",
            ),
            tls=tls,
            ca_file=Path(ca) if ca else None,
            qos=_integer(ctx, "notify.mqtt.qos", m.get("qos", 1), 0, 2),
            timeout=_number(ctx, "notify.mqtt.timeout", m.get("timeout", 10.0), 0.1, 600),
        )
    retry_base = num("retry_base", d.retry_base, 0.01, 3600)
    retry_max = num("retry_max", d.retry_max, 0.01, 86400)
    if retry_max < retry_base:
        raise ctx.fail("notify.retry_max", f"must be at least retry_base ({retry_base:g})")
    max_age_hours = num("max_age_hours", d.max_age_hours, 0.01, 24 * 365)
    keep_days = num("keep_days", d.keep_days, 1, 3650)
    if keep_days * 24 < max_age_hours:
        raise ctx.fail(
            "notify.keep_days",
            f"must cover max_age_hours ({max_age_hours:g} h): events still being retried are kept",
        )
    return NotifyConfig(
        email=email,
        webhook=webhook,
        mqtt=mqtt,
        language=_choice(ctx, "notify.language", table.get("language", "ja"), ("ja", "en")),  # type: ignore[arg-type]  # checked by _choice
        poll_interval=num("poll_interval", d.poll_interval, 0.05, 3600),
        retry_base=retry_base,
        retry_max=retry_max,
        max_age_hours=max_age_hours,
        keep_days=keep_days,
        degraded_after=num("degraded_after", d.degraded_after, 0, 3600),
        voicemail_dir=_voicemail_dir(ctx, table.get("voicemail_dir", d.voicemail_dir)),
    )


def _voicemail_dir(ctx: _Ctx, value: Any) -> Path | None:
    """``notify.voicemail_dir``: a directory, or "" for no attachments."""
    if isinstance(value, Path):
        return value
    text = _typed(ctx, "notify.voicemail_dir", value, str, 'a directory (or "" for none)')
    return Path(text) if text else None


def _prompt_words(ctx: _Ctx, value: Any) -> dict[str, dict[str, Any]]:
    """[prompts.ja]: the office's wording; each value a non-empty string (digits: ten)."""
    table = _table(ctx, "prompts", value)
    _check_keys(ctx, "prompts", table, ("ja",))
    result: dict[str, dict[str, Any]] = {}
    for lang, body in table.items():
        where = f"prompts.{lang}"
        words = _table(ctx, where, body)
        _check_keys(ctx, where, words, PROMPT_KEYS)
        clean: dict[str, Any] = {}
        for key, text in words.items():
            if key == "digits":
                if not (
                    isinstance(text, list)
                    and len(text) == 10
                    and all(isinstance(t, str) and t.strip() for t in text)
                ):
                    raise ctx.fail(f"{where}.digits", "expected ten readings, for 0 to 9")
                clean[key] = tuple(text)
                continue
            _typed(ctx, f"{where}.{key}", text, str, "text")
            if key != "greeting" and not text.strip():
                raise ctx.fail(f"{where}.{key}", "must not be empty")
            if key == "after_hours_times" and "{hours}" not in text:
                raise ctx.fail(f"{where}.{key}", "must contain {hours}")
            clean[key] = text
        result[lang] = clean
    return result


# ---- many sites, one list (README "Several sites"; docs/security.md) -------------------------


@dataclass(frozen=True)
class SharedConfig:
    """The ``[shared]`` table: the central PostgreSQL and this site's name in it.

    ``dsn`` never holds the password: that comes from ``SCREENER_SHARED_PASSWORD`` or
    ``password_file`` and is handed to the driver in memory only (never on a command line, in
    an environment variable of a child, or a log line).
    """

    dsn: str = field(repr=False)
    site: str
    password: str | None = field(default=None, repr=False)
    # None: as the DSN says, else libpq's default ("prefer"); verify-full in production.
    sslmode: str | None = None
    sslrootcert: Path | None = None
    sslcert: Path | None = None
    sslkey: Path | None = None
    connect_timeout: float = 5.0
    # The safety net under LISTEN/NOTIFY: a pull at least this often (seconds).
    pull_interval: float = 30.0
    # How often the local outbox is looked at for changes made by other processes (seconds).
    push_interval: float = 0.1
    # A local copy not brought up to date for this long is replaced by a snapshot (days).
    snapshot_after_days: float = 7.0
    # Call records shipped to the central store per batch.
    call_batch: int = 500
    # Central tombstones and idempotency keys older than this are pruned (days); a site that
    # has not pulled since then takes a snapshot instead. Central call records: their own.
    retention_days: float = 30.0
    call_retention_days: float = 365.0

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``psycopg.AsyncConnection.connect`` besides the DSN."""
        kwargs: dict[str, Any] = {
            "connect_timeout": max(1, round(self.connect_timeout)),
            "application_name": f"screener-{self.site}",
        }
        if self.password is not None:
            kwargs["password"] = self.password
        if self.sslmode is not None:
            kwargs["sslmode"] = self.sslmode
        for key in ("sslrootcert", "sslcert", "sslkey"):
            value = getattr(self, key)
            if value is not None:
                kwargs[key] = str(value)
        return kwargs

    @property
    def display(self) -> str:
        """The DSN with any password taken out, for messages and ``sync status``."""
        return redact_dsn(self.dsn)


_SHARED = (
    "dsn",
    "site",
    "password_file",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "connect_timeout",
    "pull_interval",
    "push_interval",
    "snapshot_after_days",
    "call_batch",
    "retention_days",
    "call_retention_days",
)
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_SITE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_DSN_PASSWORD = re.compile(
    r"(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)|(://[^/:@\s]*:)([^@/\s]*)(@)"
)


def redact_dsn(dsn: str) -> str:
    """``dsn`` with a password, in either form (``password=`` or ``user:pw@``), replaced."""
    return _DSN_PASSWORD.sub(
        lambda m: f"{m.group(1)}***" if m.group(1) else f"{m.group(3)}***{m.group(5)}", dsn
    )


def _dsn_parts(ctx: _Ctx, dsn: str) -> dict[str, str]:
    try:
        from psycopg.conninfo import conninfo_to_dict  # the optional extra
    except ImportError as exc:
        raise ctx.fail(
            "shared", "needs the PostgreSQL driver: pip install 'screener[shared]'"
        ) from exc
    try:
        parts = conninfo_to_dict(dsn)
    except Exception as exc:  # psycopg.ProgrammingError; its text never quotes the password
        raise ctx.fail("shared.dsn", "not a PostgreSQL connection string or URL") from exc
    return {k: str(v) for k, v in parts.items() if v is not None}


def _shared(ctx: _Ctx, value: Any, env: Mapping[str, str]) -> SharedConfig:
    table = _table(ctx, "shared", value)
    _check_keys(ctx, "shared", table, _SHARED)
    d_pull, d_push = SharedConfig.pull_interval, SharedConfig.push_interval
    if "dsn" not in table or "site" not in table:
        raise ctx.fail("shared", "needs dsn (or SCREENER_SHARED_DSN) and site (or SCREENER_SITE)")
    dsn = _typed(ctx, "shared.dsn", table["dsn"], str, "a PostgreSQL connection string")
    parts = _dsn_parts(ctx, dsn)
    password = None
    if "password" in parts:
        # The file is not a place for secrets; the environment variable may carry one (a
        # container's secret), and we take it out of the DSN so that it is never shown.
        if ctx.where("shared.dsn") == ctx.origin:
            raise ctx.fail(
                "shared.dsn",
                "must not contain the password; use SCREENER_SHARED_PASSWORD or password_file",
            )
        password = parts.pop("password")
        from psycopg.conninfo import make_conninfo  # the optional extra

        dsn = make_conninfo(**parts)
    site = _typed(ctx, "shared.site", table["site"], str, "a short site name")
    if not _SITE.match(site):
        raise ctx.fail(
            "shared.site",
            f"expected 1-32 of a-z, 0-9, - and _ (starting with a letter or digit), got {site!r}",
        )
    password = (
        _secret(
            ctx, "shared.password_file", table.get("password_file"), env, "SCREENER_SHARED_PASSWORD"
        )
        or password
    )

    def path(key: str) -> Path | None:
        text = _optional_str(ctx, f"shared.{key}", table.get(key))
        return Path(text) if text else None

    return SharedConfig(
        dsn=dsn,
        site=site,
        password=password,
        sslmode=_choice(ctx, "shared.sslmode", table["sslmode"], SSLMODES)
        if "sslmode" in table
        else None,
        sslrootcert=path("sslrootcert"),
        sslcert=path("sslcert"),
        sslkey=path("sslkey"),
        connect_timeout=_number(
            ctx, "shared.connect_timeout", table.get("connect_timeout", 5.0), 0.5, 120
        ),
        pull_interval=_number(
            ctx, "shared.pull_interval", table.get("pull_interval", d_pull), 0.1, 86400
        ),
        push_interval=_number(
            ctx, "shared.push_interval", table.get("push_interval", d_push), 0.01, 60
        ),
        snapshot_after_days=_number(
            ctx, "shared.snapshot_after_days", table.get("snapshot_after_days", 7.0), 0.001, 3650
        ),
        call_batch=_integer(ctx, "shared.call_batch", table.get("call_batch", 500), 1, 100000),
        retention_days=_number(
            ctx, "shared.retention_days", table.get("retention_days", 30.0), 1, 36500
        ),
        call_retention_days=_number(
            ctx, "shared.call_retention_days", table.get("call_retention_days", 365.0), 1, 36500
        ),
    )
