"""The screener benchmark: ``.venv/bin/python -m bench`` (or ``bench/run``). See bench/README.md."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import fcntl
import json
import math
import os
import platform
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import (
    asterisk,
    dataset,
    decision,
    growth,
    lists,
    loadgen,
    lock,
    sip,
    startup,
    storecmp,
    transfer,
)
from bench import sync as sync_bench
from bench.stats import ratio
from screener.log import configure_logging

ROOT = Path(__file__).resolve().parent.parent
# Every part, in the order a whole run takes them (`--only` picks some).
# The two that take the sandbox (another user's e2e run may hold it) go last, together.
PARTS = (
    "decision",
    "agent",
    "lists",
    "store",
    "startup",
    "transfer",
    "sync",
    "growth",
    "asterisk",
    "sip",
)
TARGETS = {
    "decision_p99_ms": 1.0,
    "decision_vs_floor": 3.0,
    "agent_rate": 500,
    "agent_p99_ms": 20.0,
    "agent_vs_floor": 2.0,
    "import_rows_per_s": 50_000,
    "transfer_rss_mb": 100.0,
    "rss_mb": 150.0,
    "asterisk_added_p50_ms": 20.0,
    "check_vs_empty": 1.3,
    "run_startup_s": 1.0,
    "sync_effect_p50_ms": 1000.0,
    "snapshot_10m_s": 180.0,
    "sip_added_p50_ms": 1.0,
    "sip_added_p99_ms": 5.0,
    "sip_added_rate": 50,
    "sip_rate_vs_direct": 0.9,
}


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--entries", type=int, default=10_000_000, help="list size (default 10M)")
    p.add_argument("--callers", type=int, default=5_000, help="decisions timed per method")
    p.add_argument("--rates", default="50,100,200,500,1000,2000", help="calls/s steps")
    p.add_argument("--step-seconds", type=float, default=2.0, help="seconds per rate step")
    p.add_argument(
        "--import-rows", type=int, default=100_000, help="CSV rows for part 4 (part 7 does 1 M)"
    )
    p.add_argument(
        "--only",
        default=",".join(PARTS),
        help="comma list of parts to run (default: every part, " + ",".join(PARTS) + ")",
    )
    p.add_argument(
        "--growth-sizes",
        default=",".join(str(n) for n in growth.SIZES),
        help="list sizes for part 9 (100,000,000 only when its database is cached)",
    )
    p.add_argument(
        "--transfer-rows",
        default="1000000",
        help="CSV sizes for part 7 (comma list; 10000000 adds about 12 minutes)",
    )
    p.add_argument(
        "--transfer-baseline",
        metavar="REV",
        help="part 7: also time the list import of git revision REV, alternately (first size)",
    )
    p.add_argument(
        "--transfer-repeats", type=int, default=1, help="part 7: imports per side (medians)"
    )
    p.add_argument("--sync-sizes", default="1000000", help="part 8 snapshot sizes (comma list)")
    p.add_argument("--sync-changes", type=int, default=100, help="part 8 changes timed")
    p.add_argument("--sync-replay", type=int, default=50_000, help="part 8 outbox changes")
    p.add_argument("--asterisk-calls", type=int, default=60, help="part 3 calls per dialplan")
    p.add_argument("--asterisk-rate", type=float, default=5.0, help="part 3 calls/s")
    p.add_argument("--astdb", type=int, default=1_000_000, help="part 3 AstDB blacklist size")
    p.add_argument("--sip-rates", default="10,25,50,100,200", help="part 10 calls/s steps")
    p.add_argument("--sip-step-seconds", type=float, default=10.0, help="part 10 step length")
    p.add_argument(
        "--sip-dialplans",
        default="direct,blacklist,screened",
        help="part 10 dialplans (also: floor, bench/floor.py answering instead of the screener)",
    )
    p.add_argument(
        "--sip-profile",
        action="store_true",
        help="part 10: py-spy on the screener during screened steps (if py-spy is installed)",
    )
    p.add_argument("--sip-hold", type=float, default=3.0, help="part 10 talk time per call (s)")
    p.add_argument(
        "--sip-quick",
        action="store_true",
        help="part 10 smoke test: 10 and 25 calls/s, 5 s steps, 1 s talk, AstDB of 100,000",
    )
    p.add_argument("--out", type=Path, default=ROOT / "bench-results", help="JSON folder")
    return p.parse_args()


def _ms(v: float) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def _x(v: float) -> str:
    return "—" if math.isnan(v) else f"{v:.1f}×"


def _ok(flag: bool | None) -> str:
    return "" if flag is None else ("[green]yes[/]" if flag else "[red]NO[/]")


async def _agent(args: argparse.Namespace, db: Path, log: Any) -> dict[str, Any]:
    rates = [int(r) for r in args.rates.split(",") if r]
    numbers = loadgen.shuffled(dataset.callers(args.entries, 50_000, seed=11))
    logs = dataset.CACHE / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    runs: dict[str, Any] = {}
    plan = [
        ("floor", loadgen.floor_argv(), {}),
        ("screener", loadgen.screener_argv(), {"SCREENER_LOG_LEVEL": "warning"}),
        # Before the journal: each record's commit waited for before its Redirect.
        (
            "screener_commit_first",
            loadgen.screener_argv(),
            {"SCREENER_LOG_LEVEL": "warning", "SCREENER_JOURNAL": "off"},
        ),
        (
            "screener_info_json",
            loadgen.screener_argv(),
            {"SCREENER_LOG_LEVEL": "info", "SCREENER_LOG_FORMAT": "json"},
        ),
    ]
    for label, argv, extra in plan:
        env = dict(extra)
        if label != "floor":
            dataset.reset_calls(db)
            env["SCREENER_DB"] = str(db)
        log(f"agent: {label} at {rates} calls/s, {args.step_seconds:g}s each")
        client = loadgen.Client(label, argv, env, logs / f"{label}.log")
        runs[label] = await loadgen.run_client(client, rates, args.step_seconds, numbers)
    # Another process holds BEGIN IMMEDIATE through every step: lookups must not wait for it,
    # and no record may be lost (they are committed once it lets go, before the agent exits).
    locked_rates = [r for r in rates if r <= TARGETS["agent_rate"]] or rates[:1]
    dataset.reset_calls(db)
    log(f"agent: screener with the write lock held by another process, at {locked_rates}")
    client = loadgen.Client(
        "screener_locked",
        loadgen.screener_argv(),
        {"SCREENER_LOG_LEVEL": "warning", "SCREENER_DB": str(db)},
        logs / "screener_locked.log",
    )
    run = await loadgen.run_client(
        client,
        locked_rates,
        args.step_seconds,
        numbers,
        during=lambda: lock.held_write_lock(db),
    )
    run["calls_recorded"] = lock.count_calls(db)
    runs["screener_locked"] = run
    dataset.reset_calls(db)
    return runs


def _print(results: dict[str, Any], console: Console) -> dict[str, bool]:
    verdict: dict[str, bool] = {}
    t = Table(title=f"screener benchmark — {results['started']}", show_lines=False)
    for col in ("part", "measure", "result", "target", "ok"):
        t.add_column(col, justify="right" if col in ("result", "target") else "left")
    _machine_rows(results, t)

    d = results.get("decision")
    if d:
        n = f"{d['entries']:,} entries"
        s = d["screen_async"]
        # The floor timed in the same turns as screen() (results before it: the floor alone).
        f = d.get("floor_turns", d["floor_sqlite3_point"])
        verdict["decision_p99"] = s["p99_ms"] <= TARGETS["decision_p99_ms"]
        # The issue sets both: p50 and p99 within 3x of the floor (p99 alone read "yes" at 3.8x).
        bound = TARGETS["decision_vs_floor"]
        verdict["decision_vs_floor"] = d["ratio_p50"] <= bound and d["ratio_p99"] <= bound
        t.add_row(
            "1 decision",
            f"screen(), loop lookups p50 / p99 ({n})",
            f"{_ms(s['p50_ms'])} / {_ms(s['p99_ms'])} ms",
            "p99 ≤ 1 ms",
            _ok(verdict["decision_p99"]),
        )
        t.add_row(
            "",
            "floor: sqlite3 point lookup p50 / p99, in turns with screen()",
            f"{_ms(f['p50_ms'])} / {_ms(f['p99_ms'])} ms",
            "",
            "",
        )
        if "floor_turns" in d:
            a = d["floor_sqlite3_point"]
            t.add_row(
                "",
                "floor alone (nothing between its lookups) p50 / p99, screen()'s ratio to it",
                f"{_ms(a['p50_ms'])} / {_ms(a['p99_ms'])} ms:"
                f" {_x(d['alone_ratio_p50'])} / {_x(d['alone_ratio_p99'])}",
                "",
                "",
            )
        t.add_row(
            "",
            "ratio to floor p50 / p99",
            f"{_x(d['ratio_p50'])} / {_x(d['ratio_p99'])}",
            "≤ 3×",
            _ok(verdict["decision_vs_floor"]),
        )
        if "screen_before" in d:
            b = d["screen_before"]
            t.add_row(
                "",
                "before (phonenumbers, every prefix probed) p50 / p99, ratio",
                f"{_ms(b['p50_ms'])} / {_ms(b['p99_ms'])} ms:"
                f" {_x(d['before_ratio_p50'])} / {_x(d['before_ratio_p99'])}",
                "",
                "",
            )
        if "screen_idle" in d:
            si, fi = d["screen_idle"], d["floor_idle"]
            t.add_row(
                "",
                "one at a time, 2 ms idle before each: screen() / floor p50 (p99)",
                f"{_ms(si['p50_ms'])} ({_ms(si['p99_ms'])}) / {_ms(fi['p50_ms'])}"
                f" ({_ms(fi['p99_ms'])}) ms: {_x(d['idle_ratio_p50'])} ({_x(d['idle_ratio_p99'])})",
                "",
                "",
            )
        sc, fc = d["screen_cpu"], d.get("floor_turns_cpu", d["floor_cpu"])
        t.add_row(
            "",
            "CPU time: screen() / floor p50 (p99)",
            f"{_ms(sc['p50_ms'])} ({_ms(sc['p99_ms'])}) / {_ms(fc['p50_ms'])}"
            f" ({_ms(fc['p99_ms'])}) ms: {_x(d['cpu_ratio_p50'])} ({_x(d['cpu_ratio_p99'])})",
            "",
            "",
        )
        for key, what in (
            ("screen_thread_cpu", "CPU time: screen(), lookup on the thread p50 / p99"),
            ("screen_thread", "screen(), lookup on the database thread p50 / p99"),
            ("screen_mmap", "screen(), loop lookups with mmap p50 / p99"),
            ("sync_screen", "sync path (bare sqlite3) p50 / p99"),
            ("store_lookup", "Store.lookup alone, on the loop p50 / p99"),
            ("store_lookup_thread", "Store.lookup alone, on the thread p50 / p99"),
            (
                "store_lookup_after_commit",
                "Store.lookup alone, on the loop, after another connection's commit p50 / p99",
            ),
            ("floor_after_commit", "floor, after another connection's commit p50 / p99"),
            ("normalize_uncached", "normalize, cache miss p50 / p99"),
            ("normalize_cached", "normalize, cache hit p50 / p99"),
            ("screen_before_cpu", "CPU time: before p50 / p99"),
            ("normalize_reference", "normalize by phonenumbers alone p50 / p99"),
        ):
            if key not in d:
                continue
            v = d[key]
            t.add_row("", what, f"{_ms(v['p50_ms'])} / {_ms(v['p99_ms'])} ms", "", "")
        t.add_section()

    a = results.get("agent")
    if a:
        floor = {s["rate"]: s for s in a["floor"]["steps"]}
        tags = {
            "screener": "journal, warning logs",
            "screener_commit_first": "commit first (before), warning logs",
            "screener_info_json": "journal, info JSON logs",
        }
        for label, tag in tags.items():
            run = a.get(label)
            if not run:
                continue
            for s in run["steps"]:
                fl = floor.get(s["rate"], {})
                r99 = ratio(s["p99_ms"], fl.get("p99_ms", math.nan))
                t.add_row(
                    "2 agent" if s is run["steps"][0] and label == "screener" else "",
                    f"{tag}: {s['rate']}/s p50 / p99 (floor p50 / p99)",
                    f"{_ms(s['p50_ms'])} / {_ms(s['p99_ms'])} ms "
                    f"({_ms(fl.get('p50_ms', math.nan))} / {_ms(fl.get('p99_ms', math.nan))})"
                    + (f" lost {s['lost']}" if s["lost"] else ""),
                    f"p99 {_x(r99)} floor",
                    "",
                )
            t.add_row(
                "",
                f"{tag}: highest rate with p99 < 50 ms",
                f"{run['max_sustained_rate']}/s (floor {a['floor']['max_sustained_rate']}/s)",
                "",
                "",
            )
        held = a.get("screener_locked")
        if held:
            for s in held["steps"]:
                fl = floor.get(s["rate"], {})
                t.add_row(
                    "",
                    f"write lock held elsewhere: {s['rate']}/s p50 / p99 (floor p50 / p99)",
                    f"{_ms(s['p50_ms'])} / {_ms(s['p99_ms'])} ms "
                    f"({_ms(fl.get('p50_ms', math.nan))} / {_ms(fl.get('p99_ms', math.nan))})"
                    + (f" lost {s['lost']}" if s["lost"] else ""),
                    "",
                    "",
                )
            lost = held["requests_sent"] - held["calls_recorded"]
            verdict["locked_nothing_lost"] = lost == 0 and all(
                s["lost"] == 0 for s in held["steps"]
            )
            t.add_row(
                "",
                "  requests sent / call records after the lock let go",
                f"{held['requests_sent']:,} / {held['calls_recorded']:,}",
                "none lost",
                _ok(verdict["locked_nothing_lost"]),
            )
        main = {s["rate"]: s for s in a["screener"]["steps"]}
        at = main.get(TARGETS["agent_rate"])
        fl = floor.get(TARGETS["agent_rate"])
        if at and fl:
            verdict["agent_p99"] = at["lost"] == 0 and at["p99_ms"] <= TARGETS["agent_p99_ms"]
            r50 = ratio(at["p50_ms"], fl["p50_ms"])
            r99 = ratio(at["p99_ms"], fl["p99_ms"])
            verdict["agent_vs_floor"] = r50 <= TARGETS["agent_vs_floor"]
            before = {s["rate"]: s for s in a.get("screener_commit_first", {}).get("steps", [])}
            was = before.get(TARGETS["agent_rate"])
            if was:
                t.add_row(
                    "",
                    "at 500/s: p50 / p99 before → after the journal (p50 × floor)",
                    f"{_ms(was['p50_ms'])} / {_ms(was['p99_ms'])} → "
                    f"{_ms(at['p50_ms'])} / {_ms(at['p99_ms'])} ms "
                    f"({_x(ratio(was['p50_ms'], fl['p50_ms']))} → {_x(r50)})",
                    "",
                    "",
                )
            t.add_row(
                "", "at 500/s: p99", f"{_ms(at['p99_ms'])} ms", "≤ 20 ms", _ok(verdict["agent_p99"])
            )
            t.add_row(
                "",
                "at 500/s: ratio to floor p50 / p99",
                f"{_x(r50)} / {_x(r99)}",
                "p50 ≤ 2×",
                _ok(verdict["agent_vs_floor"]),
            )
        rss = a["screener"]["peak_rss_bytes"] / 1e6
        verdict["rss"] = rss <= TARGETS["rss_mb"]
        t.add_row(
            "4 lists",
            f"screener run peak RSS under load ({results['entries']:,} entries)",
            f"{rss:.1f} MB",
            "≤ 150 MB",
            _ok(verdict["rss"]),
        )
        t.add_section()
    ast = results.get("asterisk")
    if ast and "error" in ast:
        t.add_row("3 asterisk", "real Asterisk 22 (sandbox)", f"[red]{ast['error']}[/]", "", "")
        t.add_section()
    elif ast:
        st = ast["stats"]
        labels = {
            "direct": "dial staff directly (floor)",
            "blacklist": f"built-in DB_EXISTS on AstDB of {ast['astdb_entries']:,}",
            "screened": "screened by the screener",
        }
        first = True
        for name in ("direct", "blacklist", "screened"):
            t.add_row(
                "3 asterisk" if first else "",
                f"\\[from-trunk] → staff Dial, {labels[name]} p50 / p90",
                f"{_ms(st[name]['p50_ms'])} / {_ms(st[name]['p90_ms'])} ms (n={st[name]['n']})",
                "",
                "",
            )
            first = False
        added = ast["added_vs_direct_p50_ms"]
        verdict["asterisk_added"] = added <= TARGETS["asterisk_added_p50_ms"]
        t.add_row(
            "",
            f"added by the screener over direct dialling, p50 ({ast['rate_per_s']:g} calls/s)",
            f"{_ms(added)} ms",
            "≤ 20 ms",
            _ok(verdict["asterisk_added"]),
        )
        t.add_row(
            "",
            "screened / built-in blacklist, p50",
            _x(ast["screened_vs_blacklist_p50"]),
            "",
            "",
        )
        t.add_section()
    lst = results.get("lists")
    if lst:
        verdict["import"] = lst["cli_import_rows_per_s"] >= TARGETS["import_rows_per_s"]
        t.add_row(
            "4 lists",
            f"`list import` {lst['rows']:,} rows, CLI end to end",
            f"{lst['cli_import_rows_per_s']:,.0f} rows/s ({lst['cli_import_s']:.1f} s)",
            "≥ 50,000 rows/s",
            _ok(verdict["import"]),
        )
        t.add_row(
            "",
            "  parse (read_csv) alone",
            f"{lst['parse_rows_per_s']:,.0f} rows/s ({lst['parse_s']:.1f} s)",
            "",
            "",
        )
        t.add_row(
            "",
            "  Store.import_entries alone",
            f"{lst['store_import_rows_per_s']:,.0f} rows/s ({lst['store_import_s']:.1f} s)",
            "",
            "",
        )
        t.add_row(
            "",
            f"`list export` {lst['exported_rows']:,} rows, CLI end to end",
            f"{lst['cli_export_rows_per_s']:,.0f} rows/s ({lst['cli_export_s']:.1f} s)",
            "",
            "",
        )
    sc = results.get("store")
    if sc:
        first = True
        for part, what in (
            ("lookup", "lookup"),
            ("commit_1", "commit of 1 call + hit"),
            ("commit_20", "commit of 20 calls + hits"),
        ):
            ours, theirs = sc[f"ours_{part}"], sc[f"aiosqlite_{part}"]
            t.add_row(
                "5 store" if first else "",
                f"{what}: own thread / aiosqlite public API, median (p99)",
                f"{ours['median_us']:.1f} ({ours['p99_us']:.0f}) / "
                f"{theirs['median_us']:.1f} ({theirs['p99_us']:.0f}) µs",
                "",
                f"{sc[f'{part}_winner']} ({_x(sc[f'{part}_ratio'])})",
            )
            first = False
        t.add_section()
    su = results.get("startup")
    if su:
        verdict["check_vs_empty"] = su["check_ratio"] <= TARGETS["check_vs_empty"]
        verdict["run_startup"] = su["run_screening_s"] < TARGETS["run_startup_s"]
        t.add_row(
            "6 startup",
            f"`screener check` median, {su['entries']:,} entries / empty",
            f"{su['check_big_s'] * 1000:.0f} / {su['check_empty_s'] * 1000:.0f} ms"
            f" ({_x(su['check_ratio'])}); CPU {su['check_big_cpu_s'] * 1000:.0f} /"
            f" {su['check_empty_cpu_s'] * 1000:.0f} ms ({_x(su['check_cpu_ratio'])})",
            "≤ 1.3×",
            _ok(verdict["check_vs_empty"]),
        )
        t.add_row(
            "",
            f"`screener run` exec → logged in / → first Redirect ({su['entries']:,})",
            f"{su['run_logged_in_s'] * 1000:.0f} / {su['run_screening_s'] * 1000:.0f} ms"
            f" (CPU {su['run_screening_cpu_s'] * 1000:.0f} ms)",
            "< 1 s",
            _ok(verdict["run_startup"]),
        )
        t.add_row(
            "",
            "`screener run` exec → first Redirect, empty database",
            f"{su['run_empty_screening_s'] * 1000:.0f} ms",
            "",
            "",
        )
        t.add_section()
    for size in results.get("transfer", {}).get("sizes", []):
        rows = size["rows"]
        for i, name in enumerate(("import", "export")):
            f = size[name]
            ok = f["peak_rss_mb"] < TARGETS["transfer_rss_mb"] and (
                name == "export" or f["rows_per_s"] >= TARGETS["import_rows_per_s"]
            )
            verdict[f"transfer_{name}_{rows}"] = ok
            t.add_row(
                "7 transfer" if i == 0 and rows == results["transfer"]["sizes"][0]["rows"] else "",
                f"`list {name}` {rows:,} rows: peak RSS, rows/s (per CPU s)",
                f"{f['peak_rss_mb']:.0f} MB, {f['rows_per_s']:,.0f}/s"
                f" ({f['rows_per_cpu_s']:,.0f}) in {f['wall_s']:.0f} s",
                "< 100 MB" + (", ≥ 50,000/s" if name == "import" else ""),
                _ok(ok),
            )
        old = size.get("baseline")
        if old:
            f = old["import"]
            t.add_row(
                "",
                f"  `list import` at {old['rev']}, same file, alternating (median of"
                f" {len(f['runs'])})",
                f"{f['peak_rss_mb']:.0f} MB, {f['rows_per_s']:,.0f}/s"
                f" ({f['rows_per_cpu_s']:,.0f}) in {f['wall_s']:.0f} s",
                "",
                "",
            )
        t.add_row(
            "",
            "  load average before / after",
            f"{size['load_before'][0]:.1f} / {size['load_after'][0]:.1f}",
            "",
            "",
        )
    sy = results.get("sync")
    if sy:
        lat = sy["latency"]
        verdict["sync_effect_p50"] = lat["p50_ms"] <= TARGETS["sync_effect_p50_ms"]
        t.add_row(
            "8 sync",
            f"change at A → effect at B, p50 / p99 ({lat['n']} changes)",
            f"{lat['p50_ms']:.0f} / {lat['p99_ms']:.0f} ms",
            "p50 ≤ 1 s",
            _ok(verdict["sync_effect_p50"]),
        )
        for snap in sy["snapshots"]:
            big = snap["rows"] >= 10_000_000
            if big:
                verdict["snapshot_10m"] = snap["seconds"] <= TARGETS["snapshot_10m_s"]
            t.add_row(
                "",
                f"snapshot of {snap['rows']:,} entries: rows/s, time",
                f"{snap['rows_per_s']:,.0f}/s, {snap['seconds']:.1f} s",
                "10 M < 180 s" if big else "",
                _ok(verdict["snapshot_10m"]) if big else "",
            )
            t.add_row(
                "",
                "  lookup p50 / p99: quiet → during the snapshot",
                f"{_ms(snap['lookup_quiet']['p50_ms'])} / {_ms(snap['lookup_quiet']['p99_ms'])}"
                f" → {_ms(snap['lookup_during']['p50_ms'])}"
                f" / {_ms(snap['lookup_during']['p99_ms'])} ms",
                "",
                "",
            )
        rp = sy["replay"]
        t.add_row(
            "",
            f"outbox replay of {rp['changes']:,} changes",
            f"{rp['changes_per_s']:,.0f}/s, {rp['seconds']:.1f} s",
            "",
            "",
        )
        t.add_row(
            "",
            "  lookup p50 / p99: quiet → during the replay",
            f"{_ms(rp['lookup_quiet']['p50_ms'])} / {_ms(rp['lookup_quiet']['p99_ms'])}"
            f" → {_ms(rp['lookup_during']['p50_ms'])} / {_ms(rp['lookup_during']['p99_ms'])} ms",
            "",
            "",
        )
        t.add_row(
            "",
            "  load average before / after",
            f"{sy['load_before'][0]:.1f} / {sy['load_after'][0]:.1f}",
            "",
            "",
        )
    g = results.get("growth")
    if g:
        first = True
        for row in g["sizes"]:
            sc, fl = row["screen"], row["floor"]
            cold = row.get("cold")
            agent = row.get("agent") or {}
            t.add_row(
                "9 growth" if first else "",
                f"{row['entries']:,} entries: screen() p50 / p99 (floor p50 / p99)",
                f"{_ms(sc['p50_ms'])} / {_ms(sc['p99_ms'])} ms"
                f" ({_ms(fl['p50_ms'])} / {_ms(fl['p99_ms'])})",
                f"{_x(ratio(sc['p50_ms'], fl['p50_ms']))} / "
                f"{_x(ratio(sc['p99_ms'], fl['p99_ms']))}",
                "",
            )
            first = False
            if cold:
                t.add_row(
                    "",
                    f"  cold page cache, first {cold['n']} decisions p50 / p99 / max",
                    f"{_ms(cold['p50_ms'])} / {_ms(cold['p99_ms'])} / {_ms(cold['max_ms'])} ms",
                    "",
                    "",
                )
            t.add_row(
                "",
                f"  screener run peak RSS; {agent.get('rate', 0)}/s p50 / p99",
                f"{row['peak_rss_bytes'] / 1e6:.1f} MB; "
                f"{_ms(agent.get('p50_ms', math.nan))} / {_ms(agent.get('p99_ms', math.nan))} ms"
                + (f" lost {agent['lost']}" if agent.get("lost") else ""),
                "",
                "",
            )
        for size in g.get("skipped", []):
            t.add_row("", f"{size:,} entries", "not cached: skipped", "", "")
        holds = g.get("holds") or {}
        floor_by = {s["rate"]: s for s in holds.get("floor", [])}
        for s in holds.get("screener", []):
            fl = floor_by.get(s["rate"], {})
            t.add_row(
                "",
                f"{s['rate']:,} calls on hold at once: p50 / p99 / last (floor)",
                f"{_ms(s['p50_ms'])} / {_ms(s['p99_ms'])} / {_ms(s['max_ms'])} ms"
                f" ({_ms(fl.get('p50_ms', math.nan))} / {_ms(fl.get('p99_ms', math.nan))} /"
                f" {_ms(fl.get('max_ms', math.nan))})"
                + (f" lost {s['lost']}" if s["lost"] else ""),
                "",
                "",
            )
        for path in g.get("plots", []):
            t.add_row("", "plot", str(Path(path).relative_to(ROOT)), "", "")
        t.add_section()
    sp = results.get("sip")
    if sp:
        verdict.update(_print_sip(sp, t))
    if results.get("db_build_s") is not None:
        t.add_row("setup", "built the list database", f"{results['db_build_s']:.1f} s", "", "")
    waited = sum(results.get("sandbox_wait_s", {}).values())
    own = results["total_s"] - waited
    verdict["whole_run"] = own < 900
    t.add_row(
        "",
        "whole benchmark" + (", less the waits for the sandbox" if waited >= 1 else ""),
        f"{own:.0f} s"
        + (f" ({results['total_s']:.0f} s with {waited:.0f} s waiting)" if waited >= 1 else ""),
        "< 900 s",
        _ok(verdict["whole_run"]),
    )
    missed = [k for k, ok in verdict.items() if not ok]
    t.add_row(
        "targets",
        f"{len(verdict) - len(missed)} of {len(verdict)} met",
        "not met: " + ", ".join(missed) if missed else "all met",
        "",
        "",
    )
    console.print(t)
    return verdict


def _print_sip(sp: dict[str, Any], t: Table) -> dict[str, bool]:
    """Part 10's rows: one per step and dialplan, then the three targets."""
    if "error" in sp:
        t.add_row(
            "10 sip", "real SIP load (SIPp, sandbox)", f"[red]{sp['error'][-300:]}[/]", "", ""
        )
        t.add_section()
        return {}
    verdict: dict[str, bool] = {}
    t.add_row(
        "10 sip",
        "dialplan, rate: calls done / tried, fallback; INVITE → staff INVITE p50 / p99;",
        "in flight; CPU, RSS of asterisk · screener",
        "",
        "",
    )
    for s in sp["steps"]:
        st, pr = s["setup_to_staff"], s["processes"]
        ast, scr = pr["asterisk"], pr["screener"]
        refused = ",".join(f"{code}×{n}" for code, n in sorted(s["refused"].items()))
        failed = f" [red]failed {s['failed']}[/]" if s["failed"] else ""
        t.add_row(
            "",
            f"  {s['dialplan']} {s['rate']}/s: {s['completed']} / {s['attempted']}{failed}"
            + (f" ({refused})" if refused else "")
            + f", fb {s['fallback']}; {_ms(st['p50_ms'])} / {_ms(st['p99_ms'])} ms",
            f"{s['peak_in_flight']}; {ast['cpu_pct']:.0f}%, {ast['peak_rss_mb']:.0f} MB"
            f" · {scr['cpu_pct']:.0f}%, {scr['peak_rss_mb']:.0f} MB",
            "",
            "",
        )
        own = s.get("screener")
        if own:
            dec, red = own["decision"], own["redirect"]
            t.add_row(
                "",
                "    its log: decision p50 / p99; request → Redirect answered p50 / p99",
                f"{_ms(dec['p50_ms'])} / {_ms(dec['p99_ms'])};"
                f" {_ms(red['p50_ms'])} / {_ms(red['p99_ms'])} ms",
                "",
                "",
            )
    steps = {(s["dialplan"], s["rate"]): s for s in sp["steps"]}
    direct_ok = [s["rate"] for s in sp["steps"] if s["dialplan"] == "direct" and sip.unsaturated(s)]
    if "screened" in sp["dialplans"]:
        fallbacks = {
            r: steps[("screened", r)]["fallback"] for r in direct_ok if ("screened", r) in steps
        }
        untried = [r for r in direct_ok if ("screened", r) not in steps]
        verdict["sip_no_fallback"] = not untried and not any(fallbacks.values())
        t.add_row(
            "",
            "screened: calls that took the fallback, at each rate direct completes",
            ", ".join(f"{r}/s: {n}" for r, n in fallbacks.items())
            + "".join(f", {r}/s: not reached" for r in untried),
            "0",
            _ok(verdict["sip_no_fallback"]),
        )
        rate = TARGETS["sip_added_rate"]
        per_rate = sp["added_vs_direct"].get("screened", {})
        t.add_row(
            "",
            "set-up added by the screener over direct, p50 / p99, per rate",
            "; ".join(
                f"{r}/s {_ms(a['p50_ms'])} / {_ms(a['p99_ms'])}" for r, a in per_rate.items()
            ),
            "",
            "",
        )
        added = per_rate.get(str(rate))
        paired = sp.get("paired")
        if paired:
            # The verdict's figure: both halves in one step, so not two moments' noise.
            pa, pd, ps = (
                paired["paired"]["added"],
                paired["paired"]["direct"],
                paired["paired"]["screened"],
            )
            own = paired.get("screener") or {}
            t.add_row(
                "",
                f"side by side at {paired['rate']}/s (staff-bound calls, direct and screened in"
                " turn): set-up direct / screened p50 (p99)",
                f"{_ms(pd['p50_ms'])} ({_ms(pd['p99_ms'])}) / {_ms(ps['p50_ms'])}"
                f" ({_ms(ps['p99_ms'])}) ms; {paired['completed']} / {paired['attempted']},"
                f" fb {paired['fallback']}"
                + (
                    f"; its log: decision p50 {_ms(own['decision']['p50_ms'])}, request →"
                    f" Redirect answered p50 {_ms(own['redirect']['p50_ms'])} ms"
                    if own.get("decision")
                    else ""
                ),
                "",
                "",
            )
            added = pa
        if added:
            verdict["sip_added"] = (
                added["p50_ms"] <= TARGETS["sip_added_p50_ms"]
                and added["p99_ms"] <= TARGETS["sip_added_p99_ms"]
            )
            t.add_row(
                "",
                f"set-up added by the screener over direct at {rate}/s, p50 / p99"
                + (" (side by side)" if paired else ""),
                f"{_ms(added['p50_ms'])} / {_ms(added['p99_ms'])} ms",
                "≤ 1 / ≤ 5 ms",
                _ok(verdict["sip_added"]),
            )
        floor_pair = sp.get("paired_floor")
        if floor_pair:
            # What Asterisk's hold, the AMI round trip and the Redirect cost with a responder
            # that does nothing else: the share of the added set-up no screener can save.
            fa = floor_pair["paired"]["added"]
            share = f"{_ms(fa['p50_ms'])} / {_ms(fa['p99_ms'])} ms"
            if paired:
                own_p50 = paired["paired"]["added"]["p50_ms"] - fa["p50_ms"]
                share += f"; the screener's own, beyond it: p50 {_ms(own_p50)} ms"
            t.add_row(
                "",
                f"side by side at {floor_pair['rate']}/s, bench/floor.py (no lookup, no record)"
                " answering instead: set-up added over direct p50 / p99",
                share + f"; {floor_pair['completed']} / {floor_pair['attempted']},"
                f" fb {floor_pair['fallback']}",
                "",
                "",
            )
        best = sp["max_completed_rate"]
        if "direct" in best:
            verdict["sip_rate"] = best["screened"] >= TARGETS["sip_rate_vs_direct"] * best["direct"]
            t.add_row(
                "",
                "highest rate completed, set-up p50 ≤ 1 s: " + " / ".join(sp["dialplans"]),
                " / ".join(f"{best[d]}/s" for d in sp["dialplans"])
                + f" (of {max(sp['rates'])}/s tried)",
                "screened ≥ 90% of direct",
                _ok(verdict["sip_rate"]),
            )
    t.add_row(
        "",
        "mix; talk time; step; AstDB",
        ", ".join(f"{k} {v}%" for k, v in sp["mix"].items())
        + f"; {sp['hold_s']:g} s; {sp['step_seconds']:g} s; {sp['astdb_entries']:,}"
        + (f" (filled in {sp['astdb_fill_s']:.0f} s)" if "astdb_fill_s" in sp else ""),
        "",
        "",
    )
    t.add_section()
    return verdict


