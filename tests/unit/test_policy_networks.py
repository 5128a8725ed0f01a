"""CIDR matching for relay.mynetworks and etrn.allowed: IPv4, IPv6, mapped, strict parsing."""

from __future__ import annotations

import ipaddress

import pytest

from kittiwake.policy.networks import NOBODY, Networks, client_address, parse_network


def test_nobody_contains_nobody() -> None:
    assert not NOBODY
    assert len(NOBODY) == 0
    for ip in ("127.0.0.1", "::1", "0.0.0.0", "::", "::ffff:127.0.0.1"):
        assert ip not in NOBODY
    assert str(NOBODY) == "none"


def test_ipv4_and_ipv6_networks() -> None:
    nets = Networks.parse(["192.0.2.0/24", "2001:db8::/32", "127.0.0.1"])
    assert "192.0.2.0" in nets and "192.0.2.255" in nets
    assert "192.0.3.0" not in nets and "192.0.1.255" not in nets
    assert "2001:db8::1" in nets and "2001:DB8:ffff::9" in nets
    assert "2001:db9::1" not in nets
    assert "127.0.0.1" in nets and "127.0.0.2" not in nets  # a bare address is a /32
    assert str(nets) == "192.0.2.0/24, 2001:db8::/32, 127.0.0.1/32"
    assert ipaddress.ip_address("192.0.2.9") in nets


def test_ipv4_mapped_peers_match_ipv4_networks() -> None:
    """A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d (RFC 4291 §2.5.5.2)."""
    nets = Networks.parse(["10.0.0.0/8"])
    assert "::ffff:10.1.2.3" in nets
    assert "::ffff:11.1.2.3" not in nets
    assert "[::ffff:10.1.2.3]" in nets
    assert client_address("::ffff:10.1.2.3") == ipaddress.IPv4Address("10.1.2.3")


def test_mapped_networks_are_refused() -> None:
    with pytest.raises(ValueError, match="IPv4-mapped"):
        parse_network("::ffff:0:0/96")  # would mean "every IPv4 client"
    with pytest.raises(ValueError, match="IPv4-mapped"):
        parse_network("::ffff:10.0.0.0/104")


def test_an_ipv6_network_never_matches_ipv4_and_back() -> None:
    assert "127.0.0.1" not in Networks.parse(["::/0"])
    assert "::1" not in Networks.parse(["0.0.0.0/0"])
    # ::/0 is allowed, but mapped peers are unwrapped first, so it does not take IPv4 in.
    assert "::ffff:127.0.0.1" not in Networks.parse(["::/0"])


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("10.0.0.1/8", "did you mean 10.0.0.0/8"),
        ("10.0.0.0/33", "not an IP network"),
        ("example.org", "not an IP network"),
        ("", "empty"),
        ("10.0.0.0/8/8", "not an IP network"),
        ("fe80::1%eth0", "not an IP network"),
    ],
)
def test_bad_networks(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        Networks.parse([text])


def test_peer_addresses_that_are_not_ip_match_nothing() -> None:
    nets = Networks.parse(["0.0.0.0/0", "::/0"])
    for peer in ("", "?", "localhost", "/run/kittiwake.sock", "1.2.3", "::g"):
        assert peer not in nets
    assert 7 not in nets  # not an address at all
    assert "fe80::1%eth0" in nets  # the zone id is not part of the address


def test_duplicates_dropped_order_kept() -> None:
    nets = Networks.parse(["10.0.0.0/8", "127.0.0.0/8", "10.0.0.0/8"])
    assert [str(n) for n in nets] == ["10.0.0.0/8", "127.0.0.0/8"]
    assert nets == Networks.parse(["10.0.0.0/8", "127.0.0.0/8"])
