"""The DSN writer (queue.dsn): RFC 3464 fields inside RFC 6522 multipart/report, parsed back
with the stdlib ``email`` package."""

from __future__ import annotations

import email
import email.message
import email.policy
import email.utils
import io
import re
from dataclasses import replace
from typing import Any

import pytest

from kittiwake.delivery.api import QueuedMessage, QueuedRecipient, RecipientStatus
from kittiwake.envelope import BodyType, Envelope, Recipient, Ret
from kittiwake.queue.api import DsnKind, DsnRecipient
from kittiwake.queue.dsn import DsnResult, write_dsn

QID = "1K1DCH56844T7W"
ARRIVED = 1_732_886_400.0
NOW = ARRIVED + 3600
ORIGINAL = (
    b"Received: from client.example.org ([192.0.2.7])\r\n"
    b"\tby mx.example.net (Kittiwake) with ESMTP id 1K1DCH56844T7W;\r\n"
    b"\tFri, 29 Nov 2024 14:20:05 +0100\r\n"
    b"From: Alice <alice@example.org>\r\n"
    b"To: bob@example.net\r\n"
    b"Subject: the quarterly numbers\r\n"
    b"Message-ID: <orig-1@example.org>\r\n"
    b"\r\n"
    b"Body line one.\r\n"
    b"SECRET BODY TEXT\r\n"
)
BOUNCED = DsnRecipient(
    address="bob@example.net",
    original="rfc822;Bob@Example.NET",
    action="failed",
    status="5.1.1",
    diagnostic="550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown",
    remote_mta="mx1.example.net",
    last_attempt=NOW - 10,
)


def message(**env: Any) -> QueuedMessage:
    base: dict[str, Any] = {
        "sender": "alice@example.org",
        "recipients": (Recipient("bob@example.net", orcpt="rfc822;Bob@Example.NET"),),
        "envid": "QQ314159",
    }
    base.update(env)
    envelope = Envelope(**base)
    rcpts = tuple(
        QueuedRecipient(i, r.address, RecipientStatus.BOUNCED)
        for i, r in enumerate(envelope.recipients)
    )
    return QueuedMessage(QID, envelope, ARRIVED, len(ORIGINAL), rcpts)


def dsn(
    kind: DsnKind = DsnKind.FAILURE,
    msg: QueuedMessage | None = None,
    recipients: list[DsnRecipient] | None = None,
    original: bytes | None = ORIGINAL,
    **kw: Any,
) -> tuple[bytes, DsnResult]:
    out: list[bytes] = []
    result = write_dsn(
        out.append,
        kind=kind,
        reporting_mta=kw.pop("reporting_mta", "mx.example.net"),
        message=msg or message(),
        recipients=recipients or [BOUNCED],
        original=None if original is None else io.BytesIO(original),
        now=NOW,
        message_id="<notice-1@mx.example.net>",
        postmaster="postmaster@example.net",
        to=kw.pop("to", "alice@example.org"),
        **kw,
    )
    return b"".join(out), result


def parse(raw: bytes) -> tuple[email.message.EmailMessage, list[email.message.EmailMessage]]:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    parts = [p for p in msg.iter_parts() if isinstance(p, email.message.EmailMessage)]
    assert len(parts) == len(list(msg.iter_parts()))
    return msg, parts


def status_blocks(part: email.message.EmailMessage) -> list[dict[str, str]]:
    assert part.get_content_type() == "message/delivery-status"
    blocks = part.get_payload()
    assert isinstance(blocks, list)
    return [
        {k: str(v) for k, v in b.items()} for b in blocks if isinstance(b, email.message.Message)
    ]


def check_lines(raw: bytes) -> None:
    assert b"\n" not in raw.replace(b"\r\n", b""), "bare LF"
    assert b"\r" not in raw.replace(b"\r\n", b""), "bare CR"
    assert max(len(line) for line in raw.split(b"\r\n")) < 998


