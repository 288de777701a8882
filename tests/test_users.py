"""Users, password hashing, tokens, the login rate limiter, and byte ranges: pure pieces."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from screener.cli import main
from screener.users import (
    check_name,
    check_password,
    hash_password,
    new_token,
    token_digest,
    verify_password,
)
from screener.voicemail import RangeError, _caller, parse_range
from screener.web.i18n import pick
from screener.web.ratelimit import FailureWindow, LoginLimiter
from screener.webstore import WebStore


def test_hash_is_argon2id_salted_and_verifies() -> None:
    """Argon2id with a memory cost, a fresh salt each time; wrong passwords and junk fail."""
    one, two = hash_password("correct horse battery"), hash_password("correct horse battery")
    assert one.startswith("$argon2id$") and "m=65536" in one and one != two
    assert verify_password(one, "correct horse battery")
    assert not verify_password(one, "correct horse batterx")
    assert not verify_password("not a hash", "correct horse battery")
    assert not verify_password(one, "x" * 5000)


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("alice", True),
        ("a.b-c_9", True),
        ("Alice", False),
        ("9lives", False),
        ("", False),
        ("a" * 33, False),
        ("web:x", False),
        ("<b>", False),
    ],
)
def test_user_names(name: str, ok: bool) -> None:
    """Names are short lower-case words: they end up in sources (web:<user>) and the audit."""
    if ok:
        assert check_name(name) == name
    else:
        with pytest.raises(ValueError, match="user name"):
            check_name(name)


@pytest.mark.parametrize(
    ("password", "ok"), [("short", False), ("ten chars!", True), ("x" * 1025, False)]
)
def test_password_rules(password: str, ok: bool) -> None:
    """At least ten characters, at most 1024 (hashing is costly on purpose)."""
    if ok:
        assert check_password(password) == password
    else:
        with pytest.raises(ValueError, match="password"):
            check_password(password)


def test_tokens_are_random_and_kept_as_digests() -> None:
    """Two tokens differ; the digest is stable and is not the token."""
    a, b = new_token(), new_token()
    assert a != b and a.startswith("scr_") and len(a) > 40
    assert token_digest(a) == token_digest(a) != a


def test_failure_window_slides() -> None:
    """limit failures within the window block the key until the oldest ages out."""
    w = FailureWindow(limit=3, window=10.0)
    for t in (0.0, 1.0, 2.0):
        assert w.blocked("k", t) == 0
        w.fail("k", t)
    assert w.blocked("k", 3.0) == pytest.approx(7.0)
    assert w.blocked("other", 3.0) == 0
    assert w.blocked("k", 10.5) == 0  # the failure at 0 aged out


def test_limiter_per_address_and_per_user() -> None:
    """One address guessing many names is stopped; a success clears only the user's count."""
    limiter = LoginLimiter(FailureWindow(4, 60.0), FailureWindow(2, 60.0))
    limiter.failed("10.0.0.1", "alice", 0.0)
    limiter.failed("10.0.0.2", "alice", 1.0)
    assert limiter.wait("10.0.0.3", "alice", 2.0) > 0  # per user, from any address
    assert limiter.wait("10.0.0.3", "bob", 2.0) == 0
    for n, name in enumerate(("c", "d", "e", "f")):
        limiter.failed("10.0.0.9", name, 3.0 + n)
    assert limiter.wait("10.0.0.9", "zed", 8.0) > 0  # per address, whatever the name
    limiter.succeeded("alice")
    assert limiter.wait("10.0.0.3", "alice", 9.0) == 0


@pytest.mark.parametrize(
    ("header", "size", "want"),
    [
        (None, 100, None),
        ("bytes=0-9", 100, (0, 9)),
        ("bytes=90-", 100, (90, 99)),
        ("bytes=-10", 100, (90, 99)),
        ("bytes=-1000", 100, (0, 99)),
        ("bytes=50-1000", 100, (50, 99)),
        ("items=0-9", 100, None),
        ("bytes=0-9,20-29", 100, None),  # multiple ranges: served whole
        ("bytes=100-", 100, RangeError),
        ("bytes=9-3", 100, RangeError),
        ("bytes=-0", 100, RangeError),
    ],
)
def test_parse_range(header: str | None, size: int, want: object) -> None:
    """One bytes= range, clamped to the file; unsatisfiable ones raise RangeError (416)."""
    if want is RangeError:
        with pytest.raises(RangeError):
            parse_range(header, size)
    else:
        assert parse_range(header, size) == want


@pytest.mark.parametrize(
    ("callerid", "want"),
    [
        ('"Tanaka" <0312345678>', ("Tanaka", "0312345678")),
        ("<0312345678>", ("", "0312345678")),
        ("0312345678", ("", "0312345678")),
        ('"<b>" <1>', ("<b>", "1")),
        ("", ("", "")),
    ],
)
def test_voicemail_callerid(callerid: str, want: tuple[str, str]) -> None:
    """The callerid line of a message splits into name and number."""
    assert _caller(callerid) == want


@pytest.mark.parametrize(
    ("cookie", "accept", "want"),
    [
        (None, None, "ja"),
        (None, "en-US,en;q=0.9", "en"),
        (None, "fr, en;q=0.5, ja;q=0.8", "ja"),
        ("en", "ja", "en"),
        ("xx", "en", "en"),
        (None, "en;q=bad", "en"),
    ],
)
def test_language_choice(cookie: str | None, accept: str | None, want: str) -> None:
    """The switch's cookie wins, then Accept-Language by quality, then Japanese."""
    assert pick(cookie, accept) == want


def test_user_commands(tmp_path: Path) -> None:
    """user add/passwd/token/remove work on the database; mistakes exit 2 with a message."""
    db = str(tmp_path / "s.db")
    pw = tmp_path / "pw"
    pw.write_text("correct horse battery\n")
    run = CliRunner().invoke
    done = run(
        main, ["user", "add", "alice", "--role", "staff", "--password-file", str(pw), "--db", db]
    )
    assert done.exit_code == 0, done.output
    again = run(
        main, ["user", "add", "alice", "--role", "staff", "--password-file", str(pw), "--db", db]
    )
    assert again.exit_code == 2 and "already exists" in again.output
    typed = run(
        main, ["user", "add", "bob", "--role", "admin", "--db", db], input="too short\ntoo short\n"
    )
    assert typed.exit_code == 2 and "too short" in typed.output
    token = run(main, ["user", "token", "alice", "--db", db])
    assert token.exit_code == 0 and token.output.startswith("scr_")
    with WebStore.open(db) as store:
        record = store.login_record("alice")
        assert record and verify_password(record[1], "correct horse battery")
        assert store.token_user(token_digest(token.output.strip())) == record[0]
        epoch = record[0].epoch
    pw.write_text("another good password\n")
    assert (
        run(main, ["user", "passwd", "alice", "--password-file", str(pw), "--db", db]).exit_code
        == 0
    )
    with WebStore.open(db) as store:
        record = store.login_record("alice")
        assert record and record[0].epoch == epoch + 1
        assert verify_password(record[1], "another good password")
    assert run(main, ["user", "remove", "alice", "--db", db]).exit_code == 0
    gone = run(main, ["user", "remove", "alice", "--db", db])
    assert gone.exit_code == 2 and "no user alice" in gone.output
    with WebStore.open(db) as store:
        assert store.token_user(token_digest(token.output.strip())) is None
        assert [a.action for a in store.audit_log()][:2] == ["user.remove", "user.passwd"]
