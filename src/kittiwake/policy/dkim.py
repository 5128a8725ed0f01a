"""DKIM verification (RFC 6376 §6): one RFC 8601 result per DKIM-Signature header field.

Owns ``verify`` and ``DkimResult``. Cryptography and header canonicalization are dkimpy's;
this module decides what to ask it and how to name the outcome. The message is streamed,
never held whole: only its header section is read up front (``dkim_io.read_head``,
bounded); the body hashes every signature needs (one per distinct ``c=``/``a=``/``l=``)
are computed in ONE pass over the body in a worker thread (``dkim_body``); dkimpy then
checks ``bh=`` against them and verifies the header signature on the header section alone
(``dkim_io.HeadDKIM`` says how). DNS never goes through dkimpy's own resolver (it would
read /etc/resolv.conf): the DKIM-Signature fields are parsed here, every
``<s>._domainkey.<d>`` TXT record is fetched first through our async ``Resolver``, and
dkimpy gets a ``dnsfunc`` that answers only from those prefetched records.

Result mapping (RFC 8601 §2.7.1, RFC 6376 §6.1):
- ``pass``: the signature verified.
- ``fail``: the header hash or the body hash did not verify (the message was changed).
- ``permerror``: a broken signature field, From not signed, no key, a revoked or unusable
  key, a key type that does not match ``a=`` (RFC 6376 PERMFAIL).
- ``temperror``: the key lookup failed temporarily (SERVFAIL, timeout): TEMPFAIL.
- ``policy``: valid, but not acceptable here: expired (``x=``), dated in the future
  (``t=``) or an RSA key under ``min_key_bits``.
- ``neutral``: not processed by local limits: the body is larger than ``max_size``
  octets (when one is set; 0, the default, is no limit: the listener's message size
  limit bounds the work), the header section of a streamed message is larger than
  ``dkim_io.HEAD_LIMIT`` (a single result), or the signature is beyond the first
  ``max_signatures``.
- ``none``: no DKIM-Signature at all (a single result).

Security sensitive: every byte of the message and of the key record is attacker-chosen.
Work is bounded (header section size, signature count, one DNS lookup per distinct key
name, one pass over the body); memory is one chunk of body, whatever the message size.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any

import dkim
import dkim.util

from kittiwake.net.dns import Resolver, Status, TxtResult, to_ascii
from kittiwake.policy.dkim_body import BodySpec
from kittiwake.policy.dkim_io import (
    HEAD_LIMIT,
    INLINE_SIZE,
    HeadDKIM,
    Message,
    hash_body,
    inline,
    read_head,
    spec_of,
)

INLINE_SIGNATURES = 2  # at most this many to verify (and INLINE_SIZE): no worker thread
DEFAULT_MAX_SIZE = 0  # octets of body; bigger ones are not verified (neutral); 0 = no limit
DEFAULT_MAX_SIGNATURES = 10
DEFAULT_MIN_KEY_BITS = 1024  # RFC 8301 §3.2: verifiers MUST NOT accept smaller RSA keys
CLOCK_SLOP = 300  # seconds of tolerated clock skew for t= and x=
_KEY_TYPE = {b"rsa-sha256": b"rsa", b"rsa-sha1": b"rsa", b"ed25519-sha256": b"ed25519"}


@dataclass(frozen=True, slots=True)
class DkimResult:
    """One signature's outcome, with the RFC 8601 properties an A-R header needs."""

    result: str  # pass / fail / neutral / policy / temperror / permerror / none
    domain: str = ""  # d=, lower case (the signing domain; empty when unknown)
    selector: str = ""  # s=
    algorithm: str = ""  # a=
    header_d: str = ""  # d= exactly as signed (RFC 8601 "header.d")
    reason: str = ""  # human-readable, for the A-R comment and the log
    header_i: str = ""  # i= (RFC 8601 "header.i"); empty when absent
    header_b: str = ""  # first 8 characters of b= (RFC 6008 "header.b"), to tell sigs apart


@dataclass(slots=True)
class _Sig:
    index: int  # position among the message's header fields
    tags: dict[bytes, bytes]
    result: DkimResult  # filled in as verification proceeds; "" result = still to verify
    key_name: str = ""
    key: bytes = b""  # the chosen key record


def _text(value: bytes) -> str:
    return re.sub(r"\s+", "", value.decode("utf-8", "replace"))


def _reason(exc: BaseException) -> str:
    """dkimpy's exception text, without Python bytes reprs, bounded (it quotes the input)."""
    return re.sub(r"b'([^']*)'", r"\1", str(exc))[:200]


