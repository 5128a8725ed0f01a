"""Client-side SMTP/LMTP connection without I/O: commands out as bytes, replies in.

    conn = ClientConnection(lmtp=False)
    conn.receive_data(chunk)                 # from the socket; b"" = the server closed
    r = conn.next_response()                 # Response(verb, reply), NEED_DATA or CLOSED
    sock.write(conn.ehlo("me.example"))      # every command method returns its bytes

Each command method checks that it may be sent now, returns the bytes to write and
records which reply it expects; replies come back in order as ``Response(verb, reply)``,
so a pipelined group (RFC 2920 §3.1: MAIL, RCPT..., then DATA or BDAT) is written at once
and its replies mapped back without bookkeeping in the caller.

Commands: ``ehlo/helo/lhlo``, ``starttls`` (then ``tls_established()``), ``auth``,
``auth_response``, ``auth_plain``, ``mail``, ``rcpt``, ``data`` then ``body(chunk)`` and
``end_data()`` after the 354, ``bdat(chunk, last=...)``, ``rset``, ``noop``, ``quit``.

Rules the core enforces (``LocalProtocolError`` — a bug in the caller):
* nothing before the greeting; EHLO/HELO/LHLO before anything else but QUIT; after a
  successful STARTTLS only EHLO/LHLO (RFC 3207 §4.2: the capabilities are forgotten);
* without PIPELINING one command at a time; with it, EHLO, STARTTLS, AUTH, DATA, NOOP
  and QUIT still end a group (RFC 2920 §3.1); BDAT pipelines behind MAIL, RCPT, BDAT;
* MAIL only outside a transaction (RSET first if the server holds one), RCPT/DATA/BDAT
  inside, body bytes only after a 354; no BODY/SIZE/DSN parameters to a peer that did not
  advertise them; no CR/LF/NUL in any argument; non-ASCII addresses need SMTPUTF8.

LMTP (RFC 2033 §4.2-4.3): the end of the data (``end_data()`` or ``BDAT ... LAST``) is
answered once per accepted recipient: the core counts the RCPT replies and hands out
that many ``END`` responses (none when no recipient was accepted).

STARTTLS (RFC 3207 §5): when the 220 arrives, every byte buffered behind it is thrown
away and input is ignored until ``tls_established()``: plaintext that an attacker slipped
in can never be read as a reply inside TLS.

Security: HIGH. Replies from the network are parsed by ``client_replies``; what we send
is checked by ``client_encode``; the transaction commands (MAIL, RCPT, DATA, BDAT) are in
``client_tx``. Never imports asyncio, socket or ssl.
"""

from __future__ import annotations

import base64
from collections import deque

from kittiwake.envelope import Reply
from kittiwake.errors import LocalProtocolError, RemoteProtocolError
from kittiwake.proto.client_encode import DataEncoder, check_word
from kittiwake.proto.client_replies import Capabilities, ReplyParser
from kittiwake.proto.client_state import GROUP_ENDERS, Phase, Response, Verb
from kittiwake.proto.client_tx import ClientTransaction
from kittiwake.proto.events import NEED_DATA, ConnectionClosed, Sentinel

__all__ = ["CLOSED", "NEED_DATA", "ClientConnection", "Phase", "Response", "Verb"]

CLOSED = ConnectionClosed()


