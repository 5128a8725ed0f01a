"""The daemon relays 8BITMIME mail to a peer without 8BITMIME (RFC 6152 §3): converted.

The peer is aiosmtpd, its EHLO reply stripped of ``8BITMIME``. It must get 7-bit MIME —
quoted-printable where the original was 8-bit — under a MAIL FROM without BODY=8BITMIME,
and every part must decode (stdlib ``email``) to what was submitted; 7-bit parts arrive
untouched. 8-bit octets in a header cannot be converted: the message still bounces 5.6.3.
"""

from __future__ import annotations

import contextlib
import email
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.support.mta import Relay, delivery_lines, relay_env, submit, tag, wait_dsns, wait_until


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    with relay_env(tmp_path_factory.mktemp("mta-downgrade")) as env:
        yield env


class SevenBitPeer:
    """An aiosmtpd handler: no 8BITMIME in EHLO; keeps (MAIL parameters, content)."""

    def __init__(self) -> None:
        self.received: list[tuple[list[str], bytes]] = []

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        return [r for r in responses if "8BITMIME" not in r.upper()]

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append((list(envelope.mail_options), bytes(envelope.original_content)))
        return "250 2.0.0 queued"


@contextlib.contextmanager
def seven_bit_peer(relay: Relay, domain: str) -> Iterator[SevenBitPeer]:
    handler = SevenBitPeer()
    ip = relay.ips.next()
    controller = Controller(handler, hostname=ip, port=relay.port)
    controller.start()
    relay.mx(domain, [(10, ip)])
    try:
        yield handler
    finally:
        controller.stop()


def leaves(raw: bytes) -> list[tuple[str, bytes]]:
    out = []
    for part in email.message_from_bytes(raw).walk():
        if not part.is_multipart():
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            out.append((part.get_content_type(), payload))
    return out


SEVEN_BIT_PART = (
    b"Content-Type: text/plain; charset=us-ascii\r\n\r\nplain = ascii, left alone  \r\n"
)
CONTENT = (
    b"From: s@example.test\r\nTo: u@dest.test\r\nSubject: 8-bit\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="=_outer"\r\n\r\n'
    b"--=_outer\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
    b"\r\nGr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln \r\n.\r\n" + "€".encode() * 300 + b"\r\n"
    b"--=_outer\r\n" + SEVEN_BIT_PART + b"--=_outer\r\nContent-Type: message/rfc822\r\n\r\n"
    b"Subject: inner\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\n\xe9t\xe9\r\n"
    b"--=_outer--\r\n"
)


def test_8bit_body_reaches_a_7bit_peer_as_quoted_printable(relay: Relay) -> None:
    domain = f"sevenbit-{tag()}.test"
    with seven_bit_peer(relay, domain) as peer:
        sender, rcpt = f"s-{tag()}@example.test", f"u@{domain}"
        qid = submit(relay.server, sender, [rcpt], CONTENT, mail_params="BODY=8BITMIME")
        wait_until(lambda: peer.received, 10, "the 7-bit peer got nothing")
    ((options, got),) = peer.received
    assert not any(o.upper().startswith("BODY") for o in options), options
    assert got.isascii() and all(len(line) <= 998 for line in got.split(b"\r\n"))
    assert b"Gr=C3=BC=C3=9Fe aus K=C3=B6ln=20\r\n" in got
    assert got.count(b"Content-Transfer-Encoding: quoted-printable") == 2
    assert SEVEN_BIT_PART in got  # the 7-bit part as it was
    assert leaves(got) == leaves(CONTENT)
    (line,) = wait_until(lambda: delivery_lines(relay.server, qid), 5, "no delivery line")
    assert "status=delivered" in line, line


def test_8bit_header_to_a_7bit_peer_still_bounces(relay: Relay) -> None:
    domain = f"sevenbit-{tag()}.test"
    with seven_bit_peer(relay, domain) as peer:
        sender, rcpt = f"s-{tag()}@example.test", f"u@{domain}"
        content = b"Subject: caf\xc3\xa9\r\nMIME-Version: 1.0\r\n\r\ncaf\xc3\xa9\r\n"
        submit(relay.server, sender, [rcpt], content, mail_params="BODY=8BITMIME")
        (dsn,) = wait_dsns(relay.server, sender, 1, 10)
        assert not peer.received
    r = dsn.recipient(rcpt)
    assert r["action"] == "failed" and r["status"] == "5.6.3", r
    assert "header" in r.get("diagnostic-code", ""), r
