"""What the DATA-stage checks see: ``MessageContext`` and the ``BodySpool`` behind it.

Owns ``MessageContext`` (session, envelope, the parsed header section, an opener for the
body as a binary stream, the transaction's ``Results``) and ``BodySpool``, a copy of the
message octets as the client sent them (CRLF, dot-unstuffed), kept in memory up to a small
threshold and in an unlinked-on-close temporary file beyond it, so a check never needs
the message whole in memory. The header section is parsed with ``email``'s ``compat32``
policy (raw strings, never raises on malformed fields) and capped at ``MAX_HEADER``
octets. Moderately security sensitive: every octet here is attacker-chosen.
"""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import io
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import BinaryIO

from kittiwake.envelope import Envelope, SessionInfo
from kittiwake.policy.results import Results

__all__ = [
    "MAX_HEADER",
    "BodySpool",
    "MessageContext",
    "header_section",
    "parse_header_section",
    "raw_header_section",
    "read_header_section",
]

MAX_HEADER = 1024 * 1024  # header octets parsed; fields beyond are not seen by checks
MEMORY_LIMIT = 256 * 1024  # a body up to this size stays in memory

BodyOpener = Callable[[], BinaryIO]


def raw_header_section(stream: BinaryIO, limit: int = MAX_HEADER) -> bytes:
    """The header section at the start of ``stream``: its lines up to the blank line (not
    included), whole lines only, at most ``limit`` octets (fields beyond are cut off)."""
    lines: list[bytes] = []
    size = 0
    for line in stream:
        if line in (b"\r\n", b"\n"):
            break
        size += len(line)
        if size > limit:
            break
        lines.append(line)
    return b"".join(lines)


def parse_header_section(raw: bytes) -> Message:
    """``raw`` (as ``raw_header_section`` returns it) parsed with the compat32 policy."""
    parser = email.parser.BytesHeaderParser(policy=email.policy.compat32)
    return parser.parsebytes(raw + b"\r\n")


def read_header_section(stream: BinaryIO, limit: int = MAX_HEADER) -> Message:
    """Parse the header section at the start of ``stream`` (up to the blank line)."""
    return parse_header_section(raw_header_section(stream, limit))


@dataclass(slots=True)
class MessageContext:
    """One message at the end of DATA, before the final reply.

    ``headers``: the header section (``headers.get_all("From")``, ``headers.items()``);
    ``open_body()``: a fresh binary stream over the whole message (header section
    included, as received; the caller closes it); ``queue_id`` for log lines.
    ``header_bytes``: the raw header section ``headers`` was parsed from (as
    ``header_section`` returns it; None: read it from the body when asked);
    ``message_bytes``: the whole message when it is held in memory (a small one, up to
    ``BodySpool``'s memory limit), else None: a check may use it instead of reading
    ``open_body()`` (the same octets).
    """

    session: SessionInfo
    envelope: Envelope
    headers: Message
    open_body: BodyOpener
    results: Results = field(default_factory=Results)
    queue_id: str = ""
    header_bytes: bytes | None = None
    message_bytes: bytes | None = None

    @property
    def header_fields(self) -> list[tuple[str, str]]:
        """The fields as (name, raw value) in message order."""
        return [(k, str(v)) for k, v in self.headers.items()]


class BodySpool:
    """A tee of the message octets for the DATA checks (see the module docstring).

    ``write(chunk)`` as the body streams in; ``context(...)`` at the end; ``close()`` when
    the transaction is over (idempotent; removes the temporary file).
    """

    def __init__(self, directory: Path | None = None, memory_limit: int = MEMORY_LIMIT) -> None:
        self._directory = directory
        self._limit = memory_limit
        self._buffer = bytearray()
        self._file: BinaryIO | None = None
        self._path: str | None = None
        self._frozen: bytes | None = None  # the buffer, frozen for readers (then empty)
        self.size = 0

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self._frozen is not None:  # written to after a read: thaw
            self._buffer, self._frozen = bytearray(self._frozen), None
        if self._file is None and len(self._buffer) + len(data) <= self._limit:
            self._buffer += data
            return
        if self._file is None:
            fd, self._path = tempfile.mkstemp(prefix="kw-policy-", dir=self._directory)
            self._file = os.fdopen(fd, "w+b")
            self._file.write(self._buffer)
            self._buffer = bytearray()
        self._file.write(data)

    def open(self) -> BinaryIO:
        """A new reader from the first octet (independent of other readers)."""
        data = self.in_memory()
        if data is not None:
            return io.BytesIO(data)  # shares ``data`` (immutable) until written to
        assert self._file is not None
        self._file.flush()
        assert self._path is not None
        return open(self._path, "rb")  # the caller closes it

    def in_memory(self) -> bytes | None:
        """The whole message when it is held in memory (else None); not copied per call."""
        if self._file is not None:
            return None
        if self._frozen is None:
            self._frozen, self._buffer = bytes(self._buffer), bytearray()
        return self._frozen

    def context(
        self,
        session: SessionInfo,
        envelope: Envelope,
        results: Results | None = None,
        queue_id: str = "",
    ) -> MessageContext:
        with self.open() as stream:
            raw = raw_header_section(stream)
        return MessageContext(
            session,
            envelope,
            parse_header_section(raw),
            self.open,
            results or Results(),
            queue_id,
            raw,
            self.in_memory(),
        )

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)
            self._path = None
        self._buffer = bytearray()
        self._frozen = None

    def __enter__(self) -> BodySpool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def header_section(ctx: MessageContext, limit: int = MAX_HEADER) -> bytes:
    """The raw header section of the message (up to the blank line, at most ``limit``):
    ``ctx.header_bytes`` when the context has it (read once, when it was made)."""
    if ctx.header_bytes is not None and limit == MAX_HEADER:
        return ctx.header_bytes
    with ctx.open_body() as stream:
        return raw_header_section(stream, limit)
