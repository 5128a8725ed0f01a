"""``sendmail`` / ``kittiwake sendmail``: submit a message from the command line.

Owns the command: it reads the message on stdin, writes it with its envelope into the
maildrop (``cleanup.maildrop``: temp name, fsync, rename), pokes the running server's
pickup service over the control socket (best effort) and exits 0 — the server need not be
running: the pickup service takes the file when it starts. Exit codes are sysexits(3):
EX_USAGE (bad options, no recipients), EX_NOUSER (an unparsable recipient), EX_DATAERR
(too big, or ``-t`` with a header section over 1 MiB), EX_TEMPFAIL (the maildrop cannot be
written), EX_CONFIG (bad configuration), EX_SOFTWARE (a bug). The command line is in
``sendmail_args``; ``-bs`` (SMTP on stdin/stdout) in ``sendmail_smtp``.

Input: lines end in LF or CRLF and are written with CRLF; a first line ``From ...`` (an
mbox separator) is dropped; without ``-i``/``-oi`` a line holding only ``.`` ends the
message. The sender is ``-f``, else ``<user>@<submission.rewrite_domain>``; the header
rewriting (Date, Message-ID, From from ``-F`` or the passwd full name, qualified
addresses, Bcc removal for ``-t``) happens in the server's cleanup, not here.
Security: runs as any local user, so it trusts nothing from the environment but the
config file it is pointed at; the server re-checks everything it writes.
"""

from __future__ import annotations

import os
import pwd
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO, TextIO

import click

from kittiwake import __version__
from kittiwake.admin.control import ControlError, request, socket_path
from kittiwake.admin.sendmail_args import (
    EX_CONFIG,
    EX_DATAERR,
    EX_NOUSER,
    EX_OK,
    EX_SOFTWARE,
    EX_TEMPFAIL,
    EX_USAGE,
    AddressError,
    Options,
    UsageError,
    parse_args,
    parse_recipients,
    parse_sender,
)
from kittiwake.cleanup.maildrop import (
    DropEnvelope,
    DropWriter,
    MaildropError,
    ensure_dir,
    maildrop_dir,
)
from kittiwake.cleanup.rewrite import MAX_HEADER, HeaderScanner, field_value, split_fields
from kittiwake.config import Config, load_config
from kittiwake.errors import ConfigError

USAGE = (
    "usage: sendmail [-t] [-i] [-f sender] [-F 'Full Name'] [-N dsn] [-bm|-bs] [-v]\n"
    "                [--config FILE] [--] [recipient ...]   (message on stdin)"
)
CHUNK = 64 * 1024
POKE_TIMEOUT = 2.0


