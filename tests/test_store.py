"""Tests for screener.store against real SQLite files."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from screener.errors import StoreCorruptError, StoreError, StoreLockedError
from screener.numbers import normalize
from screener.policy import SOURCE_LEARNED, Entry, ListKind, Policy, decide
from screener.store import (
    APPLICATION_ID,
    MIGRATIONS,
    SCHEMA_VERSION,
    CallRecord,
    ImportResult,
    Learning,
    OutcomeResult,
    RecordCall,
    RecordFallback,
    RecordLate,
    SetOutcome,
    SetRecording,
    SetStaffChoice,
    SetVoicemail,
    Store,
    Write,
    entry_from_row,
)

NOW = dt.datetime(2026, 5, 1, 9, 30, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "screener.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[Store]:
    async with Store.open(db_path) as opened:
        yield opened


def block(number: str, *, prefix: bool = False, **kw: object) -> Entry:
    return Entry(ListKind.BLOCK, number, prefix=prefix, created_at=NOW, **kw)  # type: ignore[arg-type]


def allow(number: str, *, prefix: bool = False, **kw: object) -> Entry:
    return Entry(ListKind.ALLOW, number, prefix=prefix, created_at=NOW, **kw)  # type: ignore[arg-type]


def pragma(path: Path, name: str) -> int:
    with sqlite3.connect(path) as conn:
        value = conn.execute(f"PRAGMA {name}").fetchone()[0]
    conn.close()
    return int(value)


def read_bytes(path: Path) -> bytes:
    return path.read_bytes()


def write_bytes(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def call(call_id: str, at: dt.datetime, **kw: object) -> CallRecord:
    fields: dict[str, object] = {
        "call_id": call_id,
        "received_at": at,
        "raw_number": "0312345678",
        "raw_name": "TANAKA",
        "e164": "+81312345678",
        "category": "fixed_line",
        "did": "0501234567",
        "route": "staff",
        "rule": "category",
        "reasons": ("caller +81312345678: fixed_line", "category rule fixed_line → staff"),
        "latency_ms": 3.5,
    }
    fields.update(kw)
    return CallRecord(**fields)  # type: ignore[arg-type]


# --- opening and migrating ---------------------------------------------------------------------


async def test_new_database_is_migrated_and_marked(db_path: Path) -> None:
    """A new file gets every migration, the schema version and screener's application_id."""
    with capture_logs() as logs:
        async with Store.open(db_path) as store:
            assert await store.count_entries() == 0
    assert pragma(db_path, "user_version") == SCHEMA_VERSION
    assert pragma(db_path, "application_id") == APPLICATION_ID
    with sqlite3.connect(db_path) as conn:
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    conn.close()
    assert mode == "wal"
    assert [e["event"] for e in logs] == ["store.migrate"] * SCHEMA_VERSION + ["store.open"]


async def test_reopen_keeps_data_and_does_not_migrate_again(db_path: Path) -> None:
    """Reopening an existing database finds its entries and applies no migration."""
    async with Store.open(db_path) as store:
        await store.add(block("+81312345678"))
    with capture_logs() as logs:
        async with Store.open(db_path, create=False) as store:
            assert [e.number for e in await store.entries()] == ["+81312345678"]
    assert [e["event"] for e in logs] == ["store.open"]


async def test_newer_schema_is_refused(db_path: Path) -> None:
    """A database from a newer screener (higher user_version) raises StoreCorruptError."""
    async with Store.open(db_path):
        pass
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(StoreCorruptError, match="newer"):
        async with Store.open(db_path):
            pass


async def test_random_bytes_file_is_refused_and_untouched(db_path: Path) -> None:
    """A file that is not SQLite raises StoreCorruptError and is left byte for byte as it was."""
    garbage = os.urandom(8192)
    write_bytes(db_path, garbage)
    with pytest.raises(StoreCorruptError, match="not a database"):
        async with Store.open(db_path):
            pass
    assert read_bytes(db_path) == garbage
    assert os.listdir(db_path.parent) == [db_path.name]


async def test_foreign_sqlite_database_is_refused_and_untouched(db_path: Path) -> None:
    """An SQLite database with other tables and no screener application_id is refused."""
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, amount REAL)")
    conn.commit()
    conn.close()
    before = read_bytes(db_path)
    with pytest.raises(StoreCorruptError, match=r"not a screener database.*invoices"):
        async with Store.open(db_path):
            pass
    assert read_bytes(db_path) == before
    assert pragma(db_path, "user_version") == 0


def leaf_pages(db_path: Path, count: int) -> tuple[int, int]:
    """``count`` pages (first page number, count) deep inside the list, past every root page.

    Every table's and index's root page is made by the migrations, before any entry is added,
    so pages past the last root belong to the entries and their index: wiping some in the
    middle of them damages the list without touching what opening a database reads.
    """
    conn = sqlite3.connect(db_path)
    try:
        roots = max(int(r[0]) for r in conn.execute("SELECT rootpage FROM sqlite_master"))
        pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
    finally:
        conn.close()
    assert pages - roots > 4 * count, "too few list pages to damage"
    return (roots + pages) // 2, count


async def test_damaged_database_is_found_by_the_integrity_check(db_path: Path) -> None:
    """Damaged pages: opening stays cheap (no full read) and the integrity check reports them."""
    async with Store.open(db_path) as store:
        await store.import_entries(block(f"+8131234{i:04d}") for i in range(3000))
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    first, count = leaf_pages(db_path, 3)
    data = bytearray(read_bytes(db_path))
    page = 4096
    for offset in range((first - 1) * page, (first - 1 + count) * page):
        data[offset] = 0xA5
    write_bytes(db_path, bytes(data))
    async with Store.open(db_path, readonly=True) as store:
        findings = await store.integrity_check()
        assert findings != "ok" and findings.strip()


