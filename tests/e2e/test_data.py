"""DATA and what lands in the Maildir: trace headers, dot-unstuffing, 8-bit and UTF-8 mail,
size and line limits (RFC 5321 §4.1.1.4, §4.4, §4.5.2, §4.5.3.1, RFC 6152, RFC 6531)."""

from __future__ import annotations

import re
import smtplib

import psutil
import pytest

from tests.support.server import KittiwakeServer
from tests.support.smtpclient import RawSMTP, message, queue_id


def lf(data: bytes) -> bytes:
    """Line ends as LF, whatever the Maildir writer chose (Maildir files use LF)."""
    return data.replace(b"\r\n", b"\n")


def headers_of(data: bytes) -> list[tuple[str, str]]:
    """Unfolded header fields of a stored message, in order."""
    head = lf(data).split(b"\n\n", 1)[0].decode("utf-8", "replace")
    unfolded = re.sub(r"\n[ \t]+", " ", head)
    return [(k, v.strip()) for k, _, v in (ln.partition(":") for ln in unfolded.split("\n"))]


def body_of(data: bytes) -> bytes:
    return lf(data).split(b"\n\n", 1)[1]


def test_delivered_message_has_trace_headers(server: KittiwakeServer, mailbox: str) -> None:
    with RawSMTP(server.mx) as c:
        c.ehlo("client.test")
        reply = c.send_mail("sender@client.test", [mailbox], message("trace", "Hi.\r\n"))
        reply.check(250, "2.0.0")
        qid = queue_id(reply)
    [msg] = server.wait_for_mail(mailbox)
    fields = headers_of(msg)
    names = [k.lower() for k, _ in fields]
    # RFC 5321 §4.4: Return-Path added at final delivery, then our Received on top.
    assert names[:3] == ["return-path", "delivered-to", "received"], fields[:4]
    assert fields[0][1] == "<sender@client.test>"
    assert fields[1][1].lower() == mailbox
    received = fields[2][1]
    assert re.search(r"\bfrom client\.test\b", received), received
    assert "127.0.0.1" in received, received
    assert re.search(r"\bby mx\.test\b", received), received
    assert re.search(r"\bwith ESMTP\b", received), received
    assert re.search(rf"\bid {re.escape(qid)}\b", received), (qid, received)
    assert re.search(r";\s*\w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}", received)
    assert ("Subject", "trace") in fields
    assert body_of(msg) == b"Hi.\n"
    # Maildir: LF line ends throughout; no stray CR.
    assert b"\r" not in msg


def test_received_says_smtp_after_helo(server: KittiwakeServer, mailbox: str) -> None:
    with RawSMTP(server.mx) as c:
        c.cmd("HELO old.client.test").check(250)
        c.send_mail("s@client.test", [mailbox], message()).check(250, "2.0.0")
    [msg] = server.wait_for_mail(mailbox)
    received = dict(headers_of(msg))["Received"]
    assert re.search(r"\bwith SMTP\b", received), received
    assert "old.client.test" in received


def test_null_sender_return_path(server: KittiwakeServer, mailbox: str) -> None:
    with RawSMTP(server.mx) as c:
        c.ehlo()
        c.send_mail("", [mailbox], message("bounce")).check(250, "2.0.0")
    [msg] = server.wait_for_mail(mailbox)
    assert lf(msg).startswith(b"Return-Path: <>\n")


def test_each_recipient_gets_its_own_copy(server: KittiwakeServer, mailboxes) -> None:
    rcpts = mailboxes(3)
    with smtplib.SMTP(*server.mx, local_hostname="client.test", timeout=10) as s:
        refused = s.sendmail("s@client.test", rcpts, message("three"))
        assert refused == {}
    for rcpt in rcpts:
        [msg] = server.wait_for_mail(rcpt)
        assert dict(headers_of(msg))["Delivered-To"].lower() == rcpt
        assert ("Subject", "three") in headers_of(msg)


def test_dot_unstuffing(server: KittiwakeServer, mailbox: str) -> None:
    # RFC 5321 §4.5.2: a leading dot is removed; "." alone inside the body was sent as "..".
    body = b"first\r\n..\r\n..two dots\r\n.x\r\nlast\r\n"
    with RawSMTP(server.mx) as c:
        c.ehlo()
        c.send_mail("s@client.test", [mailbox], message("dots", body)).check(250, "2.0.0")
    [msg] = server.wait_for_mail(mailbox)
    assert body_of(msg) == b"first\n.\n.two dots\nx\nlast\n"


def test_smtplib_dot_stuffing_roundtrip(server: KittiwakeServer, mailbox: str) -> None:
    body = "line\r\n.\r\n.leading\r\n..double\r\n"
    with smtplib.SMTP(*server.mx, local_hostname="client.test", timeout=10) as s:
        s.sendmail("s@client.test", [mailbox], message("dots2", body))
    [msg] = server.wait_for_mail(mailbox)
    assert body_of(msg) == b"line\n.\n.leading\n..double\n"


def test_8bitmime_body_delivered_intact(server: KittiwakeServer, mailbox: str) -> None:
    # RFC 6152: octets above 127 pass untouched; not UTF-8 on purpose (Latin-1 é, ÿ).
    body = b"caf\xe9 \xff\xfe\x80 na\xc3\xafve \xe2\x82\xac\r\n\tend\x7f\r\n"
    with RawSMTP(server.mx) as c:
        c.ehlo()
        reply = c.send_mail(
            "s@client.test", [mailbox], message("8bit", body), mail_params="BODY=8BITMIME"
        )
        reply.check(250, "2.0.0")
    [msg] = server.wait_for_mail(mailbox)
    assert body_of(msg) == lf(body)


