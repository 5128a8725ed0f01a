"""PROXY protocol header parsing, v1 and v2, byte by byte (kittiwake.net.proxy)."""

from __future__ import annotations

import struct

import pytest

from kittiwake.net.proxy import V1_MAX, ProxyError, ProxyHeader, parse_header
from tests.support import proxyproto as pp

# ------------------------------------------------------------------------------------ v1


def test_v1_tcp4() -> None:
    data = b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 25\r\n"
    header = parse_header(data + b"EHLO x\r\n")
    assert header == ProxyHeader(1, len(data), ("192.0.2.10", 56324), ("198.51.100.1", 25))
    assert not header.local


def test_v1_tcp6_is_normalized() -> None:
    data = b"PROXY TCP6 2001:DB8:0:0:0:0:0:1 ::1 65535 0\r\n"
    header = parse_header(data)
    assert header is not None
    assert header.source == ("2001:db8::1", 65535)
    assert header.destination == ("::1", 0)
    assert header.length == len(data)


def test_v1_longest_tcp6_line() -> None:
    full = ":".join(["ffff"] * 8)
    data = f"PROXY TCP6 {full} {full} 65535 65535\r\n".encode()
    assert len(data) == 104  # §2.1
    header = parse_header(data)
    assert header is not None and header.source == (full, 65535)


@pytest.mark.parametrize(
    "data",
    [
        b"PROXY UNKNOWN\r\n",
        b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n",
        b"PROXY UNKNOWN anything at all, ignored\r\n",
    ],
)
def test_v1_unknown_means_the_real_endpoints(data: bytes) -> None:
    header = parse_header(data + b"rest")
    assert header == ProxyHeader(1, len(data))
    assert header.local and header.destination is None


def test_v1_worst_case_length_is_accepted_and_one_more_is_not() -> None:
    line = b"PROXY UNKNOWN " + b"x" * (V1_MAX - 16) + b"\r\n"
    assert len(line) == V1_MAX
    assert parse_header(line) == ProxyHeader(1, V1_MAX)
    too_long = b"PROXY UNKNOWN " + b"x" * (V1_MAX - 15) + b"\r\n"
    with pytest.raises(ProxyError, match="longer than 107"):
        parse_header(too_long)


