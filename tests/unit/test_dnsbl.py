"""policy.dnsbl against a real DNS server on loopback (tests.support.dns.TestDNS)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from kittiwake.envelope import SessionInfo
from kittiwake.policy.chain import PolicyChain
from kittiwake.policy.dnsbl import (
    DNSWL_MARK,
    Dnsbl,
    ZoneConfig,
    dnswl_listed,
    query_name,
)
from kittiwake.policy.results import Results, reset_current, set_current
from kittiwake.policy.verdict import Action
from tests.support.dns import TestDNS

V6 = "2001:db8::1:2"
V6_NAME = query_name(V6, "bl.test")
assert V6_NAME is not None

ZONE = f"""
2.2.0.192.bl.test.    A   127.0.0.2
2.2.0.192.bl.test.    TXT "Listed: see https://bl.test/q/192.0.2.2"
{V6_NAME}.            A   127.0.0.4
{V6_NAME}.            TXT "v6 spammer"
3.2.0.192.bl.test.    A   127.0.0.9
4.2.0.192.bl.test.    A   127.0.0.10
5.2.0.192.multi.test. A   127.0.0.6
7.2.0.192.bl.test.    A   127.0.0.2
7.2.0.192.wl.test.    A   127.0.10.2
8.2.0.192.bl.test.    A   127.255.255.254
9.2.0.192.bl.test.    A   127.0.0.2
9.2.0.192.bl.test.    TXT "bad\r\n250 fake\x01 reply"
"""

BL = ZoneConfig(
    "bl.test", "block", {"127.0.0.2": "spam source", "127.0.0.4": "v6", "127.0.0.10": "pbl"}
)
WL = ZoneConfig("wl.test", "allow", {"127.0.10.2": "trusted"})
MULTI = ZoneConfig("multi.test", "block", {"&4": "phishing"})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server() -> Iterator[TestDNS]:
    with TestDNS(ZONE) as dns_server:
        yield dns_server


def session(ip: str) -> SessionInfo:
    return SessionInfo(ip, 40000, "127.0.0.1", 25)


def make(server: TestDNS, *zones: ZoneConfig, clock: Clock | None = None) -> Dnsbl:
    return Dnsbl(zones or (BL,), server.resolver(), clock=clock or Clock())


def test_query_names_rfc5782() -> None:
    assert query_name("192.0.2.99", "bl.test") == "99.2.0.192.bl.test"
    assert query_name("::ffff:192.0.2.99", "bl.test") == "99.2.0.192.bl.test"
    # RFC 5782 §2.4 example
    assert (
        query_name("2001:db8:1:2:3:4:567:89ab", "ugly.example.com")
        == "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ugly.example.com"
    )
    assert query_name("not-an-ip", "bl.test") is None


async def test_listed_ipv4_is_rejected_with_the_list_text(server: TestDNS) -> None:
    verdict = await make(server).connect(session("192.0.2.2"))
    assert verdict.action is Action.REJECT
    assert verdict.reply is not None
    assert verdict.reply.code == 554 and verdict.reply.enhanced == "5.7.1"
    assert verdict.reply.text == (
        "Service unavailable; client [192.0.2.2] blocked using bl.test; "
        "Listed: see https://bl.test/q/192.0.2.2"
    )
    assert "spam source" in verdict.reason


async def test_listed_ipv6_uses_nibble_names(server: TestDNS) -> None:
    check = make(server)
    verdict = await check.connect(session(V6))
    assert verdict.action is Action.REJECT
    assert verdict.reply is not None
    assert verdict.reply.text == (
        f"Service unavailable; client [{V6}] blocked using bl.test; v6 spammer"
    )
    assert any(q.name == f"{V6_NAME}." and q.qtype == "A" for q in server.queries)


async def test_not_listed_continues(server: TestDNS) -> None:
    s = session("192.0.2.100")
    verdict = await make(server).connect(s)
    assert verdict.action is Action.CONTINUE
    assert s.extra["dnsbl"] == "none"
    result = await make(server).lookup("192.0.2.100")
    assert (result.method, result.result, result.listings) == ("dnsbl", "none", ())


async def test_only_configured_return_codes_count(server: TestDNS) -> None:
    check = make(server)
    # 127.0.0.9 is not configured; 127.255.255.254 is a list's error code
    assert (await check.connect(session("192.0.2.3"))).action is Action.CONTINUE
    assert (await check.connect(session("192.0.2.8"))).action is Action.CONTINUE
    result = await check.lookup("192.0.2.4")  # 127.0.0.10 is configured
    assert result.result == "fail" and result.reason == "bl.test"
    assert [(x.code, x.meaning, x.text) for x in result.listings] == [("127.0.0.10", "pbl", "")]
    verdict = await check.connect(session("192.0.2.4"))
    assert verdict.reply is not None
    assert verdict.reply.text == "Service unavailable; client [192.0.2.4] blocked using bl.test"


async def test_bitmask_codes(server: TestDNS) -> None:
    check = make(server, MULTI)
    assert (await check.lookup("192.0.2.5")).result == "fail"  # 6 & 4
    other = make(server, ZoneConfig("multi.test", "block", {"&0.0.0.8": "x"}))
    assert (await other.lookup("192.0.2.5")).result == "none"  # 6 & 8 == 0


async def test_dnswl_overrides_and_marks_the_session(server: TestDNS) -> None:
    check = make(server, BL, WL)
    s = session("192.0.2.7")
    verdict = await check.connect(s)
    assert verdict.action is Action.CONTINUE
    assert s.extra[DNSWL_MARK] == "wl.test"
    assert dnswl_listed(s)
    result = await check.lookup("192.0.2.7")
    assert result.result == "pass" and result.reason == "wl.test"
    assert {x.kind for x in result.listings} == {"allow", "block"}
    assert not dnswl_listed(session("192.0.2.7"))


async def test_results_are_cached_per_ip(server: TestDNS) -> None:
    clock = Clock()
    check = make(server, clock=clock)
    await check.connect(session("192.0.2.2"))
    asked = len(server.queries)
    assert asked > 0
    verdict = await check.connect(session("192.0.2.2"))
    assert verdict.action is Action.REJECT
    assert len(server.queries) == asked  # the second connection asked nothing
    clock.now += 301  # cache_ttl is 300
    await check.connect(session("192.0.2.2"))
    assert len(server.queries) > asked


async def test_servfail_fails_open_and_is_not_cached(
    server: TestDNS, caplog: pytest.LogCaptureFixture
) -> None:
    server.servfail("2.2.0.192.bl.test")
    check = make(server)
    verdict = await check.connect(session("192.0.2.2"))
    assert verdict.action is Action.CONTINUE
    result = await check.lookup("192.0.2.2")
    assert result.result == "temperror" and result.errors == ("bl.test",)
    assert any("failed" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    server.clear_faults()
    assert (await check.connect(session("192.0.2.2"))).action is Action.REJECT


async def test_list_text_is_sanitised(server: TestDNS) -> None:
    verdict = await make(server).connect(session("192.0.2.9"))
    assert verdict.reply is not None
    text = verdict.reply.text
    assert isinstance(text, str)
    assert all(" " <= c <= "~" for c in text)
    assert b"\r\n250" not in verdict.reply.to_bytes()


async def test_weights_and_threshold(server: TestDNS) -> None:
    light = ZoneConfig("bl.test", "block", {"127.0.0.2": "spam"}, weight=0.5)
    check = Dnsbl([light], server.resolver(), clock=Clock(), threshold=1.0)
    result = await check.lookup("192.0.2.2")
    assert result.result == "none" and len(result.listings) == 1


async def test_through_the_policy_chain(server: TestDNS) -> None:
    chain = PolicyChain([make(server)])
    assert chain.describe()[0] == "connect: dnsbl"
    assert (await chain.connect(session("192.0.2.2"))).action is Action.REJECT
    assert (await chain.connect(session("unix:/x"))).action is Action.CONTINUE


def test_zone_config_is_validated() -> None:
    with pytest.raises(ValueError):
        ZoneConfig("bl.test", "block", {"10.0.0.2": "x"})
    with pytest.raises(ValueError):
        ZoneConfig("bl.test", "block", {"&0": "x"})
    with pytest.raises(ValueError):
        ZoneConfig("bl.test", "block", {})
    with pytest.raises(ValueError):
        ZoneConfig("bad zone!", "block")
    assert ZoneConfig("BL.Test.").zone == "bl.test"


async def test_concurrent_connections_share_one_lookup(server: TestDNS) -> None:
    check = make(server)
    verdicts = await asyncio.gather(*(check.connect(session("192.0.2.2")) for _ in range(5)))
    assert {v.action for v in verdicts} == {Action.REJECT}
    a_queries = [q for q in server.queries if q.name == "2.2.0.192.bl.test." and q.qtype == "A"]
    assert len(a_queries) == 1


async def test_results_are_recorded_for_later_checks(server: TestDNS) -> None:
    chain = PolicyChain([make(server, BL, WL)])
    blocked, allowed = Results(), Results()
    await chain.connect(session("192.0.2.2"), results=blocked)
    found = blocked.get("dnsbl")
    assert found is not None and (found.result, found.reason) == ("fail", "bl.test")
    assert found.property("policy.listed") == "bl.test=127.0.0.2"
    await chain.connect(session("192.0.2.7"), results=allowed)
    assert str(allowed.get("dnsbl")).startswith("dnsbl=pass reason='wl.test'")
    token = set_current(allowed)  # what the chain does around a later stage
    try:
        assert dnswl_listed(session("192.0.2.7"))  # no session mark: read from the results
    finally:
        reset_current(token)
