"""STARTTLS policies (none / opportunistic / required / verify), AUTH to a smart host, and
the policy table's lookup rules — through real TLS on loopback."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kittiwake.delivery.api import Destination, RecipientStatus, Route
from kittiwake.delivery.tlspolicy import TlsPolicy, TlsPolicyTable
from kittiwake.errors import ConfigError
from kittiwake.net.tls import ensure_self_signed, server_context
from tests.e2e.test_delivery_smtp import agent, run, statuses
from tests.support.sinks import Script, Sink

D = RecipientStatus.DELIVERED
F = RecipientStatus.DEFERRED
MX = "mx.verify.test"


@pytest.fixture
def self_signed(tmp_path: Path) -> ssl.SSLContext:
    cert, key = ensure_self_signed(tmp_path / "tls", MX)
    return server_context(cert, key)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@pytest.fixture
def test_ca(tmp_path: Path) -> tuple[Path, ssl.SSLContext]:
    """A CA of the test's own and a leaf for ``mx.verify.test`` signed by it."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("Kittiwake test CA"))
        .issuer_name(_name("Kittiwake test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name(MX))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(MX)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(pem))
    cert_file, key_file = tmp_path / "leaf.pem", tmp_path / "leaf.key"
    cert_file.write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    key_file.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_file, server_context(cert_file, key_file)


def mx(sink: Sink, host: str = MX) -> Destination:
    return Destination(host, sink.host, sink.port, 10)


def table(policy: TlsPolicy, ca_file: Path | None = None) -> TlsPolicyTable:
    return TlsPolicyTable(policy, {}, ca_file)


async def test_opportunistic_with_self_signed_peer(self_signed: ssl.SSLContext) -> None:
    async with Sink("127.0.0.2", Script(tls=self_signed)) as sink:
        a = agent([mx(sink)], tls=table(TlsPolicy.OPPORTUNISTIC))
        out = await run(a, b"secret\r\n", ["a@dest.test"])
    assert statuses(out) == [D]
    (msg,) = sink.messages
    assert msg.tls and msg.helo == "client.test"
    assert sink.commands.count("EHLO client.test") == 2  # again after TLS (RFC 3207 §4.2)


async def test_opportunistic_handshake_failure_retries_in_plaintext() -> None:
    broken = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # no certificate: every handshake fails
    async with Sink("127.0.0.2", Script(tls=broken)) as sink:
        a = agent([mx(sink)], tls=table(TlsPolicy.OPPORTUNISTIC))
        out = await run(a, b"x\r\n", ["a@dest.test"])
    assert statuses(out) == [D]
    assert sink.connections == 2 and not sink.messages[0].tls


async def test_none_never_starttls(self_signed: ssl.SSLContext) -> None:
    async with Sink("127.0.0.2", Script(tls=self_signed)) as sink:
        out = await run(agent([mx(sink)], tls=table(TlsPolicy.NONE)), b"x\r\n", ["a@dest.test"])
    assert statuses(out) == [D] and "STARTTLS" not in sink.commands


async def test_required_without_starttls_defers(self_signed: ssl.SSLContext) -> None:
    async with Sink("127.0.0.2") as plain, Sink("127.0.0.3", Script(tls=self_signed)) as tls:
        a = agent([mx(plain)], tls=table(TlsPolicy.REQUIRED))
        (o,) = await run(a, b"x\r\n", ["a@dest.test"])
        assert o.status is F and o.reply.enhanced == "4.7.4" and not plain.messages
        a = agent([mx(plain), mx(tls)], tls=table(TlsPolicy.REQUIRED))
        assert statuses(await run(a, b"x\r\n", ["a@dest.test"])) == [D]
    assert tls.messages[0].tls and not plain.messages


async def test_required_handshake_failure_does_not_fall_back() -> None:
    broken = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    async with Sink("127.0.0.2", Script(tls=broken)) as sink:
        (o,) = await run(agent([mx(sink)], tls=table(TlsPolicy.REQUIRED)), b"x", ["a@dest.test"])
    assert o.status is F and o.reply.enhanced == "4.7.5"
    assert sink.connections == 1 and not sink.messages


async def test_verify_untrusted_certificate_defers(
    self_signed: ssl.SSLContext, test_ca: tuple[Path, ssl.SSLContext]
) -> None:
    ca_file, _ = test_ca
    async with Sink("127.0.0.2", Script(tls=self_signed)) as sink:
        a = agent([mx(sink)], tls=table(TlsPolicy.VERIFY, ca_file))
        (o,) = await run(a, b"x\r\n", ["a@dest.test"])
    assert o.status is F and o.reply.enhanced == "4.7.5" and "not trusted" in str(o.reply)
    assert not sink.messages and sink.connections == 1


async def test_verify_with_the_tests_ca(test_ca: tuple[Path, ssl.SSLContext]) -> None:
    ca_file, context = test_ca
    async with Sink("127.0.0.2", Script(tls=context)) as sink:
        a = agent([mx(sink)], tls=table(TlsPolicy.VERIFY, ca_file))
        out = await run(a, b"x\r\n", ["a@dest.test"])
        assert statuses(out) == [D] and sink.messages[0].tls
        # The same certificate for a host name it does not carry: refused.
        a = agent([mx(sink, "other.verify.test")], tls=table(TlsPolicy.VERIFY, ca_file))
        (o,) = await run(a, b"x\r\n", ["a@dest.test"])
    assert o.status is F and o.reply.enhanced == "4.7.5" and len(sink.messages) == 1


async def test_auth_to_smarthost_inside_tls_only(self_signed: ssl.SSLContext) -> None:
    creds = ("relay-user", "s3cret")
    route = Route("smtp", "[smarthost.test]:587")
    async with Sink("127.0.0.2", Script(tls=self_signed, auth=creds)) as sink:
        a = agent([mx(sink)], tls=table(TlsPolicy.OPPORTUNISTIC), credentials=lambda r: creds)
        out = await run(a, b"x\r\n", ["a@dest.test"])
    assert statuses(out) == [D] and sink.auth_attempts == [("relay-user", True)]
    assert route.nexthop  # (the agent gets credentials per route; here any route)
    async with Sink("127.0.0.2", Script(auth=creds)) as plain:  # AUTH offered, no TLS
        a = agent([mx(plain)], tls=table(TlsPolicy.OPPORTUNISTIC), credentials=lambda r: creds)
        (o,) = await run(a, b"x\r\n", ["a@dest.test"])
    assert o.status is F and o.reply.enhanced == "4.7.0" and plain.auth_attempts == []
    async with Sink("127.0.0.2", Script(tls=self_signed, auth=creds)) as sink:
        wrong = ("relay-user", "wrong")
        a = agent([mx(sink)], tls=table(TlsPolicy.OPPORTUNISTIC), credentials=lambda r: wrong)
        (o,) = await run(a, b"x\r\n", ["a@dest.test"])
    assert o.status is F and "authentication failed" in str(o.reply) and not sink.messages


def test_policy_table_lookup() -> None:
    t = TlsPolicyTable(
        TlsPolicy.OPPORTUNISTIC,
        {
            "secure.example": TlsPolicy.VERIFY,
            ".corp.example": TlsPolicy.REQUIRED,
            "relay.example": TlsPolicy.NONE,
        },
    )
    assert t.lookup("secure.example") is TlsPolicy.VERIFY
    assert t.lookup("SECURE.example.") is TlsPolicy.VERIFY
    assert t.lookup("mail.secure.example") is TlsPolicy.OPPORTUNISTIC  # exact match only
    assert t.lookup("a.b.corp.example") is TlsPolicy.REQUIRED
    assert t.lookup("corp.example") is TlsPolicy.OPPORTUNISTIC
    assert t.lookup("[relay.example]:587", ["secure.example"]) is TlsPolicy.NONE  # next hop first
    both = ["x.corp.example", "secure.example", "other.test"]
    assert t.lookup("[10.0.0.1]:25", both) is TlsPolicy.VERIFY  # the strictest domain
    assert t.lookup("other.test", ["other.test"]) is TlsPolicy.OPPORTUNISTIC
    assert TlsPolicy.parse(" Verify ") is TlsPolicy.VERIFY
    with pytest.raises(ConfigError):
        TlsPolicy.parse("dane-only")
    assert t.context(TlsPolicy.VERIFY).verify_mode is ssl.CERT_REQUIRED
    assert t.context(TlsPolicy.OPPORTUNISTIC).verify_mode is ssl.CERT_NONE
