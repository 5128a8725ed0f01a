"""ARC sealing of forwarded copies (RFC 8617 §5.1): cleanup.expand's Fork with an
``ArcSealer``; the chain is verified with ``policy.arc.verify_chain`` through a TestDNS."""

from __future__ import annotations

import base64
import hashlib
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from dnslib import QTYPE, RR, TXT

from kittiwake.addressing import Directory, Srs
from kittiwake.cleanup.arcseal import ArcSealer, arc_sealer_for, our_auth_results
from kittiwake.cleanup.expand import Expander
from kittiwake.cleanup.writer import Cleanup
from kittiwake.delivery.api import QueuedMessage
from kittiwake.delivery.local import LocalMailboxes
from kittiwake.envelope import Envelope, Recipient, SessionInfo
from kittiwake.net.dns import Resolver
from kittiwake.policy.arc import verify_chain
from kittiwake.policy.authres import fields
from kittiwake.policy.dkim_sign import DkimKey
from kittiwake.queue.sqlite import SQLiteStore
from tests.support.dns import TestDNS

HOST = "mx.example.test"
SESSION = SessionInfo("192.0.2.7", 40000, "127.0.0.1", 25, helo="mail.sender.example", esmtp=True)
AR = f"Authentication-Results: {HOST}; spf=pass smtp.mailfrom=s@sender.example\r\n".encode()
BODY = (
    b"From: S <s@sender.example>\r\nTo: info@example.test\r\nSubject: hi\r\n"
    b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <1@sender.example>\r\n\r\nhello\r\n"
)
ALIASES = {
    "info@example.test": ["alice@example.test", "carol@elsewhere.example"],
    "fwd@example.test": ["dave@elsewhere.example"],
}


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture(scope="module")
def dns(key: rsa.RSAPrivateKey) -> Iterator[TestDNS]:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    text = "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()
    chunks = [text[i : i + 255] for i in range(0, len(text), 255)]
    with TestDNS() as server:
        server.add(RR("arc._domainkey.example.test.", QTYPE.TXT, rdata=TXT(chunks), ttl=0))
        yield server


@pytest.fixture
def resolver(dns: TestDNS) -> Resolver:
    return dns.resolver()


@pytest.fixture
async def world(
    tmp_path: Path, key: rsa.RSAPrivateKey
) -> AsyncIterator[tuple[Cleanup, list[QueuedMessage]]]:
    store = SQLiteStore(tmp_path / "q")
    await store.open()
    mb = LocalMailboxes(tmp_path / "mail", ["example.test"], ["alice"], "postmaster")
    directory = Directory(mb, ALIASES, srs=Srs(["0123456789abcdef-secret"], "example.test"))
    cleanup = Cleanup(store, HOST)
    cleanup.expander = Expander(directory, sealer=ArcSealer("example.test", "arc", pem(key), HOST))
    forwarded: list[QueuedMessage] = []
    cleanup.on_forward = forwarded.append
    yield cleanup, forwarded
    await store.close()


async def receive(cleanup: Cleanup, *rcpts: str) -> QueuedMessage:
    envelope = Envelope("s@sender.example", tuple(Recipient(r) for r in rcpts))
    sink = cleanup.begin(SESSION, envelope, prepend=AR)
    sink.write(BODY)
    return await sink.commit(envelope)


def body_of(cleanup: Cleanup, queue_id: str) -> bytes:
    with cleanup.store.open_body(queue_id) as f:
        return f.read()


def names(message: bytes) -> list[str]:
    return [n.lower() for n, _ in fields(message.split(b"\r\n\r\n")[0] + b"\r\n")]


async def test_forwarded_copy_is_sealed_and_verifies(world, resolver: Resolver) -> None:
    cleanup, forwarded = world
    m = await receive(cleanup, "info@example.test")
    (copy,) = forwarded
    sealed = body_of(cleanup, copy.queue_id)
    assert names(sealed)[:3] == [
        "arc-seal",
        "arc-message-signature",
        "arc-authentication-results",
    ]
    assert sealed.endswith(BODY) and f"id {copy.queue_id}".encode() in sealed
    aar = dict(fields(sealed.split(b"\r\n\r\n")[0]))["ARC-Authentication-Results"]
    assert "i=1" in aar and HOST in aar and "spf=pass" in aar
    result = await verify_chain(sealed, resolver)
    assert (result.result, result.instances, result.domains) == ("pass", 1, ("example.test",))
    # The local copy is not sealed: it does not leave us.
    assert "arc-seal" not in names(body_of(cleanup, m.queue_id))
    # Tampering with the forwarded copy breaks the chain (the test can fail).
    broken = await verify_chain(sealed.replace(b"hello", b"jello"), resolver)
    assert broken.result == "fail"


