"""DKIM sign + verify against a real DNS server on loopback (tests/support/dns.py).

Signatures made by kittiwake.policy.dkim_sign are checked by our verifier and by dkimpy's
own ``dkim.verify`` (with a dnsfunc reading the same TestDNS zone through dnslib).
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator

import dkim
import pytest

from kittiwake.policy.dkim import verify
from kittiwake.policy.dkim_sign import (
    DkimKey,
    DkimSigner,
    algorithm_of,
    generate_key,
    public_record,
    sign,
    txt_record,
)
from tests.support.dns import TestDNS, dkimpy_dnsfunc

MESSAGE = (
    b"From: Alice <alice@a.test>\r\n"
    b"To: bob@b.test\r\n"
    b"Subject: greetings\r\n"
    b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    b"Message-ID: <1@a.test>\r\n"
    b"\r\n"
    b"Hello Bob,\r\n"
    b"\r\n"
    b"how are   you?\r\n"
)

KEYS = {"rsa": generate_key("rsa", 2048), "ed25519": generate_key("ed25519")}


@pytest.fixture
def dns() -> Iterator[TestDNS]:
    with TestDNS() as server:
        yield server


def publish(dns: TestDNS, pem: bytes, domain: str = "a.test", selector: str = "sel") -> None:
    dns.add(txt_record(domain, selector, public_record(pem)))


def signed(kind: str, message: bytes = MESSAGE, selector: str = "sel") -> bytes:
    pem = KEYS[kind]
    header = sign(
        message,
        domain="a.test",
        selector=selector,
        private_key_pem=pem,
        algorithm=algorithm_of(pem),
    )
    return header + message


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
async def test_sign_then_verify_pass_ours_and_dkimpy(dns: TestDNS, kind: str) -> None:
    publish(dns, KEYS[kind])
    message = signed(kind)
    [result] = await verify(message, resolver=dns.resolver())
    assert result.result == "pass", result
    assert result.domain == "a.test" and result.selector == "sel"
    assert result.algorithm == ("rsa-sha256" if kind == "rsa" else "ed25519-sha256")
    assert b"c=relaxed/relaxed" in message
    assert dkim.verify(message, dnsfunc=dkimpy_dnsfunc(dns)) is True
    # Relaxed canonicalization: whitespace changes in transit do not matter.
    reflowed = message.replace(b"how are   you?", b"how are you?  ").replace(
        b"Subject: greetings", b"subject:   greetings"
    )
    [again] = await verify(reflowed, resolver=dns.resolver())
    assert again.result == "pass", again
    # A file object works as well as bytes.
    [from_file] = await verify(io.BytesIO(message), resolver=dns.resolver())
    assert from_file.result == "pass"


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
async def test_tampered_body_fails(dns: TestDNS, kind: str) -> None:
    publish(dns, KEYS[kind])
    message = signed(kind).replace(b"Hello Bob", b"Hello Eve")
    [result] = await verify(message, resolver=dns.resolver())
    assert result.result == "fail" and "body hash" in result.reason
    assert dkim.verify(message, dnsfunc=dkimpy_dnsfunc(dns)) is False


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
async def test_tampered_signed_header_fails(dns: TestDNS, kind: str) -> None:
    publish(dns, KEYS[kind])
    message = signed(kind).replace(b"Subject: greetings", b"Subject: pay now")
    [result] = await verify(message, resolver=dns.resolver())
    assert result.result == "fail" and result.reason == "signature did not verify"
    assert dkim.verify(message, dnsfunc=dkimpy_dnsfunc(dns)) is False


async def test_added_second_from_breaks_signature(dns: TestDNS) -> None:
    publish(dns, KEYS["rsa"])
    message = b"From: mallory@evil.test\r\n" + signed("rsa")
    [result] = await verify(message, resolver=dns.resolver())
    assert result.result == "fail"


async def test_missing_key_is_permerror(dns: TestDNS) -> None:
    dns.add("other.a.test. IN TXT x")
    [result] = await verify(signed("rsa"), resolver=dns.resolver())
    assert result.result == "permerror" and "no key" in result.reason


async def test_revoked_and_mismatched_keys_are_permerror(dns: TestDNS) -> None:
    dns.add('sel._domainkey.a.test. IN TXT "v=DKIM1; k=rsa; p="')
    [revoked] = await verify(signed("rsa"), resolver=dns.resolver())
    assert revoked.result == "permerror" and "revoked" in revoked.reason
    dns.set_zone(txt_record("a.test", "sel", public_record(KEYS["ed25519"])))
    [mismatch] = await verify(signed("rsa"), resolver=dns.resolver())
    assert mismatch.result == "permerror" and "does not match" in mismatch.reason


async def test_dns_servfail_is_temperror(dns: TestDNS) -> None:
    publish(dns, KEYS["rsa"])
    dns.servfail("sel._domainkey.a.test")
    [result] = await verify(signed("rsa"), resolver=dns.resolver())
    assert result.result == "temperror"


async def test_no_signature_is_none(dns: TestDNS) -> None:
    assert [r.result for r in await verify(MESSAGE, resolver=dns.resolver())] == ["none"]
    assert dns.queries == []


async def test_two_signatures_each_get_a_result(dns: TestDNS) -> None:
    publish(dns, KEYS["rsa"], selector="r")
    publish(dns, KEYS["ed25519"], selector="e")
    message = signed("ed25519", signed("rsa", selector="r"), selector="e")
    results = await verify(message, resolver=dns.resolver())
    assert [(r.selector, r.result) for r in results] == [("e", "pass"), ("r", "pass")]
    results = await verify(message + b"tail\r\n", resolver=dns.resolver())
    assert [r.result for r in results] == ["fail", "fail"]


async def test_expired_and_future_signatures_are_policy(dns: TestDNS) -> None:
    publish(dns, KEYS["rsa"])
    message = signed("rsa")
    later = time.time() + 30 * 86400
    [ok] = await verify(message, resolver=dns.resolver(), now=later)
    assert ok.result == "pass"  # no x=: never expires
    [future] = await verify(message, resolver=dns.resolver(), now=time.time() - 86400)
    assert future.result == "policy" and "future" in future.reason


async def test_broken_signature_fields_are_permerror(dns: TestDNS) -> None:
    publish(dns, KEYS["rsa"])
    no_from = b"DKIM-Signature: v=1; a=rsa-sha256; d=a.test; s=sel; h=to; bh=AAAA; b=AAAA\r\n"
    [r1] = await verify(no_from + MESSAGE, resolver=dns.resolver())
    assert r1.result == "permerror" and "From" in r1.reason
    garbage = b"DKIM-Signature: this is not a tag list\r\n"
    [r2] = await verify(garbage + MESSAGE, resolver=dns.resolver())
    assert r2.result == "permerror"
    missing = b"DKIM-Signature: v=1; a=rsa-sha256; d=a.test; h=from; bh=AAAA; b=AAAA\r\n"
    [r3] = await verify(missing + MESSAGE, resolver=dns.resolver())
    assert r3.result == "permerror" and "s=" in r3.reason


async def test_body_over_max_size_is_neutral(dns: TestDNS) -> None:
    publish(dns, KEYS["rsa"])
    message = signed("rsa")
    [r] = await verify(io.BytesIO(message), resolver=dns.resolver(), max_size=10)
    assert r.result == "neutral" and "larger" in r.reason and r.domain == "a.test"
    [r2] = await verify(message, resolver=dns.resolver(), max_size=10)
    assert r2.result == "neutral"
    [r3] = await verify(io.BytesIO(message), resolver=dns.resolver(), max_size=len(message))
    assert r3.result == "pass"


async def test_huge_header_section_is_neutral_without_dns(dns: TestDNS) -> None:
    publish(dns, KEYS["rsa"])
    message = signed("rsa", b"X-Filler: " + b"x" * 2_000_000 + b"\r\n" + MESSAGE)
    [r] = await verify(io.BytesIO(message), resolver=dns.resolver())
    assert r.result == "neutral" and "header section larger" in r.reason
    assert dns.queries == []


def test_sign_rejects_wrong_key_type_and_missing_from() -> None:
    with pytest.raises(ValueError):
        sign(
            MESSAGE,
            domain="a.test",
            selector="s",
            private_key_pem=KEYS["rsa"],
            algorithm="ed25519-sha256",
        )
    with pytest.raises(ValueError):
        sign(
            b"To: x@y.test\r\n\r\nbody\r\n",
            domain="a.test",
            selector="s",
            private_key_pem=KEYS["rsa"],
        )
    with pytest.raises(ValueError):
        sign(MESSAGE, domain="a.test", selector="s", private_key_pem=b"not a key")


def test_txt_record_splits_into_255_octet_strings() -> None:
    line = txt_record("a.test", "sel", public_record(generate_key("rsa", 4096)))
    assert line.startswith("sel._domainkey.a.test. IN TXT ")
    strings = re.findall(r'"([^"]*)"', line)
    assert len(strings) >= 3 and all(len(s) <= 255 for s in strings)
    assert len(strings[0]) == 255 and "".join(strings).startswith("v=DKIM1; k=rsa; p=MII")


async def test_signer_signs_with_every_key_of_the_domain(dns: TestDNS, tmp_path) -> None:
    publish(dns, KEYS["rsa"], selector="r")
    publish(dns, KEYS["ed25519"], selector="e")
    (tmp_path / "r.key").write_bytes(KEYS["rsa"])
    (tmp_path / "e.key").write_bytes(KEYS["ed25519"])
    signer = DkimSigner(
        [DkimKey("A.test", "r", tmp_path / "r.key"), DkimKey("a.test", "e", tmp_path / "e.key")]
    )
    assert signer.domains() == ("a.test",)
    assert signer.sign(MESSAGE, "b.test") == b""
    message = signer.sign(MESSAGE, "a.test") + MESSAGE
    results = await verify(message, resolver=dns.resolver())
    assert [(r.selector, r.result) for r in results] == [("r", "pass"), ("e", "pass")]
    with pytest.raises(ValueError):
        DkimSigner([DkimKey("a.test", "r", tmp_path / "r.key", "ed25519-sha256")])
