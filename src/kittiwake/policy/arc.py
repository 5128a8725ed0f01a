"""ARC (RFC 8617): verify the Authenticated Received Chain, seal when forwarding.

Owns ``verify_chain`` and ``seal``, thin typed wrappers over dkimpy's ``arc_verify`` /
``arc_sign``. dkimpy asks for keys through a synchronous ``dnsfunc``; we never let it touch
the system resolver: every ``s=``/``d=`` key name in the ARC-Seal and
ARC-Message-Signature fields is looked up first through our async ``Resolver`` and
dkimpy gets a dictionary lookup (the same prefetch scheme as DKIM verification).

Security: sensitive. Header fields and key records are attacker-controlled; the number
of key lookups is bounded (RFC 8617 §4.2.1 caps instances at 50). A chain result only
says which intermediaries vouch for the message; DMARC local-policy overrides based on
it are the caller's decision (RFC 8617 §7.2).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from kittiwake.net.dns import Resolver, Status, to_ascii
from kittiwake.policy.authres import HEADER, fields, strip_forged
from kittiwake.policy.results import CheckResult

MAX_INSTANCES = 50  # RFC 8617 §4.2.1
_ARC_SIGNED = ("arc-seal", "arc-message-signature")
_CV = {b"pass": "pass", b"fail": "fail", b"none": "none"}


class ArcError(Exception):
    """Sealing is impossible (bad key, message without From, chain state dkimpy refuses)."""


@dataclass(frozen=True, slots=True)
class ArcResult:
    """The chain validation result (RFC 8617 §4.4): ``none`` | ``pass`` | ``fail``."""

    result: str
    reason: str = ""
    instances: int = 0  # highest i= seen
    domains: tuple[str, ...] = ()  # sealing d= per instance, newest first
    dns_error: str = ""  # a key lookup failed temporarily (the fail may be transient)

    def check_result(self) -> CheckResult:
        """As an RFC 8601 result (RFC 8617 §10.1): ``arc=pass``; reason on failure."""
        return CheckResult("arc", self.result, "" if self.result == "pass" else self.reason)


def _tags(value: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in re.sub(r"\s+", "", value).split(";"):
        key, sep, val = part.partition("=")
        if sep:
            out.setdefault(key.lower(), val)
    return out


def key_names(message: bytes) -> set[str]:
    """``selector._domainkey.domain`` for each ARC signature, in query form (bounded)."""
    names: set[str] = set()
    head = message.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    for name, value in fields(head):
        if name.lower() not in _ARC_SIGNED:
            continue
        tags = _tags(value)
        try:
            names.add(to_ascii(f"{tags.get('s', '')}._domainkey.{tags.get('d', '')}"))
        except ValueError:
            continue  # dkimpy will find no key for it and fail the set
        if len(names) >= 2 * MAX_INSTANCES:
            break
    return names


async def prefetch(resolver: Resolver, names: set[str]) -> tuple[dict[str, bytes], str]:
    """TXT of each name concurrently: (found records, first temporary error or "")."""
    ordered = sorted(names)
    answers = await asyncio.gather(*(resolver.txt(n) for n in ordered))
    found: dict[str, bytes] = {}
    error = ""
    for name, answer in zip(ordered, answers, strict=True):
        if answer.kind == Status.OK and answer.texts:
            found[name] = answer.texts[0].encode("utf-8", "replace")
        elif answer.kind == Status.TEMPFAIL and not error:
            error = answer.error
    return found, error


def _dnsfunc(found: dict[str, bytes]) -> Any:
    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        return found.get(name.decode("ascii", "replace").rstrip(".").lower())

    return lookup


async def verify_chain(message: bytes, resolver: Resolver) -> ArcResult:
    """Validate the ARC chain of ``message`` (RFC 8617 §5.2): none, pass or fail.

    Keys come only from ``resolver``. Verification runs in a worker thread (it hashes
    the whole body). A seal that reports ``cv=fail`` ends the chain: the result is fail.
    """
    names = key_names(message)
    if not names:
        return ArcResult("none", "message is not ARC sealed")
    found, dns_error = await prefetch(resolver, names)
    cv, sets, reason = await asyncio.to_thread(
        dkim.arc_verify, message, dnsfunc=_dnsfunc(found), timeout=5
    )
    result = _CV.get(cv, "fail") if cv is not None else "fail"
    domains = tuple(
        s.get("as-domain", b"").decode("ascii", "replace") for s in sets if isinstance(s, dict)
    )
    instances = max((int(s.get("instance", 0)) for s in sets if isinstance(s, dict)), default=0)
    return ArcResult(
        result,
        str(reason),
        instances,
        domains,
        dns_error if result != "pass" else "",
    )


def _pkcs1_pem(key: bytes | rsa.RSAPrivateKey) -> bytes:
    """dkimpy's ARC signer wants an RSA key as PKCS#1 PEM; accept any PEM or a key object."""
    if isinstance(key, bytes):
        try:
            loaded = serialization.load_pem_private_key(key, password=None)
        except (ValueError, TypeError) as exc:
            raise ArcError(f"cannot load the ARC private key: {exc}") from None
        if not isinstance(loaded, rsa.RSAPrivateKey):
            raise ArcError("ARC signs with rsa-sha256 only (RFC 8617 §4.1.3)")
        key = loaded
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def seal(
    message: bytes,
    *,
    domain: str,
    selector: str,
    key: bytes | rsa.RSAPrivateKey,
    authserv_id: str,
    auth_results: str,
    timestamp: int | None = None,
) -> list[bytes]:
    """The next ARC set (RFC 8617 §5.1) for ``message``: header lines to prepend, in order.

    ``auth_results`` is our Authentication-Results field for this message (as
    ``authres.build_header`` makes it, with its ``arc=`` result from ``verify_chain``;
    no ``arc=`` means cv=none, right for a message without a chain). It replaces any
    A-R with our id in the copy dkimpy reads; the caller writes it into the message
    itself. Returns ARC-Seal, ARC-Message-Signature, ARC-Authentication-Results, each
    ending in CRLF. Raises ArcError when dkimpy refuses (e.g. a chain but no arc= result).
    """
    pem = _pkcs1_pem(key)
    field = auth_results.strip()
    if not field.lower().startswith(HEADER.lower() + ":"):
        field = f"{HEADER}: {field}"
    # dkimpy matches the field name byte-for-byte.
    field = HEADER + field[len(HEADER) :]
    body = strip_forged(message, authserv_id)
    copy = re.sub(rb"\r?\n", b"\r\n", field.encode("utf-8") + b"\n" + body)
    try:
        lines = dkim.arc_sign(
            copy,
            selector.encode("ascii"),
            domain.encode("ascii"),
            pem,
            authserv_id.encode("ascii"),
            timestamp=timestamp,
        )
    except dkim.DKIMException as exc:
        raise ArcError(f"ARC sealing failed: {exc}") from None
    if not lines:
        raise ArcError("ARC sealing refused: existing chain but no arc= result for it")
    out: list[bytes] = []
    for line in lines:
        text = bytes(line).replace(b"\r\n", b"\n").rstrip(b"\n").replace(b"\n", b"\r\n")
        out.append(text + b"\r\n")
    return out


__all__ = [
    "MAX_INSTANCES",
    "ArcError",
    "ArcResult",
    "key_names",
    "prefetch",
    "seal",
    "verify_chain",
]
