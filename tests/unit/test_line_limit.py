"""Finding and breaking lines over 998 octets (delivery.line_limit).

Oracles: ``bytes.split`` for the meter; for the breaker, that every output line is within
the limit, that nothing changes where no line is too long, that what was inserted is only
line breaks (and, for a hard break, one space), that a quoted-printable body decodes to
the same octets, and that the result does not depend on how the input is cut.
"""

from __future__ import annotations

import binascii
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kittiwake.delivery.line_limit import (
    LIMIT,
    LineBreaker,
    LineMeter,
    break_line,
    fold_growth,
    has_long_line,
)


def reference(data: bytes) -> tuple[int, int]:
    """(long lines, their octets) by splitting: CRLF or LF ends a line."""
    lines = data.split(b"\n")
    lengths = [len(x) - x.endswith(b"\r") for x in lines[:-1]] + [len(lines[-1])]
    long = [n for n in lengths if n > LIMIT]
    return len(long), sum(long)


def meter(data: bytes, step: int) -> tuple[int, int]:
    m = LineMeter()
    for i in range(0, len(data), step):
        m.feed(data[i : i + step])
    m.end()
    return m.long_lines, m.long_octets


def broken(data: bytes, step: int, **kwargs: object) -> bytes:
    b = LineBreaker(**kwargs)  # type: ignore[arg-type]
    return b"".join(b.write(data[i : i + step]) for i in range(0, len(data), step)) + b.close()


def assert_short(out: bytes) -> None:
    for line in out.split(b"\n"):
        assert len(line.removesuffix(b"\r")) <= LIMIT, (len(line), line[:60])


# Lines around the limit, with and without CR, white space here and there.
_piece = st.sampled_from([b"a", b"b" * 97, b" ", b"\t", b"-", b"=", b"\r", b"x" * 500])
_line = st.one_of(
    st.integers(LIMIT - 2, LIMIT + 3).map(lambda n: b"y" * n),
    st.lists(_piece, max_size=40).map(b"".join),
    st.integers(0, 5000).map(lambda n: (b"word " * n)[:n]),
)
_ending = st.sampled_from([b"\r\n", b"\n", b"\r\r\n"])
_text = st.lists(st.tuples(_line, _ending), max_size=8).map(
    lambda ls: b"".join(a + b for a, b in ls)
) | st.tuples(st.lists(_line, max_size=5), _line).map(lambda t: b"\r\n".join([*t[0], t[1]]))
SETTINGS = settings(max_examples=300, deadline=None)


@SETTINGS
@given(_text, st.integers(1, 2500))
def test_meter_counts_what_split_counts(data: bytes, step: int) -> None:
    assert meter(data, step) == reference(data)
    assert has_long_line(data) == (reference(data)[0] > 0)


@pytest.mark.parametrize(
    ("data", "long"),
    [
        (b"x" * 998 + b"\r\n", False),
        (b"x" * 998 + b"\n", False),
        (b"x" * 999 + b"\n", True),
        (b"x" * 998 + b"\r\r\n", True),
        (b"x" * 998, False),
        (b"x" * 999, True),
        (b"a\r\n" + b"x" * 999 + b"\r\nb\r\n", True),
    ],
)
def test_the_limit_exactly(data: bytes, long: bool) -> None:
    assert (meter(data, 7)[0] > 0) is long
    assert (broken(data, 7) != data) is long


def unfold(data: bytes) -> bytes:
    """What a fold or a hard break inserted, taken out (a hard break's space stays)."""
    return re.sub(rb"\r\n(?=[ \t])", b"", data)


@SETTINGS
@given(_text, st.integers(1, 2500))
def test_fold_keeps_lines_short_and_inserts_only_breaks(data: bytes, step: int) -> None:
    out = broken(data, step)
    assert_short(out)
    assert out == broken(data, 100_000)
    if reference(data)[0] == 0:
        assert out == data
    # Only "CRLF" before white space or "CRLF SPACE" went in.
    assert re.sub(rb"[ \t]", b"", unfold(out)) == re.sub(rb"[ \t]", b"", unfold(data))


def test_fold_before_white_space_else_crlf_space() -> None:
    words = b"Subject: " + b"word " * 300 + b"end\r\n"
    out = break_line(words)
    assert_short(out)
    assert out.replace(b"\r\n ", b" ") == words
    assert all(not line.endswith(b" ") for line in out.split(b"\r\n"))
    solid = b"X-Long: " + b"z" * 3000 + b"\r\n"
    out = break_line(solid)
    assert out.startswith(b"X-Long:\r\n zzz")  # folded at its only white space first
    assert [len(x) for x in out.split(b"\r\n")] == [7, 998, 998, 998, 10, 0]
    assert out.replace(b"\r\n ", b"") == solid.replace(b" ", b"")
    assert break_line(b"short\r\n") == b"short\r\n"


def test_no_delimiter_is_made() -> None:
    line = b"--b " + b"x" * 2000 + b"\r\n"
    out = broken(line, 300, is_delimiter=lambda piece: piece.rstrip(b" \t") in (b"--b", b"--b="))
    assert b"--b\r\n" not in out
    assert out.startswith(b"-\r\n -b\r\n x")
    assert all(not x.startswith(b"--") for x in out.split(b"\r\n")[1:])
    qp = b"--b" + b"y" * 2000 + b"--" + b"z" * 1000
    out = broken(qp, 300, soft=True, is_delimiter=lambda piece: piece == b"--b=")
    assert binascii.a2b_qp(out) == binascii.a2b_qp(qp)
    assert all(not x.startswith(b"--") for x in out.split(b"\r\n")[1:])


_qp_source = st.lists(st.binary(max_size=3000), max_size=5)


@SETTINGS
@given(_qp_source, st.integers(1, 2500))
def test_soft_breaks_decode_to_the_same(parts: list[bytes], step: int) -> None:
    """Quoted-printable with long lines (an encoder's soft breaks taken out)."""
    lines = [binascii.b2a_qp(p).replace(b"=\n", b"") for p in parts]
    data = b"\r\n".join(lines)
    out = broken(data, step, soft=True)
    assert_short(out)
    assert binascii.a2b_qp(out) == binascii.a2b_qp(data)
    assert out == broken(data, 100_000, soft=True)
    if reference(data)[0] == 0:
        assert out == data


def test_growth_estimate_is_on_the_high_side() -> None:
    for data in (b"z" * 100_000, (b"a " * 2000)[:3999], b"-" * 5000):
        n = len(data)
        for soft in (False, True):
            assert len(broken(data, 999, soft=soft)) - n <= fold_growth(n, 1)


def test_a_long_binary_line_streams_in_flat_memory() -> None:
    b = LineBreaker()
    total = 0
    for _ in range(200):
        out = b.write(b"q" * 65536)
        total += len(out)
        assert len(b._line) <= LIMIT + 4
    total += len(b.close())
    n = 200 * 65536
    assert n < total <= n + fold_growth(n, 1)
