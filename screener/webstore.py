"""The web console's queries: users, tokens, the audit trail, and paged views of calls and lists.

All of the console's SQL lives here (none in route handlers). It talks to the same SQLite file
as the agent (WAL: its reads never wait for the agent's writes) through plain ``sqlite3``
connections, one per thread, because FastAPI runs the console's plain ``def`` handlers in a
thread pool. :meth:`screener.store.Store.open` creates and migrates the schema first; this
module only checks the version.

Every list change is written in one transaction together with its audit row, so an audited
change and its audit trail cannot part. Every query is bounded (a LIMIT) and indexed.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from screener.config import SharedConfig
from screener.errors import InputError, SharedError, StoreError
from screener.policy import SOURCE_CALLED, SOURCE_LEARNED, Entry, ListKind
from screener.store import (
    ENTRY_COLUMNS,
    SCHEMA_VERSION,
    UPSERT_ENTRY,
    CallRecord,
    entry_from_row,
    entry_params,
    from_ts,
    to_opt_ts,
    to_ts,
)
from screener.users import Role, User

_CALL_COLUMNS = (
    "rowid, call_id, received_at, raw_number, raw_name, e164, category, did, route, rule,"
    " reasons, latency_ms, outcome, outcome_at, voicemail, fallback"
)
MAX_PAGE = 500


@dataclass(frozen=True, slots=True)
class CallRow:
    """A call log record and its rowid (the order calls were written in; pages key on it)."""

    rowid: int
    call: CallRecord
    site: str | None = None  # set for rows of the all-sites call log ([shared])


def _call(row: Sequence[Any]) -> CallRow:
    received = from_ts(row[2])
    assert received is not None  # NOT NULL column
    try:
        reasons = tuple(str(r) for r in json.loads(row[10]))
    except (ValueError, TypeError):
        reasons = (str(row[10]),)
    return CallRow(
        row[0],
        CallRecord(
            call_id=row[1],
            received_at=received,
            raw_number=row[3],
            raw_name=row[4],
            e164=row[5],
            category=row[6],
            did=row[7],
            route=row[8],
            rule=row[9],
            reasons=reasons,
            latency_ms=row[11],
            outcome=row[12],
            outcome_at=from_ts(row[13]),
            voicemail=row[14],
            fallback=bool(row[15]),
        ),
    )


def _user(row: Sequence[Any]) -> User:
    return User(id=row[0], name=row[1], role=Role(row[2]), epoch=row[3])


@dataclass(frozen=True, slots=True)
class CallFilter:
    """What the call log page may filter on; None means any."""

    route: str | None = None
    outcome: str | None = None
    e164: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class AuditRow:
    at: dt.datetime
    user: str
    action: str
    target: str
    detail: str


@dataclass(frozen=True, slots=True)
class Dashboard:
    """The dashboard's figures; days are local dates (ISO), newest last."""

    today: dict[str, int]
    week: dict[str, int]
    days: list[tuple[str, dict[str, int]]]
    challenged: int
    passed: int
    top_blocked: list[Entry]
    top_challenged: list[tuple[str, int]]
    last_call: dt.datetime | None


@dataclass
class DayStats:
    """What the dashboard needs of one day's calls."""

    routes: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    challenged: Counter[str] = field(default_factory=Counter)

    def add(self, other: DayStats) -> None:
        for mine, theirs in ((self.routes, other.routes), (self.outcomes, other.outcomes)):
            for key, count in theirs.items():
                mine[key] = mine.get(key, 0) + count
        self.challenged.update(other.challenged)


DAY_SETTLES = dt.timedelta(minutes=10)
TOP_BLOCKED_TTL = dt.timedelta(seconds=60)


