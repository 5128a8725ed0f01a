"""Lines over 998 octets (RFC 5321 §4.5.3.1.6) re-encoded or broken by
delivery.mime_downgrade, for a peer with 8BITMIME (``seven_bit=False``) and without.

Oracles as in test_mime_downgrade: every line of the output is at most 998 octets, every
leaf decodes (stdlib ``email``) to what it did, the result does not depend on how the input
is cut, the size estimate is on the high side; and only the leaves that need it change.
"""

from __future__ import annotations

import binascii
import email
import email.message

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kittiwake.delivery.mime_downgrade import DowngradeError, MimeDowngrader
from tests.unit.test_mime_downgrade import (
    RELAXED,
    Leaf,
    Multi,
    Node,
    Rfc822,
    _multi,
    assert_7bit,
    leaves,
    plan_of,
    render,
)


def change(message: bytes, *, seven_bit: bool = False, step: int = 65536) -> bytes:
    converter = MimeDowngrader(plan_of(message, step), seven_bit=seven_bit)
    out = [converter.convert(message[i : i + step]) for i in range(0, len(message), step)]
    return b"".join(out) + converter.finish()


def assert_short(raw: bytes) -> None:
    for line in raw.split(b"\n"):
        assert len(line.removesuffix(b"\r")) <= 998, (len(line), line[:80])


def long_line(n: int, fill: bytes = b"a") -> bytes:
    return (fill * n)[:n]


_line = st.one_of(
    st.binary(max_size=60).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    st.sampled_from([b"-- ", b".", b"=", b"a \t", b"\xc3\xa9t\xc3\xa9 "]),
    st.integers(990, 5000).map(long_line),
    st.integers(990, 3000).map(lambda n: long_line(n, b"w\xe2\x82\xac ")),
)
_text = st.lists(_line, max_size=6).map(b"\r\n".join)
_encoded = st.lists(st.binary(max_size=2500), min_size=1, max_size=3)
_leaf = st.one_of(
    st.builds(
        Leaf,
        st.sampled_from(["text/plain; charset=utf-8", "application/x-thing"]),
        st.sampled_from([None, "7bit", "8bit"]),
        _text,
        st.sampled_from([b"", b"X-Long: " + b"v " * 700 + b"\r\n"]),
    ),
    st.builds(  # binary content: no CR or LF of its own
        Leaf,
        st.just("application/octet-stream"),
        st.just("binary"),
        st.binary(max_size=3000).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    ),
    st.builds(  # quoted-printable and base64 that an encoder wrote without line breaks
        Leaf,
        st.just("application/octet-stream"),
        st.just("quoted-printable"),
        _encoded.map(lambda ps: b"\r\n".join(binascii.b2a_qp(p).replace(b"=\n", b"") for p in ps)),
    ),
    st.builds(
        Leaf,
        st.just("application/octet-stream"),
        st.just("base64"),
        _encoded.map(lambda ps: b"\r\n".join(binascii.b2a_base64(p, newline=False) for p in ps)),
    ),
)
_node = st.recursive(
    _leaf,
    lambda kids: _multi(st.lists(kids, min_size=1, max_size=3)) | st.builds(Rfc822, kids),
    max_leaves=6,
)


@RELAXED
@given(_node, st.integers(1, 3000))
def test_lines_fit_and_leaves_decode_the_same(node: Node, step: int) -> None:
    original = render(node, top=True)
    plan = plan_of(original, step)
    out = change(original, step=step)  # a peer with 8BITMIME
    assert_short(out)
    assert leaves(out) == leaves(original)
    assert out == change(original)
    assert plan.size_8bit >= len(out)
    if not plan.long_lines:
        assert out == original
    if plan.problem is None:  # a peer without 8BITMIME
        out7 = change(original, seven_bit=True, step=step)
        assert_7bit(out7)
        assert leaves(out7) == leaves(original)
        assert plan.size >= len(out7)


def test_a_7bit_message_gets_mime_and_quoted_printable() -> None:
    body = b"start " + long_line(5000, b"0123456789") + b" end\r\nshort\r\n"
    original = b"From: a@src.test\r\nSubject: long\r\n\r\n" + body
    plan = plan_of(original)
    assert plan.long_lines and not plan.eight_bit and plan.problem is None
    out = change(original)
    assert out.startswith(
        b"From: a@src.test\r\nSubject: long\r\nMIME-Version: 1.0\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\nstart 0123"
    )
    assert_7bit(out, limit=76)
    assert leaves(out) == [("text/plain", body)]


