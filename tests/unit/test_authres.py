"""Authentication-Results (RFC 8601): header format and removal of forged fields."""

from __future__ import annotations

import email.parser

import authres  # dkimpy's parser, an independent reader of what we write
import pytest

from kittiwake.policy.authres import (
    Result,
    authserv_id_of,
    build_header,
    fields,
    strip_forged,
)
from kittiwake.policy.results import CheckResult


def test_build_header_single_line() -> None:
    header = build_header(
        "mx.example",
        [
            ("spf", "pass", "", {"smtp.mailfrom": "a@b.test"}),
            ("dkim", "pass", "", [("header.d", "b.test"), ("header.s", "sel")]),
            ("dmarc", "pass", "", {"header.from": "b.test"}),
            ("arc", "none", "", {}),
        ],
    )
    assert header.replace(";\r\n\t", "; ") == (
        "Authentication-Results: mx.example; spf=pass smtp.mailfrom=a@b.test; "
        "dkim=pass header.d=b.test header.s=sel; dmarc=pass header.from=b.test; arc=none"
    )


def test_short_header_stays_on_one_line() -> None:
    header = build_header("mx.example", [("spf", "pass", "", {"smtp.mailfrom": "a@b.test"})])
    assert header == "Authentication-Results: mx.example; spf=pass smtp.mailfrom=a@b.test"


def test_no_results_is_none() -> None:
    assert build_header("mx.example", []) == "Authentication-Results: mx.example; none"


def test_long_header_folds_and_parses() -> None:
    results: list[Result | CheckResult] = [
        ("spf", "pass", "", {"smtp.mailfrom": "someone.with.a.long.name@b.test"}),
        CheckResult("dkim", "fail", 'body hash "mismatch"', (("header.d", "b.test"),)),
        ("dmarc", "fail", "", {"header.from": "b.test", "policy.dmarc": "reject"}),
    ]
    header = build_header("mx.example", results)
    lines = header.split("\r\n")
    assert len(lines) == 4 and all(line.startswith("\t") for line in lines[1:])
    assert all(len(line) <= 78 for line in lines)
    parsed = authres.AuthenticationResultsHeader.parse(header)
    assert parsed.authserv_id == "mx.example"
    assert [(r.method, r.result) for r in parsed.results] == [
        ("spf", "pass"),
        ("dkim", "fail"),
        ("dmarc", "fail"),
    ]
    assert 'reason="body hash \\"mismatch\\""' in header  # quoted-pair escapes
    assert "mismatch" in parsed.results[1].reason


def test_values_cannot_inject_results_or_lines() -> None:
    header = build_header(
        "mx.example",
        [("spf", "fail", "x\r\nX-Evil: 1", {"smtp.mailfrom": "a;dkim=pass@b.test"})],
    )
    assert "\nX-Evil" not in header
    assert (
        header.split("\r\n")[1]
        == '\tspf=fail reason="x X-Evil: 1" smtp.mailfrom="a;dkim=pass@b.test"'
    )
    assert 'smtp.mailfrom="a;dkim=pass@b.test"' in header
    parsed = authres.AuthenticationResultsHeader.parse(header)
    assert [r.method for r in parsed.results] == ["spf"]
    with pytest.raises(ValueError):
        build_header("mx.example", [("spf=pass; dkim", "pass", "", {})])
    with pytest.raises(ValueError):
        build_header("mx.example", [("spf", "pass", "", {"mailfrom": "x"})])


def test_authserv_id_of() -> None:
    assert authserv_id_of(" MX.Example; spf=pass") == "mx.example"
    assert authserv_id_of(" (comment (nested)) mx.example 1; none") == "mx.example"
    assert authserv_id_of(' "mx.example"; none') == "mx.example"
    assert authserv_id_of("\r\n\tmx.example;\r\n\tspf=pass") == "mx.example"


SECTION = (
    b"Received: from outside\r\n"
    b"authentication-results: MX.EXAMPLE; spf=pass smtp.mailfrom=a@b.test\r\n"
    b"Authentication-Results: other.example; dkim=pass header.d=b.test\r\n"
    b"Authentication-Results:\r\n"
    b"\t(forged) mx.example;\r\n"
    b"\tdmarc=pass header.from=b.test\r\n"
    b"Authentication-Results: mx.example.evil; none\r\n"
    b"Subject: hi\r\n"
    b"\r\n"
    b"Authentication-Results: mx.example; body text stays\r\n"
)


def test_strip_forged_removes_only_our_id() -> None:
    out = strip_forged(SECTION, "mx.example")
    assert out == (
        b"Received: from outside\r\n"
        b"Authentication-Results: other.example; dkim=pass header.d=b.test\r\n"
        b"Authentication-Results: mx.example.evil; none\r\n"
        b"Subject: hi\r\n"
        b"\r\n"
        b"Authentication-Results: mx.example; body text stays\r\n"
    )
    msg = email.parser.BytesParser().parsebytes(out)
    assert msg.get_all("Authentication-Results") == [
        "other.example; dkim=pass header.d=b.test",
        "mx.example.evil; none",
    ]


def test_strip_forged_str_and_lf() -> None:
    text = "Authentication-Results: mx.example; spf=pass\nFrom: a@b.test\n\nbody\n"
    assert strip_forged(text, "MX.example") == "From: a@b.test\n\nbody\n"
    assert strip_forged(text, "other") == text


def test_fields_unfolded_names() -> None:
    got = fields(b"From: a@b.test\r\nSubject: a\r\n b\r\n\r\nX: y\r\n")
    assert got == [("From", " a@b.test"), ("Subject", " a\r\n b")]
