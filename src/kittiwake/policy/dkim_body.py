"""Incremental DKIM body canonicalization and hashing (RFC 6376 §3.4.3-§3.4.5, §3.7).

Owns ``BodySpec``, ``BodyCanonicalizer``, ``BodyHasher`` and ``find_body``. Sans-I/O: the
caller feeds the body in chunks of any size, split anywhere (a CR ending one chunk and its
LF starting the next, a whitespace run across chunks), and gets exactly the digest of
dkimpy's ``dkim.canonicalization`` applied to the whole body at once. Memory stays bounded
by the chunk size: runs that must be held back (trailing CRLFs, a whitespace run, a final
CR) are kept as counters or a two-octet carry, never as the run itself.

The byte stream goes through three stages:

1. Line ends: dkimpy parses the message with ``re.split(b"\\r?\\n")`` and rejoins the body
   with CRLF, so a bare LF counts as CRLF (RFC 6376 §5.3 lets a verifier convert); a bare
   CR stays content. Done once per pass, shared by every canonicalizer.
2. ``relaxed`` only (§3.4.4): a run of WSP becomes one SP; a run just before CRLF goes.
   The run and a final CR are held back until the next chunk decides them.
3. Trailing empty lines (§3.4.3/§3.4.4): CRLFs at the current end are only counted and
   written once real content follows. At the end ``simple`` writes one CRLF (so an empty
   body is CRLF); ``relaxed`` writes one CRLF unless nothing was written (empty body).
   Like dkimpy, a body not ending in CRLF gets one.

``l=`` (§3.5) truncates the canonical output; like dkimpy, an ``l=`` beyond the body's
canonical length hashes the whole body. Security sensitive: every octet is attacker-chosen;
work is linear in the body (no backtracking regexes), memory constant.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import NamedTuple

__all__ = ["BodyCanonicalizer", "BodyHasher", "BodySpec", "find_body"]

_BLANK_LINE = re.compile(rb"(?:\A|\n)(\r?\n)")  # the empty line ending the header section
_CRLF_BLOCK = b"\r\n" * 4096  # pending CRLFs are written in blocks of this size


class BodySpec(NamedTuple):
    """One body hash to compute: ``c=`` body half, hash name, ``l=`` (None: whole body)."""

    canon: bytes  # b"simple" or b"relaxed"
    hash_name: str  # hashlib name: "sha256" (or "sha1" for rsa-sha1)
    length: int | None = None


def find_body(data: bytes | bytearray | memoryview, start: int = 0) -> tuple[int, int] | None:
    """(end of the header section, start of the body) in ``data``, or None if not yet seen.

    The header section ends at the first empty line (``\\n`` or ``\\r\\n`` at a line start,
    as dkimpy's parser sees it); the header part keeps its last line end. ``start`` is
    where to resume a search in a growing buffer (at most 2 octets before the old end).
    """
    found = _BLANK_LINE.search(data, start)
    if found is None:
        return None
    return found.start(1), found.end(1)


class _LineEnds:
    """Stage 1: bare LF → CRLF, across chunk boundaries."""

    __slots__ = ("_cr",)

    def __init__(self) -> None:
        self._cr = False  # the previous chunk ended in CR

    def feed(self, data: bytes) -> bytes:
        if not data:
            return data
        lead = b""
        if self._cr and data[:1] == b"\n":
            lead, data = b"\n", data[1:]
        self._cr = data.endswith(b"\r")
        if data.count(b"\n") != data.count(b"\r\n"):  # a bare LF somewhere
            data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        return lead + data


class BodyCanonicalizer:
    """One canonical body (stages 2 and 3) written to ``out``; input must be CRLF-normal.

    ``update(chunk)`` any number of times, then ``finish()`` once. ``length`` caps the
    octets written (``l=``).
    """

    __slots__ = ("_carry", "_left", "_out", "_pending", "_relaxed", "_wrote")

    def __init__(self, canon: bytes, out: Callable[[bytes], object], length: int | None = None):
        if canon not in (b"simple", b"relaxed"):
            raise ValueError(f"unknown body canonicalization {canon!r}")
        self._relaxed = canon == b"relaxed"
        self._out = out
        self._left = length  # octets still allowed by l= (None: no limit)
        self._carry = b""  # relaxed: held " " (a WSP run) and/or "\r"; simple: "\r"
        self._pending = 0  # CRLFs at the end of what was seen, not yet written
        self._wrote = False  # any content written (relaxed: empty-body rule)

    def _write(self, data: bytes) -> None:
        if self._left is not None:
            if self._left <= 0:
                return
            data = data[: self._left]
            self._left -= len(data)
        self._out(data)

    def _flush_pending(self) -> None:
        while self._pending:
            count = min(self._pending, len(_CRLF_BLOCK) // 2)
            self._write(_CRLF_BLOCK[: 2 * count])
            self._pending -= count

    def update(self, data: bytes) -> None:
        data = self._carry + data
        cr = data.endswith(b"\r")
        if cr:
            data = data[:-1]  # a CR at the end: the next octet says whether it ends a line
        if self._relaxed:
            core = data.rstrip(b" \t")
            wsp = len(core) < len(data)  # a WSP run at the end: held as one SP
            self._carry = (b" " if wsp else b"") + (b"\r" if cr else b"")
            core = core.replace(b"\t", b" ")  # WSP runs → one SP: log2(run) passes,
            while b"  " in core:  # each a C-speed replace (a regex is 20x slower)
                core = core.replace(b"  ", b" ")
            core = core.replace(b" \r\n", b"\r\n")
            data = core
        else:
            self._carry = b"\r" if cr else b""
        self._lines(data)

    def _lines(self, data: bytes) -> None:
        """Stage 3: write ``data`` except the CRLFs at its end, which are counted."""
        if not data:
            return
        tail_start = len(data.rstrip(b"\r\n"))
        count = 0
        if data.endswith(b"\r\n"):
            # CR and LF after the last other octet: CRLFs and bare CRs (every LF has its
            # CR by now). The CRLFs at the very end follow the last bare CR ("\r\r").
            bare = data.rfind(b"\r\r", tail_start)
            pairs_from = bare + 1 if bare >= 0 else tail_start
            count = (len(data) - pairs_from) // 2
        content = data[: len(data) - 2 * count]
        if content:
            self._flush_pending()
            self._write(content)
            self._wrote = True
        self._pending += count

    def finish(self) -> None:
        """The end of the body: held octets, then the final CRLF rule."""
        carry, self._carry = self._carry, b""
        self._lines(carry)  # a held SP or CR is content now
        self._pending = 0
        if self._wrote or not self._relaxed:
            self._write(b"\r\n")


class BodyHasher:
    """Every wanted body hash in one pass: ``update(raw_chunk)``…, then ``digests()``."""

    def __init__(self, specs: set[BodySpec] | list[BodySpec]) -> None:
        self._ends = _LineEnds()
        self._hashes: dict[BodySpec, hashlib._Hash] = {}
        self._canons: list[BodyCanonicalizer] = []
        for spec in dict.fromkeys(specs):
            hasher = hashlib.new(spec.hash_name)
            self._hashes[spec] = hasher
            self._canons.append(BodyCanonicalizer(spec.canon, hasher.update, spec.length))
        self.size = 0  # raw octets seen

    def update(self, data: bytes) -> None:
        self.size += len(data)
        data = self._ends.feed(data)
        for canon in self._canons:
            canon.update(data)

    def digests(self) -> dict[BodySpec, bytes]:
        for canon in self._canons:
            canon.finish()
        return {spec: hasher.digest() for spec, hasher in self._hashes.items()}