async def test_missing_file_without_create(db_path: Path) -> None:
    """With create=False a missing database raises StoreError and no file is made."""
    with pytest.raises(StoreError, match="does not exist") as info:
        async with Store.open(db_path, create=False):
            pass
    assert str(db_path) in str(info.value)
    assert os.listdir(db_path.parent) == []


async def test_missing_directory_names_the_path(tmp_path: Path) -> None:
    """A database in a directory that does not exist raises StoreError naming it and why."""
    path = tmp_path / "nowhere" / "screener.db"
    with pytest.raises(StoreError, match="No such file or directory") as info:
        async with Store.open(path):
            pass
    assert str(path) in str(info.value)


async def test_directory_as_database(tmp_path: Path) -> None:
    """A directory where the database file should be raises StoreError with the OS reason."""
    with pytest.raises(StoreError, match="is a directory"):
        async with Store.open(tmp_path):
            pass


async def test_readonly_reads_but_does_not_write(db_path: Path) -> None:
    """A read-only store answers lookups and turns a write into StoreError."""
    async with Store.open(db_path) as store:
        await store.add(block("+81312345678"))
    async with Store.open(db_path, readonly=True) as store:
        assert len(await store.lookup("+81312345678")) == 1
        with pytest.raises(StoreError, match="readonly"):
            await store.add(block("+81312345679"))


# --- entries -----------------------------------------------------------------------------------


async def test_lookup_finds_exact_and_every_prefix(store: Store) -> None:
    """lookup returns the exact entry and every prefix rule covering the number, nothing else."""
    await store.add(allow("+81312345678"))
    await store.add(block("+813", prefix=True))
    await store.add(allow("+8131234", prefix=True))
    await store.add(block("+81312345678", prefix=True))  # a prefix as long as the number
    await store.add(block("+81312345679"))  # a neighbour
    await store.add(block("+8131234567", prefix=False))  # exact entry for a shorter number
    await store.add(block("+81120", prefix=True))
    found = await store.lookup("+81312345678")
    assert sorted((e.number, e.prefix) for e in found) == [
        ("+813", True),
        ("+8131234", True),
        ("+81312345678", False),
        ("+81312345678", True),
    ]
    assert await store.lookup("+442079460000") == []


async def test_longest_prefix_decides(store: Store) -> None:
    """Fed to decide, the matches of lookup make the longest prefix rule win."""
    await store.add(block("+813", prefix=True))
    await store.add(allow("+8131234", prefix=True))
    caller = normalize("03-1234-5678")
    assert caller.e164 is not None
    decision = decide(caller, await store.lookup(caller.e164), Policy(), NOW)
    assert decision.rule == "prefix-allow"
    assert decision.entry is not None and decision.entry.number == "+8131234"


async def test_lookup_is_one_statement(store: Store) -> None:
    """A lookup of a 16-character number runs exactly one statement (prefixes and all)."""
    statements: list[str] = []
    await store._thread.run(lambda db: db.set_trace_callback(statements.append))
    try:
        await store.lookup("+861234567890123")
    finally:
        await store._thread.run(lambda db: db.set_trace_callback(None))
    assert len(statements) == 1
    assert statements[0].count("?") == 0  # the trace shows the bound values...
    assert "'+861234567890123'" in statements[0]  # ...the number, prefixes made from it


async def test_loop_lookups_find_what_the_thread_finds(store: Store, db_path: Path) -> None:
    """A store with loop_lookups answers on the loop's thread exactly as the database thread."""
    await store.add(allow("+81312345678"))
    await store.add(block("+813", prefix=True))
    await store.add(block("+81312345679"))
    async with Store.open(db_path, readonly=True, loop_lookups=True, mmap_size=1 << 20) as fast:
        for number in ("+81312345678", "+81312345679", "+81399999999", "+442079460000"):
            assert await fast.lookup(number) == await store.lookup(number)
        assert fast.loop_fallbacks == 0
        # A commit made after opening is seen by the next lookup (no read transaction is kept).
        await store.add(block("+81399999999"))
        assert [e.number for e in await fast.lookup("+81399999999")] == ["+813", "+81399999999"]


