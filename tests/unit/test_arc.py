"""ARC (RFC 8617): seal with a fresh RSA key, verify through a real TestDNS, break it."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from dnslib import QTYPE, RR, TXT

from kittiwake.net.dns import Resolver
from kittiwake.policy.arc import ArcError, key_names, seal, verify_chain
from kittiwake.policy.authres import build_header, fields
from tests.support.dns import TestDNS

MESSAGE = (
    b"Received: from a.test by mx.fwd.test; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    b"From: Alice <alice@a.test>\r\n"
    b"To: bob@fwd.test\r\n"
    b"Subject: forwarded\r\n"
    b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    b"Message-ID: <1@a.test>\r\n"
    b"\r\n"
    b"Hello Bob.\r\n"
)


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _txt(name: str, key: rsa.RSAPrivateKey) -> RR:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    text = "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()
    chunks = [text[i : i + 255] for i in range(0, len(text), 255)]  # RFC 1035 §3.3.14
    return RR(name, QTYPE.TXT, rdata=TXT(chunks), ttl=0)


@pytest.fixture(scope="module")
def keys() -> dict[str, rsa.RSAPrivateKey]:
    return {"fwd": _key(), "list": _key()}


@pytest.fixture(scope="module")
def server(keys: dict[str, rsa.RSAPrivateKey]) -> Iterator[TestDNS]:
    with TestDNS() as dns_server:
        dns_server.add(_txt("arc._domainkey.fwd.test.", keys["fwd"]))
        dns_server.add(_txt("s2._domainkey.list.test.", keys["list"]))
        dns_server.servfail("broken._domainkey.fwd.test")
        yield dns_server


@pytest.fixture
def resolver(server: TestDNS) -> Resolver:
    return server.resolver()


def _seal(message: bytes, key: object, *, domain="fwd.test", selector="arc", arc="none"):
    ar = build_header(
        f"mx.{domain}",
        [
            ("spf", "pass", "", {"smtp.mailfrom": "alice@a.test"}),
            ("dmarc", "pass", "", {"header.from": "a.test"}),
            ("arc", arc, "", {}),
        ],
    )
    headers = seal(
        message,
        domain=domain,
        selector=selector,
        key=key,  # type: ignore[arg-type]
        authserv_id=f"mx.{domain}",
        auth_results=ar,
    )
    return b"".join(headers) + ar.encode() + b"\r\n" + message


async def test_unsealed_message_is_none(resolver: Resolver) -> None:
    result = await verify_chain(MESSAGE, resolver)
    assert result.result == "none"


async def test_seal_then_verify_passes(keys, server: TestDNS, resolver: Resolver) -> None:
    sealed = _seal(MESSAGE, keys["fwd"])
    names = [name for name, _ in fields(sealed)][:4]
    assert names == [
        "ARC-Seal",
        "ARC-Message-Signature",
        "ARC-Authentication-Results",
        "Authentication-Results",
    ]
    assert b"cv=none" in sealed and b"i=1" in sealed
    before = len(server.queries)
    result = await verify_chain(sealed, resolver)
    assert (result.result, result.instances, result.domains) == ("pass", 1, ("fwd.test",))
    assert {q.name for q in server.queries[before:]} == {"arc._domainkey.fwd.test."}
    assert result.check_result().result == "pass"


async def test_second_hop_extends_the_chain(keys, resolver: Resolver) -> None:
    first = _seal(MESSAGE, keys["fwd"])
    assert key_names(first) == {"arc._domainkey.fwd.test"}
    second = _seal(first, pem(keys["list"]), domain="list.test", selector="s2", arc="pass")
    assert b"i=2" in second and b"cv=pass" in second
    result = await verify_chain(second, resolver)
    assert (result.result, result.instances) == ("pass", 2)
    assert result.domains == ("list.test", "fwd.test")


async def test_tampered_body_fails(keys, resolver: Resolver) -> None:
    sealed = _seal(MESSAGE, keys["fwd"])
    result = await verify_chain(sealed.replace(b"Hello Bob.", b"Hello Eve."), resolver)
    assert result.result == "fail"


async def test_tampered_header_fails(keys, resolver: Resolver) -> None:
    sealed = _seal(MESSAGE, keys["fwd"])
    result = await verify_chain(sealed.replace(b"Subject: forwarded", b"Subject: pay"), resolver)
    assert result.result == "fail"


async def test_wrong_key_fails(keys, resolver: Resolver) -> None:
    sealed = _seal(MESSAGE, keys["list"])  # signed with list's key, published key is fwd's
    assert (await verify_chain(sealed, resolver)).result == "fail"


async def test_missing_and_servfail_keys_fail(keys, resolver: Resolver) -> None:
    missing = _seal(MESSAGE, keys["fwd"], selector="nokey")
    assert (await verify_chain(missing, resolver)).result == "fail"
    broken = _seal(MESSAGE, keys["fwd"], selector="broken")
    result = await verify_chain(broken, resolver)
    assert result.result == "fail" and result.dns_error


def pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def test_seal_refuses_bad_keys_and_chain_state(keys) -> None:
    with pytest.raises(ArcError):
        _seal(MESSAGE, b"not a key")
    ed = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ArcError):
        _seal(MESSAGE, ed)
    with pytest.raises(ArcError):  # first instance must carry cv=none
        _seal(MESSAGE, keys["fwd"], arc="pass")
