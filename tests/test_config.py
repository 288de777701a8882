"""Configuration: precedence, validation with clear messages, secrets only from env or file."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest

from screener.config import load_config
from screener.errors import ConfigError
from screener.numbers import Category
from screener.policy import Route
from screener.prompts import words_for


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "screener.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults() -> None:
    """With no file and no environment, the defaults suit a Japanese office."""
    config = load_config(env={})
    assert config.region == "JP"
    assert config.ami.host == "127.0.0.1" and config.ami.secret is None
    assert config.policy.categories[Category.TOLL_FREE] is Route.CHALLENGE
    assert config.policy.categories[Category.MOBILE] is Route.STAFF


def test_precedence_flag_over_env_over_file(tmp_path: Path) -> None:
    """A flag beats SCREENER_* which beats the TOML file which beats the default."""
    path = write(tmp_path, 'database = "file.db"\n[ami]\nport = 5100\nhost = "::1"\n')
    env = {"SCREENER_DB": "env.db", "SCREENER_AMI_PORT": "5200"}
    config = load_config(path, env=env, overrides={"database": "flag.db"})
    assert str(config.db_path) == "flag.db"
    assert config.ami.port == 5200
    assert config.ami.host == "::1"
    assert load_config(path, env=env).db_path == Path("env.db")
    assert load_config(path, env={}).db_path == Path("file.db")


def test_config_path_from_environment(tmp_path: Path) -> None:
    """SCREENER_CONFIG names the file when no --config is given."""
    path = write(tmp_path, 'region = "US"\n')
    assert load_config(env={"SCREENER_CONFIG": str(path)}).region == "US"


def test_full_file(tmp_path: Path) -> None:
    """Every section of the reference configuration is read into the policy."""
    path = write(
        tmp_path,
        """
region = "JP"
[screening]
hold_seconds = 6
challenge_digits = 3
withheld_announcement = true
[policy]
block = "reject"
[policy.categories]
mobile = "challenge"
[hours]
timezone = "Asia/Tokyo"
open = { mon = ["09:00-12:00", "13:00-18:00"], fri = ["09:00-24:00"] }
quiet = { sun = ["22:00-06:00"] }
after_hours = "voicemail"
[learning]
verified_days = 30
fail_threshold = 5
[dids."03-1234-0000"]
default = "staff"
[dids."03-1234-0000".categories]
toll_free = "voicemail"
[log]
format = "json"
level = "debug"
""",
    )
    config = load_config(path, env={})
    p = config.policy
    assert config.hold_seconds == 6 and p.challenge_digits == 3 and p.withheld_announcement
    assert p.block_route is Route.REJECT
    assert p.categories[Category.MOBILE] is Route.CHALLENGE
    assert p.categories[Category.TOLL_FREE] is Route.CHALLENGE  # defaults kept
    assert p.hours.open[0] == ((dt.time(9), dt.time(12)), (dt.time(13), dt.time(18)))
    assert p.hours.open[4][0][1] == dt.time.max
    assert p.verified_days == 30 and p.fail_threshold == 5
    assert p.dids["+81312340000"].categories[Category.TOLL_FREE] is Route.VOICEMAIL
    assert (config.log_format, config.log_level) == ("json", "debug")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour = 1\n", "colour: unknown key; allowed: region, database"),
        ("[ami]\nprot = 1\n", "ami.prot: unknown key"),
        ("[ami]\nport = 'x'\n", "ami.port: expected a whole number, got 'x'"),
        ("[ami]\nport = 70000\n", "ami.port: expected a whole number from 1 to 65535"),
        ("[ami]\ntls = 'yes'\n", "ami.tls: expected true or false"),
        ("[ami]\nsecret = 'x'\n", "ami.secret: unknown key"),
        ('region = "XX"\n', "region: unknown region 'XX'"),
        ("[policy]\nallow = 'ring'\n", "policy.allow: expected one of staff, challenge"),
        ("[policy.categories]\ntollfree = 'staff'\n", "policy.categories.tollfree: unknown key"),
        ("[hours]\ntimezone = 'Mars/Base'\n", "hours.timezone: unknown time zone"),
        ("[hours]\nopen = { mon = ['9-5'] }\n", 'hours.open.mon: expected "HH:MM-HH:MM"'),
        ("[hours]\nopen = { monday = [] }\n", "hours.open.monday: unknown key"),
        ("[hours]\nopen = { mon = ['09:00-24:30'] }\n", 'hours.open.mon: expected "HH:MM-HH:MM"'),
        (
            "[hours]\nquiet = { sun = ['09:00-09:00'] }\n",
            "hours.quiet.sun: '09:00-09:00' starts where it ends, so it never matches",
        ),
        ("[log]\nlevel = 'verbose'\n", "log.level: expected one of debug, info, warning, error"),
        (
            "[screening]\nhold_seconds = true\n",
            "screening.hold_seconds: expected a number, got a boolean",
        ),
        ("[screening]\nhold_seconds = 1\nlate_margin = 2\n", "must be less than hold_seconds"),
        ("[screening]\nchallenge_digits = 1\n", "challenge_digits: expected a whole number from 2"),
        ("[log]\nformat = 'xml'\n", "log.format: expected one of auto, json, console"),
        ("ami = 3\n", "ami: expected a table"),
        ("this is not toml\n", "not valid TOML"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    """Every mistake is one ConfigError naming the file, the key and what is allowed."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value).startswith(str(path))
    assert message in str(info.value)
    assert info.value.exit_code == 3


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    """A missing config file, or one that is not UTF-8, is a ConfigError, not a traceback."""
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml", env={})
    bad = tmp_path / "sjis.toml"
    bad.write_bytes('region = "JP" # 日本'.encode("shift_jis"))
    with pytest.raises(ConfigError, match="not"):
        load_config(bad, env={})


