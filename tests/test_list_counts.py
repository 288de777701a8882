"""The lists' sizes kept by triggers (migration 10, ``list_counts``).

The metrics' gauge, the start-up line and ``screener doctor`` read these few rows instead of
scanning every entry, so they must equal a real count after every kind of write: an insert, an
upsert that changes kind or source (or changes neither), a delete, a bulk import, writes by
another connection, and a database migrated from schema 9 with entries already in it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from screener.cli import main
from screener.policy import Entry, ListKind
from screener.store import MIGRATIONS, UPSERT_ENTRY, entry_params
from screener.store.schema import COUNT_LISTS


def _memdb(upto: int = len(MIGRATIONS)) -> sqlite3.Connection:
    db = sqlite3.connect(":memory:", isolation_level=None)
    for statements in MIGRATIONS[:upto]:
        for statement in statements:
            db.execute(statement)
    return db


def _kept(db: sqlite3.Connection) -> dict[tuple[str, str], int]:
    return {
        (k, s): n for k, s, n in db.execute("SELECT kind, source, n FROM list_counts WHERE n > 0")
    }


def _counted(db: sqlite3.Connection) -> dict[tuple[str, str], int]:
    return {
        (k, s): n
        for k, s, n in db.execute(
            "SELECT kind, source, count(*) FROM entries GROUP BY kind, source"
        )
    }


def _upsert(db: sqlite3.Connection, number: str, kind: str, source: str) -> None:
    db.execute(UPSERT_ENTRY, entry_params(Entry(ListKind(kind), number, False, source=source)))


_writes = st.lists(
    st.tuples(
        st.sampled_from(["upsert", "delete", "relabel"]),
        st.sampled_from(["+8190000000" + str(i) for i in range(6)]),
        st.sampled_from(["allow", "block"]),
        st.sampled_from(["manual", "learned", "called", "import"]),
    ),
    max_size=40,
)


@settings(max_examples=25, deadline=None)
@given(writes=_writes)
def test_the_kept_counts_are_a_real_count_after_any_writes(
    writes: list[tuple[str, str, str, str]],
) -> None:
    """Upserts (new rows, or kind/source changed or not), deletes and label-only updates in
    any order: the kept counts equal a GROUP BY count of the entries."""
    db = _memdb()
    try:
        for op, number, kind, source in writes:
            if op == "upsert":
                _upsert(db, number, kind, source)
            elif op == "delete":
                db.execute("DELETE FROM entries WHERE number = ?", (number,))
            else:
                db.execute("UPDATE entries SET label = 'x' WHERE number = ?", (number,))
        assert _kept(db) == _counted(db)
    finally:
        db.close()


def test_a_plain_update_of_kind_or_source_moves_the_count() -> None:
    """An UPDATE that is not an upsert (raw SQL, another program) moves the row between
    counts; one that sets the same values leaves them."""
    db = _memdb()
    try:
        _upsert(db, "+819011112222", "block", "manual")
        db.execute("UPDATE entries SET kind = 'allow', source = 'learned'")
        assert _kept(db) == {("allow", "learned"): 1}
        db.execute("UPDATE entries SET kind = 'allow'")
        assert _kept(db) == {("allow", "learned"): 1}
    finally:
        db.close()


def test_the_migration_counts_the_entries_already_there(tmp_path: Path) -> None:
    """A database of schema 9 with entries: migration 10 starts the counts from them."""
    db = _memdb(upto=9)
    try:
        for i in range(5):
            _upsert(db, f"+81901111000{i}", "block", "manual")
        _upsert(db, "+819022220000", "allow", "learned")
        for statement in MIGRATIONS[9]:
            db.execute(statement)
        assert _kept(db) == {("block", "manual"): 5, ("allow", "learned"): 1}
        _upsert(db, "+819022220001", "allow", "learned")
        assert _kept(db) == _counted(db)
    finally:
        db.close()


def test_count_lists_refills_after_a_write_with_the_triggers_off() -> None:
    """What a snapshot's swap and the bench's builder do: rows written with no trigger, then
    ``COUNT_LISTS`` over an emptied table gives the real count."""
    db = _memdb()
    try:
        db.execute("DROP TRIGGER list_counts_insert")
        _upsert(db, "+819033330000", "block", "manual")
        assert _kept(db) == {}
        db.execute("DELETE FROM list_counts")
        db.execute(COUNT_LISTS)
        assert _kept(db) == {("block", "manual"): 1}
    finally:
        db.close()


def test_import_and_doctor_agree_and_recount_repairs(tmp_path: Path) -> None:
    """After `screener list import`, doctor's recount agrees with the kept counts; a count
    broken behind the store's back is reported, and `doctor --recount` puts it right."""
    db_path = tmp_path / "s.db"
    csv = tmp_path / "in.csv"
    csv.write_text(
        "kind,number,prefix,label\n"
        + "".join(f"block,+8190444400{i:02d},0,x\n" for i in range(30))
        + "allow,+81312345678,0,office\n"
    )
    runner = CliRunner()
    env = {"SCREENER_DB": str(db_path)}
    assert runner.invoke(main, ["init"], env=env).exit_code == 0
    imported = runner.invoke(main, ["list", "import", str(csv)], env=env)
    assert imported.exit_code == 0, imported.output
    ok = runner.invoke(main, ["doctor"], env=env)
    assert ok.exit_code == 0, ok.output
    assert "(31 list entries)" in ok.output
    assert "differ" not in ok.output
    other = sqlite3.connect(db_path, isolation_level=None)
    try:
        other.execute("UPDATE list_counts SET n = n + 7")
    finally:
        other.close()
    broken = runner.invoke(main, ["doctor"], env=env)
    assert broken.exit_code == 0
    assert "doctor --recount" in broken.output
    fixed = runner.invoke(main, ["doctor", "--recount"], env=env)
    assert fixed.exit_code == 0, fixed.output
    again = runner.invoke(main, ["doctor"], env=env)
    assert "differ" not in again.output
    check = sqlite3.connect(db_path)
    try:
        assert (
            _kept(check)
            == _counted(check)
            == {
                ("block", "import:in.csv"): 30,
                ("allow", "import:in.csv"): 1,
            }
        )
    finally:
        check.close()
