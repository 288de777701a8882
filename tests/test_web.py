"""The web console through its ASGI app (httpx), against real SQLite files."""

from __future__ import annotations

import datetime as dt
import io
import re
import wave
from pathlib import Path

import httpx
import pytest
from fastapi.routing import APIRoute

from screener.web.app import ROUTERS, create_app
from screener.webstore import WebStore

from .webutil import PASSWORD, call, client, console, csrf_of, login, make_db

HOSTILE_NAME = '<script>alert("x")</script><img src=x onerror=alert(1)>'
HOSTILE_NUMBER = '"><svg onload=alert(2)>'
PUBLIC = {"/login", "/lang/{code}"}


@pytest.fixture
async def db(tmp_path: Path) -> Path:
    path = tmp_path / "screener.db"
    await make_db(
        path,
        [
            call(1, name=HOSTILE_NAME),
            call(2, number=HOSTILE_NUMBER, e164=None, name="anon"),
            call(3, number="0901111222", e164="+819011112222", route="staff", name="Tanaka"),
        ],
    )
    return path


def app_routes(con: object) -> list[tuple[str, str]]:
    out = []
    for router in ROUTERS:
        for route in router.routes:
            if isinstance(route, APIRoute) and route.path not in PUBLIC:
                for method in route.methods:
                    out.append((method, route.path))
    return sorted(out)


def _concrete(path: str) -> str:
    return (
        path.replace("{number}", "%2B81312345678")
        .replace("{call_id}", "c1")
        .replace("{msg_id}", "m1")
    )


async def test_every_route_refuses_an_unauthenticated_request(db: Path) -> None:
    """Pages redirect to the login page, the API answers 401; nothing is shown or changed."""
    with console(db) as (con, _):
        routes = app_routes(con)
        assert len(routes) > 15
        async with client(con) as c:
            for method, path in routes:
                r = await c.request(method, _concrete(path))
                if path.startswith("/api/"):
                    assert r.status_code == 401, (method, path, r.status_code)
                elif path == "/calls/stream":
                    assert r.status_code == 401, (method, path)
                else:
                    assert r.status_code == 303, (method, path, r.status_code)
                    assert r.headers["location"].startswith("/login")
            # A made-up bearer token is no better.
            r = await c.get("/api/calls", headers={"Authorization": "Bearer scr_forged"})
            assert r.status_code == 401
        assert con.store.audit_log() == [] or all(a.user == "cli" for a in con.store.audit_log())


async def test_every_state_changing_route_refuses_a_missing_or_wrong_csrf_token(db: Path) -> None:
    """With a session, POST/PATCH/DELETE without the session's CSRF token are refused (403)."""
    with console(db) as (con, _):
        changing = [(m, p) for m, p in app_routes(con) if m in ("POST", "PATCH", "DELETE")]
        assert ("POST", "/calls/action") in changing and ("DELETE", "/api/entries") in changing
        async with client(con) as c:
            await login(c, "admin")
            for method, path in changing:
                for token in (None, "wrong"):
                    data = {"number": "0312345678", "action": "block", "kind": "block"}
                    if token:
                        data["csrf"] = token
                    if method == "POST" and not path.startswith("/api/"):
                        r = await c.request(method, _concrete(path), data=data)
                    else:
                        headers = {"X-CSRF-Token": token} if token else {}
                        r = await c.request(
                            method,
                            _concrete(path),
                            params={"number": "0312345678"},
                            headers=headers,
                            json={"number": "0312345678", "kind": "block"},
                        )
                    assert r.status_code == 403, (method, path, token, r.status_code)
            assert con.store.entries_for("+81312345678") == []
            # The login form has its own pre-session token.
            c.cookies.clear()
            r = await c.post("/login", data={"user": "admin", "password": PASSWORD})
            assert r.status_code == 403
        assert not [a for a in con.store.audit_log() if a.user != "cli"]


