"""STARTTLS (RFC 3207): the handshake, the state reset, and command injection (§5,
CVE-2011-0411 class), on the MX and submission listeners."""

from __future__ import annotations

import smtplib

import pytest

from tests.support.server import KittiwakeServer
from tests.support.smtpclient import RawSMTP, client_tls_context, message


@pytest.mark.parametrize("role", ["mx", "submission"])
def test_handshake_and_fresh_ehlo(server: KittiwakeServer, role: str) -> None:
    with RawSMTP(getattr(server, role)) as c:
        assert "STARTTLS" in c.ehlo().keywords
        c.starttls()
        assert c.tls_version in ("TLSv1.2", "TLSv1.3")
        kw = c.ehlo().keywords
        assert "STARTTLS" not in kw  # RFC 3207 §4.2: not offered again
        assert "PIPELINING" in kw
        c.cmd("NOOP").check(250, "2.0.0")


def test_state_is_reset_by_starttls(server: KittiwakeServer) -> None:
    # RFC 3207 §4.2: discard all knowledge from the client; a new EHLO is needed.
    with RawSMTP(server.mx) as c:
        c.ehlo()
        c.starttls()
        c.cmd("MAIL FROM:<a@client.test>").check(503, "5.5.1")
        c.ehlo()
        c.cmd("MAIL FROM:<a@client.test>").check(250, "2.1.0")


def test_starttls_refused_inside_a_transaction(server: KittiwakeServer) -> None:
    with RawSMTP(server.mx) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<a@client.test>").check(250, "2.1.0")
        c.cmd("STARTTLS").check(503, "5.5.1")  # not during a mail transaction
        c.cmd("RCPT TO:<b@example.test>").check(250, "2.1.5")  # the transaction goes on


def test_injected_commands_after_starttls_are_discarded(server: KittiwakeServer) -> None:
    with RawSMTP(server.mx) as c:
        c.ehlo()
        c.send(b"STARTTLS\r\nRSET\r\nMAIL FROM:<evil@x.test>\r\n")
        c.read_reply().check(220, "2.0.0")
        c.tls_handshake()  # fails if the server answered RSET in plaintext
        # The first reply inside TLS must answer our EHLO, not the injected RSET/MAIL.
        reply = c.cmd("EHLO client.test")
        assert reply.code == 250 and reply.enhanced is None, f"injected reply: {reply}"
        assert reply.lines[0].startswith("mx.test"), reply
        c.cmd("NOOP").check(250, "2.0.0")
        # And the injected MAIL did not open a transaction.
        c.cmd("RCPT TO:<b@example.test>").check(503, "5.5.1")
        assert c.nothing_pending() == b""


def test_injection_on_submission(server: KittiwakeServer) -> None:
    with RawSMTP(server.submission) as c:
        c.ehlo()
        c.send(b"STARTTLS\r\nNOOP\r\n")
        c.read_reply().check(220, "2.0.0")
        c.tls_handshake()
        reply = c.cmd("EHLO client.test")
        assert reply.code == 250 and reply.lines[0].startswith("mx.test"), reply
        assert c.nothing_pending() == b""


def test_starttls_twice(server: KittiwakeServer) -> None:
    with RawSMTP(server.mx) as c:
        c.ehlo()
        c.starttls()
        c.ehlo()
        c.cmd("STARTTLS").check(503, "5.5.1")
        c.cmd("NOOP").check(250, "2.0.0")


def test_starttls_with_argument(server: KittiwakeServer) -> None:
    with RawSMTP(server.mx) as c:
        c.ehlo()
        c.cmd("STARTTLS now").check(501, "5.5.4")
        c.cmd("NOOP").check(250, "2.0.0")


def test_starttls_on_implicit_tls_port(server: KittiwakeServer) -> None:
    with RawSMTP(server.smtps, implicit_tls=True) as c:
        assert "STARTTLS" not in c.ehlo().keywords
        c.cmd("STARTTLS").check(502, "5.5.1")  # not offered on this listener
        c.cmd("NOOP").check(250, "2.0.0")


def test_garbage_instead_of_a_handshake(server: KittiwakeServer) -> None:
    with RawSMTP(server.mx) as c:
        c.ehlo()
        c.cmd("STARTTLS").check(220, "2.0.0")
        c.send(b"EHLO this is not TLS\r\n" * 3)
        c.expect_closed(timeout=10)
    with RawSMTP(server.mx) as c:  # the server is fine
        c.ehlo()


def test_smtplib_starttls_delivery(server: KittiwakeServer, mailbox: str) -> None:
    with smtplib.SMTP(*server.mx, local_hostname="client.test", timeout=10) as s:
        s.starttls(context=client_tls_context())
        s.sendmail("s@client.test", [mailbox], message("over tls"))
    [msg] = server.wait_for_mail(mailbox)
    assert b"Subject: over tls" in msg
