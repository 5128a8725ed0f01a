"""ClientConnection against ServerConnection, in memory (h11's ConnectionPair idea): both
cores must speak the same protocol — every command the client writes parses on the server,
every reply the server writes maps back to the command it answers."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kittiwake.envelope import BodyType, Notify, Recipient, Reply, Ret
from kittiwake.errors import LocalProtocolError
from kittiwake.proto import MailFrom, ProtoConfig, RcptTo, StartTLS
from kittiwake.proto.client import ClientConnection, Phase, Response, Verb
from tests.unit.test_proto_support import QUEUED, Answers, Driver, config


class Pair:
    """A client core wired to an auto-answering server core."""

    def __init__(self, cfg: ProtoConfig | None = None, answers: Answers | None = None) -> None:
        cfg = cfg or config()
        self.server = Driver(cfg, answers=answers or Answers())
        self.client = ClientConnection(lmtp=cfg.lmtp)
        self.client.receive_data(self.server.conn.greeting())

    def send(self, data: bytes) -> list[Response]:
        out = self.server.feed(data)
        if out:  # b"" would mean EOF
            self.client.receive_data(out)
        return self.responses()

    def responses(self) -> list[Response]:
        out = []
        while isinstance(r := self.client.next_response(), Response):
            out.append(r)
        return out

    def greet(self) -> None:
        (greeting,) = self.responses()
        assert greeting.verb is Verb.GREETING and greeting.reply.code == 220
        (ehlo,) = self.send(self.client.ehlo("client.test"))
        assert ehlo.reply.code == 250, ehlo


def summary(responses: list[Response]) -> list[tuple[str, int]]:
    return [(r.verb.value, r.reply.code) for r in responses]


def test_greeting_and_capabilities() -> None:
    p = Pair(config(max_message_size=1000))
    p.greet()
    caps = p.client.capabilities
    assert caps.esmtp and caps.size == 1000
    assert caps.pipelining and caps.eightbitmime and caps.smtputf8 and caps.dsn
    assert caps.chunking and caps.binarymime and caps.enhancedstatuscodes
    assert not caps.starttls and caps.auth == frozenset()
    assert p.client.phase is Phase.READY


def test_pipelined_transaction_with_data() -> None:
    p = Pair()
    p.greet()
    c = p.client
    group = c.mail("a@b.test") + c.rcpt("c@d.test") + c.rcpt("e@f.test") + c.data()
    assert summary(p.send(group)) == [("MAIL", 250), ("RCPT", 250), ("RCPT", 250), ("DATA", 354)]
    content = b"Subject: dots\r\n\r\n.leading\r\n..two\r\n.\r\nlast line without CRLF"
    out = c.body(content[:20]) + c.body(content[20:]) + c.end_data()
    assert summary(p.send(out)) == [("END", 250)]
    assert bytes(p.server.body) == content + b"\r\n"
    assert c.phase is Phase.READY and c.awaiting == 0


def test_parameters_round_trip() -> None:
    p = Pair()
    p.greet()
    c = p.client
    envid = "id+with=odd chars"
    orcpt = "rfc822;x+y=z@d.test"
    group = c.mail(
        "a@b.test",
        size=1234,
        body=BodyType.EIGHTBITMIME,
        smtputf8=True,
        ret=Ret.HDRS,
        envid=envid,
    )
    group += c.rcpt("ü@d.test", notify=Notify.SUCCESS | Notify.DELAY, orcpt=orcpt)
    group += c.rcpt("n@d.test", notify=Notify.NEVER)
    assert summary(p.send(group)) == [("MAIL", 250), ("RCPT", 250), ("RCPT", 250)]
    (mail,) = p.server.of(MailFrom)
    assert mail == MailFrom("a@b.test", 1234, BodyType.EIGHTBITMIME, True, Ret.HDRS, envid)
    rcpts = [e.recipient for e in p.server.of(RcptTo)]
    assert rcpts == [
        Recipient("ü@d.test", Notify.SUCCESS | Notify.DELAY, orcpt),
        Recipient("n@d.test", Notify.NEVER),
    ]


def test_bdat_single_chunk_in_the_group_and_multi_chunk() -> None:
    p = Pair()
    p.greet()
    c = p.client
    group = c.mail("a@b.test") + c.rcpt("c@d.test") + c.bdat(b"one\r\n.\r\n", last=True)
    assert summary(p.send(group)) == [("MAIL", 250), ("RCPT", 250), ("END", 250)]
    assert bytes(p.server.body) == b"one\r\n.\r\n"  # BDAT: no stuffing, octets as they are
    p.server.body.clear()
    group = c.mail("a@b.test", body=BodyType.BINARYMIME) + c.rcpt("c@d.test")
    group += c.bdat(b"\x00\r", last=False) + c.bdat(b"\n.", last=False) + c.bdat(b"", last=True)
    expected = [("MAIL", 250), ("RCPT", 250), ("BDAT", 250), ("BDAT", 250), ("END", 250)]
    assert summary(p.send(group)) == expected
    assert bytes(p.server.body) == b"\x00\r\n."


def test_mixed_recipients_and_rset() -> None:
    p = Pair(answers=Answers(rcpt=lambda ev: ev.recipient.address != "bad@d.test"))
    p.greet()
    c = p.client
    group = c.mail("a@b.test") + c.rcpt("bad@d.test") + c.rcpt("ok@d.test")
    assert summary(p.send(group)) == [("MAIL", 250), ("RCPT", 550), ("RCPT", 250)]
    assert c.accepted_recipients == 1
    with pytest.raises(LocalProtocolError):
        c.mail("x@b.test")  # the server holds a transaction: RSET first
    assert summary(p.send(c.rset())) == [("RSET", 250)]
    assert summary(p.send(c.mail("x@b.test"))) == [("MAIL", 250)]


def test_data_refused_without_recipients() -> None:
    p = Pair(answers=Answers(rcpt=False))
    p.greet()
    c = p.client
    got = p.send(c.mail("a@b.test") + c.rcpt("c@d.test") + c.data())
    assert summary(got) == [("MAIL", 250), ("RCPT", 550), ("DATA", 554)]
    assert c.phase is Phase.MAIL  # the transaction may still be open on the server
    with pytest.raises(LocalProtocolError):
        c.body(b"x")
    assert summary(p.send(c.rset())) == [("RSET", 250)]


def test_refused_mail_needs_no_rset() -> None:
    p = Pair(answers=Answers(mail=False))
    p.greet()
    c = p.client
    assert summary(p.send(c.mail("a@b.test") + c.rcpt("c@d.test"))) == [
        ("MAIL", 550),
        ("RCPT", 503),
    ]
    assert summary(p.send(c.mail("a@b.test"))) == [("MAIL", 550)]


def test_lmtp_one_reply_per_accepted_recipient() -> None:
    def per_rcpt(n: int) -> list[Reply]:
        assert n == 2
        return [QUEUED, Reply(452, "4.2.2", "mailbox full")]

    answers = Answers(rcpt=lambda ev: ev.recipient.address != "no@d.test", lmtp_replies=per_rcpt)
    p = Pair(config(lmtp=True), answers)
    p.greet()
    c = p.client
    group = c.mail("a@b.test") + c.rcpt("x@d.test") + c.rcpt("no@d.test") + c.rcpt("y@d.test")
    group += c.data()
    assert summary(p.send(group)) == [
        ("MAIL", 250),
        ("RCPT", 250),
        ("RCPT", 550),
        ("RCPT", 250),
        ("DATA", 354),
    ]
    got = p.send(c.body(b"hi\r\n") + c.end_data())
    assert summary(got) == [("END", 250), ("END", 452)]
    assert c.awaiting == 0
    assert summary(p.send(c.noop())) == [("NOOP", 250)]


def test_lmtp_bdat_last_without_accepted_recipients_has_no_reply() -> None:
    p = Pair(config(lmtp=True), Answers(rcpt=False))
    p.greet()
    c = p.client
    got = p.send(c.mail("a@b.test") + c.rcpt("x@d.test"))
    assert summary(got) == [("MAIL", 250), ("RCPT", 550)]
    got = p.send(c.bdat(b"hi\r\n", last=True))
    assert got == [] and c.awaiting == 0  # RFC 2033 §4.3: zero replies
    assert summary(p.send(c.rset())) == [("RSET", 250)]


def test_starttls_discards_injected_bytes_and_forgets_capabilities() -> None:
    p = Pair(config(starttls_available=True), Answers(tls=False))
    p.greet()
    c = p.client
    assert c.capabilities.starttls
    assert summary(p.send(c.starttls())) == [("STARTTLS", 220)]
    assert c.phase is Phase.TLS
    assert isinstance(p.server.events[-1], StartTLS)
    c.receive_data(b"250 injected before the handshake\r\n")  # ignored
    assert c.next_response() is not None and c.awaiting == 0
    p.server.conn.tls_established()
    c.tls_established()
    assert c.tls and not c.capabilities.esmtp
    with pytest.raises(LocalProtocolError):
        c.mail("a@b.test")  # RFC 3207 §4.2: EHLO again first
    assert summary(p.send(c.ehlo("client.test"))) == [("EHLO", 250)]
    assert not c.capabilities.starttls


def test_starttls_reply_with_trailing_bytes_drops_them() -> None:
    c = ClientConnection()
    c.receive_data(b"220 hi\r\n")
    c.next_response()
    c.receive_data(b"250-x\r\n250 STARTTLS\r\n")
    c.ehlo("me.test")
    c.next_response()
    c.starttls()
    c.receive_data(b"220 go ahead\r\n250 evil\r\n")
    assert summary([c.next_response()]) == [("STARTTLS", 220)]  # type: ignore[list-item]
    c.tls_established()
    c.ehlo("me.test")
    c.receive_data(b"250 real\r\n")
    r = c.next_response()
    assert isinstance(r, Response) and r.reply.text == "real"


def test_auth_plain_and_login() -> None:
    cfg = config(auth_mechanisms=("PLAIN", "LOGIN"), auth_requires_tls=False)
    p = Pair(cfg)
    p.greet()
    c = p.client
    assert c.capabilities.auth == {"PLAIN", "LOGIN"}
    assert summary(p.send(c.auth_plain("alice", "secret"))) == [("AUTH", 235)]
    assert c.authenticated
    p2 = Pair(cfg, Answers(auth_challenges=2))
    p2.greet()
    c2 = p2.client
    assert summary(p2.send(c2.auth("LOGIN"))) == [("AUTH", 334)]
    assert summary(p2.send(c2.auth_response(b"alice"))) == [("AUTH", 334)]
    assert summary(p2.send(c2.auth_response(b"secret"))) == [("AUTH", 235)]
    assert c2.phase is Phase.READY


def test_helo_fallback_and_no_extensions() -> None:
    c = ClientConnection()
    c.receive_data(b"220 old.test\r\n")
    c.next_response()
    c.ehlo("me.test")
    c.receive_data(b"500 what?\r\n")
    r = c.next_response()
    assert isinstance(r, Response) and r.verb is Verb.EHLO and r.reply.code == 500
    phases = [c.phase]
    c.helo("me.test")
    c.receive_data(b"250 old.test\r\n")
    c.next_response()
    phases.append(c.phase)
    assert phases == [Phase.HELLO, Phase.READY] and not c.capabilities.esmtp
    with pytest.raises(LocalProtocolError):
        c.mail("a@b.test", size=10)  # no SIZE without EHLO
    c.mail("a@b.test")
    with pytest.raises(LocalProtocolError):
        c.rcpt("c@d.test")  # no PIPELINING: wait for the MAIL reply


def greeted(extensions: bytes = b"250 PIPELINING\r\n") -> ClientConnection:
    c = ClientConnection()
    c.receive_data(b"220 x\r\n250-x\r\n" + extensions)
    c.next_response()
    c.ehlo("me.test")
    c.next_response()
    return c


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda c: c.mail("a@b.test\r\nRSET"), id="CRLF in an address"),
        pytest.param(lambda c: c.mail("a@b.test\x00"), id="NUL in an address"),
        pytest.param(lambda c: c.mail("ü@b.test"), id="non-ASCII without SMTPUTF8"),
        pytest.param(lambda c: c.mail("a@b.test", smtputf8=True), id="SMTPUTF8 not offered"),
        pytest.param(lambda c: c.mail("a@b.test", ret=Ret.FULL), id="DSN not offered"),
        pytest.param(lambda c: c.data(), id="DATA before MAIL"),
        pytest.param(lambda c: c.body(b"x"), id="content before DATA"),
        pytest.param(lambda c: c.end_data(), id="end of data before DATA"),
        pytest.param(lambda c: c.ehlo("bad name"), id="space in EHLO"),
        pytest.param(lambda c: c.lhlo("me.test"), id="LHLO in SMTP"),
        pytest.param(lambda c: c.auth_response(b"x"), id="AUTH response without 334"),
        pytest.param(lambda c: c.tls_established(), id="TLS without STARTTLS"),
    ],
)
def test_local_protocol_errors(call: Callable[[ClientConnection], object]) -> None:
    with pytest.raises(LocalProtocolError):
        call(greeted())


def test_group_enders_and_bdat_rules() -> None:
    c = greeted()
    c.starttls()
    with pytest.raises(LocalProtocolError):
        c.mail("a@b.test")  # STARTTLS ends a group (RFC 2920 §3.1)
    c = greeted()
    c.mail("a@b.test")
    c.rcpt("c@d.test")
    with pytest.raises(LocalProtocolError):
        c.bdat(b"x", last=True)  # no CHUNKING offered
    c.data()
    with pytest.raises(LocalProtocolError):
        c.rset()  # DATA ends a group: wait for the 354


def test_nothing_before_the_greeting_and_unsolicited_421() -> None:
    c = ClientConnection()
    with pytest.raises(LocalProtocolError):
        c.ehlo("me.test")
    c.receive_data(b"220 x\r\n")
    c.next_response()
    c.receive_data(b"421 4.4.2 idle timeout\r\n")
    r = c.next_response()
    assert isinstance(r, Response) and r.verb is Verb.NOOP and r.reply.code == 421
    assert c.phase is Phase.CLOSED
    c.receive_data(b"")
    assert c.next_response() is not None and not isinstance(c.next_response(), Response)


@settings(max_examples=150, deadline=None)
@given(
    lines=st.lists(
        st.text(alphabet=".ab\r\n\x00é", max_size=30).map(lambda s: s.encode()), max_size=12
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=5),
)
def test_data_round_trip_through_the_server(lines: list[bytes], cuts: list[int]) -> None:
    """Whatever the content and however it is cut, the server receives it byte-exact after
    the client's normalisation (bare CR/LF → CRLF; a final CRLF added)."""
    content = b"".join(lines)
    p = Pair()
    p.greet()
    c = p.client
    assert summary(p.send(c.mail("a@b.test") + c.rcpt("c@d.test") + c.data()))[-1] == ("DATA", 354)
    out = []
    start = 0
    for cut in sorted(set(cuts)):
        out.append(c.body(content[start:cut]))
        start = max(start, cut)
    out.append(c.body(content[start:]))
    out.append(c.end_data())
    assert summary(p.send(b"".join(out))) == [("END", 250)]
    expected = content.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    if expected and not expected.endswith(b"\r\n"):
        expected += b"\r\n"
    assert bytes(p.server.body) == expected
