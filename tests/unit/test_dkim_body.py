"""Streaming DKIM body canonicalization (policy.dkim_body) against dkimpy's own functions.

dkimpy canonicalizes the whole body at once (``dkim.canonicalization``), after its parser
has rejoined the body lines with CRLF; ours gets the raw body in chunks split anywhere.
"""

from __future__ import annotations

import hashlib
import io
import re

import dkim
from dkim.canonicalization import CanonicalizationPolicy
from hypothesis import given, settings
from hypothesis import strategies as st

from kittiwake.policy.dkim_body import BodyHasher, BodySpec, find_body
from kittiwake.policy.dkim_io import CHUNK, hash_body, read_head

# Bodies made of the octets that matter: WSP, CR, LF, CRLF, text.
_PIECES = st.sampled_from([b"a", b"b", b" ", b"\t", b"\r", b"\n", b"\r\n", b"  ", b"\r\n\r\n"])
BODIES = st.lists(_PIECES, max_size=60).map(b"".join)
CANONS = st.sampled_from([b"simple", b"relaxed"])
LENGTHS = st.none() | st.integers(min_value=0, max_value=80)


def reference(raw: bytes, canon: bytes, length: int | None = None) -> bytes:
    """dkimpy: the body as its parser hands it on, then ``canonicalize_body``, then l=."""
    body = b"\r\n".join(re.split(b"\r?\n", raw))
    out = CanonicalizationPolicy.from_c_value(b"simple/" + canon).canonicalize_body(body)
    out = out if length is None else out[:length]
    return hashlib.sha256(out).digest()


def streamed(raw: bytes, cuts: list[int], specs: list[BodySpec]) -> dict[BodySpec, bytes]:
    hasher = BodyHasher(specs)
    previous = 0
    for cut in [*sorted(min(c, len(raw)) for c in cuts), len(raw)]:
        hasher.update(raw[previous:cut])
        previous = cut
    return hasher.digests()


@settings(max_examples=600, deadline=None)
@given(BODIES, st.lists(st.integers(min_value=0, max_value=200), max_size=8), CANONS, LENGTHS)
def test_streamed_body_hash_equals_dkimpy(
    raw: bytes, cuts: list[int], canon: bytes, length: int | None
) -> None:
    spec = BodySpec(canon, "sha256", length)
    assert streamed(raw, cuts, [spec])[spec] == reference(raw, canon, length)


@settings(max_examples=300, deadline=None)
@given(BODIES, st.lists(st.integers(min_value=0, max_value=200), max_size=8))
def test_one_pass_many_specs_and_one_octet_chunks(raw: bytes, cuts: list[int]) -> None:
    specs = [BodySpec(c, "sha256", n) for c in (b"simple", b"relaxed") for n in (None, 3)]
    specs.append(BodySpec(b"relaxed", "sha1"))
    once = streamed(raw, cuts, specs)
    by_octet = streamed(raw, list(range(len(raw))), specs)
    for spec in specs[:-1]:
        assert once[spec] == by_octet[spec] == reference(raw, spec.canon, spec.length)
    assert (
        once[specs[-1]]
        == hashlib.sha1(  # rsa-sha1 signatures are still parsed
            CanonicalizationPolicy.from_c_value(b"relaxed/relaxed").canonicalize_body(
                b"\r\n".join(re.split(b"\r?\n", raw))
            )
        ).digest()
    )


def test_known_edge_cases() -> None:
    cases = [
        b"",  # simple: CRLF; relaxed: empty
        b"\r\n\r\n\r\n",  # only empty lines
        b"x",  # no final CRLF: one is added
        b"x \t \r\n \r\n\r\n",  # trailing WSP and empty lines
        b"a\r\rb\r",  # bare CRs stay
        b"a\nb\n\n",  # bare LFs count as CRLF
        b" ",  # relaxed keeps a final lone SP (as dkimpy)
        b"\r\n" * 50_000 + b"x",  # empty lines that turn out not to be trailing
    ]
    for raw in cases:
        for canon in (b"simple", b"relaxed"):
            spec = BodySpec(canon, "sha256")
            for cuts in ([], list(range(0, len(raw), 3)), [len(raw) // 2]):
                assert streamed(raw, cuts, [spec])[spec] == reference(raw, canon), (raw, canon)


def test_whitespace_and_crlf_runs_across_chunk_boundaries() -> None:
    raw = b"line" + b" \t" * 100_000 + b"\r\n" + b"text" + b"\t" * 70_000 + b"end\r\n" * 3
    raw += b"\r\n" * 100_000
    for canon in (b"simple", b"relaxed"):
        spec = BodySpec(canon, "sha256")
        cuts = list(range(1, len(raw), CHUNK - 1))
        assert streamed(raw, cuts, [spec])[spec] == reference(raw, canon)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from([b"A: 1", b"B:\t2", b" folded", b"From x"]), max_size=5),
    st.sampled_from([b"\r\n", b"\n"]),
    BODIES,
)
def test_header_split_matches_dkimpy_parser(lines: list[bytes], end: bytes, body: bytes) -> None:
    message = b"".join(line + end for line in lines) + end + body
    try:
        headers, dkimpy_body = dkim.rfc822_parse(message)
    except (dkim.MessageFormatError, IndexError):  # dkimpy: a first line that is folded
        return
    for source in (message, io.BytesIO(message)):
        split = read_head(source)
        assert split.complete
        assert dkim.rfc822_parse(split.head)[0] == headers
        spec = BodySpec(b"simple", "sha256")
        hashes = hash_body(split, [spec])
        assert hashes is not None
        want = CanonicalizationPolicy.from_c_value(b"simple/simple").canonicalize_body(dkimpy_body)
        assert hashes[spec] == hashlib.sha256(want).digest()


def test_find_body_resumes_in_a_growing_buffer() -> None:
    assert find_body(b"\r\nbody") == (0, 2)
    assert find_body(b"A: 1\nB: 2\r\n\r\nbody") == (11, 13)
    assert find_body(b"A: 1\r\n") is None
    assert find_body(b"A: 1\r\n\r\n", 4) == (6, 8)
    big = io.BytesIO(b"A: " + b"x" * (CHUNK - 4) + b"\r\n\r\nbody")  # blank line across chunks
    split = read_head(big)
    assert split.head.endswith(b"x\r\n") and bytes(split.first) + big.read() == b"body"
