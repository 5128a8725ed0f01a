"""8-bit → 7-bit MIME conversion (delivery.mime_downgrade over delivery.mime_walk).

The oracle is the stdlib ``email`` package: every leaf of the converted message decodes to
the same octets as the same leaf of the original. Plus: the output is 7-bit with lines of
at most 998 octets (76 in what we encoded), the result does not depend on how the input is
cut into chunks, what cannot be converted says why, and 50 MB convert in flat memory.
"""

from __future__ import annotations

import binascii
import email
import email.message
import hashlib
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kittiwake.delivery.mime_downgrade import (
    DowngradeError,
    DowngradePlan,
    MimeDowngrader,
    MimeScanner,
    QuotedPrintable,
)


def plan_of(message: bytes, step: int = 65536) -> DowngradePlan:
    scanner = MimeScanner()
    for i in range(0, len(message), step):
        scanner.scan(message[i : i + step])
    return scanner.plan()


def convert(message: bytes, step: int = 65536, plan: DowngradePlan | None = None) -> bytes:
    converter = MimeDowngrader(plan or plan_of(message, step))
    out = [converter.convert(message[i : i + step]) for i in range(0, len(message), step)]
    return b"".join(out) + converter.finish()


def leaves(raw: bytes) -> list[tuple[str, bytes]]:
    """(content type, decoded payload) of every leaf, as the email package reads them."""
    out = []
    for part in email.message_from_bytes(raw).walk():
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes), part.get_content_type()
        out.append((part.get_content_type(), payload))
    return out


def assert_7bit(raw: bytes, limit: int = 998) -> None:
    assert raw.isascii(), raw[:300]
    for line in raw.split(b"\r\n"):
        assert len(line) <= limit, line[:100]


# ------------------------------------------------------------------ message building


@dataclass
class Leaf:
    ctype: str
    cte: str | None
    body: bytes
    extra: bytes = b""  # more header lines


@dataclass
class Multi:
    subtype: str
    boundary: str
    parts: list[Node]
    cte: str | None = None
    preamble: bytes = b""
    epilogue: bytes = b""


@dataclass
class Rfc822:
    inner: Node
    cte: str | None = None


Node = Leaf | Multi | Rfc822


def render(node: Node, top: bool = False) -> bytes:
    head = b"MIME-Version: 1.0\r\nSubject: test\r\n" if top else b""
    if isinstance(node, Leaf):
        head += f"Content-Type: {node.ctype}\r\n".encode() + node.extra
        if node.cte is not None:
            head += f"Content-Transfer-Encoding: {node.cte}\r\n".encode()
        return head + b"\r\n" + node.body
    if isinstance(node, Rfc822):
        head += b"Content-Type: message/rfc822\r\n"
        if node.cte is not None:
            head += f"Content-Transfer-Encoding: {node.cte}\r\n".encode()
        return head + b"\r\n" + render(node.inner, top=True)
    head += f'Content-Type: multipart/{node.subtype};\r\n boundary="{node.boundary}"\r\n'.encode()
    if node.cte is not None:
        head += f"Content-Transfer-Encoding: {node.cte}\r\n".encode()
    sep = f"--{node.boundary}".encode()
    body = node.preamble
    for part in node.parts:
        body += (b"\r\n" if body else b"") + sep + b"\r\n" + render(part)
    body += b"\r\n" + sep + b"--\r\n" + node.epilogue
    return head + b"\r\n" + body


# Lines of a valid 8BITMIME body: no CR or LF, at most 998 octets; some start with "--" or
# "." or end in white space, some are "=" heavy.
_line = st.one_of(
    st.binary(max_size=120).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    st.sampled_from([b"-- ", b"--", b".", b"=", b"a \t", b"\xc3\xa9t\xc3\xa9 ", b"=3D"]),
    st.integers(70, 998).map(lambda n: (b"\xe2\x82\xac" * n)[:n]),
)
_text = st.lists(_line, max_size=12).map(b"\r\n".join)
_text_ending = st.tuples(_text, st.sampled_from([b"", b"\r\n"])).map(lambda t: t[0] + t[1])
_leaf = st.builds(
    Leaf,
    st.sampled_from(["text/plain; charset=utf-8", "application/octet-stream", "text/html"]),
    st.sampled_from([None, "7bit", "8bit", "8BIT"]),
    _text_ending,
) | st.builds(
    Leaf,
    st.just("application/octet-stream"),
    st.just("binary"),
    st.binary(max_size=300).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"-")),
)
_counter = iter(range(10**9))


def _multi(children: st.SearchStrategy[list[Node]]) -> st.SearchStrategy[Multi]:
    return st.builds(
        Multi,
        st.sampled_from(["mixed", "alternative", "related"]),
        st.builds(lambda: f"=_b{next(_counter)}_"),
        children,
        st.sampled_from([None, "7bit", "8bit"]),
        st.sampled_from([b"", b"This is MIME.\r\n"]),
        st.sampled_from([b"", b"epilogue\r\n"]),
    )


