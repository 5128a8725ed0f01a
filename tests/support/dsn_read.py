"""Reading delivery status notifications the way a mail client would: with nothing but the
stdlib ``email`` package (RFC 3464 fields inside an RFC 6522 ``multipart/report``; RFC 6533
``message/global-delivery-status`` for UTF-8 addresses).

Owns ``Dsn`` and ``parse_dsn``, which also assert what every notice must be: well-formed
MIME without parser defects, From/To/Subject/Date/Message-ID present, RFC 5322 dates.
Independent of ``kittiwake.queue.dsn`` (the writer), so a writer bug cannot hide behind the
same bug in a shared reader. Not security sensitive (test code).
"""

from __future__ import annotations

import email
import email.parser
import email.policy
import email.utils
from dataclasses import dataclass, field
from email.message import EmailMessage, Message


@dataclass
class Dsn:
    """A delivery status notification as the stdlib sees it (RFC 3464 / RFC 6522)."""

    message: EmailMessage
    report: dict[str, str]  # the per-message fields, lower-cased names
    recipients: list[dict[str, str]]  # per-recipient fields, lower-cased names
    human: str
    returned_type: str | None  # message/rfc822, text/rfc822-headers, ... or None
    returned: bytes = b""  # the returned part's payload as octets
    parts: list[str] = field(default_factory=list)

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    def recipient(self, address: str) -> dict[str, str]:
        for r in self.recipients:
            if r["final-recipient"].partition(";")[2].strip().lower() == address.lower():
                return r
        raise AssertionError(f"{address} not in the DSN: {self.recipients}")


def _fields(block: Message) -> dict[str, str]:
    return {k.lower(): " ".join(str(v).split()) for k, v in block.items()}


def _status_blocks(part: Message) -> list[Message]:
    """The field blocks of a delivery-status part. The stdlib splits message/delivery-
    status itself; message/global-delivery-status (RFC 6533 §6.2, UTF-8) arrives as one
    message whose body holds the other blocks, split here the same way (blank lines)."""
    payload = part.get_payload()
    assert isinstance(payload, list), payload
    if part.get_content_type() == "message/delivery-status":
        return list(payload)
    (inner,) = payload
    assert isinstance(inner, Message), inner
    text = inner.as_bytes().decode("utf-8")  # the octets as they came: UTF-8 (RFC 6533)
    parser = email.parser.Parser(policy=email.policy.default)
    return [parser.parsestr(b, headersonly=True) for b in text.split("\n\n") if b.strip()]


def parse_dsn(raw: bytes) -> Dsn:
    """Parse a notice from a Maildir; asserts the RFC 6522 structure on the way."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    assert msg.get_content_type() == "multipart/report", msg.get_content_type()
    assert msg.get_param("report-type") == "delivery-status"
    parts = list(msg.iter_parts())
    types = [p.get_content_type() for p in parts]
    for part in (msg, *parts):  # well-formed MIME (RFC 2045/2046), as the stdlib sees it
        assert not part.defects, (part.get_content_type(), part.defects)
    for name in ("From", "To", "Subject", "Date", "Message-ID"):
        assert msg[name] is not None, f"the notice has no {name}: field"
    email.utils.parsedate_to_datetime(str(msg["Date"]))
    assert len(parts) in (2, 3), types
    assert types[0] == "text/plain", types
    assert types[1] in ("message/delivery-status", "message/global-delivery-status"), types
    human = parts[0].get_content()
    blocks = _status_blocks(parts[1])
    assert len(blocks) >= 2, blocks  # the per-message block, then one per recipient
    returned_type = types[2] if len(parts) == 3 else None
    returned = b""
    if len(parts) == 3:
        third = parts[2]
        if third.is_multipart() or third.get_content_maintype() == "message":
            inner = third.get_payload()
            body = inner[0] if isinstance(inner, list) else inner
            returned = body.as_bytes() if isinstance(body, Message) else str(body).encode()
        else:
            decoded = third.get_payload(decode=True)
            returned = decoded if isinstance(decoded, bytes) else b""
    for block in blocks:  # RFC 3464 §2.2.5, §2.3.7: dates in RFC 5322 form
        for name in ("Arrival-Date", "Last-Attempt-Date", "Will-Retry-Until"):
            if block[name] is not None:
                email.utils.parsedate_to_datetime(str(block[name]))
    return Dsn(
        msg,
        _fields(blocks[0]),
        [_fields(b) for b in blocks[1:]],
        str(human),
        returned_type,
        returned,
        types,
    )
