"""Delivery status notifications: the message a bounce, delay or success notice is made of.

Owns ``write_dsn``, a pure writer (no I/O beyond the ``write`` callable and the ``original``
file it is given) of an RFC 3464 DSN inside an RFC 6522 ``multipart/report``, CRLF-ended:

1. ``text/plain``: a Postfix-like explanation for people, one entry per recipient;
2. ``message/delivery-status`` (RFC 3464 §2.2 per-message fields, §2.3 per-recipient
   fields), or ``message/global-delivery-status`` (RFC 6533 §6.2) when a field holds UTF-8;
3. the returned original (RFC 3461 §4.3 RET), streamed in chunks, never held in memory:
   ``message/rfc822`` (``message/global`` for SMTPUTF8 mail, RFC 6532 §3.7) for the whole
   message, or ``text/rfc822-headers`` (``message/global-headers``, RFC 6533 §6.3) for its
   header section only.

What is returned: the whole message for a failure when RET=FULL *or when no RET was given*
(Postfix's default: the sender gets back what was lost), within ``max_original`` octets;
only the headers for RET=HDRS, for delay and success notices (RFC 3461 §6.2 leaves that to
us; the message was not lost), for double bounces (the postmaster needs the trace, not a
stranger's mail), for a message larger than ``max_original``, and for BINARYMIME mail (which
cannot ride inside an 8bit part). A returned part that may hold 8-bit octets is labelled
``Content-Transfer-Encoding: 8bit``; ``DsnResult`` tells the caller whether the notice must
go out with BODY=8BITMIME and/or SMTPUTF8.

Security sensitive: diagnostics are remote servers' replies and addresses are the clients'
words, and both land in header-like fields. Every value is cleaned of control characters
(no CR/LF: a remote server must not be able to add DSN fields or MIME parts), non-ASCII is
kept only where UTF-8 is allowed, and every line is folded under 998 octets (RFC 5322
§2.1.1). The MIME boundary is random, so the returned content cannot forge a part.
"""

from __future__ import annotations

import email.utils
import re
import secrets
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Literal

from kittiwake.delivery.api import QueuedMessage
from kittiwake.envelope import BodyType, Ret
from kittiwake.queue.api import DsnKind, DsnRecipient

CHUNK = 64 * 1024  # octets of the original read and written at a time
MAX_HEADER_SECTION = 1024 * 1024  # returned header sections are cut (at a line) beyond this
ACTIONS = frozenset({"failed", "delayed", "delivered", "relayed", "expanded"})

SUBJECTS = {
    DsnKind.FAILURE: "Undelivered Mail Returned to Sender",
    DsnKind.DELAY: "Delayed Mail (still being retried)",
    DsnKind.SUCCESS: "Successful Mail Delivery Report",
}
RELAYED_SUBJECT = "Delivery Status Notification (relayed)"
DOUBLE_BOUNCE_SUBJECT = "Postmaster Copy: Undelivered Mail"

_STATUS_RE = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")  # RFC 3464 §2.3.4, RFC 3463 §2
_SMTP_REPLY_RE = re.compile(r"[2-5]\d\d(?:[ -]|$)")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]+")
_BLANK_LINE_RE = re.compile(rb"\n\r?\n")
_FOLD = 78  # RFC 5322 §2.1.1 SHOULD
_MAX_WORD = 900  # octets of one unbreakable word; keeps every line under 998
_DEFAULT_STATUS = {"failed": "5.0.0", "delayed": "4.0.0"}  # others: 2.0.0


@dataclass(frozen=True, slots=True)
class DsnResult:
    """What ``write_dsn`` wrote, for the notice's envelope.

    ``returned``: "full", "headers" or "none" (no original given). ``eight_bit``: some
    octet >= 0x80 was written (send with BODY=8BITMIME, RFC 6152). ``smtputf8``: UTF-8 in a
    header-like field (``message/global*``, a UTF-8 To:): send with SMTPUTF8 (RFC 6531).
    """

    returned: Literal["full", "headers", "none"]
    eight_bit: bool
    smtputf8: bool