_node = st.recursive(
    _leaf,
    lambda kids: (
        _multi(st.lists(kids, min_size=1, max_size=4))
        | st.builds(Rfc822, kids, st.sampled_from([None, "8bit"]))
    ),
    max_leaves=8,
)

RELAXED = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@RELAXED
@given(_node, st.integers(1, 400))
def test_round_trip_through_the_email_package(node: Node, step: int) -> None:
    original = render(node, top=True)
    plan = plan_of(original, step)
    assert plan.problem is None, plan.problem
    if not plan.eight_bit:
        return  # sent as it is (without BODY=8BITMIME)
    converted = convert(original, step)
    assert_7bit(converted)
    assert leaves(converted) == leaves(original)
    assert converted == convert(original)  # however the input is cut
    # SIZE= is an estimate on the high side (RFC 1870 §4)
    assert plan.size >= len(converted)


@RELAXED
@given(st.lists(_line, max_size=30).map(b"\r\n".join), st.integers(1, 200))
def test_quoted_printable_lines_and_decoding(body: bytes, step: int) -> None:
    encoder = QuotedPrintable()
    out = b"".join(encoder.write(body[i : i + step]) for i in range(0, len(body), step))
    out += encoder.close()
    assert_7bit(out, limit=76)
    assert binascii.a2b_qp(out) == body
    assert out.count(b"\r\n") >= body.count(b"\r\n")  # hard breaks stay


_fragment = st.sampled_from(
    [
        b"Content-Type: multipart/mixed; boundary=b\r\n",
        b"Content-Type: multipart/digest; boundary=c\r\n",
        b"Content-Type: message/rfc822\r\n",
        b"Content-Transfer-Encoding: 8bit\r\n",
        b"Content-Transfer-Encoding: binary\r\n",
        b"Content-Transfer-Encoding: base64\r\n",
        b"MIME-Version: 1.0\r\n",
        b"--b\r\n",
        b"--b--\r\n",
        b"--c\n",
        b"\r\n",
        b"\n",
        b"\r",
        b" folded\r\n",
        b"--",
        b"\xe9",
        b"x y ",
        b"=",
        b".",
    ]
) | st.binary(max_size=12)


@RELAXED
@given(st.lists(_fragment, max_size=40).map(b"".join), st.integers(1, 50))
def test_any_input_is_planned_and_converted_or_refused(raw: bytes, step: int) -> None:
    """Whatever the content: pass 1 never raises; what it accepts pass 2 converts to 7-bit,
    the same however the input is cut."""
    plan = plan_of(raw, step)
    assert plan.eight_bit == (not raw.isascii())
    if plan.eight_bit and plan.problem is None:
        out = convert(raw, step)
        assert out.isascii()
        assert out == convert(raw)


def test_a_simple_8bit_text_message() -> None:
    original = (
        b"From: a@src.test\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln \r\n"
        b"1 + 1 = 2\r\n"
    )
    assert convert(original) == (
        b"From: a@src.test\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"Gr=C3=BC=C3=9Fe aus K=C3=B6ln=20\r\n1 + 1 =3D 2\r\n"
    )


def test_non_mime_message_gets_mime_version() -> None:
    original = b"Subject: x\r\n\r\n\xe9t\xe9\r\n"
    out = convert(original)
    assert out == (
        b"Subject: x\r\nMIME-Version: 1.0\r\nContent-Transfer-Encoding: quoted-printable\r\n"
        b"\r\n=E9t=E9\r\n"
    )


@pytest.mark.parametrize("fill", [b"\xff", b"a", b"a\xe9 ", b"\xe9a=a", b"\r"])
def test_long_line_is_cut_with_soft_breaks(fill: bytes) -> None:
    body = (fill * 200_000)[:200_001] + b" \r\nend"
    message = b"Content-Type: application/x-thing\r\n\r\n\xe9" + body
    out = convert(message)
    assert_7bit(out, limit=76)
    assert leaves(out)[0][1] == b"\xe9" + body
    assert all(convert(message, step) == out for step in (1000, 7777))


def test_composites_are_relabelled_not_encoded() -> None:
    inner = Leaf("text/plain", "8bit", b"caf\xc3\xa9")
    node = Multi("mixed", "b1", [Rfc822(Multi("mixed", "b2", [inner]), cte="8bit")], cte="8bit")
    out = convert(render(node, top=True))
    assert out.count(b"Content-Transfer-Encoding: 7bit") == 2
    assert out.count(b"Content-Transfer-Encoding: quoted-printable") == 1
    assert b"Content-Transfer-Encoding: 8bit" not in out
    assert leaves(out) == [("text/plain", b"caf\xc3\xa9")]


