"""screener.agentstatus: the report file, and what the console may conclude from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from screener.agentstatus import STALE_AFTER, Report, State, judge, read, remove, status_path, write


@pytest.mark.parametrize(
    ("report", "age", "state"),
    [
        (None, 0.0, State.NOT_RUNNING),
        (Report(ami=True, at=1000.0), 0.0, State.CONNECTED),
        (Report(ami=True, at=1000.0), STALE_AFTER, State.CONNECTED),
        (Report(ami=True, at=1000.0), STALE_AFTER + 1, State.STALE),
        (Report(ami=False, at=1000.0), 5.0, State.DISCONNECTED),
        (Report(ami=False, at=1000.0), STALE_AFTER + 1, State.STALE),
    ],
)
def test_judge(report: Report | None, age: float, state: State) -> None:
    assert judge(report, 1000.0 + age) is state


def test_write_read_remove(tmp_path: Path) -> None:
    db = tmp_path / "screener.db"
    assert read(db) is None
    write(db, True, 1234.5)
    assert status_path(db) == tmp_path / "screener.db.agent"
    assert read(db) == Report(ami=True, at=1234.5)
    write(db, False, 1240.0)
    assert read(db) == Report(ami=False, at=1240.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["screener.db.agent"]  # no temp left
    remove(db)
    remove(db)  # twice is fine
    assert read(db) is None


@pytest.mark.parametrize(
    "text", ["", "{", "[]", '{"ami": 1, "at": 5}', '{"ami": true}', '{"ami": true, "at": true}']
)
def test_a_report_that_is_not_one_reads_as_none(tmp_path: Path, text: str) -> None:
    db = tmp_path / "screener.db"
    status_path(db).write_text(text)
    assert read(db) is None
