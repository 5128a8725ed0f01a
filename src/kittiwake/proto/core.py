"""Per-connection state of the server core and the helpers every handler shares.

Owns the attributes of a connection (buffer, output queue, event queue, pending decision,
session and transaction fields) and the primitives that change them: queue a reply, raise
a decision, refuse a command (counting bad commands), close, move the state machine, end
a transaction. ``commands.CommandInterpreter`` and ``server.ServerConnection`` build on it.

Security: MEDIUM. No parsing happens here, but the bad-command budget and the shutdown on
close (drop the buffer, ignore input) are enforced here.
"""

from __future__ import annotations

from collections import deque

from kittiwake.envelope import BodyType, Reply
from kittiwake.proto import replies
from kittiwake.proto.body import Chunk, ChunkKind, DataDecoder
from kittiwake.proto.buffer import ReceiveBuffer
from kittiwake.proto.events import (
    BadCommand,
    BareLinefeedPolicy,
    BodyEnd,
    Closing,
    Event,
    ProtoConfig,
    Reset,
)
from kittiwake.proto.state import TLS_EXEMPT, State, Trigger, refusal, transition

RESET = Reset()


class Core:
    """Per-connection state and shared helpers. Use ``ServerConnection``."""

    __slots__ = (
        "_auth_identity",
        "_bad",
        "_buf",
        "_chunk",
        "_chunk_total",
        "_commands",
        "_config",
        "_decoder",
        "_eof",
        "_esmtp",
        "_events",
        "_extensions",
        "_helo",
        "_mechanisms",
        "_normalize",
        "_out",
        "_pending",
        "_rcpts",
        "_state",
        "_tls",
        "_tx_body",
        "_tx_smtputf8",
    )

    def __init__(self, config: ProtoConfig, *, tls: bool = False) -> None:
        self._config = config
        self._tls = tls
        self._buf = ReceiveBuffer()
        self._out: list[bytes] = []
        self._events: deque[Event] = deque()
        self._state = State.CONNECTED
        self._pending: Event | None = None  # the decision event awaiting an answer
        self._eof = False
        self._helo: str | None = None
        self._esmtp = False
        self._auth_identity: str | None = None
        self._commands = 0
        self._bad = 0
        self._mechanisms = frozenset(m.upper() for m in config.auth_mechanisms)
        self._normalize = config.bare_linefeed is BareLinefeedPolicy.NORMALIZE
        self._extensions = self._build_extensions()
        # The mail transaction (RFC 5321 §3.3).
        self._rcpts = 0  # accepted recipients
        self._tx_smtputf8 = False
        self._tx_body = BodyType.SEVENBIT
        self._decoder: DataDecoder | None = None  # while reading DATA
        self._chunk: Chunk | None = None  # while reading a BDAT chunk
        self._chunk_total = 0  # octets of BDAT content in this transaction

    def _build_extensions(self) -> tuple[str, ...]:
        """EHLO keywords (RFC 5321 §4.1.1.1), given the TLS state."""
        cfg = self._config
        ext = [
            f"SIZE {cfg.max_message_size}" if cfg.max_message_size else "SIZE",  # RFC 1870
            "PIPELINING",  # RFC 2920
            "8BITMIME",  # RFC 6152
            "SMTPUTF8",  # RFC 6531
            "ENHANCEDSTATUSCODES",  # RFC 2034
            "CHUNKING",  # RFC 3030
            "BINARYMIME",  # RFC 3030
            "DSN",  # RFC 3461
        ]
        if cfg.starttls_available and not self._tls:
            ext.append("STARTTLS")  # RFC 3207 §4.2: never after the handshake
        if cfg.auth_mechanisms and (self._tls or not cfg.auth_requires_tls):
            ext.append("AUTH " + " ".join(m.upper() for m in cfg.auth_mechanisms))
        if cfg.etrn_enabled:
            ext.append("ETRN")  # RFC 1985 §2
        return tuple(ext)

    # ------------------------------------------------------------------------ helpers

    def _send(self, reply: Reply) -> None:
        self._out.append(reply.to_bytes())

    def _decide(self, event: Event) -> None:
        self._pending = event
        self._events.append(event)

    def _count_bad(self) -> None:
        self._bad += 1
        if self._bad > self._config.max_bad_commands:
            self._close(replies.TOO_MANY_ERRORS)

    def _error(self, reply: Reply) -> None:
        """Refuse a command with a core reply (a BadCommand notice; counts if 5xx syntax)."""
        self._out.append(reply.to_bytes())
        self._events.append(BadCommand(reply))
        if reply.code in replies.COUNTED_CODES:
            self._count_bad()

    def _close(self, reply: Reply) -> None:
        """The core ends the session: reply, Closing notice, ignore everything after."""
        self._send(reply)
        self._events.append(Closing(reply))
        self._shut()

    def _shut(self) -> None:
        self._state = State.CLOSED
        self._buf.clear()
        self._pending = None
        self._decoder = None
        self._chunk = None

    def _move(self, trigger: Trigger) -> None:
        self._state = transition(self._state, trigger)

    def _reset_tx(self) -> None:
        self._rcpts = 0
        self._tx_smtputf8 = False
        self._tx_body = BodyType.SEVENBIT
        self._chunk_total = 0
        self._decoder = None

    def _drop_tx(self) -> None:
        """Abandon the transaction (RSET, HELO, refused DATA): state, fields, Reset notice."""
        self._move(Trigger.RESET)
        self._reset_tx()
        self._events.append(RESET)

    def _refusal(self, verb: str) -> Reply | None:
        if self._config.require_tls and not self._tls and verb not in TLS_EXEMPT:
            return replies.TLS_REQUIRED
        reply = refusal(self._state, verb)
        if reply is replies.NO_VALID_RECIPIENTS and self._config.lmtp:
            return replies.NEED_RCPT  # RFC 2033 §4.2: 503 when no RCPT succeeded
        return reply

    @staticmethod
    def _text(arg: bytes) -> str | None:
        """Decode an argument: ASCII, else UTF-8 (RFC 6531), else None."""
        try:
            return arg.decode("ascii")
        except UnicodeDecodeError:
            pass
        try:
            return arg.decode("utf-8")
        except UnicodeDecodeError:
            return None

    def _next_chunk(self, size: int, last: bool) -> Chunk:
        limit = self._config.max_message_size
        if limit and self._chunk_total + size > limit:
            return Chunk(size, last, ChunkKind.FAIL, replies.TOO_BIG)
        return Chunk(size, last, ChunkKind.STREAM)

    def _end_body(self, answers: tuple[Reply, ...]) -> None:
        for reply in answers:
            self._send(reply)
        self._move(Trigger.BODY_END)
        self._reset_tx()

    def _body_failed(self, reply: Reply, size: int, last: bool) -> None:
        """The core refuses the message itself: reply(s), BodyEnd notice, end of transaction."""
        self._events.append(BodyEnd(size, reply))
        self._end_body((reply,) * (self._rcpts if self._config.lmtp and last else 1))
