"""Streaming DKIM and ARC against plain dkimpy, both ways, on bodies larger than a chunk.

dkimpy signs (simple/simple, relaxed/relaxed, l=, ed25519) and our streaming verifier
must agree; ours signs from a file and dkimpy's whole-message verifier must agree; changed
bodies and headers must fail.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import dkim
import dkim.util
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from kittiwake.policy.arc import seal, verify_chain
from kittiwake.policy.authres import build_header
from kittiwake.policy.dkim import verify
from kittiwake.policy.dkim_io import CHUNK
from kittiwake.policy.dkim_sign import (
    DkimKey,
    DkimSigner,
    generate_key,
    load_private_key,
    public_record,
    sign,
    txt_record,
)
from tests.support.dns import TestDNS, dkimpy_dnsfunc

HEAD = (
    b"From: Alice <alice@a.test>\r\n"
    b"To: bob@b.test\r\n"
    b"Subject:   big   one \r\n"
    b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    b"\r\n"
)
# Over two chunks; WSP runs, a CR/LF pair and trailing empty lines across the boundaries.
BODY = (
    b"line with  spaces \t \r\n" * 3000
    + b"x" * (CHUNK - 1)
    + b"\r\n"
    + b" \t" * 40_000
    + b"\r\nlast\r\n\r\n\r\n"
)
MESSAGE = HEAD + BODY
KEYS = {"rsa": generate_key("rsa", 2048), "ed25519": generate_key("ed25519")}


def dkimpy_key(pem: bytes) -> bytes:
    """dkimpy wants PKCS#1 PEM for RSA and the base64 seed for Ed25519."""
    key = load_private_key(pem)
    fmt, none = serialization.PrivateFormat, serialization.NoEncryption()
    if isinstance(key, rsa.RSAPrivateKey):
        return key.private_bytes(serialization.Encoding.PEM, fmt.TraditionalOpenSSL, none)
    return base64.b64encode(key.private_bytes(serialization.Encoding.Raw, fmt.Raw, none))


@pytest.fixture(scope="module")
def dns() -> Iterator[TestDNS]:
    with TestDNS() as server:
        for kind, pem in KEYS.items():
            server.add(txt_record("a.test", kind, public_record(pem)))
        yield server


def body_hash(field: bytes) -> bytes:
    value: bytes = dkim.util.parse_tag_value(field.split(b":", 1)[1])[b"bh"]
    return value


def dkimpy_sign(kind: str, canon: bytes, length: bool = False, message: bytes = MESSAGE) -> bytes:
    field: bytes = dkim.sign(
        message,
        kind.encode(),
        b"a.test",
        dkimpy_key(KEYS[kind]),
        canonicalize=(canon, canon),
        include_headers=[b"from", b"to", b"subject", b"date"],
        length=length,
        signature_algorithm=b"rsa-sha256" if kind == "rsa" else b"ed25519-sha256",
    )
    return field


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
@pytest.mark.parametrize("canon", [b"simple", b"relaxed"])
@pytest.mark.parametrize("length", [False, True])
async def test_dkimpy_signatures_verify_streamed(
    dns: TestDNS, kind: str, canon: bytes, length: bool
) -> None:
    signed = dkimpy_sign(kind, canon, length) + MESSAGE
    assert dkim.verify(signed, dnsfunc=dkimpy_dnsfunc(dns))
    for source in (signed, io.BytesIO(signed)):
        [r] = await verify(source, resolver=dns.resolver())
        assert r.result == "pass", r.reason
    tampered = signed.replace(b"line with", b"line WITH", 1)
    [r] = await verify(io.BytesIO(tampered), resolver=dns.resolver())
    assert r.result == "fail" and r.reason == "body hash did not verify"
    assert not dkim.verify(tampered, dnsfunc=dkimpy_dnsfunc(dns))
    appended = await verify(io.BytesIO(signed + b"P.S. added\r\n"), resolver=dns.resolver())
    assert appended[0].result == ("pass" if length else "fail")  # l= covers what was signed
    header = signed.replace(b"Subject:   big", b"Subject:   BIG", 1)
    [r] = await verify(io.BytesIO(header), resolver=dns.resolver())
    assert r.result == "fail" and r.reason == "signature did not verify"


