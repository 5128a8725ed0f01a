"""net.dns.Resolver against a real DNS server on loopback (tests.support.dns.TestDNS)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from kittiwake.net.dns import Resolver, Status, to_ascii
from tests.support.dns import TestDNS, raw_query

BIG = ('"' + "x" * 250 + '" ') * 6  # one TXT record of 1500 octets: over 512, so TCP

ZONE = f"""
$ORIGIN example.
@            MX   10 mx1
@            MX   20 mx2
mx1          A    127.0.0.2
mx1          AAAA ::2
mx2          A    127.0.0.3
v6only       AAAA 2001:db8::25
alias        CNAME mx1
dangling     CNAME nowhere
nullmx       MX   0 .
deep.sub     A    127.0.0.9
spf          TXT  "v=spf1 " "-all"
spf          TXT  "second"
big          TXT  {BIG}
xn--bcher-kva MX  10 mx1
2.0.0.127.in-addr.arpa. PTR mx1.example.
5.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. PTR v6only.example.
"""


@pytest.fixture
def server() -> Iterator[TestDNS]:
    with TestDNS(ZONE) as dns_server:
        yield dns_server


@pytest.fixture
def resolver(server: TestDNS) -> Resolver:
    return Resolver(server.nameservers, server.port, timeout=2.0, cache_size=0)


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- configuration: only ever the nameservers we were given ------------------------------


def test_resolver_uses_exactly_the_configured_nameservers(server: TestDNS) -> None:
    r = Resolver(server.nameservers, server.port)
    assert r.nameservers == ("127.0.0.1",)
    assert r.port == server.port


def test_resolver_refuses_to_start_without_nameservers() -> None:
    with pytest.raises(ValueError, match="no nameservers"):
        Resolver([])
    with pytest.raises(ValueError, match="IP address"):
        Resolver(["dns.example"])
    with pytest.raises(ValueError):
        Resolver(["127.0.0.1"], port=0)


async def test_no_fallback_to_the_system_resolver() -> None:
    """A dead configured nameserver is a tempfail, not a quiet switch to resolv.conf."""
    r = Resolver(["127.0.0.1"], _free_udp_port(), timeout=0.5, cache_size=0)
    result = await r.mx("example.com")
    assert result.kind is Status.TEMPFAIL
    assert r.nameservers == ("127.0.0.1",)


async def test_queries_reach_our_server(server: TestDNS, resolver: Resolver) -> None:
    await resolver.mx("example")
    assert ("example.", "MX") in {(q.name, q.qtype) for q in server.queries}


# -- MX ------------------------------------------------------------------------------


async def test_mx_records(resolver: Resolver) -> None:
    result = await resolver.mx("example")
    assert result.kind == "ok"
    assert sorted(result.records) == [(10, "mx1.example"), (20, "mx2.example")]


@pytest.mark.parametrize("name", ["EXAMPLE", "example.", "Example."])
async def test_case_and_trailing_dot(resolver: Resolver, name: str) -> None:
    assert (await resolver.mx(name)).kind is Status.OK


async def test_mx_nodata_nxdomain_null(resolver: Resolver) -> None:
    assert (await resolver.mx("mx1.example")).kind is Status.NODATA
    assert (await resolver.mx("sub.example")).kind is Status.NODATA  # empty non-terminal
    nx = await resolver.mx("nope.example")
    assert nx.kind is Status.NXDOMAIN and nx.records == ()
    assert (await resolver.mx("nullmx.example")).records == ((0, "."),)


async def test_servfail_is_tempfail(server: TestDNS, resolver: Resolver) -> None:
    server.servfail("broken.example")
    result = await resolver.mx("broken.example")
    assert result.kind is Status.TEMPFAIL
    assert "SERVFAIL" in result.error


async def test_timeout_is_tempfail_within_the_timeout(server: TestDNS) -> None:
    server.blackhole("slow.example")
    r = Resolver(server.nameservers, server.port, timeout=0.3, cache_size=0)
    start = time.monotonic()
    result = await r.mx("slow.example")
    assert result.kind is Status.TEMPFAIL
    assert "timed out" in result.error
    assert time.monotonic() - start < 1.5


async def test_idna_domain_is_queried_as_a_label(server: TestDNS, resolver: Resolver) -> None:
    result = await resolver.mx("bücher.example")
    assert result.records == ((10, "mx1.example"),)
    assert server.queries[-1].name == "xn--bcher-kva.example."


@pytest.mark.parametrize("bad", ["", ".", "a..b", "ex ample.com", "a\\064b.com", "*.example"])
async def test_invalid_names_are_nxdomain_without_a_query(
    server: TestDNS, resolver: Resolver, bad: str
) -> None:
    result = await resolver.mx(bad)
    assert result.kind is Status.NXDOMAIN
    assert "not a domain name" in result.error
    assert server.queries == []


# -- A / AAAA --------------------------------------------------------------------------


async def test_addresses_a_and_aaaa(resolver: Resolver) -> None:
    result = await resolver.addresses("mx1.example")
    assert (result.kind, result.ipv4, result.ipv6) == (Status.OK, ("127.0.0.2",), ("::2",))
    assert result.ips == ("127.0.0.2", "::2")
    only6 = await resolver.addresses("v6only.example")
    assert (only6.ipv4, only6.ipv6) == ((), ("2001:db8::25",))


async def test_addresses_follow_cname(resolver: Resolver) -> None:
    assert (await resolver.addresses("alias.example")).ipv4 == ("127.0.0.2",)
    assert (await resolver.addresses("dangling.example")).kind is Status.NXDOMAIN


async def test_addresses_negative(resolver: Resolver) -> None:
    assert (await resolver.addresses("nope.example")).kind is Status.NXDOMAIN
    assert (await resolver.addresses("spf.example")).kind is Status.NODATA


async def test_addresses_partial_failure(server: TestDNS) -> None:
    """An A answer is usable even when the AAAA query fails; both failing is a tempfail."""
    r = Resolver(server.nameservers, server.port, timeout=0.3, cache_size=0)
    server.blackhole("mx1.example", "AAAA")
    result = await r.addresses("mx1.example")
    assert (result.kind, result.ips) == (Status.OK, ("127.0.0.2",))
    server.servfail("v6only.example", "A")
    server.servfail("v6only.example", "AAAA")
    assert (await r.addresses("v6only.example")).kind is Status.TEMPFAIL


async def test_addresses_of_an_ip_literal_needs_no_query(
    server: TestDNS, resolver: Resolver
) -> None:
    assert (await resolver.addresses("127.0.0.7")).ipv4 == ("127.0.0.7",)
    assert (await resolver.addresses("::1")).ipv6 == ("::1",)
    assert server.queries == []


# -- TXT, PTR ------------------------------------------------------------------------


async def test_txt_strings_are_joined_per_record(resolver: Resolver) -> None:
    result = await resolver.txt("spf.example")
    assert sorted(result.texts) == ["second", "v=spf1 -all"]


async def test_big_txt_retries_over_tcp(server: TestDNS, resolver: Resolver) -> None:
    result = await resolver.txt("big.example")
    assert result.kind is Status.OK
    assert result.texts == ("x" * 1500,)
    protocols = [q.protocol for q in server.queries if q.name == "big.example."]
    assert protocols == ["udp", "tcp"]


async def test_ptr(resolver: Resolver) -> None:
    assert (await resolver.ptr("127.0.0.2")).names == ("mx1.example",)
    assert (await resolver.ptr("2001:db8::25")).names == ("v6only.example",)
    assert (await resolver.ptr("127.0.0.99")).kind is Status.NXDOMAIN
    assert (await resolver.ptr("not-an-ip")).kind is Status.NXDOMAIN


# -- the cache -----------------------------------------------------------------------


async def test_cache_honours_ttl(server: TestDNS) -> None:
    server.add("cached.example. 300 A 127.0.0.10")
    server.add("fresh.example. 0 A 127.0.0.11")
    r = Resolver(server.nameservers, server.port, cache_size=16)
    for _ in range(3):
        assert (await r.addresses("cached.example")).kind is Status.OK
        assert (await r.addresses("fresh.example")).kind is Status.OK
    names = [q.name for q in server.queries if q.qtype == "A"]
    assert names.count("cached.example.") == 1
    assert names.count("fresh.example.") == 3


# -- to_ascii --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("Example.COM.", "example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("XN--BCHER-KVA.example", "xn--bcher-kva.example"),
        ("_dmarc.example.org", "_dmarc.example.org"),
    ],
)
def test_to_ascii(given: str, expected: str) -> None:
    assert to_ascii(given) == expected


@pytest.mark.parametrize("bad", ["", ".", ".a", "a..b", "-a.com", "a-.com", "a" * 64 + ".com"])
def test_to_ascii_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        to_ascii(bad)


# -- the test server itself --------------------------------------------------------


def test_server_truncates_big_udp_answers_keeping_the_question(server: TestDNS) -> None:
    udp = raw_query(server, "big.example.", "TXT")
    assert udp.header.tc == 1 and len(udp.rr) == 0
    assert str(udp.q.qname) == "big.example."
    tcp = raw_query(server, "big.example.", "TXT", tcp=True)
    assert tcp.header.tc == 0 and len(tcp.rr) == 1


def test_server_set_zone_and_remove(server: TestDNS) -> None:
    server.set_zone("only.example. A 127.0.0.4")
    assert raw_query(server, "only.example.").rr[0].rdata.toZone() == "127.0.0.4"
    assert raw_query(server, "mx1.example.").header.rcode == 3  # NXDOMAIN
    server.remove("only.example.", "A")
    assert raw_query(server, "only.example.").header.rcode == 3


def test_server_stops_cleanly() -> None:
    before = threading.active_count()
    with TestDNS("a.example. A 127.0.0.1", address="127.0.0.2") as dns_server:
        port = dns_server.port
        raw_query(dns_server, "a.example.", tcp=True)
        assert threading.active_count() > before
    assert threading.active_count() == before
    with pytest.raises(OSError), socket.create_connection(("127.0.0.2", port), timeout=1):
        pass


async def test_server_helpers(server: TestDNS) -> None:
    assert (await server.resolver().mx("example")).kind is Status.OK
    assert server.config(1.0) == {"nameservers": ["127.0.0.1"], "port": server.port, "timeout": 1.0}


def test_server_only_binds_loopback() -> None:
    with pytest.raises(ValueError, match="loopback"):
        TestDNS(address="0.0.0.0")
