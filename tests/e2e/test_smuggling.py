"""SMTP smuggling (CVE-2023-51764 class): only <CRLF>.<CRLF> ends DATA (RFC 5321 §4.1.1.4).

Each variant puts a fake end-of-data followed by a whole smuggled transaction inside the
body, then ends the message for real. With ``bare_linefeed = "normalize"`` exactly one
message is delivered and it carries the smuggled text as content; with ``"reject"`` the
message is refused with 550 5.6.0 and nothing is delivered. The smuggled commands are never
answered and the smuggled recipient never gets anything.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.support.server import KittiwakeServer
from tests.support.smtpclient import RawSMTP, SMTPReply, message

VARIANTS = [
    b"\n.\n",
    b"\n.\r\n",
    b"\r.\r\n",
    b"\r\n.\r",
    b"\r\n.\n",
    b"\n.\r",
    b"\r.\n",
    b"\r.\r",
    b"\r\n.\r\r\n",
    b"\r\n.\n\r\n",
    b"\n\r.\r\n",
    b"\r\r.\r\r",
    b"\n\n.\n\n",
    b"\r\n .\r\n",
]


def _smuggle(variant: bytes, victim: str) -> bytes:
    return (
        message("legit", b"legitimate text")
        + variant
        + b"MAIL FROM:<attacker@evil.test>\r\n"
        + f"RCPT TO:<{victim}>\r\n".encode()
        + b"DATA\r\n"
        + b"From: ceo@example.test\r\nSubject: smuggled\r\n\r\nsmuggled body\r\n"
        + b".\r\n"  # the client's own end of data (after CRLF): the real one
    )


@pytest.fixture(scope="module")
def reject_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KittiwakeServer]:
    srv = KittiwakeServer(
        tmp_path_factory.mktemp("kittiwake-reject"), {"smtp": {"bare_linefeed": "reject"}}
    )
    srv.start()
    yield srv
    srv.stop()


def _send(srv: KittiwakeServer, rcpt: str, data: bytes) -> list[SMTPReply]:
    """One transaction whose DATA is ``data`` (already terminated); then NOOP and QUIT."""
    with RawSMTP(srv.mx) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<s@client.test>").check(250, "2.1.0")
        c.cmd(f"RCPT TO:<{rcpt}>").check(250, "2.1.5")
        c.cmd("DATA").check(354)
        c.send(data + b"NOOP\r\nQUIT\r\n")
        replies = [c.read_reply() for _ in range(3)]
        assert c.expect_closed() == b"", "extra replies: smuggled commands were executed"
    return replies


@pytest.mark.parametrize("variant", VARIANTS, ids=repr)
def test_normalize_delivers_exactly_one_message(
    server: KittiwakeServer, mailbox: str, variant: bytes
) -> None:
    victim = f"victim{uuid.uuid4().hex[:10]}@example.test"
    end, noop, quit_ = _send(server, mailbox, _smuggle(variant, victim))
    end.check(250, "2.0.0")
    assert "queued as" in end.text
    noop.check(250, "2.0.0")  # not 250 2.1.0: the smuggled MAIL was never a command
    quit_.check(221, "2.0.0")
    [msg] = server.exactly(mailbox, 1, settle=0.1)
    assert b"MAIL FROM:<attacker@evil.test>" in msg
    assert b"smuggled body" in msg
    assert b"legitimate text" in msg
    assert server.maildir(victim) == []
    # Normalized: no bare CR or LF survives into the store (LF-only Maildir lines).
    assert b"\r" not in msg


@pytest.mark.parametrize("variant", VARIANTS, ids=repr)
def test_reject_refuses_the_message(
    reject_server: KittiwakeServer, mailbox: str, variant: bytes
) -> None:
    victim = f"victim{uuid.uuid4().hex[:10]}@example.test"
    end, noop, quit_ = _send(reject_server, mailbox, _smuggle(variant, victim))
    if variant == b"\r\n .\r\n":
        # No bare CR/LF here: " ." is content, not an end of data.
        end.check(250, "2.0.0")
    else:
        end.check(550, "5.6.0")
    noop.check(250, "2.0.0")
    quit_.check(221, "2.0.0")
    expected = 1 if end.code == 250 else 0
    reject_server.exactly(mailbox, expected, settle=0.1)
    assert reject_server.maildir(victim) == []


def test_reject_accepts_clean_crlf_mail(reject_server: KittiwakeServer, mailbox: str) -> None:
    end, noop, _ = _send(reject_server, mailbox, message("clean", "a\r\nb\r\n") + b".\r\n")
    end.check(250, "2.0.0")
    noop.check(250, "2.0.0")
    reject_server.wait_for_mail(mailbox)


@pytest.mark.parametrize("bare", [b"\n", b"\r"], ids=["LF", "CR"])
def test_reject_refuses_plain_bare_line_ends(
    reject_server: KittiwakeServer, mailbox: str, bare: bytes
) -> None:
    data = message("bare", b"one" + bare + b"two\r\n") + b".\r\n"
    end, noop, _ = _send(reject_server, mailbox, data)
    end.check(550, "5.6.0")
    noop.check(250, "2.0.0")
    reject_server.exactly(mailbox, 0, settle=0.3)


@pytest.mark.parametrize("bare", [b"\n", b"\r"], ids=["LF", "CR"])
def test_normalize_turns_bare_line_ends_into_lines(
    server: KittiwakeServer, mailbox: str, bare: bytes
) -> None:
    data = message("bare", b"one" + bare + b"two" + bare + b".." + bare + b"x\r\n") + b".\r\n"
    end, _, _ = _send(server, mailbox, data)
    end.check(250, "2.0.0")
    [msg] = server.wait_for_mail(mailbox)
    assert msg.endswith((b"\n\none\ntwo\n..\nx\n", b"\n\none\ntwo\n.\nx\n"))