def test_digest_children_default_to_message_rfc822() -> None:
    digest = (
        b'Content-Type: multipart/digest; boundary="d"\r\n\r\n--d\r\n\r\n'
        b"Subject: one\r\n\r\n\xe9\r\n--d--\r\n"
    )
    out = convert(digest)
    assert b"MIME-Version: 1.0\r\nContent-Transfer-Encoding: quoted-printable" in out
    assert leaves(out) == leaves(digest)


def test_seven_bit_parts_pass_untouched() -> None:
    seven = Leaf("text/plain", None, b"plain = text  \r\nline")
    eight = Leaf("text/plain", "8bit", b"\xe9")
    original = render(Multi("mixed", "b", [seven, eight]), top=True)
    out = convert(original)
    assert render(seven) in out and render(eight) not in out


@pytest.mark.parametrize(
    ("message", "why"),
    [
        (b"Subject: caf\xc3\xa9\r\n\r\nbody\r\n", "header"),
        (b"Content-Type: text/plain;\r\n name=caf\xc3\xa9\r\n\r\nx\r\n", "header"),
        (
            b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
            b"Content-Type: text/plain\r\nX-Name: \xe9\r\n\r\nx\r\n--b--\r\n",
            "header",
        ),
        (b"Content-Transfer-Encoding: base64\r\n\r\n\xe9\r\n", "encoded as base64"),
        (b"Content-Transfer-Encoding: quoted-printable\r\n\r\n\xe9\r\n", "quoted-printable"),
        (
            b'Content-Type: multipart/mixed; boundary="b"\r\n\r\npre\xe9mble\r\n--b\r\n\r\nx\r\n'
            b"--b--\r\n",
            "preamble",
        ),
        (b"Content-Type: message/delivery-status\r\n\r\n\xe9\r\n", "message/delivery-status"),
        (b"Content-Type: multipart/mixed\r\n\r\n\xe9\r\n", "multipart/mixed"),  # no boundary
    ],
)
def test_what_cannot_be_converted(message: bytes, why: str) -> None:
    plan = plan_of(message)
    assert plan.eight_bit and plan.problem is not None and why in plan.problem, plan.problem
    with pytest.raises(DowngradeError):
        MimeDowngrader(plan)


def test_seven_bit_message_needs_nothing() -> None:
    plan = plan_of(b"Subject: x\r\n\r\nhello\r\n")
    assert not plan.eight_bit and plan.problem is None and not plan.entities


def test_nesting_limit() -> None:
    message = b"".join(
        f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n'.encode()
        for i in range(150)
    )
    plan = plan_of(message + b"\r\n\xe9\r\n")
    assert plan.eight_bit and plan.problem is not None and "nesting" in plan.problem


def test_plan_from_another_message_is_refused() -> None:
    plan = plan_of(b"Content-Type: text/plain\r\n\r\n\xe9\r\n")
    with pytest.raises(DowngradeError):
        convert(b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b--\r\n', plan=plan)


# ------------------------------------------------------------------ big and flat


def _big_body(total: int) -> Iterator[bytes]:
    line = ("Grüße aus Köln — schöne Grüße und so weiter, " * 2).encode() + b"\r\n"
    block = line * (65536 // len(line))
    sent = 0
    while sent < total:
        yield block
        sent += len(block)


def test_50mb_converts_in_flat_memory() -> None:
    total = 50 * 1024 * 1024
    head = b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    tracemalloc.start()
    try:
        scanner = MimeScanner()
        scanner.scan(head)
        for block in _big_body(total):
            scanner.scan(block)
        plan = scanner.plan()
        assert plan.problem is None and plan.eight_bit
        converter = MimeDowngrader(plan)
        original, decoded = hashlib.sha256(), hashlib.sha256()
        out_size = 0
        pending = b""  # converted body lines not decoded yet
        first = converter.convert(head)
        assert first.endswith(b"quoted-printable\r\n\r\n")
        for block in _big_body(total):
            original.update(block)
            out = converter.convert(block)
            out_size += len(out)
            assert out.isascii()
            pending += out
            cut = pending.rfind(b"\r\n") + 2
            decoded.update(binascii.a2b_qp(pending[:cut]))
            pending = pending[cut:]
        pending += converter.finish()
        decoded.update(binascii.a2b_qp(pending))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert decoded.hexdigest() == original.hexdigest()
    assert out_size > total and plan.size >= out_size
    assert peak < 4 * 1024 * 1024, peak  # a few chunks, not 50 MB


def test_email_package_agrees_on_a_message_it_generated() -> None:
    msg = email.message.EmailMessage()
    msg["Subject"] = "x"
    msg.set_content("Grüße\n", cte="8bit")
    msg.add_attachment(b"\x00\xff" * 100, maintype="application", subtype="x", cte="base64")
    inner = email.message.EmailMessage()
    inner.set_content("Köln\n", cte="8bit")
    msg.add_attachment(inner)
    raw = msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))
    assert not raw.isascii()
    out = convert(raw)
    assert_7bit(out)
    assert leaves(out) == leaves(raw)
