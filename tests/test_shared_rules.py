"""The shared list's pure parts: the conflict rule, the fold of a batch, and [shared] config."""

from __future__ import annotations

from pathlib import Path

import pytest

from screener.config import load_config, redact_dsn
from screener.errors import ConfigError
from screener.shared.rules import Change, Row, accepts, fold, lay, rank


def row(
    source: str = "manual", kind: str = "block", number: str = "+81312345678", **kw: object
) -> Row:
    return Row(kind, number, False, kw.pop("label", ""), source, 0.0, None, "", **kw)  # type: ignore[arg-type]


def change(key: str, source: str, kind: str = "block", op: str = "upsert", **kw: object) -> Change:
    return Change(key, op, row(source, kind, **kw))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("current", "incoming", "wins"),
    [
        (None, "learned", True),  # never seen: anything goes
        (None, "manual", True),
        (row("manual"), "learned", False),  # manual beats learned
        (row("manual"), "called", False),  # and what calls made
        (row("manual"), "import:crm", True),  # an import is a person's act: equals
        (row("web:alice"), "learned", False),  # the console's edits are manual
        (row("learned"), "web:alice", True),
        (row("learned"), "manual", True),
        (row("learned"), "learned", True),  # among equals the later wins
        (row("manual"), "manual", True),
        (row("called"), "learned", True),
        (row("manual", deleted=True), "learned", True),  # a tombstone is no entry
    ],
)
def test_accepts(current: Row | None, incoming: str, wins: bool) -> None:
    """Manual outranks the rest; among equals the change that comes later wins."""
    assert accepts(current, change("k", incoming)) is wins


def test_rank_orders_manual_above_every_other_source() -> None:
    """A person's sources (CLI, console, import) outrank the screener's own."""
    assert (
        rank("manual") == rank("web:alice") == rank("import:x") > rank("learned") == rank("called")
    )


@pytest.mark.parametrize(
    ("current", "changes", "final"),
    [
        # A learned allow arriving after a manual block loses; the block stays (and is re-sent).
        ({"manual"}, [("learned", "allow", "upsert")], ("block", "manual", False)),
        # Removing a learned entry cannot remove the manual block made meanwhile elsewhere.
        ({"manual"}, [("learned", "allow", "delete")], ("block", "manual", False)),
        # A manual removal removes it.
        ({"manual"}, [("manual", "block", "delete")], ("block", "manual", True)),
        # In one batch, in order: learned, then manual, then learned again (loses).
        (
            set(),
            [
                ("learned", "allow", "upsert"),
                ("manual", "block", "upsert"),
                ("learned", "allow", "upsert"),
            ],
            ("block", "manual", False),
        ),
        # Equals: the last one wins.
        (
            set(),
            [("manual", "block", "upsert"), ("manual", "allow", "upsert")],
            ("allow", "manual", False),
        ),
        # Removed, then learned again.
        (
            set(),
            [("manual", "block", "delete"), ("learned", "allow", "upsert")],
            ("allow", "learned", False),
        ),
    ],
)
def test_fold(
    current: set[str], changes: list[tuple[str, str, str]], final: tuple[str, str, bool]
) -> None:
    """A batch folds in order over the central rows by the rule; every touched key is kept."""
    start = {row().key: row(next(iter(current)))} if current else {}
    result = fold(start, [change(f"k{i}", s, k, op) for i, (s, k, op) in enumerate(changes)])
    [(key, out)] = result.items()
    assert key == ("+81312345678", False)
    assert (out.kind, out.source, out.deleted) == final


def test_fold_keeps_keys_apart() -> None:
    """Changes to different numbers do not touch each other."""
    result = fold(
        {}, [change("1", "manual", number="+1"), change("2", "learned", "allow", number="+2")]
    )
    assert {k[0]: (r.kind, r.source) for k, r in result.items()} == {
        "+1": ("block", "manual"),
        "+2": ("allow", "learned"),
    }


# ---- [shared] in the configuration ------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "screener.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_without_shared_nothing_changes() -> None:
    """No [shared] table and no SCREENER_SHARED_DSN: no shared list, even with SCREENER_SITE."""
    assert load_config(env={}).shared is None
    assert load_config(env={"SCREENER_SITE": "tokyo", "SCREENER_SHARED_DSN": ""}).shared is None


