"""``screener check`` and ``screener calls``: where a call would go and why, and the calls
already screened."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from screener.cli.common import (
    _add_row,
    _config,
    _now,
    _print_json,
    _reading,
    _run,
    _safe,
    common_options,
)
from screener.cli.root import main
from screener.errors import InputError
from screener.screening import screen
from screener.store import CallRecord
from screener.when import parse_past


def _past(text: str | None) -> dt.datetime | None:
    """A --since/--at value (``2h`` ago, or an ISO time); None when not given."""
    if not text:
        return None
    try:
        return parse_past(text, _now())
    except ValueError as exc:
        raise InputError(str(exc)) from exc


@main.command("check")
@click.argument("number")
@click.option("--did", help="The office number that was called (per-DID policy).")
@click.option("--at", "at", metavar="WHEN", help="Decide as if at this ISO time (hours policy).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@common_options
def check(
    number: str,
    did: str | None,
    at: str | None,
    as_json: bool,
    db_path: Path | None,
    config_path: Path | None,
) -> None:
    """Explain where a call from NUMBER would go, and why, without a call."""
    config = _config(db_path, config_path)
    now = _past(at) or _now()

    async def go() -> Any:
        async with _reading(config) as store:
            return await screen(store, number, config.policy, config.region, now, did)

    result = _run(go())
    if as_json:
        _print_json(result.as_dict())
        return
    click.echo(f"{_safe(number)} → {result.decision.route.value}  (rule: {result.decision.rule})")
    for reason in result.decision.reasons:
        click.echo(f"  - {_safe(reason)}")


def _call_dict(call: CallRecord) -> dict[str, Any]:
    return {
        "call_id": call.call_id,
        "received_at": call.received_at.isoformat(),
        "number": call.raw_number,
        "name": call.raw_name,
        "e164": call.e164,
        "category": call.category,
        "did": call.did,
        "route": call.route,
        "rule": call.rule,
        "reasons": list(call.reasons),
        "latency_ms": call.latency_ms,
        "outcome": call.outcome,
        "voicemail": call.voicemail,
        "fallback": call.fallback,
    }


@main.command("calls")
@click.option("--since", metavar="WHEN", help="Only calls since then: 1h, 2d, or an ISO time.")
@click.option("--limit", type=click.IntRange(1, 100000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON list.")
@click.option("--recordings", is_flag=True, help="Only recorded calls, with their files.")
@common_options
def calls(
    since: str | None,
    limit: int,
    as_json: bool,
    recordings: bool,
    db_path: Path | None,
    config_path: Path | None,
) -> None:
    """Show recent screening decisions, newest first."""
    config = _config(db_path, config_path)
    start = _past(since)

    async def go() -> tuple[
        list[CallRecord], dict[str, tuple[str, float | None]], dict[str, tuple[str, str | None]]
    ]:
        async with _reading(config) as store:
            found = await store.calls(since=start, limit=limit if not recordings else 100000)
            files = await store.recordings([c.call_id for c in found])
            chosen = await store.staff_choices([c.call_id for c in found]) if as_json else {}
            return found, files, chosen

    records, files, chosen = _run(go())
    if recordings:
        records = [c for c in records if c.call_id in files][:limit]

    def recording(call_id: str) -> dict[str, Any] | None:
        if call_id not in files:
            return None
        path, seconds = files[call_id]
        return {"path": path, "seconds": seconds}

    if as_json:
        _print_json(
            [
                {
                    **_call_dict(c),
                    "recording": recording(c.call_id),
                    # What the staff phone chose (announce screening, or *0), and which phone.
                    "staff_choice": chosen.get(c.call_id, (None, None))[0],
                    "staff_choice_by": chosen.get(c.call_id, (None, None))[1],
                }
                for c in records
            ]
        )
        return
    if recordings:
        listing = Table("time", "caller", "route", "seconds", "file")
        for c in records:
            path, seconds = files[c.call_id]
            _add_row(
                listing,
                c.received_at.astimezone().isoformat(timespec="seconds"),
                c.e164 or c.raw_number or "(none)",
                c.route,
                "" if seconds is None else f"{seconds:.0f}",
                path,
            )
        Console().print(listing)
        click.echo(f"{len(records)} recorded calls")
        return
    table = Table("time", "caller", "category", "route", "outcome", "why", "ms")
    for c in records:
        _add_row(
            table,
            c.received_at.astimezone().isoformat(timespec="seconds"),
            c.e164 or c.raw_number or "(none)",
            c.category,
            c.route + (" (fallback)" if c.fallback else ""),
            (c.outcome or "") + (f" vm:{c.voicemail}" if c.voicemail else ""),
            c.reasons[-1] if c.reasons else "",
            f"{c.latency_ms:.1f}",
        )
    Console().print(table)
    click.echo(f"{len(records)} calls")
