"""Generated list databases and CSV files, cached under ``/var/tmp/screener-bench`` by size.

The numbers are deterministic, so a cached database and the lookups drawn against it agree:

- exact entries: half Tokyo fixed lines ``+813`` + 8 digits, half mobiles ``+8190`` + 8 digits,
  ``10000000 + 7*i`` (so ``+3`` is always a miss in the same index range); one in three allow;
  one in fifty expired. Past what two blocks hold (about 25.7 M entries) the numbers are
  ``10000000 + 3*i`` (miss ``+1``) spread evenly over five blocks: Tokyo ``+813``, Osaka
  ``+816`` and the mobiles ``+8170``, ``+8180``, ``+8190`` (100 M entries fit in 150 M);
- prefix rules: ``+8150`` + 5 digits (050 IP-phone blocks) and a few office-wide blocks
  (``+81120`` toll free, ``+81570`` navi-dial, ``+81990`` premium, ``+86``, ``+7``).

The schema comes from :class:`screener.store.Store` (its migrations); the rows go in with a
plain ``sqlite3`` bulk insert in key order (the bench's own setup code, not the product path).
"""

from __future__ import annotations

import asyncio
import csv
import os
import random
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from screener.store import SCHEMA_VERSION, Store
from screener.store.schema import COUNT_LISTS

CACHE = Path(os.environ.get("SCREENER_BENCH_CACHE", "/var/tmp/screener-bench"))  # noqa: S108  # a cache, by design
BLOCK_PREFIXES = (
    ("+81120", "block", "toll free"),
    ("+81570", "block", "navi-dial"),
    ("+81990", "block", "premium"),
    ("+86", "block", "China"),
    ("+7", "block", "Russia"),
)
CREATED = 1_700_000_000.0
EXPIRED = 1_700_100_000.0  # long past
STRIDE = 7
BASE = 10_000_000
FIXED = "+813"
MOBILE = "+8190"
IP = "+8150"


# Eight subscriber digits after the block: 10,000,000 .. 99,999,999.
TOP = 100_000_000
# Beyond what two blocks hold at a stride of 7, five blocks at a stride of 3 (up to 150 M).
BIG_BLOCKS = (FIXED, "+816", IP, "+8170", "+8180", MOBILE)


