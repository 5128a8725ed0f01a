"""AUTH (RFC 4954) exchanges: where it is offered, the PLAIN (RFC 4616) and LOGIN
challenges, cancellation, bad input. The shared daemon has no users, so every attempt ends
in 535; real users, SCRAM-SHA-256 and the submission rules are in test_auth_*.py."""

from __future__ import annotations

import base64
import itertools
import smtplib

import pytest

from tests.support.server import KittiwakeServer
from tests.support.smtpclient import RawSMTP, SMTPReply, client_tls_context

PLAIN = base64.b64encode(b"\0alice\0secret").decode()
_HOSTS = itertools.count(1)


def client_ip() -> str:
    """A loopback source address of its own per connection: failed AUTH is counted per
    client (brute-force protection), and this file fails on purpose many times."""
    n = next(_HOSTS)
    return f"127.0.{70 + n // 250}.{1 + n % 250}"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _check_not_offered(reply: SMTPReply) -> None:
    # No AUTH on this listener at all: 502 5.5.1 (the reply table allows 502 or 503).
    reply.check(502, "5.5.1")


def _check_needs_tls(reply: SMTPReply) -> None:
    # AUTH exists here but only inside TLS: RFC 4954 §6 "538 5.7.11 Encryption required
    # for requested authentication mechanism" (issue 4; it was 530 5.7.0 before).
    reply.check(538, "5.7.11")


def _tls_submission(server: KittiwakeServer) -> RawSMTP:
    c = RawSMTP(server.submission, source_ip=client_ip())
    c.ehlo()
    c.starttls()
    kw = c.ehlo().keywords
    assert kw.get("AUTH", "").split() == ["PLAIN", "LOGIN", "SCRAM-SHA-256"], kw
    return c


def test_not_offered_on_mx_even_in_tls(server: KittiwakeServer) -> None:
    with RawSMTP(server.mx) as c:
        assert "AUTH" not in c.ehlo().keywords
        _check_not_offered(c.cmd(f"AUTH PLAIN {PLAIN}"))
        c.starttls()
        assert "AUTH" not in c.ehlo().keywords
        _check_not_offered(c.cmd(f"AUTH PLAIN {PLAIN}"))
        c.cmd("NOOP").check(250, "2.0.0")


def test_not_offered_on_submission_before_tls(server: KittiwakeServer) -> None:
    with RawSMTP(server.submission) as c:
        assert "AUTH" not in c.ehlo().keywords
        _check_needs_tls(c.cmd(f"AUTH PLAIN {PLAIN}"))
        _check_needs_tls(c.cmd("AUTH LOGIN"))
        _check_needs_tls(c.cmd("AUTH SCRAM-SHA-256"))
        c.cmd("NOOP").check(250, "2.0.0")


def test_plain_with_initial_response(server: KittiwakeServer) -> None:
    with _tls_submission(server) as c:
        c.cmd(f"AUTH PLAIN {PLAIN}").check(535, "5.7.8")
        c.cmd("NOOP").check(250, "2.0.0")


def test_plain_with_empty_challenge(server: KittiwakeServer) -> None:
    with _tls_submission(server) as c:
        reply = c.cmd("AUTH PLAIN").check(334)
        assert reply.lines == ("",), reply  # RFC 4954 §4: an empty challenge
        c.cmd(PLAIN).check(535, "5.7.8")


def test_login_exchange(server: KittiwakeServer) -> None:
    with _tls_submission(server) as c:
        assert c.cmd("AUTH LOGIN").check(334).lines == (b64("Username:"),)
        assert c.cmd(b64("alice")).check(334).lines == (b64("Password:"),)
        c.cmd(b64("secret")).check(535, "5.7.8")
        c.cmd("NOOP").check(250, "2.0.0")


def test_login_with_initial_response(server: KittiwakeServer) -> None:
    with _tls_submission(server) as c:
        assert c.cmd(f"AUTH LOGIN {b64('alice')}").check(334).lines == (b64("Password:"),)
        c.cmd(b64("secret")).check(535, "5.7.8")


def test_cancel(server: KittiwakeServer) -> None:
    with _tls_submission(server) as c:
        c.cmd("AUTH LOGIN").check(334)
        c.cmd("*").check(501, "5.0.0")  # RFC 4954 §4
        c.cmd("NOOP").check(250, "2.0.0")


@pytest.mark.parametrize("line", ["AUTH PLAIN !!!notbase64", "AUTH PLAIN AGFsaWNl="])
def test_bad_base64_initial_response(server: KittiwakeServer, line: str) -> None:
    with _tls_submission(server) as c:
        c.cmd(line).check(501, "5.5.2")
        c.cmd("NOOP").check(250, "2.0.0")


def test_bad_base64_response(server: KittiwakeServer) -> None:
    with _tls_submission(server) as c:
        c.cmd("AUTH LOGIN").check(334)
        c.cmd("%%%").check(501, "5.5.2")
        c.cmd("NOOP").check(250, "2.0.0")


@pytest.mark.parametrize(
    "mech", ["CRAM-MD5", "XOAUTH2", "GSSAPI", "plainish", "SCRAM-SHA-256-PLUS"]
)
def test_unknown_mechanism(server: KittiwakeServer, mech: str) -> None:
    with _tls_submission(server) as c:
        c.cmd(f"AUTH {mech}").check(504, "5.5.4")
        c.cmd("NOOP").check(250, "2.0.0")


def test_auth_on_implicit_tls(server: KittiwakeServer) -> None:
    with RawSMTP(server.smtps, implicit_tls=True, source_ip=client_ip()) as c:
        assert "AUTH" in c.ehlo().keywords
        c.cmd(f"AUTH PLAIN {PLAIN}").check(535, "5.7.8")
        c.cmd(f"AUTH PLAIN {PLAIN}").check(535, "5.7.8")  # may try again


def test_smtplib_login_fails_with_535(server: KittiwakeServer) -> None:
    with smtplib.SMTP(
        *server.submission,
        local_hostname="client.test",
        timeout=10,
        source_address=(client_ip(), 0),
    ) as s:
        s.starttls(context=client_tls_context())
        with pytest.raises(smtplib.SMTPAuthenticationError) as info:
            s.login("alice", "secret")
        assert info.value.smtp_code == 535
        err = info.value.smtp_error
        assert (err if isinstance(err, bytes) else err.encode()).startswith(b"5.7.8")
