"""STARTTLS hand-off, AUTH exchanges, abuse limits and driver misuse (LocalProtocolError)."""

from __future__ import annotations

import base64

import pytest

from kittiwake.envelope import Reply
from kittiwake.errors import LocalProtocolError
from kittiwake.proto import (
    NEED_DATA,
    PAUSED,
    AuthCancelled,
    AuthResponse,
    AuthStart,
    BadCommand,
    BodyEnd,
    Closing,
    Helo,
    MailFrom,
    ServerConnection,
    StartTLS,
    State,
)
from kittiwake.proto import replies as R
from tests.unit.test_proto_support import Answers, Driver, config, ehlo, reply_codes

TLS_CFG = {"starttls_available": True, "auth_mechanisms": ("PLAIN", "LOGIN")}

# --------------------------------------------------------------------------------- STARTTLS


def test_starttls_discards_injected_commands_cve_2011_0411() -> None:
    conn = ServerConnection(config(**TLS_CFG))
    conn.receive_data(b"EHLO c.test\r\n")
    assert isinstance(conn.next_event(), Helo)
    conn.accept_helo()
    conn.data_to_send()
    # The classic injection: commands pipelined in the same TCP segment as STARTTLS.
    conn.receive_data(b"STARTTLS\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<v@d.test>\r\n")
    assert conn.next_event() == StartTLS()
    assert conn.next_event() is PAUSED  # waiting for tls_established()
    assert conn.data_to_send() == b"220 2.0.0 Ready to start TLS\r\n"
    conn.receive_data(b"NOOP\r\n")  # plaintext before the handshake: ignored too
    assert conn.state is State.TLS
    conn.tls_established()
    assert conn.tls and conn.helo_domain is None and not conn.esmtp
    assert conn.next_event() is NEED_DATA  # nothing survived
    assert conn.data_to_send() == b""


def test_after_tls_fresh_ehlo_required_and_keywords_change() -> None:
    d = Driver(config(**TLS_CFG))
    assert b"STARTTLS" in ehlo(d)
    assert d.codes(b"STARTTLS\r\n") == ["220 2.0.0"]
    assert d.conn.tls
    assert d.codes(b"MAIL FROM:<a@b.test>\r\n") == ["503 5.5.1"]  # RFC 3207 §4.2
    out = ehlo(d).decode()
    assert "STARTTLS" not in out and "250 AUTH PLAIN LOGIN" in out
    assert d.codes(b"STARTTLS\r\n") == ["503 5.5.1"]


def test_server_started_in_tls_mode() -> None:
    d = Driver(config(**TLS_CFG), tls=True)
    out = ehlo(d).decode()
    assert "STARTTLS" not in out and "AUTH" in out


def test_tls_established_out_of_place() -> None:
    conn = ServerConnection(config(**TLS_CFG))
    with pytest.raises(LocalProtocolError):
        conn.tls_established()


def test_require_tls_lifted_after_handshake() -> None:
    d = Driver(config(require_tls=True, **TLS_CFG))
    ehlo(d)
    assert d.codes(b"MAIL FROM:<a@b.test>\r\n") == ["530 5.7.0"]
    d.feed(b"STARTTLS\r\n")
    ehlo(d)
    assert d.codes(b"MAIL FROM:<a@b.test>\r\n") == ["250 2.1.0"]


# ------------------------------------------------------------------------------------ AUTH


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def test_auth_login_exchange() -> None:
    d = Driver(config(**TLS_CFG), tls=True, answers=Answers(auth_challenges=2))
    ehlo(d)
    out = d.feed(b"AUTH LOGIN\r\n")
    assert out == b"334 " + b64(b"challenge") + b"\r\n"
    assert d.conn.state.name == "AUTH"
    assert reply_codes(d.feed(b64(b"alice") + b"\r\n")) == ["334"]
    assert d.codes(b64(b"secret") + b"\r\n") == ["235 2.7.0"]
    assert d.of(AuthStart) == [AuthStart("LOGIN", None)]
    assert d.of(AuthResponse) == [AuthResponse(b"alice"), AuthResponse(b"secret")]
    assert d.conn.authenticated == "alice"
    assert d.codes(b"AUTH PLAIN =\r\n") == ["503 5.5.1"]
    assert d.conn.state is State.GREETED


def test_auth_plain_initial_response() -> None:
    d = Driver(config(**TLS_CFG), tls=True)
    ehlo(d)
    assert d.codes(b"AUTH PLAIN " + b64(b"\0alice\0secret") + b"\r\nNOOP\r\n") == [
        "235 2.7.0",
        "250 2.0.0",
    ]
    assert d.of(AuthStart) == [AuthStart("PLAIN", b"\0alice\0secret")]


