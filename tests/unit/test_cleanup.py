"""The Received trace header and the cleanup sink (with a real SQLite store)."""

from __future__ import annotations

import email
import email.policy
import email.utils
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from kittiwake.cleanup.trace import (
    address_literal,
    local_received_header,
    protocol_keyword,
    received_header,
)
from kittiwake.cleanup.writer import Cleanup
from kittiwake.envelope import Envelope, Recipient, SessionInfo
from kittiwake.errors import StoreError
from kittiwake.queue.sqlite import SQLiteStore

NOW = datetime(2024, 11, 29, 14, 20, 5, tzinfo=timezone(timedelta(hours=1)))
QID = "1K1DCH56844T7W"


def session(**kw: object) -> SessionInfo:
    base: dict[str, object] = {
        "client_ip": "192.0.2.7",
        "client_port": 40000,
        "server_ip": "127.0.0.1",
        "server_port": 25,
        "helo": "mail.example.org",
        "esmtp": True,
    }
    base.update(kw)
    return SessionInfo(**base)  # type: ignore[arg-type]


def header(s: SessionInfo, rcpts: list[str], *, smtputf8: bool = False) -> str:
    raw = received_header(s, rcpts, QID, "mx.example.net", NOW, smtputf8=smtputf8)
    assert raw.endswith(b"\r\n")
    lines = raw.split(b"\r\n")[:-1]
    assert all(len(line) < 998 for line in lines)
    assert all(line.startswith(b"\t") for line in lines[1:])  # folded continuation lines
    return raw.decode("utf-8")


def test_full_esmtps_header_for_one_recipient() -> None:
    s = session(tls=True, tls_version="TLSv1.3", tls_cipher="TLS_AES_256_GCM_SHA384")
    assert header(s, ["bob@example.net"]) == (
        "Received: from mail.example.org ([192.0.2.7])\r\n"
        "\tby mx.example.net (Kittiwake) with ESMTPS id 1K1DCH56844T7W\r\n"
        "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)\r\n"
        "\tfor <bob@example.net>;\r\n"
        "\tFri, 29 Nov 2024 14:20:05 +0100\r\n"
    )


def test_no_for_clause_with_several_recipients() -> None:
    text = header(session(), ["a@example.net", "hidden-bcc@example.net"])
    assert "for" not in text and "hidden-bcc" not in text
    assert "with ESMTP id 1K1DCH56844T7W;\r\n\tFri, 29 Nov 2024" in text


def test_parses_as_a_header_with_a_valid_date() -> None:
    raw = received_header(session(), ["bob@example.net"], QID, "mx.example.net", NOW)
    msg = email.message_from_bytes(raw + b"Subject: x\r\n\r\nbody\r\n", policy=email.policy.SMTP)
    value = str(msg["Received"])
    assert value.startswith("from mail.example.org ([192.0.2.7])")
    date = value.rsplit(";", 1)[1].strip()
    assert email.utils.parsedate_to_datetime(date) == NOW


@pytest.mark.parametrize(
    ("kw", "utf8", "expected"),
    [
        ({"esmtp": False}, False, "SMTP"),
        ({}, False, "ESMTP"),
        ({"auth_user": "u"}, False, "ESMTPA"),
        ({"tls": True}, False, "ESMTPS"),
        ({"tls": True, "auth_user": "u"}, False, "ESMTPSA"),
        ({}, True, "UTF8SMTP"),
        ({"auth_user": "u"}, True, "UTF8SMTPA"),
        ({"tls": True}, True, "UTF8SMTPS"),
        ({"tls": True, "auth_user": "u"}, True, "UTF8SMTPSA"),
        ({"listener": "lmtp"}, False, "LMTP"),
        ({"listener": "lmtp", "tls": True, "auth_user": "u"}, False, "LMTPSA"),
        ({"listener": "lmtp", "esmtp": False}, True, "UTF8LMTP"),
    ],
)
def test_protocol_keywords(kw: dict[str, object], utf8: bool, expected: str) -> None:
    assert protocol_keyword(session(**kw), smtputf8=utf8) == expected


