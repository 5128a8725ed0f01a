"""CHUNKING and BINARYMIME (RFC 3030): BDAT chunks, binary bodies, refused chunks."""

from __future__ import annotations

from tests.support.server import KittiwakeServer
from tests.support.smtpclient import RawSMTP, message, queue_id


def _start(c: RawSMTP, rcpt: str, params: str = "") -> None:
    c.ehlo()
    c.cmd(f"MAIL FROM:<s@client.test>{' ' + params if params else ''}").check(250, "2.1.0")
    c.cmd(f"RCPT TO:<{rcpt}>").check(250, "2.1.5")


def _body(stored: bytes) -> bytes:
    return stored.split(b"\n\n", 1)[1] if b"\n\n" in stored else b""


def test_several_chunks_then_bdat_0_last(server: KittiwakeServer, mailbox: str) -> None:
    data = message("chunks", "one\r\ntwo\r\n.\r\nthree\r\n")
    parts = [data[:7], data[7:40], data[40:]]
    with RawSMTP(server.mx) as c:
        _start(c, mailbox)
        for part in parts:
            c.send(b"BDAT %d\r\n" % len(part) + part)
            c.read_reply().check(250, "2.0.0")
        reply = c.cmd("BDAT 0 LAST").check(250, "2.0.0")
        qid = queue_id(reply)
    [msg] = server.wait_for_mail(mailbox)
    assert qid.encode() in msg
    # No dot-unstuffing in BDAT: the "." line is content (RFC 3030 §2).
    assert _body(msg.replace(b"\r\n", b"\n")) == b"one\ntwo\n.\nthree\n"


def test_single_chunk_last_and_pipelined_chunks(server: KittiwakeServer, mailboxes) -> None:
    a, b = mailboxes(2)
    with RawSMTP(server.mx) as c:
        _start(c, a)
        data = message("single")
        c.send(b"BDAT %d LAST\r\n" % len(data) + data)
        c.read_reply().check(250, "2.0.0")
        # RFC 3030 §4.2: BDAT may be pipelined; everything in one write.
        data2 = message("pipelined", "x" * 5000 + "\r\n")
        c.send(
            f"MAIL FROM:<s@client.test>\r\nRCPT TO:<{b}>\r\n".encode()
            + b"BDAT 100\r\n"
            + data2[:100]
            + b"BDAT %d LAST\r\n" % (len(data2) - 100)
            + data2[100:]
            + b"QUIT\r\n"
        )
        c.read_reply().check(250, "2.1.0")
        c.read_reply().check(250, "2.1.5")
        c.read_reply().check(250, "2.0.0")
        last = c.read_reply().check(250, "2.0.0")
        assert "queued as" in last.text
        c.read_reply().check(221, "2.0.0")
    assert b"Subject: single" in server.wait_for_mail(a)[0]
    assert b"x" * 5000 in server.wait_for_mail(b)[0]


def test_binarymime_content_delivered_intact(server: KittiwakeServer, mailbox: str) -> None:
    payload = bytes(range(256)) * 4 + b"\r\n.\r\n\x00\r\rEND\n\n."
    data = message("binary", b"", headers={"Content-Transfer-Encoding": "binary"}) + payload
    with RawSMTP(server.mx) as c:
        _start(c, mailbox, "BODY=BINARYMIME")
        c.send(b"BDAT %d\r\n" % 300 + data[:300])
        c.read_reply().check(250, "2.0.0")
        c.send(b"BDAT %d LAST\r\n" % (len(data) - 300) + data[300:])
        c.read_reply().check(250, "2.0.0")
        c.cmd("NOOP").check(250, "2.0.0")
    [msg] = server.wait_for_mail(mailbox)
    stored = msg.split(b"Subject: binary", 1)[1]
    # A binary body is opaque: every octet (NUL, bare CR, bare LF, CRLF) must survive.
    assert stored.endswith(payload), stored[-80:]


def test_data_refused_with_binarymime(server: KittiwakeServer, mailbox: str) -> None:
    # RFC 3030 §3: BODY=BINARYMIME requires BDAT.
    with RawSMTP(server.mx) as c:
        _start(c, mailbox, "BODY=BINARYMIME")
        c.cmd("DATA").check(503, "5.5.1")
        c.cmd("NOOP").check(250, "2.0.0")


def test_data_after_bdat_refused(server: KittiwakeServer, mailbox: str) -> None:
    with RawSMTP(server.mx) as c:
        _start(c, mailbox)
        c.send(b"BDAT 5\r\nabcde")
        c.read_reply().check(250, "2.0.0")
        c.cmd("DATA").check(503, "5.5.1")
        c.cmd("RSET").check(250, "2.0.0")
    server.exactly(mailbox, 0, settle=0.3)


def test_refused_bdat_consumes_its_octets(server: KittiwakeServer) -> None:
    # RFC 3030 §2: the server must read the chunk even when it refuses it.
    chunk = b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<y@example.test>\r\nNOOP\r\n"
    with RawSMTP(server.mx) as c:
        c.ehlo()
        c.send(b"BDAT %d LAST\r\n" % len(chunk) + chunk + b"RSET\r\n")
        c.read_reply().check(503, "5.5.1")  # no MAIL
        c.read_reply().check(250, "2.0.0")  # RSET; nothing from inside the chunk
        c.cmd("MAIL FROM:<s@client.test>").check(250, "2.1.0")
        c.cmd("RCPT TO:<x@elsewhere.test>").check(554, "5.7.1")
        c.send(b"BDAT %d\r\n" % len(chunk) + chunk + b"NOOP\r\n")
        c.read_reply().check(554, "5.5.1")  # no valid recipient
        c.read_reply().check(250, "2.0.0")
        assert c.nothing_pending() == b""


def test_bdat_over_size_limit(server: KittiwakeServer, mailbox: str) -> None:
    big = b"z" * (1048576 + 1000)
    with RawSMTP(server.mx, timeout=20) as c:
        _start(c, mailbox)
        c.send(b"BDAT %d LAST\r\n" % len(big) + big)
        c.read_reply().check(552, "5.3.4")
        c.cmd("NOOP").check(250, "2.0.0")
        c.cmd("RCPT TO:<x@example.test>").check(503, "5.5.1")
    server.exactly(mailbox, 0, settle=0.3)


def test_rset_after_a_chunk_delivers_nothing(server: KittiwakeServer, mailbox: str) -> None:
    with RawSMTP(server.mx) as c:
        _start(c, mailbox)
        c.send(b"BDAT 10\r\n0123456789")
        c.read_reply().check(250, "2.0.0")
        c.cmd("RSET").check(250, "2.0.0")
        c.cmd("BDAT 0 LAST").check(503, "5.5.1")
    server.exactly(mailbox, 0, settle=0.3)
