"""ServerConnection sessions: pipelining, PAUSED, DATA, BDAT, smuggling, EOF, EHLO content."""

from __future__ import annotations

import pytest

from kittiwake.envelope import BodyType, Recipient
from kittiwake.proto import (
    NEED_DATA,
    PAUSED,
    BadCommand,
    BareLinefeedPolicy,
    BodyData,
    BodyEnd,
    ConnectionClosed,
    DataStart,
    Helo,
    MailFrom,
    Noop,
    Quit,
    RcptTo,
    Reset,
    ServerConnection,
    State,
)
from kittiwake.proto import replies as R
from tests.unit.test_proto_support import QUEUED, Answers, Driver, config, ehlo, reply_codes

TX = b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n"


def test_pipelined_transaction_in_one_chunk() -> None:
    d = Driver()
    script = (
        b"EHLO client.test\r\nMAIL FROM:<a@b.test> BODY=8BITMIME\r\n"
        b"RCPT TO:<c@d.test>\r\nRCPT TO:<e@f.test> NOTIFY=NEVER\r\nDATA\r\n"
        b"Subject: hi\r\n\r\nbody\r\n.\r\nQUIT\r\n"
    )
    assert d.codes(script) == [
        "250",
        "250 2.1.0",
        "250 2.1.5",
        "250 2.1.5",
        "354",
        "250 2.0.0",
        "221 2.0.0",
    ]
    kinds = [type(e) for e in d.events]
    assert kinds == [Helo, MailFrom, RcptTo, RcptTo, DataStart, BodyData, BodyEnd, Quit]
    assert d.of(MailFrom)[0] == MailFrom("a@b.test", body_type=BodyType.EIGHTBITMIME)
    assert bytes(d.body) == b"Subject: hi\r\n\r\nbody\r\n"
    assert d.conn.state is State.CLOSED