async def test_loop_lookups_never_wait_for_a_held_write_lock(store: Store, db_path: Path) -> None:
    """Another connection holding BEGIN IMMEDIATE with a write pending: lookups on the loop see
    the committed lists at once, and none has to go to the database thread."""
    await store.add(block("+81312345678"))
    other = sqlite3.connect(db_path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("DELETE FROM entries")
        async with Store.open(db_path, readonly=True, loop_lookups=True) as fast:
            assert [e.number for e in await fast.lookup("+81312345678")] == ["+81312345678"]
            assert fast.loop_fallbacks == 0
    finally:
        other.execute("ROLLBACK")
        other.close()


async def test_busy_loop_lookup_goes_to_the_thread(db_path: Path) -> None:
    """A database out of WAL mode under an exclusive lock: the loop's connection gets busy at
    once (it never sleeps), and the lookup is made on the thread, which waits its timeout."""
    async with Store.open(db_path) as store:
        await store.add(block("+81312345678"))
    other = sqlite3.connect(db_path, isolation_level=None)
    try:
        assert other.execute("PRAGMA journal_mode = DELETE").fetchone()[0] == "delete"
        async with Store.open(db_path, readonly=True, loop_lookups=True, busy_timeout=0.01) as fast:
            other.execute("BEGIN EXCLUSIVE")
            with pytest.raises(StoreLockedError):
                await fast.lookup("+81312345678")
            assert fast.loop_fallbacks == 1
            other.execute("ROLLBACK")
            assert len(await fast.lookup("+81312345678")) == 1
            assert fast.loop_fallbacks == 1
    finally:
        other.close()


async def test_loop_lookups_need_a_readonly_store(db_path: Path) -> None:
    """loop_lookups on a store that writes is refused: its connection would run on the loop."""
    with pytest.raises(ValueError, match="read-only"):
        async with Store.open(db_path, loop_lookups=True):
            pass


async def test_expired_entries_are_returned(store: Store) -> None:
    """lookup returns expired entries too: decide explains that it ignored them."""
    await store.add(block("+81312345678", expires_at=NOW - DAY))
    (found,) = await store.lookup("+81312345678")
    assert found.expires_at == NOW - DAY
    assert not found.is_active(NOW)


async def test_add_replaces_and_returns_previous(store: Store) -> None:
    """add on an existing key replaces the entry in place and returns the one it replaced."""
    first, previous = await store.add(block("+81312345678", label="spam"))
    assert previous is None and first.id is not None
    second, previous = await store.add(allow("+81312345678", label="client"))
    assert previous == first
    assert second.id == first.id and second.kind is ListKind.ALLOW and second.label == "client"
    assert await store.count_entries() == 1


async def test_a_cancelled_count_is_interrupted(store: Store) -> None:
    """The lists' recount (a scan: seconds on a hundred million entries; ``screener doctor``)
    stops when its caller is cancelled, so that nobody waits for it to finish for nobody."""
    await store.import_entries(block(f"+8190{i:08d}") for i in range(3000))
    steps = [0]
    counting = threading.Event()
    slow = [False]

    def progress() -> int:
        steps[0] += 1
        counting.set()
        if slow[0]:
            time.sleep(0.001)  # so that the cancel comes long before the end
        return 0

    await store.run("test", lambda db: db.set_progress_handler(progress, 10))
    assert await store.check_list_counts() == (3000, True)
    whole, steps[0], slow[0] = steps[0], 0, True
    counting.clear()
    task = asyncio.create_task(store.check_list_counts())
    await asyncio.to_thread(counting.wait, 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await store.run("test", lambda db: db.set_progress_handler(None, 0))
    assert 0 < steps[0] < whole  # stopped part way


async def test_entry_round_trips_all_fields(store: Store) -> None:
    """Every field of an entry, timestamps included, comes back as stored (as aware UTC)."""
    jst = dt.timezone(dt.timedelta(hours=9))
    entry = Entry(
        ListKind.BLOCK,
        "+81120",
        prefix=True,
        label="テレアポ",
        source="import",
        created_at=dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=jst),
        expires_at=dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
        note="note, with 'quotes'",
        hits=7,
        last_seen=NOW,
    )
    stored, _ = await store.add(entry)
    assert stored == dataclasses.replace(entry, id=stored.id)
    assert stored.created_at.tzinfo is dt.UTC


async def test_learn_never_overrides_active_manual(store: Store) -> None:
    """learn leaves an active manual entry alone and reports that it stored nothing."""
    manual, _ = await store.add(allow("+81312345678", label="client"))
    learned = block("+81312345678", source=SOURCE_LEARNED)
    assert await store.learn(learned, NOW) is False
    assert await store.lookup("+81312345678") == [manual]


async def test_learn_replaces_learned_and_expired_manual(store: Store) -> None:
    """learn replaces a learned entry, and a manual entry that has expired."""
    await store.add(allow("+81312345678", source=SOURCE_LEARNED))
    assert await store.learn(block("+81312345678", source=SOURCE_LEARNED), NOW)
    (found,) = await store.lookup("+81312345678")
    assert found.kind is ListKind.BLOCK and found.is_learned
    await store.add(allow("+81312345679", expires_at=NOW - DAY))
    assert await store.learn(block("+81312345679", source=SOURCE_LEARNED), NOW)
    (found,) = await store.lookup("+81312345679")
    assert found.is_learned


async def test_learn_refuses_manual_entries(store: Store) -> None:
    """learn only takes learned entries (a programming error otherwise)."""
    with pytest.raises(ValueError, match="learned"):
        await store.learn(block("+81312345678"), NOW)


async def test_remove(store: Store) -> None:
    """remove deletes the entry for a key and returns it; a second remove returns None."""
    stored, _ = await store.add(block("+81120", prefix=True))
    await store.add(block("+81120", prefix=False))  # same number, other key: stays
    assert await store.remove("+81120", True) == stored
    assert await store.remove("+81120", True) is None
    assert [(e.number, e.prefix) for e in await store.entries()] == [("+81120", False)]


async def test_forget_learned(store: Store) -> None:
    """forget_learned deletes learned entries only, all or for one number, and counts them."""
    await store.add(allow("+81312345671", source=SOURCE_LEARNED))
    await store.add(allow("+81312345672", source=SOURCE_LEARNED))
    await store.add(allow("+81312345673", source=SOURCE_LEARNED))
    await store.add(allow("+81312345674"))
    assert await store.forget_learned("+81312345671") == 1
    assert await store.forget_learned("+81312345674") == 0
    assert await store.forget_learned() == 2
    assert [e.number for e in await store.entries()] == ["+81312345674"]


async def test_record_hit(store: Store) -> None:
    """record_hit counts a match and remembers when it was seen."""
    stored, _ = await store.add(block("+81312345678"))
    assert stored.id is not None
    await store.record_hit(stored.id, NOW)
    await store.record_hit(stored.id, NOW + DAY)
    (found,) = await store.lookup("+81312345678")
    assert (found.hits, found.last_seen) == (2, NOW + DAY)


async def test_entries_filters_and_iter_entries(store: Store) -> None:
    """entries filters by kind, source and activity; iter_entries yields the same in chunks."""
    await store.import_entries(
        [
            *(block(f"+8131234{i:04d}") for i in range(0, 50)),
            *(allow(f"+8131234{i:04d}", source=SOURCE_LEARNED) for i in range(50, 80)),
            *(block(f"+8131234{i:04d}", expires_at=NOW - DAY) for i in range(80, 100)),
            block("+8131234", prefix=True),
        ]
    )
    everything = await store.entries()
    assert len(everything) == 101
    assert everything == sorted(everything, key=lambda e: (e.number, e.prefix))
    assert [e async for e in store.iter_entries(chunk=7)] == everything
    assert len(await store.entries(kind=ListKind.ALLOW)) == 30
    assert len(await store.entries(source=SOURCE_LEARNED, kind=ListKind.BLOCK)) == 0
    active = [e async for e in store.iter_entries(active_at=NOW, kind=ListKind.BLOCK, chunk=9)]
    assert active == await store.entries(active_at=NOW, kind=ListKind.BLOCK)
    assert len(active) == 51


# --- import ------------------------------------------------------------------------------------


async def test_import_counts_added_and_replaced(store: Store) -> None:
    """import_entries upserts every entry and says how many were new and how many replaced."""
    await store.add(allow("+8131234" + "0000"))
    progress: list[int] = []

    async def source() -> AsyncIterator[Entry]:
        for i in range(2500):
            yield block(f"+8131234{i:04d}")

    result = await store.import_entries(source(), batch=1000, on_progress=progress.append)
    assert result == ImportResult(added=2499, replaced=1)
    assert progress == [1000, 2000, 2500]
    (found,) = await store.lookup("+81312340000")
    assert found.kind is ListKind.BLOCK


async def test_import_is_all_or_nothing(store: Store) -> None:
    """An error in the second batch leaves the table exactly as it was before the import."""
    await store.add(allow("+81312340005", label="client"))
    await store.add(block("+81120", prefix=True))
    before = await store.entries()
    bad = Entry("maybe", "+81312349999", created_at=NOW)  # type: ignore[arg-type]
    entries: Iterator[Entry] = (
        bad if i == 1500 else block(f"+8131234{i:04d}", label="imported") for i in range(2000)
    )
    with pytest.raises(StoreError, match="CHECK constraint"):
        await store.import_entries(entries, batch=1000)
    assert await store.entries() == before
    # and the connection is usable (no transaction left open)
    await store.add(block("+81312345678"))


async def test_reader_keeps_answering_during_import(db_path: Path) -> None:
    """While one store's import holds the write lock, another on the same file answers lookups
    with the old lists (WAL): they do not wait for the lock, which stays held until they are
    done (a lookup that waited for it would fail after the reader's busy timeout)."""
    async with Store.open(db_path) as writer, Store.open(db_path, busy_timeout=0.2) as reader:
        target = "+819000000150"  # the import replaces this entry
        await writer.add(allow(target, label="old"))
        in_transaction, lookups_done = asyncio.Event(), asyncio.Event()

        async def rows() -> AsyncIterator[Entry]:
            for i in range(300):
                yield block(f"+8190{i:08d}", label="new")
            in_transaction.set()  # the first batch is written, its transaction open
            await lookups_done.wait()
            for i in range(300, 400):
                yield block(f"+8190{i:08d}", label="new")

        task = asyncio.create_task(writer.import_entries(rows(), batch=100))
        await in_transaction.wait()
        for _ in range(5):
            (found,) = await reader.lookup(target)
            assert found.label == "old"  # the import's rows are not committed yet
            assert not task.done()
        lookups_done.set()
        result = await task
        assert result.added == 399
        assert (await reader.lookup(target))[0].label == "new"


async def test_locked_database_raises_store_locked(db_path: Path) -> None:
    """A write that waits longer than busy_timeout for another writer raises StoreLockedError."""
    async with Store.open(db_path):
        pass
    other = sqlite3.connect(db_path, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        async with Store.open(db_path, busy_timeout=0.2) as store:
            assert await store.lookup("+81312345678") == []  # readers are not blocked (WAL)
            # The lock is held until ROLLBACK below: raising at all is giving up on it.
            with pytest.raises(StoreLockedError, match="locked"):
                await store.add(block("+81312345678"))
            with pytest.raises(StoreLockedError):
                await store.record_call(call("c1", NOW))
            other.execute("ROLLBACK")
            await store.add(block("+81312345678"))  # works once the lock is gone
    finally:
        other.close()


# --- call log ----------------------------------------------------------------------------------


async def test_record_calls_commits_all_of_them_together(store: Store, db_path: Path) -> None:
    """record_calls writes every record in one transaction, readable from another connection."""
    records = [call(f"1700000000.{i}", NOW + i * DAY) for i in range(5)]
    await store.record_calls(records)
    async with Store.open(db_path, readonly=True) as other:
        assert [await other.get_call(r.call_id) for r in records] == records


async def test_record_calls_is_all_or_nothing(store: Store) -> None:
    """One record that cannot be stored (text that is not Unicode) fails the whole batch."""
    good = call("1700000000.1", NOW)
    bad = call("1700000000.2", NOW, raw_name="\ud800 lone surrogate")
    with pytest.raises(StoreError, match="not valid Unicode"):
        await store.record_calls([good, bad])
    assert await store.get_call(good.call_id) is None
    await store.record_calls([good])  # the connection is usable again (rolled back)
    assert await store.get_call(good.call_id) == good


async def test_record_hits_counts_each_id_once_per_occurrence(store: Store) -> None:
    """record_hits counts a repeated id again and stamps last_seen on every entry hit."""
    first, _ = await store.add(block("+81312345678"))
    second, _ = await store.add(block("+81312345679"))
    assert first.id is not None and second.id is not None
    await store.record_hits([first.id, first.id, second.id], NOW)
    await store.record_hits([], NOW + DAY)  # nothing to do
    hits = {e.number: (e.hits, e.last_seen) for e in await store.entries()}
    assert hits == {"+81312345678": (2, NOW), "+81312345679": (1, NOW)}


async def test_record_batch_applies_calls_then_fallbacks_then_hits(store: Store) -> None:
    """A call's decision and its fallback in one batch: the fallback lands on the decision."""
    entry, _ = await store.add(block("+81312345678"))
    assert entry.id is not None
    decided = call("1700000000.1", NOW, route="voicemail", reasons=("blocked",))
    late = call("1700000000.1", NOW, route="voicemail", reasons=("too late",))
    await store.record_batch(calls=[decided], fallbacks=[late], hits=[(entry.id, NOW + DAY)])
    stored = await store.get_call(decided.call_id)
    assert stored is not None
    assert (stored.fallback, stored.reasons) == (True, ("blocked", "too late"))
    (found,) = await store.lookup("+81312345678")
    assert (found.hits, found.last_seen) == (1, NOW + DAY)


async def test_record_batch_on_a_locked_database_raises_locked(db_path: Path) -> None:
    """A batch that waits longer than busy_timeout raises StoreLockedError and writes nothing."""
    async with Store.open(db_path):
        pass
    other = sqlite3.connect(db_path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        async with Store.open(db_path, busy_timeout=0.2) as store:
            with pytest.raises(StoreLockedError):
                await store.record_calls([call("c1", NOW), call("c2", NOW)])
            other.execute("ROLLBACK")
            assert await store.get_call("c1") is None
            await store.record_calls([call("c1", NOW)])
            assert await store.get_call("c1") is not None
    finally:
        other.close()


async def test_call_log_round_trip_and_updates(store: Store) -> None:
    """A call is logged, a second decision updates only the decision, outcomes are recorded."""
    record = call("1700000000.1", NOW)
    await store.record_call(record)
    assert await store.get_call("1700000000.1") == record
    assert await store.set_outcome("1700000000.1", "fail", NOW + dt.timedelta(seconds=20))
    assert await store.set_voicemail("1700000000.1", "SUCCESS")
    again = call(
        "1700000000.1",
        NOW + DAY,
        raw_number="other",
        route="voicemail",
        rule="exact-block",
        reasons=("blocked",),
        latency_ms=9.0,
    )
    await store.record_call(again)
    stored = await store.get_call("1700000000.1")
    assert stored is not None
    assert (stored.route, stored.rule, stored.reasons, stored.latency_ms) == (
        "voicemail",
        "exact-block",
        ("blocked",),
        9.0,
    )
    assert (stored.received_at, stored.raw_number) == (NOW, "0312345678")
    assert (stored.outcome, stored.outcome_at, stored.voicemail) == (
        "fail",
        NOW + dt.timedelta(seconds=20),
        "SUCCESS",
    )
    assert not await store.set_outcome("no-such-call", "pass", NOW)
    assert not await store.set_voicemail("no-such-call", "FAILED")


async def test_record_fallback(store: Store) -> None:
    """A fallback inserts an unlogged call, or marks a logged one keeping its decision."""
    late = call("a", NOW, route="staff", rule="fallback", reasons=("no decision",), fallback=True)
    await store.record_fallback(late)
    assert await store.get_call("a") == late
    await store.record_call(call("b", NOW, route="challenge", rule="category", reasons=("r1",)))
    await store.record_fallback(call("b", NOW + DAY, route="staff", reasons=("too late",)))
    stored = await store.get_call("b")
    assert stored is not None
    assert (stored.route, stored.rule, stored.reasons, stored.fallback) == (
        "staff",
        "category",
        ("r1", "too late"),
        True,
    )
    assert stored.received_at == NOW


async def test_calls_newest_first_since_and_limit(store: Store) -> None:
    """calls lists the newest first, from ``since`` on, at most ``limit`` of them."""
    for i in range(5):
        await store.record_call(call(f"c{i}", NOW + i * DAY, fallback=i == 2, e164=None))
    assert [c.call_id for c in await store.calls()] == ["c4", "c3", "c2", "c1", "c0"]
    assert [c.call_id for c in await store.calls(since=NOW + 2 * DAY)] == ["c4", "c3", "c2"]
    assert [c.call_id for c in await store.calls(limit=2)] == ["c4", "c3"]
    (c2,) = [c for c in await store.calls() if c.call_id == "c2"]
    assert c2.fallback and c2.e164 is None


async def test_recent_failures(store: Store) -> None:
    """recent_failures counts failed and timed-out challenges of one number since a time."""
    outcomes = ["fail", "timeout", "pass", "hangup", None, "fail"]
    for i, outcome in enumerate(outcomes):
        await store.record_call(call(f"c{i}", NOW + i * DAY))
        if outcome:
            await store.set_outcome(f"c{i}", outcome, NOW + i * DAY)
    await store.record_call(call("x", NOW, e164="+81312345679"))
    await store.set_outcome("x", "fail", NOW)
    assert await store.recent_failures("+81312345678", NOW) == 3
    assert await store.recent_failures("+81312345678", NOW + DAY) == 2
    assert await store.recent_failures("+81312345678", NOW + 10 * DAY) == 0


async def test_integrity_check(store: Store) -> None:
    """integrity_check runs SQLite's full check and says ok for a healthy database."""
    await store.add(block("+81312345678"))
    assert await store.integrity_check() == "ok"


_raw = st.text(max_size=2000) | st.sampled_from(
    ["", "\x00", "a\x00b", "'; DROP TABLE calls; --", '"', "\\", "０３-１２３４", "x" * 2000]
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_raw, _raw), min_size=1, max_size=8))
def test_raw_caller_values_round_trip(pairs: list[tuple[str, str]]) -> None:
    """Raw caller numbers and names come back exactly: any Unicode, NUL, SQL, 2,000 chars."""

    async def run(path: Path) -> None:
        async with Store.open(path) as store:
            for i, (number, name) in enumerate(pairs):
                await store.record_call(call(f"c{i}", NOW, raw_number=number, raw_name=name))
            for i, (number, name) in enumerate(pairs):
                stored = await store.get_call(f"c{i}")
                assert stored is not None
                assert (stored.raw_number, stored.raw_name) == (number, name)

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(Path(tmp) / "s.db"))


