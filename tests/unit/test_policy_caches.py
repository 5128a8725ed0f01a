"""The memoised record parsers of SPF (RFC 7208) and DMARC (RFC 7489), and the
organizational-domain cache: bounded, keyed by exact input, results unchanged."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from publicsuffixlist import PublicSuffixList

from kittiwake.net.dns import Resolver
from kittiwake.policy import dmarc, spf_record
from kittiwake.policy.spf import check_host
from kittiwake.policy.spf_macro import Macro, SpfSyntaxError

ZONE = """
macro.test.          TXT "v=spf1 exists:%{l}.allow.macro.test -all"
alice.allow.macro.test. A 127.0.0.2
same1.test.          TXT "v=spf1 ip4:192.0.2.0/24 -all"
same2.test.          TXT "v=spf1 ip4:192.0.2.0/24 -all"
"""


@pytest.fixture
def resolver() -> Iterator[Resolver]:
    from tests.support.dns import TestDNS

    with TestDNS(ZONE) as server:
        yield Resolver(server.nameservers, server.port, timeout=2.0, cache_size=0)


# -- SPF -----------------------------------------------------------------------------


def test_spf_same_text_is_parsed_once_and_shared() -> None:
    text = "v=spf1 ip4:192.0.2.0/24 include:_spf.cache-a.test -all"
    first = spf_record.parse_record(text)
    hits = spf_record._parse_cached.cache_info().hits
    assert spf_record.parse_record(text) is first
    assert spf_record._parse_cached.cache_info().hits == hits + 1
    other = spf_record.parse_record(text.replace("-all", "~all"))
    assert other is not first
    assert [m.text for m in other.mechanisms][-1] == "~all"
    assert [m.result for m in first.mechanisms] == ["pass", "pass", "fail"]


def test_spf_texts_differing_only_in_case_or_spaces_are_separate_entries() -> None:
    lower = spf_record.parse_record("v=spf1 a:x.cache-b.test -all")
    upper = spf_record.parse_record("v=spf1 A:x.cache-b.test -ALL")
    spaced = spf_record.parse_record("v=spf1  a:x.cache-b.test   -all")
    assert [m.text for m in upper.mechanisms] == ["A:x.cache-b.test", "-ALL"]
    assert [m.name for m in upper.mechanisms] == [m.name for m in lower.mechanisms]
    assert spaced == lower and spaced is not lower


def test_spf_syntax_errors_are_cached_and_raised_fresh_each_time() -> None:
    text = "v=spf1 ip4:300.1.1.1 -all"
    errors = []
    for _ in range(3):
        with pytest.raises(SpfSyntaxError, match="bad address") as info:
            spf_record.parse_record(text)
        errors.append(info.value)
    assert len({id(e) for e in errors}) == 3
    assert len({str(e) for e in errors}) == 1
    assert spf_record._parse_cached(text) == str(errors[0])


def test_spf_cache_is_bounded_and_evicted_records_parse_again() -> None:
    info = spf_record._parse_cached.cache_info()
    assert info.maxsize == spf_record.RECORD_CACHE_SIZE
    for n in range(spf_record.RECORD_CACHE_SIZE + 20):
        record = spf_record.parse_record(f"v=spf1 ip4:10.0.{n // 256}.{n % 256} -all")
        assert str(record.mechanisms[0].network) == f"10.0.{n // 256}.{n % 256}/32"
    assert spf_record._parse_cached.cache_info().currsize == spf_record.RECORD_CACHE_SIZE
    again = spf_record.parse_record("v=spf1 ip4:10.0.0.0 -all")  # evicted: parsed anew
    assert str(again.mechanisms[0].network) == "10.0.0.0/32"


def test_spf_long_records_are_not_cached() -> None:
    text = "v=spf1 " + " ".join(f"ip4:10.1.{n // 256}.{n % 256}" for n in range(200)) + " -all"
    assert len(text) > spf_record.MAX_CACHED_RECORD
    size = spf_record._parse_cached.cache_info().currsize
    first, second = spf_record.parse_record(text), spf_record.parse_record(text)
    assert first == second and first is not second
    assert len(first.mechanisms) == 201
    assert spf_record._parse_cached.cache_info().currsize == size
    with pytest.raises(SpfSyntaxError):
        spf_record.parse_record(text + " bogus")


async def test_spf_macros_are_still_expanded_per_evaluation(resolver: Resolver) -> None:
    """One cached record, different senders: %{l} expands to each one's local part."""
    record = spf_record.parse_record("v=spf1 exists:%{l}.allow.macro.test -all")
    spec = record.mechanisms[0].domain
    assert spec is not None and isinstance(spec[0], Macro)
    alice = await check_host("192.0.2.1", "macro.test", "alice@macro.test", resolver=resolver)
    bob = await check_host("192.0.2.1", "macro.test", "bob@macro.test", resolver=resolver)
    again = await check_host("192.0.2.1", "macro.test", "alice@macro.test", resolver=resolver)
    assert (alice.result, bob.result, again.result) == ("pass", "fail", "pass")
    assert spf_record.parse_record("v=spf1 exists:%{l}.allow.macro.test -all") is record