def test_auth_empty_challenge_and_response() -> None:
    d = Driver(config(**TLS_CFG), tls=True, answers=Answers(auth_challenges=1))
    ehlo(d)
    d.answers.auth_challenges = 0
    conn = d.conn
    conn.receive_data(b"AUTH PLAIN\r\n")
    assert isinstance(conn.next_event(), AuthStart)
    conn.auth_challenge(b"")
    assert conn.data_to_send() == b"334 \r\n"  # RFC 4954 §4: "334 " then CRLF
    conn.receive_data(b"\r\n")
    assert conn.next_event() == AuthResponse(b"")


def test_auth_cancel() -> None:
    d = Driver(config(**TLS_CFG), tls=True, answers=Answers(auth_challenges=5))
    ehlo(d)
    d.feed(b"AUTH LOGIN\r\n")
    assert d.codes(b"*\r\n") == ["501 5.0.0"]
    assert d.of(AuthCancelled) == [AuthCancelled()]
    assert d.conn.state is State.GREETED and d.conn.authenticated is None
    assert d.conn.bad_command_count == 1


def test_auth_bad_base64_response_and_too_long_line() -> None:
    d = Driver(config(**TLS_CFG), tls=True, answers=Answers(auth_challenges=5))
    ehlo(d)
    d.feed(b"AUTH LOGIN\r\n")
    assert d.codes(b"not base64!\r\n") == ["501 5.5.2"]
    assert d.conn.state is State.GREETED
    d.feed(b"AUTH LOGIN\r\n")
    d.feed(b"A" * 12000)
    assert d.codes(b"A" * 1000 + b"\r\nNOOP\r\n") == ["500 5.5.6", "250 2.0.0"]  # RFC 4954 §4


def test_auth_rejected_after_challenge() -> None:
    d = Driver(config(**TLS_CFG), tls=True, answers=Answers(auth_challenges=1, auth_identity=None))
    ehlo(d)
    assert reply_codes(d.feed(b"AUTH LOGIN\r\n")) == ["334"]
    assert d.codes(b64(b"alice") + b"\r\nNOOP\r\n") == ["535 5.7.8", "250 2.0.0"]
    assert d.conn.state is State.GREETED and d.conn.bad_command_count == 1


def test_bare_newline_reply_text() -> None:
    d = Driver()
    d.feed(b"NOOP\nQUIT\r\nMAIL FROM:<a@b>\rRCPT TO:<c@d>\r\n")
    assert d.of(BadCommand) == [BadCommand(R.BARE_NEWLINE)] * 2


def test_state_table_rejects_undefined_transitions() -> None:
    from kittiwake.proto.state import Trigger, transition

    assert transition(State.RCPT, Trigger.DATA) is State.DATA
    with pytest.raises(LocalProtocolError):
        transition(State.CONNECTED, Trigger.MAIL)


def test_auth_failure_counts_as_bad_command() -> None:
    d = Driver(config(max_bad_commands=2, **TLS_CFG), tls=True, answers=Answers(auth_identity=None))
    ehlo(d)
    assert d.codes(b"AUTH PLAIN =\r\n") == ["535 5.7.8"]
    assert d.codes(b"AUTH PLAIN =\r\n") == ["535 5.7.8"]
    assert d.codes(b"AUTH PLAIN =\r\n") == ["535 5.7.8", "421 4.7.0"]
    assert d.conn.bad_command_count == 3
    assert isinstance(d.events[-1], Closing)


# ---------------------------------------------------------------------------------- limits


def test_max_bad_commands_closes() -> None:
    d = Driver(config(max_bad_commands=3))
    out = d.codes(b"FOO\r\nBAR\r\nBAZ\r\nQUX\r\nNOOP\r\n")
    assert out == ["500 5.5.2"] * 4 + ["421 4.7.0"]
    assert d.events[-1] == Closing(R.TOO_MANY_ERRORS)
    assert d.conn.state is State.CLOSED
    assert d.feed(b"NOOP\r\n") == b""  # ignored


def test_policy_refusals_do_not_count() -> None:
    d = Driver(config(max_bad_commands=0, max_recipients=1, max_message_size=10))
    ehlo(d)
    out = d.codes(
        b"MAIL FROM:<a@b.test> SIZE=11\r\nMAIL FROM:<a@b.test>\r\n"
        b"RCPT TO:<c@d.test>\r\nRCPT TO:<e@d.test>\r\n"
    )
    assert out == ["552 5.3.4", "250 2.1.0", "250 2.1.5", "452 4.5.3"]
    assert d.conn.bad_command_count == 0