def test_bad_environment_value() -> None:
    """A SCREENER_* variable that cannot be converted names the variable."""
    with pytest.raises(ConfigError, match="SCREENER_AMI_PORT"):
        load_config(env={"SCREENER_AMI_PORT": "five"})


@pytest.mark.parametrize(("text", "tls"), [("yes", True), ("1", True), ("off", False)])
def test_tls_from_environment(text: str, tls: bool) -> None:
    """SCREENER_AMI_TLS takes the usual yes/no words."""
    assert load_config(env={"SCREENER_AMI_TLS": text}).ami.tls is tls


def test_tls_typo_is_an_error_not_off() -> None:
    """A typo in SCREENER_AMI_TLS stops the program rather than sending the secret in clear."""
    with pytest.raises(ConfigError, match=r"SCREENER_AMI_TLS: cannot use 'ture'.*expected one of"):
        load_config(env={"SCREENER_AMI_TLS": "ture"})


def test_secret_from_env_or_file_never_in_repr(tmp_path: Path) -> None:
    """The AMI secret comes from the environment or a file, and repr() never shows it."""
    secret_file = tmp_path / "secret"
    secret_file.write_text("s3cr3t-from-file\n")
    path = write(tmp_path, f'[ami]\nsecret_file = "{secret_file}"\n')
    config = load_config(path, env={})
    assert config.ami.secret == "s3cr3t-from-file"
    assert "s3cr3t" not in repr(config)
    assert load_config(path, env={"SCREENER_AMI_SECRET": "env-secret"}).ami.secret == "env-secret"
    with pytest.raises(ConfigError, match=r"ami\.secret_file: cannot read"):
        load_config(write(tmp_path, '[ami]\nsecret_file = "/nonexistent/x"\n'), env={})


def test_example_config_is_the_defaults() -> None:
    """The shipped reference file loads, and every value in it is the default."""
    example = Path(__file__).parent.parent / "screener.example.toml"
    loaded = load_config(example, env={})
    defaults = load_config(env={})
    # One deliberate difference: the example turns recording on for toll-free and withheld
    # callers; by default nothing is recorded.
    assert loaded.policy.record == {Category.TOLL_FREE, Category.WITHHELD}
    assert defaults.policy.record == frozenset()
    # And announce screening for the categories that are challenged: the challenge passers.
    challenged = {c for c, r in defaults.policy.categories.items() if r is Route.CHALLENGE}
    assert loaded.policy.announce == challenged
    assert defaults.policy.announce == frozenset()
    assert (
        dataclasses.replace(loaded.policy, record=frozenset(), announce=frozenset())
        == defaults.policy
    )
    assert words_for(loaded.prompt_words.get("ja")) == words_for(None)
    assert (loaded.recording_folder, loaded.recording_retention_days) == (
        defaults.recording_folder,
        defaults.recording_retention_days,
    )
    assert (loaded.ami, loaded.hold_seconds, loaded.late_margin) == (
        defaults.ami,
        defaults.hold_seconds,
        defaults.late_margin,
    )