def test_only_the_leaves_that_need_it_change() -> None:
    seven = Leaf("text/plain", None, b"plain = text\r\n")
    eight = Leaf("text/plain; charset=utf-8", "8bit", b"caf\xc3\xa9\r\n")
    long = Leaf("text/html", "8bit", b"<p>" + long_line(3000, b"x y\xc3\xa9 ") + b"</p>\r\n")
    original = render(Multi("mixed", "b", [seven, eight, long], cte="8bit"), top=True)
    out8 = change(original)  # 8BITMIME peer: the long part only
    assert render(seven) in out8 and render(eight) in out8 and render(long) not in out8
    assert b"Content-Transfer-Encoding: 8bit\r\n\r\n--b" in out8  # the multipart as it was
    assert out8.count(b"quoted-printable") == 1
    out7 = change(original, seven_bit=True)  # and the 8-bit part for a 7-bit peer
    assert render(seven) in out7 and render(eight) not in out7
    assert out7.count(b"quoted-printable") == 2 and b"Content-Transfer-Encoding: 7bit" in out7
    for out in (out8, out7):
        assert_short(out)
        assert leaves(out) == leaves(original)


def test_binary_leaf_becomes_base64() -> None:
    data = bytes(range(256)).replace(b"\r", b"").replace(b"\n", b"") * 10
    original = render(Leaf("application/octet-stream", "binary", data), top=True)
    out = change(original)
    assert b"Content-Transfer-Encoding: base64\r\n" in out and b"binary" not in out
    assert leaves(out) == [("application/octet-stream", data)]


def test_encoded_parts_are_broken_without_changing_what_they_decode_to() -> None:
    payload = bytes(range(256)) * 20
    qp = binascii.b2a_qp(payload).replace(b"=\n", b"")
    b64 = binascii.b2a_base64(payload, newline=False)
    parts: list[Node] = [
        Leaf("application/x-a", "quoted-printable", qp),
        Leaf("application/x-b", "base64", b64),
    ]
    original = render(Multi("mixed", "b", parts), top=True)
    plan = plan_of(original)
    assert plan.long_lines and plan.problem is None
    for seven_bit in (False, True):
        out = change(original, seven_bit=seven_bit)
        assert_short(out)
        assert out.count(b"Content-Transfer-Encoding: quoted-printable") == 1
        assert out.count(b"Content-Transfer-Encoding: base64") == 1
        assert leaves(out) == [("application/x-a", payload), ("application/x-b", payload)]
        assert b"=\r\n" in out and b"\r\n " in out  # soft breaks; CRLF SPACE in base64


def test_what_cannot_be_encoded_is_folded() -> None:
    subject = b"Subject: " + b"many words " * 200 + b"\r\n"
    status = b"Reporting-MTA: dns; " + long_line(1500, b"m") + b"\r\n"
    original = (
        subject + b'MIME-Version: 1.0\r\nContent-Type: multipart/report; boundary="r"\r\n\r\n'
        b"pre " + long_line(1200, b"amble ") + b"\r\n--r" + b" " * 1000 + b"\r\n"
        b"Content-Type: message/delivery-status\r\n\r\n" + status + b"--r--\r\n"
        b"epi " + long_line(2000, b"logue ") + b"\r\n"
    )
    out = change(original)
    assert_short(out)
    msg = email.message_from_bytes(out)
    assert str(msg["Subject"]).split() == ["many", "words"] * 200  # same words
    assert b"\r\n--r\r\n" in out  # the padding went
    payload = msg.get_payload()
    assert isinstance(payload, list)
    (part,) = payload
    assert isinstance(part, email.message.Message)
    assert part.get_content_type() == "message/delivery-status"
    assert b"\r\n m" in out and b"pre amble" in out and b"epi logue" in out


def test_8bit_message_without_long_lines_is_left_alone_for_an_8bitmime_peer() -> None:
    original = b"Subject: x\r\nMIME-Version: 1.0\r\n\r\ncaf\xc3\xa9\r\n"
    plan = plan_of(original)
    assert plan.eight_bit and not plan.long_lines
    assert all(action >> 4 == 0 for action in plan.actions)  # nothing for an 8BITMIME peer
    assert change(original) == original


def test_beyond_the_walkers_limits_nothing_mime_aware_is_done() -> None:
    original = b"X-Huge: " + b"h" * 600_000 + b"\r\n\r\nbody\r\n"
    plan = plan_of(original)
    assert plan.walk_failed and plan.problem is not None  # (long_lines: not known)
    for seven_bit in (False, True):
        with pytest.raises(DowngradeError):
            MimeDowngrader(plan, seven_bit=seven_bit)
