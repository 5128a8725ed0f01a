"""The server core's command side: one handler per SMTP/LMTP verb.

Owns the dispatch of a command line (``_on_command``, called by ``reader.Reader._step``)
and what each command does: validate, consult ``state.refusal()``, then either answer at
once (NOOP, RSET, errors...) or raise a decision for the driver. Reading input by state
(AUTH response lines, DATA content, BDAT chunks) and the line limits are in ``reader.py``;
connection attributes and shared helpers in ``core.py``; the public façade and the answer
methods in ``server.py``.

Security: HIGH. Every line comes from the peer. Rules kept here:

* Only CRLF ends a command line; a bare CR or LF inside one is a syntax error (500 5.5.2).
* Per-verb line limits (values in ``reader.py``: 512, MAIL 1184, RCPT 1042, AUTH 12288);
  a line over the limit is answered with 500 5.5.2.
* HTTP verbs close the session (cross-protocol attacks; chasquid does the same).
* STARTTLS drops every byte buffered after it (RFC 3207 §5, CVE-2011-0411).
"""

from __future__ import annotations

from collections.abc import Callable

from kittiwake.envelope import BodyType, Reply
from kittiwake.proto import grammar, replies
from kittiwake.proto.body import Chunk, ChunkKind
from kittiwake.proto.buffer import TOO_LONG, TooLong
from kittiwake.proto.events import (
    AuthStart,
    DataStart,
    Etrn,
    Helo,
    Noop,
    Quit,
    StartTLS,
)
from kittiwake.proto.params import parse_mail, parse_rcpt
from kittiwake.proto.reader import (
    AUTH_LINE,
    COMMAND_LINE,
    MAIL_LINE,
    RCPT_LINE,
    Reader,
    decode_base64,
)
from kittiwake.proto.state import TRANSACTION_STATES, State, Trigger

_LIMITS = {b"MAIL": MAIL_LINE, b"RCPT": RCPT_LINE, b"AUTH": AUTH_LINE}
_HTTP_VERBS = frozenset(
    {b"GET", b"POST", b"PUT", b"HEAD", b"CONNECT", b"OPTIONS", b"DELETE", b"PATCH", b"TRACE"}
)
_NOT_IMPLEMENTED = frozenset({b"TURN", b"SEND", b"SOML", b"SAML", b"ETRN", b"ATRN"})

# Events carry no per-instance data in these cases: share one instance.
_QUIT = Quit()
_STARTTLS = StartTLS()
_DATA_START = DataStart(bdat=False)
BDAT_START = DataStart(bdat=True)
_NOOPS = {verb: Noop(verb) for verb in ("NOOP", "VRFY", "EXPN", "HELP")}