@pytest.mark.parametrize(
    ("text", "region", "office", "did_language", "record", "did_record"),
    [
        ("", "JP", "ja", None, frozenset(), None),
        ("", "US", "en", None, frozenset(), None),
        ('[screening]\nlanguage = "en"\n', "JP", "en", None, frozenset(), None),
        (
            "[policy.record]\ntoll_free = true\nmobile = false\n"
            '[dids."03-1234-0000"]\nlanguage = "en"\nrecord = false\n',
            "JP",
            "ja",
            "en",
            frozenset({Category.TOLL_FREE}),
            False,
        ),
    ],
)
def test_language_and_recording(
    tmp_path: Path,
    text: str,
    region: str,
    office: str,
    did_language: str | None,
    record: frozenset[Category],
    did_record: bool | None,
) -> None:
    """Japanese by default in JP, English elsewhere; per-DID language and recording."""
    config = load_config(write(tmp_path, f'region = "{region}"\n{text}'), env={})
    assert config.policy.language == office
    assert config.policy.record == record
    did = config.policy.dids.get("+81312340000")
    assert (did.language, did.record) == (did_language, did_record) if did else did_language is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[screening]\nlanguage = "fr"\n', r"screening\.language: expected one of ja, en"),
        ('[dids."0312340000"]\nlanguage = "de"\n', r"dids\.0312340000\.language"),
        ("[policy.record]\ntoll_free = 1\n", r"policy\.record\.toll_free: expected true or false"),
        ("[policy.record]\nfax = true\n", r"policy\.record\.fax: unknown key"),
        ('[policy.announce]\nmobile = "yes"\n', r"policy\.announce\.mobile: expected true or"),
        ("[policy.announce]\nfax = true\n", r"policy\.announce\.fax: unknown key"),
        ('[dids."0312340000"]\nannounce = 1\n', r"dids\.0312340000\.announce: expected true"),
        ('[prompts.ja]\nreject = ""\n', r"prompts\.ja\.reject: must not be empty"),
        ('[prompts.ja]\nafter_hours_times = "x"\n', r"must contain \{hours\}"),
        ('[prompts.ja]\ndigits = ["a"]\n', r"prompts\.ja\.digits: expected ten readings"),
        ('[prompts.ja]\nfarewell = "x"\n', r"prompts\.ja\.farewell: unknown key"),
        ('[prompts.fr]\nreject = "x"\n', r"prompts\.fr: unknown key"),
        ("[screening]\nrecording_retention_days = 0\n", r"recording_retention_days"),
    ],
)
def test_language_recording_and_prompt_errors(tmp_path: Path, text: str, message: str) -> None:
    """A bad language, record flag or prompt text stops the load naming the key."""
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text), env={})


def test_office_wording_replaces_the_defaults(tmp_path: Path) -> None:
    """[prompts.ja] values replace the shipped wording; the rest stays."""
    config = load_config(write(tmp_path, '[prompts.ja]\ngreeting = "株式会社〇〇です。"\n'), env={})
    words = words_for(config.prompt_words["ja"])
    assert words.greeting == "株式会社〇〇です。"
    assert words.reject == words_for(None).reject


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"SCREENER_LOG_LEVEL": "verbose"},
            "environment variable SCREENER_LOG_LEVEL: log.level: expected one of debug, info",
        ),
        (
            {"SCREENER_AMI_PORT": "70000"},
            "environment variable SCREENER_AMI_PORT: ami.port: expected a whole number from 1",
        ),
        (
            {"SCREENER_REGION": "XX"},
            "environment variable SCREENER_REGION: region: unknown region 'XX'",
        ),
        (
            {"SCREENER_HOLD_SECONDS": "120"},
            "environment variable SCREENER_HOLD_SECONDS: screening.hold_seconds: expected a number",
        ),
        (
            {"SCREENER_AMI_SECRET_FILE": "/nonexistent/secret"},
            "environment variable SCREENER_AMI_SECRET_FILE: ami.secret_file: cannot read",
        ),
    ],
)
def test_environment_errors_name_the_variable(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    """A bad value from a SCREENER_* variable names that variable, not the config file."""
    path = write(tmp_path, 'region = "JP"\n[log]\nlevel = "info"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env)
    assert str(info.value).startswith(message), str(info.value)
    assert str(path) not in str(info.value)


@pytest.mark.parametrize("level", ["INFO", "Info", "info", "WARNING", "Debug"])
def test_log_level_is_case_insensitive(tmp_path: Path, level: str) -> None:
    """SCREENER_LOG_LEVEL=INFO (logging's own spelling) and the file's level ignore case."""
    assert load_config(env={"SCREENER_LOG_LEVEL": level}).log_level == level.lower()
    path = write(tmp_path, f'[log]\nlevel = "{level}"\n')
    assert load_config(path, env={}).log_level == level.lower()


def test_source_without_a_file_says_so() -> None:
    """With no file, the config's source says there is none (init prints it)."""
    assert load_config(env={}).source == "no config file (defaults and SCREENER_* environment)"


def test_announce_per_category_and_did(tmp_path: Path) -> None:
    """[policy.announce] names categories; a DID's announce overrides it (absent: inherits)."""
    text = (
        "[policy.announce]\ntoll_free = true\nmobile = false\n"
        '[dids."03-1234-0000"]\nannounce = false\n[dids."03-1234-0001"]\nrecord = true\n'
    )
    config = load_config(write(tmp_path, text), env={})
    assert config.policy.announce == {Category.TOLL_FREE}
    assert config.policy.dids["+81312340000"].announce is False
    assert config.policy.dids["+81312340001"].announce is None
