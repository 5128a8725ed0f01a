"""PIPELINING (RFC 2920): whole command groups in one write, replies in order."""

from __future__ import annotations

from tests.support.server import KittiwakeServer
from tests.support.smtpclient import RawSMTP, message, queue_id


def test_whole_transaction_in_one_write(server: KittiwakeServer, mailboxes) -> None:
    rcpts = mailboxes(3)
    batch = (
        "EHLO client.test\r\n"
        "MAIL FROM:<s@client.test>\r\n" + "".join(f"RCPT TO:<{r}>\r\n" for r in rcpts) + "DATA\r\n"
    )
    with RawSMTP(server.mx) as c:
        c.send(batch)
        ehlo = c.read_reply().check(250, "")
        assert "PIPELINING" in ehlo.keywords
        c.read_reply().check(250, "2.1.0")
        for _ in rcpts:
            c.read_reply().check(250, "2.1.5")
        c.read_reply().check(354)
        c.send(message("pipelined") + b".\r\nQUIT\r\n")
        qid = queue_id(c.read_reply().check(250, "2.0.0"))
        c.read_reply().check(221, "2.0.0")
        assert c.expect_closed() == b""
    for r in rcpts:
        [msg] = server.wait_for_mail(r)
        assert qid.encode() in msg


def test_refused_recipient_inside_a_pipelined_group(server: KittiwakeServer, mailboxes) -> None:
    good1, good2 = mailboxes(2)
    with RawSMTP(server.mx) as c:
        c.ehlo()
        c.send(
            f"MAIL FROM:<s@client.test>\r\nRCPT TO:<{good1}>\r\n"
            f"RCPT TO:<x@elsewhere.test>\r\nRCPT TO:<not an address>\r\n"
            f"RCPT TO:<{good2}>\r\nDATA\r\n"
        )
        c.read_reply().check(250, "2.1.0")
        c.read_reply().check(250, "2.1.5")
        c.read_reply().check(554, "5.7.1")
        assert c.read_reply().code == 501
        c.read_reply().check(250, "2.1.5")
        c.read_reply().check(354)
        c.send(message("partial") + b".\r\n")
        c.read_reply().check(250, "2.0.0")
    server.wait_for_mail(good1)
    server.wait_for_mail(good2)


def test_all_recipients_refused_then_data(server: KittiwakeServer) -> None:
    # RFC 2920 §3.1: DATA after only failed RCPTs gets 554; nothing else happens.
    with RawSMTP(server.mx) as c:
        c.ehlo()
        c.send("MAIL FROM:<s@client.test>\r\nRCPT TO:<x@elsewhere.test>\r\nDATA\r\nNOOP\r\n")
        c.read_reply().check(250, "2.1.0")
        c.read_reply().check(554, "5.7.1")
        c.read_reply().check(554, "5.5.1")
        c.read_reply().check(250, "2.0.0")


def test_next_transaction_pipelined_after_the_final_dot(server: KittiwakeServer, mailboxes) -> None:
    first, second = mailboxes(2)
    with RawSMTP(server.mx) as c:
        c.ehlo()
        c.send(f"MAIL FROM:<s@client.test>\r\nRCPT TO:<{first}>\r\nDATA\r\n")
        c.read_replies(2)
        c.read_reply().check(354)
        c.send(
            message("one")
            + f".\r\nMAIL FROM:<s@client.test>\r\nRCPT TO:<{second}>\r\nDATA\r\n".encode()
        )
        q1 = queue_id(c.read_reply().check(250, "2.0.0"))
        c.read_reply().check(250, "2.1.0")
        c.read_reply().check(250, "2.1.5")
        c.read_reply().check(354)
        c.send(message("two") + b".\r\nRSET\r\nNOOP\r\nQUIT\r\n")
        q2 = queue_id(c.read_reply().check(250, "2.0.0"))
        c.read_reply().check(250, "2.0.0")
        c.read_reply().check(250, "2.0.0")
        c.read_reply().check(221, "2.0.0")
    assert q1 != q2
    assert b"Subject: one" in server.wait_for_mail(first)[0]
    assert b"Subject: two" in server.wait_for_mail(second)[0]


def test_many_commands_in_one_write_answered_in_order(server: KittiwakeServer) -> None:
    with RawSMTP(server.mx) as c:
        c.ehlo()
        # (bad commands stay under the error budget of 20)
        c.send("NOOP\r\nHELP\r\nVRFY x\r\nRSET\r\n" * 50 + "XYZZY\r\nNOOP\r\n")
        for _ in range(50):
            c.read_reply().check(250, "2.0.0")
            c.read_reply().check(214, "2.0.0")
            c.read_reply().check(252, "2.5.0")
            c.read_reply().check(250, "2.0.0")
        c.read_reply().check(500, "5.5.2")
        c.read_reply().check(250, "2.0.0")
