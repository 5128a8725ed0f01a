"""SmtpAgent and a peer without 8BITMIME (RFC 6152 §3), through real sockets: the 8-bit
message goes converted to 7-bit MIME, by DATA (dot-stuffed) or by BDAT in chunks when the
peer offers CHUNKING, MAIL without BODY=8BITMIME and with SIZE= the converted estimate;
what cannot be converted bounces 5.6.3 (8-bit headers: tests/e2e/test_delivery_smtp.py)."""

from __future__ import annotations

import email
from typing import BinaryIO

import pytest

from kittiwake.envelope import BodyType
from tests.e2e.test_delivery_smtp import ROUTE, B, D, F, agent, dest, run, statuses
from tests.support.sinks import DEFAULT_EXTENSIONS, Script, Sink, queued

SEVEN_BIT = tuple(e for e in DEFAULT_EXTENSIONS if e != "8BITMIME")
HEAD = b"From: a@src.test\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"


def decoded(content: bytes) -> bytes:
    payload = email.message_from_bytes(content).get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload


@pytest.mark.parametrize("chunking", [False, True])
@pytest.mark.parametrize("lines", [2, 20_000])  # one chunk; many (with a line of one dot)
async def test_8bit_body_is_converted(chunking: bool, lines: int) -> None:
    body = b"".join(
        b".\r\n" if i % 7 == 3 else b"%d: Gr\xc3\xbc\xc3\x9fe \r\n" % i for i in range(lines)
    )
    content = HEAD + b"Content-Transfer-Encoding: 8bit\r\n\r\n" + body
    ext = (*SEVEN_BIT, "CHUNKING") if chunking else SEVEN_BIT
    async with Sink("127.0.0.2", Script(extensions=ext)) as mx:
        out = await run(
            agent([dest(mx)]), content, ["a@dest.test"], body_type=BodyType.EIGHTBITMIME
        )
    assert statuses(out) == [D] and out[0].relayed
    (msg,) = mx.messages
    assert msg.via == ("BDAT" if chunking else "DATA")
    assert "BODY" not in msg.mail_params
    assert int(msg.mail_params["SIZE"] or 0) >= len(msg.content) > len(content)
    assert msg.content.isascii()
    assert msg.content.startswith(HEAD + b"Content-Transfer-Encoding: quoted-printable\r\n\r\n")
    assert decoded(msg.content) == body
    if chunking and lines > 2:  # several BDAT chunks, the last one marked
        bdats = [c for c in mx.commands if c.startswith("BDAT")]
        assert len(bdats) > 1 and bdats[-1].endswith("LAST") and "LAST" not in bdats[0]


async def test_converted_body_goes_to_the_next_mx_too() -> None:
    """The 7-bit form is made again for each transaction (one pass each)."""
    content = HEAD + b"\r\n" + b"caf\xc3\xa9\r\n" * 30_000
    async with (
        Sink("127.0.0.2", Script(extensions=SEVEN_BIT, end="451 4.3.0 try later")) as first,
        Sink("127.0.0.3", Script(extensions=SEVEN_BIT)) as second,
    ):
        out = await run(
            agent([dest(first), dest(second, "mx2.dest.test", 20)]),
            content,
            ["a@dest.test"],
            body_type=BodyType.EIGHTBITMIME,
        )
    assert statuses(out) == [D]
    assert first.messages == [] and len(second.messages) == 1
    assert decoded(second.messages[0].content) == b"caf\xc3\xa9\r\n" * 30_000


async def test_converted_size_over_the_peer_limit_bounces() -> None:
    content = HEAD + b"\r\n" + b"\xff" * 900 + b"\r\n"
    ext = (*(e for e in SEVEN_BIT if not e.startswith("SIZE")), "SIZE 2000")
    async with Sink("127.0.0.2", Script(extensions=ext)) as mx:
        out = await run(
            agent([dest(mx)]), content, ["a@dest.test"], body_type=BodyType.EIGHTBITMIME
        )
    assert statuses(out) == [B] and out[0].reply.enhanced == "5.3.4" and not mx.messages


async def test_unconvertible_body_bounces_563() -> None:
    content = b"Content-Transfer-Encoding: base64\r\n\r\n\xff\xfe\r\n"
    async with Sink("127.0.0.2", Script(extensions=SEVEN_BIT)) as mx:
        out = await run(
            agent([dest(mx)]), content, ["a@dest.test"], body_type=BodyType.EIGHTBITMIME
        )
    assert statuses(out) == [B] and out[0].reply.enhanced == "5.6.3" and not mx.messages
    assert "base64" in out[0].reply.text


async def test_unreadable_spool_defers() -> None:
    def broken() -> BinaryIO:
        raise OSError("disk on fire")

    content = HEAD + b"\r\n\xe9\r\n"
    message, rcpts, _ = queued(content, ["a@dest.test"], body_type=BodyType.EIGHTBITMIME)
    async with Sink("127.0.0.2", Script(extensions=SEVEN_BIT)) as mx:
        a = agent([dest(mx)])
        try:
            out = await a.deliver(message, rcpts, broken, ROUTE)
        finally:
            await a.close()
    assert statuses(out) == [F] and out[0].reply.enhanced == "4.3.0" and not mx.messages