@dataclass(frozen=True)
class Layout:
    """How many rows of each kind a database of ``size`` entries holds, and their numbers."""

    size: int

    @property
    def prefixes(self) -> int:
        return min(100_000, max(1, self.size // 100))

    @property
    def exact(self) -> int:
        return max(0, self.size - self.prefixes - len(BLOCK_PREFIXES))

    @property
    def big(self) -> bool:
        """Too many entries for the two blocks of the small layout (Tokyo and 090)."""
        return self.exact - self.exact // 2 > (TOP - BASE - 3) // STRIDE

    @property
    def stride(self) -> int:
        return 3 if self.big else STRIDE

    @property
    def blocks(self) -> tuple[str, ...]:
        """The exact entries' blocks, in key order (the 050 prefix rules sort among them)."""
        return tuple(b for b in BIG_BLOCKS if b != IP) if self.big else (FIXED, MOBILE)

    def count(self, block: str) -> int:
        """Exact entries in ``block``: an even share, the last block taking the remainder."""
        share = self.exact // len(self.blocks)
        if block == self.blocks[-1]:
            return self.exact - share * (len(self.blocks) - 1)
        return share

    @property
    def fixed(self) -> int:
        return self.count(FIXED)

    @property
    def mobile(self) -> int:
        return self.count(MOBILE)

    def number(self, block: str, i: int, miss: bool = False) -> str:
        """The i-th exact entry of a block (or the number just beside it, never listed)."""
        return exact_number(block, i, miss, self.stride)


def exact_number(block: str, i: int, miss: bool = False, stride: int = STRIDE) -> str:
    """The i-th exact entry of a block (or the number just beside it, which is never listed)."""
    return f"{block}{BASE + stride * i + ((3 if stride > 3 else 1) if miss else 0)}"


def _row(number: str, i: int, prefix: int) -> tuple[Any, ...]:
    kind = "allow" if i % 3 == 0 else "block"
    label = f"Customer {i}" if kind == "allow" else f"Tele sales {i % 997}"
    expires = EXPIRED if i % 50 == 49 else None
    return (kind, number, prefix, label, "manual", CREATED, expires, "", 0, None)


def _rows(layout: Layout) -> Iterator[tuple[Any, ...]]:
    # Key order (+813 < +8150 < +816 < ... < +8190): the unique index is appended to, not
    # split at random.
    for block in (*layout.blocks[:1], IP, *layout.blocks[1:]):
        if block == IP:
            for j in range(layout.prefixes):
                yield _row(f"{IP}{j:05d}", j, 1)
            continue
        for i in range(layout.count(block)):
            yield _row(layout.number(block, i), i, 0)
    for number, kind, label in BLOCK_PREFIXES:
        yield (kind, number, 1, label, "manual", CREATED, None, "", 0, None)


def db_path(size: int) -> Path:
    """Where the cached database of ``size`` entries lives."""
    return CACHE / f"entries-{size}.db"


async def _create_schema(path: Path) -> None:
    async with Store.open(path):
        pass


def ensure_db(size: int, log: Any = print) -> tuple[Path, float | None]:
    """The cached database of ``size`` entries, built if missing; returns (path, build seconds)."""
    path = db_path(size)
    if path.exists():
        _upgrade(path, log)
        return path, None
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".building")
    for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm"), Path(f"{tmp}-journal")):
        leftover.unlink(missing_ok=True)
    log(f"building {path} ({size:,} entries; cached for later runs)")
    started = time.perf_counter()
    asyncio.run(_create_schema(tmp))
    _fill(tmp, Layout(size), log)
    tmp.replace(path)
    seconds = time.perf_counter() - started
    log(f"built {path} in {seconds:.1f}s ({size / seconds:,.0f} entries/s)")
    return path, seconds


# One chunk of a block's rows, generated by SQLite itself (no Python per row): the same rows
# as _rows() yields, in key order. i = lo + 1000 a + b over a temporary table of 0..999, the
# CROSS JOIN keeping a the outer loop (several times faster than a recursive CTE).
_CHUNK_SQL = """
INSERT INTO entries (kind, number, prefix, label, source, created_at, expires_at, note, hits,
                     last_seen)
SELECT CASE WHEN i % 3 = 0 THEN 'allow' ELSE 'block' END,
       CASE WHEN :prefix THEN :block || printf('%05d', i) ELSE :block || (:base + :stride * i) END,
       :prefix,
       CASE WHEN i % 3 = 0 THEN 'Customer ' || i ELSE 'Tele sales ' || (i % 997) END,
       'manual', :created, CASE WHEN i % 50 = 49 THEN :expired END, '', 0, NULL
FROM (SELECT :lo + 1000 * a.n + b.n AS i FROM temp.thousand AS a CROSS JOIN temp.thousand AS b
      WHERE a.n < :outer AND :lo + 1000 * a.n + b.n < :hi)
"""
CHUNK = 1_000_000  # rows per statement: 1000 × 1000


def _fill(path: Path, layout: Layout, log: Any) -> None:
    """Insert ``layout``'s rows into the fresh database at ``path``, as fast as SQLite goes.

    A bench-only build: no journal, no fsync, a 1 GB cache; the rows go in key order, so the
    unique (number, prefix) index is only ever appended to; the entries table's other indexes
    (and its sync triggers, off while they are: sync is not enabled in a fresh database) are
    dropped first and made again at the end, from the schema's own SQL (one sort per index).
    The result is an ordinary screener database (same schema, same indexes, WAL mode).
    """
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = OFF")
        db.execute("PRAGMA synchronous = OFF")
        db.execute("PRAGMA cache_size = -1048576")
        db.execute("PRAGMA temp_store = FILE")
        later = db.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE type IN ('index', 'trigger')"
            " AND tbl_name = 'entries' AND sql IS NOT NULL ORDER BY type, name"
        ).fetchall()
        db.execute("CREATE TEMP TABLE thousand (n INTEGER PRIMARY KEY)")
        db.executemany("INSERT INTO temp.thousand VALUES (?)", ((n,) for n in range(1000)))
        db.execute("BEGIN")
        for kind, name, _ in later:
            db.execute(f'DROP {kind.upper()} "{name}"')
        done, started = 0, time.perf_counter()
        for block in (*layout.blocks[:1], IP, *layout.blocks[1:]):
            prefix = block == IP
            count = layout.prefixes if prefix else layout.count(block)
            for lo in range(0, count, CHUNK):
                hi = min(count, lo + CHUNK)
                db.execute(
                    _CHUNK_SQL,
                    {
                        "lo": lo,
                        "hi": hi,
                        "outer": (hi - lo + 999) // 1000,
                        "prefix": int(prefix),
                        "block": block,
                        "base": BASE,
                        "stride": layout.stride,
                        "created": CREATED,
                        "expired": EXPIRED,
                    },
                )
                done += hi - lo
                if layout.size >= 20 * CHUNK and done % (5 * CHUNK) < hi - lo:
                    rate = done / (time.perf_counter() - started)
                    log(f"  {done:,} / {layout.size:,} rows ({rate:,.0f}/s)")
        db.executemany(
            "INSERT INTO entries (kind, number, prefix, label, source, created_at, expires_at,"
            " note, hits, last_seen) VALUES (?, ?, 1, ?, 'manual', ?, NULL, '', 0, NULL)",
            [(kind, number, label, CREATED) for number, kind, label in BLOCK_PREFIXES],
        )
        for kind, name, sql in later:
            log(f"  {kind} {name}")
            db.execute(sql)
        # What the dropped prefix_heads triggers (migration 9) would have written: without it
        # the lookup would never probe the prefix rules built here.
        db.execute(
            "INSERT OR IGNORE INTO prefix_heads (head, length)"
            " SELECT DISTINCT substr(number, 1, 4), length(number) FROM entries WHERE prefix = 1"
        )
        # And list_counts' (migration 10): the lists' sizes, counted once.
        db.execute("DELETE FROM list_counts")
        db.execute(COUNT_LISTS)
        db.execute("COMMIT")
        db.execute("PRAGMA analysis_limit = 1000")  # index statistics from a sample: seconds
        db.execute("ANALYZE")
        db.execute("PRAGMA journal_mode = WAL")
    finally:
        db.close()


