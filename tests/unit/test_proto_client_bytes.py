"""Byte tables and fuzzing for the client core's codecs: replies, capabilities, DATA, xtext."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kittiwake.envelope import Reply
from kittiwake.errors import RemoteProtocolError
from kittiwake.proto import grammar
from kittiwake.proto.client import ClientConnection, Response
from kittiwake.proto.client_encode import DataEncoder, xtext_encode
from kittiwake.proto.client_replies import MAX_LINE, MAX_LINES, Capabilities, ReplyParser


def parse(data: bytes) -> list[Reply]:
    p = ReplyParser()
    p.feed(data)
    out = []
    while (r := p.next_reply()) is not None:
        out.append(r)
    return out


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        (b"250 OK\r\n", [Reply(250, None, "OK")]),
        (b"250 2.1.0 Sender OK\r\n", [Reply(250, "2.1.0", "Sender OK")]),
        (b"250\r\n", [Reply(250, None, "")]),
        (b"250 \r\n", [Reply(250, None, "")]),  # smtp-sink's EHLO ends like this
        (b"550 5.1.1\r\n", [Reply(550, "5.1.1", "")]),
        (b"250 5.1.1 wrong class\r\n", [Reply(250, None, "5.1.1 wrong class")]),
        (b"451 4.3.0x not a code\r\n", [Reply(451, None, "4.3.0x not a code")]),
        (b"250 OK\n", [Reply(250, None, "OK")]),  # bare LF tolerated
        (
            b"550-5.7.1 first\r\n550-5.7.1 second\r\n550 5.7.1 third\r\n",
            [Reply(550, "5.7.1", ("first", "second", "third"))],
        ),
        (
            b"250-mx.test greets me\r\n250-PIPELINING\r\n250 SIZE 10\r\n",
            [Reply(250, None, ("mx.test greets me", "PIPELINING", "SIZE 10"))],
        ),
        (b"220 a\r\n250 b\r\n", [Reply(220, None, "a"), Reply(250, None, "b")]),
        (b"554 bad \x00\x1b[31m text\xff\r\n", [Reply(554, None, "bad ??[31m text\ufffd")]),
        (b"250 caf\xc3\xa9\r\n", [Reply(250, None, "café")]),
        (b"250 partial", []),
    ],
)
def test_reply_table(wire: bytes, expected: list[Reply]) -> None:
    assert parse(wire) == expected


@pytest.mark.parametrize(
    "wire",
    [
        b"25\r\n",
        b"abc OK\r\n",
        b"650 nope\r\n",
        b"150 nope\r\n",
        b"250_OK\r\n",
        b"250-a\r\n251 b\r\n",  # the code changes within a reply
        b"\r\n",
        b"250-" + b"x" * MAX_LINE + b"\r\n",
        b"250 " + b"x" * (MAX_LINE + 10),  # no line end yet, but already too long
        b"250-x\r\n" * MAX_LINES + b"250 x\r\n",
    ],
)
def test_malformed_replies(wire: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        parse(wire)


def test_reply_split_anywhere() -> None:
    wire = b"250-mx\r\n250-PIPELINING\r\n250 DSN\r\n354 go\r\n"
    for cut in range(len(wire) + 1):
        p = ReplyParser()
        p.feed(wire[:cut])
        got = []
        while (r := p.next_reply()) is not None:
            got.append(r)
        p.feed(wire[cut:])
        while (r := p.next_reply()) is not None:
            got.append(r)
        assert [r.code for r in got] == [250, 354], cut


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=4))
def test_any_bytes_parse_or_raise_remote_protocol_error(data: bytes, cuts: list[int]) -> None:
    """The client's reply parser never fails any other way, however the bytes arrive."""
    conn = ClientConnection()
    try:
        start = 0
        for cut in [*sorted(cuts), len(data)]:
            conn.receive_data(data[start:cut])
            start = max(start, cut)
            while isinstance(r := conn.next_response(), Response):
                assert 200 <= r.reply.code < 600
                assert all(line.isprintable() or "\t" in line for line in r.reply.lines())
        conn.receive_data(b"")
        conn.next_response()
    except RemoteProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([250, 451, 550]), st.text(max_size=20)), max_size=4))
