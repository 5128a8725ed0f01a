"""delivery.mx.MxFinder against a real DNS server on loopback: RFC 5321 §5.1, RFC 7505."""

from __future__ import annotations

import collections
import random
from collections.abc import Iterator

import pytest

from kittiwake.delivery.api import Destination
from kittiwake.delivery.mx import MxFinder, Nexthop, parse_nexthop
from kittiwake.envelope import Reply
from kittiwake.net.dns import Resolver
from tests.support.dns import TestDNS

ZONE = """
$ORIGIN test.
; two MX levels, the first dual-stack
multi          MX   10 mx1
multi          MX   20 mx2
mx1            A    127.0.0.2
mx1            AAAA ::2
mx2            A    127.0.0.3
mx3            A    127.0.0.4
mxv6           AAAA ::5
; three equal MX
equal          MX   10 mx1
equal          MX   10 mx2
equal          MX   10 mx3
equal          MX   5  mxv6
; implicit MX
implicit       A    127.0.0.6
implicit       AAAA ::6
noaddr         TXT  "nothing here"
; null MX, and one broken by an extra record
nullmx         MX   0 .
halfnull       MX   0 .
halfnull       MX   10 mx2
; MX hosts that do not resolve
ghosts         MX   10 ghost1
ghosts         MX   20 ghost2
someghosts     MX   10 ghost1
someghosts     MX   20 mx2
flaky          MX   10 flakyhost
flaky          MX   20 ghost1
; MX pointing at us (127.0.0.1 / our name)
loop           MX   10 self
loop           MX   20 mx2
backup         MX   5  mx3
backup         MX   10 self
backup         MX   10 mx1
backup         MX   20 mx2
byname         MX   10 mail.kittiwake
byname         MX   20 mx2
mail.kittiwake A    127.0.0.50
primaryghost   MX   5  ghost1
primaryghost   MX   10 self
self           A    127.0.0.1
; two MX names for one address
dup            MX   10 mx1
dup            MX   20 alias
alias          CNAME mx1
numeric        MX   10 127.0.0.2
xn--bcher-kva  MX   10 mx2
"""

OWN_NAME = "mail.kittiwake.test"


@pytest.fixture
def server() -> Iterator[TestDNS]:
    with TestDNS(ZONE) as dns_server:
        yield dns_server


@pytest.fixture
def resolver(server: TestDNS) -> Resolver:
    return Resolver(server.nameservers, server.port, timeout=1.0, cache_size=0)


def finder(resolver: Resolver, **kwargs: object) -> MxFinder:
    options: dict[str, object] = {
        "own_addresses": {"127.0.0.1"},
        "own_names": {OWN_NAME},
        "rng": random.Random(1),
    }
    options.update(kwargs)
    return MxFinder(resolver, **options)  # type: ignore[arg-type]


def ips(result: list[Destination] | Reply) -> list[str]:
    assert isinstance(result, list), result
    return [d.ip for d in result]


def reply(result: list[Destination] | Reply) -> tuple[int, str | None]:
    assert isinstance(result, Reply), result
    return result.code, result.enhanced


# -- ordering ------------------------------------------------------------------------


async def test_mx_in_preference_order_ipv4_first(resolver: Resolver) -> None:
    result = await finder(resolver)("multi.test")
    assert result == [
        Destination("mx1.test", "127.0.0.2", 25, 10),
        Destination("mx1.test", "::2", 25, 10),
        Destination("mx2.test", "127.0.0.3", 25, 20),
    ]


async def test_prefer_ipv6(resolver: Resolver) -> None:
    assert ips(await finder(resolver, prefer_ipv4=False)("multi.test")) == [
        "::2",
        "127.0.0.2",
        "127.0.0.3",
    ]


async def test_domain_with_port_and_default_port(resolver: Resolver) -> None:
    result = await finder(resolver)("multi.test:2525")
    assert isinstance(result, list) and {d.port for d in result} == {2525}
    result = await finder(resolver, default_port=2626)("multi.test")
    assert isinstance(result, list) and {d.port for d in result} == {2626}


