"""The maildrop: where ``sendmail`` leaves messages for the pickup service (Postfix's
``maildrop`` directory, without the setgid ``postdrop`` helper).

Owns the on-disk format, shared by the writer (``admin.sendmail``) and the reader
(``cleanup.pickup``): ``DropEnvelope`` (the envelope as one JSON line), ``DropWriter``
(atomic creation), ``read_drop`` (safe opening), ``ready_files`` and the address check.

A maildrop file, ``<data_dir>/maildrop/<16 hex time>.<16 hex random>``::

    KITTIWAKE-MAILDROP 1 {"sender": ..., "recipients": [...], "user": ..., ...}\\n
    <the message, lines ending in CRLF, as it will enter cleanup>

It is written under a temporary dot-name, fsynced, then renamed to its final name (and the
directory fsynced): a visible name is always a complete file, and a file that exists is
durable. The pickup service ignores dot-names and removes temporary files older than a day.

Security: HIGH on the reading side. The directory is ``1733`` (like ``/tmp`` but not
listable) so that every local user can drop mail; so everything in it is hostile input.
``read_drop`` refuses symlinks (``O_NOFOLLOW``), FIFOs and devices (``O_NONBLOCK`` +
``S_ISREG``) and hard links (``st_nlink == 1``), bounds the envelope line, and
``DropEnvelope.from_line`` validates every field (addresses with the SMTP path grammar).
The submitting uid that counts is the file's owner (``st_uid``, set by the kernel), never
the ``uid`` written in the file. Files are 0644 so that a server running as another user
can read them; other users cannot list the directory and the names are unguessable.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from kittiwake.fsutil import fsync_dir
from kittiwake.proto.grammar import parse_path

MAGIC = b"KITTIWAKE-MAILDROP 1 "
DIR_NAME = "maildrop"
DIR_MODE = 0o1733  # anyone may drop, nobody but the owner may list or remove others' files
FILE_MODE = 0o644
TEMP_PREFIX = ".tmp."
MAX_ENVELOPE = 1024 * 1024  # octets of the envelope line
MAX_RECIPIENTS = 10_000
_NAME_RE = re.compile(r"[0-9a-f]{16}\.[0-9a-f]{16}")
NOTIFY_WORDS = ("never", "success", "failure", "delay")  # RFC 3461 §4.1, lower-case
RET_WORDS = ("full", "hdrs")  # RFC 3461 §4.3
_ENVID_RE = re.compile(r"[\x21-\x7e]{1,100}")  # RFC 3461 §4.4: printable, at most 100


class MaildropError(Exception):
    """A maildrop file (or envelope) that cannot be used; the message says why."""


def valid_mailbox(address: str) -> bool:
    """``local@domain`` as SMTP would carry it (RFC 5321 §4.1.2 Mailbox, lengths of
    §4.5.3.1); the same grammar the SMTP server applies to MAIL FROM and RCPT TO."""
    found = parse_path(f"<{address}>")
    return isinstance(found, tuple) and found == (address, len(address) + 2)


@dataclass(frozen=True, slots=True)
class DropEnvelope:
    """The envelope of a dropped message. ``sender`` "" is the null reverse-path; ``user``
    and ``uid`` are what the submitter claims (informational); ``full_name`` makes the From
    field when the message has none; ``remove_bcc`` is ``sendmail -t``; ``notify``,
    ``ret``, ``envid`` are the DSN requests of ``-N``, ``-R``, ``-V`` (RFC 3461)."""

    sender: str
    recipients: tuple[str, ...]
    user: str = ""
    uid: int = -1
    time: float = 0.0
    full_name: str = ""
    remove_bcc: bool = False
    notify: tuple[str, ...] | None = None
    ret: str | None = None
    envid: str | None = None

    def to_line(self) -> bytes:
        doc: dict[str, object] = {
            "sender": self.sender,
            "recipients": list(self.recipients),
            "user": self.user,
            "uid": self.uid,
            "time": self.time,
            "full_name": self.full_name,
            "remove_bcc": self.remove_bcc,
            "notify": None if self.notify is None else list(self.notify),
            "ret": self.ret,
            "envid": self.envid,
        }
        line = MAGIC + json.dumps(doc, ensure_ascii=True).encode("ascii") + b"\n"
        if len(line) > MAX_ENVELOPE:
            raise MaildropError(f"envelope too large ({len(line)} octets; too many recipients)")
        return line

    @classmethod
    def from_line(cls, line: bytes) -> DropEnvelope:
        """Parse and validate an envelope line; ``MaildropError`` says what is wrong."""
        if not line.startswith(MAGIC) or not line.endswith(b"\n"):
            raise MaildropError("not a maildrop file (bad first line)")
        try:
            doc = json.loads(line[len(MAGIC) :])
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MaildropError(f"envelope is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise MaildropError("envelope is not a JSON object")
        sender = _string(doc, "sender")
        if sender and not valid_mailbox(sender):
            raise MaildropError(f"invalid sender {sender!r}")
        recipients = doc.get("recipients")
        if not isinstance(recipients, list) or not recipients:
            raise MaildropError("no recipients")
        if len(recipients) > MAX_RECIPIENTS:
            raise MaildropError(f"more than {MAX_RECIPIENTS} recipients")
        for r in recipients:
            if not isinstance(r, str) or not valid_mailbox(r):
                raise MaildropError(f"invalid recipient {r!r}")
        uid, when = doc.get("uid", -1), doc.get("time", 0.0)
        if not isinstance(uid, int) or isinstance(uid, bool):
            raise MaildropError("uid is not an integer")
        if not isinstance(when, int | float) or isinstance(when, bool):
            raise MaildropError("time is not a number")
        remove_bcc = doc.get("remove_bcc", False)
        if not isinstance(remove_bcc, bool):
            raise MaildropError("remove_bcc is not a boolean")
        return cls(
            sender=sender,
            recipients=tuple(recipients),
            user=_string(doc, "user")[:64],
            uid=uid,
            time=float(when),
            full_name=_string(doc, "full_name")[:200],
            remove_bcc=remove_bcc,
            notify=_notify(doc.get("notify")),
            ret=_choice(doc.get("ret"), RET_WORDS, "ret"),
            envid=_envid(doc.get("envid")),
        )


def _string(doc: dict[str, object], key: str) -> str:
    value = doc.get(key, "")
    if not isinstance(value, str):
        raise MaildropError(f"{key} is not a string")
    return value


def _notify(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(v in NOTIFY_WORDS for v in value):
        raise MaildropError(f"invalid notify {value!r}")
    if "never" in value and len(value) > 1:
        raise MaildropError("notify: never cannot be combined")  # RFC 3461 §4.1
    return tuple(dict.fromkeys(value))


def _choice(value: object, words: tuple[str, ...], key: str) -> str | None:
    if value is None or value in words:
        return value
    raise MaildropError(f"invalid {key} {value!r}")


def _envid(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _ENVID_RE.fullmatch(value):
        raise MaildropError(f"invalid envid {value!r}")
    return value


# ------------------------------------------------------------------------------ files


def maildrop_dir(data_dir: Path) -> Path:
    return Path(data_dir) / DIR_NAME


def ensure_dir(directory: Path) -> None:
    """Create the maildrop directory (and its parents) if missing, mode ``DIR_MODE``."""
    if directory.is_dir():
        return
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, DIR_MODE)  # mkdir's mode is cut by the umask


def new_name(now: float | None = None) -> str:
    """``<µs since the epoch, 16 hex>.<64 random bits, 16 hex>``: sorts oldest first."""
    us = int((time.time() if now is None else now) * 1_000_000)
    return f"{us:016x}.{secrets.token_hex(8)}"


def is_drop_name(name: str) -> bool:
    return _NAME_RE.fullmatch(name) is not None


class DropWriter:
    """One message being dropped: ``write`` the message, then ``commit`` (or ``abort``).

    The envelope line is written first, so the envelope must be known before the body
    (``sendmail`` reads the header section before it opens the file)."""

    def __init__(self, directory: Path, envelope: DropEnvelope) -> None:
        self.directory = Path(directory)
        line = envelope.to_line()
        self._temp = self.directory / f"{TEMP_PREFIX}{secrets.token_hex(8)}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self._temp, flags, FILE_MODE)
        self._file: BinaryIO | None = os.fdopen(fd, "wb")
        self.size = 0
        try:
            self._file.write(line)
        except BaseException:
            self.abort()
            raise

    def write(self, data: bytes) -> None:
        if self._file is None:
            raise MaildropError("write after commit or abort")
        self._file.write(data)
        self.size += len(data)

    def commit(self) -> Path:
        """Fsync, rename to the final name, fsync the directory; the final path."""
        f = self._file
        if f is None:
            raise MaildropError("commit after commit or abort")
        try:
            f.flush()
            os.fchmod(f.fileno(), FILE_MODE)  # the umask may have cut it
            os.fsync(f.fileno())
            f.close()
            self._file = None
            final = self.directory / new_name()
            os.rename(self._temp, final)  # a fresh random name: nothing is replaced
            fsync_dir(self.directory)
        except BaseException:
            self.abort()
            raise
        return final

    def abort(self) -> None:
        """Remove the temporary file; idempotent."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        with contextlib.suppress(OSError):
            self._temp.unlink()


