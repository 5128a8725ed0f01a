"""Server-side SMTP/LMTP connection: the sans-I/O façade the driver (``smtpd``) talks to.

    conn = ServerConnection(ProtoConfig(...), tls=False)
    out = conn.greeting()            # b"220 host ESMTP Kittiwake\\r\\n"
    conn.receive_data(chunk)         # b"" means EOF
    while True:
        ev = conn.next_event()       # an Event, NEED_DATA or PAUSED
        ...decision events → exactly one answer method below...
    sock.write(conn.data_to_send())  # flush when next_event() returns NEED_DATA

Answer methods (valid only while a decision is pending, else LocalProtocolError):
    accept_helo()                          Helo → 250 (EHLO/LHLO: extension list)
    accept(reply: Reply | None = None)     MailFrom/RcptTo → 250 2.1.0 / 2.1.5 default;
                                           DataStart → 354 (DATA) or the chunk flows (BDAT);
                                           BodyEnd → reply required (250 with queue id);
                                           in LMTP mode it is repeated for every recipient
                                           Etrn → reply required (250/251/252/253, RFC 1985)
    accept_lmtp(replies: Sequence[Reply])  BodyEnd in LMTP mode: one per accepted RCPT
    reject(reply: Reply)                   any decision (4xx/5xx)
    auth_challenge(data: bytes)            AuthStart/AuthResponse → 334 base64(data)
    auth_success(identity: str)            → 235 2.7.0, marks the session authenticated
Other methods:
    tls_established()                      after StartTLS: fresh state, tls=True
    close_with(reply) -> bytes             driver-initiated close (timeouts, shutdown: 421);
                                           returns data_to_send() (the reply included)
Properties: tls, authenticated (identity | None), helo_domain, esmtp, in_transaction, state,
command_count, bad_command_count, recipient_count, pending.

Semantics worth knowing:

* Pipelining (RFC 2920): buffered commands are processed in order; ``next_event()`` returns
  PAUSED while a decision is pending and resumes after the answer, so replies leave in
  command order. Flush ``data_to_send()`` whenever NEED_DATA comes back. While PAUSED the
  driver should stop reading (the buffer is only bounded while the core consumes it).
* EOF: buffered complete commands are still processed; then ``ConnectionClosed`` is
  returned on every call. ``receive_data`` with bytes after EOF is a LocalProtocolError.
* After ``Quit`` or ``Closing`` all input is ignored. During STARTTLS (until
  ``tls_established()``) input is ignored and ``next_event()`` returns PAUSED.
* The transaction ends (state GREETED) after a BodyEnd is answered or failed, and after a
  rejected DataStart; a ``Reset`` notice marks every end that is not a BodyEnd.
* Bare LF in a command line: the line is refused with 500 5.5.2 (never a line end).
* ``bad_command_count`` counts core 500/501/502/503/504/530/538/555 replies and failed AUTH
  (a driver ``reject`` of AuthStart/AuthResponse, or ``*``); over ``max_bad_commands`` the
  core adds ``421 4.7.0`` and a ``Closing`` notice. Over ``max_commands`` commands: 421.
* A BDAT with an unparsable size gets 501 and its octets are read as commands (their size
  is unknown); any other refused BDAT consumes its octets first (RFC 3030 §2).

Only ``RemoteProtocolError`` (never raised today: every bad input gets a reply) and
``LocalProtocolError`` (driver misuse) may escape; a hypothesis test holds us to it.
Security: HIGH — this is the boundary with the network. Never imports asyncio/socket/ssl.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

from kittiwake.envelope import Reply
from kittiwake.errors import LocalProtocolError
from kittiwake.proto import replies
from kittiwake.proto.body import ChunkKind, DataDecoder
from kittiwake.proto.commands import CommandInterpreter
from kittiwake.proto.events import (
    NEED_DATA,
    PAUSED,
    AuthCancelled,
    AuthResponse,
    AuthStart,
    BodyEnd,
    ConnectionClosed,
    DataStart,
    Etrn,
    Event,
    Helo,
    MailFrom,
    RcptTo,
    Sentinel,
)
from kittiwake.proto.state import TRANSACTION_STATES, State, Trigger

__all__ = ["ServerConnection"]

_CLOSED = ConnectionClosed()
_CANCELLED = AuthCancelled()
_MAIL_OK = replies.MAIL_OK.to_bytes()
_RCPT_OK = replies.RCPT_OK.to_bytes()
_DATA_GO = replies.DATA_GO.to_bytes()


class ServerConnection(CommandInterpreter):
    """One SMTP (or LMTP) server session, without I/O. See the module docstring."""

    __slots__ = ()

    # -------------------------------------------------------------------------- bytes

    def greeting(self) -> bytes:
        """The 220 banner (no enhanced code: RFC 2034 §3)."""
        cfg = self._config
        return Reply(220, None, f"{cfg.hostname} {cfg.greeting_text}").to_bytes()

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer; ``b""`` means the peer closed its side."""
        if self._eof:
            if data:
                raise LocalProtocolError("receive_data() after EOF")
            return
        if not data:
            self._eof = True
        elif self._state is not State.CLOSED and self._state is not State.TLS:
            self._buf.feed(data)

    def next_event(self) -> Event | Sentinel:
        """The next event, ``PAUSED`` (answer the pending decision) or ``NEED_DATA``."""
        events = self._events
        if events:
            return events.popleft()
        if self._pending is not None or self._state is State.TLS:
            return PAUSED
        while self._step():
            if events:
                return events.popleft()
        return _CLOSED if self._eof else NEED_DATA

    def data_to_send(self) -> bytes:
        """Return and forget the queued output."""
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        return data

    # ------------------------------------------------------------------------ answers

    def _expect(self, method: str, *kinds: type) -> Event:
        event = self._pending
        if event is None or not isinstance(event, kinds):
            raise LocalProtocolError(f"{method}() while pending: {event!r}")
        return event

    def accept_helo(self) -> None:
        event = self._expect("accept_helo", Helo)
        assert isinstance(event, Helo)
        self._pending = None
        self._move(Trigger.HELO)
        self._helo = event.domain
        self._esmtp = event.verb != "HELO"
        first = f"{self._config.hostname} greets {event.domain}"
        lines = (first, *self._extensions) if self._esmtp else first
        self._send(Reply(250, None, lines))  # no enhanced code: RFC 2034 §3

    def accept(self, reply: Reply | None = None) -> None:
        event = self._expect("accept", Helo, MailFrom, RcptTo, DataStart, BodyEnd, Etrn)
        if (
            reply is not None
            and not 200 <= reply.code < 300
            and (reply.code != 354 or not isinstance(event, DataStart))
        ):
            raise LocalProtocolError(f"accept() needs a 2xx reply, not {reply}")
        if isinstance(event, Helo):
            if reply is not None:
                raise LocalProtocolError("accept() of Helo takes no reply; the core builds it")
            self.accept_helo()
        elif isinstance(event, MailFrom):
            self._pending = None
            self._move(Trigger.MAIL)
            self._tx_smtputf8 = event.smtputf8
            self._tx_body = event.body_type
            self._out.append(_MAIL_OK if reply is None else reply.to_bytes())
        elif isinstance(event, RcptTo):
            self._pending = None
            self._move(Trigger.RCPT)
            self._rcpts += 1
            self._out.append(_RCPT_OK if reply is None else reply.to_bytes())
        elif isinstance(event, DataStart):
            if event.bdat:  # the reply, if any, is ignored: BDAT has no intermediate reply
                self._pending = None
                self._move(Trigger.BDAT)
                chunk = self._chunk
                assert chunk is not None
                self._chunk = self._next_chunk(chunk.size, chunk.last)
            else:
                if reply is not None and reply.code != 354:
                    raise LocalProtocolError(f"accept() of DATA needs a 354 reply, not {reply}")
                self._pending = None
                self._move(Trigger.DATA)
                cfg = self._config
                self._decoder = DataDecoder(
                    normalize=self._normalize, max_size=cfg.max_message_size
                )
                self._out.append(_DATA_GO if reply is None else reply.to_bytes())
        elif isinstance(event, Etrn):
            if reply is None:
                raise LocalProtocolError("accept() of Etrn needs the 25x reply (RFC 1985 §5.1)")
            self._pending = None
            self._send(reply)
        else:  # BodyEnd
            if reply is None:
                raise LocalProtocolError("accept() of BodyEnd needs the 250 reply (queue id)")
            self._pending = None
            self._end_body((reply,) * (self._rcpts if self._config.lmtp else 1))

    def accept_lmtp(self, replies: Sequence[Reply]) -> None:
        self._expect("accept_lmtp", BodyEnd)
        if not self._config.lmtp:
            raise LocalProtocolError("accept_lmtp() outside LMTP mode")
        if len(replies) != self._rcpts:
            raise LocalProtocolError(f"accept_lmtp() needs {self._rcpts} replies")
        self._pending = None
        self._end_body(tuple(replies))

    def reject(self, reply: Reply) -> None:
        if reply.code < 400:
            raise LocalProtocolError(f"reject() with a positive reply {reply}")
        event = self._expect(
            "reject", Helo, MailFrom, RcptTo, DataStart, BodyEnd, AuthStart, AuthResponse, Etrn
        )
        self._pending = None
        if isinstance(event, DataStart):
            if event.bdat:  # consume the chunk first, then answer (RFC 3030 §2)
                chunk = self._chunk
                assert chunk is not None
                chunk.kind, chunk.reply = ChunkKind.REJECTED, reply
            else:
                self._send(reply)
            self._drop_tx()
        elif isinstance(event, BodyEnd):
            self._end_body((reply,) * (self._rcpts if self._config.lmtp else 1))
        elif isinstance(event, AuthStart | AuthResponse):
            self._send(reply)
            if self._state is State.AUTH:
                self._move(Trigger.AUTH_END)
            self._count_bad()  # a failed AUTH counts as a bad command
        else:  # Helo, MailFrom, RcptTo, Etrn: nothing changes
            self._send(reply)

    def auth_challenge(self, data: bytes) -> None:
        """Send ``334 base64(data)`` (RFC 4954 §4; ``334 `` for empty data)."""
        self._expect("auth_challenge", AuthStart, AuthResponse)
        self._pending = None
        self._out.append(b"334 " + base64.b64encode(data) + b"\r\n")
        if self._state is State.GREETED:
            self._move(Trigger.AUTH_START)

    def auth_success(self, identity: str) -> None:
        self._expect("auth_success", AuthStart, AuthResponse)
        self._pending = None
        self._send(replies.AUTH_OK)
        self._auth_identity = identity
        if self._state is State.AUTH:
            self._move(Trigger.AUTH_END)

    def tls_established(self) -> None:
        """The handshake is done: forget everything but the greeting (RFC 3207 §4.2)."""
        if self._state is not State.TLS:
            raise LocalProtocolError(f"tls_established() in state {self._state.name}")
        self._move(Trigger.TLS_DONE)
        self._tls = True
        self._helo = None
        self._esmtp = False
        self._auth_identity = None
        self._buf.clear()
        self._extensions = self._build_extensions()

    def close_with(self, reply: Reply) -> bytes:
        """Driver-initiated close (timeout, shutdown): queue ``reply``, ignore all input.

        Returns ``data_to_send()`` (everything queued, ending with ``reply``) for convenience.
        Once the session is closed (QUIT, Closing, an earlier close_with) no reply is added.
        """
        if self._state is not State.CLOSED:
            self._send(reply)
            self._shut()
        return self.data_to_send()

    # --------------------------------------------------------------------- properties

    @property
    def tls(self) -> bool:
        return self._tls

    @property
    def authenticated(self) -> str | None:
        return self._auth_identity

    @property
    def helo_domain(self) -> str | None:
        return self._helo

    @property
    def esmtp(self) -> bool:
        return self._esmtp

    @property
    def in_transaction(self) -> bool:
        return self._state in TRANSACTION_STATES

    @property
    def state(self) -> State:
        return self._state

    @property
    def command_count(self) -> int:
        return self._commands

    @property
    def bad_command_count(self) -> int:
        return self._bad

    @property
    def recipient_count(self) -> int:
        """Recipients accepted in the current transaction (LMTP: replies owed)."""
        return self._rcpts

    @property
    def pending(self) -> Event | None:
        """The decision awaiting an answer, if any."""
        return self._pending
