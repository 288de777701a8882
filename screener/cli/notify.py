"""``screener notify``: each channel's deliveries, and a test message through every
channel."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from screener.cli.common import _add_row, _config, _now, _print_json, _reading, _run, common_options
from screener.cli.root import main
from screener.errors import InputError


@main.group("notify")
def notify_group() -> None:
    """Notifications: what was delivered, and a test through every channel."""


@notify_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@common_options
def notify_status(as_json: bool, db_path: Path | None, config_path: Path | None) -> None:
    """Show each configured channel's deliveries: done, waiting (retried), given up."""
    config = _config(db_path, config_path)
    channels = config.notify.channels
    since = _now() - dt.timedelta(hours=config.notify.max_age_hours)

    async def go() -> tuple[int, list[Any]]:
        async with _reading(config) as store:
            return await store.count_outbox(), await store.delivery_status(channels, since=since)

    total, statuses = _run(go())
    if as_json:
        _print_json(
            {
                "outbox": total,
                "channels": [
                    {
                        "channel": s.channel,
                        "delivered": s.delivered,
                        "waiting": s.waiting,
                        "given_up": s.given_up,
                        "last_delivered_at": s.last_delivered_at.isoformat()
                        if s.last_delivered_at
                        else None,
                        "last_error": s.last_error,
                    }
                    for s in statuses
                ],
            }
        )
        return
    if not channels:
        click.echo("no notification channel configured ([notify] in the config file)")
    table = Table("channel", "delivered", "waiting", "given up", "last delivered", "last error")
    for s in statuses:
        _add_row(
            table,
            s.channel,
            str(s.delivered),
            str(s.waiting),
            str(s.given_up),
            s.last_delivered_at.astimezone().isoformat(timespec="seconds")
            if s.last_delivered_at
            else "-",
            s.last_error or "",
        )
    Console().print(table)
    click.echo(f"{total} events in the outbox")


@notify_group.command("test")
@common_options
def notify_test(db_path: Path | None, config_path: Path | None) -> None:
    """Send a test message through every configured channel and report each result."""
    from screener.errors import NotifyError
    from screener.notify.sender import send_test

    config = _config(db_path, config_path)
    if not config.notify.channels:
        raise InputError("no notification channel configured ([notify] in the config file)")
    results = _run(send_test(config, _now()))
    for channel, error in results:
        click.echo(f"{channel}: " + ("delivered" if error is None else f"failed: {error}"))
    failed = [channel for channel, error in results if error is not None]
    if failed:
        raise NotifyError(f"not delivered through {', '.join(failed)}")
