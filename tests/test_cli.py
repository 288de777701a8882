"""The admin CLI through click's runner: happy paths, and every error path's message and code."""

from __future__ import annotations

import json
import os
import sqlite3
import tracemalloc
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from screener import cli
from screener.cli import main
from tests.test_store import leaf_pages


def run(
    db: Path, *args: str, input: str | None = None, env: dict[str, str] | None = None
) -> Result:
    return CliRunner().invoke(
        main, [*args, "--db", str(db)], input=input, env={"SCREENER_CONFIG": "", **(env or {})}
    )


def check_json(db: Path, number: str, *extra: str) -> dict[str, object]:
    result = run(db, "check", number, "--json", *extra)
    assert result.exit_code == 0, result.output
    value = json.loads(result.stdout)
    assert isinstance(value, dict)
    return value


def test_check_toll_free_then_blocked(db: Path) -> None:
    """The telemarketer is challenged on a fresh database, and goes to voicemail once blocked."""
    first = check_json(db, "0120-121-852")
    assert first["route"] == "challenge"
    assert first["e164"] == "+81120121852" and first["category"] == "toll_free"
    assert first["input"] == "0120-121-852" and isinstance(first["reasons"], list)
    added = run(db, "list", "add", "0120-121-852", "--block", "--label", "Tele Sales")
    assert added.exit_code == 0, added.output
    assert "added block +81120121852 'Tele Sales' (manual)" in added.output
    assert check_json(db, "0120-121-852")["route"] == "voicemail"


def test_check_withheld_has_null_e164(db: Path) -> None:
    """A withheld caller has e164 null and is challenged."""
    result = check_json(db, "anonymous")
    assert (result["e164"], result["category"], result["route"]) == (None, "withheld", "challenge")


def test_check_human_output_explains(db: Path) -> None:
    """Without --json, check prints the route and one line per reason."""
    run(db, "list", "add", "0120", "--prefix", "--block")
    result = run(db, "check", "0120-999-999")
    assert result.exit_code == 0
    assert "→ voicemail  (rule: prefix-block)" in result.output
    assert "  - longest prefix rule block prefix +81120 (manual) → voicemail" in result.output


def test_prefix_allow_and_remove(db: Path) -> None:
    """A prefix rule applies to every number under it until removed."""
    assert run(db, "list", "add", "0120-121", "--prefix", "--allow").exit_code == 0
    assert check_json(db, "0120-121-852")["route"] == "staff"
    removed = run(db, "list", "remove", "0120-121", "--prefix")
    assert removed.exit_code == 0 and "removed allow prefix +81120121" in removed.output
    assert check_json(db, "0120-121-852")["route"] == "challenge"


def test_expired_entry_is_ignored(db: Path) -> None:
    """An entry past its expiry no longer applies, and the reasons say so."""
    assert run(db, "list", "add", "03-1234-5678", "--block", "--expires", "2d").exit_code == 0
    assert check_json(db, "03-1234-5678")["route"] == "voicemail"
    later = check_json(db, "03-1234-5678", "--at", "2099-01-01")
    assert later["route"] == "staff"
    assert any("ignored expired" in r for r in later["reasons"])  # type: ignore[union-attr]


def test_list_show_json(db: Path) -> None:
    """list show --json lists every entry with its fields."""
    run(db, "list", "add", "090-1234-5678", "--allow", "--label", "山田さん", "--note", "customer")
    result = run(db, "list", "show", "--json")
    assert result.exit_code == 0
    [entry] = json.loads(result.stdout)
    assert entry["number"] == "+819012345678" and entry["label"] == "山田さん"
    assert entry["kind"] == "allow" and entry["source"] == "manual" and entry["note"] == "customer"