class _Failure(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``sendmail``)."""
    sys.exit(run(sys.argv[1:] if argv is None else argv))


def run(
    argv: list[str],
    stdin: BinaryIO | None = None,
    stdout: BinaryIO | None = None,
    err: TextIO | None = None,
) -> int:
    """The whole command; its exit code (never raises, but for KeyboardInterrupt)."""
    err = err or sys.stderr
    try:
        return _run(argv, stdin or sys.stdin.buffer, stdout or sys.stdout.buffer, err)
    except _Failure as exc:
        print(f"sendmail: {exc}", file=err)
        return exc.code
    except UsageError as exc:
        print(f"sendmail: {exc}\n{USAGE}", file=err)
        return EX_USAGE
    except Exception as exc:  # a bug: say so, with the sysexits code for it
        print(f"sendmail: internal error: {exc.__class__.__name__}: {exc}", file=err)
        return EX_SOFTWARE


def _run(argv: list[str], stdin: BinaryIO, stdout: BinaryIO, err: TextIO) -> int:
    opts = parse_args(argv)
    if opts.help:
        stdout.write(USAGE.encode() + b"\n")
        return EX_OK
    if opts.version:
        stdout.write(f"sendmail (kittiwake {__version__})\n".encode())
        return EX_OK
    config = _config(opts)
    domain = config.submission.rewrite_domain
    user, uid, gecos = whoami()
    if opts.sender is not None:
        sender = parse_sender(opts.sender, domain)
    else:
        sender = parse_sender(user, domain)
    try:
        recipients = parse_recipients(opts.recipients, domain)
    except AddressError as exc:
        raise _Failure(EX_NOUSER, str(exc)) from None
    full_name = opts.full_name if opts.full_name is not None else gecos
    base = DropEnvelope(
        sender=sender,
        recipients=(),
        user=user,
        uid=uid,
        time=time.time(),
        full_name=" ".join(full_name.split())[:200],
        remove_bcc=opts.extract,
        notify=opts.notify,
        ret=opts.ret,
        envid=opts.envid,
    )
    if opts.mode == "s":
        from kittiwake.admin.sendmail_smtp import serve_stdio

        return serve_stdio(config, base, stdin, stdout, err, verbose=opts.verbose)
    if not recipients and not opts.extract:
        raise UsageError("no recipient addresses (give them as arguments, or use -t)")
    lines = read_message(stdin, ignore_dots=opts.ignore_dots)
    head, header = read_header(lines)
    if opts.extract:
        if header is None:
            raise _Failure(EX_DATAERR, f"-t: header section larger than {MAX_HEADER} octets")
        try:
            recipients = list(dict.fromkeys(recipients + header_recipients(header, domain)))
        except AddressError as exc:
            raise _Failure(EX_NOUSER, str(exc)) from None
        if not recipients:
            raise UsageError("no recipient addresses found in the message header")
    envelope = replace(base, recipients=tuple(recipients))
    path = drop(config, envelope, [head], lines)
    if opts.verbose:
        print(f"sendmail: from=<{sender}> to={','.join(recipients)}: {path}", file=err)
    poke(config.data_dir)
    return EX_OK


def _config(opts: Options) -> Config:
    path = opts.config
    if path is None and os.environ.get("KITTIWAKE_CONFIG"):
        path = Path(os.environ["KITTIWAKE_CONFIG"])
    try:
        return load_config(path)
    except ConfigError as exc:
        raise _Failure(EX_CONFIG, f"{path or 'built-in defaults'}: {exc}") from None


def whoami() -> tuple[str, int, str]:
    """The real user: (login name, uid, full name from the GECOS field)."""
    uid = os.getuid()
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        return f"uid{uid}", uid, ""
    return entry.pw_name, uid, entry.pw_gecos.split(",")[0].strip()


def read_message(stream: BinaryIO, *, ignore_dots: bool) -> Iterator[bytes]:
    """The message on ``stream`` as CRLF-ended lines, in blocks of about ``CHUNK`` octets
    (see the module docstring for the mbox line and the lone dot)."""
    first = True
    carry: list[bytes] = []
    while True:
        data = stream.read(CHUNK)
        if not data:
            break
        if b"\n" not in data:
            carry.append(data)  # a long line: no quadratic re-joining
            continue
        lines = (b"".join(carry) + data).split(b"\n")
        carry = [lines.pop()]
        out: list[bytes] = []
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if first:
                first = False
                if line.startswith(b"From "):
                    continue
            if not ignore_dots and line == b".":
                yield b"".join(out)
                return
            out.append(line + b"\r\n")
        yield b"".join(out)
    last = b"".join(carry).removesuffix(b"\r")
    if last and not (first and last.startswith(b"From ")) and (ignore_dots or last != b"."):
        yield last + b"\r\n"


def read_header(blocks: Iterator[bytes]) -> tuple[bytes, bytes | None]:
    """Read blocks until the header section is complete: ``(octets read, header section)``;
    the header is None when it is larger than ``MAX_HEADER``."""
    buf = bytearray()
    scanner = HeaderScanner()
    for block in blocks:
        buf += block
        found = scanner.scan(buf)
        if found is not None:
            end = found[0]
            return bytes(buf), (bytes(buf[:end]) if end <= MAX_HEADER else None)
        if len(buf) > MAX_HEADER:
            return bytes(buf), None
    end, _ = scanner.finish(buf)
    return bytes(buf), bytes(buf[:end])


def header_recipients(header: bytes, domain: str) -> list[str]:
    """``-t``: the addresses in To, Cc and Bcc — or in Resent-To/-Cc/-Bcc when the message
    has any (a resent message, RFC 5322 §3.6.6)."""
    fields = split_fields(header)
    names = {"resent-to", "resent-cc", "resent-bcc"}
    if not any(name in names for name, _ in fields):
        names = {"to", "cc", "bcc"}
    return parse_recipients([field_value(raw) for name, raw in fields if name in names], domain)


def drop(config: Config, envelope: DropEnvelope, first: list[bytes], rest: Iterator[bytes]) -> Path:
    """Write the message into the maildrop; its path. ``_Failure`` on any problem."""
    directory = maildrop_dir(config.data_dir)
    limit = config.limits.max_message_size
    try:
        ensure_dir(directory)
        writer = DropWriter(directory, envelope)
    except MaildropError as exc:
        raise _Failure(EX_DATAERR, str(exc)) from None
    except OSError as exc:
        raise _Failure(EX_TEMPFAIL, f"cannot write to the maildrop {directory}: {exc}") from None
    try:
        for blocks in (first, rest):
            for block in blocks:
                writer.write(block)
                if limit and writer.size > limit:
                    raise _Failure(EX_DATAERR, f"message larger than {limit} octets")
        return writer.commit()
    except OSError as exc:
        raise _Failure(EX_TEMPFAIL, f"cannot write to the maildrop {directory}: {exc}") from None
    finally:
        writer.abort()  # a no-op after commit


def poke(data_dir: Path) -> bool:
    """Ask a running server to pick the maildrop up now (else it polls within ~1 s)."""
    try:
        request(socket_path(data_dir), "pickup", timeout=POKE_TIMEOUT)
    except ControlError:
        return False
    return True


class _Passthrough(click.Command):
    """Hands the raw arguments to our own parser: click must not see ``-oi`` or ``-fuser``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["sendmail_argv"] = list(args)
        return []


def _command() -> None:
    ctx = click.get_current_context()
    sys.exit(run(ctx.meta["sendmail_argv"]))


sendmail_command = _Passthrough(
    "sendmail",
    callback=_command,
    help="Submit a message on stdin, like sendmail(1) (-t, -f, -F, -i, -bs ...).",
    add_help_option=False,
)
