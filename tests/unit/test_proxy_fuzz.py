"""Any octets either parse as a PROXY header, ask for more, or raise ProxyError — nothing else.

Hypothesis drives ``kittiwake.net.proxy.parse_header`` with random octets, mutated valid
headers and every prefix of them (what a listener sees as segments arrive).
"""

from __future__ import annotations

import ipaddress

from hypothesis import example, given, settings
from hypothesis import strategies as st

from kittiwake.net.proxy import V1_MAX, ProxyError, ProxyHeader, parse_header
from tests.support import proxyproto as pp


def _outcome(data: bytes) -> ProxyHeader | ProxyError | None:
    try:
        header = parse_header(data)
    except ProxyError as exc:
        return exc
    if header is not None:  # the header lies within the data it was parsed from
        assert 0 < header.length <= len(data)
        assert (header.source is None) == (header.destination is None)
        if header.source is not None:
            ipaddress.ip_address(header.source[0])
            assert 0 <= header.source[1] <= 65535
    return header


_valid = st.one_of(
    st.builds(pp.v1, st.ip_addresses(v=4).map(str), st.ip_addresses(v=4).map(str)),
    st.builds(pp.v1, st.ip_addresses(v=6).map(str), st.ip_addresses(v=6).map(str)),
    st.builds(
        pp.v2,
        st.ip_addresses().map(str),
        st.ip_addresses().map(str),
        st.integers(0, 65535),
        st.integers(0, 65535),
        tlvs=st.binary(max_size=64),
    ),
    st.builds(pp.v2_local, st.binary(max_size=40)),
    st.builds(pp.v1_unknown, st.text("abc :.0123456789", max_size=80).map(lambda s: " " + s)),
)


@settings(max_examples=500)
@given(st.binary(max_size=300))
@example(b"PROXY ")
@example(pp.SIGNATURE)
@example(b"PROXY UNKNOWN\r")
def test_random_octets(data: bytes) -> None:
    _outcome(data)


@settings(max_examples=300)
@given(_valid, st.binary(max_size=20))
def test_valid_headers_parse_whole_and_every_prefix_waits(header: bytes, after: bytes) -> None:
    parsed = _outcome(header + after)
    if len(header) > V1_MAX and header.startswith(b"PROXY"):
        assert isinstance(parsed, ProxyError)
        return
    assert isinstance(parsed, ProxyHeader), parsed
    assert parsed.length == len(header)
    for n in range(len(header)):
        assert _outcome(header[:n]) is None


@settings(max_examples=500)
@given(_valid, st.data())
def test_mutated_headers(header: bytes, data: st.DataObject) -> None:
    at = data.draw(st.integers(0, len(header) - 1))
    new = data.draw(st.integers(0, 255))
    mutated = header[:at] + bytes([new]) + header[at + 1 :]
    cut = data.draw(st.integers(0, len(mutated)))
    _outcome(mutated[:cut])
    _outcome(mutated)
