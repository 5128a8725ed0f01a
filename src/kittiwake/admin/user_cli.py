"""``kittiwake user ...``: the accounts that may AUTH on submission, and their addresses.

Owns the user commands and their exit codes: ``add``, ``passwd``, ``del``, ``list``,
``disable``, ``enable``, ``address add|del``. They write ``<data_dir>/users.db``
(``auth.sqlite``) directly — SQLite serializes them with the running server, whose
snapshot follows within about a second — so they work whether or not the server runs.

Passwords come from a twice-asked prompt on a terminal, or from the first line of stdin
with ``--password-stdin`` (for scripts); never from the command line, where every user on
the machine could read them in ``ps``. Exit codes: 0 done; 1 the operation failed (no such
user, the name or an address already taken); 2 usage, configuration or an unusable
password. Security sensitive: it creates credentials; it never prints them.
"""

from __future__ import annotations

import datetime
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from kittiwake.admin.options import config_option
from kittiwake.config import load_config
from kittiwake.errors import ConfigError

if TYPE_CHECKING:  # imported when a command runs: other commands need not load argon2
    from kittiwake.auth.hashing import Credentials
    from kittiwake.auth.sqlite import UserDatabase
    from kittiwake.auth.store import User

EXIT_FAILED = 1
EXIT_USAGE = 2

F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    click.echo(f"kittiwake: {message}", err=True)
    sys.exit(code)


def _config_option(f: F) -> F:
    return config_option("TOML configuration file (for data_dir: where users.db is).")(f)


def _database(config_path: Path | None) -> UserDatabase:
    from kittiwake.auth.sqlite import FILENAME, UserDatabase

    try:
        data_dir = load_config(config_path).data_dir
    except ConfigError as e:
        _fail(f"{config_path or 'built-in defaults'}: {e}", EXIT_USAGE)
    try:
        return UserDatabase(data_dir / FILENAME).open()
    except Exception as e:  # sqlite3.Error, OSError: say which file and why
        _fail(f"cannot open {data_dir / FILENAME}: {e}")


def _run(config_path: Path | None, action: Callable[[UserDatabase], object]) -> Any:
    from kittiwake.auth.store import UserError

    db = _database(config_path)
    try:
        return action(db)
    except UserError as e:
        _fail(str(e))
    except ValueError as e:  # a name or an address that cannot be used
        _fail(str(e), EXIT_USAGE)
    finally:
        db.close()


def _credentials(from_stdin: bool) -> Credentials:
    from kittiwake.auth.hashing import make_credentials

    if from_stdin:
        line = sys.stdin.readline()
        password = line.removesuffix("\n").removesuffix("\r")
    elif sys.stdin.isatty():
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        _fail("no terminal to ask for the password on: use --password-stdin", EXIT_USAGE)
    try:
        return make_credentials(password)
    except ValueError as e:
        _fail(str(e), EXIT_USAGE)


_password_stdin = click.option(
    "--password-stdin", is_flag=True, help="Read the password from the first line of stdin."
)


@click.group("user")
def user() -> None:
    """Manage the users who may authenticate (AUTH) and the addresses they own."""


@user.command("add")
@click.argument("name")
@click.option(
    "--address",
    "-a",
    "addresses",
    multiple=True,
    help="An address the user owns (repeat for more; default: NAME when it is an address).",
)
@_password_stdin
@_config_option
def add(
    name: str, addresses: tuple[str, ...], password_stdin: bool, config_path: Path | None
) -> None:
    """Create user NAME with a password."""
    owned = addresses or ((name,) if "@" in name else ())
    if _run(config_path, lambda d: d.get(name)) is not None:
        _fail(f"user {name} already exists")
    credentials = _credentials(password_stdin)
    created: User = _run(config_path, lambda d: d.add_user(name, credentials, owned))
    click.echo(f"user {created.name} added" + _owning(created.addresses))


@user.command("passwd")
@click.argument("name")
@_password_stdin
@_config_option
def passwd(name: str, password_stdin: bool, config_path: Path | None) -> None:
    """Set a new password for NAME."""
    if _run(config_path, lambda d: d.get(name)) is None:
        _fail(f"no user {name}")
    credentials = _credentials(password_stdin)
    _run(config_path, lambda d: d.set_credentials(name, credentials))
    click.echo(f"password of {name} changed")


@user.command("del")
@click.argument("name")
@_config_option
def delete(name: str, config_path: Path | None) -> None:
    """Delete NAME and release its addresses."""
    _run(config_path, lambda d: d.delete_user(name))
    click.echo(f"user {name} deleted")


@user.command("disable")
@click.argument("name")
@_config_option
def disable(name: str, config_path: Path | None) -> None:
    """Refuse NAME's logins (the addresses stay owned, mail still arrives)."""
    _run(config_path, lambda d: d.set_disabled(name, True))
    click.echo(f"user {name} disabled")


@user.command("enable")
@click.argument("name")
@_config_option
def enable(name: str, config_path: Path | None) -> None:
    """Allow NAME's logins again."""
    _run(config_path, lambda d: d.set_disabled(name, False))
    click.echo(f"user {name} enabled")


@user.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_config_option
def list_(as_json: bool, config_path: Path | None) -> None:
    """Every user with its addresses."""
    users: list[User] = _run(config_path, lambda d: d.users())
    if as_json:
        click.echo(json.dumps([_json(u) for u in users], indent=2, ensure_ascii=False))
        return
    for u in users:
        flag = " (disabled)" if u.disabled else ""
        click.echo(f"{u.name}{flag}: {', '.join(u.addresses) or '-'}")


@user.group("address")
def address() -> None:
    """Give a user an address, or take it away."""


@address.command("add")
@click.argument("name")
@click.argument("addr", metavar="ADDRESS")
@_config_option
def address_add(name: str, addr: str, config_path: Path | None) -> None:
    """NAME now owns ADDRESS (may send as it; a mailbox when in a local domain)."""
    _run(config_path, lambda d: d.add_address(name, addr))
    click.echo(f"{name} owns {addr}")


@address.command("del")
@click.argument("name")
@click.argument("addr", metavar="ADDRESS")
@_config_option
def address_del(name: str, addr: str, config_path: Path | None) -> None:
    """NAME no longer owns ADDRESS."""
    _run(config_path, lambda d: d.remove_address(name, addr))
    click.echo(f"{name} no longer owns {addr}")


def _owning(addresses: tuple[str, ...]) -> str:
    return f", owning {', '.join(addresses)}" if addresses else " (owns no address yet)"


def _json(u: User) -> dict[str, object]:
    created = datetime.datetime.fromtimestamp(u.created, datetime.UTC)
    return {
        "name": u.name,
        "disabled": u.disabled,
        "created": created.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "addresses": list(u.addresses),
    }