def test_failure_with_every_field_and_the_whole_message() -> None:
    raw, result = dsn()
    check_lines(raw)
    assert result == DsnResult("full", eight_bit=False, smtputf8=False)
    msg, parts = parse(raw)
    assert msg["From"] == "Mail Delivery System <MAILER-DAEMON@mx.example.net>"
    assert msg["To"] == "alice@example.org"
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["MIME-Version"] == "1.0"
    assert msg["Message-ID"] == "<notice-1@mx.example.net>"
    assert email.utils.parsedate_to_datetime(msg["Date"]).timestamp() == NOW
    assert [p.get_content_type() for p in parts] == [
        "text/plain",
        "message/delivery-status",
        "message/rfc822",
    ]
    text = parts[0].get_content()
    assert "This is the mail system at host mx.example.net." in text
    assert "could not\r\nbe delivered" in text or "could not\nbe delivered" in text
    assert "<bob@example.net>: host mx1.example.net said: 550 5.1.1" in text
    assert "postmaster@example.net" in text

    per_message, per_rcpt = status_blocks(parts[1])
    assert per_message == {
        "Original-Envelope-Id": "QQ314159",
        "Reporting-MTA": "dns; mx.example.net",
        "Arrival-Date": email.utils.formatdate(ARRIVED, localtime=True),
    }
    assert per_rcpt == {
        "Original-Recipient": "rfc822; Bob@Example.NET",
        "Final-Recipient": "rfc822; bob@example.net",
        "Action": "failed",
        "Status": "5.1.1",
        "Remote-MTA": "dns; mx1.example.net",
        "Diagnostic-Code": "smtp; " + (BOUNCED.diagnostic or ""),
        "Last-Attempt-Date": email.utils.formatdate(NOW - 10, localtime=True),
    }
    returned = parts[2].get_payload()
    assert isinstance(returned, list) and isinstance(returned[0], email.message.EmailMessage)
    assert returned[0]["Subject"] == "the quarterly numbers"
    assert "SECRET BODY TEXT" in returned[0].get_content()
    # Byte for byte: the original sits between its part header and the closing boundary.
    boundary = msg.get_boundary()
    assert boundary is not None
    assert b"\r\n\r\n" + ORIGINAL + b"\r\n--" + boundary.encode() + b"--\r\n" in raw
    assert raw.endswith(b"--" + boundary.encode() + b"--\r\n")


def test_no_envid_no_orcpt_no_remote_fields() -> None:
    plain = DsnRecipient("bob@example.net", None, "failed", "5.4.7", "4.4.7 delivery time expired")
    raw, _ = dsn(msg=message(envid=None), recipients=[plain])
    per_message, per_rcpt = status_blocks(parse(raw)[1][1])
    assert "Original-Envelope-Id" not in per_message
    assert set(per_rcpt) == {"Final-Recipient", "Action", "Status", "Diagnostic-Code"}
    assert per_rcpt["Diagnostic-Code"] == "X-Kittiwake; 4.4.7 delivery time expired"


def test_ret_hdrs_returns_only_the_header_section() -> None:
    raw, result = dsn(msg=message(ret=Ret.HDRS))
    assert result.returned == "headers"
    _, parts = parse(raw)
    assert parts[2].get_content_type() == "text/rfc822-headers"
    assert b"SECRET BODY TEXT" not in raw
    headers = ORIGINAL.split(b"\r\n\r\n")[0] + b"\r\n"
    assert b"\r\n\r\n" + headers + b"\r\n--" in raw
    assert "Subject: the quarterly numbers" in parts[2].get_content()


def test_ret_full_is_explicit_too() -> None:
    raw, result = dsn(msg=message(ret=Ret.FULL))
    assert result.returned == "full" and b"SECRET BODY TEXT" in raw


def test_size_cap_falls_back_to_headers() -> None:
    raw, result = dsn(msg=message(ret=Ret.FULL), max_original=len(ORIGINAL) - 1)
    assert result.returned == "headers"
    _, parts = parse(raw)
    assert parts[2].get_content_type() == "text/rfc822-headers"
    assert b"SECRET BODY TEXT" not in raw
    assert "too large" in parts[0].get_content()


def test_binarymime_original_returns_headers() -> None:
    raw, result = dsn(msg=message(body_type=BodyType.BINARYMIME))
    assert result.returned == "headers" and b"SECRET BODY TEXT" not in raw


def test_delay_notice() -> None:
    until = ARRIVED + 5 * 86400
    late = DsnRecipient(
        "bob@example.net",
        None,
        "delayed",
        "4.4.1",
        "connect to mx1.example.net[192.0.2.25]:25: Connection refused",
        last_attempt=NOW - 60,
        will_retry_until=until,
    )
    raw, result = dsn(DsnKind.DELAY, recipients=[late])
    assert result.returned == "headers"
    msg, parts = parse(raw)
    assert msg["Subject"] == "Delayed Mail (still being retried)"
    assert "THIS IS A WARNING ONLY" in parts[0].get_content()
    assert f"retry until {email.utils.formatdate(until, True)}" in parts[0].get_content()
    _, block = status_blocks(parts[1])
    assert block["Action"] == "delayed" and block["Status"] == "4.4.1"
    assert block["Will-Retry-Until"] == email.utils.formatdate(until, localtime=True)
    assert parts[2].get_content_type() == "text/rfc822-headers"


