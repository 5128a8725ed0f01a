"""LmtpAgent and an LMTP server without 8BITMIME (RFC 6152 §3; RFC 2033 §5 makes it a
SHOULD), through real sockets: the 8-bit message goes converted to 7-bit MIME (DATA, or BDAT
chunks with CHUNKING), MAIL without BODY=, one reply per recipient as ever; what cannot be
converted bounces 5.6.3 without Remote-MTA and the connection stays cached."""

from __future__ import annotations

from typing import Any

import pytest

from kittiwake.delivery.api import Outcome, RecipientStatus, Route
from kittiwake.delivery.lmtp import LmtpAgent
from kittiwake.envelope import BodyType
from tests.e2e.test_delivery_lmtp import FAST, per_rcpt, statuses
from tests.e2e.test_delivery_smtp_downgrade import HEAD, SEVEN_BIT, decoded
from tests.support.sinks import Script, Sink, queued

D = RecipientStatus.DELIVERED
F = RecipientStatus.DEFERRED
B = RecipientStatus.BOUNCED


async def send(
    a: LmtpAgent, sink: Sink, content: bytes, rcpts: list[str], **env: Any
) -> list[Outcome]:
    message, qrcpts, opener = queued(content, rcpts, **env)
    return await a.deliver(message, qrcpts, opener, Route("lmtp", f"127.0.0.2:{sink.port}"))


@pytest.mark.parametrize("chunking", [False, True])
@pytest.mark.parametrize("lines", [2, 20_000])  # one chunk; many (with a line of one dot)
async def test_8bit_message_is_converted(chunking: bool, lines: int) -> None:
    body = b"".join(
        b".\r\n" if i % 7 == 3 else b"%d: Gr\xc3\xbc\xc3\x9fe \r\n" % i for i in range(lines)
    )
    content = HEAD + b"Content-Transfer-Encoding: 8bit\r\n\r\n" + body
    ext = (*SEVEN_BIT, "CHUNKING") if chunking else SEVEN_BIT
    rcpts = ["a@x.test", "full@x.test", "b@x.test"]
    async with Sink("127.0.0.2", Script(lmtp=True, extensions=ext, end=per_rcpt)) as sink:
        a = LmtpAgent("client.test", timeouts=FAST, connect_timeout=3.0)
        try:
            out = await send(a, sink, content, rcpts, body_type=BodyType.EIGHTBITMIME)
        finally:
            await a.close()
    assert statuses(out) == [D, F, D] and not out[0].relayed
    (msg,) = sink.messages
    assert msg.via == ("BDAT" if chunking else "DATA")
    assert "BODY" not in msg.mail_params
    assert int(msg.mail_params["SIZE"] or 0) >= len(msg.content) > len(content)
    assert msg.content.isascii()
    assert msg.content.startswith(HEAD + b"Content-Transfer-Encoding: quoted-printable\r\n\r\n")
    assert decoded(msg.content) == body


async def test_converted_again_for_each_message_over_one_connection() -> None:
    """The second message reuses the connection (its capabilities are remembered)."""
    content = HEAD + b"\r\n" + b"caf\xc3\xa9\r\n" * 30_000
    async with Sink("127.0.0.2", Script(lmtp=True, extensions=SEVEN_BIT)) as sink:
        a = LmtpAgent("client.test", timeouts=FAST, connect_timeout=3.0)
        try:
            for _ in range(2):
                out = await send(a, sink, content, ["a@x.test"], body_type=BodyType.EIGHTBITMIME)
                assert statuses(out) == [D]
        finally:
            await a.close()
    assert sink.connections == 1 and len(sink.messages) == 2
    assert all(decoded(m.content) == b"caf\xc3\xa9\r\n" * 30_000 for m in sink.messages)


async def test_server_with_8bitmime_gets_the_message_as_is() -> None:
    content = HEAD + b"Content-Transfer-Encoding: 8bit\r\n\r\ncaf\xc3\xa9\r\n"
    async with Sink("127.0.0.2", Script(lmtp=True)) as sink:
        a = LmtpAgent("client.test", timeouts=FAST, connect_timeout=3.0)
        try:
            out = await send(a, sink, content, ["a@x.test"], body_type=BodyType.EIGHTBITMIME)
        finally:
            await a.close()
    assert statuses(out) == [D]
    assert sink.messages[0].content == content
    assert sink.messages[0].mail_params["BODY"] == "8BITMIME"


async def test_unconvertible_message_bounces_563_and_keeps_the_connection() -> None:
    content = b"Content-Transfer-Encoding: base64\r\n\r\n\xff\xfe\r\n"
    async with Sink("127.0.0.2", Script(lmtp=True, extensions=SEVEN_BIT)) as sink:
        a = LmtpAgent("client.test", timeouts=FAST, connect_timeout=3.0)
        try:
            out = await send(
                a, sink, content, ["a@x.test", "b@x.test"], body_type=BodyType.EIGHTBITMIME
            )
            assert statuses(out) == [B, B] and out[0].reply.enhanced == "5.6.3"
            assert out[0].remote_mta is None and "base64" in out[0].reply.text
            assert not sink.messages and len(a.pool) == 1
            ok = await send(a, sink, b"Subject: 7-bit\r\n\r\nplain\r\n", ["a@x.test"])
            assert statuses(ok) == [D] and sink.connections == 1
        finally:
            await a.close()