async def test_second_store_in_one_process_keeps_commits_visible(db_path: Path) -> None:
    """A writer and a reader Store in one process: other processes still see every commit.

    Opening and closing the database file by hand (to sniff its header) once dropped this
    process's POSIX locks; another process then reset the WAL under the writer and later
    commits became invisible until the service stopped.
    """
    peek = (
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]);"
        " print(c.execute('select count(*) from entries').fetchone()[0]); c.close()"
    )

    def count_from_another_process() -> int:
        out = subprocess.run(
            [sys.executable, "-c", peek, str(db_path)], capture_output=True, text=True, check=True
        )
        return int(out.stdout)

    async with Store.open(db_path) as writer, Store.open(db_path, readonly=True) as reader:
        for n in range(3):
            await writer.add(block(f"+8131234567{n}"))
            assert len(await reader.lookup(f"+8131234567{n}")) == 1
            assert await asyncio.to_thread(count_from_another_process) == n + 1


# --- ordered writes, learning in the transaction, the outbox ----------------------------------


def _rule(kind: ListKind | None) -> Callable[[CallRecord | None, Entry | None, int], Entry | None]:
    """A learn rule that records what the transaction showed it and learns ``kind``."""

    def rule(record: CallRecord | None, existing: Entry | None, failures: int) -> Entry | None:
        seen.append((record.call_id if record else None, existing, failures))
        if kind is None:
            return None
        return Entry(kind, "+81312345678", source=SOURCE_LEARNED, created_at=NOW + DAY)

    seen: list[tuple[str | None, Entry | None, int]] = []
    rule.seen = seen  # type: ignore[attr-defined]  # the test reads what the rule saw
    return rule


