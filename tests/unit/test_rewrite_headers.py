"""Submission header rewriting (cleanup.rewrite, cleanup.rewrite_addr), RFC 6409 §8."""

from __future__ import annotations

import email.utils
import re
from datetime import datetime, timedelta, timezone

import pytest

from kittiwake.cleanup.rewrite import HeaderRewriter, RewriteSettings, Submission
from kittiwake.cleanup.rewrite_addr import qualify_address_list

NOW = datetime(2024, 11, 29, 14, 20, 5, tzinfo=timezone(timedelta(hours=1)))
DATE = "Fri, 29 Nov 2024 14:20:05 +0100"
SETTINGS = RewriteSettings("example.test")
MSGID_RE = re.compile(rb"Message-ID: <QID1\.[0-9a-f]{16}@mx\.test>\r\n")


def rewrite(
    message: bytes,
    *,
    settings: RewriteSettings = SETTINGS,
    submission: Submission | None = None,
    chunk: int = 0,
) -> bytes:
    r = HeaderRewriter(
        settings, queue_id="QID1", hostname="mx.test", now=NOW, submission=submission
    )
    if chunk:
        out = b"".join(r.feed(message[i : i + chunk]) for i in range(0, len(message), chunk))
    else:
        out = r.feed(message)
    return out + r.finish()


def split(out: bytes) -> tuple[bytes, bytes]:
    head, _, body = out.partition(b"\r\n\r\n")
    return head + b"\r\n", body


def test_missing_date_and_message_id_are_added_at_the_end() -> None:
    out = rewrite(b"From: a@x.test\r\nSubject: hi\r\n\r\nbody\r\n")
    head, body = split(out)
    assert head.startswith(b"From: a@x.test\r\nSubject: hi\r\nDate: " + DATE.encode() + b"\r\n")
    assert MSGID_RE.search(head)
    assert body == b"body\r\n"
    assert email.utils.parsedate_to_datetime(DATE) == NOW


def test_present_date_and_message_id_are_kept() -> None:
    msg = b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-Id: <a@b>\r\nTo: b@x.test\r\n\r\nhi\r\n"
    assert rewrite(msg) == msg


def test_add_missing_headers_off() -> None:
    msg = b"Subject: x\r\n\r\nhi\r\n"
    assert rewrite(msg, settings=RewriteSettings("example.test", add_missing_headers=False)) == msg


def test_unqualified_addresses_in_every_address_field() -> None:
    msg = (
        b"From: alice\r\nSender: Alice <alice>\r\nReply-To: bob (Bob B.)\r\n"
        b'To: carol, dave@example.org\r\nCc: Eve <eve>, "Quoted, Name" <frank>\r\n'
        b"Resent-To: gina\r\nSubject: alice\r\nX-Other: bob\r\n"
        b"Date: x\r\nMessage-ID: <m@x>\r\n\r\nTo: body-is-not-a-header\r\n"
    )
    assert rewrite(msg) == (
        b"From: alice@example.test\r\nSender: Alice <alice@example.test>\r\n"
        b"Reply-To: bob@example.test (Bob B.)\r\n"
        b"To: carol@example.test, dave@example.org\r\n"
        b'Cc: Eve <eve@example.test>, "Quoted, Name" <frank@example.test>\r\n'
        b"Resent-To: gina@example.test\r\nSubject: alice\r\nX-Other: bob\r\n"
        b"Date: x\r\nMessage-ID: <m@x>\r\n\r\nTo: body-is-not-a-header\r\n"
    )


def test_folded_fields_keep_their_folding() -> None:
    msg = (
        b"To: alice,\r\n\tbob@x.test,\r\n  Carol\r\n <carol>\r\n"
        b"Date: d\r\nMessage-ID: <m@x>\r\n\r\n"
    )
    assert rewrite(msg) == (
        b"To: alice@example.test,\r\n\tbob@x.test,\r\n  Carol\r\n <carol@example.test>\r\n"
        b"Date: d\r\nMessage-ID: <m@x>\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (" =?utf-8?q?J=C3=B6rg?= <joerg>", " =?utf-8?q?J=C3=B6rg?= <joerg@d.test>"),
        (" =?utf-8?b?SsO2cmc=?=", " =?utf-8?b?SsO2cmc=?="),  # an encoded-word alone: no address
        (' "J\xc3\xb6rg" <joerg>', ' "J\xc3\xb6rg" <joerg@d.test>'),  # 8-bit kept as is
        (" undisclosed-recipients:;", " undisclosed-recipients:;"),
        (" team: alice, bob@x.test;", " team: alice@d.test, bob@x.test;"),
        (" <>", " <>"),
        (" Alice Smith", " Alice Smith"),  # a phrase, not an address
        (' "a b"', ' "a b"@d.test'),
        (' "a b"@x.test', ' "a b"@x.test'),
        (" <@relay.test:a@x.test>", " <@relay.test:a@x.test>"),
        (" a@[192.0.2.1]", " a@[192.0.2.1]"),
        (" (comment only)", " (comment only)"),
        (" alice (nested (comment))", " alice@d.test (nested (comment))"),
        (' "unclosed, alice', ' "unclosed, alice'),  # unreadable: untouched
        (" <alice", " <alice"),
        (" alice>", " alice>"),
        (" < alice >", " < alice@d.test >"),
        ("", ""),
    ],
)
def test_qualify_address_list(value: str, expected: str) -> None:
    assert qualify_address_list(value, "d.test") == expected


