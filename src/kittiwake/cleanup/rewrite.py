"""Submission header rewriting (RFC 6409 §8), streaming: only for *submitted* mail.

Owns ``RewriteSettings`` (from ``[submission]``), ``Submission`` (what a local submission
adds: Bcc removal for ``sendmail -t``, a From for a message without one, the submitting
uid), ``is_submission`` (the rule: an authenticated session on the submission or smtps
listener; relayed port-25 mail is never touched), ``HeaderRewriter`` and the header-section
helpers ``HeaderScanner``/``split_fields``/``field_value`` (also used by ``sendmail -t``).

The rewriter sees the header section, fixes it, then passes the body through unchanged,
chunk by chunk (it never holds the body). It holds at most ``max_header`` octets; a header
section longer than that is passed through untouched. Fixes, in order of the fields:

- address fields (From, Sender, Reply-To, To, Cc, Bcc and their Resent- forms): a bare
  local part gets ``@<domain>`` (RFC 6409 §8.8; see ``rewrite_addr``);
- ``Bcc``/``Resent-Bcc`` are dropped when ``Submission.remove_bcc`` (sendmail -t,
  RFC 5322 §3.6.3);
- at the end of the section, when missing: ``From`` (local submission only), ``Date``
  (RFC 6409 §8.2) and ``Message-ID`` (§8.3, ``<queueid.random@hostname>``).

A message whose first line is no header field (``echo hi | sendmail bob``) gets the added
fields and the empty line that separates them from the body. Line ends follow the message
(CRLF normally). Security: moderately sensitive — client input, bounded, linear scans.
"""

from __future__ import annotations

import email.utils
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from kittiwake.cleanup.rewrite_addr import qualify_address_list
from kittiwake.envelope import SessionInfo

MAX_HEADER = 1024 * 1024  # octets of header section we hold to rewrite
SUBMISSION_LISTENERS = ("submission", "smtps")
ADDRESS_FIELDS = frozenset(
    ["from", "sender", "reply-to", "to", "cc", "bcc"]
    + [f"resent-{n}" for n in ("from", "sender", "to", "cc", "bcc")]
)
BCC_FIELDS = frozenset(["bcc", "resent-bcc"])
# RFC 5322 §3.6.8 field-name (printable ASCII but ":"), then §4.5.3 obsolete blanks.
_FIELD_START_RE = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:")
_FOLD_RE = re.compile(r"\r?\n(?=[ \t])")


@dataclass(frozen=True, slots=True)
class RewriteSettings:
    """``domain`` qualifies bare local parts; ``add_missing_headers`` adds Date/Message-ID
    (and From for local submissions) when missing."""

    domain: str
    add_missing_headers: bool = True
    max_header: int = MAX_HEADER


@dataclass(frozen=True, slots=True)
class Submission:
    """A local submission (``sendmail`` through the pickup service).

    ``remove_bcc`` (sendmail -t), ``from_header``: the value of a From field to add when
    the message has none (e.g. ``Alice <alice@example.org>``), ``uid``: the submitting
    Unix user, named in our trace field (``from userid N``, like Postfix's pickup).
    """

    remove_bcc: bool = False
    from_header: str | None = None
    uid: int | None = None


def is_submission(session: SessionInfo) -> bool:
    """Mail submitted by an authenticated user on a submission listener (RFC 6409 §4)."""
    return session.listener in SUBMISSION_LISTENERS and session.auth_user is not None


# ------------------------------------------------------------------- header section


class HeaderScanner:
    """Finds the end of a header section in a growing buffer, each line looked at once.

    ``scan(buf)`` returns None while undecided, else ``(end, separated)``: the header
    section is ``buf[:end]``; ``separated`` says an empty line follows it (else the first
    non-field line starts the body, or input ended). A continuation line before any field
    is no header. ``finish(buf)`` decides at end of input.
    """

    __slots__ = ("_pos",)

    def __init__(self) -> None:
        self._pos = 0

    def scan(self, buf: bytes | bytearray) -> tuple[int, bool] | None:
        pos = self._pos
        while True:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                self._pos = pos
                return None
            line_end = nl + 1
            if buf[pos:line_end] in (b"\r\n", b"\n"):
                return pos, True
            first = buf[pos]
            if first in b" \t":
                if pos == 0:
                    return 0, False
            elif _FIELD_START_RE.match(buf, pos, line_end) is None:
                return pos, False
            pos = line_end

    def finish(self, buf: bytes | bytearray) -> tuple[int, bool]:
        """At end of input: the header section, with a last line that has no line end."""
        found = self.scan(buf)
        if found is not None:
            return found
        tail = buf[self._pos :]
        if tail[:1] in (b" ", b"\t") and self._pos > 0:
            return len(buf), False
        if tail and _FIELD_START_RE.match(tail) is None:
            return self._pos, False
        return len(buf), False