async def test_apply_runs_writes_in_order_in_one_transaction(store: Store) -> None:
    """A call's outcome queued after its record in the same batch finds the record."""
    rule = _rule(None)
    since = NOW - 7 * DAY
    results = await store.apply(
        [
            RecordCall(call("c1", NOW, outcome=None)),
            SetOutcome("c1", "fail", NOW, Learning(None, since, rule)),
            SetVoicemail("c1", "SUCCESS", NOW),
            SetOutcome("nope", "fail", NOW),
        ]
    )
    assert results[0] is None
    assert isinstance(results[1], OutcomeResult) and results[1].found
    assert results[1].failures == 1  # this call's own failure, no earlier ones
    assert results[2] is True
    assert results[3] == OutcomeResult(False)
    assert rule.seen == [("c1", None, 0)]  # type: ignore[attr-defined]
    record = await store.get_call("c1")
    assert record is not None and (record.outcome, record.voicemail) == ("fail", "SUCCESS")


async def test_learning_counts_failures_committed_in_the_same_batch(store: Store) -> None:
    """Three failures in one transaction: the third sees the two before it and auto-blocks."""
    since = NOW - 7 * DAY
    writes: list[Write] = []
    for n in range(3):
        writes += [
            RecordCall(call(f"c{n}", NOW + n * dt.timedelta(minutes=1))),
            SetOutcome(f"c{n}", "timeout", NOW, Learning("+81312345678", since, _rule(None))),
        ]
    block_rule = _rule(ListKind.BLOCK)
    writes[-1] = SetOutcome("c2", "fail", NOW, Learning("+81312345678", since, block_rule))
    results = await store.apply(writes)
    assert block_rule.seen == [("c2", None, 2)]  # type: ignore[attr-defined]
    last = results[-1]
    assert isinstance(last, OutcomeResult) and last.learned is not None
    assert last.failures == 3
    (event,) = await store.outbox(topic="auto_block")
    assert event.payload["number"] == "+81312345678" and event.payload["failures"] == 3
    assert event.payload["call_id"] == "c2"