def write_dsn(
    write: Callable[[bytes], object],
    *,
    kind: DsnKind,
    reporting_mta: str,
    message: QueuedMessage,
    recipients: Sequence[DsnRecipient],
    original: BinaryIO | None,
    now: float,
    max_original: int = 100_000,
    message_id: str,
    postmaster: str,
    to: str,
    double_bounce: bool = False,
) -> DsnResult:
    """Write a complete notice about ``message`` for ``recipients`` to ``write``.

    ``original`` is the spooled message (CRLF line endings), read from where it stands.
    ``double_bounce`` marks a postmaster copy of an undeliverable null-sender message.
    Raises ValueError for an unknown ``action`` (a bug in the caller).
    """
    env = message.envelope
    utf8 = env.smtputf8  # only SMTPUTF8 mail can carry UTF-8 addresses at all
    if not recipients:
        raise ValueError("a delivery status notification needs at least one recipient")
    for r in recipients:
        if r.action not in ACTIONS:
            raise ValueError(f"unknown DSN action {r.action!r}")
    wants_full = (
        kind is DsnKind.FAILURE
        and not double_bounce
        and env.ret is not Ret.HDRS
        and env.body_type is not BodyType.BINARYMIME
    )
    too_big = wants_full and message.size > max_original
    returned: Literal["full", "headers", "none"] = "none"
    if original is not None:
        returned = "full" if wants_full and not too_big else "headers"

    eight_bit = False

    def out(data: bytes) -> None:
        nonlocal eight_bit
        if not eight_bit and not data.isascii():
            eight_bit = True
        write(data)

    boundary = f"{message.queue_id}.{int(now)}/{secrets.token_hex(16)}"
    to_clean = _clean(to, True)  # a UTF-8 To: is reported back: the notice needs SMTPUTF8
    if double_bounce:
        subject = DOUBLE_BOUNCE_SUBJECT
    elif kind is DsnKind.SUCCESS and all(r.action == "relayed" for r in recipients):
        subject = RELAYED_SUBJECT
    else:
        subject = SUBJECTS[kind]
    mid = message_id if message_id.startswith("<") else f"<{message_id}>"
    head = [
        _field("From", f"Mail Delivery System <MAILER-DAEMON@{_clean(reporting_mta, False)}>"),
        _field("To", f"<{to_clean}>"),
        _field("Subject", subject),
        _field("Date", email.utils.formatdate(now, localtime=True)),
        _field("Message-ID", _clean(mid, False)),
        _field("Auto-Submitted", "auto-replied"),  # RFC 3834 §5
        _field("MIME-Version", "1.0"),
        _field(
            "Content-Type",
            f'multipart/report; report-type=delivery-status;\r\n\tboundary="{boundary}"',
        ),
        _field("Content-Description", "Delivery Status Notification"),
        "\r\n",
        "This is a MIME-encapsulated message.\r\n\r\n",
    ]
    out("".join(head).encode())

    # Part 1: for people.
    human = _human_text(
        kind, message, recipients, now, reporting_mta, postmaster, returned, too_big, double_bounce
    )
    text = "".join(_clean(line, utf8) + "\r\n" for line in human)
    part1 = [f"--{boundary}\r\n", _field("Content-Description", "Notification")]
    if text.isascii():
        part1.append(_field("Content-Type", "text/plain; charset=us-ascii"))
    else:
        part1.append(_field("Content-Type", "text/plain; charset=utf-8"))
        part1.append(_field("Content-Transfer-Encoding", "8bit"))
    out(("".join(part1) + "\r\n" + text + "\r\n").encode())

    # Part 2: for programs (RFC 3464 §2.1: per-message fields, then one block per recipient).
    blocks = _status_fields(message, recipients, reporting_mta, utf8)
    fields = "\r\n".join("".join(block) for block in blocks)
    global_status = not fields.isascii()
    part2 = [f"--{boundary}\r\n", _field("Content-Description", "Delivery report")]
    if global_status:
        part2.append(_field("Content-Type", "message/global-delivery-status"))
        part2.append(_field("Content-Transfer-Encoding", "8bit"))  # RFC 6533 §6.2
    else:
        part2.append(_field("Content-Type", "message/delivery-status"))
    out(("".join(part2) + "\r\n" + fields + "\r\n").encode())

    # Part 3: the original, or its header section.
    if original is not None and returned == "full":
        declared = env.body_type is not BodyType.SEVENBIT or env.smtputf8
        out(_part3_head(boundary, env.smtputf8, "Undelivered Message", full=True, eight=declared))
        while chunk := original.read(CHUNK):
            out(chunk)
    elif original is not None:
        headers = _read_header_section(original, MAX_HEADER_SECTION)
        label = "Undelivered Message Headers" if kind is DsnKind.FAILURE else "Message Headers"
        eight = not headers.isascii()
        out(_part3_head(boundary, env.smtputf8, label, full=False, eight=eight))
        out(headers)
    out(f"\r\n--{boundary}--\r\n".encode())
    # message/global* parts ride on 8BITMIME (RFC 6532 §3.7, RFC 6533 §6): SMTPUTF8 is
    # needed only for a UTF-8 envelope address, which is exactly a UTF-8 To: here.
    return DsnResult(returned, eight_bit, not to_clean.isascii())


