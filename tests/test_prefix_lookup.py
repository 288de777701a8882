"""The lookup probes only the prefixes a rule could be (migration 9, ``prefix_heads``).

Its answers must be the old lookup's, which probed every prefix of the number: the same rows
in the same order, checked on tables and on generated lists. And since the heads are read in
the lookup's own statement, a rule added by another connection (the CLI, the web console,
sync) counts for the very next lookup.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from screener.policy import Entry, ListKind
from screener.store import MIGRATIONS, UPSERT_ENTRY, Store, entry_params
from screener.store.entries import _lookup, _prefixes


def _schema(db: sqlite3.Connection, upto: int = len(MIGRATIONS)) -> None:
    for statements in MIGRATIONS[:upto]:
        for statement in statements:
            db.execute(statement)


@pytest.fixture(scope="module")
def memdb() -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(":memory:", isolation_level=None)
    _schema(db)
    yield db
    db.close()


def _add(db: sqlite3.Connection, number: str, *, prefix: bool, kind: str = "block") -> None:
    db.execute(UPSERT_ENTRY, entry_params(Entry(ListKind(kind), number, prefix)))


def _same_as_every_prefix(db: sqlite3.Connection, number: str) -> list[Entry]:
    found = _lookup(db, number)
    assert found == _lookup(db, number, _prefixes(number))
    return found


def test_only_the_prefixes_rules_could_be_are_probed(memdb: sqlite3.Connection) -> None:
    """Rules of several heads and lengths: each number finds exactly what every prefix found,
    and the statement names only the number and the prefixes a rule's head allows."""
    memdb.execute("DELETE FROM entries")
    for number in ("+7", "+86", "+81120", "+815012345", "+8190"):
        _add(memdb, number, prefix=True)
    _add(memdb, "+81312345678", prefix=False, kind="allow")
    _add(memdb, "+81312345678", prefix=True)  # a rule on a whole number
    traced: list[str] = []
    memdb.set_trace_callback(traced.append)
    try:
        got = _lookup(memdb, "+81312345678")
    finally:
        memdb.set_trace_callback(None)
    assert [(e.number, e.prefix) for e in got] == [("+81312345678", False), ("+81312345678", True)]
    cases = {
        "+81312345678": ["+81312345678", "+81312345678"],
        "+815012345678": ["+815012345"],
        "+819012345678": ["+8190"],
        "+81120123456": ["+81120"],
        "+74951234567": ["+7"],
        "+861012345678": ["+86"],
        "+12125550100": [],
        "+8": [],
    }
    for number, numbers in cases.items():
        assert [e.number for e in _same_as_every_prefix(memdb, number)] == numbers, number
    assert _lookup(memdb, "+") == _lookup(memdb, "+", _prefixes("+")) == []


def test_a_rule_of_one_character_is_never_a_prefix(memdb: sqlite3.Connection) -> None:
    """As before: prefixes start at two characters (``+8``), whatever a row holds."""
    memdb.execute("DELETE FROM entries")
    _add(memdb, "+", prefix=True)
    assert _same_as_every_prefix(memdb, "+81312345678") == []


_NUMBERS = st.text(alphabet="0123456789", min_size=0, max_size=7).map(lambda d: "+81" + d)


@settings(max_examples=20, derandomize=True, deadline=None)
@given(
    rules=st.lists(st.tuples(_NUMBERS, st.booleans()), max_size=8),
    wanted=st.lists(_NUMBERS, min_size=1, max_size=4),
)
def test_answers_are_every_prefix_lookups(
    memdb: sqlite3.Connection, rules: list[tuple[str, bool]], wanted: list[str]
) -> None:
    """Any list of rules and exact entries, any numbers: the same entries, in the same order
    (rules deleted between examples leave their heads behind, which must not matter)."""
    memdb.execute("DELETE FROM entries")
    for number, prefix in rules:
        _add(memdb, number, prefix=prefix)
    for number in wanted + [n for n, _ in rules]:
        _same_as_every_prefix(memdb, number)


@pytest.fixture
async def reader(tmp_path: Path) -> AsyncIterator[tuple[Store, Path]]:
    path = tmp_path / "screener.db"
    async with Store.open(path):
        pass
    async with Store.open(path, readonly=True, loop_lookups=True) as store:
        yield store, path


async def test_a_rule_added_elsewhere_counts_for_the_next_lookup(
    reader: tuple[Store, Path],
) -> None:
    """Another connection (as the CLI or the console would) adds a rule of a head and length
    never seen: the reader's next lookup finds it; deleted, the next one does not."""
    store, path = reader
    assert await store.lookup("+815012345678") == []
    other = sqlite3.connect(path, isolation_level=None)
    try:
        _add(other, "+8150123", prefix=True)
        assert [e.number for e in await store.lookup("+815012345678")] == ["+8150123"]
        other.execute("DELETE FROM entries WHERE number = '+8150123'")
        assert await store.lookup("+815012345678") == []
        # A rule's number changed in place (no upsert does this; raw SQL might).
        _add(other, "+8199", prefix=True)
        other.execute("UPDATE entries SET number = '+8150' WHERE number = '+8199'")
        assert [e.number for e in await store.lookup("+815012345678")] == ["+8150"]
        other.execute("UPDATE entries SET prefix = 0 WHERE number = '+8150'")
        other.execute("UPDATE entries SET prefix = 1 WHERE number = '+8150'")
        assert [e.number for e in await store.lookup("+815012345678")] == ["+8150"]
    finally:
        other.close()
    assert store.loop_fallbacks == 0


async def test_the_migration_finds_the_rules_already_there(tmp_path: Path) -> None:
    """A database of schema 8 with prefix rules: after migration 9 its rules are found."""
    path = tmp_path / "old.db"
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("BEGIN")  # one commit (one fsync), not one per statement
        _schema(db, upto=8)
        db.execute("PRAGMA user_version = 8")
        _add(db, "+81120", prefix=True)
        _add(db, "+8150123", prefix=True, kind="allow")
        db.execute("COMMIT")
    finally:
        db.close()
    async with Store.open(path, create=False) as store:
        assert [e.number for e in await store.lookup("+81120123456")] == ["+81120"]
        assert [e.number for e in await store.lookup("+815012345678")] == ["+8150123"]
