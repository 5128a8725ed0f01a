"""The DSN writer (queue.dsn) with unusual originals: UTF-8 and 8-bit mail, header sections
split across reads or larger than a chunk, and a 20 MB message streamed through."""

from __future__ import annotations

import io
import tracemalloc
from dataclasses import replace
from pathlib import Path

import pytest

from kittiwake.envelope import BodyType, Recipient, Ret
from kittiwake.queue.api import DsnKind
from kittiwake.queue.dsn import CHUNK, DsnResult, write_dsn
from tests.unit.test_dsn import (
    BOUNCED,
    NOW,
    ORIGINAL,
    check_lines,
    dsn,
    message,
    parse,
    status_blocks,
)


def test_smtputf8_original_uses_the_global_types() -> None:
    original = (
        "Received: by mx.example.net (Kittiwake) id X;\r\n\tFri, 29 Nov 2024 14:20:05 +0100\r\n"
        "From: Jörg <jörg@bücher.example>\r\nSubject: Grüße\r\n\r\nKäse\r\n"
    ).encode()
    msg = message(
        sender="jörg@bücher.example",
        recipients=(Recipient("zoë@example.net"),),
        smtputf8=True,
        body_type=BodyType.EIGHTBITMIME,
    )
    msg = replace(msg, size=len(original))
    rcpt = replace(BOUNCED, address="zoë@example.net", original="utf-8;zo\\x{EB}@example.net")
    raw, result = dsn(msg=msg, recipients=[rcpt], original=original, to="jörg@bücher.example")
    check_lines(raw)
    assert result == DsnResult("full", eight_bit=True, smtputf8=True)
    _, parts = parse(raw)
    assert [p.get_content_type() for p in parts] == [
        "text/plain",
        "message/global-delivery-status",
        "message/global",
    ]
    assert parts[0].get_content_charset() == "utf-8"
    assert parts[1]["Content-Transfer-Encoding"] == "8bit"
    assert parts[2]["Content-Transfer-Encoding"] == "8bit"
    fields = parts[1].get_payload()
    assert isinstance(fields, list)  # the stdlib reads it as one message: parse it ourselves
    status = raw.split(b"message/global-delivery-status")[1].decode()
    assert "Final-Recipient: utf-8; zoë@example.net\r\n" in status
    assert "Original-Recipient: utf-8; zo\\x{EB}@example.net\r\n" in status
    assert original in raw


def test_utf8_address_in_an_ascii_dsn_uses_the_7bit_utf8_form() -> None:
    # Not SMTPUTF8 (cannot normally happen): the address must still come out 7-bit.
    rcpt = replace(BOUNCED, address="zoë@example.net", original=None)
    raw, result = dsn(recipients=[rcpt])
    assert result.smtputf8 is False
    block = status_blocks(parse(raw)[1][1])[1]
    assert block["Final-Recipient"] == "utf-8; zo\\x{EB}@example.net"


def test_eight_bit_original_is_labelled() -> None:
    original = ORIGINAL.replace(b"Body line one.", "Grüße".encode())
    msg = replace(message(body_type=BodyType.EIGHTBITMIME), size=len(original))
    raw, result = dsn(msg=msg, original=original)
    assert result.eight_bit and not result.smtputf8
    part = parse(raw)[1][2]
    assert part.get_content_type() == "message/rfc822"
    assert part["Content-Transfer-Encoding"] == "8bit"


class Trickle(io.RawIOBase):
    """A reader that hands out at most ``step`` octets per read (headers split anywhere)."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data = data
        self._pos = 0
        self._step = step

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        n = self._step if size < 0 else min(size, self._step)
        chunk = self._data[self._pos : self._pos + n]
        self._pos += len(chunk)
        return chunk


@pytest.mark.parametrize("step", [1, 2, 3, 7])
def test_header_section_found_across_reads(step: int) -> None:
    out: list[bytes] = []
    write_dsn(
        out.append,
        kind=DsnKind.DELAY,
        reporting_mta="mx.example.net",
        message=message(),
        recipients=[replace(BOUNCED, action="delayed", status="4.4.1")],
        original=Trickle(ORIGINAL, step),  # type: ignore[arg-type]
        now=NOW,
        message_id="<n@mx.example.net>",
        postmaster="postmaster@example.net",
        to="alice@example.org",
    )
    raw = b"".join(out)
    assert b"Body line one" not in raw
    headers = ORIGINAL.split(b"\r\n\r\n")[0] + b"\r\n"
    assert b"\r\n\r\n" + headers + b"\r\n--" in raw


def test_large_header_section_spanning_chunks() -> None:
    filler = b"".join(b"X-Filler-%05d: %s\r\n" % (i, b"y" * 60) for i in range(2000))
    original = b"Subject: big\r\n" + filler + b"\r\nBODY-MARKER\r\n"
    assert len(original) > 2 * CHUNK
    raw, _ = dsn(msg=message(ret=Ret.HDRS), original=original)
    assert b"X-Filler-01999" in raw and b"BODY-MARKER" not in raw


def test_twenty_megabyte_original_is_streamed(tmp_path: Path) -> None:
    line = b"0123456789" * 7 + b"\r\n"
    body = tmp_path / "big.eml"
    with body.open("wb") as f:
        f.write(b"Subject: big\r\n\r\n")
        for _ in range(20 * 1024 * 1024 // len(line)):
            f.write(line)
    size = body.stat().st_size
    msg = replace(message(), size=size)
    written = 0
    largest = 0
    calls = 0

    def sink(data: bytes) -> None:
        nonlocal written, largest, calls
        written += len(data)
        largest = max(largest, len(data))
        calls += 1

    tracemalloc.start()
    try:
        with body.open("rb") as src:
            result = write_dsn(
                sink,
                kind=DsnKind.FAILURE,
                reporting_mta="mx.example.net",
                message=msg,
                recipients=[BOUNCED],
                original=src,
                now=NOW,
                max_original=50 * 1024 * 1024,
                message_id="<n@mx.example.net>",
                postmaster="postmaster@example.net",
                to="alice@example.org",
            )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.returned == "full"
    assert written > size
    assert largest <= CHUNK and calls > size // CHUNK
    assert peak < 2 * 1024 * 1024, f"peak {peak} octets: the original was held in memory"
