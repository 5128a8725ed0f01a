"""Streaming a message through DKIM / ARC: header section apart, body hashed in one pass.

Owns ``Message`` / ``read_head`` (the header section, bounded, and where the body starts),
``hash_body`` (every wanted body hash in one streaming pass, ``dkim_body``), ``spec_of``
and ``HeadDKIM`` / ``HeadARC``: dkimpy's own classes given only the header section.

How dkimpy is kept out of the body: dkimpy computes the body hash inside
``DomainSigner.verify_sig_process`` (verification) and before ``gen_header``
(signing), from ``self.body``. These subclasses are built from the header section alone,
so ``self.body`` is empty, and override exactly those two public methods:

- ``verify_sig_process``: a signature with ``bh=`` is checked against the hash already
  streamed for its ``c=``/``a=``/``l=`` (mismatch: dkimpy's own "body hash mismatch"
  ValidationError), then dkimpy gets the tags without ``bh=`` — the path it takes for an
  ARC-Seal, which has none — and does everything else itself: key type, header
  canonicalization and hashing (§3.7), RSA / Ed25519 verification, minimum key size.
- ``gen_header``: the ``bh=`` dkimpy computed from the empty body is replaced by ours
  before the header hash (and so the signature) is computed.

This is the smallest surface we could find: every other piece (tag parsing, ``h=``
selection, header canonicalization, ``b=`` stripping, folding, crypto) stays dkimpy's.
It fails closed: were a future dkimpy to stop calling these methods, it would hash the
empty body, so every verification would fail (``body hash did not verify``) and every
signature would be wrong; the cross-check tests against plain dkimpy would catch it.

Reading blocks: call ``read_head`` / ``hash_body`` in a worker thread for files;
``inline`` says when a message in memory is small enough not to bother.
Security sensitive: all input is attacker-chosen. The header section read from a stream is
capped (``HEAD_LIMIT``); memory for the body is one chunk whatever its size.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import IO, Any

import dkim
import dkim.canonicalization
import dkim.crypto

from kittiwake.policy.dkim_body import BodyHasher, BodySpec, find_body

__all__ = [
    "CHUNK",
    "HEAD_LIMIT",
    "HeadARC",
    "HeadDKIM",
    "Message",
    "hash_body",
    "inline",
    "read_head",
    "spec_of",
]

CHUNK = 64 * 1024  # octets read and hashed at a time
HEAD_LIMIT = 1024 * 1024  # the largest header section read from a stream


@dataclass(slots=True)
class Message:
    """A message split at its header section; the body is ``first`` then ``stream``."""

    head: bytes  # the header section, with its last line end, without the empty line
    first: bytes | memoryview  # body octets already in hand
    stream: IO[bytes] | None  # the rest of the body (None: ``first`` is all of it)
    complete: bool = True  # False: no end of header section within HEAD_LIMIT


def read_head(message: bytes | IO[bytes], limit: int = HEAD_LIMIT) -> Message:
    """Split ``message`` (bytes, or a binary file at its start) after its header section.

    A file is read in ``CHUNK``s until the empty line; at most ``limit`` octets (then
    ``complete`` is False). A message without an empty line is all header section (body
    empty), as dkimpy parses it. Bytes are not copied for the body.
    """
    if isinstance(message, bytes | bytearray | memoryview):
        data = bytes(message)
        split = find_body(data)
        if split is None:
            return Message(data, b"", None)
        return Message(data[: split[0]], memoryview(data)[split[1] :], None)
    buf = bytearray()
    while True:
        searched = max(0, len(buf) - 2)
        chunk = message.read(CHUNK)
        if not chunk:
            return Message(bytes(buf), b"", None)
        buf += chunk
        split = find_body(buf, searched)
        if split is not None:
            return Message(bytes(buf[: split[0]]), bytes(buf[split[1] :]), message)
        if len(buf) > limit:
            return Message(bytes(buf[:limit]), b"", None, complete=False)


INLINE_SIZE = 64 * 1024  # header section + body octets verified without a worker thread


def inline(message: Message, signatures: int, most: int, size: int = INLINE_SIZE) -> bool:
    """Is verifying ``message`` small enough for the event loop's own thread?

    Yes when all of it is in memory (no stream left to read: nothing blocks), it is at
    most ``size`` octets, and at most ``most`` signatures (or ARC sets) are to be checked:
    then the work (body hashing, header canonicalization, one public-key operation per
    signature) is a fraction of a millisecond, less than the hand-off to a worker thread
    and back costs. Anything bigger goes to a thread. Only where the work runs depends
    on this, never a result.
    """
    return (
        message.stream is None
        and signatures <= most
        and len(message.head) + len(message.first) <= size
    )


def hash_body(
    message: Message, specs: Iterable[BodySpec], max_size: int = 0
) -> dict[BodySpec, bytes] | None:
    """Each spec's body hash, in one pass; None when the body exceeds ``max_size`` (>0)."""
    hasher = BodyHasher(list(specs))
    view = memoryview(message.first)
    for start in range(0, len(view), CHUNK):
        hasher.update(bytes(view[start : start + CHUNK]))
        if max_size and hasher.size > max_size:
            return None
    if message.stream is not None:
        while chunk := message.stream.read(CHUNK):
            hasher.update(chunk)
            if max_size and hasher.size > max_size:
                return None
    return hasher.digests()