class WebStore:
    """The console's view of one screener database. Use :meth:`open`; thread-safe."""

    def __init__(self, path: Path, busy_timeout: float = 5.0) -> None:
        self.path = path
        # [shared]: the call log can show every site's calls from the central store.
        self.shared: SharedConfig | None = None
        self._busy = busy_timeout
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._days: dict[tuple[float, float], DayStats] = {}
        self._top_blocked_cache: tuple[dt.datetime, list[Entry]] | None = None
        self._week_cache: tuple[tuple[tuple[float, float], ...], DayStats] | None = None

    @classmethod
    @contextmanager
    def open(cls, path: str | Path) -> Iterator[WebStore]:
        """The console's store for an existing, migrated database; closes every connection."""
        store = cls(Path(path))
        if not store.path.is_file():
            raise StoreError(f"database {path} does not exist; create it with `screener init`")
        try:
            with store._guard("open"):
                version = store._conn().execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:
                raise StoreError(
                    f"database {path} has schema {version}, this screener needs"
                    f" {SCHEMA_VERSION}; run `screener init`"
                )
            yield store
        finally:
            store.close()

    def close(self) -> None:
        with self._all_lock:
            for conn in self._all:
                conn.close()
            self._all.clear()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path, timeout=self._busy, isolation_level=None, check_same_thread=False
            )
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy * 1000)}")
            conn.execute("PRAGMA foreign_keys = ON")
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.IntegrityError as exc:
            raise InputError(f"{action}: {exc}") from exc
        except sqlite3.Error as exc:
            text = str(exc)
            if "locked" in text or "busy" in text:
                raise StoreError(f"database {self.path} is busy ({action}); try again") from exc
            raise StoreError(f"database {self.path}: {action} failed: {text}") from exc

    def _all_rows(self, action: str, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._guard(action):
            return self._conn().execute(sql, params).fetchall()

    @contextmanager
    def _tx(self, action: str) -> Iterator[sqlite3.Connection]:
        with self._guard(action):
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    @staticmethod
    def _audit(
        conn: sqlite3.Connection, user: str, action: str, target: str, detail: str, now: dt.datetime
    ) -> None:
        conn.execute(
            "INSERT INTO web_audit (at, user, action, target, detail) VALUES (?, ?, ?, ?, ?)",
            (to_ts(now), user, action, target, detail),
        )

    # --- users and tokens ----------------------------------------------------------------------

    def add_user(self, name: str, role: Role, password_hash: str, now: dt.datetime) -> User:
        """A new user; InputError if the name is taken."""
        with self._tx("add user") as conn:
            if conn.execute("SELECT 1 FROM web_users WHERE name = ?", (name,)).fetchone():
                raise InputError(f"user {name} already exists")
            row = conn.execute(
                "INSERT INTO web_users (name, role, password_hash, created_at) VALUES (?, ?, ?, ?)"
                " RETURNING id, name, role, epoch",
                (name, str(role), password_hash, to_ts(now)),
            ).fetchone()
            self._audit(conn, "cli", "user.add", name, str(role), now)
        return _user(row)

    def remove_user(self, name: str, now: dt.datetime) -> bool:
        """Delete the user (and their tokens); False if there was none."""
        with self._tx("remove user") as conn:
            gone = conn.execute("DELETE FROM web_users WHERE name = ?", (name,)).rowcount
            if gone:
                self._audit(conn, "cli", "user.remove", name, "", now)
        return gone > 0

    def set_password(self, name: str, password_hash: str, now: dt.datetime) -> bool:
        """Change the password and end every session of the user; False if no such user."""
        with self._tx("set password") as conn:
            changed = conn.execute(
                "UPDATE web_users SET password_hash = ?, epoch = epoch + 1 WHERE name = ?",
                (password_hash, name),
            ).rowcount
            if changed:
                self._audit(conn, "cli", "user.passwd", name, "", now)
        return changed > 0

    def users(self) -> list[User]:
        rows = self._all_rows(
            "list users", "SELECT id, name, role, epoch FROM web_users ORDER BY name"
        )
        return [_user(r) for r in rows]

    def login_record(self, name: str) -> tuple[User, str] | None:
        """The user called ``name`` and their password hash, if any."""
        rows = self._all_rows(
            "find user",
            "SELECT id, name, role, epoch, password_hash FROM web_users WHERE name = ?",
            (name,),
        )
        return (_user(rows[0]), rows[0][4]) if rows else None

    def user(self, user_id: int) -> User | None:
        rows = self._all_rows(
            "find user", "SELECT id, name, role, epoch FROM web_users WHERE id = ?", (user_id,)
        )
        return _user(rows[0]) if rows else None

    def end_sessions(self, user_id: int) -> None:
        """Every session cookie of the user stops working (logout)."""
        with self._tx("log out") as conn:
            conn.execute("UPDATE web_users SET epoch = epoch + 1 WHERE id = ?", (user_id,))

    def add_token(self, name: str, digest: str, now: dt.datetime) -> bool:
        """Keep a new API token's digest for the user; False if no such user."""
        with self._tx("add token") as conn:
            row = conn.execute("SELECT id FROM web_users WHERE name = ?", (name,)).fetchone()
            if row is None:
                return False
            conn.execute(
                "INSERT INTO web_tokens (user_id, digest, created_at) VALUES (?, ?, ?)",
                (row[0], digest, to_ts(now)),
            )
            self._audit(conn, "cli", "user.token", name, "", now)
        return True

    def token_user(self, digest: str) -> User | None:
        """The user an API token (by its digest) belongs to, if any."""
        rows = self._all_rows(
            "check token",
            "SELECT u.id, u.name, u.role, u.epoch FROM web_tokens t"
            " JOIN web_users u ON u.id = t.user_id WHERE t.digest = ?",
            (digest,),
        )
        return _user(rows[0]) if rows else None

    def secret_key(self) -> str:
        """The key session cookies are signed with, made on first use; kept in the database so
        that every console process of one office agrees and restarts keep people logged in."""
        with self._tx("session key") as conn:
            conn.execute(
                "INSERT OR IGNORE INTO web_secret (id, key) VALUES (1, ?)",
                (secrets.token_urlsafe(48),),
            )
            return str(conn.execute("SELECT key FROM web_secret WHERE id = 1").fetchone()[0])

    def audit_log(self, limit: int = 100) -> list[AuditRow]:
        rows = self._all_rows(
            "audit log",
            "SELECT at, user, action, target, detail FROM web_audit ORDER BY id DESC LIMIT ?",
            (min(limit, MAX_PAGE),),
        )
        return [AuditRow(from_ts(r[0]) or dt.datetime.min, r[1], r[2], r[3], r[4]) for r in rows]

    # --- calls ---------------------------------------------------------------------------------

    def calls(self, where: CallFilter, *, before: int | None, limit: int) -> list[CallRow]:
        """A page of the call log, newest first, starting just after (older than) the call with
        rowid ``before``."""
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("route", where.route), ("outcome", where.outcome)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if where.e164 is not None:
            clauses.append("e164 = ?")
            params.append(where.e164)
        if where.since is not None:
            clauses.append("received_at >= ?")
            params.append(to_ts(where.since))
        if where.until is not None:
            clauses.append("received_at < ?")
            params.append(to_ts(where.until))
        if before is not None:
            # Keyset on (received_at, rowid): the page after the row ``before``, in time order.
            clauses.append(
                "(received_at, rowid) < ((SELECT received_at FROM calls WHERE rowid = ?), ?)"
            )
            params += [before, before]
        sql = f"SELECT {_CALL_COLUMNS} FROM calls"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY received_at DESC, rowid DESC LIMIT ?"
        params.append(max(1, min(limit, MAX_PAGE)))
        return [_call(r) for r in self._all_rows("list calls", sql, params)]

    def site_calls(
        self,
        where: CallFilter,
        *,
        site: str | None,
        after: tuple[float, str, str] | None,
        limit: int,
    ) -> list[CallRow]:
        """A page of every site's call log from the central store ([shared]), newest first.

        Waits at most a couple of seconds; raises SharedError when the central store cannot
        answer (the page then shows this site's own log, with a notice).
        """
        if self.shared is None:
            raise SharedError("no [shared] store is configured")
        from screener.shared.central import call_log  # psycopg only with [shared]

        filters: list[tuple[str, Any]] = [
            (column, value)
            for column, value in (
                ("site", site),
                ("route", where.route),
                ("outcome", where.outcome),
                ("e164", where.e164),
                ("since", to_ts(where.since) if where.since else None),
                ("until", to_ts(where.until) if where.until else None),
            )
            if value is not None
        ]
        rows = call_log(self.shared, filters, after, max(1, min(limit, MAX_PAGE)))
        return [CallRow(0, _call((0, *r[1:])).call, r[0]) for r in rows]

    def calls_after(self, rowid: int, limit: int = 100) -> list[CallRow]:
        """Calls written after ``rowid``, oldest first (what the live view has not shown yet)."""
        rows = self._all_rows(
            "new calls",
            f"SELECT {_CALL_COLUMNS} FROM calls WHERE rowid > ? ORDER BY rowid LIMIT ?",
            (rowid, max(1, min(limit, MAX_PAGE))),
        )
        return [_call(r) for r in rows]

    def last_rowid(self) -> int:
        rows = self._all_rows("last call", "SELECT max(rowid) FROM calls")
        return int(rows[0][0] or 0)

    def call(self, call_id: str) -> CallRow | None:
        rows = self._all_rows(
            "get call",
            f"SELECT {_CALL_COLUMNS} FROM calls WHERE call_id = ?",
            (call_id,),
        )
        return _call(rows[0]) if rows else None

    def _day(self, start: dt.datetime, end: dt.datetime) -> DayStats:
        """One day's calls by route, challenge outcomes, and challenged numbers: one pass over
        the (received_at, route, outcome, e164) index, no table reads."""
        stats = DayStats()
        rows = self._all_rows(
            "dashboard day",
            "SELECT route, outcome, e164 FROM calls INDEXED BY calls_received_covering"
            " WHERE received_at >= ? AND received_at < ?",
            (to_ts(start), to_ts(end)),
        )
        for route, outcome, e164 in rows:
            stats.routes[route] = stats.routes.get(route, 0) + 1
            if route == "challenge":
                stats.outcomes[outcome or ""] = stats.outcomes.get(outcome or "", 0) + 1
                if e164:
                    stats.challenged[e164] += 1
        return stats

    def _day_cached(self, start: dt.datetime, end: dt.datetime, now: dt.datetime) -> DayStats:
        # A day that ended a while ago no longer changes (outcomes arrive within minutes).
        settled = end + DAY_SETTLES <= now
        key = (to_ts(start), to_ts(end))
        if settled:
            with self._cache_lock:
                hit = self._days.get(key)
            if hit is not None:
                return hit
        stats = self._day(start, end)
        if settled:
            with self._cache_lock:
                if len(self._days) > 400:
                    self._days.clear()
                self._days[key] = stats
        return stats

    def _top_blocked(self, now: dt.datetime) -> list[Entry]:
        # A scan of the block list (no index on hits: the agent bumps hits on every call, and
        # an index would make each of those writes dearer); cached for a minute.
        with self._cache_lock:
            cached = self._top_blocked_cache
        if cached is not None and now - cached[0] < TOP_BLOCKED_TTL:
            return cached[1]
        top = [
            entry_from_row(r)
            for r in self._all_rows(
                "top blocked",
                f"SELECT {ENTRY_COLUMNS} FROM entries WHERE kind = 'block' AND hits > 0"
                " ORDER BY hits DESC LIMIT 10",
            )
        ]
        with self._cache_lock:
            self._top_blocked_cache = (now, top)
        return top

    def _week(self, days: list[tuple[tuple[float, float], DayStats]]) -> DayStats:
        """The sum of the week's days; the settled days' sum is kept (merging the numbers of
        six days costs more than counting today)."""
        settled = [(key, stats) for key, stats in days if key[1] >= 0]
        fresh = [stats for key, stats in days if key[1] < 0]
        key = tuple(k for k, _ in settled)
        with self._cache_lock:
            cached = self._week_cache
        if cached is None or cached[0] != key:
            base = DayStats()
            for _, stats in settled:
                base.add(stats)
            cached = (key, base)
            with self._cache_lock:
                self._week_cache = cached
        week = DayStats()
        week.add(cached[1])
        for stats in fresh:
            week.add(stats)
        return week

    def dashboard(self, now: dt.datetime, tz: dt.tzinfo) -> Dashboard:
        """Today's and the last 7 days' calls by route, 30 days by day, and the top numbers.

        Days are the office's local days. Each settled day is counted once and kept in memory,
        so a refresh reads only today's calls.
        """
        local = now.astimezone(tz)
        today = local.date()
        days: list[tuple[str, dict[str, int]]] = []
        week_days: list[tuple[tuple[float, float], DayStats]] = []
        for back in range(29, -1, -1):
            date = today - dt.timedelta(days=back)
            start = dt.datetime.combine(date, dt.time(), tz)
            end = dt.datetime.combine(date + dt.timedelta(days=1), dt.time(), tz)
            stats = self._day_cached(start, end, now)
            days.append((date.isoformat(), dict(stats.routes)))
            if back < 7:
                settled = end + DAY_SETTLES <= now
                week_days.append(((to_ts(start), to_ts(end) if settled else -1.0), stats))
        week = self._week(week_days)
        last = self._all_rows("last call", "SELECT max(received_at) FROM calls")
        return Dashboard(
            today=days[-1][1],
            week=dict(week.routes),
            days=days,
            challenged=sum(week.outcomes.values()),
            passed=week.outcomes.get("pass", 0),
            top_blocked=self._top_blocked(now),
            top_challenged=week.challenged.most_common(10),
            last_call=from_ts(last[0][0]),
        )

    # --- list entries --------------------------------------------------------------------------

    def search_entries(
        self,
        *,
        number: str = "",
        text: str = "",
        kind: ListKind | None = None,
        source: str | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> list[Entry]:
        """Entries whose number starts with ``number`` (a range on the key's index) and whose
        label or note holds ``text`` (a scan: bounded by LIMIT, slow on huge lists); by number."""
        clauses: list[str] = []
        params: list[Any] = []
        if number:
            clauses.append("number >= ? AND number < ?")
            params += [number, number[:-1] + chr(ord(number[-1]) + 1)]
        if text:
            like = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            clauses.append("(label LIKE ? ESCAPE '\\' OR note LIKE ? ESCAPE '\\')")
            params += [like, like]
        if kind is not None:
            clauses.append("kind = ?")
            params.append(str(kind))
        if source is not None:
            clauses.append("source = ?")
            params.append(source)
        sql = f"SELECT {ENTRY_COLUMNS} FROM entries"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY number, prefix LIMIT ? OFFSET ?"
        params += [max(1, min(limit, MAX_PAGE)), max(0, min(offset, 10_000_000))]
        return [entry_from_row(r) for r in self._all_rows("search entries", sql, params)]

    def entry(self, number: str, prefix: bool) -> Entry | None:
        rows = self._all_rows(
            "get entry",
            f"SELECT {ENTRY_COLUMNS} FROM entries WHERE number = ? AND prefix = ?",
            (number, int(prefix)),
        )
        return entry_from_row(rows[0]) if rows else None

    def entries_for(self, e164: str) -> list[Entry]:
        """The exact entry for ``e164`` and every prefix rule it falls under."""
        candidates = [e164[:n] for n in range(2, len(e164) + 1)]
        if not candidates:
            return []
        marks = ", ".join("?" * len(candidates))
        rows = self._all_rows(
            "entries for number",
            f"SELECT {ENTRY_COLUMNS} FROM entries WHERE number IN ({marks})"
            " ORDER BY prefix, number",
            candidates,
        )
        return [e for e in map(entry_from_row, rows) if e.prefix or e.number == e164]

    def put_entry(self, entry: Entry, user: str, now: dt.datetime) -> tuple[Entry, Entry | None]:
        """Store ``entry`` (replacing the entry with its key) and audit it; (stored, previous)."""
        with self._tx("add entry") as conn:
            old = conn.execute(
                f"SELECT {ENTRY_COLUMNS} FROM entries WHERE number = ? AND prefix = ?",
                (entry.number, int(entry.prefix)),
            ).fetchone()
            row = conn.execute(
                UPSERT_ENTRY + f" RETURNING {ENTRY_COLUMNS}", entry_params(entry)
            ).fetchone()
            stored = entry_from_row(row)
            self._audit(conn, user, f"entry.{entry.kind}", stored.describe(), "", now)
        return stored, (entry_from_row(old) if old else None)

    def edit_entry(
        self,
        number: str,
        prefix: bool,
        *,
        label: str,
        note: str,
        expires_at: dt.datetime | None,
        user: str,
        now: dt.datetime,
    ) -> Entry | None:
        """Change an entry's label, note and expiry; None if there is no such entry."""
        with self._tx("edit entry") as conn:
            row = conn.execute(
                "UPDATE entries SET label = ?, note = ?, expires_at = ?"
                f" WHERE number = ? AND prefix = ? RETURNING {ENTRY_COLUMNS}",
                (label, note, to_opt_ts(expires_at), number, int(prefix)),
            ).fetchone()
            if row is None:
                return None
            stored = entry_from_row(row)
            self._audit(conn, user, "entry.edit", stored.describe(), "", now)
        return stored

    def remove_entry(self, number: str, prefix: bool, user: str, now: dt.datetime) -> Entry | None:
        """Delete the entry for (number, prefix) and audit it; the entry, or None."""
        with self._tx("remove entry") as conn:
            row = conn.execute(
                f"DELETE FROM entries WHERE number = ? AND prefix = ? RETURNING {ENTRY_COLUMNS}",
                (number, int(prefix)),
            ).fetchone()
            if row is None:
                return None
            gone = entry_from_row(row)
            self._audit(conn, user, "entry.remove", gone.describe(), "", now)
        return gone

    def forget(self, e164: str, user: str, now: dt.datetime) -> int:
        """Forget what the screener learned about ``e164`` (a ``learned`` or ``called`` entry;
        manual and staff entries stay); how many went."""
        with self._tx("forget") as conn:
            count = conn.execute(
                "DELETE FROM entries WHERE source IN (?, ?) AND number = ?",
                (SOURCE_LEARNED, SOURCE_CALLED, e164),
            ).rowcount
            self._audit(conn, user, "entry.forget", e164, str(count), now)
        return count

    def import_entries(
        self, entries: Iterable[Entry], user: str, name: str, now: dt.datetime
    ) -> tuple[int, int]:
        """Upsert all ``entries`` in one transaction with one audit row; (added, replaced)."""
        rows = [entry_params(e) for e in entries]
        with self._tx("import") as conn:
            before = conn.execute("SELECT count(*) FROM entries").fetchone()[0]
            conn.executemany(UPSERT_ENTRY, rows)
            after = conn.execute("SELECT count(*) FROM entries").fetchone()[0]
            self._audit(conn, user, "entry.import", name, f"{len(rows)} rows", now)
        added = int(after - before)
        return added, len(rows) - added

    def export_entries(self, kind: ListKind | None = None) -> Iterator[Entry]:
        """Every entry (of one list), by number, fetched a chunk at a time."""
        after: tuple[str, int] = ("", -1)
        while True:
            params: list[Any] = [after[0], after[1]]
            sql = f"SELECT {ENTRY_COLUMNS} FROM entries WHERE (number, prefix) > (?, ?)"
            if kind is not None:
                sql += " AND kind = ?"
                params.append(str(kind))
            rows = self._all_rows("export", sql + " ORDER BY number, prefix LIMIT 5000", params)
            yield from map(entry_from_row, rows)
            if len(rows) < 5000:
                return
            after = (rows[-1][2], rows[-1][3])

    def audit_export(self, user: str, what: str, now: dt.datetime) -> None:
        with self._tx("audit") as conn:
            self._audit(conn, user, "entry.export", what, "", now)

    # --- voicemail -----------------------------------------------------------------------------

    def heard(self) -> set[str]:
        rows = self._all_rows("heard", "SELECT message FROM web_heard LIMIT 10000")
        return {r[0] for r in rows}

    def mark_heard(self, message: str, user: str, now: dt.datetime) -> None:
        with self._tx("mark heard") as conn:
            conn.execute(
                "INSERT OR REPLACE INTO web_heard (message, at, user) VALUES (?, ?, ?)",
                (message, to_ts(now), user),
            )
            self._audit(conn, user, "voicemail.heard", message, "", now)

    def audit_voicemail_delete(self, message: str, user: str, now: dt.datetime) -> None:
        with self._tx("delete voicemail") as conn:
            conn.execute("DELETE FROM web_heard WHERE message = ?", (message,))
            self._audit(conn, user, "voicemail.delete", message, "", now)