def ready_files(directory: Path) -> list[Path]:
    """Complete maildrop files, oldest first (by name)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return [directory / n for n in sorted(names) if is_drop_name(n)]


def stale_temp_files(directory: Path, older_than: float, now: float | None = None) -> list[Path]:
    """Temporary files whose writer has not touched them for ``older_than`` seconds."""
    limit = (time.time() if now is None else now) - older_than
    found: list[Path] = []
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(directory):
            if name.startswith(TEMP_PREFIX):
                with contextlib.suppress(OSError):
                    st = os.lstat(directory / name)
                    if st.st_mtime < limit:
                        found.append(directory / name)
    return found


def read_drop(path: Path) -> tuple[DropEnvelope, BinaryIO, os.stat_result]:
    """Open a maildrop file safely: its envelope, the file positioned at the message, and
    its ``fstat`` (``st_uid`` is the real submitter). ``MaildropError`` for a file that is
    not a plain, single-link regular file with a valid envelope; ``OSError`` as it comes
    (e.g. ``FileNotFoundError`` when it has gone)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink
            raise MaildropError("a symbolic link") from None
        raise
    f = os.fdopen(fd, "rb")
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise MaildropError("not a regular file")
        if st.st_nlink != 1:
            raise MaildropError(f"{st.st_nlink} hard links")
        line = f.readline(MAX_ENVELOPE + 1)
        envelope = DropEnvelope.from_line(line)
    except BaseException:
        f.close()
        raise
    return envelope, f, st
