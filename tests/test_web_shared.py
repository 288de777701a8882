"""The console's call log with [shared]: every site's calls from a real PostgreSQL
(tests/pgserver.py), a site column and filter, and this site's own log with a notice when the
central store is down."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

from screener.config import SharedConfig
from screener.shared.engine import Sync, init_central
from screener.store import Store
from tests.pgserver import PGServer, bin_dir
from tests.test_shared_sync import shared_config
from tests.webutil import call, client, console, login

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bin_dir() is None, reason="PostgreSQL not installed (scripts/bootstrap)"),
]


async def _site_with_calls(
    server: PGServer, dsn: str, path: Path, name: str, numbers: list[str]
) -> SharedConfig:
    async with Store.open(path) as store:
        sync = Sync(shared_config(server, dsn, name), store)
        await sync.join()
        await store.record_calls(
            [call(n, number=number, e164=None) for n, number in enumerate(numbers)]
        )
        assert (await sync.once()).calls == len(numbers)
    return shared_config(server, dsn, name)


async def test_the_call_log_shows_every_site_and_falls_back_when_postgres_is_down(
    pg_own: PGServer, tmp_path: Path
) -> None:
    """Site A's console lists A's and B's calls with their site; ?site=b only B's; PG stopped:
    A's own calls, with a visible notice (and no error page)."""
    dsn = pg_own.create_database(f"t_{uuid.uuid4().hex[:12]}")
    await init_central(shared_config(pg_own, dsn, "admin"))
    a_db, b_db = tmp_path / "a.db", tmp_path / "b.db"
    config_a = await _site_with_calls(pg_own, dsn, a_db, "a", ["0311110001", "0311110002"])
    await _site_with_calls(pg_own, dsn, b_db, "b", ["0322220001"])
    with console(a_db) as (con, _):
        async with client(con) as c:
            await login(c, "staff")
            local = await c.get("/calls")
            assert local.status_code == 200
            assert "0311110001" in local.text and "0322220001" not in local.text
            assert 'class="site"' not in local.text  # no [shared]: the page as it was

            con.store.shared = config_a
            page = await c.get("/calls")
            assert page.status_code == 200
            for number in ("0311110001", "0311110002", "0322220001"):
                assert number in page.text
            assert page.text.count('<td class="site">a</td>') == 2
            assert page.text.count('<td class="site">b</td>') == 1
            assert 'id="central-notice"' not in page.text

            only_b = await c.get("/calls", params={"site": "b"})
            assert "0322220001" in only_b.text and "0311110001" not in only_b.text

            pg_own.stop()
            down = await c.get("/calls")
            assert down.status_code == 200
            assert 'id="central-notice"' in down.text
            assert "0311110001" in down.text and "0322220001" not in down.text
            assert pg_own.password not in down.text
            # Nor where the central store is: any reader sees the page, the log has the reason.
            assert "127.0.0.1" not in down.text


async def test_the_all_sites_log_pages_by_its_cursor(pg_shared: PGServer, tmp_path: Path) -> None:
    """More than a page of calls across sites: the "older" link leads to the rest, none twice;
    a malformed cursor is a clear 400."""
    dsn = pg_shared.create_database(f"t_{uuid.uuid4().hex[:12]}")
    await init_central(shared_config(pg_shared, dsn, "admin"))
    a_db, b_db = tmp_path / "a.db", tmp_path / "b.db"
    config_a = await _site_with_calls(
        pg_shared, dsn, a_db, "a", [f"03111{n:05d}" for n in range(30)]
    )
    await _site_with_calls(pg_shared, dsn, b_db, "b", [f"03222{n:05d}" for n in range(30)])
    with console(a_db) as (con, _):
        con.store.shared = config_a
        async with client(con) as c:
            await login(c, "staff")
            first = await c.get("/calls")

            older = re.search(r'href="(/calls\?[^"]*after=[^"]*)"', first.text)
            assert older is not None
            second = await c.get(older[1].replace("&amp;", "&"))
            seen = re.findall(r"03[12]{3}\d{5}", first.text) + re.findall(
                r"03[12]{3}\d{5}", second.text
            )
            numbers = [n for n in seen if n.startswith(("03111", "03222"))]
            assert len(numbers) == 60  # none twice
            assert sorted(set(numbers)) == sorted(
                [f"03111{n:05d}" for n in range(30)] + [f"03222{n:05d}" for n in range(30)]
            )
            bad = await c.get("/calls", params={"after": "nonsense"})
            assert bad.status_code == 400