def _base(tags: dict[bytes, bytes], index: int, reason: str = "", result: str = "") -> _Sig:
    d = _text(tags.get(b"d", b""))
    return _Sig(
        index,
        tags,
        DkimResult(
            result,
            domain=d.lower(),
            selector=_text(tags.get(b"s", b"")),
            algorithm=_text(tags.get(b"a", b"")),
            header_d=d,
            reason=reason,
            header_i=_text(tags.get(b"i", b"")),
            header_b=_text(tags.get(b"b", b""))[:8],
        ),
    )


def _set(sig: _Sig, result: str, reason: str) -> None:
    r = sig.result
    sig.result = DkimResult(
        result, r.domain, r.selector, r.algorithm, r.header_d, reason, r.header_i, r.header_b
    )


def _check_fields(sig: _Sig, now: float) -> None:
    """RFC 6376 §6.1.1: the signature's own fields; sets a result when it is unusable."""
    tags = sig.tags
    untimed = {k: v for k, v in tags.items() if k not in (b"t", b"x")}
    try:
        dkim.validate_signature_fields(untimed)
    except dkim.ValidationError as exc:
        _set(sig, "permerror", f"bad signature: {_reason(exc)}")
        return
    headers = [h.lower() for h in re.split(rb"\s*:\s*", tags[b"h"].strip())]
    if b"from" not in headers:
        _set(sig, "permerror", "From field not signed")
        return
    times: dict[bytes, int] = {}
    for tag in (b"t", b"x"):
        if tag in tags:
            if not re.fullmatch(rb"\d{1,12}", tags[tag].strip()):
                _set(sig, "permerror", f"bad signature: {tag.decode()}= is not a number")
                return
            times[tag] = int(tags[tag])
    if b"t" in times and times[b"t"] > now + CLOCK_SLOP:
        _set(sig, "policy", "signature timestamp in the future")
    elif b"x" in times and times[b"x"] < now - CLOCK_SLOP:
        _set(sig, "policy", "signature expired")
    elif b"x" in times and b"t" in times and times[b"x"] < times[b"t"]:
        _set(sig, "permerror", "bad signature: x= before t=")
    else:
        try:
            sig.key_name = to_ascii(f"{_text(tags[b's'])}._domainkey.{_text(tags[b'd'])}")
        except ValueError:
            _set(sig, "permerror", "bad signature: d= or s= is not a domain name")


def _parse(headers: Sequence[Sequence[bytes]], now: float, max_signatures: int) -> list[_Sig]:
    sigs: list[_Sig] = []
    for index, (name, value) in enumerate(headers):
        if name.lower() != b"dkim-signature":
            continue
        if len(sigs) >= max_signatures:
            sigs.append(_base({}, index, "too many signatures, not verified", "neutral"))
            continue
        try:
            tags = dkim.util.parse_tag_value(value)
        except dkim.util.InvalidTagValueList as exc:
            sigs.append(_base({}, index, f"bad signature syntax: {_reason(exc)}", "permerror"))
            continue
        sig = _base(tags, index)
        _check_fields(sig, now)
        sigs.append(sig)
    return sigs


def _choose_key(sig: _Sig, found: TxtResult | None) -> bytes | None:
    """The key record text for ``sig``, or None with a result set (RFC 6376 §6.1.2)."""
    if found is None or found.kind == Status.TEMPFAIL:
        _set(sig, "temperror", f"key lookup failed: {found.error if found else 'no answer'}")
        return None
    if found.kind != Status.OK:
        _set(sig, "permerror", f"no key for signature ({sig.key_name})")
        return None
    errors: list[str] = []
    for text in found.texts:  # several records: use the first that is a usable key
        raw = text.encode("utf-8", "replace")
        try:
            tags = dkim.util.parse_tag_value(raw)
            if not tags.get(b"p", b"x").strip():
                errors.append("key revoked")  # RFC 6376 §3.6.1: empty p=
                continue
            _pk, _bits, ktag, _tlsrpt = dkim.evaluate_pk(sig.key_name, raw)
        except (dkim.DKIMException, dkim.util.InvalidTagValueList, ValueError) as exc:
            errors.append(f"bad key record: {_reason(exc)}")
            continue
        if ktag != _KEY_TYPE.get(sig.tags[b"a"]):
            errors.append("key type does not match a=")
            continue
        hashes = tags.get(b"h")
        if hashes is not None and b"sha256" not in re.split(rb"\s*:\s*", hashes.strip()):
            errors.append("key does not allow sha256 (h=)")
            continue
        return raw
    _set(sig, "permerror", errors[0] if errors else "no key record")
    return None


def _body_spec(sig: _Sig) -> BodySpec | None:
    """The body hash ``sig`` needs, or None with a result set (a bad ``c=`` or ``l=``)."""
    try:
        return spec_of(sig.tags)
    except (dkim.DKIMException, KeyError, ValueError) as exc:
        _set(sig, "permerror", f"cannot verify: {_reason(exc)}")
        return None


