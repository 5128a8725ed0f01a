"""DataDecoder: end of data, dot-unstuffing, smuggling, line and size limits, speed."""

from __future__ import annotations

import time

import pytest

from kittiwake.proto import replies
from kittiwake.proto.body import DataDecoder


def decode(
    stream: bytes, *, normalize: bool = True, max_size: int = 0, split: int | None = None
) -> tuple[bytes, int, DataDecoder]:
    """Feed ``stream`` (optionally in pieces of ``split``); return content, end, decoder."""
    dec = DataDecoder(normalize=normalize, max_size=max_size)
    step = split or len(stream) or 1
    pieces = [stream[i : i + step] for i in range(0, len(stream), step)]
    out = bytearray()
    consumed = 0
    for piece in pieces:
        content, end = dec.feed(piece)
        out += content
        if end >= 0:
            return bytes(out), consumed + end, dec
        consumed += len(piece)
        assert len(dec._carry) <= 4  # never buffers the message
    return bytes(out), -1, dec


@pytest.mark.parametrize(
    ("stream", "content"),
    [
        (b".\r\n", b""),  # empty message: the DATA line's CRLF is the first CRLF
        (b"a\r\n.\r\n", b"a\r\n"),
        (b"..\r\n.\r\n", b".\r\n"),  # stuffed dot line
        (b"...x\r\n.\r\n", b"..x\r\n"),
        (b".x\r\n.\r\n", b"x\r\n"),  # RFC 5321 §4.5.2: first dot of a longer line is deleted
        (b"a\r\n..\r\nb\r\n.\r\n", b"a\r\n.\r\nb\r\n"),
        (b"a\r\n\r\n.\r\n", b"a\r\n\r\n"),
        (b"a.\r\n.\r\n", b"a.\r\n"),
        (b"x\r\n. \r\n.\r\n", b"x\r\n \r\n"),
        (b"\r\n.\r\n", b"\r\n"),
        (b"\x00\xff binary\r\n.\r\n", b"\x00\xff binary\r\n"),
    ],
)
def test_end_and_unstuffing_at_every_split(stream: bytes, content: bytes) -> None:
    tail = b"QUIT\r\n"
    for split in [None, 1, 2, 3, 4, 5, 7]:
        out, end, dec = decode(stream + tail, split=split)
        assert out == content, split
        assert end == len(stream), split
        assert dec.failure is None
        assert dec.size == len(content)


def test_no_end_yet() -> None:
    out, end, _ = decode(b"line one\r\nline two\r\n.", split=3)
    assert end == -1
    assert out == b"line one\r\nline two"  # "\r\n." is held back until decided


# Every bare-CR/LF variant of the end marker: none may end the data. (content, REJECT?, NORMALIZE)
SMUGGLING = [
    (b"\n.\n", b"\r\n.\r\n"),
    (b"\n.\r\n", b"\r\n.\r\n"),
    (b"\r.\r\n", b"\r\n.\r\n"),
    (b"\r\n.\r", b"\r\n\r\n"),  # <CRLF>.x: the dot of a longer line goes, then CR → CRLF
    (b"\r\n.\n", b"\r\n\r\n"),
    (b"\n.\r", b"\r\n.\r\n"),
    (b"\r.\n", b"\r\n.\r\n"),
    (b"\r.\r", b"\r\n.\r\n"),
    (b"\n\r.\r\n", b"\r\n\r\n.\r\n"),
    (b"\r\n.\n\r\n", b"\r\n\r\n\r\n"),
]


@pytest.mark.parametrize(("variant", "normalized"), SMUGGLING)
def test_smuggling_normalize(variant: bytes, normalized: bytes) -> None:
    stream = b"Subject: x\r\n\r\nhello" + variant + b"MAIL FROM:<evil@x>\r\n.\r\nQUIT\r\n"
    for split in [None, 1, 2, 3]:
        out, end, dec = decode(stream, split=split)
        assert dec.failure is None
        assert end == len(stream) - len(b"QUIT\r\n")  # only the real end counts
        assert out == b"Subject: x\r\n\r\nhello" + normalized + b"MAIL FROM:<evil@x>\r\n"
        assert b"\r" not in out.replace(b"\r\n", b"") and b"\n" not in out.replace(b"\r\n", b"")


@pytest.mark.parametrize(("variant", "normalized"), SMUGGLING)
def test_smuggling_reject(variant: bytes, normalized: bytes) -> None:
    stream = b"Subject: x\r\n\r\nhello" + variant + b"MAIL FROM:<evil@x>\r\n.\r\nQUIT\r\n"
    for split in [None, 1, 3]:
        _, end, dec = decode(stream, normalize=False, split=split)
        assert end == len(stream) - len(b"QUIT\r\n")
        assert dec.failure == replies.BARE_LINEFEED


def test_bare_lf_at_chunk_start_and_end() -> None:
    dec = DataDecoder(normalize=True, max_size=0)
    a, _ = dec.feed(b"abc\r")
    b, _ = dec.feed(b"\rdef\n")
    c, end = dec.feed(b"\nghi\r\n.\r\n")
    assert a + b + c == b"abc\r\n\r\ndef\r\n\r\nghi\r\n"
    assert end == 9


def test_text_line_limit_1000_octets_rfc5321_4_5_3_1_6() -> None:
    ok_line = b"x" * 998 + b"\r\n"
    out, _, dec = decode(ok_line + b"." + ok_line + b".\r\n", split=333)
    assert dec.failure is None  # a stuffed dot does not count
    assert out == ok_line * 2
    bad_line = b"y" * 999 + b"\r\n"
    for split in [None, 1000, 999, 64]:
        out, end, dec = decode(ok_line + bad_line + b"z\r\n.\r\nQUIT\r\n", split=split)
        assert dec.failure == replies.BODY_LINE_TOO_LONG
        assert end == len(ok_line + bad_line + b"z\r\n.\r\n")  # still reads to the end


def test_long_line_spanning_many_chunks() -> None:
    stream = b"short\r\n" + b"L" * 5000 + b"\r\n.\r\n"
    _, _, dec = decode(stream, split=100)
    assert dec.failure == replies.BODY_LINE_TOO_LONG


def test_size_limit() -> None:
    body = b"0123456789\r\n" * 100  # 1200 octets
    out, end, dec = decode(body + b".\r\n", max_size=1200, split=50)
    assert dec.failure is None and out == body
    out, end, dec = decode(body + b".\r\n", max_size=1199, split=50)
    assert dec.failure == replies.TOO_BIG
    assert len(out) <= 1199  # stops emitting
    assert end == len(body) + 3
    assert dec.size >= 1200


def test_fifty_megabytes_in_64k_chunks_is_fast() -> None:
    line = b"The quick brown fox jumps over the lazy dog. " * 1 + b"0123456789012345678901\r\n"
    chunk_src = (b"." + line + line * 40) * 40
    total = 50 * 1024 * 1024
    stream = (chunk_src * (total // len(chunk_src) + 1))[:total]
    stream = stream[: stream.rfind(b"\r\n") + 2] + b".\r\n"
    chunks = [stream[i : i + 65536] for i in range(0, len(stream), 65536)]
    dec = DataDecoder(normalize=True, max_size=0)
    start = time.process_time()
    size = 0
    for chunk in chunks:
        content, end = dec.feed(chunk)
        size += len(content)
    elapsed = time.process_time() - start
    print(f"\n50 MB DATA decode: {elapsed:.3f} s CPU")
    assert end >= 0
    assert dec.failure is None
    assert size == dec.size
    assert elapsed < 5.0
