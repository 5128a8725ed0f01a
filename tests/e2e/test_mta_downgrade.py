"""The daemon relays 8BITMIME mail to a peer without 8BITMIME (RFC 6152 §3): converted;
and lines over 998 octets to any peer (RFC 5321 §4.5.3.1.6): re-encoded or folded.

The peer is aiosmtpd, its EHLO reply stripped of ``8BITMIME``. It must get 7-bit MIME —
quoted-printable where the original was 8-bit — under a MAIL FROM without BODY=8BITMIME,
and every part must decode (stdlib ``email``) to what was submitted; 7-bit parts arrive
untouched. 8-bit octets in a header cannot be converted: the message still bounces 5.6.3.
aiosmtpd refuses a line over 1001 octets with a 500 (a strict receiver): a 5000-octet
body line must reach it, from a 7-bit message too and to a peer with 8BITMIME, as lines
of at most 998 octets that decode to the original.
"""

from __future__ import annotations

import contextlib
import email
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.support.mta import Relay, delivery_lines, relay_env, submit, tag, wait_dsns, wait_until
from tests.support.smtpclient import RawSMTP, queue_id


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    with relay_env(tmp_path_factory.mktemp("mta-downgrade")) as env:
        yield env


class SevenBitPeer:
    """An aiosmtpd handler: no 8BITMIME in EHLO (unless ``eight_bit``); keeps (MAIL
    parameters, content)."""

    def __init__(self, *, eight_bit: bool = False) -> None:
        self.received: list[tuple[list[str], bytes]] = []
        self.eight_bit = eight_bit

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        return [r for r in responses if self.eight_bit or "8BITMIME" not in r.upper()]

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append((list(envelope.mail_options), bytes(envelope.original_content)))
        return "250 2.0.0 queued"


@contextlib.contextmanager
def seven_bit_peer(relay: Relay, domain: str, *, eight_bit: bool = False) -> Iterator[SevenBitPeer]:
    handler = SevenBitPeer(eight_bit=eight_bit)
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


LONG_LINE = b"".join(b"%04d:" % i + b"x" * 45 for i in range(100))  # 5000 octets, no space
LONG_CONTENT = (
    b"From: s@example.test\r\nTo: u@dest.test\r\nSubject: "
    + b"a long subject " * 80
    + b"\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="=_b"\r\n\r\n'
    b"--=_b\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nbefore\r\n"
    + LONG_LINE
    + b"\r\nafter\r\n--=_b\r\n"
    + SEVEN_BIT_PART
    + b"--=_b--\r\n"
)


def submit_bdat(relay: Relay, sender: str, rcpt: str, content: bytes) -> str:
    """By BDAT: our DATA refuses lines over 1000 octets (proto.body), BDAT does not."""
    with RawSMTP(relay.server.mx) as c:
        c.ehlo()
        c.cmd(f"MAIL FROM:<{sender}>").check(250)
        c.cmd(f"RCPT TO:<{rcpt}>").check(250)
        c.send(b"BDAT %d LAST\r\n" % len(content) + content)
        reply = c.read_reply()
        reply.check(250)
        c.cmd("QUIT")
    return queue_id(reply)


@pytest.mark.parametrize("eight_bit", [True, False], ids=["8BITMIME-peer", "7bit-peer"])
def test_a_5000_octet_line_reaches_a_strict_peer_reencoded(relay: Relay, eight_bit: bool) -> None:
    domain = f"longline-{tag()}.test"
    with seven_bit_peer(relay, domain, eight_bit=eight_bit) as peer:
        sender, rcpt = f"s-{tag()}@example.test", f"u@{domain}"
        qid = submit_bdat(relay, sender, rcpt, LONG_CONTENT)  # a 7-bit message
        wait_until(lambda: peer.received, 10, "the peer got nothing")
    ((_, got),) = peer.received
    assert all(len(line) <= 998 for line in got.split(b"\r\n"))
    assert got.count(b"Content-Transfer-Encoding: quoted-printable") == 1
    assert SEVEN_BIT_PART in got  # the part without long lines as it was
    assert leaves(got) == leaves(LONG_CONTENT)
    assert leaves(got)[0][1] == b"before\r\n" + LONG_LINE + b"\r\nafter"
    subject = email.message_from_bytes(got)["Subject"]
    assert str(subject).split() == ["a", "long", "subject"] * 80  # folded, same words
    (line,) = wait_until(lambda: delivery_lines(relay.server, qid), 5, "no delivery line")
    assert "status=delivered" in line, line