def test_import_export_round_trip(db: Path, tmp_path: Path) -> None:
    """Exported CSV imports back into a new database unchanged."""
    csv_in = tmp_path / "in.csv"
    csv_in.write_text(
        "number,kind,prefix,label\n0120-121-852,block,,Tele Sales\n0120,block,yes,\n"
        "090-1234-5678,allow,no,Customer\n",
        encoding="utf-8",
    )
    result = run(db, "list", "import", str(csv_in))
    assert result.exit_code == 0, result.output
    assert "imported 3 entries (3 new, 0 replaced)" in result.output
    out = tmp_path / "out.csv"
    assert run(db, "list", "export", str(out)).exit_code == 0
    other = tmp_path / "other.db"
    assert run(other, "list", "import", str(out)).exit_code == 0
    a = json.loads(run(db, "list", "show", "--json").stdout)
    b = json.loads(run(other, "list", "show", "--json").stdout)
    strip = lambda rows: [(r["number"], r["kind"], r["prefix"], r["label"]) for r in rows]  # noqa: E731
    assert strip(a) == strip(b) and len(a) == 3


def test_import_bad_rows_all_or_nothing(db: Path, tmp_path: Path) -> None:
    """A file with a bad row imports nothing and names the line; --skip-bad imports the rest."""
    csv_in = tmp_path / "bad.csv"
    csv_in.write_text("number,kind\n0120-121-852,block\nnot-a-number,block\n", encoding="utf-8")
    result = run(db, "list", "import", str(csv_in))
    assert result.exit_code == 2
    assert f"{csv_in}:3:" in result.output
    assert "1 of 2 rows rejected; nothing imported" in result.output
    assert json.loads(run(db, "list", "show", "--json").stdout) == []
    partial = run(db, "list", "import", str(csv_in), "--skip-bad")
    assert partial.exit_code == 0 and "1 rejected rows skipped" in partial.output
    assert len(json.loads(run(db, "list", "show", "--json").stdout)) == 1


def _numbers_csv(path: Path, rows: int) -> Path:
    with path.open("w", encoding="utf-8") as out:
        out.write("number,kind,label\n")
        for i in range(rows):
            out.write(f"+8190{10_000_000 + 7 * i},block,Caller {i}\n")
    return path


@pytest.mark.slow  # seconds of waiting: the full suite runs it, the fast path skips it
def test_import_memory_does_not_grow_with_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """list import streams: the Python heap's peak for 10,000 rows is about that for 2,000."""
    monkeypatch.setattr(cli.lists, "IMPORT_BATCH", 200)
    assert run(tmp_path / "warm.db", "list", "import", str(_numbers_csv(tmp_path / "w", 50)))
    peaks = []
    for rows in (2000, 10000):
        path = _numbers_csv(tmp_path / f"{rows}.csv", rows)
        tracemalloc.start()
        try:
            result = run(tmp_path / f"{rows}.db", "list", "import", str(path))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert result.exit_code == 0, result.output
        assert f"imported {rows} entries ({rows} new, 0 replaced)" in result.output
        peaks.append(peak)
    # Holding every row (about 400 bytes each) would take 5 times as much for 5 times the rows.
    assert peaks[1] < 1.5 * peaks[0], peaks


def test_import_rejects_repeated_keys_by_line(db: Path, tmp_path: Path) -> None:
    """A number that appears twice names the first line; --skip-bad keeps the first row."""
    csv_in = tmp_path / "twice.csv"
    csv_in.write_text(
        "number,kind,prefix,label\n0312345678,allow,,first\n0120,block,1,x\n"
        "+81312345678,block,,again\n",
        encoding="utf-8",
    )
    result = run(db, "list", "import", str(csv_in))
    assert result.exit_code == 2
    assert (
        f"{csv_in}:4: duplicate of line 2 (same number and prefix): +81312345678" in result.stderr
    )
    assert "1 of 3 rows rejected; nothing imported" in result.output
    assert json.loads(run(db, "list", "show", "--json").stdout) == []
    partial = run(db, "list", "import", str(csv_in), "--skip-bad")
    assert partial.exit_code == 0, partial.output
    assert "imported 2 entries (2 new, 0 replaced), 1 rejected rows skipped" in partial.output
    shown = json.loads(run(db, "list", "show", "--json").stdout)
    assert [(e["number"], e["label"]) for e in shown] == [
        ("+81120", "x"),
        ("+81312345678", "first"),
    ]


