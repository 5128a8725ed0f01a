"""DKIM signing (RFC 6376 §5) and DKIM keys: generation, files, DNS TXT records.

Owns ``sign`` (rsa-sha256, and ed25519-sha256 per RFC 8463; always relaxed/relaxed,
RFC 6376 §3.4), ``generate_key``, ``public_record``, ``txt_record`` and ``write_key``.
The message is streamed: its header section is read (``dkim_io.read_head``), the body
hash (§3.7) computed in one pass over the body (``dkim_body``), and dkimpy signs the
header section with that ``bh=`` (``dkim_io.HeadDKIM``); the body is never held whole.
Private keys are stored as unencrypted PKCS#8 PEM for both algorithms; dkimpy wants a
PKCS#1 PEM for RSA and the base64 32-octet seed for ed25519, converted here. Published
records: ``k=rsa; p=<base64 SubjectPublicKeyInfo>`` and ``k=ed25519; p=<base64 of the raw
32-octet public key>`` (RFC 8463 §4).

Security sensitive: handles private keys (key files are created 0600, never overwritten
unless asked, never logged).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from kittiwake.net.dns import to_ascii
from kittiwake.policy.dkim_body import BodySpec
from kittiwake.policy.dkim_io import HeadDKIM, Message, hash_body, read_head

ALGORITHMS = ("rsa-sha256", "ed25519-sha256")
MIN_RSA_BITS = 1024  # RFC 8301 §3.2; 2048 is the default and recommended
# RFC 6376 §5.4.1 recommended fields. The singletons among them are signed once more than
# present ("over-signing", §8.15) so that a second From/Subject/... cannot be added.
DEFAULT_HEADERS: tuple[str, ...] = (
    "from",
    "sender",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "to",
    "cc",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "content-id",
    "content-description",
    "resent-date",
    "resent-from",
    "resent-sender",
    "resent-to",
    "resent-cc",
    "resent-message-id",
    "in-reply-to",
    "references",
    "list-id",
    "list-help",
    "list-unsubscribe",
    "list-subscribe",
    "list-post",
    "list-owner",
    "list-archive",
)
OVERSIGNED = frozenset(
    {"from", "sender", "reply-to", "subject", "date", "message-id", "to", "cc", "mime-version"}
)
_TXT_CHUNK = 255  # RFC 1035 §3.3.14: a <character-string> holds at most 255 octets

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def load_private_key(pem: bytes) -> PrivateKey:
    """An RSA or Ed25519 private key from PEM (PKCS#8 or PKCS#1). ValueError otherwise."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise ValueError(f"unsupported DKIM key type: {type(key).__name__}")
    return key


def _key_for_dkimpy(key: PrivateKey, algorithm: str) -> bytes:
    if algorithm == "rsa-sha256":
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("rsa-sha256 needs an RSA key")
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"RSA key of {key.key_size} bits is too short (RFC 8301)")
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    if algorithm == "ed25519-sha256":
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise ValueError("ed25519-sha256 needs an Ed25519 key")
        seed = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return base64.b64encode(seed)
    raise ValueError(f"unknown DKIM algorithm {algorithm!r} (use one of {ALGORITHMS})")


_RELAXED_SHA256 = BodySpec(b"relaxed", "sha256")  # the body hash of every signature we make


def _header_names(headers: Sequence[Sequence[bytes]], wanted: Sequence[str]) -> list[bytes]:
    """``h=``: each wanted field as often as present, singletons once more (RFC 6376 §5.4.2)."""
    counts: dict[bytes, int] = {}
    for name, _value in headers:
        counts[name.lower()] = counts.get(name.lower(), 0) + 1
    names: list[bytes] = []
    for text in dict.fromkeys(h.lower() for h in wanted):
        name = text.encode("ascii")
        times = counts.get(name, 0) + (1 if text in OVERSIGNED else 0)
        names += [name] * times
    return names


def read_body_hash(message: bytes | IO[bytes] | Message) -> tuple[bytes, bytes]:
    """(the header section, the base64 relaxed/sha256 body hash) of ``message``, streamed.

    ``message`` is bytes, a binary file at its start, or one already split by
    ``dkim_io.read_head`` (its body is read to the end; this blocks). ValueError when the
    header section is larger than ``dkim_io.HEAD_LIMIT``.
    """
    split = message if isinstance(message, Message) else read_head(message)
    if not split.complete:
        raise ValueError("cannot sign: the header section is too large")
    hashes = hash_body(split, [_RELAXED_SHA256])
    assert hashes is not None  # no size limit
    return split.head, base64.b64encode(hashes[_RELAXED_SHA256])


def sign_head(
    head: bytes,
    body_hash: bytes,
    *,
    domain: str,
    selector: str,
    private_key_pem: bytes,
    algorithm: str = "rsa-sha256",
    headers: Sequence[str] = DEFAULT_HEADERS,
    linesep: bytes = b"\r\n",
) -> bytes:
    """``sign`` for a header section and its body's ``bh=`` (from ``read_body_hash``)."""
    key = _key_for_dkimpy(load_private_key(private_key_pem), algorithm)
    try:
        d = to_ascii(domain).encode("ascii")
        s = to_ascii(selector).encode("ascii")
        signer = HeadDKIM(head, signature_algorithm=algorithm.encode(), linesep=linesep)
        signer.body_hash = body_hash
        if not any(n.lower() == b"from" for n, _v in signer.headers):
            raise ValueError("the message has no From field (RFC 6376 §5.4)")
        names = _header_names(signer.headers, headers)
        field: bytes = signer.sign(
            s, d, key, canonicalize=(b"relaxed", b"relaxed"), include_headers=names
        )
    except (dkim.DKIMException, IndexError) as exc:  # IndexError: a folded first line
        raise ValueError(f"cannot sign: {exc}") from None
    return field


