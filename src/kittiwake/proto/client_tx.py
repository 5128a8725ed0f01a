"""The client core's mail transaction: MAIL, RCPT, then DATA and its content, or BDAT.

Owns ``ClientTransaction``, the transaction half of ``proto.client.ClientConnection`` (a
base class: it works on the connection's state, declared below; the sending rules
``_may_send``/``_command`` and the reply side are the connection's). ``mail`` adds SIZE
(RFC 1870), BODY (RFC 6152, RFC 3030), SMTPUTF8 (RFC 6531) and RET/ENVID (RFC 3461
§4.3-4.4) only when the server advertised them; ``rcpt`` adds NOTIFY/ORCPT (RFC 3461
§4.1-4.2); ``data``/``body``/``end_data`` stream dot-stuffed content after the 354
(RFC 5321 §4.5.2); ``bdat`` sends chunks (RFC 3030 §2).

Security: HIGH. Everything here goes to another server: addresses and parameters are
checked by ``client_encode`` (no CR/LF/NUL, xtext), content is dot-stuffed and
CRLF-normalised there. Never imports asyncio, socket or ssl.
"""

from __future__ import annotations

from collections import deque

from kittiwake.envelope import BodyType, Notify, Ret
from kittiwake.errors import LocalProtocolError
from kittiwake.proto import grammar
from kittiwake.proto.client_encode import DataEncoder, check_path, notify_value, xtext_encode
from kittiwake.proto.client_replies import Capabilities
from kittiwake.proto.client_state import Phase, Verb


class ClientTransaction:
    """MAIL, RCPT, DATA/BDAT for ``ClientConnection``. See the module docstring."""

    # The connection's state this half assigns (a slot lives on the first class that
    # assigns it); ``ClientConnection.__init__`` sets them all.
    __slots__ = ("_accepted", "_encoder", "_got_354", "_phase", "_tx_dead", "_tx_utf8")

    _accepted: int
    _caps: Capabilities
    _encoder: DataEncoder | None
    _expect: deque[Verb]
    _got_354: bool
    _phase: Phase
    _tx_dead: bool
    _tx_utf8: bool

    def _may_send(self, verb: Verb, *phases: Phase) -> None:
        raise NotImplementedError  # the connection's

    def _command(self, verb: Verb, line: str) -> bytes:
        raise NotImplementedError  # the connection's

    def mail(
        self,
        sender: str,
        *,
        size: int | None = None,
        body: BodyType | None = None,
        smtputf8: bool = False,
        ret: Ret | None = None,
        envid: str | None = None,
    ) -> bytes:
        """``MAIL FROM:<sender>`` with SIZE (RFC 1870), BODY (RFC 6152, 3030), SMTPUTF8
        (RFC 6531), RET/ENVID (RFC 3461 §4.3-4.4; ENVID xtext-encoded here)."""
        if self._phase is Phase.MAIL and self._tx_dead and not self._expect:
            self._phase = Phase.READY  # the server refused that MAIL: no transaction open
        self._may_send(Verb.MAIL, Phase.READY)
        caps = self._caps
        check_path(sender, utf8=smtputf8)
        params = []
        if size is not None:
            self._need(caps.size is not None, "SIZE")
            params.append(f"SIZE={int(size)}")
        if body is not None and body is not BodyType.SEVENBIT:
            ok = caps.binarymime if body is BodyType.BINARYMIME else caps.eightbitmime
            self._need(ok, body.value)
            params.append(f"BODY={body.value}")
        if smtputf8:
            self._need(caps.smtputf8, "SMTPUTF8")
            params.append("SMTPUTF8")
        if ret is not None:
            self._need(caps.dsn, "DSN")
            params.append(f"RET={ret.value}")
        if envid is not None:
            self._need(caps.dsn, "DSN")
            params.append(f"ENVID={xtext_encode(envid)}")
        self._phase = Phase.MAIL
        self._tx_dead = False
        self._accepted = 0
        self._tx_utf8 = smtputf8
        tail = (" " + " ".join(params)) if params else ""
        return self._command(Verb.MAIL, f"MAIL FROM:<{sender}>{tail}")

    def rcpt(
        self, address: str, *, notify: Notify | None = None, orcpt: str | None = None
    ) -> bytes:
        """``RCPT TO:<address>`` with NOTIFY and ORCPT (RFC 3461 §4.1-4.2). ``orcpt`` is
        ``addr-type;address`` decoded (as ``Recipient.orcpt`` keeps it); it is xtext-encoded
        here."""
        self._may_send(Verb.RCPT, Phase.MAIL)
        check_path(address, utf8=self._tx_utf8)
        params = []
        if notify is not None:
            self._need(self._caps.dsn, "DSN")
            params.append("NOTIFY=" + notify_value(notify))
        if orcpt is not None:
            self._need(self._caps.dsn, "DSN")
            addr_type, sep, value = orcpt.partition(";")
            if not sep or grammar.ATOM_RE.fullmatch(addr_type) is None:
                addr_type, value = "rfc822", orcpt
            params.append(f"ORCPT={addr_type};{xtext_encode(value)}")
        tail = (" " + " ".join(params)) if params else ""
        return self._command(Verb.RCPT, f"RCPT TO:<{address}>{tail}")

    def data(self) -> bytes:
        """``DATA``; after its 354, stream ``body()`` chunks and finish with ``end_data()``."""
        self._may_send(Verb.DATA, Phase.MAIL)
        self._phase = Phase.DATA
        self._got_354 = False
        self._encoder = DataEncoder()
        return self._command(Verb.DATA, "DATA")

    def body(self, chunk: bytes) -> bytes:
        """Dot-stuffed, CRLF-normalised ``chunk`` (RFC 5321 §4.5.2); valid after the 354."""
        encoder = self._data_encoder()
        return encoder.feed(chunk)

    def end_data(self) -> bytes:
        """The rest of the content and ``.<CRLF>``; expects the final reply(ies)."""
        encoder = self._data_encoder()
        self._encoder = None
        self._phase = Phase.READY
        self._expect.append(Verb.END)
        return encoder.end()

    def _data_encoder(self) -> DataEncoder:
        encoder = self._encoder
        if self._phase is not Phase.DATA or encoder is None or not self._got_354:
            raise LocalProtocolError("message content before the 354 reply to DATA")
        return encoder

    @property
    def body_normalized(self) -> bool:
        """A bare CR or LF in the content sent so far was turned into CRLF."""
        return self._encoder is not None and self._encoder.normalized

    def bdat(self, chunk: bytes, *, last: bool) -> bytes:
        """``BDAT <size> [LAST]`` and the chunk's octets (RFC 3030 §2)."""
        if not self._caps.chunking:
            raise LocalProtocolError("BDAT to a server without CHUNKING")
        self._may_send(Verb.BDAT, Phase.MAIL, Phase.BDAT)
        self._phase = Phase.READY if last else Phase.BDAT
        verb = Verb.END if last else Verb.BDAT
        self._expect.append(verb)
        head = f"BDAT {len(chunk)} LAST\r\n" if last else f"BDAT {len(chunk)}\r\n"
        return head.encode("ascii") + chunk

    def _need(self, offered: bool, what: str) -> None:
        if not offered:
            raise LocalProtocolError(f"{what} parameter to a server that did not offer it")