def _part3_head(boundary: str, smtputf8: bool, label: str, *, full: bool, eight: bool) -> bytes:
    if full:  # RFC 6532 §3.7 message/global; RFC 2046 §5.2.1 allows 8bit for message/rfc822
        ctype = "message/global" if smtputf8 else "message/rfc822"
    else:  # RFC 6522 §4 text/rfc822-headers; RFC 6533 §6.3 message/global-headers
        ctype = "message/global-headers" if smtputf8 else "text/rfc822-headers"
    lines = [
        f"--{boundary}\r\n",
        _field("Content-Description", label),
        _field("Content-Type", ctype),
    ]
    if eight:  # a whole message is labelled as its envelope declared it (BODY=, SMTPUTF8)
        lines.append(_field("Content-Transfer-Encoding", "8bit"))
    return ("".join(lines) + "\r\n").encode()


def _status_fields(
    message: QueuedMessage, recipients: Sequence[DsnRecipient], reporting_mta: str, utf8: bool
) -> list[list[str]]:
    env = message.envelope
    per_message = []
    if env.envid is not None:  # RFC 3461 §4.4 / RFC 3464 §2.2.1: echoed as the client gave it
        per_message.append(_field("Original-Envelope-Id", _clean(env.envid, False)))
    # RFC 3461 §6.3(b): "dns" only for a fully-qualified name, else x-local-hostname.
    mta_type = "dns" if "." in reporting_mta.strip(".") else "x-local-hostname"
    per_message.append(_field("Reporting-MTA", f"{mta_type}; {_clean(reporting_mta, False)}"))
    per_message.append(_field("Arrival-Date", email.utils.formatdate(message.received_at, True)))
    blocks = [per_message]
    for r in recipients:
        block = []
        if r.original:  # RFC 3464 §2.3.1, from ORCPT (RFC 3461 §4.2)
            addr_type, sep, addr = r.original.partition(";")
            if sep:
                block.append(_field("Original-Recipient", _typed_address(addr_type, addr, utf8)))
        block.append(_field("Final-Recipient", _typed_address("rfc822", r.address, utf8)))
        block.append(_field("Action", r.action))
        status = r.status if _STATUS_RE.fullmatch(r.status) else _default_status(r.action)
        block.append(_field("Status", status))
        if r.remote_mta:
            block.append(_field("Remote-MTA", f"dns; {_clean(r.remote_mta, utf8)}"))
        if r.diagnostic:
            diagnostic = _clean(r.diagnostic, utf8).strip()
            # RFC 3464 §2.3.6: "smtp" only for an SMTP reply; other trouble (DNS...) is ours.
            dtype = "smtp" if _SMTP_REPLY_RE.match(diagnostic) else "X-Kittiwake"
            block.append(_field("Diagnostic-Code", f"{dtype}; {diagnostic}"))
        if r.last_attempt is not None:
            block.append(_field("Last-Attempt-Date", email.utils.formatdate(r.last_attempt, True)))
        if r.will_retry_until is not None and r.action == "delayed":
            when = email.utils.formatdate(r.will_retry_until, True)
            block.append(_field("Will-Retry-Until", when))
        blocks.append(block)
    return blocks


def _default_status(action: str) -> str:
    return _DEFAULT_STATUS.get(action, "2.0.0")


def _typed_address(addr_type: str, address: str, utf8: bool) -> str:
    """``type; address`` (RFC 3464 §2.3.1-2.3.2). A non-ASCII address is of type ``utf-8``
    (RFC 6533 §3): raw in a global DSN, else in its 7-bit ``\\x{HEX}`` form."""
    addr_type = re.sub(r"[^A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]", "", addr_type) or "rfc822"
    address = _clean(address, True).strip()
    if address.isascii():
        return f"{addr_type}; {address}"
    if utf8:
        return f"utf-8; {address}"
    return "utf-8; " + "".join(
        c if ("!" <= c <= "~" and c not in "\\+=") else f"\\x{{{ord(c):X}}}" for c in address
    )


def _clean(text: str, utf8: bool) -> str:
    """One line of printable text: controls become a space, non-ASCII (unless allowed) '?'."""
    text = _CONTROL_RE.sub(" ", text)
    if not utf8 and not text.isascii():
        text = "".join(c if c.isascii() else "?" for c in text)
    return text