async def test_login_rate_limited_per_user(db: Path) -> None:
    """Five wrong passwords for a user and even the right one is refused for a while."""
    with console(db) as (con, _):
        async with client(con) as c:
            for _ in range(5):
                page = await c.get("/login")
                r = await c.post(
                    "/login",
                    data={"user": "staff", "password": "wrong one!", "csrf": csrf_of(page.text)},
                )
                assert r.status_code == 401
            page = await c.get("/login")
            r = await c.post(
                "/login", data={"user": "staff", "password": PASSWORD, "csrf": csrf_of(page.text)}
            )
            assert r.status_code == 429
            assert "screener_session" not in c.cookies


async def test_session_cookie_flags_and_logout_ends_the_session(db: Path) -> None:
    """The cookie is HttpOnly and SameSite=Strict; after logout the old cookie opens nothing."""
    with console(db) as (con, _):
        async with client(con) as c:
            page = await c.get("/login")
            r = await c.post(
                "/login", data={"user": "staff", "password": PASSWORD, "csrf": csrf_of(page.text)}
            )
            cookie = r.headers["set-cookie"]
            assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie
            old = c.cookies["screener_session"]
            csrf = csrf_of((await c.get("/calls")).text)
            r = await c.post("/logout", data={"csrf": csrf})
            assert r.status_code == 303
            c.cookies.set("screener_session", old)
            r = await c.get("/calls")
            assert r.status_code == 303 and r.headers["location"].startswith("/login")


async def test_secure_cookie_over_https(db: Path) -> None:
    """Served over HTTPS (as behind the TLS proxy), the session cookie is Secure."""
    with console(db) as (con, _):
        transport = httpx.ASGITransport(app=create_app(con))
        async with httpx.AsyncClient(transport=transport, base_url="https://console.test") as c:
            page = await c.get("/login")
            r = await c.post(
                "/login", data={"user": "staff", "password": PASSWORD, "csrf": csrf_of(page.text)}
            )
            assert "Secure" in r.headers["set-cookie"]


async def test_staff_cannot_reach_admin_actions(db: Path) -> None:
    """Import, export, the audit log and deleting voicemail are admin only."""
    with console(db) as (con, _tokens):
        async with client(con) as c:
            csrf = await login(c, "staff")
            assert (await c.get("/lists/export")).status_code == 403
            assert (await c.get("/audit")).status_code == 403
            r = await c.post(
                "/lists/import",
                data={"csrf": csrf},
                files={"file": ("x.csv", b"number,kind\n0312345678,block\n", "text/csv")},
            )
            assert r.status_code == 403
            r = await c.post("/voicemail/m1/delete", data={"csrf": csrf})
            assert r.status_code == 403
            assert "Import" not in (await c.get("/lists", params={"lang": "en"})).text
        assert con.store.entries_for("+81312345678") == []


async def test_block_from_a_row_is_audited_with_a_web_source(db: Path) -> None:
    """Blocking from the call log stores an entry with source web:<user> and an audit row."""
    with console(db) as (con, _):
        async with client(con) as c:
            csrf = await login(c, "staff")
            r = await c.post(
                "/calls/action",
                data={"csrf": csrf, "number": "+81312345678", "action": "block", "back": "/calls"},
            )
            assert r.status_code == 303 and "msg=" in r.headers["location"]
            (entry,) = con.store.entries_for("+81312345678")
            assert (entry.kind, entry.source) == ("block", "web:staff")
            check = (await c.get("/api/check", params={"number": "03-1234-5678"})).json()
            assert check["route"] == "voicemail"
            audit = con.store.audit_log()
            assert audit[0].user == "staff" and audit[0].action == "entry.block"
            r = await c.post(
                "/calls/action",
                data={"csrf": csrf, "number": "+81312345678", "action": "forget"},
            )
            assert con.store.entries_for("+81312345678") == []