def test_import_unclosed_quote_keeps_the_rows_after_it(db: Path, tmp_path: Path) -> None:
    """An unclosed quote is rejected by line; with --skip-bad every row after it is imported."""
    csv_in = tmp_path / "quote.csv"
    csv_in.write_text(
        'number,kind,label\n0312345678,allow,"Tanaka\n0312345679,allow,Sato\n'
        '0312345670,block,"x"\n',
        encoding="utf-8",
    )
    result = run(db, "list", "import", str(csv_in), "--skip-bad")
    assert result.exit_code == 0, result.output
    assert f"{csv_in}:2: a quote is not closed (it runs into line 3" in result.stderr
    assert "imported 2 entries" in result.output
    shown = json.loads(run(db, "list", "show", "--json").stdout)
    assert [e["number"] for e in shown] == ["+81312345670", "+81312345679"]


def test_import_dry_run_changes_nothing(db: Path, tmp_path: Path) -> None:
    """--dry-run checks the whole file (repeats too); it neither creates nor changes a database."""
    csv_in = tmp_path / "in.csv"
    csv_in.write_text("number,kind\n0312345678,allow\n0312345679,allow\n", encoding="utf-8")
    result = run(db, "list", "import", str(csv_in), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "2 rows would be imported; nothing changed (--dry-run)" in result.output
    assert not db.exists()
    csv_in.write_text("number,kind\n0312345678,allow\n0312345678,block\n", encoding="utf-8")
    again = run(db, "list", "import", str(csv_in), "--dry-run")
    assert again.exit_code == 2 and "duplicate of line 2" in again.stderr
    assert not db.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("list", "add", "not-a-number", "--block"), "'not-a-number' is not a phone number"),
        (("list", "add", "0120-121-852"), "say which list: --allow or --block"),
        (("list", "add", "0120-121-852", "--block", "--expires", "soon"), "'soon' is not a time"),
        (
            ("list", "add", "0120-121-852", "--block", "--expires", "2000-01-01"),
            "--expires 2000-01-01: that time has already passed",
        ),
        (("list", "remove", "0120-121-852"), "+81120121852 is on no list"),
        (("list", "import", "/nonexistent/file.csv"), "/nonexistent/file.csv: no such file"),
        (("calls", "--since", "yesterday-ish"), "'yesterday-ish' is not a time"),
        (("check", "0120", "--at", "noon"), "'noon' is not a time"),
    ],
)
def test_input_errors(db: Path, args: tuple[str, ...], message: str) -> None:
    """Bad input: one line on stderr naming the problem, exit code 2, nothing changed."""
    assert run(db, "init").exit_code == 0
    result = run(db, *args)
    assert result.exit_code == 2, result.output
    assert f"screener: error: {message}" in result.output
    assert "Traceback" not in result.output
    assert json.loads(run(db, "list", "show", "--json").stdout) == []


def test_corrupt_database(tmp_path: Path) -> None:
    """A file that is not a screener database: exit 4, one line, and the file is untouched."""
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite at all" * 100)
    before = bad.read_bytes()
    result = run(bad, "check", "0120-121-852")
    assert result.exit_code == 4
    assert "screener: error:" in result.output and "Traceback" not in result.output
    assert bad.read_bytes() == before


def test_database_in_missing_directory(tmp_path: Path) -> None:
    """A database path whose folder does not exist is a clear error, exit 4."""
    result = run(
        tmp_path / "no" / "such" / "dir" / "x.db", "list", "add", "0120-121-852", "--block"
    )
    assert result.exit_code == 4
    assert "screener: error:" in result.output


def test_bad_config(db: Path, tmp_path: Path) -> None:
    """A bad config key: exit 3 and a message naming the file and key."""
    config = tmp_path / "bad.toml"
    config.write_text("[policy]\nallow = 'ring'\n")
    result = run(db, "check", "0120", "--config", str(config))
    assert result.exit_code == 3
    assert f"screener: error: {config}: policy.allow: expected one of" in result.output


def test_calls_empty_and_json(db: Path) -> None:
    """calls on a fresh database lists nothing, as a table or as JSON."""
    assert json.loads(run(db, "calls", "--json").stdout) == []
    assert "0 calls" in run(db, "calls").output