def test_shared_from_the_file_with_the_password_from_a_file(tmp_path: Path) -> None:
    """dsn and site from the file, the password from password_file; repr hides both secrets."""
    secret = tmp_path / "pw"
    secret.write_text("s3cr3t-pw\n")
    path = write(
        tmp_path,
        f'[shared]\ndsn = "host=db.example port=5432 user=screener dbname=lists"\nsite = "osaka"\n'
        f'password_file = "{secret}"\nsslmode = "verify-full"\nsslrootcert = "/etc/ca.pem"\n',
    )
    shared = load_config(path, env={}).shared
    assert shared is not None
    assert (shared.site, shared.password, shared.sslmode) == ("osaka", "s3cr3t-pw", "verify-full")
    kwargs = shared.connect_kwargs()
    assert kwargs["password"] == "s3cr3t-pw" and kwargs["sslrootcert"] == "/etc/ca.pem"
    assert "s3cr3t-pw" not in repr(shared) and "db.example" not in repr(shared)
    assert (shared.retention_days, shared.call_retention_days) == (30.0, 365.0)  # the defaults
    tuned = write(
        tmp_path,
        '[shared]\ndsn = "host=h"\nsite = "a"\nretention_days = 7\ncall_retention_days = 90\n',
    )
    got = load_config(tuned, env={}).shared
    assert got is not None and (got.retention_days, got.call_retention_days) == (7.0, 90.0)


def test_shared_from_the_environment_takes_the_password_out_of_the_dsn() -> None:
    """SCREENER_SHARED_DSN may carry a password: it is moved out of the DSN, never shown."""
    env = {
        "SCREENER_SHARED_DSN": "postgresql://u:pw123@127.0.0.1:5432/lists",
        "SCREENER_SITE": "tokyo",
    }
    shared = load_config(env=env).shared
    assert shared is not None
    assert (
        shared.password == "pw123" and "pw123" not in shared.dsn and "pw123" not in shared.display
    )
    env["SCREENER_SHARED_PASSWORD"] = "from-env"
    assert load_config(env=env).shared.password == "from-env"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('dsn = "host=h password=x"\nsite = "a"', "must not contain the password"),
        ('dsn = "host=h"', "needs dsn"),
        ('dsn = "host=h"\nsite = "Tokyo Office"', "shared.site: expected 1-32"),
        ('dsn = "host=h"\nsite = "a"\nsslmode = "maybe"', "shared.sslmode: expected one of"),
        ('dsn = "host=h"\nsite = "a"\nurl = "x"', "shared.url: unknown key"),
        ('dsn = "not a dsn ="\nsite = "a"', "shared.dsn: not a PostgreSQL connection string"),
        ('dsn = "host=h"\nsite = "a"\nretention_days = 0', "shared.retention_days"),
        ('dsn = "host=h"\nsite = "a"\ncall_retention_days = "long"', "shared.call_retention_days"),
    ],
)
def test_shared_config_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    """A bad [shared] table fails on load with the file, key and what is wrong."""
    with pytest.raises(ConfigError, match=message) as info:
        load_config(write(tmp_path, f"[shared]\n{text}\n"), env={})
    assert "password=x" not in str(info.value)


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("postgresql://u:secret@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("host=h password=secret user=u", "host=h password=*** user=u"),
        ("host=h password='a secret' user=u", "host=h password=*** user=u"),
        ("host=h user=u", "host=h user=u"),
    ],
)
def test_redact_dsn(dsn: str, shown: str) -> None:
    """A DSN shown in a message has its password, in either form, replaced."""
    assert redact_dsn(dsn) == shown


@pytest.mark.parametrize(
    ("current", "pending", "shown"),
    [
        (None, [], None),
        (row("manual", label="central"), [], row("manual", label="central")),
        # An unpushed change of equal rank is newer than the row pulled before it was pushed.
        (row("manual", label="central"), [change("k1", "manual", "allow")], row("manual", "allow")),
        # A learned change loses to a person's central entry, pending or not.
        (row("manual"), [change("k1", "learned", "allow")], row("manual")),
        # A person's unpushed change stands over a learned central row.
        (row("learned", "allow"), [change("k1", "manual")], row("manual")),
        # An unpushed removal of the entry it saw, over a central row of equal rank.
        (row("manual"), [change("k1", "manual", op="delete")], row("manual", deleted=True)),
        # Several unpushed changes, in the order they were made.
        (
            None,
            [change("k1", "manual", label="first"), change("k2", "manual", label="second")],
            row("manual", label="second"),
        ),
        # A tombstone pulled under an unpushed change is no entry: the change stands.
        (row("manual", deleted=True), [change("k1", "learned", "allow")], row("learned", "allow")),
    ],
)
def test_lay_pending_changes_over_the_central_row(
    current: Row | None, pending: list[Change], shown: Row | None
) -> None:
    """What a site shows for a key with unpushed changes: the outcome their push will have."""
    assert lay(current, pending) == shown
    assert lay(current, pending) == fold(
        {} if current is None else {current.key: current}, pending
    ).get(("+81312345678", False), current)
