"""Implicit TLS (RFC 8314 §3.3) and the Received trace of TLS sessions (RFC 3848:
ESMTPS), on every listener."""

from __future__ import annotations

import re
import smtplib

import aiosmtplib

from tests.support.server import KittiwakeServer
from tests.support.smtpclient import RawSMTP, client_tls_context, message, queue_id


def _received(msg: bytes) -> str:
    head = msg.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode()
    m = re.search(r"^Received:(.*(?:\n[ \t].*)*)", head, re.M)
    assert m, head
    return " ".join(m[1].split())


def test_implicit_tls_delivery(server: KittiwakeServer, mailbox: str) -> None:
    with RawSMTP(server.smtps, implicit_tls=True) as c:
        assert c.greeting is not None and c.greeting.code == 220
        assert c.tls_version in ("TLSv1.2", "TLSv1.3")
        kw = c.ehlo().keywords
        assert "STARTTLS" not in kw
        assert kw.get("AUTH", "").split() == ["PLAIN", "LOGIN", "SCRAM-SHA-256"]
        qid = queue_id(c.send_mail("s@client.test", [mailbox], message("smtps")).check(250))
        version = c.tls_version
    received = _received(server.wait_for_mail(mailbox)[0])
    assert re.search(r"\bwith ESMTPS\b", received), received
    assert f"id {qid}" in received
    assert re.search(rf"\(using {re.escape(str(version))}\b[^)]*\)", received), received


def test_starttls_delivery_on_submission_says_esmtps(server: KittiwakeServer, mailbox: str) -> None:
    with RawSMTP(server.submission) as c:
        c.ehlo()
        c.starttls()
        c.ehlo()
        c.send_mail("s@client.test", [mailbox], message("submission tls")).check(250, "2.0.0")
    received = _received(server.wait_for_mail(mailbox)[0])
    assert re.search(r"\bwith ESMTPS\b", received), received
    assert "(using TLSv1." in received, received


def test_plain_session_says_esmtp(server: KittiwakeServer, mailbox: str) -> None:
    with RawSMTP(server.submission) as c:
        c.ehlo()
        c.send_mail("s@client.test", [mailbox], message("plain")).check(250, "2.0.0")
    received = _received(server.wait_for_mail(mailbox)[0])
    assert re.search(r"\bwith ESMTP\b", received), received
    assert "ESMTPS" not in received and "using TLS" not in received


def test_smtplib_smtp_ssl(server: KittiwakeServer, mailbox: str) -> None:
    with smtplib.SMTP_SSL(
        *server.smtps, local_hostname="client.test", context=client_tls_context(), timeout=10
    ) as s:
        s.sendmail("s@client.test", [mailbox], message("smtp_ssl"))
    assert b"Subject: smtp_ssl" in server.wait_for_mail(mailbox)[0]


async def test_aiosmtplib_starttls_and_implicit(server: KittiwakeServer, mailboxes) -> None:
    a, b = mailboxes(2)
    errors, _ = await aiosmtplib.send(
        message("aio starttls"),
        sender="s@client.test",
        recipients=[a],
        hostname=server.mx[0],
        port=server.mx[1],
        start_tls=True,
        tls_context=client_tls_context(),
        local_hostname="client.test",
        timeout=10,
    )
    assert errors == {}
    errors, _ = await aiosmtplib.send(
        message("aio implicit"),
        sender="s@client.test",
        recipients=[b],
        hostname=server.smtps[0],
        port=server.smtps[1],
        use_tls=True,
        tls_context=client_tls_context(),
        local_hostname="client.test",
        timeout=10,
    )
    assert errors == {}
    assert "ESMTPS" in _received(server.wait_for_mail(a)[0])
    assert "ESMTPS" in _received(server.wait_for_mail(b)[0])