async def test_spf_identical_records_at_two_domains_keep_their_own_domain(
    resolver: Resolver,
) -> None:
    one = await check_host("192.0.2.7", "same1.test", "a@same1.test", resolver=resolver)
    two = await check_host("198.51.100.7", "same2.test", "a@same2.test", resolver=resolver)
    assert (one.result, one.domain) == ("pass", "same1.test")
    assert (two.result, two.domain, two.mechanism) == ("fail", "same2.test", "-all")


# -- DMARC ---------------------------------------------------------------------------


def test_dmarc_same_text_is_parsed_once_and_shared() -> None:
    text = "v=DMARC1; p=quarantine; pct=50; rua=mailto:d@cache-c.test"
    first = dmarc.parse_record(text)
    assert dmarc.parse_record(text) is first
    assert (first.p, first.pct, first.rua, first.text) == (
        "quarantine",
        50,
        ("mailto:d@cache-c.test",),
        text,
    )
    other = dmarc.parse_record(text.replace("pct=50", "pct=20"))
    assert (other.pct, other.text) == (20, text.replace("pct=50", "pct=20"))
    assert dmarc.parse_record(text.replace("p=quarantine", "p=Reject")).p == "reject"


def test_dmarc_errors_are_raised_fresh_each_time() -> None:
    errors = []
    for _ in range(2):
        with pytest.raises(dmarc.RecordError, match="invalid p") as info:
            dmarc.parse_record("v=DMARC1; p=cache-junk")
        errors.append(info.value)
    assert errors[0] is not errors[1] and str(errors[0]) == str(errors[1])
    with pytest.raises(dmarc.RecordError, match="v=DMARC1"):
        dmarc.parse_record("p=reject; v=DMARC1")


def test_dmarc_caches_are_bounded() -> None:
    assert dmarc._parse_cached.cache_info().maxsize == dmarc.RECORD_CACHE_SIZE
    for n in range(dmarc.RECORD_CACHE_SIZE + 10):
        assert dmarc.parse_record(f"v=DMARC1; p=none; pct={n % 101}; x={n}").pct == n % 101
    assert dmarc._parse_cached.cache_info().currsize == dmarc.RECORD_CACHE_SIZE
    assert dmarc._default_org.cache_info().maxsize == dmarc.ORG_CACHE_SIZE
    for n in range(dmarc.ORG_CACHE_SIZE + 10):
        assert dmarc.organizational_domain(f"m.h{n}.co.uk") == f"h{n}.co.uk"
    assert dmarc._default_org.cache_info().currsize == dmarc.ORG_CACHE_SIZE
    long = "v=DMARC1; p=reject; rua=" + ",".join(f"mailto:r{n}@x.test" for n in range(200))
    assert len(long) > dmarc.MAX_CACHED_RECORD
    assert dmarc.parse_record(long) is not dmarc.parse_record(long)
    assert len(dmarc.parse_record(long).rua) == 200


def test_organizational_domain_cache_is_by_name_and_default_psl_only() -> None:
    assert dmarc.organizational_domain("A.B.Example.CO.UK.") == "example.co.uk"
    assert dmarc.organizational_domain("a.b.example.co.uk") == "example.co.uk"
    assert dmarc.organizational_domain("mail.b.test") == "b.test"
    assert dmarc.organizational_domain("co.uk") == "co.uk"
    own = PublicSuffixList(io.BytesIO(b"b.test\n"))
    assert dmarc.organizational_domain("x.a.b.test", own) == "a.b.test"
    assert dmarc.organizational_domain("x.a.b.test") == "b.test"  # the default PSL again
