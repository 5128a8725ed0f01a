"""``kittiwake queue ...`` and ``kittiwake mailq``: look at and act on the mail queue.

Owns the queue commands and their exit codes. Every command talks to the running server
through the control socket (``admin.control``). When the server is down, ``list``,
``show`` and ``summary`` read the queue database read-only (``queue.readonly``); the
commands that change the queue refuse, because only the running server may write it.

Exit codes: 0 done; 1 the command failed (no such message, server not running for a
command that changes the queue, no queue, the server reported an error); 2 usage or
configuration error. Not security sensitive by itself: the socket's permissions are the
access check.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from kittiwake.admin import queue_view
from kittiwake.admin.control import ControlError, ServerDown, request, socket_path
from kittiwake.admin.options import config_option
from kittiwake.admin.queue_view import Json
from kittiwake.config import load_config
from kittiwake.errors import ConfigError, StoreError

EXIT_FAILED = 1  # the operation failed (or needs the server, which is down)
EXIT_USAGE = 2  # bad usage or configuration (click's own usage errors are 2 as well)

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Target:
    """Where the queue is: from ``--config`` (or KITTIWAKE_CONFIG, or the defaults)."""

    config_path: Path | None
    as_json: bool

    @property
    def data_dir(self) -> Path:
        try:
            return load_config(self.config_path).data_dir
        except ConfigError as e:
            origin = str(self.config_path) if self.config_path else "built-in defaults"
            _fail(f"{origin}: {e}", EXIT_USAGE)

    def output(self, value: object, lines: list[str]) -> None:
        if self.as_json:
            click.echo(json.dumps(value, indent=2, ensure_ascii=False))
        else:
            for line in lines:
                click.echo(line)


def _fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    click.echo(f"kittiwake: {message}", err=True)
    sys.exit(code)


def _options(f: F) -> F:
    """``--config`` and ``--json``, accepted by the group and by every subcommand."""
    f = click.option("--json", "as_json", is_flag=True, default=None, help="Print JSON.")(f)
    return config_option("TOML configuration file (for data_dir: where the queue and socket are).")(
        f
    )


def _target(config_path: Path | None, as_json: bool | None) -> Target:
    parent = click.get_current_context().find_object(Target)
    return Target(
        config_path if config_path is not None else (parent.config_path if parent else None),
        bool(as_json) if as_json is not None else bool(parent and parent.as_json),
    )


def _read_only(data_dir: Path, read: Callable[[Any], object]) -> Any:
    from kittiwake.queue.readonly import ReadOnlyQueue  # only when the server is down

    click.echo("kittiwake: server not running; reading the queue read-only", err=True)
    try:
        with ReadOnlyQueue(data_dir) as q:
            return read(q)
    except StoreError as e:
        _fail(str(e))


def _ask(target: Target, op: str, **args: str | None) -> Any:
    """A request that changes the queue: the server must be running."""
    try:
        return request(socket_path(target.data_dir), op, args)
    except ServerDown as e:
        _fail(f"{e}; start it with `kittiwake serve`, then try again")
    except ControlError as e:
        _fail(str(e))


def _messages(target: Target) -> list[Json]:
    data_dir = target.data_dir
    try:
        result: list[Json] = request(socket_path(data_dir), "list")
        return result
    except ServerDown:
        return list(_read_only(data_dir, lambda q: [queue_view.message_json(m) for m in q.list()]))
    except ControlError as e:
        _fail(str(e))


# ---------------------------------------------------------------------------- commands


@click.group("queue", invoke_without_command=True)
@_options
@click.pass_context
def queue(ctx: click.Context, config_path: Path | None, as_json: bool | None) -> None:
    """Show or manage the mail queue (alone: the mailq listing)."""
    ctx.obj = Target(config_path, bool(as_json))
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_)


@queue.command("list")
@_options
def list_(config_path: Path | None = None, as_json: bool | None = None) -> None:
    """List every message with its recipients (mailq style; ! marks held mail)."""
    target = _target(config_path, as_json)
    messages = _messages(target)
    target.output(messages, queue_view.mailq(messages))


@click.command("mailq")
@_options
def mailq(config_path: Path | None, as_json: bool | None) -> None:
    """The mail queue, like sendmail's mailq (same as `kittiwake queue list`)."""
    list_.callback(config_path, as_json)  # type: ignore[misc]


@queue.command()
@_options
def summary(config_path: Path | None, as_json: bool | None) -> None:
    """Live recipients per destination domain, by age in minutes (like qshape)."""
    target = _target(config_path, as_json)
    data_dir = target.data_dir
    try:
        result: Json = request(socket_path(data_dir), "summary")
    except ServerDown:
        result = queue_view.summarize(
            _read_only(data_dir, lambda q: [queue_view.message_json(m) for m in q.list()]),
            time.time(),
        )
    except ControlError as e:
        _fail(str(e))
    target.output(result, queue_view.shape(result))


@queue.command()
@click.argument("queue_id")
@_options
def show(queue_id: str, config_path: Path | None, as_json: bool | None) -> None:
    """Everything about one message."""
    target = _target(config_path, as_json)
    data_dir = target.data_dir
    try:
        message: Json = request(socket_path(data_dir), "show", {"queue_id": queue_id})
    except ServerDown:
        found = _read_only(data_dir, lambda q: q.get(queue_id))
        if found is None:
            _fail(f"no such message: {queue_id}")
        message = queue_view.message_json(found)
    except ControlError as e:
        _fail(str(e))
    target.output(message, queue_view.show(message))


@queue.command()
@click.option("--domain", "-d", default=None, help="Only this domain (.example.org: subdomains).")
@_options
def flush(domain: str | None, config_path: Path | None, as_json: bool | None) -> None:
    """Try deferred mail now (all of it, or one destination domain's)."""
    target = _target(config_path, as_json)
    count = _ask(target, "flush", domain=domain)
    where = f" for {domain}" if domain else ""
    target.output(
        {"ok": True, "op": "flush", "domain": domain, "messages": count},
        [f"flush{where}: {count} message{'s' if count != 1 else ''} scheduled"],
    )


def _id_command(op: str, done: str, help_text: str) -> None:
    @queue.command(op, help=help_text)
    @click.argument("queue_id")
    @_options
    def command(queue_id: str, config_path: Path | None, as_json: bool | None) -> None:
        target = _target(config_path, as_json)
        _ask(target, op, queue_id=queue_id)
        target.output({"ok": True, "op": op, "queue_id": queue_id}, [f"{queue_id}: {done}"])


_id_command("hold", "held", "Keep a message but stop delivering it.")
_id_command("release", "released", "Undo hold: deliver the message again.")
_id_command("delete", "deleted", "Remove a message without notice to anyone.")
_id_command("retry", "scheduled now", "Try a message's deferred recipients now.")
_id_command("bounce", "bounced", "Fail every unfinished recipient now (with a DSN).")
