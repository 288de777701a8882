"""The journal through the service: a crash after Redirects and before commits loses nothing.

The crash is a real one: ``screener run`` as a subprocess, SIGKILLed while another process
holds the database's write lock (so nothing it routed is committed yet); the next start
replays what it journaled, in order, and every record is in the database exactly once.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from screener import journal as jr
from screener import service
from screener.errors import StoreError
from screener.policy import SOURCE_LEARNED, ListKind
from screener.store import RecordCall, RecordHit, Store
from tests.fakeami import FakeAMI
from tests.test_journal import record
from tests.test_service import (
    FIXED,
    FIXED_E164,
    MOBILE,
    SECRET,
    TOLL_FREE,
    TOLL_FREE_E164,
    add_entry,
    challenge_event,
    eventually,
    make_config,
    new_call_id,
    read_call,
    read_entry,
    request,
    serving,
    voicemail_event,
    write_locked,
)


def _screener_env(fake: FakeAMI, db: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCREENER_")}
    env.update(
        SCREENER_DB=str(db),
        SCREENER_AMI_HOST=fake.host,
        SCREENER_AMI_PORT=str(fake.port),
        SCREENER_AMI_USER="screener",
        SCREENER_AMI_SECRET=SECRET,
        SCREENER_METRICS_LISTEN="",
        SCREENER_LOG_FORMAT="json",
        SCREENER_HOLD_SECONDS="4",
    )
    return env


def _journal_kinds(db: Path) -> list[str]:
    try:
        text = jr.journal_path(db).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    kinds = []
    for line in text.splitlines():
        item = json.loads(line)
        if "w" in item:
            kinds.append(item["w"]["k"])
    return kinds


def _rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.mark.slow  # a subprocess, and a restart
async def test_a_killed_screener_loses_no_routed_call(
    fake: FakeAMI, db: Path, tmp_path: Path
) -> None:
    """SIGKILL after the Redirects, before any commit: the next start commits every record once,
    and the outcomes and voicemail status after them, in order (three failures auto-block)."""
    await add_entry(db, ListKind.BLOCK, FIXED_E164)
    log = (tmp_path / "screener.log").open("wb")
    proc = subprocess.Popen(  # noqa: ASYNC220 -- started and killed by PID here
        [sys.executable, "-m", "screener", "run"],
        env=_screener_env(fake, db),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    try:
        await fake.wait_until(lambda: fake.logins >= 1, 20)
        challenged = [new_call_id() for _ in range(3)]
        blocked = new_call_id()
        with write_locked(db):
            await fake.emit(*(request(c, TOLL_FREE) for c in challenged))
            await fake.emit(request(blocked, FIXED))
            await fake.wait_until(lambda: len(fake.actions("Redirect")) >= 4, 10)
            await fake.emit(
                *(challenge_event(c, TOLL_FREE, "fail", attempts="3") for c in challenged)
            )
            await fake.emit(voicemail_event(blocked, FIXED, "SUCCESS"))
            await fake.wait_until(lambda: _journal_kinds(db).count("outcome") == 3, 10)
            await fake.wait_until(lambda: "voicemail" in _journal_kinds(db), 10)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()
    assert _rows(db, "SELECT count(*) FROM calls") == [(0,)]  # nothing was committed
    contexts = sorted(r.get("Context") or "" for r in fake.actions("Redirect"))
    assert contexts == ["screen-challenge"] * 3 + ["screen-voicemail"]

    async with serving(make_config(fake, db), fake) as svc:
        entry = await eventually(lambda: read_entry(db, TOLL_FREE_E164), 5)
        await eventually(lambda: _voicemail(db, blocked), 5)
        assert svc.screener.stats.record_errors == 0
    calls = _rows(db, "SELECT call_id, route, outcome, voicemail, reasons FROM calls")
    assert sorted(c[0] for c in calls) == sorted([*challenged, blocked])
    for call_id, route, outcome, voicemail, reasons in calls:
        reasons_list = json.loads(str(reasons))
        assert len(reasons_list) == len(set(reasons_list))  # no reason applied twice
        if call_id == blocked:
            assert (route, outcome, voicemail) == ("voicemail", None, "SUCCESS")
        else:
            assert (route, outcome) == ("challenge", "fail")
    assert (entry.kind, entry.source) == (ListKind.BLOCK, SOURCE_LEARNED)
    hit = await read_entry(db, FIXED_E164)
    assert hit is not None and hit.hits == 1  # the list hit counted once
    assert _rows(db, "SELECT count(*) FROM outbox WHERE topic = 'auto_block'") == [(1,)]
    assert jr.journal_path(db).stat().st_size == 0  # all committed: emptied


async def _voicemail(db: Path, call_id: str) -> str | None:
    rec = await read_call(db, call_id)
    return rec.voicemail if rec is not None else None


def _crashed_journal(db: Path, data: bytes) -> None:
    path = jr.journal_path(db)
    path.write_bytes(data)
    path.chmod(0o600)


def _line(seq: int, write: object) -> bytes:
    return (json.dumps({"n": seq, "w": jr.encode(write)}) + "\n").encode()  # type: ignore[arg-type]


@pytest.mark.slow  # a start of the service
async def test_a_commit_whose_mark_was_lost_is_not_applied_twice(fake: FakeAMI, db: Path) -> None:
    """A crash between COMMIT and its mark: the database holds that transaction, so the next
    start skips it (the hit is not counted twice) and commits only what followed it."""
    await add_entry(db, ListKind.BLOCK, FIXED_E164)
    async with Store.open(db) as store:
        entry = await store.get(FIXED_E164, prefix=False)
        assert entry is not None and entry.id is not None
        first = [
            RecordCall(record("1.1", route="voicemail")),
            RecordHit(entry.id, record().received_at),
        ]
        await store.apply(first)
    second = RecordCall(record("1.2", route="staff"))
    _crashed_journal(
        db,
        _line(1, first[0]) + _line(2, first[1]) + b'{"b":[[1,2]]}\n' + _line(3, second),
    )
    async with serving(make_config(fake, db), fake) as svc:
        await svc.call("1.2", within=5)
    hit = await read_entry(db, FIXED_E164)
    assert hit is not None and hit.hits == 1
    one = await read_call(db, "1.1")
    assert one is not None and one.reasons == record().reasons


@pytest.mark.slow  # a start of the service
async def test_a_torn_line_is_dropped_with_a_warning_and_the_rest_replayed(
    fake: FakeAMI, db: Path
) -> None:
    """Half a line at the end (a crash inside the write): skipped and logged, the rest kept."""
    from structlog.testing import capture_logs

    whole = _line(1, RecordCall(record("1.3", route="staff")))
    _crashed_journal(db, whole + _line(2, RecordCall(record("1.4")))[:30])
    with capture_logs() as logs:
        async with serving(make_config(fake, db), fake) as svc:
            await svc.call("1.3", within=5)
    assert await read_call(db, "1.4") is None
    (torn,) = [e for e in logs if e["event"].startswith("journal: torn")]
    assert torn["lines"] == 1


@pytest.mark.slow  # two starts of the service
async def test_a_second_screener_on_the_same_database_is_refused(fake: FakeAMI, db: Path) -> None:
    """Two agents on one database would replay each other's journal: the second one stops."""
    async with serving(make_config(fake, db), fake):
        logins = fake.logins
        with pytest.raises(StoreError, match="another screener is running"):
            await service.run(make_config(fake, db), stop=asyncio.Event())
        assert fake.logins == logins  # it stopped before logging in