async def test_a_manual_entry_is_never_replaced_by_in_transaction_learning(store: Store) -> None:
    """The rule's entry is not stored over an active manual entry, and nothing is enqueued."""
    await store.add(allow("+81312345678", label="customer"))
    rule = _rule(ListKind.BLOCK)
    await store.record_call(call("c1", NOW))
    (result,) = await store.apply([SetOutcome("c1", "fail", NOW, Learning(None, NOW - DAY, rule))])
    assert isinstance(result, OutcomeResult) and result.learned is None
    entry = await store.get("+81312345678", prefix=False)
    assert entry is not None and entry.label == "customer"
    assert await store.outbox() == []


async def test_voicemail_outbox_event_is_written_once_per_call(store: Store) -> None:
    """A voicemail status enqueues one event keyed by the call; a repeat is ignored."""
    await store.record_call(call("c1", NOW, raw_name="タナカ"))
    assert await store.set_voicemail("c1", "SUCCESS", NOW)
    assert await store.set_voicemail("c1", "SUCCESS", NOW + DAY)
    (event,) = await store.outbox()
    assert (event.topic, event.key, event.created_at) == ("voicemail", "voicemail:c1", NOW)
    assert event.payload == {
        "call_id": "c1",
        "e164": "+81312345678",
        "raw_number": "0312345678",
        "name": "タナカ",
        "reasons": ["caller +81312345678: fixed_line", "category rule fixed_line → staff"],
        "voicemail": "SUCCESS",
    }