async def test_equal_preferences_are_shuffled(resolver: Resolver) -> None:
    """RFC 5321 §5.1: randomise equal preferences; the better preference stays first."""
    firsts: collections.Counter[str] = collections.Counter()
    rng = random.Random(20240501)
    mx = finder(resolver, rng=rng)
    for _ in range(150):
        result = await mx("equal.test")
        assert isinstance(result, list)
        assert result[0] == Destination("mxv6.test", "::5", 25, 5)
        assert sorted(d.host for d in result[1:]) == [
            "mx1.test",
            "mx1.test",
            "mx2.test",
            "mx3.test",
        ]
        firsts[result[1].host] += 1
    assert set(firsts) == {"mx1.test", "mx2.test", "mx3.test"}
    assert min(firsts.values()) >= 30  # expected 50 each


async def test_shuffle_is_deterministic_with_a_seeded_rng(resolver: Resolver) -> None:
    one = [await finder(resolver, rng=random.Random(7))("equal.test") for _ in range(3)]
    two = [await finder(resolver, rng=random.Random(7))("equal.test") for _ in range(3)]
    assert one == two


async def test_duplicate_addresses_are_tried_once(resolver: Resolver) -> None:
    assert ips(await finder(resolver)("dup.test")) == ["127.0.0.2", "::2"]


# -- implicit MX, null MX, negative answers --------------------------------------------


async def test_implicit_mx(resolver: Resolver) -> None:
    assert await finder(resolver)("implicit.test") == [
        Destination("implicit.test", "127.0.0.6", 25, 0),
        Destination("implicit.test", "::6", 25, 0),
    ]


async def test_implicit_mx_without_addresses_bounces(resolver: Resolver) -> None:
    assert reply(await finder(resolver)("noaddr.test")) == (550, "5.4.4")


async def test_null_mx_bounces_556(resolver: Resolver) -> None:
    result = await finder(resolver)("nullmx.test")
    assert reply(result) == (556, "5.1.10")
    assert isinstance(result, Reply) and result.is_permanent


async def test_null_mx_among_real_records_is_ignored(resolver: Resolver) -> None:
    assert ips(await finder(resolver)("halfnull.test")) == ["127.0.0.3"]


async def test_nxdomain_bounces_512(resolver: Resolver) -> None:
    result = await finder(resolver)("nonexistent.test")
    assert reply(result) == (550, "5.1.2")
    assert isinstance(result, Reply) and "not found" in str(result)


async def test_servfail_defers(server: TestDNS, resolver: Resolver) -> None:
    server.servfail("multi.test", "MX")
    result = await finder(resolver)("multi.test")
    assert reply(result) == (451, "4.4.3")
    assert isinstance(result, Reply) and result.is_transient


async def test_timeout_defers(server: TestDNS) -> None:
    server.blackhole("multi.test")
    fast = Resolver(server.nameservers, server.port, timeout=0.3, cache_size=0)
    assert reply(await finder(fast)("multi.test")) == (451, "4.4.3")


async def test_mx_hosts_that_do_not_exist_bounce(resolver: Resolver) -> None:
    assert reply(await finder(resolver)("ghosts.test")) == (550, "5.4.4")


async def test_unresolvable_mx_hosts_are_skipped(resolver: Resolver) -> None:
    assert ips(await finder(resolver)("someghosts.test")) == ["127.0.0.3"]


async def test_mx_host_tempfail_defers_when_nothing_resolves(
    server: TestDNS, resolver: Resolver
) -> None:
    server.servfail("flakyhost.test")
    assert reply(await finder(resolver)("flaky.test")) == (451, "4.4.3")


async def test_numeric_mx_host_is_not_used(resolver: Resolver) -> None:
    assert reply(await finder(resolver)("numeric.test")) == (550, "5.4.4")


async def test_idna_domain(resolver: Resolver) -> None:
    assert ips(await finder(resolver)("bücher.test")) == ["127.0.0.3"]


async def test_bad_nexthop_bounces(resolver: Resolver) -> None:
    assert reply(await finder(resolver)("bad..domain")) == (550, "5.1.2")
    assert reply(await finder(resolver)("[127.0.0.1")) == (550, "5.1.2")


# -- never relay to yourself (RFC 5321 §5.1) ---------------------------------------------


async def test_best_mx_is_us_loops_back(resolver: Resolver) -> None:
    result = await finder(resolver)("loop.test")
    assert reply(result) == (554, "5.4.6")
    assert isinstance(result, Reply) and "loops back to myself" in str(result)


async def test_better_backups_are_kept(resolver: Resolver) -> None:
    """We are MX 10: MX 5 stays; every MX 10 (mx1 too) and MX 20 go."""
    assert ips(await finder(resolver)("backup.test")) == ["127.0.0.4"]