def _upgrade(path: Path, log: Any) -> None:
    """Migrate a database cached by an older screener (the real migrations, in place)."""
    db = sqlite3.connect(path)
    try:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()
    if version < SCHEMA_VERSION:
        log(f"upgrading {path} from schema {version} to {SCHEMA_VERSION}")
        asyncio.run(_create_schema(path))


def reset_calls(path: Path) -> None:
    """Empty the call log of a cached database (the agent benchmark writes one row per call)."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("DELETE FROM calls")
        db.execute("UPDATE entries SET hits = 0, last_seen = NULL WHERE hits > 0")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()


# --- callers to screen ----------------------------------------------------------------------


def _national(e164: str, style: int) -> str:
    """A Japanese number as a carrier or a person might write it."""
    national = "0" + e164[3:]
    if style == 0:
        return national
    if style == 1:  # 090-1234-5678 / 03-1234-5678
        if national.startswith(("03", "06")):
            return f"{national[:2]}-{national[2:6]}-{national[6:]}"
        return f"{national[:3]}-{national[3:7]}-{national[7:]}"
    if style == 2:
        return e164
    return f"sip:{national}@192.0.2.10"


def callers(size: int, count: int, seed: int = 5) -> list[str]:
    """``count`` raw caller IDs against a database of ``size``: hits, misses, prefixes, withheld."""
    layout = Layout(size)
    rng = random.Random(seed)
    out: list[str] = []
    for _ in range(count):
        roll = rng.random()
        style = rng.randrange(4)
        if roll < 0.65 and layout.exact:  # an exact entry, or the number just beside one
            miss = roll >= 0.35
            if layout.big:
                block = layout.blocks[rng.randrange(len(layout.blocks))]
            else:
                block = FIXED if rng.random() < 0.5 else MOBILE
            i = rng.randrange(max(1, layout.count(block)))
            out.append(_national(layout.number(block, i, miss=miss), style))
        elif roll < 0.80:  # 050 IP phone under a prefix rule
            j = rng.randrange(layout.prefixes)
            out.append(_national(f"{IP}{j:05d}{rng.randrange(1000):03d}", style))
        elif roll < 0.88:  # toll free under the +81120 block
            out.append(_national(f"+81120{rng.randrange(100000, 999999)}", style))
        elif roll < 0.94:  # international
            out.append(f"+1 212 555 {rng.randrange(10000):04d}")
        else:  # withheld, no lookup
            out.append(rng.choice(("anonymous", "P", "", "O", "C")))
    return out


# --- CSV for the import benchmark -----------------------------------------------------------


def ensure_csv(rows: int, log: Any = print) -> Path:
    """A list CSV with ``rows`` data rows (mobile +8180 numbers, 1% prefix rules), cached."""
    path = CACHE / f"import-{rows}.csv"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    log(f"writing {path}")
    with tmp.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(("number", "kind", "prefix", "label", "expires", "note", "source"))
        for i in range(rows):
            if i % 100 == 99:
                writer.writerow((f"+8170{i:07d}", "block", "1", f"range {i}", "", "", "bench"))
            else:
                kind = "allow" if i % 3 == 0 else "block"
                expires = "2030-12-31" if i % 10 == 0 else ""
                number = f"+8180{BASE + STRIDE * i}"
                writer.writerow((number, kind, "0", f"Caller {i}", expires, "", "bench"))
    tmp.replace(path)
    return path