class CommandInterpreter(Reader):
    """Runs one handler per command line. Use ``ServerConnection``."""

    __slots__ = ()

    # ---------------------------------------------------------------- command dispatch

    def _on_command(self, line: bytes | TooLong) -> None:
        self._commands += 1
        if self._commands > self._config.max_commands:
            self._close(replies.TOO_MANY_COMMANDS)
            return
        if line is TOO_LONG:
            self._error(replies.LINE_TOO_LONG)
            return
        assert isinstance(line, bytes)
        if b"\r" in line or b"\n" in line:  # never a line end, never inside a command
            self._error(replies.BARE_NEWLINE)
            return
        sp = line.find(b" ")
        verb = (line if sp < 0 else line[:sp]).upper()
        entry = _HANDLERS.get(verb) or self._optional(verb)
        if entry is None:
            if sp > 0 and verb in _HTTP_VERBS:
                self._close(replies.HTTP_REFUSED)
            elif verb in _NOT_IMPLEMENTED:
                self._error(replies.NOT_IMPLEMENTED)
            else:
                self._error(replies.UNRECOGNIZED)
            return
        if len(line) + 2 > _LIMITS.get(verb, COMMAND_LINE):
            self._error(replies.LINE_TOO_LONG)
            return
        name, handler = entry
        arg = line[sp + 1 :].strip(b" ") if sp > 0 else b""
        if name != "BDAT":  # BDAT must consume its chunk even when refused
            reply = self._refusal(name)
            if reply is not None:
                self._error(reply)
                return
        handler(self, arg)

    def _optional(self, verb: bytes) -> tuple[str, _Handler] | None:
        """Commands that exist only when configured (off the common path on purpose)."""
        return _ETRN if verb == b"ETRN" and self._config.etrn_enabled else None

    def _cmd_helo(self, arg: bytes) -> None:
        self._greet("HELO", arg)

    def _cmd_ehlo(self, arg: bytes) -> None:
        self._greet("EHLO", arg)

    def _cmd_lhlo(self, arg: bytes) -> None:
        self._greet("LHLO", arg)

    def _greet(self, verb: str, arg: bytes) -> None:
        if self._config.lmtp != (verb == "LHLO"):
            self._error(replies.LMTP_USE_LHLO if self._config.lmtp else replies.UNRECOGNIZED)
            return
        if not arg:
            self._error(replies.HELO_SYNTAX)
            return
        # Leniency: only the first word counts ("EHLO host (comment)" is seen in the wild).
        domain = arg.split(b" ", 1)[0].decode("latin-1")
        if not grammar.helo_ok(domain):
            self._error(replies.HELO_BAD)
            return
        if self._state in TRANSACTION_STATES:  # RFC 5321 §4.1.4: EHLO resets the transaction
            self._drop_tx()
        self._decide(Helo(verb, domain))

    def _cmd_mail(self, arg: bytes) -> None:
        text = self._text(arg)
        if text is None:
            self._error(replies.BAD_UTF8)
            return
        result = parse_mail(text, esmtp=self._esmtp, max_size=self._config.max_message_size)
        if isinstance(result, Reply):
            self._error(result)
        else:
            self._decide(result)

    def _cmd_rcpt(self, arg: bytes) -> None:
        text = self._text(arg)
        if text is None:
            self._error(replies.BAD_UTF8)
            return
        result = parse_rcpt(text, esmtp=self._esmtp, smtputf8=self._tx_smtputf8)
        if isinstance(result, Reply):
            self._error(result)
        elif self._rcpts >= self._config.max_recipients:
            self._error(replies.TOO_MANY_RECIPIENTS)  # RFC 5321 §4.5.3.1.10
        else:
            self._decide(result)

    def _cmd_data(self, arg: bytes) -> None:
        if arg:
            self._error(replies.NO_PARAMS)
        elif self._tx_body is BodyType.BINARYMIME:
            self._error(replies.BINARYMIME_NEEDS_BDAT)  # RFC 3030 §3
        else:
            self._decide(_DATA_START)

    def _cmd_bdat(self, arg: bytes) -> None:
        words = [w for w in arg.split(b" ") if w]
        # bdat-cmd = "BDAT" SP chunk-size [ SP end-marker ] ; chunk-size = 1*DIGIT
        if not 1 <= len(words) <= 2 or not words[0].isdigit() or len(words[0]) > 20:
            self._error(replies.BDAT_SYNTAX)  # size unknown: nothing can be consumed
            return
        if len(words) == 2 and words[1].upper() != b"LAST":
            self._error(replies.BDAT_SYNTAX)
            return
        size, last = int(words[0]), len(words) == 2
        reply = self._refusal("BDAT")
        if reply is not None:
            if last and self._config.lmtp and reply is replies.NEED_RCPT:
                reply = None  # RFC 2033 §4.3: BDAT LAST without recipients gets zero replies
            self._chunk = Chunk(size, last, ChunkKind.REFUSE, reply)
        elif self._state is State.RCPT:  # the first chunk: ask the driver
            self._chunk = Chunk(size, last, ChunkKind.STREAM)
            self._decide(BDAT_START)
        else:  # CHUNKING
            self._chunk = self._next_chunk(size, last)

    def _cmd_rset(self, arg: bytes) -> None:
        if arg:
            self._error(replies.NO_PARAMS)
            return
        self._send(replies.RSET_OK)
        self._drop_tx()

    def _cmd_noop(self, arg: bytes) -> None:
        self._send(replies.OK)  # RFC 5321 §4.1.1.9: an argument is allowed and ignored
        self._events.append(_NOOPS["NOOP"])

    def _cmd_quit(self, arg: bytes) -> None:
        if arg:
            self._error(replies.NO_PARAMS)
            return
        self._send(replies.BYE)
        self._events.append(_QUIT)
        self._shut()

    def _cmd_vrfy(self, arg: bytes) -> None:
        if not self._config.vrfy_enabled:
            self._error(replies.NOT_IMPLEMENTED)
        elif not arg:
            self._error(replies.VRFY_SYNTAX)
        else:
            self._send(replies.VRFY_CANNOT)  # RFC 5321 §3.5.3
            self._events.append(_NOOPS["VRFY"])

    def _cmd_expn(self, arg: bytes) -> None:
        if not self._config.expn_enabled:
            self._error(replies.NOT_IMPLEMENTED)
        elif not arg:
            self._error(replies.VRFY_SYNTAX)
        else:
            self._send(replies.VRFY_CANNOT)
            self._events.append(_NOOPS["EXPN"])

    def _cmd_help(self, arg: bytes) -> None:
        self._send(replies.HELP)
        self._events.append(_NOOPS["HELP"])

    def _cmd_starttls(self, arg: bytes) -> None:
        if not self._config.starttls_available:
            self._error(replies.STARTTLS_NOT_AVAILABLE)
        elif self._tls:
            self._error(replies.TLS_ACTIVE)
        elif arg:
            self._error(replies.NO_PARAMS)  # RFC 3207 §4: "501 ... no parameters allowed"
        else:
            self._send(replies.STARTTLS_READY)
            self._buf.clear()  # RFC 3207 §5: nothing pipelined after STARTTLS survives
            self._move(Trigger.STARTTLS)
            self._events.append(_STARTTLS)

    def _cmd_etrn(self, arg: bytes) -> None:
        """ETRN [@|#]node (RFC 1985 §5); ``state`` already refused it in a transaction."""
        if not arg:
            self._error(replies.ETRN_SYNTAX)
            return
        node = arg.decode("latin-1")
        if not grammar.etrn_ok(node):
            self._error(replies.ETRN_BAD_NODE)
            return
        self._decide(Etrn(node))

    def _cmd_auth(self, arg: bytes) -> None:
        cfg = self._config
        if not cfg.auth_mechanisms:
            self._error(replies.AUTH_NOT_AVAILABLE)
            return
        if cfg.auth_requires_tls and not self._tls:
            self._error(replies.AUTH_NEEDS_TLS)  # RFC 4954 §6: 538 5.7.11
            return
        if self._auth_identity is not None:
            self._error(replies.ALREADY_AUTHENTICATED)  # RFC 4954 §4
            return
        words = [w for w in arg.split(b" ") if w]
        if not 1 <= len(words) <= 2:
            self._error(replies.AUTH_SYNTAX)
            return
        mechanism = words[0].upper().decode("latin-1")
        if mechanism not in self._mechanisms:
            self._error(replies.AUTH_UNKNOWN_MECHANISM)
            return
        initial: bytes | None = None
        if len(words) == 2:
            # RFC 4954 §4: "=" is an empty initial response.
            initial = b"" if words[1] == b"=" else decode_base64(words[1])
            if initial is None:
                self._error(replies.AUTH_BAD_BASE64)
                return
        self._decide(AuthStart(mechanism, initial))


