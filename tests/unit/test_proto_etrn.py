"""ETRN in the sans-I/O core (RFC 1985): advertising, syntax, sequence and the decision."""

from __future__ import annotations

import pytest

from kittiwake.envelope import Reply
from kittiwake.errors import LocalProtocolError
from kittiwake.proto import PAUSED, BadCommand, Etrn, ServerConnection
from kittiwake.proto import replies as R
from tests.unit.test_proto_support import Driver, config, ehlo, reply_codes

STARTED = Reply(250, "2.0.0", "Queuing for node example.org started")
REFUSED = Reply(459, "4.7.1", "Node example.org not allowed: client not authorized")


def etrn_driver(**kw: object) -> Driver:
    return Driver(cfg=config(etrn_enabled=True, **kw))


def answer_etrn(conn: ServerConnection, reply: Reply) -> None:
    assert isinstance(conn.pending, Etrn)
    if reply.is_positive:
        conn.accept(reply)
    else:
        conn.reject(reply)


def test_disabled_by_default_is_not_implemented() -> None:
    d = Driver()
    assert b"ETRN" not in ehlo(d)
    assert d.codes(b"ETRN example.org\r\n") == ["502 5.5.1"]
    assert not d.of(Etrn)


def test_advertised_when_enabled() -> None:
    lines = ehlo(etrn_driver()).split(b"\r\n")
    assert b"250 ETRN" in lines or b"250-ETRN" in lines
    assert b"ETRN" not in ehlo(etrn_driver(), b"HELO")  # HELO: no extension list


@pytest.mark.parametrize(
    ("argument", "option", "node"),
    [
        ("example.org", "", "example.org"),
        ("Example.ORG.", "", "example.org"),
        ("@example.org", "@", "example.org"),
        ("#uucp", "#", "uucp"),
        ("mail-1.example.org", "", "mail-1.example.org"),
        ("localname", "", "localname"),  # FQDN or not is the driver's policy to judge
    ],
)
def test_decision_event(argument: str, option: str, node: str) -> None:
    conn = ServerConnection(config(etrn_enabled=True))
    conn.receive_data(b"EHLO client.test\r\netrn " + argument.encode() + b"\r\nNOOP\r\n")
    conn.next_event()
    conn.accept_helo()
    event = conn.next_event()
    assert event == Etrn(argument)
    assert isinstance(event, Etrn)
    assert (event.option, event.node) == (option, node)
    assert conn.next_event() is PAUSED  # the NOOP waits for the answer
    conn.accept(STARTED)
    conn.next_event()
    out = conn.data_to_send()
    assert reply_codes(out) == ["250", "250 2.0.0", "250 2.0.0"]
    assert b"250 2.0.0 Queuing for node example.org started\r\n" in out


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"ETRN\r\n", "500 5.5.2"),  # RFC 1985 §7: "ETRN" alone → 500
        (b"ETRN   \r\n", "500 5.5.2"),
        (b"ETRN two words\r\n", "501 5.5.4"),
        (b"ETRN -bad.example\r\n", "501 5.5.4"),
        (b"ETRN bad..example\r\n", "501 5.5.4"),
        (b"ETRN @\r\n", "501 5.5.4"),
        (b"ETRN #\r\n", "501 5.5.4"),
        (b"ETRN @#x\r\n", "501 5.5.4"),
        (b"ETRN [192.0.2.1]\r\n", "501 5.5.4"),
        (b"ETRN under_score.example\r\n", "501 5.5.4"),
        ("ETRN bücher.example\r\n".encode(), "501 5.5.4"),
        (b"ETRN " + b"a" * 300 + b"\r\n", "501 5.5.4"),
        (b"ETRN " + b"a" * 600 + b"\r\n", "500 5.5.2"),  # over the 512-octet line limit
    ],
)
def test_syntax_errors(line: bytes, code: str) -> None:
    d = etrn_driver()
    ehlo(d)
    assert d.codes(line) == [code]
    assert not d.of(Etrn)
    assert d.conn.bad_command_count == 1


@pytest.mark.parametrize(
    ("script", "codes"),
    [
        (b"ETRN example.org\r\n", ["503 5.5.1"]),  # before HELO/EHLO
        (
            b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nETRN example.org\r\n",
            ["250", "250 2.1.0", "503 5.5.1"],
        ),
        (
            b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nETRN example.org\r\n",
            ["250", "250 2.1.0", "250 2.1.5", "503 5.5.1"],
        ),
        (  # after the transaction ends it is allowed again
            b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\nx\r\n.\r\n"
            b"ETRN example.org\r\n",
            ["250", "250 2.1.0", "250 2.1.5", "354", "250 2.0.0", "250 2.0.0"],
        ),
        (  # and after RSET
            b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRSET\r\nETRN example.org\r\n",
            ["250", "250 2.1.0", "250 2.0.0", "250 2.0.0"],
        ),
    ],
    ids=["before-helo", "after-mail", "after-rcpt", "after-data", "after-rset"],
)
def test_sequence(script: bytes, codes: list[str]) -> None:
    d = etrn_driver()
    d.conn.receive_data(script)
    while True:  # the support driver does not know Etrn: answer it here
        d.pump()
        if isinstance(d.conn.pending, Etrn):
            d.events.append(d.conn.pending)
            answer_etrn(d.conn, STARTED)
            continue
        break
    assert reply_codes(d.conn.data_to_send()) == codes


def test_in_transaction_reply_text() -> None:
    d = etrn_driver()
    ehlo(d)
    out = d.feed(b"MAIL FROM:<a@b.test>\r\nETRN example.org\r\n")
    assert out.endswith(R.IN_TRANSACTION.to_bytes())
    assert d.of(BadCommand)[-1] == BadCommand(R.IN_TRANSACTION)


def test_reject_with_458_or_459_keeps_the_session() -> None:
    conn = ServerConnection(config(etrn_enabled=True))
    conn.receive_data(b"HELO c.test\r\nETRN example.org\r\nMAIL FROM:<a@b.test>\r\n")
    conn.next_event()
    conn.accept_helo()
    assert isinstance(conn.next_event(), Etrn)
    conn.reject(REFUSED)
    assert conn.next_event().__class__.__name__ == "MailFrom"
    conn.accept()
    out = conn.data_to_send()
    assert reply_codes(out) == ["250", "459 4.7.1", "250 2.1.0"]
    assert conn.bad_command_count == 0  # a refusal by policy is not a client error


def test_answer_misuse_is_a_local_error() -> None:
    conn = ServerConnection(config(etrn_enabled=True))
    conn.receive_data(b"HELO c.test\r\nETRN example.org\r\n")
    conn.next_event()
    conn.accept_helo()
    assert isinstance(conn.next_event(), Etrn)
    with pytest.raises(LocalProtocolError, match="needs the 25x reply"):
        conn.accept()
    with pytest.raises(LocalProtocolError, match="2xx"):
        conn.accept(Reply(458, "4.3.0", "Unable to queue"))
    with pytest.raises(LocalProtocolError, match="positive"):
        conn.reject(STARTED)
    with pytest.raises(LocalProtocolError):
        conn.accept_helo()
    conn.accept(Reply(251, "2.0.0", "OK, no messages waiting for node example.org"))
    assert reply_codes(conn.data_to_send()) == ["250", "251 2.0.0"]


def test_require_tls_refuses_etrn_before_starttls() -> None:
    d = etrn_driver(require_tls=True, starttls_available=True)
    ehlo(d)
    assert d.codes(b"ETRN example.org\r\n") == ["530 5.7.0"]
