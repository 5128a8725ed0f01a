"""check_host() / check_helo() (RFC 7208) against a real DNS server on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kittiwake.net.dns import Resolver
from kittiwake.policy.spf import SpfResult, check_helo, check_host
from tests.support.dns import TestDNS

_CHAIN = "\n".join(f'c{n}.test. TXT "v=spf1 include:c{n + 1}.test -all"' for n in range(11))
_MANY_MX = "\n".join(f"mxmany.test. MX {n} m{n}.mxmany.test." for n in range(11))

ZONE = f"""
ip4.test.          TXT  "v=spf1 ip4:192.0.2.0/24 -all"
ip6.test.          TXT  "v=spf1 ip6:2001:db8:1::/48 -all"
a.test.            TXT  "v=spf1 a -all"
a.test.            A    192.0.2.10
a.test.            AAAA 2001:db8::10
acidr.test.        TXT  "v=spf1 a:host.acidr.test/24//64 -all"
host.acidr.test.   A    198.51.100.1
host.acidr.test.   AAAA 2001:db8:5::1
mx.test.           TXT  "v=spf1 mx -all"
mx.test.           MX   10 mail.mx.test.
mx.test.           MX   20 .
mail.mx.test.      A    192.0.2.20
mxmany.test.       TXT  "v=spf1 mx -all"
{_MANY_MX}
include.test.      TXT  "v=spf1 include:ip4.test ~all"
redirect.test.     TXT  "v=spf1 redirect=ip4.test"
redirnone.test.    TXT  "v=spf1 redirect=none.test"
exists.test.       TXT  "v=spf1 exists:%{{i}}.list.exists.test -all"
192.0.2.30.list.exists.test. A 127.0.0.2
appx.test.         TXT  "v=spf1 exists:%{{ir}}.%{{v}}._spf.%{{d2}} -all"
3.2.0.192.in-addr._spf.appx.test. A 127.0.0.2
ptr.test.          TXT  "v=spf1 ptr -all"
host.ptr.test.     A    192.0.2.40
liar.ptr.test.     A    192.0.2.99
40.2.0.192.in-addr.arpa. PTR host.ptr.test.
41.2.0.192.in-addr.arpa. PTR liar.ptr.test.
pmacro.test.       TXT  "v=spf1 exists:%{{p}}.ok.pmacro.test -all"
host.ptr.test.ok.pmacro.test. A 127.0.0.2
softfail.test.     TXT  "v=spf1 ~all"
neutral.test.      TXT  "v=spf1 ?all"
default.test.      TXT  "v=spf1 ip4:10.0.0.1"
none.test.         A    192.0.2.1
notspf.test.       TXT  "hello world"
notspf.test.       TXT  "v=spf10 -all"
two.test.          TXT  "v=spf1 -all"
two.test.          TXT  "v=spf1 +all"
split.test.        TXT  "v=spf1 ip4:192.0.2.0/24" " -all"
bad.test.          TXT  "v=spf1 +all ip4:300.1.1.1"
{_CHAIN}
c11.test.          TXT  "v=spf1 +all"
void2.test.        TXT  "v=spf1 a:nx1.void.test a:nx2.void.test -all"
void3.test.        TXT  "v=spf1 a:nx1.void.test mx:nx2.void.test exists:nx3.void.test -all"
broken.test.       TXT  "v=spf1 -all"
incbroken.test.    TXT  "v=spf1 ip4:203.0.113.1 include:broken.test -all"
incnone.test.      TXT  "v=spf1 include:none.test -all"
exp.test.          TXT  "v=spf1 ip4:192.0.2.1 -all exp=why.exp.test"
why.exp.test.      TXT  "%{{i}} is not one of %{{d}}'s designated mail servers (%{{l}})"
expbad.test.       TXT  "v=spf1 -all exp=nowhere.exp.test"
helo.test.         TXT  "v=spf1 a -all"
helo.test.         A    192.0.2.50
"""


@pytest.fixture
def server() -> Iterator[TestDNS]:
    with TestDNS(ZONE) as dns_server:
        yield dns_server


@pytest.fixture
def resolver(server: TestDNS) -> Resolver:
    return server.resolver()


async def _spf(resolver: Resolver, ip: str, domain: str, local: str = "alice") -> SpfResult:
    return await check_host(ip, domain, f"{local}@{domain}", resolver=resolver)


@pytest.mark.parametrize(
    ("domain", "ip", "expected"),
    [
        ("ip4.test", "192.0.2.77", "pass"),
        ("ip4.test", "192.0.3.1", "fail"),
        ("ip4.test", "::ffff:192.0.2.77", "pass"),  # IPv4-mapped: checked as IPv4
        ("ip4.test", "2001:db8::1", "fail"),
        ("ip6.test", "2001:db8:1:ffff::1", "pass"),
        ("ip6.test", "2001:db8:2::1", "fail"),
        ("ip6.test", "192.0.2.1", "fail"),
        ("a.test", "192.0.2.10", "pass"),
        ("a.test", "192.0.2.11", "fail"),
        ("a.test", "2001:db8::10", "pass"),
        ("a.test", "2001:db8::11", "fail"),
        ("acidr.test", "198.51.100.200", "pass"),
        ("acidr.test", "198.51.101.1", "fail"),
        ("acidr.test", "2001:db8:5:0:ffff::1", "pass"),
        ("acidr.test", "2001:db8:6::1", "fail"),
        ("mx.test", "192.0.2.20", "pass"),
        ("mx.test", "192.0.2.21", "fail"),
        ("include.test", "192.0.2.5", "pass"),
        ("include.test", "198.51.100.5", "softfail"),  # include's fail is "no match"
        ("redirect.test", "192.0.2.5", "pass"),
        ("redirect.test", "198.51.100.5", "fail"),
        ("exists.test", "192.0.2.30", "pass"),
        ("exists.test", "192.0.2.31", "fail"),
        ("appx.test", "192.0.2.3", "pass"),  # RFC 7208 §7.4 %{ir}.%{v}._spf.%{d2}
        ("appx.test", "192.0.2.4", "fail"),
        ("ptr.test", "192.0.2.40", "pass"),
        ("ptr.test", "192.0.2.41", "fail"),  # PTR name does not resolve back
        ("ptr.test", "192.0.2.42", "fail"),  # no PTR at all
        ("pmacro.test", "192.0.2.40", "pass"),
        ("pmacro.test", "192.0.2.41", "fail"),  # %{p} = "unknown"
        ("softfail.test", "192.0.2.1", "softfail"),
        ("neutral.test", "192.0.2.1", "neutral"),
        ("default.test", "192.0.2.1", "neutral"),  # no match, no redirect: §4.7
        ("split.test", "192.0.2.1", "pass"),  # strings of one TXT record are joined
        ("none.test", "192.0.2.1", "none"),
        ("nxdomain.test", "192.0.2.1", "none"),
        ("notspf.test", "192.0.2.1", "none"),
        ("localhost", "192.0.2.1", "none"),  # single label: §4.3
        ("two.test", "192.0.2.1", "permerror"),
        ("bad.test", "192.0.2.1", "permerror"),
        ("incnone.test", "192.0.2.1", "permerror"),
        ("redirnone.test", "192.0.2.1", "permerror"),
        ("mxmany.test", "192.0.2.1", "permerror"),
    ],
)
async def test_results(resolver: Resolver, domain: str, ip: str, expected: str) -> None:
    result = await _spf(resolver, ip, domain)
    assert result.result == expected, result


async def test_result_fields(resolver: Resolver) -> None:
    result = await _spf(resolver, "192.0.2.77", "Include.TEST")
    assert result == SpfResult("pass", "", "include:ip4.test", "include.test", 1, result.reason)
    fail = await _spf(resolver, "198.51.100.1", "ip4.test")
    assert (fail.result, fail.mechanism, fail.lookups, fail.explanation) == ("fail", "-all", 0, "")


async def test_lookup_limit(resolver: Resolver) -> None:
    ten = await _spf(resolver, "192.0.2.1", "c1.test")  # c1 → … → c11: 10 includes
    assert (ten.result, ten.lookups) == ("pass", 10)
    eleven = await _spf(resolver, "192.0.2.1", "c0.test")
    assert eleven.result == "permerror"
    assert "more than 10 DNS lookups" in eleven.reason
    assert (await check_host("192.0.2.1", "c1.test", "x@c1.test", resolver=resolver,
                             lookup_limit=9)).result == "permerror"  # fmt: skip


async def test_void_lookup_limit(resolver: Resolver) -> None:
    assert (await _spf(resolver, "192.0.2.1", "void2.test")).result == "fail"
    three = await _spf(resolver, "192.0.2.1", "void3.test")
    assert three.result == "permerror"
    assert "void" in three.reason


async def test_servfail_is_temperror(server: TestDNS, resolver: Resolver) -> None:
    server.servfail("broken.test", "TXT")
    assert (await _spf(resolver, "192.0.2.1", "broken.test")).result == "temperror"
    # through an include: only when the include is reached
    assert (await _spf(resolver, "192.0.2.1", "incbroken.test")).result == "temperror"
    assert (await _spf(resolver, "203.0.113.1", "incbroken.test")).result == "pass"
    server.servfail("a.test", "A")
    server.servfail("a.test", "AAAA")
    assert (await _spf(resolver, "192.0.2.10", "a.test")).result == "temperror"


async def test_timeout_is_temperror(server: TestDNS) -> None:
    server.blackhole("a.test")
    result = await check_host(
        "192.0.2.10", "a.test", "x@a.test", resolver=server.resolver(5.0), timeout=0.3
    )
    assert result.result == "temperror"


async def test_explanation(resolver: Resolver) -> None:
    result = await check_host("192.0.2.99", "exp.test", "strong-bad@exp.test", resolver=resolver)
    assert result.result == "fail"
    assert result.explanation == (
        "192.0.2.99 is not one of exp.test's designated mail servers (strong-bad)"
    )
    # no explanation on pass, and a missing exp record leaves it empty (§6.2)
    assert (await _spf(resolver, "192.0.2.1", "exp.test")).explanation == ""
    missing = await _spf(resolver, "192.0.2.1", "expbad.test")
    assert (missing.result, missing.explanation) == ("fail", "")


async def test_sender_without_local_part_is_postmaster(resolver: Resolver) -> None:
    result = await check_host("192.0.2.99", "exp.test", "exp.test", resolver=resolver)
    assert result.explanation.endswith("(postmaster)")


async def test_only_our_nameserver_is_asked(server: TestDNS, resolver: Resolver) -> None:
    await _spf(resolver, "192.0.2.20", "mx.test")
    asked = {(q.name, q.qtype) for q in server.queries}
    assert ("mx.test.", "TXT") in asked
    assert ("mx.test.", "MX") in asked
    assert ("mail.mx.test.", "A") in asked


async def test_check_helo(resolver: Resolver) -> None:
    assert (await check_helo("192.0.2.50", "helo.test", resolver)).result == "pass"
    assert (await check_helo("192.0.2.51", "helo.test", resolver)).result == "fail"
    assert (await check_helo("192.0.2.50", "[192.0.2.50]", resolver)).result == "none"
    assert (await check_helo("192.0.2.50", "localhost", resolver)).result == "none"


async def test_bad_client_ip_is_a_caller_bug(resolver: Resolver) -> None:
    with pytest.raises(ValueError):
        await check_host("not-an-ip", "a.test", "x@a.test", resolver=resolver)
