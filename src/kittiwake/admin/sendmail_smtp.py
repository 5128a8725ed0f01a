"""``sendmail -bs``: an SMTP dialogue on stdin/stdout, each message dropped in the maildrop.

Owns ``serve_stdio``. It runs the server's own sans-I/O core (``proto.server``) over the
process's stdin and stdout — the same grammar, limits and replies as the listeners, with
no STARTTLS, AUTH or ETRN (the caller is a local user) — and turns each accepted message
into a maildrop file (``cleanup.maildrop``), so it works with the server down. The reply
to the end of data is ``250 2.0.0 Ok: queued as <maildrop name>`` once the file is
durable. Security: the peer is the local user who runs the command; the pickup service
re-validates the file; the trace field names the uid.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO, TextIO

from kittiwake.admin.sendmail_args import EX_OK
from kittiwake.cleanup.maildrop import (
    DropEnvelope,
    DropWriter,
    MaildropError,
    ensure_dir,
    maildrop_dir,
)
from kittiwake.config import Config
from kittiwake.envelope import Notify, Reply
from kittiwake.proto import events as ev
from kittiwake.proto.server import ServerConnection

CANNOT_DROP = Reply(451, "4.3.0", "Cannot write the message to the maildrop; try again later")
_NOTIFY_WORDS = ((Notify.SUCCESS, "success"), (Notify.FAILURE, "failure"), (Notify.DELAY, "delay"))


def serve_stdio(
    config: Config,
    base: DropEnvelope,
    stdin: BinaryIO,
    stdout: BinaryIO,
    err: TextIO,
    *,
    verbose: bool = False,
) -> int:
    """Speak SMTP until QUIT or end of input; exit code 0 (failures are SMTP replies)."""
    session = _StdioSession(config, base, stdout, err, verbose)
    read = getattr(stdin, "read1", stdin.read)
    try:
        session.send(session.conn.greeting())
        while not session.closing:
            data = read(65536)
            session.conn.receive_data(data)
            session.run()
            if not data:
                break
    finally:
        session.abort()
    from kittiwake.admin.sendmail import poke  # lazily: sendmail imports this module

    if session.dropped:
        poke(config.data_dir)
    return EX_OK


class _StdioSession:
    def __init__(
        self, config: Config, base: DropEnvelope, stdout: BinaryIO, err: TextIO, verbose: bool
    ) -> None:
        self.conn = ServerConnection(config.proto_config(starttls_available=False))
        self.directory = maildrop_dir(config.data_dir)
        self.base = base
        self.stdout = stdout
        self.err = err
        self.verbose = verbose
        self.closing = False
        self.dropped = 0
        self._mail: ev.MailFrom | None = None
        self._recipients: list[ev.RcptTo] = []
        self._writer: DropWriter | None = None

    def send(self, data: bytes) -> None:
        if data:
            self.stdout.write(data)
            self.stdout.flush()

    def run(self) -> None:
        conn = self.conn
        while not self.closing:
            event = conn.next_event()
            if event is ev.NEED_DATA or event is ev.PAUSED:
                break
            self._handle(event)
        self.send(conn.data_to_send())

    def _handle(self, event: object) -> None:
        conn = self.conn
        if isinstance(event, ev.BodyData):
            if self._writer is not None:
                self._writer.write(event.data)
        elif isinstance(event, ev.Helo):
            self.abort()
            conn.accept_helo()
        elif isinstance(event, ev.MailFrom):
            self._mail, self._recipients = event, []
            conn.accept()
        elif isinstance(event, ev.RcptTo):
            self._recipients.append(event)
            conn.accept()
        elif isinstance(event, ev.DataStart):
            self._start()
        elif isinstance(event, ev.BodyEnd):
            self._end(event)
        elif isinstance(event, ev.Reset):
            self.abort()
        elif isinstance(event, (ev.Quit, ev.Closing, ev.ConnectionClosed)):
            self.closing = True
        elif isinstance(event, (ev.AuthStart, ev.AuthResponse, ev.Etrn)):
            conn.reject(Reply(502, "5.5.1", "Not available here"))  # never offered

    def _start(self) -> None:
        mail = self._mail
        assert mail is not None  # the core allows DATA only after MAIL and RCPT
        notify = {r.recipient.notify for r in self._recipients}
        envelope = replace(
            self.base,
            sender=mail.sender,
            recipients=tuple(dict.fromkeys(r.recipient.address for r in self._recipients)),
            remove_bcc=False,
            notify=_notify_words(notify.pop()) if len(notify) == 1 else None,
            ret=mail.ret.value.lower() if mail.ret is not None else None,
            envid=mail.envid,
        )
        try:
            ensure_dir(self.directory)
            self._writer = DropWriter(self.directory, envelope)
        except (OSError, MaildropError) as exc:
            print(f"sendmail: cannot write to the maildrop {self.directory}: {exc}", file=self.err)
            self.conn.reject(CANNOT_DROP)
            return
        self.conn.accept()

    def _end(self, event: ev.BodyEnd) -> None:
        writer, self._writer = self._writer, None
        if writer is None or event.failure is not None:
            if writer is not None:
                writer.abort()
            if event.failure is None:
                self.conn.reject(CANNOT_DROP)
            return
        try:
            path: Path = writer.commit()
        except (OSError, MaildropError) as exc:
            print(f"sendmail: cannot write to the maildrop {self.directory}: {exc}", file=self.err)
            self.conn.reject(CANNOT_DROP)
            return
        self.dropped += 1
        if self.verbose:
            print(f"sendmail: dropped {path}", file=self.err)
        self.conn.accept(Reply(250, "2.0.0", f"Ok: queued as {path.name}"))

    def abort(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            with contextlib.suppress(OSError):
                writer.abort()


def _notify_words(notify: Notify | None) -> tuple[str, ...] | None:
    if notify is None:
        return None
    if notify == Notify.NEVER:
        return ("never",)
    return tuple(word for flag, word in _NOTIFY_WORDS if notify & flag)