class ClientConnection(ClientTransaction):
    """One SMTP or LMTP client session, without I/O. See the module docstring."""

    __slots__ = (
        "_caps",
        "_eof",
        "_expect",
        "_lmtp",
        "_lmtp_owed",
        "_parser",
        "_tls",
        "authenticated",
    )

    def __init__(self, *, lmtp: bool = False, tls: bool = False) -> None:
        self._lmtp = lmtp
        self._tls = tls  # implicit TLS (RFC 8314): the caller wrapped the socket already
        self._parser = ReplyParser()
        self._expect: deque[Verb] = deque([Verb.GREETING])
        self._phase = Phase.GREETING
        self._caps = Capabilities()
        self._eof = False
        self._encoder: DataEncoder | None = None
        self._got_354 = False
        self._accepted = 0  # RCPTs answered 2xx in the current transaction (LMTP END count)
        self._lmtp_owed = 0  # END replies still to hand out for the current LMTP message
        self._tx_dead = False  # the server refused our MAIL: it holds no transaction
        self._tx_utf8 = False
        self.authenticated = False

    # ----------------------------------------------------------------------- input

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the server; ``b""`` means it closed the connection."""
        if not data:
            self._eof = True
        elif self._phase is not Phase.TLS and not self._eof:
            self._parser.feed(data)

    def next_response(self) -> Response | Sentinel | ConnectionClosed:
        """The next reply with the verb it answers; NEED_DATA; or CLOSED after EOF.

        A reply nobody asked for (an unsolicited ``421`` before closing) comes back as
        ``Response(Verb.NOOP, reply)`` if it is a 421, else ``RemoteProtocolError``.
        """
        if self._phase is Phase.TLS:
            return NEED_DATA
        self._skip_silent_end()
        reply = self._parser.next_reply()
        if reply is None:
            return CLOSED if self._eof else NEED_DATA
        return Response(self._match(reply), reply)

    def _skip_silent_end(self) -> None:
        # RFC 2033 §4.3: in LMTP the end of data gets one reply per accepted RCPT — none
        # at all when no RCPT was accepted. Its RCPT replies are all in once END is next.
        expect = self._expect
        if self._lmtp and expect and expect[0] is Verb.END and not self._accepted:
            expect.popleft()
            self._end_tx()

    def _match(self, reply: Reply) -> Verb:
        if self._lmtp_owed:
            self._lmtp_owed -= 1
            if not self._lmtp_owed:
                self._end_tx()
            return Verb.END
        if not self._expect:
            if reply.code == 421:  # RFC 5321 §3.8: the server is shutting the channel
                self._phase = Phase.CLOSED
                return Verb.NOOP
            raise RemoteProtocolError(f"unexpected reply: {reply}")
        verb = self._expect.popleft()
        code = reply.code
        ok = 200 <= code < 300
        if verb is Verb.RCPT:
            if ok:
                self._accepted += 1
        elif verb is Verb.MAIL:
            if not ok:
                self._tx_dead = True
        elif verb is Verb.DATA:
            if code == 354:
                self._got_354 = True
            elif self._phase is Phase.DATA:  # the server may still hold the transaction
                self._phase = Phase.MAIL  # (554 "no valid recipients"): RCPT or RSET next
                self._encoder = None
        elif verb is Verb.END:
            if self._lmtp and self._accepted > 1:
                self._lmtp_owed = self._accepted - 1  # this reply is the first of them
            else:
                self._end_tx()
        elif verb is Verb.GREETING:
            self._phase = Phase.HELLO if ok else Phase.CLOSED
        elif verb in (Verb.EHLO, Verb.LHLO):
            if ok:
                self._caps = Capabilities.from_ehlo(reply)
                self._phase = Phase.READY
        elif verb is Verb.HELO:
            if ok:
                self._caps = Capabilities()
                self._phase = Phase.READY
        elif verb is Verb.STARTTLS:
            if code == 220:
                self._phase = Phase.TLS
                self._parser.clear()  # RFC 3207 §5: nothing read before TLS is kept
        elif verb is Verb.AUTH:
            if code == 334:
                self._phase = Phase.AUTH
            else:
                self._phase = Phase.READY
                self.authenticated = code == 235
        return verb

    def _end_tx(self) -> None:
        self._accepted = 0
        self._tx_dead = False
        self._got_354 = False

    # -------------------------------------------------------------- sending rules

    def _may_send(self, verb: Verb, *phases: Phase) -> None:
        if self._phase not in phases:
            raise LocalProtocolError(f"{verb.value} in phase {self._phase.value}")
        pending = self._expect
        if pending and (
            not self._caps.pipelining or pending[-1] in GROUP_ENDERS or self._lmtp_owed
        ):
            raise LocalProtocolError(f"{verb.value} while waiting for {pending[-1].value}")

    def _command(self, verb: Verb, line: str) -> bytes:
        self._expect.append(verb)
        return line.encode("utf-8") + b"\r\n"

    # ---------------------------------------------------------------- the session

    def ehlo(self, domain: str) -> bytes:
        return self._hello(Verb.LHLO if self._lmtp else Verb.EHLO, domain)

    def helo(self, domain: str) -> bytes:
        if self._lmtp:
            raise LocalProtocolError("HELO in LMTP: use LHLO (RFC 2033 §4.1)")
        return self._hello(Verb.HELO, domain)

    def lhlo(self, domain: str) -> bytes:
        if not self._lmtp:
            raise LocalProtocolError("LHLO outside LMTP")
        return self._hello(Verb.LHLO, domain)

    def _hello(self, verb: Verb, domain: str) -> bytes:
        check_word(domain, "HELO argument")
        if not domain.isascii():
            raise LocalProtocolError("HELO argument must be ASCII (RFC 5321 §4.1.1.1)")
        self._may_send(verb, Phase.HELLO, Phase.READY)
        self._phase = Phase.HELLO  # until the reply: a new EHLO resets the session
        return self._command(verb, f"{verb.value} {domain}")

    def starttls(self) -> bytes:
        if self._tls:
            raise LocalProtocolError("STARTTLS inside TLS")
        self._may_send(Verb.STARTTLS, Phase.READY)
        return self._command(Verb.STARTTLS, "STARTTLS")

    def tls_established(self) -> None:
        """The handshake is done: forget the capabilities; EHLO again (RFC 3207 §4.2)."""
        if self._phase is not Phase.TLS:
            raise LocalProtocolError(f"tls_established() in phase {self._phase.value}")
        self._tls = True
        self._parser.clear()
        self._caps = Capabilities()
        self._phase = Phase.HELLO

    def auth(self, mechanism: str, initial: bytes | None = None) -> bytes:
        """``AUTH mechanism [initial-response]`` (RFC 4954 §4; ``=`` for an empty one)."""
        check_word(mechanism, "SASL mechanism")
        self._may_send(Verb.AUTH, Phase.READY)
        if initial is None:
            return self._command(Verb.AUTH, f"AUTH {mechanism}")
        encoded = base64.b64encode(initial).decode("ascii") or "="
        return self._command(Verb.AUTH, f"AUTH {mechanism} {encoded}")

    def auth_response(self, data: bytes) -> bytes:
        """Answer a 334 challenge with base64 ``data``."""
        self._may_send(Verb.AUTH, Phase.AUTH)
        self._phase = Phase.READY  # until the next 334
        return self._command(Verb.AUTH, base64.b64encode(data).decode("ascii"))

    def auth_plain(self, username: str, password: str) -> bytes:
        """RFC 4616 PLAIN with an initial response: ``\\0user\\0password``."""
        return self.auth("PLAIN", b"\0" + username.encode() + b"\0" + password.encode())

    def noop(self) -> bytes:
        self._may_send(Verb.NOOP, Phase.READY, Phase.MAIL)
        return self._command(Verb.NOOP, "NOOP")

    def rset(self) -> bytes:
        self._may_send(Verb.RSET, Phase.READY, Phase.MAIL, Phase.BDAT)
        self._phase = Phase.READY
        self._encoder = None
        return self._command(Verb.RSET, "RSET")

    def quit(self) -> bytes:
        self._may_send(Verb.QUIT, *Phase)
        self._phase = Phase.CLOSED
        return self._command(Verb.QUIT, "QUIT")

    # ---------------------------------------------------------------- properties

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def lmtp(self) -> bool:
        return self._lmtp

    @property
    def tls(self) -> bool:
        return self._tls

    @property
    def awaiting(self) -> int:
        """Replies still expected (LMTP END replies counted once they are known)."""
        self._skip_silent_end()
        return len(self._expect) + self._lmtp_owed

    @property
    def accepted_recipients(self) -> int:
        """RCPTs answered 2xx so far in the current transaction."""
        return self._accepted