def test_paused_until_answered_and_replies_in_order() -> None:
    conn = ServerConnection(config())
    conn.receive_data(b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nNOOP\r\nRCPT TO:<c@d.test>\r\n")
    assert isinstance(conn.next_event(), Helo)
    assert conn.next_event() is PAUSED
    assert conn.next_event() is PAUSED
    assert conn.pending == Helo("EHLO", "c.test")
    conn.accept_helo()
    assert isinstance(conn.next_event(), MailFrom)
    assert conn.next_event() is PAUSED
    conn.reject(R.BAD_SENDER)
    assert conn.next_event() == Noop("NOOP")
    assert conn.next_event() == BadCommand(R.NEED_MAIL)  # the MAIL was rejected
    assert conn.next_event() is NEED_DATA
    assert reply_codes(conn.data_to_send()) == ["250", "501 5.1.7", "250 2.0.0", "503 5.5.1"]
    assert conn.data_to_send() == b""


def test_custom_accept_replies() -> None:
    conn = ServerConnection(config())
    conn.receive_data(b"HELO c.test\r\n" + TX + b"DATA\r\n")
    assert isinstance(conn.next_event(), Helo)
    conn.accept()  # accept() on Helo is accept_helo()
    assert isinstance(conn.next_event(), MailFrom)
    conn.accept(R.OK)
    assert isinstance(conn.next_event(), RcptTo)
    conn.accept(R.OK)
    assert isinstance(conn.next_event(), DataStart)
    conn.accept()
    out = conn.data_to_send()
    assert out.startswith(b"250 mx.test greets c.test\r\n250 2.0.0 OK\r\n250 2.0.0 OK\r\n354 ")
    assert not conn.esmtp and conn.helo_domain == "c.test"


def test_body_end_reject_and_transaction_over() -> None:
    d = Driver(answers=Answers(body=False))
    ehlo(d)
    assert d.codes(TX + b"DATA\r\nx\r\n.\r\nRCPT TO:<c@d.test>\r\n") == [
        "250 2.1.0",
        "250 2.1.5",
        "354",
        "550 5.7.1",
        "503 5.5.1",  # the transaction is over after BodyEnd
    ]
    assert not d.conn.in_transaction
    assert d.conn.state is State.GREETED


def test_data_start_rejected_ends_transaction() -> None:
    d = Driver(answers=Answers(data=False))
    ehlo(d)
    assert d.codes(TX + b"DATA\r\nDATA\r\n") == ["250 2.1.0", "250 2.1.5", "550 5.7.1", "503 5.5.1"]
    assert Reset() in d.events


def test_rcpt_rejected_then_data_gets_554() -> None:
    d = Driver(answers=Answers(rcpt=False))
    ehlo(d)
    assert d.codes(TX + b"DATA\r\n") == ["250 2.1.0", "550 5.7.1", "554 5.5.1"]
    assert d.conn.in_transaction


def test_helo_in_transaction_emits_reset_first() -> None:
    d = Driver()
    ehlo(d)
    d.feed(TX)
    d.events.clear()
    assert d.codes(b"EHLO again.test\r\n") == ["250"]
    assert d.events == [Reset(), Helo("EHLO", "again.test")]
    assert d.conn.helo_domain == "again.test"
    assert not d.conn.in_transaction


def test_rset_emits_reset() -> None:
    d = Driver()
    ehlo(d)
    d.feed(TX)
    assert d.conn.recipient_count == 1
    assert d.codes(b"RSET\r\n") == ["250 2.0.0"]
    assert d.events[-1] == Reset()
    assert d.conn.recipient_count == 0 and d.conn.state is State.GREETED


def test_ehlo_keywords() -> None:
    d = Driver(
        config(max_message_size=1000, starttls_available=True, auth_mechanisms=("PLAIN", "LOGIN"))
    )
    out = ehlo(d).decode()
    assert out.splitlines() == [
        "250-mx.test greets client.test",
        "250-SIZE 1000",
        "250-PIPELINING",
        "250-8BITMIME",
        "250-SMTPUTF8",
        "250-ENHANCEDSTATUSCODES",
        "250-CHUNKING",
        "250-BINARYMIME",
        "250-DSN",
        "250 STARTTLS",  # AUTH only inside TLS by default
    ]
    d = Driver(config(max_message_size=0, auth_mechanisms=("plain",), auth_requires_tls=False))
    lines = ehlo(d).decode().splitlines()
    assert "250-SIZE" in lines and lines[-1] == "250 AUTH PLAIN"
    assert "STARTTLS" not in "".join(lines)


def test_helo_reply_has_no_extensions() -> None:
    d = Driver()
    assert d.feed(b"HELO c.test\r\n") == b"250 mx.test greets c.test\r\n"


# ----------------------------------------------------------------------------- DATA content


def test_data_streams_in_pieces_and_unstuffs() -> None:
    d = Driver()
    ehlo(d)
    assert d.codes(TX + b"DATA\r\n") == ["250 2.1.0", "250 2.1.5", "354"]
    assert d.feed(b"line 1\r\n..line 2\r") == b""
    assert d.feed(b"\n.") == b""
    assert d.codes(b"\r\nNOOP\r\n") == ["250 2.0.0", "250 2.0.0"]
    assert bytes(d.body) == b"line 1\r\n.line 2\r\n"
    assert d.of(BodyEnd) == [BodyEnd(size=len(b"line 1\r\n.line 2\r\n"))]


@pytest.mark.parametrize(
    "variant", [b"\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\r", b"\r\n.\n", b"\n.\r", b"\r.\n"]
)
@pytest.mark.parametrize("policy", list(BareLinefeedPolicy))
def test_smuggling_through_the_session(variant: bytes, policy: BareLinefeedPolicy) -> None:
    d = Driver(config(bare_linefeed=policy))
    ehlo(d)
    smuggled = b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@d.test>\r\nDATA\r\nevil\r\n"
    out = d.codes(TX + b"DATA\r\nSubject: x\r\n\r\nhi" + variant + smuggled + b".\r\nQUIT\r\n")
    expected_end = "250 2.0.0" if policy is BareLinefeedPolicy.NORMALIZE else "550 5.6.0"
    assert out == ["250 2.1.0", "250 2.1.5", "354", expected_end, "221 2.0.0"]
    ends = d.of(BodyEnd)
    assert len(ends) == 1  # exactly one message
    assert len(d.of(MailFrom)) == 1
    if policy is BareLinefeedPolicy.NORMALIZE:
        assert ends[0].failure is None
        body = bytes(d.body)
        assert b"MAIL FROM:<evil@x.test>\r\n" in body
        assert body.replace(b"\r\n", b"").count(b"\r") == 0
        assert body.replace(b"\r\n", b"").count(b"\n") == 0
    else:
        assert ends[0].failure == R.BARE_LINEFEED


def test_data_too_big_is_drained_then_552() -> None:
    d = Driver(config(max_message_size=100))
    ehlo(d)
    d.feed(TX + b"DATA\r\n")
    for _ in range(10):
        assert d.feed(b"x" * 50 + b"\r\n") == b""
    assert d.codes(b".\r\nNOOP\r\n") == ["552 5.3.4", "250 2.0.0"]
    end = d.of(BodyEnd)[0]
    assert end.failure == R.TOO_BIG and end.size > 100
    assert len(d.body) <= 100
    assert d.conn.state is State.GREETED


def test_data_long_line_fails_after_end() -> None:
    d = Driver()
    ehlo(d)
    assert d.codes(TX + b"DATA\r\n" + b"x" * 1001 + b"\r\nmore\r\n.\r\nNOOP\r\n") == [
        "250 2.1.0",
        "250 2.1.5",
        "354",
        "550 5.6.0",
        "250 2.0.0",
    ]
    assert d.of(BodyEnd)[0].failure == R.BODY_LINE_TOO_LONG


def test_eof_during_data() -> None:
    d = Driver()
    ehlo(d)
    d.feed(TX + b"DATA\r\npartial")
    d.feed(b"")
    assert isinstance(d.events[-1], ConnectionClosed)
    assert not d.of(BodyEnd)
    assert d.conn.next_event() == ConnectionClosed()  # stays closed


def test_eof_processes_buffered_commands_first() -> None:
    conn = ServerConnection(config())
    conn.receive_data(b"NOOP\r\nNOOP\r\nNOO")
    conn.receive_data(b"")
    assert conn.next_event() == Noop("NOOP")
    assert conn.next_event() == Noop("NOOP")
    assert conn.next_event() == ConnectionClosed()
    assert conn.next_event() == ConnectionClosed()
    conn.receive_data(b"")  # repeated EOF is harmless


# ------------------------------------------------------------------------------------ BDAT


def test_bdat_chunks_are_binary_safe() -> None:
    d = Driver()
    ehlo(d)
    chunk1 = b"Subject: x\r\n\r\n.\r\n"  # would end DATA; not BDAT
    chunk2 = b"\x00\n\r.\n"
    script = TX + b"BDAT %d\r\n" % len(chunk1) + chunk1 + b"BDAT %d LAST\r\n" % len(chunk2) + chunk2
    assert d.codes(script + b"NOOP\r\n") == [
        "250 2.1.0",
        "250 2.1.5",
        "250 2.0.0",
        "250 2.0.0",
        "250 2.0.0",
    ]
    assert bytes(d.body) == chunk1 + chunk2
    assert d.of(BodyEnd) == [BodyEnd(size=len(chunk1 + chunk2))]
    assert d.of(DataStart) == [DataStart(bdat=True)]  # asked once per transaction
    assert d.conn.state is State.GREETED


def test_bdat_chunk_split_over_many_feeds() -> None:
    d = Driver()
    ehlo(d)
    assert d.codes(TX + b"BDAT 10 LAST\r\n01234") == ["250 2.1.0", "250 2.1.5"]
    assert d.codes(b"56789NOOP\r\n") == ["250 2.0.0", "250 2.0.0"]
    assert bytes(d.body) == b"0123456789"


def test_bdat_zero_last() -> None:
    d = Driver()
    ehlo(d)
    assert d.codes(TX + b"BDAT 0 LAST\r\n") == ["250 2.1.0", "250 2.1.5", "250 2.0.0"]
    assert d.of(BodyEnd) == [BodyEnd(size=0)]


def test_bdat_then_data_is_503_and_bdat_after_last_is_consumed() -> None:
    d = Driver()
    ehlo(d)
    out = d.codes(TX + b"BDAT 2\r\nabDATA\r\nBDAT 2 LAST\r\ncdBDAT 4\r\nRSETNOOP\r\n")
    assert out == [
        "250 2.1.0",
        "250 2.1.5",
        "250 2.0.0",
        "503 5.5.1",
        "250 2.0.0",
        "503 5.5.1",
        "250 2.0.0",
    ]
    assert bytes(d.body) == b"abcd"


def test_bdat_rejected_by_driver_consumes_chunk_before_reply() -> None:
    d = Driver(answers=Answers(data=False))
    ehlo(d)
    assert d.codes(TX + b"BDAT 5\r\n12") == ["250 2.1.0", "250 2.1.5"]  # reply waits for the octets
    assert d.codes(b"345BDAT 3 LAST\r\nxyzNOOP\r\n") == ["550 5.7.1", "503 5.5.1", "250 2.0.0"]
    assert d.body == b""
    assert Reset() in d.events


def test_bdat_refused_without_recipients_consumes_octets() -> None:
    d = Driver(answers=Answers(rcpt=False))
    ehlo(d)
    out = d.codes(TX + b"BDAT 12 LAST\r\nQUIT\r\nQUIT\r\nNOOP\r\n")
    assert out == ["250 2.1.0", "550 5.7.1", "554 5.5.1", "250 2.0.0"]
    assert d.conn.state is not State.CLOSED


def test_bdat_too_big_then_pipelined_chunks_discarded() -> None:
    d = Driver(config(max_message_size=10))
    ehlo(d)
    out = d.codes(TX + b"BDAT 6\r\n123456BDAT 6\r\n789012BDAT 1 LAST\r\nxNOOP\r\n")
    assert out == ["250 2.1.0", "250 2.1.5", "250 2.0.0", "552 5.3.4", "503 5.5.1", "250 2.0.0"]
    assert [e.failure for e in d.of(BodyEnd)] == [R.TOO_BIG]
    assert bytes(d.body) == b"123456"


def test_first_bdat_too_big() -> None:
    d = Driver(config(max_message_size=10))
    ehlo(d)
    assert d.codes(TX + b"BDAT 11 LAST\r\n" + b"x" * 11) == ["250 2.1.0", "250 2.1.5", "552 5.3.4"]
    assert d.of(BodyEnd) == [BodyEnd(size=11, failure=R.TOO_BIG)]
    assert d.body == b""


def test_bdat_huge_declared_size_is_streamed_not_buffered() -> None:
    d = Driver(config(max_message_size=0))
    ehlo(d)
    d.feed(TX + b"BDAT 1000000 LAST\r\n")
    for _ in range(15):
        d.feed(b"y" * 65536)
        assert len(d.conn._buf) == 0
    assert d.codes(b"y" * (1000000 - 15 * 65536)) == ["250 2.0.0"]
    assert len(d.body) == 1000000


def test_bdat_binarymime() -> None:
    d = Driver()
    ehlo(d)
    script = (
        b"MAIL FROM:<a@b.test> BODY=BINARYMIME\r\nRCPT TO:<c@d.test>\r\nBDAT 3 LAST\r\n\xff\x00\xfe"
    )
    assert d.codes(script) == ["250 2.1.0", "250 2.1.5", "250 2.0.0"]
    assert d.body == b"\xff\x00\xfe"


# ------------------------------------------------------------------------------------ LMTP


def test_lmtp_one_reply_per_recipient() -> None:
    d = Driver(
        config(lmtp=True),
        answers=Answers(
            rcpt=lambda e: e.recipient.address != "no@d.test",
            lmtp_replies=lambda n: [QUEUED, R.TOO_BIG][:n],
        ),
    )
    assert d.codes(b"LHLO c.test\r\n") == ["250"]
    script = (
        b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n"
        b"RCPT TO:<no@d.test>\r\nRCPT TO:<e@d.test>\r\n"
    )
    assert d.codes(script + b"DATA\r\nhi\r\n.\r\n") == [
        "250 2.1.0",
        "250 2.1.5",
        "550 5.7.1",
        "250 2.1.5",
        "354",
        "250 2.0.0",
        "552 5.3.4",
    ]


def test_lmtp_failure_and_accept_repeat_per_recipient() -> None:
    d = Driver(config(lmtp=True, max_message_size=5))
    d.feed(b"LHLO c.test\r\n")
    script = b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nRCPT TO:<e@d.test>\r\n"
    assert d.codes(script + b"DATA\r\ntoo long\r\n.\r\n")[-2:] == ["552 5.3.4", "552 5.3.4"]
    assert d.codes(script + b"BDAT 2 LAST\r\nok")[-2:] == ["250 2.0.0", "250 2.0.0"]  # accept()


def test_lmtp_bdat_last_without_recipients_gets_no_reply() -> None:
    d = Driver(config(lmtp=True), answers=Answers(rcpt=False))
    d.feed(b"LHLO c.test\r\n")
    out = d.codes(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nBDAT 2 LAST\r\nabNOOP\r\n")
    assert out == ["250 2.1.0", "550 5.7.1", "250 2.0.0"]


def test_recipient_value() -> None:
    d = Driver()
    ehlo(d)
    d.feed(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test> ORCPT=rfc822;c@d.test\r\n")
    assert d.of(RcptTo) == [RcptTo(Recipient("c@d.test", None, "rfc822;c@d.test"))]
