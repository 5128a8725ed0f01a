"""Final delivery into Maildir folders (http://cr.yp.to/proto/maildir.html).

Owns ``MaildirAgent`` (a ``delivery.api.DeliveryAgent``). Security sensitive: it writes
files whose location comes from recipient addresses (``LocalMailboxes.path_for`` keeps them
inside the mail root) and prepends header fields built from envelope addresses (CR/LF and
other controls are removed first, so no header can be injected).

For each recipient: ``tmp/<unique>`` is created exclusively, gets ``Return-Path:`` (RFC 5321
§4.4: added at final delivery) and ``Delivered-To:``, then the spool content streamed in
64 KiB chunks with CRLF line ends turned into LF (the Maildir convention; for a BINARYMIME
body only in the header section: RFC 3030 §3 binary data is kept octet for octet); the file is
fsynced, hard-linked to ``new/<unique>,S=<size>`` (then unlinked from tmp/) and ``new/`` is
fsynced — only then is the recipient DELIVERED. All file work runs in a worker thread
(``asyncio.to_thread``).

Idempotent delivery: ``<unique>`` is made from the message's arrival time, queue id and
recipient index (``1732890000.M123456K1K1DCH56844T7W_0.host``), not from the delivering
process. If we crash after the link but before the outcome is recorded, the retry after
restart finds ``new/<unique>,S=<size>`` already there (``link`` fails with EEXIST) and
counts it delivered instead of delivering a second copy. (A copy the reader has already
moved to ``cur/`` in between is not detected: that window is the crash-to-restart time.)
Quarantine (issue 5, DMARC p=quarantine): a message whose spool starts with the
``X-Kittiwake-Quarantine:`` field goes into the Maildir++ folder ``.Junk/`` of the
mailbox. Only our DATA stage can write that field first (``smtpd.datastage``): a
client's own header fields always come after our Received line, so it cannot be forged.

A predictable name in ``tmp/`` must not be a trap: a leftover is unlinked and the file
created with O_EXCL, which never follows a symlink.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from kittiwake.delivery.api import (
    BodyOpener,
    Outcome,
    QueuedMessage,
    QueuedRecipient,
    RecipientStatus,
    Route,
)
from kittiwake.delivery.local import LocalMailboxes
from kittiwake.envelope import BodyType, Reply
from kittiwake.errors import KittiwakeError
from kittiwake.fsutil import DirSyncer, fsync_dir

CHUNK = 64 * 1024
DELIVERED = Reply(250, "2.0.0", "delivered to maildir")
NO_MAILBOX = Reply(550, "5.1.1", "no such mailbox here")
_UNSAFE = re.compile(r"[^A-Za-z0-9]")
QUARANTINE_MARK = b"X-Kittiwake-Quarantine:"  # = smtpd.datastage.QUARANTINE_HEADER + ":"
JUNK = ".Junk"  # Maildir++ folder (Dovecot's and Courier's layout)


def quarantined(open_body: BodyOpener) -> bool:
    """True when the message must go to the Junk folder (see the module docstring).
    An unreadable body says False: the delivery itself then fails and defers."""
    try:
        with open_body() as body:
            return body.read(len(QUARANTINE_MARK)) == QUARANTINE_MARK
    except (OSError, KittiwakeError):
        return False


def _header_value(text: str) -> str:
    return "".join(c for c in text if c >= " " and c != "\x7f")


def _maildir_host(hostname: str) -> str:
    # The Maildir spec: "/" → \057 and ":" → \072 in the host part of a unique name.
    return hostname.replace("/", "\\057").replace(":", "\\072") or "localhost"


def copy_crlf_to_lf(src: BinaryIO, write: Callable[[bytes], object]) -> int:
    """Stream ``src`` to ``write`` (a callable), CRLF → LF; returns octets written.

    A CR that ends a chunk is held back until the next chunk shows whether an LF follows;
    a CR not followed by LF is kept as it is.
    """
    total = 0
    held_cr = False
    while chunk := src.read(CHUNK):
        if held_cr:
            chunk = b"\r" + chunk
        held_cr = chunk.endswith(b"\r")
        if held_cr:
            chunk = chunk[:-1]
        out = chunk.replace(b"\r\n", b"\n")
        write(out)
        total += len(out)
    if held_cr:
        write(b"\r")
        total += 1
    return total


def copy_binary_body(src: BinaryIO, write: Callable[[bytes], object]) -> int:
    """For BODY=BINARYMIME (RFC 3030 §3): the header section gets LF line ends, the body
    is copied octet for octet — in a binary body a CRLF is data, not a line end."""
    total = 0
    while line := src.readline(CHUNK):
        if line.endswith(b"\r\n"):
            line = line[:-2] + b"\n"
        write(line)
        total += len(line)
        if line == b"\n":  # the empty line: the body starts
            break
    while chunk := src.read(CHUNK):
        write(chunk)
        total += len(chunk)
    return total


def _failure_reply(exc: OSError) -> Reply:
    reason = exc.strerror or type(exc).__name__
    if exc.errno == errno.ENOSPC:
        return Reply(452, "4.3.1", f"maildir delivery failed: {reason}")
    if exc.errno == errno.EDQUOT:
        return Reply(452, "4.2.2", f"mailbox full: {reason}")
    return Reply(451, "4.3.0", f"maildir delivery failed: {reason}")


class MaildirAgent:
    """Delivers to the Maildir of each recipient's local mailbox."""

    name = "maildir"

    def __init__(self, mailboxes: LocalMailboxes, hostname: str) -> None:
        self.mailboxes = mailboxes
        self.hostname = _maildir_host(hostname)
        self._ready: set[Path] = set()  # Maildirs known to exist
        self._new_dirs = DirSyncer()  # concurrent deliveries share new/'s fsync

    async def deliver(
        self,
        message: QueuedMessage,
        recipients: Sequence[QueuedRecipient],
        open_body: BodyOpener,
        route: Route | None = None,
    ) -> list[Outcome]:
        return await asyncio.to_thread(self._deliver_all, message, recipients, open_body)

    def _deliver_all(
        self,
        message: QueuedMessage,
        recipients: Sequence[QueuedRecipient],
        open_body: BodyOpener,
    ) -> list[Outcome]:
        outcomes = []
        junk: bool | None = None  # a property of the message: read once, when first needed
        for rcpt in recipients:
            mailbox = self.mailboxes.lookup(rcpt.address)
            if mailbox is None:
                outcomes.append(Outcome(rcpt.index, RecipientStatus.BOUNCED, NO_MAILBOX))
                continue
            try:
                maildir = self.mailboxes.path_for(mailbox)
                if junk is None:
                    junk = quarantined(open_body)
                if junk:
                    maildir = maildir / JUNK
                unique = self.unique_name(message, rcpt)
                self.deliver_one(
                    maildir,
                    unique,
                    message.envelope.sender,
                    rcpt.address,
                    open_body,
                    binary=message.envelope.body_type is BodyType.BINARYMIME,
                )
            except ValueError:  # a key that cannot be a safe path: never deliverable
                outcomes.append(Outcome(rcpt.index, RecipientStatus.BOUNCED, NO_MAILBOX))
            except OSError as exc:
                outcomes.append(Outcome(rcpt.index, RecipientStatus.DEFERRED, _failure_reply(exc)))
            except KittiwakeError as exc:  # the body could not be read from the queue
                reply = Reply(451, "4.3.0", f"queue file unreadable: {exc}")
                outcomes.append(Outcome(rcpt.index, RecipientStatus.DEFERRED, reply))
            else:
                outcomes.append(Outcome(rcpt.index, RecipientStatus.DELIVERED, DELIVERED))
        return outcomes

    def unique_name(self, message: QueuedMessage, rcpt: QueuedRecipient) -> str:
        """The Maildir unique name of one delivery: the same on every retry of it."""
        t = message.received_at
        qid = _UNSAFE.sub("", message.queue_id)
        return f"{int(t)}.M{int(t % 1 * 1_000_000)}K{qid}_{rcpt.index}.{self.hostname}"

    def deliver_one(
        self,
        maildir: Path,
        unique: str,
        sender: str,
        recipient: str,
        open_body: BodyOpener,
        *,
        binary: bool = False,
    ) -> Path:
        """Write one copy into ``maildir`` unless it is there already; returns its path in
        ``new/``."""
        self._ensure_maildir(maildir)
        tmp = maildir / "tmp" / unique
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # a crashed attempt's leftover (or a planted symlink)
        head = (
            f"Return-Path: <{_header_value(sender)}>\nDelivered-To: {_header_value(recipient)}\n"
        ).encode("utf-8", "surrogateescape")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with open(fd, "wb", buffering=CHUNK, closefd=True) as out, open_body() as body:
                out.write(head)
                copy = copy_binary_body if binary else copy_crlf_to_lf
                size = len(head) + copy(body, out.write)
                out.flush()
                os.fsync(out.fileno())
            final = maildir / "new" / f"{unique},S={size}"
            # link, unlike rename, never replaces: EEXIST means delivered before a crash.
            with contextlib.suppress(FileExistsError):
                os.link(tmp, final)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        self._new_dirs.sync(maildir / "new")
        return final

    def _ensure_maildir(self, maildir: Path) -> None:
        if maildir in self._ready:
            return
        if not (maildir / "new").is_dir():
            created = []
            levels = [maildir.parent.parent, maildir.parent, maildir]
            if maildir.name == JUNK:  # root / domain / user / .Junk
                levels.insert(0, maildir.parent.parent.parent)
            for p in levels:
                if not p.is_dir():
                    p.mkdir(mode=0o700, exist_ok=True)
                    created.append(p)
            for sub in ("tmp", "new", "cur"):
                (maildir / sub).mkdir(mode=0o700, exist_ok=True)
            if maildir.name == JUNK:  # Maildir++: a folder says so
                (maildir / "maildirfolder").touch(mode=0o600)
            # New directory entries must be durable before a file in them is.
            fsync_dir(maildir)
            for p in created:
                fsync_dir(p.parent)
        self._ready.add(maildir)
