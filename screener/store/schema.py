"""The schema: the ordered, append-only migrations and the application id that marks a
database as screener's (applied by :meth:`screener.store.Store.open`)."""

from __future__ import annotations

# Written into the SQLite header of every database screener creates ("SCRN"), so that we never
# mistake someone else's database for ours, nor migrate it.
APPLICATION_ID = 0x5343524E

# Fills list_counts (migration 10) from a full count: after the migration itself, and after a
# bulk write made with entries' triggers off (a snapshot's table swap, the bench's builder).
COUNT_LISTS = (
    "INSERT INTO list_counts (kind, source, n)"
    " SELECT kind, source, count(*) FROM entries GROUP BY kind, source"
)

# Each migration is a sequence of statements, applied in one transaction together with the
# ``PRAGMA user_version`` bump to its 1-based position. Never edit a released migration: append.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        f"PRAGMA application_id = {APPLICATION_ID}",
        """
        CREATE TABLE entries (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('allow', 'block')),
            number TEXT NOT NULL,
            prefix INTEGER NOT NULL CHECK (prefix IN (0, 1)),
            label TEXT NOT NULL DEFAULT '',
            source TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL,
            note TEXT NOT NULL DEFAULT '',
            hits INTEGER NOT NULL DEFAULT 0,
            last_seen REAL,
            UNIQUE (number, prefix)
        )
        """,
        """
        CREATE TABLE calls (
            call_id TEXT PRIMARY KEY,
            received_at REAL NOT NULL,
            raw_number TEXT NOT NULL,
            raw_name TEXT NOT NULL,
            e164 TEXT,
            category TEXT NOT NULL,
            did TEXT,
            route TEXT NOT NULL,
            rule TEXT NOT NULL,
            reasons TEXT NOT NULL,  -- JSON list of strings
            latency_ms REAL NOT NULL,
            outcome TEXT,
            outcome_at REAL,
            voicemail TEXT,
            fallback INTEGER NOT NULL DEFAULT 0
        )
        """,
        "CREATE INDEX calls_received_at ON calls (received_at)",
        "CREATE INDEX calls_e164_outcome ON calls (e164, outcome, received_at)",
    ),
    # The transactional outbox: events for notifications, written in the same transaction as
    # the row they describe; a sender delivers each once (``key`` is its idempotency key).
    (
        "CREATE TABLE outbox (id INTEGER PRIMARY KEY, topic TEXT NOT NULL,"
        " key TEXT NOT NULL UNIQUE, payload TEXT NOT NULL, created_at REAL NOT NULL)",
    ),
    # Notifications (docs/architecture.md): each channel's delivery state of the outbox rows,
    # an index for the sender's age window, and one that makes the metrics' per-(kind, source)
    # counts of the lists cheap.
    (
        "CREATE INDEX outbox_created_at ON outbox (created_at)",
        """
        CREATE TABLE outbox_delivery (
            outbox_id INTEGER NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
            channel TEXT NOT NULL,
            delivered_at REAL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_at REAL,
            last_error TEXT,
            PRIMARY KEY (outbox_id, channel)
        ) WITHOUT ROWID
        """,
        "CREATE INDEX entries_kind_source ON entries (kind, source)",
    ),
    (
        # The web console (screener/webstore.py): users, API tokens, the audit trail, which
        # voicemail messages were heard, and the key its session cookies are signed with.
        """
        CREATE TABLE web_users (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            role TEXT NOT NULL CHECK (role IN ('admin', 'staff')),
            password_hash TEXT NOT NULL,
            created_at REAL NOT NULL,
            epoch INTEGER NOT NULL DEFAULT 0
        )
        """,
        """
        CREATE TABLE web_tokens (
            id INTEGER PRIMARY KEY,
            user_id INTEGER NOT NULL REFERENCES web_users (id) ON DELETE CASCADE,
            digest TEXT NOT NULL UNIQUE,
            created_at REAL NOT NULL,
            last_used REAL
        )
        """,
        "CREATE INDEX web_tokens_user ON web_tokens (user_id)",
        """
        CREATE TABLE web_audit (
            id INTEGER PRIMARY KEY,
            at REAL NOT NULL,
            user TEXT NOT NULL,
            action TEXT NOT NULL,
            target TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT ''
        )
        """,
        "CREATE TABLE web_heard (message TEXT PRIMARY KEY, at REAL NOT NULL, user TEXT NOT NULL)",
        "CREATE TABLE web_secret (id INTEGER PRIMARY KEY CHECK (id = 1), key TEXT NOT NULL)",
        # The call log pages filter by route, outcome or number, newest first.
        "CREATE INDEX calls_route_received ON calls (route, received_at)",
        "CREATE INDEX calls_outcome_received ON calls (outcome, received_at)",
        "CREATE INDEX calls_e164_received ON calls (e164, received_at)",
        # The dashboard counts a day's calls from this index alone, never reading the table.
        "CREATE INDEX calls_received_covering ON calls (received_at, route, outcome, e164)",
    ),
    # 5: the call's recording (MixMonitor, after the spoken warning), if any.
    (
        "ALTER TABLE calls ADD COLUMN recording_path TEXT",
        "ALTER TABLE calls ADD COLUMN recording_seconds REAL",
    ),
    # 6: staff phones (issue 11). The last outside caller that rang each staff endpoint (so that
    # *32/*33 survive a restart and never reach another phone's caller), and each endpoint's
    # feature-code changes with the entry before and after, for *34 (undo).
    (
        """
        CREATE TABLE staff_last_caller (
            endpoint TEXT PRIMARY KEY,
            call_id TEXT NOT NULL,
            e164 TEXT,
            raw_number TEXT NOT NULL,
            category TEXT NOT NULL,
            at REAL NOT NULL
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE staff_changes (
            id INTEGER PRIMARY KEY,
            endpoint TEXT NOT NULL,
            at REAL NOT NULL,
            code TEXT NOT NULL,
            number TEXT NOT NULL,
            before TEXT,  -- JSON of the entry replaced or removed, or NULL
            after TEXT,  -- JSON of the entry stored, or NULL (removed)
            undone_at REAL
        )
        """,
        "CREATE INDEX staff_changes_endpoint ON staff_changes (endpoint, id)",
    ),
    # 7: what a staff phone chose for the call (announce screening, or *0 during the call),
    # which phone, and when.
    (
        "ALTER TABLE calls ADD COLUMN staff_choice TEXT",
        "ALTER TABLE calls ADD COLUMN staff_choice_by TEXT",
        "ALTER TABLE calls ADD COLUMN staff_choice_at REAL",
    ),
    # 8: many sites, one list (screener/shared/local.py). Triggers put every change to an
    # entry into sync_outbox and every new or changed call into sync_calls, whoever makes it
    # (the service, the CLI, the console) -- but only once this database has joined a shared
    # list (sync_state.enabled), and never for the changes the sync itself applies
    # (sync_state.applying, set and cleared inside the sync's own transaction).
    (
        """
        CREATE TABLE sync_state (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            enabled INTEGER NOT NULL DEFAULT 0,
            applying INTEGER NOT NULL DEFAULT 0,
            site TEXT,
            last_seq INTEGER NOT NULL DEFAULT 0,
            central_seq INTEGER NOT NULL DEFAULT 0,
            synced_at REAL,
            snapshot_at REAL,
            last_error TEXT,
            error_at REAL
        )
        """,
        "INSERT INTO sync_state (id) VALUES (1)",
        """
        CREATE TABLE sync_outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            key TEXT NOT NULL UNIQUE,
            op TEXT NOT NULL CHECK (op IN ('upsert', 'delete')),
            kind TEXT NOT NULL,
            number TEXT NOT NULL,
            prefix INTEGER NOT NULL,
            label TEXT NOT NULL,
            source TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL,
            note TEXT NOT NULL,
            changed_at REAL NOT NULL
        )
        """,
        "CREATE TABLE sync_calls (call_id TEXT PRIMARY KEY, version INTEGER NOT NULL)"
        " WITHOUT ROWID",
        *(
            f"""
            CREATE TRIGGER sync_entries_{event.split()[0].lower()} AFTER {event} ON entries
            WHEN (SELECT enabled AND NOT applying FROM sync_state){extra}
            BEGIN
                INSERT INTO sync_outbox (key, op, kind, number, prefix, label, source, created_at,
                                         expires_at, note, changed_at)
                VALUES (lower(hex(randomblob(16))), '{op}', {row}.kind, {row}.number,
                        {row}.prefix, {row}.label, {row}.source, {row}.created_at,
                        {row}.expires_at, {row}.note,
                        (julianday('now') - 2440587.5) * 86400.0);
            END
            """  # noqa: S608  # built from the fixed names below, no values
            for event, op, row, extra in (
                ("INSERT", "upsert", "NEW", ""),
                # Hits and last_seen are this site's own counters: not a change to share.
                (
                    "UPDATE OF kind, label, source, created_at, expires_at, note",
                    "upsert",
                    "NEW",
                    " AND (OLD.kind IS NOT NEW.kind OR OLD.label IS NOT NEW.label"
                    " OR OLD.source IS NOT NEW.source OR OLD.created_at IS NOT NEW.created_at"
                    " OR OLD.expires_at IS NOT NEW.expires_at OR OLD.note IS NOT NEW.note)",
                ),
                ("DELETE", "delete", "OLD", ""),
            )
        ),
        *(
            f"""
            CREATE TRIGGER sync_calls_{event.lower()} AFTER {event} ON calls
            WHEN (SELECT enabled FROM sync_state)
            BEGIN
                INSERT OR REPLACE INTO sync_calls (call_id, version)
                VALUES (NEW.call_id,
                        coalesce((SELECT version FROM sync_calls WHERE call_id = NEW.call_id), 0)
                        + 1);
            END
            """  # noqa: S608  # built from the fixed names below, no values
            for event in ("INSERT", "UPDATE")
        ),
    ),
    # 9: where prefix rules are, by their first four characters (``+815``) and their length,
    # so that a lookup probes only the prefixes of a number that a rule could be: one probe
    # for most Japanese numbers (their exact entry), two or three under a ruled range, where
    # every prefix from ``+8`` up meant 11 or 12 probes. Triggers keep it whoever writes (the
    # agent, the CLI, the console, sync). A pair is added with its first rule and kept after
    # its last, so the table is never short of a rule's pair; a stale pair costs one probe
    # that finds nothing.
    (
        """
        CREATE TABLE prefix_heads (
            head TEXT NOT NULL,
            length INTEGER NOT NULL,
            PRIMARY KEY (head, length)
        ) WITHOUT ROWID
        """,
        "INSERT OR IGNORE INTO prefix_heads"
        " SELECT DISTINCT substr(number, 1, 4), length(number) FROM entries WHERE prefix = 1",
        *(
            f"""
            CREATE TRIGGER prefix_heads_{name} AFTER {event} ON entries WHEN NEW.prefix = 1
            BEGIN
                INSERT OR IGNORE INTO prefix_heads (head, length)
                VALUES (substr(NEW.number, 1, 4), length(NEW.number));
            END
            """  # noqa: S608  # built from the fixed names below, no values
            for name, event in (("insert", "INSERT"), ("update", "UPDATE OF number, prefix"))
        ),
    ),
    # 10: how many entries each (kind, source) holds, kept by triggers whoever writes, so that
    # the metrics' gauge, the start-up line and ``screener doctor`` read a few rows where a
    # count scanned every entry (1.7 s of CPU at 10 M entries, every minute and at each start).
    # Every write path reaches entries by INSERT, an upsert (its UPDATE fires the update
    # trigger) or DELETE; none uses INSERT OR REPLACE, whose deletion fires no trigger. A
    # snapshot, which swaps the whole table, counts its new table once (screener/shared/local.py).
    (
        """
        CREATE TABLE list_counts (
            kind TEXT NOT NULL,
            source TEXT NOT NULL,
            n INTEGER NOT NULL,
            PRIMARY KEY (kind, source)
        ) WITHOUT ROWID
        """,
        COUNT_LISTS,
        """
        CREATE TRIGGER list_counts_insert AFTER INSERT ON entries
        BEGIN
            INSERT INTO list_counts (kind, source, n) VALUES (NEW.kind, NEW.source, 1)
            ON CONFLICT (kind, source) DO UPDATE SET n = n + 1;
        END
        """,
        """
        CREATE TRIGGER list_counts_delete AFTER DELETE ON entries
        BEGIN
            UPDATE list_counts SET n = n - 1 WHERE kind = OLD.kind AND source = OLD.source;
        END
        """,
        """
        CREATE TRIGGER list_counts_update AFTER UPDATE OF kind, source ON entries
        WHEN OLD.kind IS NOT NEW.kind OR OLD.source IS NOT NEW.source
        BEGIN
            UPDATE list_counts SET n = n - 1 WHERE kind = OLD.kind AND source = OLD.source;
            INSERT INTO list_counts (kind, source, n) VALUES (NEW.kind, NEW.source, 1)
            ON CONFLICT (kind, source) DO UPDATE SET n = n + 1;
        END
        """,
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
