"""Self-signed certificates and TLS contexts, down to a real handshake over a socket pair."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import stat
import threading
import warnings
from pathlib import Path

import pytest
from cryptography import x509

from kittiwake.net import tls
from kittiwake.net.tls import (
    TLSFileError,
    check_pair,
    client_context_insecure,
    ensure_self_signed,
    server_context,
)


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, sni: str | None) -> str:
    """Run both sides of a TLS handshake over a connected socket pair; return the version."""
    a, b = socket.socketpair()
    a.settimeout(5)
    b.settimeout(5)
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(a, server_side=True) as s:
                s.sendall(s.recv(4))  # echo one message over the encrypted channel
        except (OSError, ssl.SSLError) as e:
            errors.append(e)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_ctx.wrap_socket(b, server_hostname=sni) as c:
            c.sendall(b"ping")
            assert c.recv(4) == b"ping"
            version = c.version()
            assert version is not None
            return version
    finally:
        thread.join(5)
        a.close()
        b.close()


def test_generated_once_then_reused(tmp_path: Path) -> None:
    tls_dir = tmp_path / "data" / "tls"
    cert, key = ensure_self_signed(tls_dir, "mx.example.org")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(tls_dir.stat().st_mode) == 0o700
    parsed = x509.load_pem_x509_certificate(cert.read_bytes())
    san = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mx.example.org", "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    before = (cert.read_bytes(), key.read_bytes())
    assert ensure_self_signed(tls_dir, "mx.example.org") == (cert, key)
    assert (cert.read_bytes(), key.read_bytes()) == before


def test_regenerated_for_a_new_hostname_or_a_broken_file(tmp_path: Path) -> None:
    cert, key = ensure_self_signed(tmp_path, "a.example.org")
    first = cert.read_bytes()
    ensure_self_signed(tmp_path, "b.example.org")
    second = cert.read_bytes()
    assert second != first
    cert.write_text("garbage")
    ensure_self_signed(tmp_path, "b.example.org")
    assert cert.read_bytes() not in (b"garbage", second)
    check_pair(cert, key)


def test_regenerated_when_expiring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, _ = ensure_self_signed(tmp_path, "localhost")
    first = cert.read_bytes()
    monkeypatch.setattr(tls, "RENEW_BEFORE", tls.VALIDITY)  # now "within the renewal window"
    ensure_self_signed(tmp_path, "localhost")
    assert cert.read_bytes() != first


def test_concurrent_callers_get_one_matching_pair(tmp_path: Path) -> None:
    results: list[tuple[Path, Path]] = []
    threads = [
        threading.Thread(target=lambda: results.append(ensure_self_signed(tmp_path, "localhost")))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(results) == 4
    cert, key = results[0]
    check_pair(cert, key)


def test_handshake_unverified_client(tmp_path: Path) -> None:
    cert, key = ensure_self_signed(tmp_path, "localhost")
    version = handshake(server_context(cert, key), client_context_insecure(), None)
    assert version in ("TLSv1.2", "TLSv1.3")


def test_handshake_verified_against_the_certificate(tmp_path: Path) -> None:
    cert, key = ensure_self_signed(tmp_path, "mx.example.org")
    client = ssl.create_default_context(cafile=str(cert))
    client.verify_flags |= ssl.VERIFY_X509_STRICT  # Python 3.13's default; keep us ready
    assert handshake(server_context(cert, key), client, "mx.example.org")
    assert handshake(server_context(cert, key), client, "localhost")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(server_context(cert, key), client, "other.example.org")


def test_tls_1_2_is_the_floor(tmp_path: Path) -> None:
    cert, key = ensure_self_signed(tmp_path, "localhost")
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    old.set_ciphers("ALL:@SECLEVEL=0")  # let the client really offer TLS 1.1
    with warnings.catch_warnings():  # Python deprecates naming TLS 1.1; we need it here
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.TLSv1_1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError):
        handshake(server_context(cert, key), old, None)
    old.maximum_version = ssl.TLSVersion.TLSv1_2  # the same client succeeds with 1.2
    assert handshake(server_context(cert, key), old, None) == "TLSv1.2"


def test_check_pair_names_the_bad_file(tmp_path: Path) -> None:
    cert, key = ensure_self_signed(tmp_path / "a", "localhost")
    _, other = ensure_self_signed(tmp_path / "b", "localhost")
    with pytest.raises(TLSFileError) as info:
        check_pair(cert, other)
    assert info.value.which == "key"
    with pytest.raises(TLSFileError) as info:
        check_pair(tmp_path / "missing.pem", key)
    assert info.value.which == "cert"
    (tmp_path / "empty.pem").write_text("")
    with pytest.raises(TLSFileError) as info:
        check_pair(cert, tmp_path / "empty.pem")
    assert info.value.which == "key"
