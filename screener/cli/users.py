"""``screener user``: the web console's users, their passwords and API tokens."""

from __future__ import annotations

from pathlib import Path

import click

from screener.cli.common import _config, _now, _webstore, common_options
from screener.cli.root import main
from screener.errors import InputError


@main.group("user")
def user_group() -> None:
    """Manage the web console's users (admin or staff) and their API tokens."""


def _read_password(password_file: Path | None) -> str:
    """The new password: the first line of --password-file, or typed twice at the terminal."""
    from screener.users import check_password

    if password_file is not None:
        try:
            text = password_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{password_file}: cannot read the password: {exc}") from exc
        password = text.splitlines()[0] if text else ""
    else:
        password = click.prompt("password", hide_input=True, confirmation_prompt=True)
    try:
        return check_password(password)
    except ValueError as exc:
        raise InputError(str(exc)) from exc


_password_file = click.option(
    "--password-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Read the password from this file's first line instead of the terminal.",
)


@user_group.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["admin", "staff"]), required=True)
@_password_file
@common_options
def user_add(
    name: str,
    role: str,
    password_file: Path | None,
    db_path: Path | None,
    config_path: Path | None,
) -> None:
    """Add the console user NAME with a role: staff view, block and allow; admins do all."""
    from screener.users import Role, check_name, hash_password

    try:
        check_name(name)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    config = _config(db_path, config_path)
    password = _read_password(password_file)
    with _webstore(config) as store:
        user = store.add_user(name, Role(role), hash_password(password), _now())
    click.echo(f"added {user.role} {user.name}")


@user_group.command("remove")
@click.argument("name")
@common_options
def user_remove(name: str, db_path: Path | None, config_path: Path | None) -> None:
    """Remove the console user NAME and their API tokens."""
    config = _config(db_path, config_path)
    with _webstore(config, create=False) as store:
        if not store.remove_user(name, _now()):
            raise InputError(f"no user {name}")
    click.echo(f"removed {name}")


@user_group.command("passwd")
@click.argument("name")
@_password_file
@common_options
def user_passwd(
    name: str, password_file: Path | None, db_path: Path | None, config_path: Path | None
) -> None:
    """Set a new password for NAME; their open sessions end."""
    from screener.users import hash_password

    config = _config(db_path, config_path)
    password = _read_password(password_file)
    with _webstore(config, create=False) as store:
        if not store.set_password(name, hash_password(password), _now()):
            raise InputError(f"no user {name}")
    click.echo(f"password of {name} changed; their sessions have ended")


@user_group.command("token")
@click.argument("name")
@common_options
def user_token(name: str, db_path: Path | None, config_path: Path | None) -> None:
    """Make a new API bearer token for NAME and print it (once: only its hash is kept)."""
    from screener.users import new_token, token_digest

    config = _config(db_path, config_path)
    token = new_token()
    with _webstore(config, create=False) as store:
        if not store.add_token(name, token_digest(token), _now()):
            raise InputError(f"no user {name}")
    click.echo(token)


@user_group.command("list")
@common_options
def user_list(db_path: Path | None, config_path: Path | None) -> None:
    """Show the console users and their roles."""
    config = _config(db_path, config_path)
    with _webstore(config, create=False) as store:
        for user in store.users():
            click.echo(f"{user.name}\t{user.role}")