async def test_outbox_schema_is_exactly_the_agreed_one(db_path: Path) -> None:
    """Other modules (the notification sender) rely on this exact table."""
    async with Store.open(db_path):
        pass
    with sqlite3.connect(db_path) as conn:
        (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'outbox'").fetchone()
    conn.close()
    assert " ".join(sql.split()) == (
        "CREATE TABLE outbox (id INTEGER PRIMARY KEY, topic TEXT NOT NULL,"
        " key TEXT NOT NULL UNIQUE, payload TEXT NOT NULL, created_at REAL NOT NULL)"
    )


async def test_late_redirect_keeps_the_route_an_earlier_fallback_recorded(store: Store) -> None:
    """RecordLate after RecordFallback keeps the fallback's route; alone it inserts its own."""
    await store.apply(
        [
            RecordFallback(call("c1", NOW, route="voicemail", rule="fallback", fallback=True)),
            RecordLate(call("c1", NOW, route="staff", rule="fallback", reasons=("late",))),
            RecordLate(call("c2", NOW, route="staff", rule="fallback", reasons=("late",))),
        ]
    )
    first, second = await store.get_call("c1"), await store.get_call("c2")
    assert first is not None and (first.route, first.fallback) == ("voicemail", True)
    assert first.reasons[-1] == "late"
    assert second is not None and (second.route, second.fallback) == ("staff", True)


async def test_voicemail_outbox_event_names_the_audio_when_given(store: Store) -> None:
    """SetVoicemail's audio (the WAV the service located) goes into the payload for the mail."""
    await store.record_call(call("c1", NOW))
    await store.apply([SetVoicemail("c1", "SUCCESS", NOW, "/spool/office/100/INBOX/msg0000.wav")])
    (event,) = await store.outbox()
    assert event.payload["audio"] == "/spool/office/100/INBOX/msg0000.wav"


async def test_schema_2_database_gains_the_delivery_table_and_keeps_its_outbox(
    db_path: Path,
) -> None:
    """A database at schema 2 (the outbox, no delivery state) is migrated to 3: its outbox rows
    stay, each undelivered on every channel."""
    conn = sqlite3.connect(db_path)
    for statements in MIGRATIONS[:2]:
        for sql in statements:
            conn.execute(sql)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 2")
    conn.execute(
        "INSERT INTO outbox (topic, key, payload, created_at) VALUES"
        " ('voicemail', 'voicemail:c1', '{\"call_id\": \"c1\"}', ?)",
        (NOW.timestamp(),),
    )
    conn.commit()
    conn.close()
    async with Store.open(db_path) as store:
        due = await store.due_deliveries("email", since=NOW - DAY, now=NOW + DAY)
        assert [(row.key, row.attempts) for row in due] == [("voicemail:c1", 0)]
        await store.record_delivery(due[0].id, "email", delivered_at=NOW)
        assert await store.due_deliveries("email", since=NOW - DAY, now=NOW + DAY) == []
    assert pragma(db_path, "user_version") == SCHEMA_VERSION >= 3


async def test_recording_path_and_seconds_are_kept(db_path: Path) -> None:
    """A call's recording is stored (path first, seconds once it ends) and listed."""
    async with Store.open(db_path) as store:
        now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
        for n, call_id in enumerate(("c1", "c2")):
            await store.record_call(
                CallRecord(call_id, now + dt.timedelta(seconds=n), "0120", "", None,
                           "toll_free", None, "challenge", "category", ("r",), 1.0)
            )  # fmt: skip
        assert await store.set_recording("c1", "/rec/c1.wav", None)
        assert await store.recordings() == {"c1": ("/rec/c1.wav", None)}
        assert await store.set_recording("c1", "/rec/c1.wav", 12.0)
        assert not await store.set_recording("nope", "/rec/nope.wav", 1.0)
        assert await store.recordings(["c1", "c2"]) == {"c1": ("/rec/c1.wav", 12.0)}


async def test_recording_write_is_ordered_after_the_call_record(db_path: Path) -> None:
    """SetRecording in one batch after the call's RecordCall finds that call; alone, it does not."""
    async with Store.open(db_path) as store:
        now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
        rec = CallRecord("c9", now, "0120", "", None,
                         "toll_free", None, "challenge", "category", ("r",), 1.0)  # fmt: skip
        results = await store.apply(
            [SetRecording("c8", "/rec/c8.wav"), RecordCall(rec), SetRecording("c9", "/rec/c9.wav")]
        )
        assert results == [False, None, True]
        assert await store.recordings() == {"c9": ("/rec/c9.wav", None)}


async def test_prune_outbox_deletes_old_events_and_their_deliveries_in_batches(
    store: Store, db_path: Path
) -> None:
    """Events created before the cut-off go, with their delivery rows; newer ones stay."""
    for day in range(5):
        await store.add_outbox("voicemail", f"old-{day}", {"n": day}, NOW - (10 - day) * DAY)
    await store.add_outbox("voicemail", "new", {"n": 9}, NOW)
    old_id = (await store.outbox())[0].id
    await store.record_delivery(old_id, "webhook", delivered_at=NOW - 9 * DAY)
    assert await store.prune_outbox(NOW - 2 * DAY, batch=2) == 5
    assert [e.key for e in await store.outbox()] == ["new"]
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("SELECT count(*) FROM outbox_delivery").fetchone() == (0,)
    assert await store.prune_outbox(NOW - 2 * DAY) == 0


# id, choice, kind, number on the call, existing entry kind/source, entry made (kind, source)
STAFF_CHOICE_CASES: list[tuple[str, str, ListKind | None, str | None, Entry | None, object]] = [
    ("connect makes no entry", "connect", None, "+81120000001", None, None),
    ("block from now on", "block", ListKind.BLOCK, "+81120000002", None, ("block", "staff:s2")),
    ("allow from now on", "allow", ListKind.ALLOW, "+81120000003", None, ("allow", "staff:s3")),
    (
        "a staff block replaces a learned allow",
        "block-in-call",
        ListKind.BLOCK,
        "+81120000004",
        Entry(ListKind.ALLOW, "+81120000004", source=SOURCE_LEARNED, created_at=NOW),
        ("block", "staff:s4"),
    ),
    ("a withheld caller has no number to list", "block", ListKind.BLOCK, None, None, None),
]


async def test_staff_choice_is_stored_with_the_entry_it_makes(db_path: Path) -> None:
    """A staff phone's choice lands on the call; block/allow list the caller as staff:<phone>."""
    async with Store.open(db_path) as store:
        for n, (why, choice, kind, e164, existing, made) in enumerate(STAFF_CHOICE_CASES, 1):
            call_id = f"c{n}"
            await store.record_call(call(call_id, NOW, e164=e164))
            if existing is not None:
                await store.add(existing)
            done = await store.set_staff_choice(SetStaffChoice(call_id, choice, f"s{n}", NOW, kind))
            got = done.entry
            assert done.found, why
            assert (None if got is None else (str(got.kind), got.source)) == made, why
            if e164 is not None:
                assert await store.get(e164, False) == (got if made else existing), why
        expected = {f"c{n}": (c[1], f"s{n}") for n, c in enumerate(STAFF_CHOICE_CASES, 1)}
        assert await store.staff_choices([*expected, "nope"]) == expected


async def test_staff_choice_for_a_call_not_in_the_log_uses_the_number_given(db_path: Path) -> None:
    """Without the call's record, the service's own copy of the number is listed."""
    async with Store.open(db_path) as store:
        done = await store.set_staff_choice(
            SetStaffChoice("gone", "block", "staff2", NOW, ListKind.BLOCK, "+81312345678")
        )
        assert not done.found and done.entry is not None
        assert done.entry.number == "+81312345678" and done.entry.source == "staff:staff2"
        assert await store.staff_choices(["gone"]) == {}


async def test_staff_choice_keeps_the_numbers_hits(db_path: Path) -> None:
    """Announce keys 3/4 and *0 replace the entry but keep its counters, as feature codes do."""
    async with Store.open(db_path) as store:
        seen = NOW - DAY
        await store.add(
            Entry(ListKind.ALLOW, "+81120000009", created_at=NOW, hits=7, last_seen=seen)
        )
        await store.record_call(call("k1", NOW, e164="+81120000009"))
        done = await store.set_staff_choice(
            SetStaffChoice("k1", "block", "staff1", NOW, ListKind.BLOCK)
        )
        assert done.entry is not None and done.entry.kind == ListKind.BLOCK
        stored = await store.get("+81120000009", False)
        assert stored is not None and (stored.hits, stored.last_seen) == (7, seen)


def test_every_column_of_a_row_lands_in_its_field() -> None:
    """entry_from_row builds the Entry by position: each column, all distinct, in its field."""
    row = (7, "block", "+81312345678", 1, "label", "source", 1.0e9, 2.0e9, "note", 3, 1.5e9)
    assert entry_from_row(row) == Entry(
        id=7,
        kind=ListKind.BLOCK,
        number="+81312345678",
        prefix=True,
        label="label",
        source="source",
        created_at=dt.datetime.fromtimestamp(1.0e9, dt.UTC),
        expires_at=dt.datetime.fromtimestamp(2.0e9, dt.UTC),
        note="note",
        hits=3,
        last_seen=dt.datetime.fromtimestamp(1.5e9, dt.UTC),
    )
    assert entry_from_row((*row[:7], None, *row[8:10], None)).expires_at is None