def test_v1_incomplete_prefixes_need_more() -> None:
    data = b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 25\r\n"
    for n in range(len(data)):  # every proper prefix, including a split CRLF
        assert parse_header(data[:n]) is None, data[:n]
    assert parse_header(data) is not None


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"EHLO client.test\r\n", "not a PROXY"),
        (b"\x16\x03\x01\x02\x00", "not a PROXY"),  # a TLS ClientHello
        (b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "not a PROXY"),
        (b"PROXY TCP5 ", "unknown PROXY v1 protocol"),
        (b"PROXY UDP4", "unknown PROXY v1 protocol"),
        (b"PROXY UNKNOWNX\r\n", "unknown PROXY v1 protocol"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "CRLF"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", "CRLF"),
        (b"PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n", "CRLF"),
        (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "malformed"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "malformed"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "malformed"),
        (b"PROXY TCP4\r\n", "malformed"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8\t1 2\r\n", "malformed"),
        (b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "IPv4"),
        (b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", "IPv4"),
        (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "IPv4"),
        (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "IPv6"),
        (b"PROXY TCP6 ::ffff:1.2.3.4 ::1 1 2\r\n", "IPv6"),
        (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "IPv6"),
        (b"PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n", "IPv6"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 025 2\r\n", "port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 \xd9\xa1\r\n", "US-ASCII"),
        (b"PROXY " + b"x" * 20, "unknown PROXY v1 protocol"),
        (b"PROXY TCP4 " + b"1" * 200, "longer than 107"),
        (b"PROXY UNKNOWN " + b"x" * 100, "longer than 107"),
    ],
)
def test_v1_garbage_is_refused(data: bytes, problem: str) -> None:
    with pytest.raises(ProxyError, match=problem):
        parse_header(data)


# ------------------------------------------------------------------------------------ v2


def test_v2_tcp4() -> None:
    data = pp.v2("192.0.2.10", "198.51.100.1", 56324, 587)
    assert len(data) == 16 + 12
    header = parse_header(data + b"\x16\x03\x01")
    assert header == ProxyHeader(2, 28, ("192.0.2.10", 56324), ("198.51.100.1", 587))


def test_v2_tcp6() -> None:
    data = pp.v2("2001:db8::7", "2001:db8::1", 1, 465)
    header = parse_header(data)
    assert header == ProxyHeader(2, 16 + 36, ("2001:db8::7", 1), ("2001:db8::1", 465))


def test_v2_tlvs_are_kept_raw_and_skipped() -> None:
    tlvs = pp.tlv(0x02, b"mx.example.org") + pp.tlv(0x04, b"\0" * 5) + pp.tlv(0x20, b"\1" * 9)
    data = pp.v2("192.0.2.10", tlvs=tlvs)
    header = parse_header(data + b"EHLO")
    assert header is not None
    assert header.source == ("192.0.2.10", 40000)
    assert header.tlvs == tlvs
    assert header.length == len(data)


def test_v2_local_uses_the_real_endpoints_and_skips_its_block() -> None:
    assert parse_header(pp.v2_local()) == ProxyHeader(2, 16)
    block = b"\x7f\0\0\1" * 3  # an address block on LOCAL: MUST be skipped, not assumed 0
    header = parse_header(pp.v2_local(block) + b"X")
    assert header == ProxyHeader(2, 16 + 12)
    assert header.local


@pytest.mark.parametrize(
    ("fam", "size"),
    [(0x00, 0), (0x00, 12), (0x12, 12), (0x22, 36), (0x31, 216), (0x32, 216)],
)
def test_v2_proxy_without_tcp_addresses_falls_back_to_the_real_endpoints(
    fam: int, size: int
) -> None:
    data = pp.SIGNATURE + bytes([pp.PROXY, fam]) + struct.pack("!H", size) + b"\1" * size
    header = parse_header(data)
    assert header is not None
    assert header.local and header.destination is None
    assert header.length == 16 + size


def test_v2_incomplete_prefixes_need_more() -> None:
    data = pp.v2("192.0.2.10", tlvs=pp.tlv(1, b"smtp"))
    for n in range(len(data)):
        assert parse_header(data[:n]) is None, n
    assert parse_header(data) is not None


def test_v2_longest_header() -> None:
    tlvs = pp.tlv(0x04, b"\0" * (0xFFFF - 12 - 3))
    data = pp.v2("192.0.2.10", tlvs=tlvs)
    assert len(data) == 16 + 0xFFFF
    assert parse_header(data[:-1]) is None
    header = parse_header(data)
    assert header is not None and header.length == len(data)


def _v2_raw(ver_cmd: int, fam: int, block: bytes, size: int | None = None) -> bytes:
    n = len(block) if size is None else size
    return pp.SIGNATURE + bytes([ver_cmd, fam]) + struct.pack("!H", n) + block


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (pp.SIGNATURE[:5] + b"X", "not a PROXY"),
        (_v2_raw(0x11, 0x11, b"\0" * 12), "version 1"),
        (_v2_raw(0x31, 0x11, b"\0" * 12), "version 3"),
        (pp.SIGNATURE + b"\x10", "version 1"),  # fails before the rest arrives
        (_v2_raw(0x22, 0x11, b"\0" * 12), "command 2"),
        (_v2_raw(0x2F, 0x11, b"\0" * 12), "command 15"),
        (_v2_raw(0x21, 0x41, b"\0" * 12), "family/protocol 0x41"),
        (_v2_raw(0x21, 0x13, b"\0" * 12), "family/protocol 0x13"),
        (pp.SIGNATURE + b"\x21\x51", "family/protocol 0x51"),
        (_v2_raw(0x21, 0x11, b"\0" * 11), "11 octets, family needs 12"),
        (_v2_raw(0x21, 0x21, b"\0" * 12), "12 octets, family needs 36"),
        (_v2_raw(0x21, 0x31, b"\0" * 100), "100 octets, family needs 216"),
    ],
)
def test_v2_garbage_is_refused(data: bytes, problem: str) -> None:
    with pytest.raises(ProxyError, match=problem):
        parse_header(data)


def test_v2_truncated_block_waits_for_the_rest() -> None:
    """The length says 12 more octets; with 5 of them there is no answer yet (the
    listener's timeout or EOF then refuses the connection)."""
    assert parse_header(_v2_raw(0x21, 0x11, b"\0" * 5, size=12)) is None


def test_empty_input_needs_more() -> None:
    assert parse_header(b"") is None
