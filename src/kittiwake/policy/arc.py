"""ARC (RFC 8617): verify the Authenticated Received Chain, seal when forwarding.

Owns ``verify_chain`` and ``seal``, thin typed wrappers over dkimpy's ARC verification and
signing. dkimpy asks for keys through a synchronous ``dnsfunc``; we never let it touch
the system resolver: every ``s=``/``d=`` key name in the ARC-Seal and
ARC-Message-Signature fields is looked up first through our async ``Resolver`` and
dkimpy gets a dictionary lookup (the same prefetch scheme as DKIM verification).
The message is streamed as for DKIM: dkimpy (``dkim_io.HeadARC``) sees only the header
section; the ARC-Message-Signature body hashes (``bh=``, RFC 8617 §4.1.2) are computed in
one pass over the body (``dkim_body``), never holding it whole.

Security: sensitive. Header fields and key records are attacker-controlled; the number
of key lookups is bounded (RFC 8617 §4.2.1 caps instances at 50). A chain result only
says which intermediaries vouch for the message; DMARC local-policy overrides based on
it are the caller's decision (RFC 8617 §7.2).
"""

from __future__ import annotations

import asyncio
import base64
import re
from dataclasses import dataclass
from typing import IO, Any

import dkim
import dkim.util
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from kittiwake.net.dns import Resolver, Status, to_ascii
from kittiwake.policy.authres import HEADER, fields, strip_forged
from kittiwake.policy.dkim_body import BodySpec
from kittiwake.policy.dkim_io import HeadARC, Message, hash_body, inline, read_head, spec_of
from kittiwake.policy.results import CheckResult

MAX_INSTANCES = 50  # RFC 8617 §4.2.1
INLINE_SETS = 2  # a small message in memory with at most this many sets: no worker thread
_SEAL_FIELD = re.compile(rb"(?:\A|\n)arc-seal[ \t]*:", re.IGNORECASE)  # to count the sets
_ARC_SIGNED = ("arc-seal", "arc-message-signature")
_CV = {b"pass": "pass", b"fail": "fail", b"none": "none"}
_SEAL_SPEC = BodySpec(b"relaxed", "sha256")  # ARC signs rsa-sha256, relaxed/relaxed


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


def _body_specs(head: bytes) -> set[BodySpec]:
    """The body hashes the ARC-Message-Signatures ask for (bounded; bad ones skipped:
    dkimpy then finds no hash for them and the set fails)."""
    specs: set[BodySpec] = set()
    for name, value in fields(head):
        if name.lower() != "arc-message-signature" or len(specs) >= MAX_INSTANCES:
            continue
        try:
            tags = dkim.util.parse_tag_value(value.encode("utf-8", "surrogateescape"))
            specs.add(spec_of(tags, HeadARC.default_c))
        except (dkim.DKIMException, dkim.util.InvalidTagValueList, KeyError, ValueError):
            continue
    return specs


def _run_dkimpy(
    message: Message, found: dict[str, bytes], max_size: int
) -> tuple[Any, Any, str] | None:
    """In a worker thread: the body hashes in one pass, then dkimpy's chain validation
    (its ``arc_verify`` result); None when the body is over ``max_size``."""
    hashes = hash_body(message, _body_specs(message.head), max_size)
    if hashes is None:
        return None
    try:
        checker = HeadARC(message.head, timeout=5)
        checker.body_hashes = hashes
        cv, sets, reason = checker.verify(dnsfunc=_dnsfunc(found))
    except (dkim.DKIMException, IndexError) as exc:  # as dkim.arc_verify; unparseable
        return dkim.CV_Fail, [], str(exc)
    return cv, sets, str(reason)


async def verify_chain(
    message: bytes | IO[bytes], resolver: Resolver, *, max_size: int = 0
) -> ArcResult:
    """Validate the ARC chain of ``message`` (RFC 8617 §5.2): none, pass or fail.

    ``message``: bytes, or a binary file at its start (streamed, never held whole).
    Keys come only from ``resolver``. The body is hashed in a worker thread (on the
    calling thread for bytes of at most ``dkim_io.INLINE_SIZE`` octets with at most
    ``INLINE_SETS`` ARC sets: ``dkim_io.inline``); a body over
    ``max_size`` octets (> 0), or a streamed header section over ``dkim_io.HEAD_LIMIT``,
    is not validated (none). A seal that reports ``cv=fail`` ends the chain: fail.
    """
    if isinstance(message, bytes | bytearray | memoryview):
        split = read_head(message)
    else:
        split = await asyncio.to_thread(read_head, message)
    if not split.complete:
        return ArcResult("none", "header section too large to validate")
    names = key_names(split.head)
    if not names:
        return ArcResult("none", "message is not ARC sealed")
    found, dns_error = await prefetch(resolver, names)
    if inline(split, len(_SEAL_FIELD.findall(split.head)), INLINE_SETS):
        outcome = _run_dkimpy(split, found, max_size)
    else:
        outcome = await asyncio.to_thread(_run_dkimpy, split, found, max_size)
    if outcome is None:
        return ArcResult("none", "message too large to validate")
    cv, sets, reason = outcome
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
    message: bytes | IO[bytes] | Message,
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
    ``message``: bytes, a binary file at its start or a ``dkim_io.read_head`` split (the
    body is streamed once for the ARC-Message-Signature's ``bh=``; this blocks);
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
    split = message if isinstance(message, Message) else read_head(message)
    if not split.complete:
        raise ArcError("ARC sealing failed: the header section is too large")
    hashes = hash_body(split, [_SEAL_SPEC])
    assert hashes is not None  # no size limit
    head = strip_forged(split.head, authserv_id)
    copy = re.sub(rb"\r?\n", b"\r\n", field.encode("utf-8") + b"\n" + head)
    try:  # as dkim.arc_sign, with the streamed body hash (dkim_io.HeadARC)
        signer = HeadARC(copy, signature_algorithm=b"rsa-sha256", linesep=b"\r\n")
        signer.body_hash = base64.b64encode(hashes[_SEAL_SPEC])
        lines = signer.sign(
            selector.encode("ascii"),
            domain.encode("ascii"),
            pem,
            authserv_id.encode("ascii"),
            include_headers=signer.default_sign_headers(),
            timestamp=timestamp,
        )
    except (dkim.DKIMException, IndexError) as exc:
        raise ArcError(f"ARC sealing failed: {exc}") from None
    if not lines:
        raise ArcError("ARC sealing refused: existing chain but no arc= result for it")
    out: list[bytes] = []
    for line in lines:
        text = bytes(line).replace(b"\r\n", b"\n").rstrip(b"\n").replace(b"\n", b"\r\n")
        out.append(text + b"\r\n")
    return out


__all__ = [
    "INLINE_SETS",
    "MAX_INSTANCES",
    "ArcError",
    "ArcResult",
    "key_names",
    "prefetch",
    "seal",
    "verify_chain",
]
