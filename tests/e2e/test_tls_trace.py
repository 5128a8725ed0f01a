"""Implicit TLS (RFC 8314 §3.3) and the Received trace of TLS sessions (RFC 3848:
ESMTPS), on every listener."""

from __future__ import annotations

import re
import smtplib
from collections.abc import Iterator

import aiosmtplib
import pytest

from tests.support.auth import add_user, login_plain, write_config
from tests.support.server import KittiwakeServer
from tests.support.smtpclient import RawSMTP, client_tls_context, message, queue_id

USER, PASSWORD, ADDRESS = "tess", "tls-trace-pw", "tess@example.test"


@pytest.fixture(scope="module")
def submit_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KittiwakeServer]:
    """A daemon with one user: submission needs AUTH (RFC 6409 §4.3), mail goes to her."""
    srv = KittiwakeServer(tmp_path_factory.mktemp("tls-trace"))
    write_config(srv)
    add_user(srv, USER, PASSWORD, ADDRESS)
    srv.start()
    yield srv
    srv.stop()


def _received(msg: bytes) -> str:
    head = msg.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode()
    m = re.search(r"^Received:(.*(?:\n[ \t].*)*)", head, re.M)
    assert m, head
    return " ".join(m[1].split())


def test_implicit_tls_delivery(submit_server: KittiwakeServer) -> None:
    server = submit_server
    before = len(server.maildir(ADDRESS))
    with RawSMTP(server.smtps, implicit_tls=True) as c:
        assert c.greeting is not None and c.greeting.code == 220
        assert c.tls_version in ("TLSv1.2", "TLSv1.3")
        kw = c.ehlo().keywords
        assert "STARTTLS" not in kw
        assert kw.get("AUTH", "").split() == ["PLAIN", "LOGIN", "SCRAM-SHA-256"]
        login_plain(c, USER, PASSWORD).check(235, "2.7.0")
        qid = queue_id(c.send_mail(ADDRESS, [ADDRESS], message("smtps")).check(250))
        version = c.tls_version
    received = _received(server.wait_for_mail(ADDRESS, before + 1)[-1])
    assert re.search(r"\bwith ESMTPSA\b", received), received  # RFC 3848: TLS + AUTH
    assert f"id {qid}" in received
    assert re.search(rf"\(using {re.escape(str(version))}\b[^)]*\)", received), received


def test_starttls_delivery_on_submission_says_esmtpsa(submit_server: KittiwakeServer) -> None:
    server = submit_server
    before = len(server.maildir(ADDRESS))
    with RawSMTP(server.submission) as c:
        c.ehlo()
        c.starttls()
        c.ehlo()
        login_plain(c, USER, PASSWORD).check(235, "2.7.0")
        c.send_mail(ADDRESS, [ADDRESS], message("submission tls")).check(250, "2.0.0")
    received = _received(server.wait_for_mail(ADDRESS, before + 1)[-1])
    assert re.search(r"\bwith ESMTPSA\b", received), received
    assert "(using TLSv1." in received, received


def test_starttls_on_mx_says_esmtps(server: KittiwakeServer, mailbox: str) -> None:
    with RawSMTP(server.mx) as c:
        c.ehlo()
        c.starttls()
        c.ehlo()
        c.send_mail("s@client.test", [mailbox], message("mx tls")).check(250, "2.0.0")
    received = _received(server.wait_for_mail(mailbox)[0])
    assert re.search(r"\bwith ESMTPS\b", received), received
    assert "(using TLSv1." in received, received


def test_plain_session_says_esmtp(server: KittiwakeServer, mailbox: str) -> None:
    with RawSMTP(server.mx) as c:
        c.ehlo()
        c.send_mail("s@client.test", [mailbox], message("plain")).check(250, "2.0.0")
    received = _received(server.wait_for_mail(mailbox)[0])
    assert re.search(r"\bwith ESMTP\b", received), received
    assert "ESMTPS" not in received and "using TLS" not in received


def test_smtplib_smtp_ssl(submit_server: KittiwakeServer) -> None:
    server = submit_server
    before = len(server.maildir(ADDRESS))
    with smtplib.SMTP_SSL(
        *server.smtps, local_hostname="client.test", context=client_tls_context(), timeout=10
    ) as s:
        s.login(USER, PASSWORD)
        s.sendmail(ADDRESS, [ADDRESS], message("smtp_ssl"))
    assert b"Subject: smtp_ssl" in server.wait_for_mail(ADDRESS, before + 1)[-1]


async def test_aiosmtplib_starttls_and_implicit(
    server: KittiwakeServer, submit_server: KittiwakeServer, mailbox: str
) -> None:
    a, b = mailbox, ADDRESS
    before = len(submit_server.maildir(b))
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
        sender=ADDRESS,
        recipients=[b],
        hostname=submit_server.smtps[0],
        port=submit_server.smtps[1],
        use_tls=True,
        username=USER,
        password=PASSWORD,
        tls_context=client_tls_context(),
        local_hostname="client.test",
        timeout=10,
    )
    assert errors == {}
    assert "ESMTPS" in _received(server.wait_for_mail(a)[0])
    assert "ESMTPSA" in _received(submit_server.wait_for_mail(b, before + 1)[-1])