async def test_a_bad_number_says_so_and_changes_nothing(db: Path) -> None:
    """Bad input in a form or the API gets a clear error naming it; nothing is written."""
    with console(db) as (con, tokens):
        async with client(con) as c:
            csrf = await login(c, "staff")
            r = await c.post(
                "/lists/add", data={"csrf": csrf, "number": "not a number", "kind": "block"}
            )
            assert r.status_code == 303 and "error=" in r.headers["location"]
            page = await c.get(r.headers["location"])
            assert "is not a phone number" in page.text
            r = await c.post(
                "/lists/add",
                data={
                    "csrf": csrf,
                    "number": "0312345678",
                    "kind": "block",
                    "expires": "yesterday",
                },
            )
            assert "error=" in r.headers["location"]
            bearer = {"Authorization": f"Bearer {tokens['staff']}"}
            r = await c.post("/api/entries", json={"number": "12", "kind": "block"}, headers=bearer)
            assert r.status_code == 400 and "phone number" in r.json()["detail"]
            r = await c.post(
                "/api/entries", json={"number": "0312345678", "kind": "maybe"}, headers=bearer
            )
            assert r.status_code == 422 and "kind" in r.json()["detail"]
            r = await c.get("/calls", params={"number": "abc"})
            assert r.status_code == 400 and "number" in r.text
        assert con.store.search_entries() == []
        assert not [a for a in con.store.audit_log() if a.user != "cli"]


async def test_csv_import_is_all_or_nothing_with_per_line_errors(db: Path) -> None:
    """One bad row: every bad line is named and nothing is imported; a good file imports."""
    bad = "number,kind\n0312345678,block\nbogus,block\n09011112222,allow\n+81,nope\n"
    good = "number,kind,label\n0312345678,block,spam\n09011112222,allow,\n"
    with console(db) as (con, _):
        async with client(con) as c:
            csrf = await login(c, "admin")
            r = await c.post(
                "/lists/import",
                data={"csrf": csrf},
                files={"file": ("bad.csv", bad.encode(), "text/csv")},
            )
            page = await c.get(r.headers["location"])
            assert "line 3" in page.text and "line 5" in page.text
            assert "nothing imported" in page.text
            assert con.store.search_entries() == []
            r = await c.post(
                "/lists/import",
                data={"csrf": csrf},
                files={"file": ("good.csv", good.encode(), "text/csv")},
            )
            assert "imported+2" in r.headers["location"]
            assert {e.number for e in con.store.search_entries()} == {
                "+81312345678",
                "+819011112222",
            }
            export = await c.get("/lists/export")
            assert export.status_code == 200 and "+81312345678" in export.text


async def test_hostile_caller_data_is_rendered_escaped(db: Path) -> None:
    """Caller names and numbers from the log never become markup, on any page."""
    with console(db) as (con, _):
        async with client(con) as c:
            await login(c, "staff")
            for path in ("/calls", "/numbers/%2B81312345678", "/"):
                html = (await c.get(path)).text
                assert "<script>alert" not in html and "<svg onload" not in html
                assert "<img src=x" not in html
            calls = (await c.get("/calls")).text
            assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in calls
            assert "&#34;&gt;&lt;svg onload=alert(2)&gt;" in calls
            r = await c.get("/calls")
            assert "script-src 'self'" in r.headers["content-security-policy"]


async def test_calls_page_filters_and_pages(tmp_path: Path) -> None:
    """Filter by route; pages of 50 link to the older page by rowid."""
    path = tmp_path / "s.db"
    await make_db(path, [call(n, route="staff" if n % 2 else "challenge") for n in range(120)])
    with console(path) as (con, tokens):
        async with client(con) as c:
            bearer = {"Authorization": f"Bearer {tokens['staff']}"}
            page = (await c.get("/api/calls", params={"route": "staff"}, headers=bearer)).json()
            assert len(page["calls"]) == 50 and {x["route"] for x in page["calls"]} == {"staff"}
            seen = [x["call_id"] for x in page["calls"]]
            while page["next_before"]:
                page = (
                    await c.get(
                        "/api/calls",
                        headers=bearer,
                        params={"route": "staff", "before": page["next_before"]},
                    )
                ).json()
                seen += [x["call_id"] for x in page["calls"]]
            assert len(seen) == len(set(seen)) == 60
            await login(c, "staff")
            html = (await c.get("/calls")).text
            assert html.count("data-rowid=") == 50 and "before=" in html


