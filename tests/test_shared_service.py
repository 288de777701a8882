"""Two real ``service.run()`` agents (sites A and B), each with its own FakeAMI and SQLite,
sharing one list through a real PostgreSQL: the sync runs inside the service's lifecycle."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from screener.config import SharedConfig
from screener.policy import SOURCE_LEARNED, ListKind
from screener.shared.engine import init_central
from screener.store import Store
from tests.fakeami import FakeAMI
from tests.pgserver import bin_dir
from tests.test_service import (
    FIXED,
    FIXED_E164,
    SECRET,
    TOLL_FREE,
    TOLL_FREE_E164,
    add_entry,
    challenge_event,
    challenged,
    eventually,
    make_config,
    new_call_id,
    request,
    serving,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bin_dir() is None, reason="PostgreSQL not installed (scripts/bootstrap)"),
]


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeAMI, FakeAMI]]:
    async with FakeAMI(secret=SECRET) as a, FakeAMI(secret=SECRET) as b:
        yield a, b


def shared(server: Any, dsn: str, site: str) -> SharedConfig:
    return SharedConfig(
        dsn=dsn, site=site, password=server.password, sslmode="disable", push_interval=0.02
    )


async def test_a_block_at_a_routes_the_next_call_at_b_and_a_pass_at_b_verifies_at_a(
    pg_shared: Any, fakes: tuple[FakeAMI, FakeAMI], tmp_path: Path
) -> None:
    """A block added at site A (another process's connection, as `screener list add`) sends
    B's next call from that number to the block route; a challenge passed at B makes the
    caller a learned allow at A, whose next call from it rings staff at once."""
    fake_a, fake_b = fakes
    dsn = pg_shared.create_database(f"t_{uuid.uuid4().hex[:12]}")
    await init_central(shared(pg_shared, dsn, "admin"))
    db_a, db_b = tmp_path / "a.db", tmp_path / "b.db"
    config_a = make_config(fake_a, db_a, shared=shared(pg_shared, dsn, "a"))
    config_b = make_config(fake_b, db_b, shared=shared(pg_shared, dsn, "b"))
    async with serving(config_a, fake_a) as svc_a, serving(config_b, fake_b) as svc_b:
        await add_entry(db_a, ListKind.BLOCK, FIXED_E164)

        async def at_b() -> Any:
            async with Store.open(db_b, readonly=True) as store:
                return (await store.lookup(FIXED_E164)) or None

        await eventually(at_b, within=20)
        call_id = new_call_id()
        await fake_b.emit(request(call_id, FIXED))
        record = await svc_b.call(call_id)
        assert record.route == config_b.policy.block_route.value

        # A challenge passed at B: the caller is verified at A.
        passed = await challenged(svc_b, TOLL_FREE)
        await fake_b.emit(challenge_event(passed, TOLL_FREE, "pass"))

        async def at_a() -> Any:
            async with Store.open(db_a, readonly=True) as store:
                return (await store.lookup(TOLL_FREE_E164)) or None

        [entry] = await eventually(at_a, within=20)
        assert (entry.kind, entry.source) == (ListKind.ALLOW, SOURCE_LEARNED)
        again = new_call_id()
        await fake_a.emit(request(again, TOLL_FREE))
        assert (await svc_a.call(again)).route == config_a.policy.allow_route.value
