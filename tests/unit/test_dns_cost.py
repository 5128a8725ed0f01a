"""net.dns: the memoised name conversion and single-flight lookups (tests.support.dns)."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Iterator
from typing import Any

import dns.exception
import dns.name
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kittiwake.net import dns as kdns
from kittiwake.net.dns import NAME_CACHE_SIZE, Resolver, Status, to_ascii
from tests.support.dns import TestDNS

ZONE = """
$ORIGIN example.
spf          TXT  "v=spf1 -all"
mx1          A    127.0.0.2
"""


@pytest.fixture
def server() -> Iterator[TestDNS]:
    with TestDNS(ZONE) as dns_server:
        yield dns_server


@pytest.fixture
def resolver(server: TestDNS) -> Resolver:
    # No answer cache: every lookup that is not coalesced reaches the server.
    return Resolver(server.nameservers, server.port, timeout=5.0, cache_size=0)


def _asked(server: TestDNS, name: str, qtype: str = "TXT") -> int:
    return sum(1 for q in server.queries if q.name == name and q.qtype == qtype)


async def _until(condition: Any, timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never became true"
        await asyncio.sleep(0.01)


# -- to_ascii: the same answers as the unmemoised IDNA path -----------------------------


def _reference(domain: str) -> str:
    """to_ascii as it was before the fast path and the cache (the oracle)."""
    text = domain[:-1] if domain.endswith(".") else domain
    if not text or text.startswith(".") or ".." in text or "\\" in text:
        raise ValueError(domain)
    try:
        name = dns.name.from_text(text, origin=dns.name.root, idna_codec=kdns._IDNA)
        ascii_name = name.to_text(omit_final_dot=True).lower()
    except (dns.exception.DNSException, UnicodeError):
        raise ValueError(domain) from None
    for label in ascii_name.split("."):
        if not kdns._LABEL.match(label):
            raise ValueError(domain)
    return ascii_name


def _outcome(func: Any, domain: str) -> str:
    try:
        return str(func(domain))
    except ValueError:
        return "<error>"


@given(st.text(alphabet="aZ09-_.*@ \\üß\u212a\u3002", max_size=30))
def test_to_ascii_matches_the_idna_path(domain: str) -> None:
    assert _outcome(to_ascii, domain) == _outcome(_reference, domain)
    assert _outcome(to_ascii, domain) == _outcome(_reference, domain)  # now from the cache


@pytest.mark.parametrize(
    "domain",
    [
        "\u212aexample.com",  # KELVIN SIGN: lower() would make it ASCII "k"
        "a..",
        "@",
        "A" * 63 + ".com",
        "a" * 64 + ".com",
        ".".join(["a" * 61] * 4),  # 247 characters
        ".".join(["a" * 63] * 4),  # 255 characters: too long
        ".".join(["a" * 62] * 4) + "a",  # 252
        "xn--bcher-kva.Example.",
        "_dmarc.EXAMPLE.org",
        "-a.com",
        "a_.com",
    ],
)
def test_to_ascii_edge_cases_match(domain: str) -> None:
    assert _outcome(to_ascii, domain) == _outcome(_reference, domain)


def test_name_caches_are_bounded_and_errors_are_not_cached() -> None:
    for cached in (kdns._to_ascii_cached, kdns._query_name):
        assert cached.cache_info().maxsize == NAME_CACHE_SIZE
    for n in range(NAME_CACHE_SIZE + 50):
        name, text = kdns._query_name(f"Host{n}.Example.")
        assert (name, text) == (dns.name.from_text(f"host{n}.example."), f"host{n}.example.")
    assert kdns._to_ascii_cached.cache_info().currsize == NAME_CACHE_SIZE
    assert kdns._query_name.cache_info().currsize == NAME_CACHE_SIZE
    assert to_ascii("Host0.Example.") == "host0.example"  # evicted, converted again
    before = kdns._to_ascii_cached.cache_info().currsize
    for _ in range(2):
        with pytest.raises(ValueError, match="not a domain name"):
            to_ascii("bad name.example")
    assert kdns._to_ascii_cached.cache_info().currsize == before


def test_cached_names_differ_by_input() -> None:
    assert to_ascii("bücher.example") == "xn--bcher-kva.example"
    assert to_ascii("Bücher.example") == "xn--bcher-kva.example"
    assert to_ascii("bucher.example") == "bucher.example"
    assert kdns._query_name("a.example")[0] != kdns._query_name("b.example")[0]


# -- single flight -----------------------------------------------------------------------


async def test_concurrent_identical_lookups_send_one_query(
    server: TestDNS, resolver: Resolver
) -> None:
    results = await asyncio.gather(*(resolver.txt("spf.example") for _ in range(20)))
    assert {r.texts for r in results} == {("v=spf1 -all",)}
    assert _asked(server, "spf.example.") == 1
    assert resolver.in_flight == 0
    assert (await resolver.txt("SPF.example.")).texts == ("v=spf1 -all",)
    assert _asked(server, "spf.example.") == 2  # nothing stale left behind


async def test_different_names_or_types_are_not_coalesced(
    server: TestDNS, resolver: Resolver
) -> None:
    txt, a, other = await asyncio.gather(
        resolver.txt("mx1.example"), resolver.addresses("mx1.example"), resolver.txt("spf.example")
    )
    assert (txt.kind, a.ipv4, other.kind) == (Status.NODATA, ("127.0.0.2",), Status.OK)
    assert _asked(server, "mx1.example.", "TXT") == 1
    assert _asked(server, "mx1.example.", "A") == 1
    assert _asked(server, "mx1.example.", "AAAA") == 1


async def test_a_timeout_reaches_every_asker(server: TestDNS) -> None:
    server.blackhole("slow.example")
    r = Resolver(server.nameservers, server.port, timeout=0.3, cache_size=0)
    results = await asyncio.gather(*(r.mx("slow.example") for _ in range(5)))
    assert {(res.kind, "timed out" in res.error) for res in results} == {(Status.TEMPFAIL, True)}
    assert _asked(server, "slow.example.", "MX") == 1
    assert r.in_flight == 0


async def test_an_exception_reaches_every_asker(
    resolver: Resolver, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = asyncio.Event()
    calls = 0

    async def failing(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        await release.wait()
        raise RuntimeError("boom")

    monkeypatch.setattr(resolver._resolver, "resolve", failing)
    tasks = [asyncio.create_task(resolver.txt("spf.example")) for _ in range(5)]
    await _until(lambda: calls == 1)
    await asyncio.sleep(0.01)
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) and str(r) == "boom" for r in results)
    assert calls == 1
    assert resolver.in_flight == 0


async def test_first_asker_cancelled_the_others_still_get_an_answer(
    server: TestDNS, resolver: Resolver
) -> None:
    server.blackhole("spf.example")
    first = asyncio.create_task(resolver.txt("spf.example"))
    await _until(lambda: _asked(server, "spf.example.") == 1)
    others = [asyncio.create_task(resolver.txt("spf.example")) for _ in range(3)]
    await asyncio.sleep(0.05)
    assert resolver.in_flight == 1
    server.clear_faults()
    first.cancel()
    results = await asyncio.gather(*others)
    assert [r.texts for r in results] == [("v=spf1 -all",)] * 3
    with pytest.raises(asyncio.CancelledError):
        await first
    assert _asked(server, "spf.example.") == 2  # one waiter took over, the rest joined it
    assert resolver.in_flight == 0


async def test_a_cancelled_waiter_does_not_disturb_the_lookup(
    resolver: Resolver, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = asyncio.Event()
    real = resolver._resolver.resolve
    calls = 0

    async def slow(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        await release.wait()
        return await real(*args, **kwargs)

    monkeypatch.setattr(resolver._resolver, "resolve", slow)
    first, waiter, other = (asyncio.create_task(resolver.txt("spf.example")) for _ in range(3))
    await _until(lambda: calls == 1)
    await asyncio.sleep(0.01)
    waiter.cancel()
    await asyncio.sleep(0.01)
    release.set()
    assert (await first).texts == (await other).texts == ("v=spf1 -all",)
    assert waiter.cancelled()
    assert calls == 1
    assert resolver.in_flight == 0


async def test_a_lone_cancelled_lookup_leaves_nothing_behind(
    server: TestDNS, resolver: Resolver, caplog: pytest.LogCaptureFixture
) -> None:
    server.blackhole("spf.example")
    task = asyncio.create_task(resolver.txt("spf.example"))
    await _until(lambda: _asked(server, "spf.example.") == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert resolver.in_flight == 0
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        gc.collect()
        await asyncio.sleep(0)
    assert "never retrieved" not in caplog.text
    server.clear_faults()
    assert (await resolver.txt("spf.example")).kind is Status.OK


async def test_ptr_lookups_are_coalesced_too(server: TestDNS, resolver: Resolver) -> None:
    results = await asyncio.gather(*(resolver.ptr("127.0.0.9") for _ in range(4)))
    assert {r.kind for r in results} == {Status.NXDOMAIN}
    assert _asked(server, "9.0.0.127.in-addr.arpa.", "PTR") == 1
