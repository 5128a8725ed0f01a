"""What a peer gets (delivery.smtp_downgrade.Downgrade.for_peer): the message as it is, a
converted form with its size, or a bounce — and how little it reads to decide."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import BinaryIO

import pytest

from kittiwake.delivery.api import QueuedMessage
from kittiwake.delivery.smtp_downgrade import Downgrade, long_line_in
from kittiwake.delivery.smtp_transaction import BodySource
from kittiwake.envelope import BodyType, Envelope, Recipient, Reply
from kittiwake.proto.client_replies import Capabilities

WITH_8BIT = Capabilities(esmtp=True, eightbitmime=True, chunking=True, binarymime=True)
WITHOUT_8BIT = Capabilities(esmtp=True)


class Spool:
    def __init__(self, path: Path, content: bytes) -> None:
        path.write_bytes(content)
        self.path, self.size, self.opens = path, len(content), 0

    def __call__(self) -> BinaryIO:
        self.opens += 1
        return open(self.path, "rb")


def message(size: int, body_type: BodyType) -> QueuedMessage:
    env = Envelope("s@src.test", (Recipient("u@dst.test"),), body_type=body_type)
    return QueuedMessage("Q1", env, 0.0, size, ())


async def peer_gets(
    content: bytes, tmp_path: Path, caps: Capabilities, body_type: BodyType = BodyType.SEVENBIT
) -> tuple[bytes | Reply | None, int, int | None]:
    """(what the peer gets, spool opens, declared size)."""
    spool = Spool(tmp_path / "body", content)
    source = BodySource(spool)
    source.prefetch()
    downgrade = Downgrade(message(spool.size, body_type), spool, source)
    downgrade.prefetch()  # as the SMTP agent does
    try:
        got = await downgrade.for_peer(caps, "mx.dst.test")
        if got is None or isinstance(got, Reply):
            return got, spool.opens, None
        body, size = got
        chunks = []
        while True:
            chunk, last = await body.next()
            chunks.append(chunk)
            if last:
                break
        return b"".join(chunks), spool.opens, size
    finally:
        await downgrade.aclose()
        await source.aclose()


LONG = b"Subject: x\r\n\r\n" + b"z" * 5000 + b"\r\n"


def lines_fit(raw: bytes) -> bool:
    return all(len(line) <= 998 for line in raw.split(b"\r\n"))


@pytest.mark.parametrize("caps", [WITH_8BIT, WITHOUT_8BIT])
def test_short_lines_go_as_they_are_without_another_read(
    tmp_path: Path, caps: Capabilities
) -> None:
    small = b"Subject: x\r\n\r\n" + b"y" * 900 + b"\r\n" + b"short\r\n" * 2000
    got, opens, _ = asyncio.run(peer_gets(small, tmp_path, caps))
    assert got is None and opens == 1  # the delivery's own read
    got, opens, _ = asyncio.run(peer_gets(b"Subject: x\r\n\r\nhi\r\n", tmp_path, caps))
    assert got is None and opens == 1


def test_a_large_message_is_looked_at_once(tmp_path: Path) -> None:
    big = b"Subject: x\r\n\r\n" + b"line of text\r\n" * 100_000
    got, opens, _ = asyncio.run(peer_gets(big, tmp_path, WITH_8BIT))
    assert got is None and opens == 2


@pytest.mark.parametrize(
    ("caps", "body_type"),
    [
        (WITH_8BIT, BodyType.SEVENBIT),
        (WITH_8BIT, BodyType.EIGHTBITMIME),
        (WITHOUT_8BIT, BodyType.SEVENBIT),
        (WITHOUT_8BIT, BodyType.EIGHTBITMIME),
    ],
)
@pytest.mark.parametrize("filler", [b"", b"more text\r\n" * 20_000])
def test_a_long_line_is_reencoded(
    tmp_path: Path, caps: Capabilities, body_type: BodyType, filler: bytes
) -> None:
    got, _, size = asyncio.run(peer_gets(LONG + filler, tmp_path, caps, body_type))
    assert isinstance(got, bytes) and size is not None and size >= len(got)
    assert lines_fit(got) and b"Content-Transfer-Encoding: quoted-printable" in got


def test_binarymime_goes_as_it_is(tmp_path: Path) -> None:
    got, _, _ = asyncio.run(peer_gets(LONG, tmp_path, WITH_8BIT, BodyType.BINARYMIME))
    assert got is None


def test_beyond_the_mime_walker_every_long_line_is_broken(tmp_path: Path) -> None:
    content = b"X-Huge: " + b"h" * 600_000 + b"\r\n\r\n" + b"b" * 3000 + b"\r\n"
    got, _, size = asyncio.run(peer_gets(content, tmp_path, WITH_8BIT))
    assert isinstance(got, bytes) and lines_fit(got) and size is not None and size >= len(got)
    assert got.startswith(b"X-Huge:\r\n hhh")  # folded at its white space first
    assert got.replace(b"\r\n ", b"") == content.replace(b" ", b"")


def test_8bit_that_cannot_be_converted_still_bounces(tmp_path: Path) -> None:
    content = b"Subject: caf\xc3\xa9\r\n\r\n" + b"z" * 5000 + b"\r\n"
    got, _, _ = asyncio.run(peer_gets(content, tmp_path, WITHOUT_8BIT, BodyType.EIGHTBITMIME))
    assert isinstance(got, Reply) and got.enhanced == "5.6.3"
    got, _, _ = asyncio.run(peer_gets(content, tmp_path, WITH_8BIT, BodyType.EIGHTBITMIME))
    assert isinstance(got, bytes) and lines_fit(got)  # a peer with 8BITMIME: fixed


def test_long_line_in_a_file(tmp_path: Path) -> None:
    for content, long in [(LONG, True), (b"a\r\n" * 50_000, False), (b"q" * 999, True)]:
        spool = Spool(tmp_path / "f", content)
        assert long_line_in(spool, chunk=1000) is long