def test_address_literals() -> None:
    assert address_literal("192.0.2.1") == "[192.0.2.1]"
    assert address_literal("2001:db8::1") == "[IPv6:2001:db8::1]"
    assert address_literal("::ffff:192.0.2.1") == "[192.0.2.1]"
    assert address_literal("fe80::1%eth0") == "[IPv6:fe80::1]"


def test_hostile_helo_is_contained() -> None:
    evil = "x)\r\nX-Injected: yes\r\n(\\"
    text = header(session(helo=evil), ["bob@example.net"])
    assert "\r\nX-Injected" not in text
    assert text.startswith("Received: from [192.0.2.7] (helo=x???X-Injected:?yes????)\r\n")
    assert header(session(helo="h" * 5000), ["b@x"]).count("h" * 255) == 1
    assert header(session(helo=""), ["b@x"]).startswith("Received: from [192.0.2.7]\r\n")
    assert header(session(helo="[192.0.2.7]"), ["b@x"]).startswith(
        "Received: from [192.0.2.7] ([192.0.2.7])\r\n"
    )


def test_hostile_tls_names_and_recipient() -> None:
    s = session(tls=True, tls_version="TLSv1.3)\r\nX: y", tls_cipher="A(B)C")
    text = header(s, ["a@b\r\nX-Injected: 1"])
    assert "(using TLSv1.3Xy with cipher ABC)" in text
    assert "X-Injected" not in text and "for <" not in text


def test_utf8_recipient_only_with_smtputf8() -> None:
    assert "for <" not in header(session(), ["jörg@example.net"])
    text = header(session(), ["jörg@example.net"], smtputf8=True)
    assert "with UTF8SMTP id" in text and "for <jörg@example.net>;" in text


async def test_cleanup_sink_spools_header_then_body(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    await store.open()
    try:
        env = Envelope("a@example.org", (Recipient("bob@example.net"),))
        cleanup = Cleanup(store, "mx.example.net", clock=lambda: NOW)
        sink = cleanup.begin(session(), env)
        sink.write(b"Subject: hi\r\n\r\n")
        sink.write(b"hello\r\n")
        msg = await sink.commit(env)
        sink.abort()  # after a successful commit: a no-op
        assert msg.queue_id == sink.queue_id and msg.size == sink.size
        with store.open_body(msg.queue_id) as f:
            body = f.read()
        expected_header = received_header(
            session(), ["bob@example.net"], msg.queue_id, "mx.example.net", NOW
        )
        assert body == expected_header + b"Subject: hi\r\n\r\nhello\r\n"
        with pytest.raises(StoreError):
            await sink.commit(env)

        dropped = cleanup.begin(session(), env)
        dropped.write(b"x" * 200_000)
        dropped.abort()
        dropped.abort()
        assert not (store.spool_dir / dropped.queue_id).exists()
        assert await store.get(dropped.queue_id) is None
    finally:
        await store.close()


async def test_begin_local_writes_a_by_only_trace_field(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    await store.open()
    try:
        env = Envelope("", (Recipient("alice@example.org"),), internal="bounce")
        cleanup = Cleanup(store, "mx.example.net", clock=lambda: NOW)
        sink = cleanup.begin_local(env)
        sink.write(b"From: MAILER-DAEMON@mx.example.net\r\n\r\nnotice\r\n")
        msg = await sink.commit()
        assert msg.envelope == env
        with store.open_body(msg.queue_id) as f:
            body = f.read()
        assert (
            body
            == (
                f"Received: by mx.example.net (Kittiwake) id {msg.queue_id};\r\n"
                "\tFri, 29 Nov 2024 14:20:05 +0100\r\n"
                "From: MAILER-DAEMON@mx.example.net\r\n\r\nnotice\r\n"
            ).encode()
        )
        parsed = email.message_from_bytes(body, policy=email.policy.SMTP)
        date = str(parsed["Received"]).rsplit(";", 1)[1].strip()
        assert email.utils.parsedate_to_datetime(date) == NOW
        hostile = local_received_header("Q/../x", "h\r\nX: y", NOW)
        assert hostile.startswith(b"Received: by hXy (Kittiwake) id Q..x;\r\n\t")
        assert hostile.count(b"\r\n") == 2
    finally:
        await store.close()