def test_server_replies_round_trip(specs: list[tuple[int, str]]) -> None:
    """What ``Reply.to_bytes`` writes (the server side), ``ReplyParser`` reads back."""
    for code, text in specs:
        enhanced = f"{code // 100}.0.0"
        sent = Reply(code, enhanced, text.replace("\r", " ").replace("\n", " "))
        (got,) = parse(sent.to_bytes())
        assert got.code == code and got.enhanced == enhanced
        clean = sent.lines()[0].rstrip(" ")
        if clean.isprintable():
            assert got.lines()[0] == clean


def test_capabilities() -> None:
    ehlo = Reply(
        250,
        None,
        (
            "mx.test greets you",
            "SIZE 35882577",
            "pipelining",
            "8BITMIME",
            "AUTH=LOGIN",
            "AUTH PLAIN login XOAUTH2",
            "STARTTLS",
            "X-UNKNOWN with params",
        ),
    )
    caps = Capabilities.from_ehlo(ehlo)
    assert caps.esmtp and caps.size == 35882577 and caps.pipelining and caps.eightbitmime
    assert caps.starttls and caps.auth == {"LOGIN", "PLAIN", "XOAUTH2"}
    assert not (caps.chunking or caps.dsn or caps.smtputf8 or caps.binarymime)
    assert caps.keywords["X-UNKNOWN"] == "with params"
    assert Capabilities.from_ehlo(Reply(250, None, ("x", "SIZE"))).size == 0
    assert Capabilities.from_ehlo(Reply(250, None, ("x", "SIZE junk"))).size == 0
    assert Capabilities.from_ehlo(Reply(250, None, "x")).size is None


@pytest.mark.parametrize(
    ("chunks", "wire"),
    [
        ([], b".\r\n"),
        ([b""], b".\r\n"),
        ([b"hi\r\n"], b"hi\r\n.\r\n"),
        ([b"hi"], b"hi\r\n.\r\n"),
        ([b".\r\n"], b"..\r\n.\r\n"),
        ([b"a\r\n.\r\nb"], b"a\r\n..\r\nb\r\n.\r\n"),
        ([b"a\r\n", b".b"], b"a\r\n..b\r\n.\r\n"),
        ([b"a\r", b"\n.b\r\n"], b"a\r\n..b\r\n.\r\n"),
        ([b"a\r", b"\n", b".", b"\r\n"], b"a\r\n..\r\n.\r\n"),
        ([b"a\n.\nb"], b"a\r\n..\r\nb\r\n.\r\n"),  # bare LF: normalised, then stuffed
        ([b"a\r.\rb"], b"a\r\n..\r\nb\r\n.\r\n"),
        ([b"x\r"], b"x\r\n.\r\n"),
        ([b"x\r", b""], b"x\r\n.\r\n"),
        ([b"\r\n.\r\n"], b"\r\n..\r\n.\r\n"),
    ],
)
def test_data_encoder_table(chunks: list[bytes], wire: bytes) -> None:
    e = DataEncoder()
    assert b"".join(e.feed(c) for c in chunks) + e.end() == wire


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_xtext_round_trip(text: str) -> None:
    encoded = xtext_encode(text)
    assert encoded.isascii() and " " not in encoded and "=" not in encoded
    decoded = grammar.xtext_decode(encoded)
    assert decoded is not None
    assert decoded.encode("latin-1") == text.encode("utf-8")


def test_xtext_table() -> None:
    assert xtext_encode("plain@example.test") == "plain@example.test"
    assert xtext_encode("a+b=c d") == "a+2Bb+3Dc+20d"
    assert xtext_encode("é") == "+C3+A9"
