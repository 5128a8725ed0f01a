"""The server core's reading loop: what the next input is depends on the state.

Owns ``Reader._step``: in command mode a command line (handed to ``_on_command``, which
``commands.CommandInterpreter`` implements), in the AUTH exchange a response line
(RFC 4954 §4), in DATA the decoder's content (``body.DataDecoder``), in BDAT the octets of
the current chunk (RFC 3030 §2); and ``decode_base64``. The line limits live here too,
since the buffer applies them while reading. Connection attributes and shared helpers are
in ``core.py``.

Security: HIGH. Every octet comes from the peer. Rules kept here:

* Per-verb line limits: 512 octets (RFC 5321 §4.5.3.1.4); MAIL 512+26+16+10+120+500
  (SIZE RFC 1870 §3, BODY RFC 3030 §3, SMTPUTF8 RFC 6531 §3.1, RET/ENVID RFC 3461 §4.3-4.4,
  AUTH= RFC 4954 §3); RCPT 512+530 (RFC 3461 §5); AUTH 12288 (RFC 4954 §4 — for the
  exchange; we allow it for the command too, as XOAUTH2 initial responses exceed 512).
  The buffer holds at most ``BUFFER_LIMIT`` octets of one line; longer ones are dropped as
  they arrive and answered once.
* AUTH response lines are strict base64 or ``*`` (cancel); anything else is an error.
* A BDAT chunk is consumed to its declared size even when refused, so its octets are never
  read as commands.
"""

from __future__ import annotations

import base64
import binascii

from kittiwake.proto import replies
from kittiwake.proto.body import Chunk, ChunkKind
from kittiwake.proto.buffer import TOO_LONG, TooLong
from kittiwake.proto.core import Core
from kittiwake.proto.events import AuthCancelled, AuthResponse, BodyData, BodyEnd
from kittiwake.proto.state import State, Trigger

COMMAND_LINE = 512  # RFC 5321 §4.5.3.1.4, including CRLF
MAIL_LINE = 512 + 26 + 16 + 10 + 120 + 500
RCPT_LINE = 512 + 530
AUTH_LINE = 12288  # RFC 4954 §4
BUFFER_LIMIT = AUTH_LINE  # longest line the buffer holds in command mode

_CANCELLED = AuthCancelled()


def decode_base64(data: bytes) -> bytes | None:
    """Strict base64 (RFC 4954 §4: reject anything outside the alphabet); None if invalid."""
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None


class Reader(Core):
    """Reads input by state. Use ``ServerConnection``."""

    __slots__ = ()

    def _on_command(self, line: bytes | TooLong) -> None:
        raise NotImplementedError  # commands.CommandInterpreter's

    def _step(self) -> bool:
        """Consume some input; False when nothing more can be done without new bytes."""
        state = self._state
        if state is State.CLOSED or state is State.TLS:
            return False
        if self._chunk is not None:
            return self._step_chunk(self._chunk)
        if state is State.DATA:
            return self._step_data()
        if state is State.AUTH:
            line = self._buf.next_line(AUTH_LINE)
            if line is None:
                return False
            self._on_auth_line(line)
            return True
        line = self._buf.next_line(BUFFER_LIMIT)
        if line is None:
            return False
        self._on_command(line)
        return True

    def _step_data(self) -> bool:
        if not self._buf:
            return False
        decoder = self._decoder
        assert decoder is not None
        raw = self._buf.take_all()
        content, end = decoder.feed(raw)
        if content:
            self._events.append(BodyData(content))
        if end >= 0:
            self._buf.unread(raw[end:])
            self._decoder = None
            if decoder.failure is not None:
                self._body_failed(decoder.failure, decoder.size, last=True)
            else:
                self._decide(BodyEnd(decoder.size))
        return True

    def _step_chunk(self, chunk: Chunk) -> bool:
        if chunk.remaining:
            if not self._buf:
                return False
            data = self._buf.take(chunk.remaining)
            chunk.remaining -= len(data)
            kind = chunk.kind
            if kind is ChunkKind.STREAM:
                self._chunk_total += len(data)
                self._events.append(BodyData(data))
            elif kind is ChunkKind.FAIL:
                self._chunk_total += len(data)
            if chunk.remaining:
                return True
        self._chunk = None
        kind = chunk.kind
        if kind is ChunkKind.STREAM:
            if chunk.last:
                self._decide(BodyEnd(self._chunk_total))
            else:
                self._send(replies.bdat_ok(chunk.size))
        elif kind is ChunkKind.FAIL:
            self._body_failed(chunk.reply or replies.TOO_BIG, self._chunk_total, chunk.last)
        elif chunk.reply is not None:
            if kind is ChunkKind.REFUSE:
                self._error(chunk.reply)
            else:  # REJECTED: the driver's reply; Reset was already emitted
                self._send(chunk.reply)
        return True

    def _on_auth_line(self, line: bytes | TooLong) -> None:
        """A line answering our 334 (RFC 4954 §4)."""
        if isinstance(line, bytes) and line != b"*":
            data = decode_base64(line)
            if data is not None:
                self._decide(AuthResponse(data))
                return
        self._move(Trigger.AUTH_END)
        if line is TOO_LONG:
            self._error(replies.AUTH_LINE_TOO_LONG)
        elif line == b"*":
            self._send(replies.AUTH_CANCELLED)
            self._events.append(_CANCELLED)
            self._count_bad()
        else:
            self._error(replies.AUTH_BAD_BASE64)