def split_fields(header: bytes) -> list[tuple[str, bytes]]:
    """A header section → ``(lower-case name, raw field with its folded lines)`` pairs."""
    fields: list[tuple[str, bytes]] = []
    for line in header.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            name, raw = fields[-1]
            fields[-1] = (name, raw + line)
        else:
            name = line.split(b":", 1)[0].strip().decode("ascii", "replace").lower()
            fields.append((name, line))
    return fields


def field_value(raw: bytes) -> str:
    """The unfolded value of a raw field (RFC 5322 §2.2.3), UTF-8 decoded leniently."""
    text = raw.split(b":", 1)[1].decode("utf-8", "replace") if b":" in raw else ""
    return _FOLD_RE.sub("", text).strip("\r\n")


def _line_end(header: bytes) -> bytes:
    nl = header.find(b"\n")
    return b"\n" if nl >= 0 and (nl == 0 or header[nl - 1] != 0x0D) else b"\r\n"


# ------------------------------------------------------------------- the rewriter


class HeaderRewriter:
    """Streams one message: ``feed(chunk)`` → octets to write now; ``finish()`` → the rest.

    ``queue_id``/``hostname`` make the Message-ID, ``now`` (aware, or local time) the Date.
    """

    __slots__ = (
        *("_buf", "_done", "_hostname", "_now"),
        *("_queue_id", "_scanner", "_settings", "_submission"),
    )

    def __init__(
        self,
        settings: RewriteSettings,
        *,
        queue_id: str,
        hostname: str,
        now: datetime | None = None,
        submission: Submission | None = None,
    ) -> None:
        self._settings = settings
        self._queue_id = queue_id
        self._hostname = hostname
        self._now = now
        self._submission = submission or Submission()
        self._buf = bytearray()
        self._scanner = HeaderScanner()
        self._done = False

    @property
    def done(self) -> bool:
        """The header section is behind us: the rest passes through."""
        return self._done

    def feed(self, data: bytes) -> bytes:
        if self._done:
            return data
        self._buf += data
        found = self._scanner.scan(self._buf)
        if found is None:
            if len(self._buf) > self._settings.max_header:
                return self._pass_through()
            return b""
        end, separated = found
        if end > self._settings.max_header:
            return self._pass_through()
        return self._emit(end, separated)

    def finish(self) -> bytes:
        """End of the message: whatever is still held, rewritten."""
        if self._done:
            return b""
        if len(self._buf) > self._settings.max_header:
            return self._pass_through()
        end, separated = self._scanner.finish(self._buf)
        return self._emit(end, separated)

    def _pass_through(self) -> bytes:
        self._done = True
        out, self._buf = bytes(self._buf), bytearray()
        return out

    def _emit(self, end: int, separated: bool) -> bytes:
        self._done = True
        header, rest = bytes(self._buf[:end]), bytes(self._buf[end:])
        self._buf = bytearray()
        eol = _line_end(header or rest)
        fixed = self.rewrite_section(header, eol)
        if fixed == header:
            return header + rest
        if not separated and rest:
            fixed += eol  # the body started without the empty line: put it in
        return fixed + rest

    def rewrite_section(self, header: bytes, eol: bytes = b"\r\n") -> bytes:
        """The fixed header section (``header`` itself when nothing changes)."""
        settings, sub = self._settings, self._submission
        out: list[bytes] = []
        seen: set[str] = set()
        changed = False
        for name, raw in split_fields(header):
            seen.add(name)
            if sub.remove_bcc and name in BCC_FIELDS:
                changed = True
                continue
            if name in ADDRESS_FIELDS:
                fixed = _qualify_field(raw, settings.domain)
                changed = changed or fixed != raw
                raw = fixed
            out.append(raw)
        if out and not out[-1].endswith(b"\n"):
            out[-1] += eol
        added = self._missing(seen) if settings.add_missing_headers else []
        if not changed and not added:
            return header
        return b"".join(out) + b"".join(line.encode("utf-8") + eol for line in added)

    def _missing(self, seen: set[str]) -> list[str]:
        added: list[str] = []
        sub = self._submission
        if "from" not in seen and sub.from_header:
            added.append("From: " + _one_line(sub.from_header))
        if "date" not in seen:
            now = self._now if self._now is not None else datetime.now()
            if now.tzinfo is None:
                now = now.astimezone()
            added.append("Date: " + email.utils.format_datetime(now))
        if "message-id" not in seen:
            added.append(f"Message-ID: {message_id(self._queue_id, self._hostname)}")
        return added


def message_id(queue_id: str, hostname: str) -> str:
    """``<queueid.random@hostname>`` (RFC 5322 §3.6.4 msg-id; unique by queue id + 64
    random bits, so it does not reveal more than the Received field already does)."""
    return f"<{queue_id}.{secrets.token_hex(8)}@{hostname}>"


def _qualify_field(raw: bytes, domain: str) -> bytes:
    name, colon, value = raw.decode("latin-1").partition(":")
    if not colon:
        return raw
    fixed = qualify_address_list(value, domain)
    return raw if fixed == value else (name + colon + fixed).encode("latin-1")


def _one_line(text: str) -> str:
    return "".join(c if c >= " " and c != "\x7f" else " " for c in text)