def test_max_commands_closes() -> None:
    d = Driver(config(max_commands=3))
    assert d.codes(b"NOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\n") == ["250 2.0.0"] * 3 + ["421 4.7.0"]
    assert d.events[-1] == Closing(R.TOO_MANY_COMMANDS)
    assert d.conn.command_count == 4


def test_http_closes() -> None:
    d = Driver()
    assert d.codes(b"GET / HTTP/1.1\r\nHost: mx\r\n\r\n") == ["421 4.7.0"]
    assert d.events == [Closing(R.HTTP_REFUSED)]


def test_megabyte_line_memory_stays_bounded() -> None:
    d = Driver()
    for _ in range(16):
        assert d.feed(b"Z" * 65536) == b""
        assert len(d.conn._buf) <= 1
    assert d.codes(b"\r\nNOOP\r\n") == ["500 5.5.2", "250 2.0.0"]
    assert d.events[0] == BadCommand(R.LINE_TOO_LONG)


def test_close_with_returns_output_and_ignores_input() -> None:
    conn = ServerConnection(config())
    conn.receive_data(b"NOOP\r\n")
    conn.next_event()
    out = conn.close_with(Reply(421, "4.4.2", "Timeout"))
    assert out == b"250 2.0.0 OK\r\n421 4.4.2 Timeout\r\n"
    conn.receive_data(b"NOOP\r\n")
    assert conn.next_event() is NEED_DATA
    assert conn.close_with(Reply(421, "4.4.2", "again")) == b""


# ---------------------------------------------------------------------------------- misuse


def test_answers_without_pending_decision() -> None:
    conn = ServerConnection(config())
    for call in (
        conn.accept_helo,
        conn.accept,
        lambda: conn.reject(R.BAD_SENDER),
        lambda: conn.accept_lmtp([]),
        lambda: conn.auth_challenge(b""),
        lambda: conn.auth_success("x"),
    ):
        with pytest.raises(LocalProtocolError):
            call()


def test_wrong_answer_for_the_decision() -> None:
    conn = ServerConnection(config())
    conn.receive_data(
        b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\nx\r\n.\r\n"
    )
    assert isinstance(conn.next_event(), Helo)
    with pytest.raises(LocalProtocolError):
        conn.auth_success("x")
    with pytest.raises(LocalProtocolError):
        conn.accept(R.OK)  # the EHLO reply is built by the core
    conn.accept_helo()
    assert isinstance(conn.next_event(), MailFrom)
    with pytest.raises(LocalProtocolError):
        conn.accept_helo()
    with pytest.raises(LocalProtocolError):
        conn.accept(R.BAD_SENDER)  # negative reply in accept()
    with pytest.raises(LocalProtocolError):
        conn.reject(R.OK)  # positive reply in reject()
    conn.accept()
    conn.next_event()
    conn.accept()
    conn.next_event()
    with pytest.raises(LocalProtocolError):
        conn.accept(R.OK)  # DATA needs 354
    conn.accept()
    while not isinstance(ev := conn.next_event(), BodyEnd):
        assert ev not in (NEED_DATA, PAUSED)
    with pytest.raises(LocalProtocolError):
        conn.accept()  # BodyEnd needs the reply with the queue id
    with pytest.raises(LocalProtocolError):
        conn.accept_lmtp([R.OK])  # not LMTP
    conn.accept(Reply(250, "2.0.0", "queued"))
    assert conn.state is State.GREETED


def test_lmtp_reply_count_must_match() -> None:
    conn = ServerConnection(config(lmtp=True))
    conn.receive_data(b"LHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nBDAT 0 LAST\r\n")
    while not isinstance(conn.next_event(), BodyEnd):
        conn.accept()
    with pytest.raises(LocalProtocolError):
        conn.accept_lmtp([R.OK, R.OK])
    conn.accept_lmtp([R.OK])


def test_receive_after_eof() -> None:
    conn = ServerConnection(config())
    conn.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        conn.receive_data(b"NOOP\r\n")


def test_starttls_event_is_a_notice() -> None:
    d = Driver(config(**TLS_CFG), answers=Answers(tls=False))
    ehlo(d)
    d.feed(b"STARTTLS\r\n")
    assert d.events[-1] == StartTLS()
    assert d.conn.next_event() is PAUSED
