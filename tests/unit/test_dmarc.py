"""DMARC (RFC 7489) against a real TestDNS on loopback: discovery, alignment, policy, pct."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kittiwake.net.dns import Resolver
from kittiwake.policy.dmarc import (
    RecordError,
    evaluate,
    from_domain,
    organizational_domain,
    parse_record,
)
from tests.support.dns import TestDNS

ZONE = """
_dmarc.b.test.          IN TXT "v=DMARC1; p=reject; rua=mailto:r@b.test"
_dmarc.strict.test.     IN TXT "v=DMARC1; p=reject; adkim=s; aspf=s"
_dmarc.q.test.          IN TXT "v=DMARC1; p=quarantine"
_dmarc.monitor.test.    IN TXT "v=DMARC1; p=none"
_dmarc.sample.test.     IN TXT "v=DMARC1; p=reject; pct=0"
_dmarc.half.test.       IN TXT "v=DMARC1; p=reject; pct=50"
_dmarc.halfq.test.      IN TXT "v=DMARC1; p=quarantine; pct=50"
_dmarc.parent.test.     IN TXT "v=DMARC1; p=reject; sp=quarantine"
_dmarc.example.co.uk.   IN TXT "v=DMARC1; p=reject"
_dmarc.two.test.        IN TXT "v=DMARC1; p=reject"
_dmarc.two.test.        IN TXT "v=DMARC1; p=none"
_dmarc.junk.test.       IN TXT "v=spf1 -all"
_dmarc.bad.test.        IN TXT "v=DMARC1; p=bogus"
_dmarc.broken.test.     IN TXT "v=DMARC1; p=reject"
"""


@pytest.fixture(scope="module")
def server() -> Iterator[TestDNS]:
    with TestDNS(ZONE) as dns_server:
        dns_server.servfail("_dmarc.broken.test")
        yield dns_server


@pytest.fixture
def resolver(server: TestDNS) -> Resolver:
    return server.resolver()


async def run(resolver: Resolver, domain: str, spf=("fail", ""), dkim=(), rng=lambda: 0.5):
    return await evaluate(
        domain,
        spf_result=spf[0],
        spf_domain=spf[1],
        dkim=list(dkim),
        resolver=resolver,
        rng=rng,
    )


async def test_pass_via_spf_alignment_relaxed(resolver: Resolver) -> None:
    r = await run(resolver, "b.test", spf=("pass", "bounces.b.test"))
    assert (r.result, r.disposition, r.spf_aligned, r.dkim_aligned) == ("pass", "none", True, False)
    assert r.policy == "reject"
    assert r.record is not None and r.record.rua == ("mailto:r@b.test",)


async def test_pass_via_dkim_alignment(resolver: Resolver) -> None:
    r = await run(resolver, "b.test", dkim=[("fail", "b.test"), ("pass", "mail.b.test")])
    assert r.result == "pass" and r.dkim_aligned and r.dkim_domain == "mail.b.test"


async def test_spf_pass_for_other_domain_does_not_align(resolver: Resolver) -> None:
    r = await run(resolver, "b.test", spf=("pass", "evil.test"), dkim=[("pass", "evil.test")])
    assert (r.result, r.disposition) == ("fail", "reject")


async def test_strict_alignment_needs_exact_domain(resolver: Resolver) -> None:
    r = await run(
        resolver, "strict.test", spf=("pass", "mx.strict.test"), dkim=[("pass", "x.strict.test")]
    )
    assert (r.result, r.disposition) == ("fail", "reject")
    r = await run(resolver, "strict.test", dkim=[("pass", "STRICT.test")])
    assert r.result == "pass"


async def test_policies_quarantine_and_none(resolver: Resolver) -> None:
    q = await run(resolver, "q.test")
    assert (q.result, q.policy, q.disposition) == ("fail", "quarantine", "quarantine")
    n = await run(resolver, "monitor.test")
    assert (n.result, n.policy, n.disposition) == ("fail", "none", "none")


async def test_pct_zero_steps_reject_down_to_quarantine(resolver: Resolver) -> None:
    r = await run(resolver, "sample.test", rng=lambda: 0.0)
    assert (r.result, r.policy, r.disposition, r.pct, r.pct_applied) == (
        "fail",
        "reject",
        "quarantine",
        0,
        False,
    )


async def test_pct_sampling_uses_rng(resolver: Resolver) -> None:
    hit = await run(resolver, "half.test", rng=lambda: 0.49)
    assert (hit.pct, hit.pct_applied, hit.disposition) == (50, True, "reject")
    miss = await run(resolver, "halfq.test", rng=lambda: 0.5)
    assert (miss.pct_applied, miss.policy, miss.disposition) == (False, "quarantine", "none")
    always = await run(resolver, "q.test", rng=lambda: 0.999)  # no pct: 100
    assert always.pct_applied and always.disposition == "quarantine"


async def test_subdomain_policy_from_org_record(resolver: Resolver) -> None:
    r = await run(resolver, "mail.parent.test")
    assert r.record_domain == "parent.test" and r.org_domain == "parent.test"
    assert (r.result, r.policy, r.disposition) == ("fail", "quarantine", "quarantine")
    own = await run(resolver, "parent.test")
    assert own.policy == "reject"


async def test_org_domain_fallback_uses_psl(server: TestDNS, resolver: Resolver) -> None:
    before = len(server.queries)
    r = await run(resolver, "a.b.example.co.uk", spf=("pass", "example.co.uk"))
    asked = [q.name for q in server.queries[before:]]
    assert asked == ["_dmarc.a.b.example.co.uk.", "_dmarc.example.co.uk."]
    assert (r.result, r.org_domain, r.record_domain) == ("pass", "example.co.uk", "example.co.uk")


async def test_no_record_is_none(resolver: Resolver) -> None:
    r = await run(resolver, "nothing.test", spf=("pass", "nothing.test"))
    assert (r.result, r.disposition) == ("none", "none")
    junk = await run(resolver, "junk.test")
    assert junk.result == "none"


async def test_multiple_records_is_none(resolver: Resolver) -> None:
    r = await run(resolver, "two.test")
    assert r.result == "none" and "multiple" in r.reason


async def test_invalid_policy_is_permerror(resolver: Resolver) -> None:
    r = await run(resolver, "bad.test")
    assert (r.result, r.disposition) == ("permerror", "none")


async def test_servfail_is_temperror(resolver: Resolver) -> None:
    r = await run(resolver, "broken.test", spf=("pass", "broken.test"))
    assert (r.result, r.disposition) == ("temperror", "none")


async def test_check_result_for_authres(resolver: Resolver) -> None:
    r = await run(resolver, "q.test")
    check = r.check_result()
    assert (check.method, check.result) == ("dmarc", "fail")
    assert check.property("header.from") == "q.test"
    assert check.property("policy.dmarc") == "quarantine"


def test_parse_record_defaults_and_errors() -> None:
    rec = parse_record("v=DMARC1;p=Reject;adkim=x;pct=500;sp=none;foo=bar")
    assert (rec.p, rec.sp, rec.adkim, rec.aspf, rec.pct) == ("reject", "none", "r", "r", 100)
    assert parse_record("v=DMARC1; p=junk; rua=mailto:a@b.test").p == "none"  # §6.6.3 6.1
    with pytest.raises(RecordError):
        parse_record("v=DMARC1; p=junk")
    with pytest.raises(RecordError):
        parse_record("p=reject; v=DMARC1")


def test_organizational_domain() -> None:
    assert organizational_domain("a.b.example.co.uk") == "example.co.uk"
    assert organizational_domain("mail.b.test") == "b.test"
    assert organizational_domain("co.uk") == "co.uk"
    assert organizational_domain("Foo.Example.COM.") == "example.com"


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (b"From: Alice <alice@A.Test>\r\nTo: b@c.test\r\n\r\nbody", "a.test"),
        (b"Subject: x\r\nFROM:\r\n alice@b.test\r\n\r\n", "b.test"),
        (b'From: "Doe, John" <j@x.test>\r\n\r\n', "x.test"),
        (b"To: b@c.test\r\n\r\n", None),  # no From
        (b"From: a@x.test\r\nFrom: b@y.test\r\n\r\n", None),  # two From fields
        (b"From: a@x.test, b@y.test\r\n\r\n", None),  # two authors
        (b"From: team: a@x.test;\r\n\r\n", None),  # a group
        (b"From: nobody\r\n\r\n", None),
        (b"To: x@y.test\r\n\r\nFrom: a@x.test\r\n", None),  # in the body: not a header
    ],
)
def test_from_domain(section: bytes, expected: str | None) -> None:
    assert from_domain(section) == expected