@pytest.mark.slow  # a held lock and the busy timeout
async def test_calls_are_routed_at_once_under_a_held_lock_and_journaled(
    fake: FakeAMI, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under another process's write lock a call is Redirected without waiting for anything;
    its record is in the journal until the lock goes, then committed and the journal emptied."""
    monkeypatch.setattr(service, "WRITER_BUSY_TIMEOUT", 0.2)
    async with serving(make_config(fake, db), fake) as svc:
        with write_locked(db):
            call_id = new_call_id()
            await fake.emit(request(call_id, MOBILE))
            await svc.redirects(1)
            assert _journal_kinds(db) == ["call"]
            assert await read_call(db, call_id) is None
        await svc.call(call_id, within=5)
        await eventually(lambda: _true_if(jr.journal_path(db).stat().st_size == 0), 5)
    assert svc.task.result().record_errors == 0


async def _true_if(condition: bool) -> bool | None:
    return True if condition else None


@pytest.mark.slow  # a start of the service
async def test_journaled_calls_share_a_commit_and_a_waited_write_does_not_linger(
    fake: FakeAMI, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records nobody waits for linger so that a burst shares one commit; a write whose result
    is awaited (a challenge outcome) ends the linger at once."""
    monkeypatch.setattr(service, "COMMIT_LINGER", 60.0)
    async with serving(make_config(fake, db), fake) as svc:
        stats = svc.screener.stats
        calls = [new_call_id() for _ in range(10)]
        await fake.emit(*(request(c, MOBILE) for c in calls))
        await svc.redirects(10)
        assert stats.write_batches == 0  # lingering: nothing waits for these records
        challenged = new_call_id()
        await fake.emit(request(challenged, TOLL_FREE))
        await svc.redirects(11)
        await fake.emit(challenge_event(challenged, TOLL_FREE, "pass"))
        # Long before the 60 s linger: the outcome's result is waited for, so it commits now.
        await fake.wait_until(lambda: stats.outcomes == 1 and stats.write_batches >= 1, 20)
        record = await svc.call(challenged, within=20)
        assert stats.write_batches == 1  # the calls, the challenged call and its outcome: one
    assert record.outcome == "pass"
    assert all([await read_call(db, c) is not None for c in calls])


@pytest.mark.slow  # a start of the service
async def test_a_lone_write_that_fails_for_good_leaves_the_journal_free_to_empty(
    fake: FakeAMI, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of one write that fails with a bad-data error (not a lock) is given up for good,
    as in the one-by-one path: out of the journal too, so that the journal empties again and is
    not replayed at the next start."""
    failures = [StoreError("database: bad data")]
    apply = Store.apply

    async def failing_once(self: Store, writes: list[object]) -> object:
        if failures:
            raise failures.pop()
        return await apply(self, writes)  # type: ignore[arg-type]

    monkeypatch.setattr(Store, "apply", failing_once)
    async with serving(make_config(fake, db), fake) as svc:
        bad, good = new_call_id(), new_call_id()
        await fake.emit(request(bad, MOBILE))
        await svc.redirects(1)
        await eventually(lambda: _true_if(not failures), 10)
        await fake.emit(request(good, MOBILE))
        await svc.redirects(2)
        await svc.call(good, within=10)
        await eventually(lambda: _true_if(jr.journal_path(db).stat().st_size == 0), 10)
    assert await read_call(db, bad) is None
    assert svc.task.result().record_errors == 1
