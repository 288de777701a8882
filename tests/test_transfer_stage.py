"""The import's staging table (screener/store.py ImportStage): rows staged many to a
statement, the first row of each key applied, the rest reported as repeats."""

from __future__ import annotations

import datetime as dt

from screener.policy import Entry, ListKind
from screener.store import Store
from screener.transfer import Staged

NOW = dt.datetime(2026, 5, 1, 9, 30, tzinfo=dt.UTC)
EXPIRES = dt.datetime(2030, 12, 31, tzinfo=dt.UTC)


def _row(line: int, number: str, *, label: str = "", kind: str = "block") -> Staged:
    return (line, kind, number, 0, label, "import:test", EXPIRES.timestamp(), "a note")


async def test_staged_rows_are_applied_first_of_each_key() -> None:
    """1,234 rows in uneven batches (some 500 to a statement, some one by one), a repeated
    key and an entry already in the list: the first row of each key wins, repeats are
    counted with the line of the first, and the old entry is replaced."""
    async with Store.open(":memory:") as store:
        old = Entry(ListKind.ALLOW, "+81300000005", False, "old", "manual", NOW)
        await store.add(old)
        rows = [_row(line, f"+813{line:08d}", label=f"row {line}") for line in range(2, 1236)]
        rows.append(_row(1236, "+81300000010", label="a repeat of line 10", kind="allow"))
        async with store.stage_import() as stage:
            for start, size in ((0, 1001), (1001, 3), (1004, 232)):
                await stage.add_rows(rows[start : start + size])
            assert stage.staged == 1235
            count, repeats = await stage.duplicates(limit=10)
            assert (count, repeats) == (1, [(1236, 10, "+81300000010", False)])
            result = await stage.apply(NOW + dt.timedelta(hours=1))
        assert (result.added, result.replaced) == (1233, 1)
        assert await store.count_entries() == 1234
        first, replaced, last = [
            (await store.lookup(number))[0]
            for number in ("+81300000010", "+81300000005", "+81300001235")
        ]
    assert (first.kind, first.label, first.note) == (ListKind.BLOCK, "row 10", "a note")
    assert (replaced.label, replaced.kind, replaced.source) == (
        "row 5",
        ListKind.BLOCK,
        "import:test",
    )
    assert last.label == "row 1235"
    for entry in (first, replaced, last):
        assert entry.created_at == NOW + dt.timedelta(hours=1)
        assert entry.expires_at == EXPIRES
        assert (entry.hits, entry.last_seen) == (0, None)