def test_bcc_is_removed_only_when_asked() -> None:
    msg = (
        b"To: a@x.test\r\nBcc: secret@x.test,\r\n other@x.test\r\n"
        b"Subject: s\r\nDate: d\r\nMessage-ID: <m@x>\r\n\r\nhi\r\n"
    )
    assert rewrite(msg) == msg
    assert rewrite(msg, submission=Submission(remove_bcc=True)) == (
        b"To: a@x.test\r\nSubject: s\r\nDate: d\r\nMessage-ID: <m@x>\r\n\r\nhi\r\n"
    )


def test_from_is_added_for_local_submission_only_when_missing() -> None:
    sub = Submission(from_header="Alice <alice@example.test>")
    out = rewrite(b"Subject: s\r\n\r\nhi\r\n", submission=sub)
    assert b"\r\nFrom: Alice <alice@example.test>\r\nDate: " in out
    assert b"From: Alice" not in rewrite(b"From: me@x.test\r\n\r\nhi\r\n", submission=sub)
    assert b"From:" not in rewrite(b"Subject: s\r\n\r\nhi\r\n")


def test_message_without_header_section_gets_an_empty_line() -> None:
    out = rewrite(b"hello world\r\nsecond line\r\n")
    head, body = split(out)
    assert head.startswith(b"Date: ") and MSGID_RE.search(head)
    assert body == b"hello world\r\nsecond line\r\n"


def test_headers_only_and_empty_messages() -> None:
    out = rewrite(b"Subject: s\r\nTo: bob")  # no line end at all
    assert out.startswith(b"Subject: s\r\nTo: bob@example.test\r\nDate: ")
    assert not out.endswith(b"\r\n\r\n")
    assert rewrite(b"").startswith(b"Date: ")


def test_lf_only_messages_get_lf_headers() -> None:
    out = rewrite(b"Subject: s\nTo: bob\n\nbody\n")
    assert out.startswith(b"Subject: s\nTo: bob@example.test\nDate: ")
    assert b"\r" not in out
    assert out.endswith(b"\n\nbody\n")


def test_byte_by_byte_equals_all_at_once() -> None:
    msg = b"To: alice,\r\n bob\r\nSubject: =?utf-8?q?x?=\r\n\r\nline\r\n.\r\n"
    whole = rewrite(msg)
    r = HeaderRewriter(SETTINGS, queue_id="QID1", hostname="mx.test", now=NOW)
    pieces = b"".join(r.feed(msg[i : i + 1]) for i in range(len(msg))) + r.finish()
    assert MSGID_RE.sub(b"", pieces) == MSGID_RE.sub(b"", whole)


def test_a_header_section_over_the_cap_passes_untouched() -> None:
    small = RewriteSettings("example.test", max_header=1000)
    msg = b"To: alice\r\n" + b"X-Pad: " + b"y" * 2000 + b"\r\n\r\nbody\r\n"
    assert rewrite(msg, settings=small, chunk=100) == msg
    assert rewrite(msg, settings=small) == msg


def test_a_20_mb_body_streams_through_unchanged() -> None:
    """The body is never held: once the header section is out, each chunk comes straight
    back (the very same object), so memory stays bounded by the chunk size."""
    r = HeaderRewriter(SETTINGS, queue_id="QID1", hostname="mx.test", now=NOW)
    head = r.feed(b"To: alice\r\nDate: d\r\nMessage-ID: <m@x>\r\n\r\n")
    assert head == b"To: alice@example.test\r\nDate: d\r\nMessage-ID: <m@x>\r\n\r\n"
    assert r.done
    chunk = (b"To: alice\r\n" + b"z" * 1000 + b"\r\n") * 64  # body lines that look like headers
    total = 0
    for _ in range(20 * 1024 * 1024 // len(chunk) + 1):
        out = r.feed(chunk)
        assert out is chunk
        total += len(out)
    assert total > 20 * 1024 * 1024
    assert r.finish() == b""
