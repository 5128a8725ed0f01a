"""SPF's policy on fail (issue 5: "reject on fail for domains with -all only when DMARC
does not decide otherwise"), through the wire: the server, cleanup, store and checks of
``test_auth_mail_wire`` with its TestDNS zone plus domains for each case.

The last test runs every SPF mechanism of ``tests/unit/test_spf``'s zone through SMTP.
``n.test`` fails SPF (-all) and publishes DMARC p=none; ``s.test`` soft-fails (~all)
without DMARC; ``a.test`` fails SPF from outside and publishes p=reject; ``c.test``
has no record at all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

import pytest

from kittiwake.policy.dkim_sign import public_record, txt_record
from tests.e2e.test_auth_mail_wire import (
    AUTH_CHECKS,
    DNSBL,
    KEY,
    OUTSIDE,
    ZONE,
    Client,
    World,
    _world,
    auth_results,
    message,
    send,
)
from tests.support.dns import TestDNS
from tests.unit.test_spf import ZONE as SPF_ZONE

MORE = """
n.test. IN TXT "v=spf1 ip4:192.0.2.0/24 -all"
_dmarc.n.test. IN TXT "v=DMARC1; p=none"
s.test. IN TXT "v=spf1 ip4:192.0.2.0/24 ~all"
client.test. IN TXT "v=spf1 -all"
"""


@pytest.fixture
def dns() -> Iterator[TestDNS]:
    with TestDNS(ZONE + MORE) as server:
        server.add(txt_record("a.test", "sel", public_record(KEY)))
        yield server


@pytest.fixture
async def mx(tmp_path: Path, dns: TestDNS) -> AsyncIterator[World]:
    async for world in _world(tmp_path, dns, AUTH_CHECKS, DNSBL):
        yield world


async def test_fail_is_accepted_at_mail_and_refused_at_data_without_dmarc(mx: World) -> None:
    client, _ = await Client.open(mx.port, OUTSIDE)
    try:
        assert (await client.ask("EHLO client.test")).startswith(b"250")
        assert (await client.ask("MAIL FROM:<alice@a.test>")).startswith(b"250")
        assert (await client.ask("RCPT TO:<bob@b.test>")).startswith(b"250")
        assert (await client.ask("DATA")).startswith(b"354")
        final = await client.ask(message("carol@c.test") + b".\r\n")
        assert final.startswith(b"550 5.7.23 SPF fail for a.test: sender not permitted")
        # the session goes on: a second transaction from an SPF-neutral sender is fine
        assert (await client.ask("MAIL FROM:<x@c.test>")).startswith(b"250")
        assert (await client.ask("RCPT TO:<bob@b.test>")).startswith(b"250")
        assert (await client.ask("DATA")).startswith(b"354")
        assert (await client.ask(message("x@c.test") + b".\r\n")).startswith(b"250")
    finally:
        client.close()
    assert len(mx.queued) == 1


async def test_fail_with_dmarc_p_none_is_delivered(mx: World) -> None:
    reply = await send(mx.port, OUTSIDE, "x@n.test", message("x@n.test"))
    assert reply.startswith(b"250"), reply  # the domain asked DMARC for "none"
    ar = auth_results(mx.body())
    assert "spf=fail" in ar and "dmarc=fail" in ar and "policy.dmarc=none" in ar


async def test_fail_forwarded_with_aligned_dkim_passes_dmarc(mx: World) -> None:
    # a forwarder (outside a.test's SPF) relays alice's signed mail unchanged
    reply = await send(mx.port, OUTSIDE, "alice@a.test", message("alice@a.test", signed=True))
    assert reply.startswith(b"250"), reply
    ar = auth_results(mx.body())
    assert "spf=fail" in ar and "dkim=pass" in ar and "dmarc=pass" in ar


async def test_dmarc_p_reject_still_answers_5_7_1_not_spf(mx: World) -> None:
    reply = await send(mx.port, OUTSIDE, "alice@a.test", message("alice@a.test"))
    assert reply.startswith(b"550 5.7.1 Rejected by DMARC policy for a.test"), reply


async def test_softfail_is_recorded_by_default(mx: World) -> None:
    reply = await send(mx.port, OUTSIDE, "x@s.test", message("x@s.test"))
    assert reply.startswith(b"250"), reply
    assert "spf=softfail" in auth_results(mx.body())


async def test_without_a_dmarc_check_spf_fail_is_refused(tmp_path: Path, dns: TestDNS) -> None:
    # a.test publishes DMARC, but this server does not enforce it: SPF's word stands
    checks = ["spf", "dkim", "authres", "recipients"]
    async for world in _world(tmp_path, dns, checks, {}):
        reply = await send(world.port, OUTSIDE, "alice@a.test", message("alice@a.test"))
        assert reply.startswith(b"550 5.7.23"), reply


async def test_on_fail_record_and_on_softfail_reject(tmp_path: Path, dns: TestDNS) -> None:
    options: dict[str, Mapping[str, object]] = {
        **DNSBL,
        "spf": {"on_fail": "record", "on_softfail": "reject"},
    }
    async for world in _world(tmp_path, dns, AUTH_CHECKS, options):
        reply = await send(world.port, OUTSIDE, "alice@a.test", message("carol@c.test"))
        assert reply.startswith(b"250"), reply
        assert "spf=fail" in auth_results(world.body())
        client, _ = await Client.open(world.port, OUTSIDE)
        assert (await client.ask("EHLO client.test")).startswith(b"250")
        refused = await client.ask("MAIL FROM:<x@s.test>")
        assert refused.startswith(b"550 5.7.23 SPF softfail for s.test"), refused
        client.close()


async def test_helo_identity_is_checked_and_used_for_the_null_sender(mx: World) -> None:
    # EHLO client.test, whose SPF record is "-all": the null sender is checked as
    # postmaster@client.test (RFC 7208 §2.4) and fails; From c.test has no DMARC
    reply = await send(mx.port, OUTSIDE, "", message("mailer-daemon@c.test"))
    assert reply.startswith(b"550 5.7.23 SPF fail for client.test"), reply
    ok = await send(mx.port, OUTSIDE, "x@c.test", message("x@c.test"))
    assert ok.startswith(b"250"), ok
    ar = auth_results(mx.body())
    assert "spf=none" in ar and "smtp.mailfrom=x@c.test" in ar
    assert "smtp.helo" not in ar  # the HELO result is logged, A-R carries the MAIL one


@pytest.fixture(scope="module")
def spf_dns() -> Iterator[TestDNS]:
    with TestDNS(SPF_ZONE) as server:
        yield server


@pytest.mark.parametrize(
    ("domain", "ip", "expected"),
    [
        ("ip4.test", "192.0.2.77", "pass"),
        ("ip4.test", "192.0.3.1", "fail"),
        ("ip6.test", "2001:db8:1:ffff::1", "pass"),
        ("ip6.test", "2001:db8:2::1", "fail"),
        ("a.test", "192.0.2.10", "pass"),
        ("a.test", "192.0.2.11", "fail"),
        ("mx.test", "192.0.2.20", "pass"),
        ("mx.test", "192.0.2.21", "fail"),
        ("include.test", "192.0.2.5", "pass"),
        ("include.test", "198.51.100.5", "softfail"),
        ("redirect.test", "192.0.2.5", "pass"),
        ("redirect.test", "198.51.100.5", "fail"),
        ("exists.test", "192.0.2.30", "pass"),
        ("exists.test", "192.0.2.31", "fail"),
        ("appx.test", "192.0.2.3", "pass"),  # macros: %{ir}.%{v}._spf.%{d2}
        ("appx.test", "192.0.2.4", "fail"),
        ("c1.test", "192.0.2.1", "pass"),  # ten nested includes: at the limit
        ("c0.test", "192.0.2.1", "permerror"),  # eleven: over RFC 7208 §4.6.4's limit
    ],
)
async def test_each_mechanism_through_the_wire(
    tmp_path: Path, spf_dns: TestDNS, domain: str, ip: str, expected: str
) -> None:
    """MAIL FROM each test domain from a client address given by PROXY; the result is
    the one our A-R header reports (``on_fail = "record"``: nothing refused)."""
    options = {"spf": {"on_fail": "record"}}
    async for world in _world(tmp_path, spf_dns, ["spf", "authres", "recipients"], options):
        reply = await send(world.port, ip, f"alice@{domain}", message(f"alice@{domain}"))
        assert reply.startswith(b"250"), reply
        ar = auth_results(world.body())
        assert f"spf={expected} " in ar and f"smtp.mailfrom=alice@{domain}" in ar, ar