def test_forget_learned_keeps_manual(db: Path) -> None:
    """list forget removes learned entries only."""
    run(db, "list", "add", "0120-121-852", "--block")
    result = run(db, "list", "forget")
    assert result.exit_code == 0 and "forgot 0 learned entries" in result.output
    assert len(json.loads(run(db, "list", "show", "--json").stdout)) == 1


def test_caller_data_cannot_drive_the_terminal(db: Path) -> None:
    """Control characters in labels are shown escaped in tables, never raw."""
    run(db, "list", "add", "0120-121-852", "--block", "--label", "evil\x1b[2Jlabel")
    result = run(db, "list", "show")
    assert "\x1b[2J" not in result.output


def test_created_files_are_private(db: Path, tmp_path: Path) -> None:
    """The database and exports screener creates are readable by its user only."""
    previous = os.umask(0o022)
    try:
        assert run(db, "list", "add", "0120-121-852", "--block").exit_code == 0
        out = tmp_path / "export.csv"
        assert run(db, "list", "export", str(out)).exit_code == 0
    finally:
        os.umask(previous)
    assert db.stat().st_mode & 0o077 == 0
    assert out.stat().st_mode & 0o077 == 0


@pytest.mark.parametrize(
    "args",
    [("check", "0120-121-852"), ("calls",), ("list", "show"), ("list", "export")],
)
def test_reading_commands_never_create_a_database(db: Path, args: tuple[str, ...]) -> None:
    """A mistyped --db is not created by a command that only reads; it warns and reads empty."""
    result = run(db, *args)
    assert result.exit_code == 0, result.output
    assert f"screener: warning: no database at {db}" in result.stderr
    assert not db.exists()


@pytest.mark.parametrize("args", [("list", "remove", "0120-121-852"), ("list", "forget")])
def test_changing_commands_need_an_existing_database(db: Path, args: tuple[str, ...]) -> None:
    """Removing from a database that does not exist is an error (exit 4), not a new file."""
    result = run(db, *args)
    assert result.exit_code == 4
    assert "does not exist" in result.output and "screener init" in result.output
    assert not db.exists()


def test_failed_export_leaves_no_partial_file(tmp_path: Path) -> None:
    """An export that fails on the database leaves neither the file nor a .partial behind."""
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"not a database" * 100)
    out = tmp_path / "out.csv"
    result = run(bad, "list", "export", str(out))
    assert result.exit_code == 4
    assert list(tmp_path.iterdir()) == [bad]


def test_doctor_says_ok_for_a_healthy_database(db: Path) -> None:
    """`screener doctor` runs the full integrity check and says ok, with the entry count."""
    assert run(db, "list", "add", "0312345678", "--block").exit_code == 0
    result = run(db, "doctor")
    assert result.exit_code == 0, result.output
    assert "integrity ok (1 list entries)" in result.output


def test_doctor_reports_damage_with_exit_code_4(db: Path) -> None:
    """Damaged pages that opening does not read are found by doctor: exit code 4, findings."""
    lines = "".join(f"+8131234{i:04d},block\n" for i in range(3000))
    csv = db.with_name("rows.csv")
    csv.write_text("number,kind\n" + lines, encoding="utf-8")
    assert run(db, "list", "import", str(csv)).exit_code == 0
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    first, count = leaf_pages(db, 3)
    data = bytearray(db.read_bytes())
    data[(first - 1) * 4096 : (first - 1 + count) * 4096] = b"\xa5" * (count * 4096)
    db.write_bytes(bytes(data))
    assert run(db, "check", "0312345678").exit_code == 0  # opening stays cheap
    result = run(db, "doctor")
    assert result.exit_code == 4
    assert "failed its integrity check" in result.output


def test_doctor_never_creates_a_database(db: Path) -> None:
    """doctor on a missing file is an error (exit 4) and makes no file."""
    result = run(db, "doctor")
    assert result.exit_code == 4
    assert not db.exists()