async def test_live_stream_sends_calls_written_after_the_page(db: Path) -> None:
    """The SSE stream carries a call the agent records after the page was drawn."""
    with console(db) as (con, _):
        async with client(con) as c:
            await login(c, "staff")
            last = con.store.last_rowid()
            from screener.store import Store

            async with Store.open(db) as store:
                await store.record_call(call(99, name="新しい着信"))
            r = await c.get("/calls/stream", params={"after": last})
            assert r.headers["content-type"].startswith("text/event-stream")
            assert "event: call" in r.text and "新しい着信" in r.text
            assert r.text.count("event: call") == 1


async def test_language_follows_accept_language_and_the_switch(db: Path) -> None:
    """Japanese first; English for a browser that prefers it, or after the switch."""
    with console(db) as (con, _):
        async with client(con) as c:
            assert "ログイン" in (await c.get("/login")).text
            en = await c.get("/login", headers={"Accept-Language": "en-US,en;q=0.9,ja;q=0.5"})
            assert "Log in" in en.text
            await c.get("/lang/en", params={"next": "/login"})
            assert "Log in" in (await c.get("/login")).text


def _wav(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x01\x00" * 8000)


async def test_voicemail_plays_with_range_requests(db: Path, tmp_path: Path) -> None:
    """Audio is served whole or by byte range (206), and a range past the end is 416."""
    box = tmp_path / "voicemail" / "office" / "100"
    _wav(box / "INBOX" / "msg0000.wav")
    (box / "INBOX" / "msg0000.txt").write_text(
        '[message]\ncallerid="<b>x</b>" <0312345678>\norigtime=1700000000\nduration=1\n'
        "msg_id=1700000000-00000001\n"
    )
    with console(db, box) as (con, tokens):
        async with client(con) as c:
            bearer = {"Authorization": f"Bearer {tokens['staff']}"}
            (msg,) = (await c.get("/api/voicemail", headers=bearer)).json()
            assert msg["caller_number"] == "0312345678" and msg["caller_name"] == "<b>x</b>"
            url = f"/voicemail/{msg['id']}/audio"
            whole = await c.get(url, headers=bearer)
            assert whole.status_code == 200 and whole.headers["accept-ranges"] == "bytes"
            part = await c.get(url, headers={**bearer, "Range": "bytes=100-199"})
            assert part.status_code == 206 and part.content == whole.content[100:200]
            assert part.headers["content-range"] == f"bytes 100-199/{len(whole.content)}"
            with wave.open(io.BytesIO(whole.content)) as played:
                assert played.getnframes() == 8000
            r = await c.get(url, headers={**bearer, "Range": "bytes=999999-"})
            assert r.status_code == 416
            csrf = await login(c, "staff")
            page = (await c.get("/voicemail")).text
            assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page
            await c.post(f"/voicemail/{msg['id']}/heard", data={"csrf": csrf})
            assert msg["id"] in con.store.heard()
            c.cookies.clear()
            csrf = await login(c, "admin")
            await c.post(f"/voicemail/{msg['id']}/delete", data={"csrf": csrf})
            assert not (box / "INBOX" / "msg0000.wav").exists()


async def test_api_token_needs_no_csrf_and_records_the_user(db: Path) -> None:
    """A bearer request adds an entry (no CSRF: no ambient credential); source web:<user>."""
    with console(db) as (con, tokens):
        async with client(con) as c:
            bearer = {"Authorization": f"Bearer {tokens['admin']}"}
            r = await c.post(
                "/api/entries",
                headers=bearer,
                json={"number": "0120-444-444", "kind": "block", "prefix": True, "label": "spam"},
            )
            assert r.status_code == 200, r.text
            assert r.json()["entry"]["source"] == "web:admin"
            r = await c.patch(
                "/api/entries",
                headers=bearer,
                json={"number": "0120-444-444", "prefix": True, "label": "new", "expires": "30d"},
            )
            assert r.json()["label"] == "new" and r.json()["expires_at"]
            r = await c.delete(
                "/api/entries", headers=bearer, params={"number": "0120-444-444", "prefix": "true"}
            )
            assert r.status_code == 200
            r = await c.delete(
                "/api/entries", headers=bearer, params={"number": "0120-444-444", "prefix": "true"}
            )
            assert r.status_code == 404


async def test_console_refuses_a_broad_prefix_rule(db: Path) -> None:
    """A prefix covering a country code or over a tenth of the home plan is refused, by the API
    and by the form, and the lists stay as they were: the console has no --force."""
    with console(db) as (con, tokens):
        async with client(con) as c:
            bearer = {"Authorization": f"Bearer {tokens['admin']}"}
            for number in ("+1", "09"):
                r = await c.post(
                    "/api/entries",
                    headers=bearer,
                    json={"number": number, "kind": "block", "prefix": True},
                )
                assert r.status_code == 400, r.text
                assert "screener list add --force" in r.json()["detail"]
            csrf = await login(c, "admin")
            r = await c.post(
                "/lists/add",
                data={"csrf": csrf, "number": "+1", "kind": "block", "prefix": "true"},
            )
            assert "country code +1" in (await c.get(r.headers["location"])).text
            assert list(con.store.export_entries()) == []
            r = await c.post(
                "/api/entries",
                headers=bearer,
                json={"number": "03-1234", "kind": "block", "prefix": True},
            )
            assert r.status_code == 200, r.text


def test_webstore_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    """The console never runs on a database from an older schema."""
    import sqlite3

    from screener.errors import StoreError

    path = tmp_path / "old.db"
    sqlite3.connect(path).execute("PRAGMA user_version = 1").connection.close()
    with pytest.raises(StoreError, match="screener init"), WebStore.open(path):
        pass


def test_openapi_lists_the_api(db: Path) -> None:
    """The OpenAPI document covers calls, entries, check and voicemail, and no page."""
    with console(db) as (con, _):
        spec = create_app(con).openapi()
        paths = set(spec["paths"])
        assert {"/api/calls", "/api/entries", "/api/check", "/api/voicemail"} <= paths
        assert not [p for p in paths if not p.startswith("/api/")]
        assert re.match(r"3\.", spec["openapi"])


async def test_dashboard_counts_by_local_day_and_route(tmp_path: Path) -> None:
    """Today, the last 7 days and 30 days are counted in the office's time zone, by route."""
    from zoneinfo import ZoneInfo

    from screener.store import Store

    tokyo = ZoneInfo("Asia/Tokyo")
    now = dt.datetime(2026, 12, 2, 1, 0, tzinfo=tokyo)  # 01:00 in Tokyo, still Dec 1 in UTC
    path = tmp_path / "d.db"
    records = [
        call(1, route="staff", at=now - dt.timedelta(minutes=30)),  # today (Tokyo)
        call(2, route="challenge", at=now - dt.timedelta(minutes=50)),  # today
        call(3, route="challenge", at=now - dt.timedelta(hours=2)),  # yesterday (23:00)
        call(4, route="reject", at=now - dt.timedelta(days=10)),  # 30 days only
        call(5, route="staff", at=now - dt.timedelta(days=40)),  # out of range
    ]
    await make_db(path, records)
    async with Store.open(path) as store:
        await store.set_outcome("c2", "pass", now)
        await store.set_outcome("c3", "fail", now)
    with WebStore.open(path) as store:
        board = store.dashboard(now.astimezone(dt.UTC), tokyo)
    assert board.today == {"staff": 1, "challenge": 1}
    assert board.week == {"staff": 1, "challenge": 2}
    assert len(board.days) == 30 and board.days[-1][0] == "2026-12-02"
    assert sum(sum(c.values()) for _, c in board.days) == 4
    assert (board.challenged, board.passed) == (2, 1)
    assert board.top_challenged == [("+81312345678", 2)]


async def test_edit_and_remove_an_entry_from_the_lists_page(db: Path) -> None:
    """Label, note and expiry change in place; remove takes the entry off; both audited."""
    with console(db) as (con, _):
        async with client(con) as c:
            csrf = await login(c, "staff")
            await c.post(
                "/lists/add",
                data={"csrf": csrf, "number": "03-1234-5678", "kind": "allow", "label": "old"},
            )
            r = await c.post(
                "/lists/edit",
                data={
                    "csrf": csrf,
                    "number": "+81312345678",
                    "label": "お客様",
                    "note": "n",
                    "expires": "30d",
                },
            )
            assert "msg=" in r.headers["location"]
            (entry,) = con.store.entries_for("+81312345678")
            assert (entry.label, entry.note, entry.source) == ("お客様", "n", "web:staff")
            assert entry.expires_at is not None
            page = await c.get("/lists", params={"q": "お客"})
            assert "+81312345678" in page.text
            await c.post("/lists/remove", data={"csrf": csrf, "number": "+81312345678"})
            assert con.store.entries_for("+81312345678") == []
        actions = [a.action for a in con.store.audit_log() if a.user == "staff"]
        assert actions == ["entry.remove", "entry.edit", "entry.allow"]


async def test_list_search_by_number_prefix_or_text(db: Path) -> None:
    """A number-like query finds numbers starting with it; other text searches labels, notes."""
    with console(db) as (con, tokens):
        async with client(con) as c:
            bearer = {"Authorization": f"Bearer {tokens['staff']}"}
            for number, label in (
                ("0120-444-444", "robo"),
                ("0312345678", "客先"),
                ("0120121852", "sales"),
            ):
                r = await c.post(
                    "/api/entries",
                    headers=bearer,
                    json={"number": number, "kind": "block", "label": label},
                )
                assert r.status_code == 200
            found = (await c.get("/api/entries", params={"q": "0120"}, headers=bearer)).json()
            assert [e["number"] for e in found] == ["+81120121852", "+81120444444"]
            found = (await c.get("/api/entries", params={"q": "客"}, headers=bearer)).json()
            assert [e["number"] for e in found] == ["+81312345678"]
            found = (await c.get("/api/entries", params={"q": "100%_"}, headers=bearer)).json()
            assert found == []


async def test_dashboard_shows_what_the_agent_last_reported(db: Path) -> None:
    """Connected, disconnected, a report too old to believe, and none, from ``<db>.agent``."""
    import time

    from screener import agentstatus

    with console(db) as (con, tokens):
        async with client(con) as c:
            bearer = {"Authorization": f"Bearer {tokens['staff']}"}
            await login(c, "staff")

            async def shown() -> tuple[str, str]:
                page = (await c.get("/", headers={"Accept-Language": "en"})).text
                found = re.search(r'<p id="agent" class="agent-(\w+)">([^<]*)</p>', page)
                assert found, page
                api = (await c.get("/api/dashboard", headers=bearer)).json()
                assert api["agent"] == found.group(1)
                return found.group(1), found.group(2)

            assert await shown() == ("not_running", "not running")
            agentstatus.write(db, True, time.time())
            assert await shown() == ("connected", "connected to Asterisk")
            agentstatus.write(db, False, time.time() - 10)
            assert await shown() == ("disconnected", "running, but not connected to Asterisk")
            agentstatus.write(db, True, time.time() - agentstatus.STALE_AFTER - 5)
            assert await shown() == ("stale", "no recent report (it may have stopped)")
