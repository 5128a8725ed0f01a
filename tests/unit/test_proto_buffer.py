"""ReceiveBuffer: CRLF-only lines, hard limits, bounded memory, linear scanning."""

from __future__ import annotations

import time

from kittiwake.proto.buffer import TOO_LONG, ReceiveBuffer


def test_lines_end_only_at_crlf() -> None:
    buf = ReceiveBuffer()
    buf.feed(b"NOOP\r\nMAIL\nRCPT\rX\r\npartial")
    assert buf.next_line(512) == b"NOOP"
    assert buf.next_line(512) == b"MAIL\nRCPT\rX"  # bare LF / CR stay inside the line
    assert buf.next_line(512) is None
    buf.feed(b"\r\n")
    assert buf.next_line(512) == b"partial"
    assert not buf


def test_crlf_split_across_feeds() -> None:
    buf = ReceiveBuffer()
    buf.feed(b"NOOP\r")
    assert buf.next_line(512) is None
    buf.feed(b"\nQUIT\r\n")
    assert buf.next_line(512) == b"NOOP"
    assert buf.next_line(512) == b"QUIT"


def test_limit_counts_crlf() -> None:
    buf = ReceiveBuffer()
    buf.feed(b"x" * 510 + b"\r\n" + b"y" * 511 + b"\r\nNOOP\r\n")
    assert buf.next_line(512) == b"x" * 510
    assert buf.next_line(512) is TOO_LONG
    assert buf.next_line(512) == b"NOOP"


def test_megabyte_line_is_discarded_as_it_arrives() -> None:
    buf = ReceiveBuffer()
    chunk = b"A" * 65536
    for _ in range(16):
        buf.feed(chunk)
        assert buf.next_line(512) is None
        assert len(buf) <= 1  # never accumulates the line
    buf.feed(b"tail\r")
    assert buf.next_line(512) is None
    assert len(buf) == 1  # the CR that may start the CRLF
    buf.feed(b"\nNOOP\r\n")
    assert buf.next_line(512) is TOO_LONG  # reported once...
    assert buf.next_line(512) == b"NOOP"  # ...and the next line is intact
    assert buf.next_line(512) is None


def test_over_long_line_completed_in_one_feed() -> None:
    buf = ReceiveBuffer()
    buf.feed(b"B" * 5000 + b"\r\nQUIT\r\n")
    assert buf.next_line(512) is TOO_LONG
    assert buf.next_line(512) == b"QUIT"


def test_byte_by_byte_is_linear() -> None:
    buf = ReceiveBuffer()
    start = time.process_time()
    for _ in range(12000):
        buf.feed(b"a")
        assert buf.next_line(12288) is None
    buf.feed(b"\r\n")
    assert buf.next_line(12288) == b"a" * 12000
    assert time.process_time() - start < 1.0


def test_take_unread_clear() -> None:
    buf = ReceiveBuffer()
    buf.feed(b"0123456789")
    assert buf.take(4) == b"0123"
    assert buf.take(100) == b"456789"
    buf.feed(b"tail\r\n")
    buf.unread(b"head ")
    assert buf.take_all() == b"head tail\r\n"
    buf.feed(b"x" * 1000)
    assert buf.next_line(512) is None
    buf.clear()
    buf.feed(b"ok\r\n")
    assert buf.next_line(512) == b"ok"  # clear() also leaves discarding mode