async def test_own_name_is_us(resolver: Resolver) -> None:
    assert reply(await finder(resolver)("byname.test")) == (554, "5.4.6")
    # Without the name (and 127.0.0.50 not ours), it is an ordinary MX.
    assert ips(await finder(resolver, own_names=set())("byname.test")) == [
        "127.0.0.50",
        "127.0.0.3",
    ]


async def test_unresolvable_primary_before_us_defers(resolver: Resolver) -> None:
    assert reply(await finder(resolver)("primaryghost.test")) == (451, "4.4.4")


async def test_own_endpoint_on_the_delivery_port_is_us(resolver: Resolver) -> None:
    other = finder(resolver, own_addresses=set(), own_endpoints=[("127.0.0.1", 2525)])
    assert reply(await other("loop.test:2525")) == (554, "5.4.6")
    assert ips(await other("loop.test")) == ["127.0.0.1", "127.0.0.3"]  # port 25 is not us


async def test_wildcard_endpoint_matches_loopback(resolver: Resolver) -> None:
    wild = finder(resolver, own_addresses=set(), own_endpoints=[("0.0.0.0", 25)])
    assert reply(await wild("loop.test")) == (554, "5.4.6")


async def test_implicit_mx_to_ourselves(server: TestDNS, resolver: Resolver) -> None:
    server.add("me.test. A 127.0.0.1")
    assert reply(await finder(resolver)("me.test")) == (554, "5.4.6")


# -- [host]:port routes: no MX lookup ----------------------------------------------------


async def test_literal_ip_route_needs_no_dns(server: TestDNS, resolver: Resolver) -> None:
    assert await finder(resolver)("[127.0.0.5]:2525") == [
        Destination("127.0.0.5", "127.0.0.5", 2525, 0)
    ]
    assert await finder(resolver)("[IPv6:::1]:2525") == [Destination("::1", "::1", 2525, 0)]
    assert await finder(resolver)("[::1]") == [Destination("::1", "::1", 25, 0)]
    assert server.queries == []


async def test_literal_host_route_resolves_a_and_aaaa_only(
    server: TestDNS, resolver: Resolver
) -> None:
    result = await finder(resolver)("[mx1.test]:587")
    assert result == [
        Destination("mx1.test", "127.0.0.2", 587, 0),
        Destination("mx1.test", "::2", 587, 0),
    ]
    assert "MX" not in {q.qtype for q in server.queries}


async def test_literal_route_to_our_own_listener_loops(resolver: Resolver) -> None:
    ours = finder(resolver, own_endpoints=[("127.0.0.1", 2525)])
    assert reply(await ours("[127.0.0.1]:2525")) == (554, "5.4.6")
    # Our own address on another port (a content filter, say) is fine.
    assert ips(await ours("[127.0.0.1]:10025")) == ["127.0.0.1"]


async def test_literal_host_not_found(server: TestDNS, resolver: Resolver) -> None:
    assert reply(await finder(resolver)("[ghost.test]")) == (550, "5.4.4")
    server.servfail("flakyhost.test")
    assert reply(await finder(resolver)("[flakyhost.test]")) == (451, "4.4.3")


# -- parse_nexthop ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("example.com", Nexthop("example.com", None, mx=True)),
        ("Example.COM.:2525", Nexthop("example.com", 2525, mx=True)),
        ("[mail.example.com]", Nexthop("mail.example.com", None, mx=False)),
        ("[127.0.0.1]:25", Nexthop("127.0.0.1", 25, mx=False)),
        ("[IPv6:2001:DB8::1]:25", Nexthop("2001:db8::1", 25, mx=False)),
        ("[::ffff:127.0.0.2]", Nexthop("127.0.0.2", None, mx=False)),
        ("192.0.2.1", Nexthop("192.0.2.1", None, mx=False)),
        ("2001:db8::1", Nexthop("2001:db8::1", None, mx=False)),
    ],
)
def test_parse_nexthop(text: str, expected: Nexthop) -> None:
    assert parse_nexthop(text) == expected


def test_nexthop_text_round_trips() -> None:
    for text in ("example.com", "example.com:2525", "[127.0.0.1]:25", "[2001:db8::1]"):
        assert str(parse_nexthop(text)) == text


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "[127.0.0.1",
        "[127.0.0.1]x",
        "[127.0.0.1]:0",
        "example.com:99999",
        "a:b:c",
        "[IPv6:1.2.3.4]",
    ],
)
def test_parse_nexthop_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_nexthop(bad)