def _asterisk_version() -> str:
    """The sandbox's Asterisk package version (its chroot's dpkg database), without running it."""
    root = Path(os.environ.get("SCREENER_SANDBOX_CACHE", "/var/cache/screener/sandbox")) / "root"
    dpkg = shutil.which("dpkg-query")
    if dpkg is None or not (root / "var/lib/dpkg/status").exists():
        return "no sandbox"
    found = subprocess.run(  # fixed argv, no shell
        [dpkg, f"--admindir={root}/var/lib/dpkg", "-W", "-f=${Version}", "asterisk"],
        capture_output=True,
        text=True,
        check=False,
    )
    return found.stdout.strip() or "not installed in the sandbox"


def _sandbox_wait(log: Any) -> float:
    """Wait until no one holds the sandbox's lock (other users' e2e runs); the seconds waited.

    Only a look (the lock is let go at once): the part then takes it in ``sandbox_session``, so
    the seconds a part waited for someone else's run can be told apart from its own.
    """
    run_dir = Path(os.environ.get("SCREENER_SANDBOX_RUN", "/run/screener-sandbox"))
    lock_path = run_dir.parent / f"{run_dir.name}.lock"
    if not lock_path.exists():
        return 0.0
    started = time.perf_counter()
    told = False
    with lock_path.open("a") as fh:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not told:
                    log("bench: the sandbox is in use (another e2e run); waiting for it")
                    told = True
                time.sleep(0.5)
                continue
            fcntl.flock(fh, fcntl.LOCK_UN)
            return time.perf_counter() - started