def spec_of(tags: dict[bytes, bytes], default_c: bytes = b"simple/simple") -> BodySpec:
    """The body hash a signature's tags ask for (``c=`` body half, ``a=`` hash, ``l=``).

    Raises dkimpy's MessageFormatError for a bad ``c=``, KeyError for an unknown ``a=``,
    ValueError for an ``l=`` that is not a number (as dkimpy would).
    """
    try:
        policy = dkim.canonicalization.CanonicalizationPolicy.from_c_value(
            tags.get(b"c", default_c)
        )
    except dkim.canonicalization.InvalidCanonicalizationPolicyError as exc:
        raise dkim.MessageFormatError(f"invalid c= value: {exc.args[0]!r}") from None
    hash_name: str = dkim.crypto.HASH_ALGORITHMS[tags[b"a"]]().name
    length = int(tags[b"l"]) if b"l" in tags else None
    return BodySpec(policy.body_algorithm.name, hash_name, length)


class _HeadOnly:
    """The two overrides (module docstring); mixed into dkimpy's DKIM and ARC."""

    body_hashes: Mapping[BodySpec, bytes] = MappingProxyType({})  # verification: streamed
    body_hash: bytes = b""  # signing: the base64 bh= to sign
    default_c = b"simple/simple"

    def verify_sig_process(
        self, sig: dict[bytes, bytes], include_headers: list[bytes], sig_header: Any, dnsfunc: Any
    ) -> bool:
        if b"bh" in sig:
            got = self.body_hashes.get(spec_of(sig, self.default_c))
            if got is None:
                raise dkim.ValidationError("body hash mismatch (not computed)")
            want = base64.b64decode(re.sub(rb"\s+", b"", sig[b"bh"]))
            if got != want:
                raise dkim.ValidationError("body hash mismatch")
            sig = {k: v for k, v in sig.items() if k != b"bh"}
        result: bool = super().verify_sig_process(  # type: ignore[misc]
            sig, include_headers, sig_header, dnsfunc
        )
        return result

    def gen_header(self, fields: Sequence[tuple[bytes, bytes]], *args: Any, **kwargs: Any) -> bytes:
        fields = [(k, self.body_hash if k == b"bh" else v) for k, v in fields]
        header: bytes = super().gen_header(fields, *args, **kwargs)  # type: ignore[misc]
        return header


class HeadDKIM(_HeadOnly, dkim.DKIM):  # type: ignore[misc]
    """dkimpy's DKIM over a header section; ``body_hashes`` / ``body_hash`` from us."""


class HeadARC(_HeadOnly, dkim.ARC):  # type: ignore[misc]
    """dkimpy's ARC over a header section (ARC signatures default to relaxed/relaxed)."""

    default_c = b"relaxed/relaxed"