_Handler = Callable[[CommandInterpreter, bytes], None]
_HANDLERS: dict[bytes, tuple[str, _Handler]] = {
    b"HELO": ("HELO", CommandInterpreter._cmd_helo),
    b"EHLO": ("EHLO", CommandInterpreter._cmd_ehlo),
    b"LHLO": ("LHLO", CommandInterpreter._cmd_lhlo),
    b"MAIL": ("MAIL", CommandInterpreter._cmd_mail),
    b"RCPT": ("RCPT", CommandInterpreter._cmd_rcpt),
    b"DATA": ("DATA", CommandInterpreter._cmd_data),
    b"BDAT": ("BDAT", CommandInterpreter._cmd_bdat),
    b"RSET": ("RSET", CommandInterpreter._cmd_rset),
    b"NOOP": ("NOOP", CommandInterpreter._cmd_noop),
    b"QUIT": ("QUIT", CommandInterpreter._cmd_quit),
    b"VRFY": ("VRFY", CommandInterpreter._cmd_vrfy),
    b"EXPN": ("EXPN", CommandInterpreter._cmd_expn),
    b"HELP": ("HELP", CommandInterpreter._cmd_help),
    b"STARTTLS": ("STARTTLS", CommandInterpreter._cmd_starttls),
    b"AUTH": ("AUTH", CommandInterpreter._cmd_auth),
}
_ETRN: tuple[str, _Handler] = ("ETRN", CommandInterpreter._cmd_etrn)  # when etrn_enabled
