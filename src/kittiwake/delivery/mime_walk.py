"""The MIME structure of a message, found while its octets stream by (RFC 2045, RFC 2046).

Owns ``MimeWalker``: fed a message in chunks of any size, it tells its hooks what each
octet is — a header line of an entity, the end of a header section, body content (of a
leaf, or the preamble/epilogue of a multipart), a boundary delimiter — and ``Entity``, what
it knows of each entity (numbered 0, 1, 2... in the order they start). Subclasses decide
what to do with them (``mime_downgrade``). No I/O; it holds the unfinished line, the
first Content-Type and Content-Transfer-Encoding field of the entity being read and one
frame per open multipart, all bounded: a message of any size walks in constant memory.

Structure (RFC 2046 §5.1.1): a multipart with a ``boundary`` holds entities separated by
``--boundary`` lines; the line end before a delimiter belongs to the delimiter, not to the
part; ``--boundary--`` closes it and what follows, up to an enclosing boundary, is its
epilogue. A line matching any enclosing boundary ends the inner entities too. A
``message/rfc822`` entity's body is a message (headers, body). Children of
``multipart/digest`` default to ``message/rfc822`` (RFC 2046 §5.1.5). A composite type
with a non-identity encoding, or a multipart without a boundary, is read as a leaf. Where
the RFCs leave room (field syntax, boundary padding, a section without its empty line)
this reads as the stdlib ``email`` parser does, so what a reader sees is what we walk.

Security: MEDIUM — this parses untrusted content. Every buffer is bounded (``MAX_LINE``
for a header line, ``MAX_FIELD`` for the fields kept, ``MAX_DEPTH`` for nesting); beyond
them ``fail()`` is called and the walk stops.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import compat32

MAX_LINE = 256 * 1024  # a header line (a body line of any length streams through)
MAX_FIELD = 16 * 1024  # the Content-Type / Content-Transfer-Encoding field kept
MAX_DEPTH = 100  # nested entities (Postfix's mime_nesting_limit)
IDENTITY = frozenset({None, "7bit", "8bit", "binary"})  # RFC 2045 §6.4: no transformation
_FIELD = re.compile(rb"From |[\x21-\x39\x3b-\x7e]*:|[\t ]")  # email.feedparser.headerRE
_BLANK = (b"\r\n", b"\n")
_HEADERS = BytesHeaderParser(policy=compat32)


class Kind(enum.Enum):
    LEAF = "leaf"
    MULTIPART = "multipart"  # has a boundary
    MESSAGE = "message"  # message/rfc822: the body is a message


@dataclass(slots=True, eq=False)
class Entity:
    index: int
    depth: int
    message: bool  # the top of a message (the whole one, or a message/rfc822 body)
    default_type: str
    action: int = 0  # for subclasses
    kind: Kind = Kind.LEAF  # known at the end of the header section, like the two below
    content_type: str = "text/plain"
    encoding: str | None = None  # Content-Transfer-Encoding, lower case; None: absent
    mime_version: bool = False  # a MIME-Version field was seen
    cte_octets: int = 0  # octets of every Content-Transfer-Encoding field line
    field_name: str = ""  # lower-case name of the field being read (continuations included)
    ct_lines: list[bytes] = field(default_factory=list)  # the first Content-Type field
    cte_lines: list[bytes] = field(default_factory=list)  # the first C-T-E field
    _collect: list[bytes] | None = None


@dataclass(slots=True)
class _Frame:
    boundary: bytes
    digest: bool
    entity: Entity


class MimeWalker:
    """Feed octets with ``feed``, then call ``close``; override the ``on_*`` hooks."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._header = True  # reading a header section (else a body)
        self._line_start = True  # the buffer starts at the beginning of a line
        self._frames: list[_Frame] = []
        self._longest = 0  # the longest boundary line that can match
        self._count = 0
        self.leaf = False  # in a body: a leaf's content (else a preamble or epilogue)
        self.stopped = False
        self.entity = self._new_entity(0, message=True, default_type="text/plain")

    # ------------------------------------------------------------------ hooks

    def on_entity(self, entity: Entity) -> None:
        """A new entity starts (its header section comes next)."""

    def on_header_line(self, entity: Entity, line: bytes) -> None:
        """One line of the header section (``entity.field_name`` names its field)."""

    def on_header_end(self, entity: Entity, blank: bytes) -> None:
        """The section ended with the empty line ``blank`` (b"" when it had none)."""

    def on_body(self, data: bytes) -> None:
        """Body octets of ``self.entity`` (``self.leaf``: a leaf's, else a multipart's)."""

    def on_body_end(self) -> None:
        """The leaf ``self.entity`` has no more body."""

    def on_delimiter(self, data: bytes) -> None:
        """A boundary delimiter line with the line end before it."""

    def fail(self, why: str) -> None:
        """The message exceeds a limit; the walk stops (override to raise instead)."""
        self.stopped = True
        self._buf.clear()

    # ------------------------------------------------------------------ driving

    def feed(self, data: bytes) -> None:
        if not self.stopped:
            self._buf += data
            self._run(final=False)

    def close(self) -> None:
        """The end of the message: everything still held is delivered to the hooks."""
        if not self.stopped:
            self._run(final=True)
            self._end_entity()

    def _run(self, *, final: bool) -> None:
        while not self.stopped and (
            self._header_step(final) if self._header else self._body_step(final)
        ):
            pass

    def _new_entity(self, depth: int, *, message: bool, default_type: str) -> Entity:
        entity = Entity(self._count, depth, message, default_type)
        self._count += 1
        if depth > MAX_DEPTH:
            self.fail(f"MIME nesting deeper than {MAX_DEPTH}")
        self.on_entity(entity)
        return entity

    # ------------------------------------------------------------------ headers

    def _header_step(self, final: bool) -> bool:
        buf = self._buf
        if not buf:
            return False
        end = buf.find(b"\n") + 1
        if not end:
            if not final:
                if len(buf) > MAX_LINE:
                    self.fail(f"a header line longer than {MAX_LINE} octets")
                return False
            end = len(buf)
        line = bytes(buf[:end])
        del buf[:end]
        self._header_line(line)
        return True

    def _header_line(self, line: bytes) -> None:
        e = self.entity
        if line.startswith(b"--") and (hit := self._match(line)) is not None:
            self._delimiter(line, hit)
        elif line in _BLANK:
            self._end_headers(line)
        elif line[:1] in (b" ", b"\t"):
            self._keep(e, line)
            self.on_header_line(e, line)
        elif _FIELD.match(line):
            e.field_name = line.partition(b":")[0].strip().lower().decode("ascii", "replace")
            e._collect = None
            if e.field_name == "content-type" and not e.ct_lines:
                e._collect = e.ct_lines
            elif e.field_name == "content-transfer-encoding" and not e.cte_lines:
                e._collect = e.cte_lines
            elif e.field_name == "mime-version":
                e.mime_version = True
            self._keep(e, line)
            self.on_header_line(e, line)
        else:  # not a field: the body starts here, without the empty line
            self._buf[0:0] = line
            self._end_headers(b"")

    def _keep(self, e: Entity, line: bytes) -> None:
        if e.field_name == "content-transfer-encoding":
            e.cte_octets += len(line)
        if e._collect is not None:
            e._collect.append(line)
            if sum(map(len, e._collect)) > MAX_FIELD:
                self.fail(f"a {e.field_name} field longer than {MAX_FIELD} octets")

    def _end_headers(self, blank: bytes) -> None:
        e = self.entity
        e.content_type, boundary = _content_type(e)
        e.encoding = _encoding(e)
        if e.encoding in IDENTITY:
            if boundary is not None:
                e.kind = Kind.MULTIPART
            elif e.content_type == "message/rfc822":
                e.kind = Kind.MESSAGE
        self.on_header_end(e, blank)
        self._line_start = True
        if e.kind is Kind.MESSAGE:
            self.entity = self._new_entity(e.depth + 1, message=True, default_type="text/plain")
            return
        self._header = False
        if e.kind is Kind.MULTIPART:
            assert boundary is not None
            self._frames.append(_Frame(boundary, e.content_type == "multipart/digest", e))
            self._bound()
        else:
            self.leaf = True

    def _end_entity(self) -> None:
        """End the header section (if still open) and the leaf body of the current entity."""
        while self._header and not self.stopped:
            self._end_headers(b"")
        if self.leaf:
            self.leaf = False
            self.on_body_end()

    # ------------------------------------------------------------------ bodies

    def _body_step(self, final: bool) -> bool:
        buf = self._buf
        if not self._frames:  # no boundary can end this body: all of it is content
            self._take(len(buf))
            return False
        pos, first = 0, True
        while True:
            if first and self._line_start and buf.startswith(b"--"):
                start = 0
            else:
                found = buf.find(b"\n--", pos)
                if found < 0:
                    break
                start = found + 1
            first = False
            end = buf.find(b"\n", start) + 1
            if not end:
                if not final and len(buf) - start <= self._longest:
                    self._take(self._eol_start(start))  # wait for the rest of that line
                    return False
                if not final:
                    break  # too long to be a delimiter
                end = len(buf)
            hit = self._match(buf[start:end])
            if hit is not None:
                cut = self._eol_start(start)
                self._take(cut)
                line = bytes(buf[: end - cut])
                del buf[: end - cut]
                self._delimiter(line, hit)
                return True
            pos = start
        if final:
            self._take(len(buf))
            return False
        # Hold back the last line end and what follows while it may still become a delimiter.
        tail = buf.rfind(b"\n") + 1
        maybe = (tail or self._line_start) and len(buf) - tail <= self._longest
        if maybe and b"--".startswith(buf[tail : tail + 2]):
            self._take(self._eol_start(tail))
            return False
        self._take(len(buf) - (1 if buf.endswith(b"\r") else 0))
        return False

    def _bound(self) -> None:
        """The longest line that may still be a delimiter: ``--``, a boundary, ``--`` and
        transport padding (RFC 2046 §5.1.1), within the 998-octet line limit."""
        self._longest = max((len(f.boundary) + 1002 for f in self._frames), default=0)

    def _eol_start(self, start: int) -> int:
        """Where the line end before the line at ``start`` begins."""
        if start >= 2 and self._buf[start - 2 : start] == b"\r\n":
            return start - 2
        return max(start - 1, 0)

    def _take(self, n: int) -> None:
        if n:
            data = bytes(self._buf[:n])
            del self._buf[:n]
            self._line_start = False
            self.on_body(data)

    def _match(self, line: bytes | bytearray) -> tuple[int, bool] | None:
        """(frame index, closing) when ``line`` is a boundary delimiter line."""
        if not self._frames or not line.startswith(b"--"):
            return None
        rest = bytes(line[2:]).rstrip(b" \t\r\n")
        for level in range(len(self._frames) - 1, -1, -1):
            boundary = self._frames[level].boundary
            if rest == boundary:
                return level, False
            if rest.startswith(boundary) and rest[len(boundary) :] == b"--":
                return level, True
        return None

    def _delimiter(self, line: bytes, hit: tuple[int, bool]) -> None:
        level, closing = hit
        self._end_entity()
        frame = self._frames[level]
        del self._frames[level if closing else level + 1 :]
        self._bound()
        self.on_delimiter(line)
        self._line_start = True
        if closing:  # its epilogue follows
            self.entity, self._header = frame.entity, False
            return
        default = "message/rfc822" if frame.digest else "text/plain"
        depth = frame.entity.depth + 1
        self.entity = self._new_entity(depth, message=False, default_type=default)
        self._header = True


def _content_type(e: Entity) -> tuple[str, bytes | None]:
    """The media type (lower case, the default when absent or invalid, as ``email`` reads
    it) and, for a multipart, its boundary."""
    if not e.ct_lines:
        return e.default_type, None
    msg = _HEADERS.parsebytes(b"".join(e.ct_lines) + b"\r\n")
    msg.set_default_type(e.default_type)
    ctype = msg.get_content_type()
    boundary = msg.get_boundary() if ctype.startswith("multipart/") else None
    if not boundary or not boundary.isascii():
        return ctype, None
    return ctype, boundary.encode("ascii")


def _encoding(e: Entity) -> str | None:
    if not e.cte_lines:
        return None
    value = b"".join(e.cte_lines).partition(b":")[2]
    return b" ".join(value.split()).decode("ascii", "replace").lower() or None