def test_success_and_relayed_notices() -> None:
    done = DsnRecipient("bob@example.net", None, "delivered", "2.0.0", "250 2.0.0 Ok")
    raw, _ = dsn(DsnKind.SUCCESS, recipients=[done])
    msg, parts = parse(raw)
    assert msg["Subject"] == "Successful Mail Delivery Report"
    assert "successfully delivered" in parts[0].get_content()
    assert status_blocks(parts[1])[1]["Action"] == "delivered"
    assert b"SECRET BODY TEXT" not in raw

    relayed = replace(done, action="relayed", remote_mta="old.example.net")
    raw, _ = dsn(DsnKind.SUCCESS, recipients=[relayed])
    msg, parts = parse(raw)
    assert msg["Subject"] == "Delivery Status Notification (relayed)"
    block = status_blocks(parts[1])[1]
    assert block["Action"] == "relayed" and block["Remote-MTA"] == "dns; old.example.net"


def test_several_recipients_get_one_block_each() -> None:
    other = replace(BOUNCED, address="carol@example.net", original=None, status="5.2.2")
    raw, _ = dsn(recipients=[BOUNCED, other])
    blocks = status_blocks(parse(raw)[1][1])
    assert [b["Final-Recipient"] for b in blocks[1:]] == [
        "rfc822; bob@example.net",
        "rfc822; carol@example.net",
    ]
    assert blocks[2]["Status"] == "5.2.2"


def test_double_bounce_returns_headers_only() -> None:
    notice = message(sender="", internal="bounce", ret=Ret.FULL, envid=None)
    raw, result = dsn(msg=notice, to="postmaster@example.net", double_bounce=True)
    msg, parts = parse(raw)
    assert result.returned == "headers"
    assert msg["Subject"] == "Postmaster Copy: Undelivered Mail"
    assert msg["To"] == "postmaster@example.net"
    assert "null sender" in parts[0].get_content()


def test_without_the_original_there_is_no_third_part() -> None:
    raw, result = dsn(original=None)
    assert result.returned == "none"
    assert [p.get_content_type() for p in parse(raw)[1]] == [
        "text/plain",
        "message/delivery-status",
    ]


def test_hostile_diagnostic_cannot_add_fields_or_parts() -> None:
    evil = replace(
        BOUNCED,
        diagnostic="550 no\r\nAction: delivered\r\n\r\nFinal-Recipient: rfc822; x@y\r\n--",
        remote_mta="mx\r\nX-Evil: 1",
    )
    raw, _ = dsn(recipients=[evil])
    check_lines(raw)
    blocks = status_blocks(parse(raw)[1][1])
    assert len(blocks) == 2
    assert blocks[1]["Action"] == "failed"
    assert "X-Evil" not in blocks[1]
    assert blocks[1]["Diagnostic-Code"].startswith("smtp; 550 no Action: delivered")


def test_long_diagnostic_is_folded_and_reads_back() -> None:
    words = " ".join(f"word{i}" for i in range(300))
    long_word = "x" * 3000
    raw, _ = dsn(recipients=[replace(BOUNCED, diagnostic=f"550 5.1.1 {words} {long_word}")])
    check_lines(raw)
    _, parts = parse(raw)
    block = status_blocks(parts[1])[1]
    assert block["Diagnostic-Code"].startswith(f"smtp; 550 5.1.1 {words} xxx")
    folded = [line for line in raw.split(b"\r\n") if line.startswith(b" word")]
    assert folded and all(len(line) <= 78 for line in folded)


def test_invalid_status_and_unknown_action() -> None:
    raw, _ = dsn(recipients=[replace(BOUNCED, status="550")])
    assert status_blocks(parse(raw)[1][1])[1]["Status"] == "5.0.0"
    with pytest.raises(ValueError, match="action"):
        dsn(recipients=[replace(BOUNCED, action="exploded")])
    with pytest.raises(ValueError):
        write_dsn(
            lambda b: None,
            kind=DsnKind.FAILURE,
            reporting_mta="h.example",
            message=message(),
            recipients=[],
            original=None,
            now=NOW,
            message_id="x@y",
            postmaster="p@y",
            to="a@b",
        )


def test_reporting_mta_without_a_domain_name() -> None:
    raw, _ = dsn(reporting_mta="mailhost")
    per_message = status_blocks(parse(raw)[1][1])[0]
    assert per_message["Reporting-MTA"] == "x-local-hostname; mailhost"


def test_boundary_is_random() -> None:
    def boundary() -> str:
        raw, _ = dsn()
        found = re.search(rb'boundary="([^"]+)"', raw)
        assert found is not None
        return found.group(1).decode()

    assert boundary() != boundary()
