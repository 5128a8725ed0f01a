"""TLS: server and client ``SSLContext``s and the self-signed certificate for trying out.

Owns every ``ssl.SSLContext`` Kittiwake makes and the key material it generates.
Security sensitive: protocol floor (TLS 1.2), cipher choice, private key file modes.
Nothing SMTP-specific; RFC 3207 (STARTTLS) and RFC 8314 (implicit TLS) use these contexts.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import ipaddress
import os
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CERT_NAME = "selfsigned-cert.pem"
KEY_NAME = "selfsigned-key.pem"
VALIDITY = dt.timedelta(days=825)
RENEW_BEFORE = dt.timedelta(days=7)  # regenerate rather than serve a nearly expired cert

# TLS 1.2 suites with forward secrecy and AEAD first, then ECDHE/DHE with AES-CBC: mail
# peers are old and opportunistic encryption beats plaintext (RFC 7435). TLS 1.3 suites
# are OpenSSL's defaults and not affected by set_ciphers().
SERVER_CIPHERS = (
    "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:ECDHE+AES:DHE+AES"
    ":!aNULL:!eNULL:!MD5:!DSS:!RC4:!3DES:!PSK:!SRP:!CAMELLIA:!ARIA"
)


class TLSFileError(ValueError):
    """A configured certificate or key file is unusable; ``which`` is "cert" or "key"."""

    def __init__(self, which: Literal["cert", "key"], problem: str) -> None:
        super().__init__(f"{which}: {problem}")
        self.which: Literal["cert", "key"] = which
        self.problem = problem


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context for STARTTLS and implicit TLS: TLS ≥ 1.2, no compression, no client
    certificate requested. Raises ``OSError``/``ssl.SSLError`` if the files are unusable."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(SERVER_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.options |= ssl.OP_NO_RENEGOTIATION  # client-initiated renegotiation is a DoS lever
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(cert, key)
    return ctx


def client_context_insecure() -> ssl.SSLContext:
    """A client context that encrypts but does not authenticate the server: for tests and
    opportunistic outbound TLS where any certificate is accepted (RFC 7435)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.options |= ssl.OP_NO_COMPRESSION
    return ctx


def check_pair(cert: Path, key: Path) -> None:
    """Raise ``TLSFileError`` unless ``cert`` is a PEM chain whose first certificate matches
    the unencrypted PEM private key ``key``."""
    try:
        certs = x509.load_pem_x509_certificates(cert.read_bytes())
    except OSError as e:
        raise TLSFileError("cert", f"cannot read {cert}: {e.strerror or e}") from None
    except ValueError:
        raise TLSFileError("cert", f"{cert} holds no PEM certificate") from None
    try:
        private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    except OSError as e:
        raise TLSFileError("key", f"cannot read {key}: {e.strerror or e}") from None
    except TypeError:
        raise TLSFileError("key", f"{key} is encrypted; give an unencrypted key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise TLSFileError("key", f"{key} holds no usable PEM private key") from None
    leaf_public = (
        certs[0]
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    key_public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if leaf_public != key_public:
        raise TLSFileError("key", f"{key} does not match the certificate in {cert}")


def ensure_self_signed(tls_dir: Path, hostname: str) -> tuple[Path, Path]:
    """Return (cert, key) paths of a self-signed pair in ``tls_dir``, making it if missing,
    unreadable, expiring within a week, or not naming ``hostname``. Safe against concurrent
    callers (a lock file); the key file is mode 0600, the directory 0700."""
    tls_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert_path, key_path = tls_dir / CERT_NAME, tls_dir / KEY_NAME
    with _locked(tls_dir / ".lock"):
        if not _reusable(cert_path, key_path, hostname):
            key = ec.generate_private_key(ec.SECP256R1())
            cert = _self_signed(key, hostname)
            key_pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            _write_atomic(key_path, key_pem, 0o600)
            _write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert_path, key_path


def _reusable(cert_path: Path, key_path: Path, hostname: str) -> bool:
    try:
        check_pair(cert_path, key_path)
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (TLSFileError, OSError, ValueError, x509.ExtensionNotFound):
        return False
    fresh = cert.not_valid_after_utc - RENEW_BEFORE > dt.datetime.now(dt.UTC)
    return fresh and hostname.lower() in names.get_values_for_type(x509.DNSName)


def _self_signed(key: ec.EllipticCurvePrivateKey, hostname: str) -> x509.Certificate:
    name = x509.Name(
        [
            # X.509 caps a common name at 64 characters; the SAN carries the real name.
            x509.NameAttribute(
                NameOID.COMMON_NAME, hostname if len(hostname) <= 64 else "kittiwake"
            ),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Kittiwake self-signed"),
        ]
    )
    dns_names = list(dict.fromkeys([hostname.lower(), "localhost"]))
    now = dt.datetime.now(dt.UTC)
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))  # tolerate a peer's clock skew
        .not_valid_after(now + VALIDITY)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(n) for n in dns_names]
                + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write to a temporary file created with ``mode`` (never wider), fsync, rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