def test_smtputf8_message_delivered(server: KittiwakeServer) -> None:
    rcpt = "jörg.ü@example.test"
    data = message("Grüße", "Schöne Grüße.\r\n", headers={"From": "bjørn@client.test"})
    with RawSMTP(server.mx) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<bjørn@client.test> SMTPUTF8 BODY=8BITMIME").check(250, "2.1.0")
        c.cmd(f"RCPT TO:<{rcpt}>").check(250, "2.1.5")
        c.cmd("DATA").check(354)
        c.send(data + b".\r\n")
        c.read_reply().check(250, "2.0.0")
    [msg] = server.wait_for_mail(rcpt)
    assert lf(msg).startswith("Return-Path: <bjørn@client.test>\n".encode())
    assert "Subject: Grüße".encode() in msg
    assert body_of(msg) == "Schöne Grüße.\n".encode()


def test_headers_only_message(server: KittiwakeServer, mailbox: str) -> None:
    with RawSMTP(server.mx) as c:
        c.ehlo()
        c.send_mail("s@client.test", [mailbox], b"Subject: bare\r\n").check(250, "2.0.0")
    [msg] = server.wait_for_mail(mailbox)
    assert b"Subject: bare" in msg


# --------------------------------------------------------------------- limits


def test_message_over_size_limit(server: KittiwakeServer, mailbox: str) -> None:
    # RFC 1870 §6.3 / RFC 5321 §4.5.3.1.10: refuse after the final dot, 552 5.3.4.
    line = b"x" * 998 + b"\r\n"
    body = line * (1048576 // len(line) + 10)
    with RawSMTP(server.mx) as c:
        c.ehlo()
        c.send_mail("s@client.test", [mailbox], message("big", body)).check(552, "5.3.4")
        c.cmd("NOOP").check(250, "2.0.0")
        c.cmd("RCPT TO:<x@example.test>").check(503, "5.5.1")  # the transaction is over
    server.exactly(mailbox, 0, settle=0.3)


def test_message_just_under_size_limit(server: KittiwakeServer, mailbox: str) -> None:
    head = message("fits", b"")
    line = b"y" * 998 + b"\r\n"
    room = 1048576 - len(head) - 2000  # our Received header is not the client's fault
    body = line * (room // len(line))
    with RawSMTP(server.mx) as c:
        c.ehlo()
        c.send_mail("s@client.test", [mailbox], head + body).check(250, "2.0.0")
    [msg] = server.wait_for_mail(mailbox)
    assert body_of(msg) == lf(body)


def test_text_line_limit_in_data(server: KittiwakeServer, mailbox: str) -> None:
    # RFC 5321 §4.5.3.1.6: 1000 octets including CRLF.
    ok = b"a" * 998 + b"\r\n"
    with RawSMTP(server.mx) as c:
        c.ehlo()
        c.send_mail("s@client.test", [mailbox], message("ok", ok)).check(250, "2.0.0")
        too_long = b"b" * 999 + b"\r\n"
        c.send_mail("s@client.test", [mailbox], message("long", too_long)).check(550, "5.6.0")
        huge = b"c" * 300_000 + b"\r\n"
        c.send_mail("s@client.test", [mailbox], message("huge", huge)).check(550, "5.6.0")
        c.cmd("NOOP").check(250, "2.0.0")
    [msg] = server.exactly(mailbox, 1)
    assert b"Subject: ok" in msg


@pytest.mark.parametrize("length", [512])
def test_command_line_limit(server: KittiwakeServer, length: int) -> None:
    # RFC 5321 §4.5.3.1.4: 512 octets including the verb and CRLF must be accepted.
    with RawSMTP(server.mx) as c:
        c.ehlo()
        c.send(b"NOOP " + b"n" * (length - 7) + b"\r\n")
        c.read_reply().check(250, "2.0.0")
        c.send(b"NOOP " + b"n" * (length - 6) + b"\r\n")
        c.read_reply().check(500, "5.5.2")
        c.cmd("NOOP").check(250, "2.0.0")


def test_megabyte_line_in_command_mode(server: KittiwakeServer) -> None:
    with RawSMTP(server.mx, timeout=20) as c:
        c.ehlo()
        c.send(b"A" * (1024 * 1024))
        c.send(b"\r\n")
        c.read_reply().check(500, "5.5.2")
        c.cmd("NOOP").check(250, "2.0.0")
        c.cmd("MAIL FROM:<a@client.test>").check(250, "2.1.0")
        assert c.nothing_pending() == b""


def test_megabyte_line_starting_like_a_command(server: KittiwakeServer) -> None:
    # The tail of a long line must not be parsed as a fresh command.
    with RawSMTP(server.mx, timeout=20) as c:
        c.ehlo()
        c.send(b"NOOP " + b"B" * 700_000 + b"QUIT\r\n")
        c.read_reply().check(500, "5.5.2")
        c.cmd("NOOP").check(250, "2.0.0")
        assert c.nothing_pending() == b""


def test_endless_line_is_not_buffered(server: KittiwakeServer) -> None:
    # A line without CRLF is discarded as it streams in: the server's memory stays flat.
    proc = psutil.Process(server.pid)
    before = proc.memory_info().rss
    with RawSMTP(server.mx, timeout=30) as c:
        c.ehlo()
        chunk = b"M" * (1024 * 1024)
        for _ in range(32):
            c.send(chunk)
        grown = proc.memory_info().rss - before
        c.send(b"\r\n")
        c.read_reply().check(500, "5.5.2")
        c.cmd("NOOP").check(250, "2.0.0")
    assert grown < 16 * 1024 * 1024, f"RSS grew by {grown / 2**20:.1f} MiB for a 32 MiB line"