@pytest.mark.parametrize(
    ("number", "covers"),
    [
        ("0", "prefix +81 covers every number of country code +81 (JP)"),
        ("+8", "prefix +8 covers every number of country code +81 (JP), +82 (KR)"),
        ("09", "prefix +819 covers about 16% of the fixed-line and mobile numbers of JP"),
    ],
)
def test_broad_prefix_needs_force(db: Path, number: str, covers: str) -> None:
    """A prefix rule over a whole country code or >10 % of the home plan needs --force."""
    result = run(db, "list", "add", number, "--prefix", "--block")
    assert result.exit_code == 2
    assert f"screener: error: {covers}" in result.stderr
    assert result.stderr.endswith("; add --force if that is what you mean\n")
    assert json.loads(run(db, "list", "show", "--json").stdout) == []
    forced = run(db, "list", "add", number, "--prefix", "--block", "--force")
    assert forced.exit_code == 0, forced.output
    assert len(json.loads(run(db, "list", "show", "--json").stdout)) == 1


def test_narrow_prefix_needs_no_force(db: Path) -> None:
    """An ordinary prefix rule (every 0120 toll-free number) is added without --force."""
    result = run(db, "list", "add", "0120", "--prefix", "--block")
    assert result.exit_code == 0 and "added block prefix +81120" in result.output


def test_allow_and_block_together_is_a_usage_error(db: Path) -> None:
    """--allow with --block is refused (exit 2), not decided by whichever came last."""
    result = run(db, "list", "add", "0120-121-852", "--allow", "--block")
    assert result.exit_code == 2
    assert "--allow and --block cannot be used together" in result.output
    assert not db.exists()


def test_init_without_a_config_file_says_so(db: Path) -> None:
    """init names the config file, or says there is none (not "config: configuration")."""
    result = run(db, "init")
    assert result.exit_code == 0
    assert "config: no config file (defaults and SCREENER_* environment)" in result.output


def test_reading_an_empty_database_names_the_real_fix(db: Path) -> None:
    """A zero-length database file: the error names `screener init`, not a flag that is not."""
    db.touch()
    for args in (("check", "0120"), ("calls",), ("list", "show"), ("list", "export")):
        result = run(db, *args)
        assert result.exit_code == 4, result.output
        assert "--readonly" not in result.output
        assert f"database {db} is empty; create it with `screener init`" in result.stderr
    assert db.stat().st_size == 0


def test_environment_error_names_the_variable(db: Path) -> None:
    """A bad SCREENER_* value is reported against the variable; INFO is a level."""
    result = run(db, "check", "0120", env={"SCREENER_LOG_LEVEL": "loud"})
    assert result.exit_code == 3
    assert "screener: error: environment variable SCREENER_LOG_LEVEL: log.level:" in result.stderr
    assert run(db, "check", "0120", env={"SCREENER_LOG_LEVEL": "INFO"}).exit_code == 0


def test_import_broad_prefix_needs_force(db: Path, tmp_path: Path) -> None:
    """A CSV prefix rule over a whole country code is rejected by line unless --force."""
    csv_in = tmp_path / "broad.csv"
    csv_in.write_text("number,kind,prefix\n0,block,1\n0120,block,1\n", encoding="utf-8")
    result = run(db, "list", "import", str(csv_in))
    assert result.exit_code == 2
    assert (
        f"{csv_in}:2: prefix +81 covers every number of country code +81 (JP)"
        " (import with --force to accept it)" in result.stderr
    )
    forced = run(db, "list", "import", str(csv_in), "--force")
    assert forced.exit_code == 0, forced.output
    shown = json.loads(run(db, "list", "show", "--json").stdout)
    assert [e["number"] for e in shown] == ["+81", "+81120"]


def test_import_again_counts_replaced_entries(db: Path, tmp_path: Path) -> None:
    """A second import replaces entries with the same key and says how many were new."""
    csv_in = tmp_path / "in.csv"
    csv_in.write_text("number,kind\n0312345678,allow\n0312345679,block\n", encoding="utf-8")
    assert "(2 new, 0 replaced)" in run(db, "list", "import", str(csv_in)).output
    csv_in.write_text("number,kind\n0312345678,block\n0312345670,block\n", encoding="utf-8")
    assert "imported 2 entries (1 new, 1 replaced)" in run(db, "list", "import", str(csv_in)).output
    shown = {e["number"]: e["kind"] for e in json.loads(run(db, "list", "show", "--json").stdout)}
    assert shown == {"+81312345678": "block", "+81312345679": "block", "+81312345670": "block"}
