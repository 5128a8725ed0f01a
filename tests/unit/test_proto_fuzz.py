"""Hypothesis: whatever bytes arrive, in whatever chunks, the core yields events (or raises
``RemoteProtocolError``) — never any other exception — and its output stays well-formed."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kittiwake.envelope import Reply
from kittiwake.errors import RemoteProtocolError
from kittiwake.proto import (
    NEED_DATA,
    AuthResponse,
    AuthStart,
    BareLinefeedPolicy,
    BodyData,
    BodyEnd,
    ConnectionClosed,
    DataStart,
    Event,
    Helo,
    MailFrom,
    ProtoConfig,
    RcptTo,
    Reset,
    Sentinel,
    ServerConnection,
    StartTLS,
    State,
)
from kittiwake.proto.reader import BUFFER_LIMIT
from tests.unit.test_proto_support import reply_codes

COMMANDS = [
    b"MAIL FROM:<a@b.test>\r\n",
    b"MAIL FROM:<> SIZE=10 BODY=BINARYMIME SMTPUTF8 RET=HDRS ENVID=x+2B AUTH=<>\r\n",
    "MAIL FROM:<ü@b.test> SMTPUTF8\r\n".encode(),
    b"RCPT TO:<c@d.test>\r\n",
    b"RCPT TO:<c@d.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;c@d.test\r\n",
    b"RCPT TO:<Postmaster>\r\n",
    b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n",
    b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n",
    b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nBDAT 4\r\n",
    b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\nSubject: x\r\n\r\n..hi\r\n.\r\n",
    b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nBDAT 5 LAST\r\nab\r\n.",
    b"DATA\r\n",
    b"line\r\n.\r\n",
    b"BDAT 5\r\n",
    b"BDAT 3 LAST\r\n",
    b"BDAT 0 LAST\r\n",
    b"BDAT 99999999999999999999\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"QUIT\r\n",
    b"STARTTLS\r\n",
    b"AUTH PLAIN\r\n",
    b"AUTH LOGIN =\r\n",
    b"AUTH PLAIN dGVzdA==\r\n",
    b"*\r\n",
    b"dGVzdA==\r\n",
    b"VRFY x\r\n",
    b"EXPN y\r\n",
    b"HELP\r\n",
    b"EHLO x.test\r\n",
    b"HELO x.test\r\n",
    b"LHLO x.test\r\n",
    b"GET / HTTP/1.1\r\n",
]
NOISE = [
    b"Subject: hi\r\n",
    b"abcde",
    b".\r\n",
    b"\r\n.\r\n",
    b"\n.\n",
    b"\r\n.\r",
    b"\r\n",
    b"\r",
    b"\n",
    b".",
    b"..",
    b"x" * 1200,
    b"\xff\xfe\x00",
]

# Mostly whole commands (so sessions get deep), sometimes noise or raw bytes; the stream is
# then cut at arbitrary points so chunk boundaries fall anywhere (inside CRLF, ".<CRLF>"...).
command = st.sampled_from(COMMANDS)
noise = st.one_of(
    st.sampled_from(NOISE), st.binary(max_size=16), st.binary(max_size=16).map(b"%b\r\n".__mod__)
)
piece = st.integers(0, 9).flatmap(lambda i: noise if i == 0 else command)  # 90% commands


@st.composite
def chunks(draw: st.DrawFn) -> list[bytes]:
    stream = b"".join(draw(st.lists(piece, min_size=2, max_size=40)))
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    edges = [0, *cuts, len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(edges)]


configs = st.builds(
    ProtoConfig,
    hostname=st.just("mx.test"),
    max_message_size=st.sampled_from([0, 8, 1000]),
    max_recipients=st.sampled_from([1, 3]),
    max_commands=st.sampled_from([8, 10_000]),
    max_bad_commands=st.sampled_from([3, 50]),
    bare_linefeed=st.sampled_from(list(BareLinefeedPolicy)),
    starttls_available=st.booleans(),
    auth_mechanisms=st.sampled_from([(), ("PLAIN", "LOGIN")]),
    auth_requires_tls=st.booleans(),
    require_tls=st.sampled_from([False, False, False, True]),
    vrfy_enabled=st.booleans(),
    expn_enabled=st.booleans(),
    lmtp=st.sampled_from([False, False, True]),
)

OK = Reply(250, "2.0.0", "queued")
NO = Reply(550, "5.7.1", "no")


def answer(conn: ServerConnection, ev: Event, accept: bool, lmtp: bool) -> None:
    if isinstance(ev, StartTLS):
        conn.tls_established()
    elif isinstance(ev, Helo):
        conn.accept_helo() if accept else conn.reject(NO)
    elif isinstance(ev, MailFrom | RcptTo | DataStart):
        conn.accept() if accept else conn.reject(NO)
    elif isinstance(ev, BodyEnd) and ev.failure is None:
        if not accept:
            conn.reject(NO)
        elif lmtp:
            conn.accept_lmtp([OK] * conn.recipient_count)
        else:
            conn.accept(OK)
    elif isinstance(ev, AuthStart):
        conn.auth_challenge(b"more") if accept else conn.reject(NO)
    elif isinstance(ev, AuthResponse):
        conn.auth_success("user") if accept else conn.reject(NO)


def run(cfg: ProtoConfig, data: list[bytes], choose: st.DataObject | None, fixed: bool) -> None:
    conn = ServerConnection(cfg, tls=False)
    out = bytearray(conn.greeting())
    if data and data[0][:1] != b"\xff":  # usually greet first, with the right verb
        data = [b"LHLO x.test\r\n" if cfg.lmtp else b"EHLO x.test\r\n", *data]
    in_body = False
    try:
        for chunk in [*(c for c in data if c), b""]:  # b"" is EOF, only at the end
            conn.receive_data(chunk)
            while True:
                ev = conn.next_event()
                if isinstance(ev, Sentinel):
                    assert ev is NEED_DATA or conn.pending is not None or conn.state is State.TLS
                    break
                if isinstance(ev, BodyData):
                    assert in_body and ev.data
                elif isinstance(ev, DataStart):
                    in_body = True
                elif isinstance(ev, BodyEnd | Reset | ConnectionClosed):
                    in_body = False
                if isinstance(ev, ConnectionClosed):
                    break
                accept = fixed if choose is None else choose.draw(st.booleans())
                answer(conn, ev, accept, cfg.lmtp)
                if isinstance(ev, DataStart) and conn.state is State.GREETED:
                    in_body = False  # rejected
            out += conn.data_to_send()
            if conn.state is not State.TLS:
                assert len(conn._buf) <= BUFFER_LIMIT + len(chunk)
    except RemoteProtocolError:
        return
    reply_codes(bytes(out))  # every output line is a well-formed reply


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=configs, data=chunks())
def test_fuzz_accept_everything(cfg: ProtoConfig, data: list[bytes]) -> None:
    run(cfg, data, None, fixed=True)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=configs, data=chunks())
def test_fuzz_reject_everything(cfg: ProtoConfig, data: list[bytes]) -> None:
    run(cfg, data, None, fixed=False)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=configs, data=chunks(), choose=st.data())
def test_fuzz_random_answers(cfg: ProtoConfig, data: list[bytes], choose: st.DataObject) -> None:
    run(cfg, data, choose, fixed=True)
