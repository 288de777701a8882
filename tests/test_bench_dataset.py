"""The bench's list databases (bench/dataset.py): SQLite's own row generator writes exactly the
rows of the reference generator ``_rows``, in the same order, into an ordinary screener file."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from bench import dataset
from bench.dataset import Layout

COLUMNS = "kind, number, prefix, label, source, created_at, expires_at, note, hits, last_seen"


class BigLayout(Layout):
    """The five-block layout of 100 M entries, at a size a test can build."""

    @property
    def big(self) -> bool:
        return True


def _built(path: Path, layout: Layout) -> sqlite3.Connection:
    asyncio.run(dataset._create_schema(path))
    dataset._fill(path, layout, log=lambda _: None)
    return sqlite3.connect(path)


def _schema(db: sqlite3.Connection) -> list[tuple[str, str]]:
    return db.execute(
        "SELECT name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_stat%' ORDER BY name"
    ).fetchall()


@pytest.mark.slow  # builds two databases: about 0.3 s each
@pytest.mark.parametrize("layout", [Layout(2_345), BigLayout(2_345)], ids=["small", "big"])
def test_sql_build_writes_the_reference_rows(tmp_path: Path, layout: Layout) -> None:
    db = _built(tmp_path / "built.db", layout)
    got = db.execute(f"SELECT {COLUMNS} FROM entries ORDER BY id").fetchall()  # noqa: S608  # constant columns
    assert got == list(dataset._rows(layout))
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    # The indexes and triggers dropped for the build are all back, as the migrations made them.
    asyncio.run(dataset._create_schema(tmp_path / "plain.db"))
    assert _schema(db) == _schema(sqlite3.connect(tmp_path / "plain.db"))
    # The lookup's prefix_heads (migration 9) knows every prefix rule, as its triggers would.
    heads = "SELECT DISTINCT substr(number, 1, 4), length(number) FROM entries WHERE prefix = 1"
    assert set(db.execute("SELECT head, length FROM prefix_heads").fetchall()) == set(
        db.execute(heads).fetchall()
    )
    # And list_counts (migration 10) the lists' sizes, as its triggers would.
    counted = "SELECT kind, source, count(*) FROM entries GROUP BY kind, source"
    assert set(db.execute("SELECT kind, source, n FROM list_counts").fetchall()) == set(
        db.execute(counted).fetchall()
    )