async def test_all_forwarded_message_is_the_sealed_copy(world, resolver: Resolver) -> None:
    cleanup, forwarded = world
    m = await receive(cleanup, "fwd@example.test")
    assert not forwarded  # the sealed copy is the message the client is told about
    assert m.envelope.sender.startswith("SRS0=")
    assert [q.queue_id for q in await cleanup.store.pending()] == [m.queue_id]
    result = await verify_chain(body_of(cleanup, m.queue_id), resolver)
    assert result.result == "pass"


LARGE = 20 * 1024 * 1024
GROWTH_LIMIT = 4 * 1024 * 1024  # the whole message held once would be 20 MiB


def large_body(size: int) -> Iterator[bytes]:
    """A ``size``-octet body in odd-sized chunks (line ends split across chunks), some
    lines with trailing and inner whitespace for relaxed canonicalization."""
    lines = [
        b"line %07d \t with  spaces, and some text to fill it out%s\r\n" % (i, b"  " * (i % 3))
        for i in range(4096)
    ]
    block = b"".join(lines)
    sent = 0
    chunk = 65_537
    while sent < size:
        data = block[: min(chunk, size - sent)]
        block = block[len(data) :] + data  # rotate: a different cut every time
        sent += len(data)
        yield data


async def test_large_forward_is_sealed_streaming(world, resolver: Resolver) -> None:
    """A 20 MiB message through the alias fork: the ARC set verifies, the copy is the
    message octet for octet, and the fork never holds it whole (tracemalloc peak)."""
    cleanup, forwarded = world
    head = BODY.split(b"\r\n\r\n")[0] + b"\r\n\r\n"
    sent = hashlib.sha256(head)
    envelope = Envelope("s@sender.example", (Recipient("info@example.test"),))
    tracemalloc.start()
    try:
        sink = cleanup.begin(SESSION, envelope, prepend=AR)
        sink.write(head)
        for data in large_body(LARGE):
            sent.update(data)
            sink.write(data)
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        await sink.commit(envelope)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < GROWTH_LIMIT, f"commit (seal + copy) grew memory by {peak} octets"
    (copy,) = forwarded
    with cleanup.store.open_body(copy.queue_id) as f:
        assert f.read(len(b"ARC-Seal:")).lower() == b"arc-seal:"
        f.seek(0)
        result = await verify_chain(f, resolver)
        assert (result.result, result.instances) == ("pass", 1), result
        f.seek(0)
        got = hashlib.sha256()
        top = f.read(64 * 1024)
        start = top.index(head[: head.index(b"\r\n")])  # the copy's own From line
        got.update(top[start:])
        while chunk := f.read(256 * 1024):
            got.update(chunk)
    assert got.hexdigest() == sent.hexdigest()


async def test_no_forward_no_seal(world) -> None:
    cleanup, forwarded = world
    m = await receive(cleanup, "alice@example.test")
    assert not forwarded and "arc-seal" not in names(body_of(cleanup, m.queue_id))


def test_sealer_from_dkim_keys(tmp_path: Path, key: rsa.RSAPrivateKey) -> None:
    (tmp_path / "ed.pem").write_bytes(pem(ed25519.Ed25519PrivateKey.generate()))
    (tmp_path / "rsa.pem").write_bytes(pem(key))
    keys = (
        DkimKey("example.test", "ed", tmp_path / "ed.pem"),
        DkimKey("example.test", "arc", tmp_path / "rsa.pem"),
        DkimKey("other.test", "x", tmp_path / "rsa.pem"),
    )
    sealer = arc_sealer_for(keys, "Example.Test", HOST)
    assert sealer is not None and (sealer.domain, sealer.selector) == ("example.test", "arc")
    assert arc_sealer_for(keys[:1], "example.test", HOST) is None  # ed25519: ARC is RSA only
    assert arc_sealer_for(keys, "nowhere.test", HOST) is None


def test_our_auth_results() -> None:
    forged = b"Authentication-Results: evil.test; spf=pass\r\n"
    assert (
        our_auth_results(forged + AR + BODY, HOST)
        == f"{HOST}; spf=pass smtp.mailfrom=s@sender.example"
    )
    assert our_auth_results(forged + BODY, HOST) == f"{HOST}; none"