def _machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "load_start": os.getloadavg(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "asterisk": _asterisk_version(),
        "platform": platform.platform(),
    }


def _machine_rows(results: dict[str, Any], t: Table) -> None:
    m = results["machine"]
    start, end = m["load_start"], m.get("load_end", (math.nan,) * 3)
    t.add_row(
        "machine",
        f"{m['cores']} cores; Python {m['python']}, SQLite {m['sqlite']}, Asterisk {m['asterisk']}",
        f"load {start[0]:.1f} / {start[1]:.1f} / {start[2]:.1f} at start,"
        f" {end[0]:.1f} / {end[1]:.1f} / {end[2]:.1f} at end",
        "",
        "",
    )
    waits = results.get("sandbox_wait_s", {})
    t.add_row(
        "",
        "seconds per part (of which waiting for another user of the sandbox)",
        ", ".join(
            f"{k} {v:.0f}" + (f" ({waits[k]:.0f})" if waits.get(k, 0) >= 1 else "")
            for k, v in results.get("part_s", {}).items()
        ),
        "",
        "",
    )
    t.add_section()


def main() -> None:
    """Run the parts asked for, print the table, write the JSON."""
    args = _args()
    parts = set(args.only.split(","))
    unknown = parts - set(PARTS)
    if unknown:
        raise SystemExit(f"bench: unknown part(s) {', '.join(sorted(unknown))}; parts: {PARTS}")
    console = Console(width=150)
    configure_logging("console", "warning")
    started = time.perf_counter()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    results: dict[str, Any] = {
        "started": stamp,
        "entries": args.entries,
        "machine": _machine(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "targets": TARGETS,
        "part_s": {},
        "sandbox_wait_s": {},
    }
    console.log(
        f"bench: parts {', '.join(p for p in PARTS if p in parts)}; load average"
        f" {results['machine']['load_start'][0]:.1f}"
    )
    mark = time.perf_counter()

    def took(part: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        results["part_s"][part] = now - mark
        mark = now

    if parts & {"decision", "agent", "store", "startup"}:  # the other parts make their own data
        db, built = dataset.ensure_db(args.entries, log=console.log)
        results["db"] = str(db)
        results["db_build_s"] = built
        took("setup")
    if "decision" in parts:
        console.log(f"decision: {args.callers:,} callers per method")
        results["decision"] = asyncio.run(decision.run(db, args.entries, args.callers))
        took("decision")
    if "agent" in parts:
        results["agent"] = asyncio.run(_agent(args, db, console.log))
        took("agent")
    if "lists" in parts:
        csv_path = dataset.ensure_csv(args.import_rows, log=console.log)
        console.log(f"lists: import and export of {args.import_rows:,} rows")
        results["lists"] = asyncio.run(lists.run(csv_path, args.import_rows))
        took("lists")
    if "store" in parts:
        console.log(f"store: own thread vs aiosqlite, {storecmp.ROUNDS} rounds")
        results["store"] = asyncio.run(storecmp.run(db, args.entries, args.callers // 4))
        took("store")
    if "startup" in parts:
        console.log("startup: screener check and screener run, as subprocesses")
        results["startup"] = asyncio.run(startup.run(db, args.entries))
        took("startup")
    if "transfer" in parts:
        sizes = [int(n) for n in args.transfer_rows.split(",") if n]
        results["transfer"] = transfer.run(
            sizes, console.log, args.transfer_baseline, args.transfer_repeats
        )
        took("transfer")
    if "sync" in parts:
        sizes = [int(n) for n in args.sync_sizes.split(",") if n]
        results["sync"] = asyncio.run(
            sync_bench.run(sizes, args.sync_changes, args.sync_replay, log=console.log)
        )
        took("sync")
    if "growth" in parts:
        grow = tuple(int(n) for n in args.growth_sizes.split(",") if n)
        ready, skipped = growth.prepare(grow, log=console.log)
        results["growth"] = asyncio.run(growth.run(ready, skipped, log=console.log))
        took("growth")
    if "asterisk" in parts:
        results["sandbox_wait_s"]["asterisk"] = _sandbox_wait(console.log)
        console.log(
            f"asterisk: {args.asterisk_calls} calls per dialplan at {args.asterisk_rate:g}/s"
        )
        results["asterisk"] = asterisk.run(args.asterisk_calls, args.asterisk_rate, args.astdb)
        took("asterisk")
    if "sip" in parts:
        results["sandbox_wait_s"]["sip"] = _sandbox_wait(console.log)
        quick = args.sip_quick
        rates = [10, 25] if quick else [int(r) for r in args.sip_rates.split(",") if r]
        results["sip"] = sip.run(
            entries=args.entries,
            rates=rates,
            step_seconds=5.0 if quick else args.sip_step_seconds,
            hold_s=1.0 if quick else args.sip_hold,
            astdb=100_000 if quick else args.astdb,
            dialplans=[d for d in args.sip_dialplans.split(",") if d],
            profile=args.sip_profile,
            paired_rate=0 if quick else TARGETS["sip_added_rate"],
            log=console.log,
        )
        took("sip")
    results["machine"]["load_end"] = os.getloadavg()
    results["total_s"] = time.perf_counter() - started
    results["verdict"] = _print(results, console)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"bench-{stamp}.json"
    text = json.dumps(results, indent=2, default=str, allow_nan=True)
    path.write_text(text)
    (args.out / "latest.json").write_text(text)
    console.print(f"JSON: {path}")


if __name__ == "__main__":
    main()
