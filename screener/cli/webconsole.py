"""``screener web``: serve the web console for office staff."""

from __future__ import annotations

from pathlib import Path

import click

from screener.cli.common import _config, _now, _webstore, common_options
from screener.cli.root import main
from screener.log import configure_logging


@main.command("web")
@click.option(
    "--host",
    envvar="SCREENER_WEB_HOST",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (put a TLS reverse proxy in front)  [env: SCREENER_WEB_HOST]",
)
@click.option(
    "--port",
    envvar="SCREENER_WEB_PORT",
    type=click.IntRange(1, 65535),
    default=8080,
    show_default=True,
    help="Port to listen on  [env: SCREENER_WEB_PORT]",
)
@click.option(
    "--voicemail-dir",
    envvar="SCREENER_VOICEMAIL_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="The office mailbox folder (…/voicemail/office/100)  [env: SCREENER_VOICEMAIL_DIR]",
)
@common_options
def web(
    host: str,
    port: int,
    voicemail_dir: Path | None,
    db_path: Path | None,
    config_path: Path | None,
) -> None:
    """Serve the web console (calls, lists, voicemail) for office staff."""
    import ipaddress

    import uvicorn

    from screener.voicemail import Mailbox
    from screener.web.app import create_app
    from screener.web.core import Console

    config = _config(db_path, config_path)
    configure_logging(config.log_format, config.log_level)
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        click.echo(
            f"screener: warning: listening on {host}, not loopback; use TLS in front", err=True
        )
    # Like `screener run`, never on a database made up by a typo in --db.
    with _webstore(config, create=False) as store:
        store.shared = config.shared  # the call log shows every site's calls ([shared])
        console = Console(
            store=store,
            policy=config.policy,
            region=config.region,
            mailbox=Mailbox(voicemail_dir) if voicemail_dir else None,
            secret=store.secret_key(),
        )
        if not store.users():
            click.echo(
                "screener: warning: no users yet; add one with "
                "`screener user add NAME --role admin`",
                err=True,
            )
        # Count the 30 days of the dashboard now (settled days are kept), not on the first load.
        store.dashboard(_now(), console.tz)
        click.echo(f"screener web: http://{host}:{port}/", err=True)
        uvicorn.run(
            create_app(console),
            host=host,
            port=port,
            proxy_headers=True,
            forwarded_allow_ips="127.0.0.1",
            log_level="warning",
            server_header=False,
            timeout_graceful_shutdown=5,  # live streams would otherwise hold a stop for minutes
        )