def sign(
    message: bytes | IO[bytes],
    *,
    domain: str,
    selector: str,
    private_key_pem: bytes,
    algorithm: str = "rsa-sha256",
    headers: Sequence[str] = DEFAULT_HEADERS,
    linesep: bytes = b"\r\n",
) -> bytes:
    """The ``DKIM-Signature:`` field (folded, ending in ``linesep``) to prepend to ``message``.

    ``message`` is the whole message (CRLF or LF line ends) as bytes or a binary file at
    its start (streamed to its end: this blocks). Relaxed/relaxed, ``i=@domain``, ``t=``
    now, no ``l=``. The From field must be present (RFC 6376 §5.4). Raises ValueError
    for a bad key, algorithm, domain or message.
    """
    _key_for_dkimpy(load_private_key(private_key_pem), algorithm)  # before reading a body
    head, body_hash = read_body_hash(message)
    return sign_head(
        head,
        body_hash,
        domain=domain,
        selector=selector,
        private_key_pem=private_key_pem,
        algorithm=algorithm,
        headers=headers,
        linesep=linesep,
    )


@dataclass(frozen=True, slots=True)
class DkimKey:
    """One ``[[dkim.keys]]`` entry: sign mail from ``domain`` with this key."""

    domain: str
    selector: str
    key_file: Path
    algorithm: str = ""  # "" = from the key's type


class DkimSigner:
    """Signs with the configured keys; the key files are read once, at construction.

    Raises ValueError (bad key, algorithm or domain) or OSError (unreadable file) then,
    so a broken configuration fails at startup rather than per message.
    """

    def __init__(self, keys: Sequence[DkimKey]) -> None:
        self._keys: dict[str, list[tuple[DkimKey, bytes, str]]] = {}
        for key in keys:
            pem = key.key_file.read_bytes()
            algorithm = key.algorithm or algorithm_of(pem)
            _key_for_dkimpy(load_private_key(pem), algorithm)  # check now, not per message
            self._keys.setdefault(to_ascii(key.domain), []).append((key, pem, algorithm))

    def domains(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def sign(
        self, message: bytes | IO[bytes] | Message, domain: str, *, linesep: bytes = b"\r\n"
    ) -> bytes:
        """Every DKIM-Signature field for ``domain`` (b"" when it has no key), to prepend.

        ``message``: as for ``read_body_hash`` (the body is streamed once: this blocks)."""
        keys = self._keys.get(to_ascii(domain), [])
        if not keys:
            return b""
        head, body_hash = read_body_hash(message)  # one pass serves every key
        fields = b""
        for key, pem, algorithm in keys:
            field = sign_head(
                head,
                body_hash,
                domain=key.domain,
                selector=key.selector,
                private_key_pem=pem,
                algorithm=algorithm,
                linesep=linesep,
            )
            fields += field  # independent signatures: h= never lists DKIM-Signature
        return fields


# -- keys ----------------------------------------------------------------------------------


def generate_key(algorithm: str = "rsa", bits: int = 2048) -> bytes:
    """A new private key as PKCS#8 PEM. ``algorithm`` is "rsa" or "ed25519"."""
    key: PrivateKey
    if algorithm == "rsa":
        if bits < MIN_RSA_BITS:
            raise ValueError(f"RSA keys need at least {MIN_RSA_BITS} bits (RFC 8301 §3.2)")
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    elif algorithm == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(f"unknown key algorithm {algorithm!r} (rsa or ed25519)")
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_record(private_key_pem: bytes) -> str:
    """The TXT record value publishing the public half: ``v=DKIM1; k=...; p=...``."""
    key = load_private_key(private_key_pem)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


def algorithm_of(private_key_pem: bytes) -> str:
    """The signing algorithm a key is for: "rsa-sha256" or "ed25519-sha256"."""
    key = load_private_key(private_key_pem)
    return "ed25519-sha256" if isinstance(key, ed25519.Ed25519PrivateKey) else "rsa-sha256"


def txt_record(domain: str, selector: str, value: str) -> str:
    """A zone-file line: ``<s>._domainkey.<d>. IN TXT "..." "..."`` in 255-octet strings."""
    name = f"{to_ascii(selector)}._domainkey.{to_ascii(domain)}."
    raw = value.encode("ascii")
    chunks = [raw[i : i + _TXT_CHUNK].decode() for i in range(0, len(raw), _TXT_CHUNK)]
    return f"{name} IN TXT " + " ".join(f'"{c}"' for c in chunks)


def key_path(data_dir: Path, domain: str, selector: str) -> Path:
    """Where ``kittiwake dkim keygen`` keeps a key: ``<data_dir>/dkim/<domain>.<selector>.key``."""
    return data_dir / "dkim" / f"{to_ascii(domain)}.{to_ascii(selector)}.key"


def write_key(path: Path, pem: bytes, *, overwrite: bool = False) -> None:
    """Write ``pem`` to ``path`` with mode 0600 (created so, never briefly readable).

    FileExistsError if it exists and ``overwrite`` is false.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if ``path`` exists: no silent key replacement
            tmp.unlink()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


__all__ = [
    "ALGORITHMS",
    "DEFAULT_HEADERS",
    "DkimKey",
    "DkimSigner",
    "algorithm_of",
    "generate_key",
    "key_path",
    "load_private_key",
    "public_record",
    "read_body_hash",
    "sign",
    "sign_head",
    "txt_record",
    "write_key",
]