def _cut(word: str, limit: int) -> str:
    data = word.encode()
    return word if len(data) <= limit else data[:limit].decode(errors="ignore")


def _field(name: str, value: str) -> str:
    """``Name: value`` CRLF, folded at spaces before 78 characters where possible; no line
    ever reaches 998 octets (an overlong word is cut). Values with their own folds pass."""
    line = f"{name}: {value}"
    if len(line.encode()) <= _FOLD or "\r\n" in value:
        return line + "\r\n"
    lines: list[str] = []
    current = f"{name}:"
    for word in value.split(" "):
        if not word:
            continue
        word = _cut(word, _MAX_WORD)
        if len(current) > len(name) + 1 and len(current) + 1 + len(word) > _FOLD:
            lines.append(current)
            current = " " + word
        else:
            current += " " + word
    lines.append(current)
    return "\r\n".join(lines) + "\r\n"


def _read_header_section(original: BinaryIO, cap: int) -> bytes:
    """The original's header section, each line CRLF-ended, without the blank line that
    ends it; cut at a line boundary if it is longer than ``cap`` octets."""
    buf = bytearray()
    end = -1
    while len(buf) <= cap:
        chunk = original.read(CHUNK)
        if not chunk:
            break
        start = max(0, len(buf) - 2)
        buf += chunk
        if buf.startswith((b"\r\n", b"\n")):
            return b""  # no header section at all
        found = _BLANK_LINE_RE.search(buf, start)
        if found is not None:
            end = found.start() + 1  # keep the last header line's LF
            break
    if end < 0:
        end = len(buf) if len(buf) <= cap else buf.rfind(b"\n", 0, cap) + 1
    section = bytes(buf[:end])
    if section and not section.endswith(b"\n"):
        section += b"\r\n"
    return section


def _human_text(
    kind: DsnKind,
    message: QueuedMessage,
    recipients: Sequence[DsnRecipient],
    now: float,
    reporting_mta: str,
    postmaster: str,
    returned: str,
    too_big: bool,
    double_bounce: bool,
) -> list[str]:
    """Part 1, Postfix-style (bounce_template.c), as lines without line ends."""
    lines = [f"This is the mail system at host {reporting_mta}.", ""]
    if double_bounce:
        lines += [
            "A message with a null sender (a delivery status notification or other",
            "automatic mail) could not be delivered. There is nobody to return it to,",
            "so this copy goes to the postmaster.",
        ]
    elif kind is DsnKind.FAILURE:
        lines += [
            "I'm sorry to have to inform you that your message could not",
            "be delivered to one or more recipients.",
        ]
    elif kind is DsnKind.DELAY:
        hours = max(1, round((now - message.received_at) / 3600))
        until = [r.will_retry_until for r in recipients if r.will_retry_until is not None]
        lines += [
            "####################################################################",
            "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #",
            "####################################################################",
            "",
            f"Your message could not be delivered for more than {hours} hour(s).",
        ]
        if until:
            lines.append(f"It will retry until {email.utils.formatdate(max(until), True)}.")
    elif all(r.action == "relayed" for r in recipients):
        lines += [
            "Your message was relayed to the destination(s) listed below, whose",
            "mail system does not return delivery status notifications: you will",
            "receive no further notice of its delivery from here.",
        ]
    else:
        lines += [
            "Your message was successfully delivered to the destination(s)",
            "listed below. If the message was delivered to a mailbox you will",
            "receive no further notifications. Otherwise you may still receive",
            "notifications of mail delivery errors from other systems.",
        ]
    lines.append("")
    if returned == "full":
        lines.append("The returned message is attached below.")
    elif returned == "headers" and too_big:
        lines.append("The message was too large to return: only its headers are attached.")
    elif returned == "headers":
        lines.append("The headers of the message are attached below.")
    lines += [
        f"Its queue id here was {message.queue_id}.",
        "",
        f"For further assistance, please send mail to <{postmaster}>.",
        "",
        "                   The mail system",
        "",
    ]
    for r in recipients:
        entry = f"<{r.address}>: "
        if r.remote_mta:
            entry += f"host {r.remote_mta} said: "
        entry += r.diagnostic or {"failed": "delivery failed", "delayed": "delivery deferred"}.get(
            r.action, r.action
        )
        entry += f" (status {r.status})" if not r.diagnostic else ""
        lines += textwrap.wrap(_clean(entry, True), 76, subsequent_indent="    ") or [""]
        lines.append("")
    return lines