async def test_several_signatures_one_pass(dns: TestDNS) -> None:
    fields = [
        dkimpy_sign("rsa", b"simple", False),
        dkimpy_sign("rsa", b"relaxed", True),
        dkimpy_sign("ed25519", b"relaxed", False),
        sign(MESSAGE, domain="a.test", selector="rsa", private_key_pem=KEYS["rsa"]),
    ]
    results = await verify(io.BytesIO(b"".join(fields) + MESSAGE), resolver=dns.resolver())
    assert [r.result for r in results] == ["pass"] * 4


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
async def test_our_streamed_signature_verifies_with_dkimpy(dns: TestDNS, kind: str) -> None:
    algorithm = "rsa-sha256" if kind == "rsa" else "ed25519-sha256"
    field = sign(
        io.BytesIO(MESSAGE),
        domain="a.test",
        selector=kind,
        private_key_pem=KEYS[kind],
        algorithm=algorithm,
    )
    from_bytes = sign(
        MESSAGE, domain="a.test", selector=kind, private_key_pem=KEYS[kind], algorithm=algorithm
    )
    assert body_hash(field) == body_hash(from_bytes) == body_hash(dkimpy_sign(kind, b"relaxed"))
    assert b"c=relaxed/relaxed" in field and field.startswith(b"DKIM-Signature: v=1; a=")
    assert dkim.verify(field + MESSAGE, dnsfunc=dkimpy_dnsfunc(dns))
    lf = (field + MESSAGE).replace(b"\r\n", b"\n")  # LF line ends: same canonical form
    assert dkim.verify(lf, dnsfunc=dkimpy_dnsfunc(dns))
    [r] = await verify(io.BytesIO(lf), resolver=dns.resolver())
    assert r.result == "pass"
    assert not dkim.verify(field + MESSAGE + b"more\r\n", dnsfunc=dkimpy_dnsfunc(dns))


def test_signer_streams_once_for_every_key(tmp_path: Path) -> None:
    keys = []
    for kind, pem in KEYS.items():
        path = tmp_path / f"{kind}.key"
        path.write_bytes(pem)
        keys.append(DkimKey("a.test", kind, path))
    fields = DkimSigner(keys).sign(io.BytesIO(MESSAGE), "a.test")
    assert fields.count(b"DKIM-Signature:") == 2
    assert DkimSigner(keys).sign(io.BytesIO(MESSAGE), "other.test") == b""


async def test_arc_seal_streamed_verifies_with_dkimpy_and_ours(dns: TestDNS) -> None:
    ar = build_header("mx.a.test", [("spf", "pass", "", {"smtp.mailfrom": "alice@a.test"})])
    lines = seal(
        io.BytesIO(MESSAGE),
        domain="a.test",
        selector="rsa",
        key=load_private_key(KEYS["rsa"]),  # type: ignore[arg-type]
        authserv_id="mx.a.test",
        auth_results=ar,
    )
    sealed = b"".join(lines) + ar.encode() + b"\r\n" + MESSAGE
    cv, _sets, reason = dkim.arc_verify(sealed, dnsfunc=dkimpy_dnsfunc(dns))
    assert cv == dkim.CV_Pass, reason
    for source in (sealed, io.BytesIO(sealed)):
        result = await verify_chain(source, dns.resolver())
        assert result.result == "pass", result.reason
    broken = await verify_chain(io.BytesIO(sealed + b"more\r\n"), dns.resolver())
    assert broken.result == "fail"
    too_big = await verify_chain(io.BytesIO(sealed), dns.resolver(), max_size=1000)
    assert too_big.result == "none" and "too large" in too_big.reason