def _run_dkimpy(message: Message, sigs: list[_Sig], min_key_bits: int, max_size: int) -> None:
    """In a worker thread: the body hashes in one pass, then dkimpy checks each ``sig``."""
    specs = {spec for spec in map(_body_spec, sigs) if spec is not None}
    sigs = [s for s in sigs if not s.result.result]
    if not sigs:
        return
    hashes = hash_body(message, specs, max_size)
    if hashes is None:
        for sig in sigs:
            _set(sig, "neutral", f"body larger than {max_size} octets, not verified")
        return
    try:
        checker = HeadDKIM(message.head, minkey=min_key_bits)
    except dkim.DKIMException as exc:
        for sig in sigs:
            _set(sig, "permerror", f"unparseable message: {_reason(exc)}")
        return
    checker.body_hashes = hashes
    for sig in sigs:
        include = [h.lower() for h in re.split(rb"\s*:\s*", sig.tags[b"h"].strip())]
        header: Any = checker.headers[sig.index]

        def dnsfunc(name: bytes | str, timeout: float = 5, key: bytes = sig.key) -> bytes:
            return key  # prefetched through our Resolver; dkimpy never queries DNS itself

        try:
            ok = checker.verify_sig(sig.tags, include, header, dnsfunc)
        except dkim.ValidationError as exc:
            if "body hash mismatch" in str(exc):
                _set(sig, "fail", "body hash did not verify")
            else:
                _set(sig, "permerror", f"bad signature: {_reason(exc)}")
            continue
        except dkim.KeyFormatError as exc:
            if "too small" in str(exc):
                _set(sig, "policy", f"key too short: {_reason(exc)}")
            else:
                _set(sig, "permerror", f"bad key: {_reason(exc)}")
            continue
        except (dkim.DKIMException, ValueError, TypeError, IndexError) as exc:
            _set(sig, "permerror", f"cannot verify: {_reason(exc)}")
            continue
        if ok:
            _set(sig, "pass", "")
        else:
            _set(sig, "fail", "signature did not verify")


async def verify(
    message: bytes | IO[bytes],
    *,
    resolver: Resolver,
    now: float | None = None,
    max_size: int = DEFAULT_MAX_SIZE,
    max_signatures: int = DEFAULT_MAX_SIGNATURES,
    min_key_bits: int = DEFAULT_MIN_KEY_BITS,
) -> list[DkimResult]:
    """Verify every DKIM-Signature of ``message`` (RFC 6376 §6), in header order.

    ``message`` is the whole message as bytes, or a binary file positioned at its start:
    its header section is read (at most ``dkim_io.HEAD_LIMIT`` octets), then, only if a
    signature gets that far, the body is streamed once in a worker thread; the file is
    never held whole. A message given as bytes of at most ``INLINE_SIZE`` octets with at
    most ``INLINE_SIGNATURES`` signatures to verify is verified on the calling thread
    (bounded work, less than a thread hop costs; ``dkim_io.inline``). ``max_size`` > 0:
    a longer body is not verified (neutral). ``now`` (Unix time) judges ``t=`` and
    ``x=``. Returns ``[DkimResult("none")]`` without signatures.
    """
    when = time.time() if now is None else now
    if isinstance(message, bytes | bytearray | memoryview):
        split = read_head(message)
    else:
        split = await asyncio.to_thread(read_head, message)
    if not split.complete:
        reason = f"header section larger than {HEAD_LIMIT} octets, not verified"
        return [DkimResult("neutral", reason=reason)]
    try:
        headers, _body = dkim.rfc822_parse(split.head)
    except (dkim.DKIMException, IndexError) as exc:  # IndexError: a folded first line
        return [DkimResult("permerror", reason=f"unparseable header section: {_reason(exc)}")]
    sigs = _parse(headers, when, max_signatures)
    if not sigs:
        return [DkimResult("none", reason="no signature")]
    pending = [s for s in sigs if not s.result.result]
    names = sorted({s.key_name for s in pending})
    answers = dict(zip(names, await asyncio.gather(*(resolver.txt(n) for n in names)), strict=True))
    for sig in pending:
        sig.key = _choose_key(sig, answers.get(sig.key_name)) or b""
    pending = [s for s in pending if not s.result.result]
    if pending and inline(split, len(pending), INLINE_SIGNATURES):
        _run_dkimpy(split, pending, min_key_bits, max_size)
    elif pending:
        await asyncio.to_thread(_run_dkimpy, split, pending, min_key_bits, max_size)
    return [s.result for s in sigs]


__all__ = ["DEFAULT_MAX_SIZE", "INLINE_SIGNATURES", "INLINE_SIZE", "DkimResult", "verify"]
