"""RFC 6409 §8 submission rewriting through the wire: an authenticated client's message
gets Date and Message-ID when missing and unqualified addresses qualified; the same
message relayed on the MX port is left exactly as sent."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.auth import add_user, login_plain, write_config
from tests.support.server import KittiwakeServer
from tests.support.smtpclient import RawSMTP

USER, PASSWORD, ADDRESS = "rita", "rewrite-pw", "rita@example.test"
BARE = b"From: rita\r\nTo: rita, Someone <rita@example.test>\r\nSubject: bare\r\n\r\nhello\r\n"


@pytest.fixture(scope="module")
def rewrite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KittiwakeServer]:
    srv = KittiwakeServer(tmp_path_factory.mktemp("rewrite"))
    write_config(srv)
    add_user(srv, USER, PASSWORD, ADDRESS)
    srv.start()
    yield srv
    srv.stop()


def _headers(msg: bytes) -> str:
    return msg.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode()


def test_submitted_mail_gets_date_message_id_and_qualified_addresses(
    rewrite_server: KittiwakeServer,
) -> None:
    server = rewrite_server
    before = len(server.maildir(ADDRESS))
    with RawSMTP(server.smtps, implicit_tls=True) as c:
        c.ehlo()
        login_plain(c, USER, PASSWORD).check(235, "2.7.0")
        c.send_mail(ADDRESS, [ADDRESS], BARE).check(250, "2.0.0")
    head = _headers(server.wait_for_mail(ADDRESS, before + 1)[-1])
    assert "\nDate: " in head and "\nMessage-ID: <" in head, head
    assert "\nFrom: rita@example.test" in head, head
    assert "To: rita@example.test, Someone <rita@example.test>" in head, head


def test_relayed_mail_is_not_rewritten(rewrite_server: KittiwakeServer) -> None:
    server = rewrite_server
    before = len(server.maildir(ADDRESS))
    with RawSMTP(server.mx) as c:
        c.ehlo()
        c.send_mail("x@elsewhere.test", [ADDRESS], BARE).check(250, "2.0.0")
    head = _headers(server.wait_for_mail(ADDRESS, before + 1)[-1])
    assert "Date:" not in head and "Message-ID:" not in head, head
    assert "\nFrom: rita\n" in head, head
