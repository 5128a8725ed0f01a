"""Our trace field: the ``Received:`` line prepended to every message entering the queue.

Owns ``received_header`` (the RFC 5321 §4.4 time-stamp line for mail from an SMTP client),
``local_received_header`` (mail generated here: notices, local injection; RFC 5321 §4.4
allows the from clause to be absent), ``protocol_keyword`` (RFC 3848 / RFC 6531 §3.7.3
"with" values) and ``address_literal`` (RFC 5321 §4.1.3). ``cleanup.writer`` writes them.

Security sensitive: everything in the trace header except our own hostname and queue id
comes from the client (HELO, TLS names, recipient), so each piece is checked or sanitised
before it is written: no CR/LF, no control characters, no parentheses breaking out of a
comment, every line under 998 octets (RFC 5322 §2.1.1). No reverse DNS is ever looked up;
the client is named by its IP address only. The ``for`` clause is written only for a
single recipient, so that a Bcc list is never disclosed (RFC 5321 §7.2).
"""

from __future__ import annotations

import email.utils
import ipaddress
import re
from collections.abc import Sequence
from datetime import datetime

from kittiwake.envelope import Recipient, SessionInfo

# RFC 5321 §4.1.2: Domain = sub-domain *("." sub-domain); sub-domain = Let-dig [Ldh-str]
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
# RFC 5321 §4.1.3 address-literal, loosely: the session layer has parsed it already.
_LITERAL_RE = re.compile(r"\[[A-Za-z0-9:.]{1,60}\]")
_TOKEN_RE = re.compile(r"[^A-Za-z0-9._-]")
_MAX_LINE = 998  # RFC 5322 §2.1.1, CRLF excluded


def protocol_keyword(session: SessionInfo, *, smtputf8: bool = False) -> str:
    """The ``with`` protocol: RFC 3848 (ESMTP, ESMTPA, ESMTPS, ESMTPSA, LMTP...) and
    RFC 6531 §3.7.3 (UTF8SMTP, UTF8SMTPA, UTF8SMTPS, UTF8SMTPSA, UTF8LMTP...)."""
    lmtp = session.listener == "lmtp"
    if not lmtp and not session.esmtp:
        return "SMTP"  # HELO: no extensions, so no TLS, AUTH or SMTPUTF8 either
    base = "LMTP" if lmtp else "SMTP"
    if smtputf8:
        base = "UTF8" + base
    elif not lmtp:
        base = "ESMTP"
    return base + ("S" if session.tls else "") + ("A" if session.auth_user else "")


def address_literal(ip: str) -> str:
    """RFC 5321 §4.1.3 address literal: ``[192.0.2.1]`` or ``[IPv6:2001:db8::1]``."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return "[" + _TOKEN_RE.sub("", ip)[:60] + "]"
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return f"[{addr.ipv4_mapped}]"
        return f"[IPv6:{addr.compressed}]"
    return f"[{addr}]"


def _comment_text(text: str, limit: int) -> str:
    """Printable ASCII that cannot end a comment or start a new line."""
    out = "".join(c if " " < c < "\x7f" and c not in "()\\" else "?" for c in text)
    return out[:limit]


def _for_clause(recipients: Sequence[Recipient | str], smtputf8: bool) -> str | None:
    if len(recipients) != 1:
        return None  # several recipients: naming one would disclose a Bcc list
    r = recipients[0]
    address = r.address if isinstance(r, Recipient) else r
    if not address or any(c < " " or c == "\x7f" or c in "<>" for c in address):
        return None
    if not smtputf8 and not address.isascii():
        return None
    return f"for <{address}>"


def received_header(
    session: SessionInfo,
    envelope_recipients: Sequence[Recipient | str],
    queue_id: str,
    hostname: str,
    now: datetime | None = None,
    *,
    smtputf8: bool = False,
) -> bytes:
    """The ``Received:`` trace field we prepend to a message (RFC 5321 §4.4), CRLF-ended.

    ``from <helo> ([ip])`` when the HELO is a syntactically valid domain or address
    literal, else ``from [ip] (helo=<sanitised>)``; ``by <hostname> (Kittiwake) with
    <protocol> id <queue_id>``; a TLS comment when TLS is in use; ``for <rcpt>`` only for
    one recipient; ``; <RFC 5322 date>`` (local time, or ``now``; a naive ``now`` is taken
    as local time too). ``smtputf8`` selects the UTF8SMTP protocol family, and is the only
    case in which a non-ASCII recipient is written.
    """
    ip = address_literal(session.client_ip)
    helo = session.helo
    if helo and len(helo) <= 255 and (_DOMAIN_RE.fullmatch(helo) or _LITERAL_RE.fullmatch(helo)):
        lines = [f"Received: from {helo} ({ip})"]
    elif helo:
        lines = [f"Received: from {ip} (helo={_comment_text(helo, 255)})"]
    else:
        lines = [f"Received: from {ip}"]
    host = _TOKEN_RE.sub("", hostname)[:255] or "localhost"
    proto = protocol_keyword(session, smtputf8=smtputf8)
    lines.append(f"\tby {host} (Kittiwake) with {proto} id {_TOKEN_RE.sub('', queue_id)}")
    if session.tls:
        version = _TOKEN_RE.sub("", session.tls_version or "TLS")[:32]
        cipher = _TOKEN_RE.sub("", session.tls_cipher or "")[:64]
        lines.append(f"\t(using {version} with cipher {cipher})" if cipher else f"\t({version})")
    clause = _for_clause(envelope_recipients, smtputf8)
    if clause is not None and len(clause) < _MAX_LINE - 2:
        lines.append("\t" + clause)
    lines[-1] += ";"
    when = now if now is not None else datetime.now()
    if when.tzinfo is None:
        when = when.astimezone()  # naive: local time, with its real offset
    lines.append("\t" + email.utils.format_datetime(when))
    return "".join(line + "\r\n" for line in lines).encode("utf-8")


def local_received_header(
    queue_id: str, hostname: str, now: datetime | None = None, *, uid: int | None = None
) -> bytes:
    """``Received: by <hostname> (Kittiwake) id <qid>; <date>``, folded, CRLF-ended; with
    ``uid`` the comment reads ``(Kittiwake, from userid <uid>)`` (as Postfix's pickup)."""
    host = _TOKEN_RE.sub("", hostname)[:255] or "localhost"
    comment = "Kittiwake" if uid is None else f"Kittiwake, from userid {int(uid)}"
    when = now if now is not None else datetime.now()
    if when.tzinfo is None:
        when = when.astimezone()
    return (
        f"Received: by {host} ({comment}) id {_TOKEN_RE.sub('', queue_id)};\r\n"
        f"\t{email.utils.format_datetime(when)}\r\n"
    ).encode()
