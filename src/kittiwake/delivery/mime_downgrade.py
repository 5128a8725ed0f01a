"""8-bit MIME to 7-bit MIME, for a peer that does not offer 8BITMIME (RFC 6152 §3).

RFC 6152 §3: an 8BITMIME message relayed to a server without 8BITMIME must either be
returned or converted to 7-bit MIME (RFC 2045). Like Postfix, we convert. Owns, all
sans-I/O over ``mime_walk.MimeWalker`` and in constant memory whatever the message size:

* ``MimeScanner`` — pass 1: reads the message and returns a ``DowngradePlan``: whether it
  has 8-bit octets at all, why it cannot be converted (or None), which entities change
  and an estimate of the converted size (for SIZE=, RFC 1870 §4: on the high side);
* ``MimeDowngrader`` — pass 2: reads it again and returns the converted octets;
* ``QuotedPrintable`` and ``Base64`` — the streaming encoders (RFC 2045 §6.7, §6.8).

Two passes, because whether a part needs converting is known only at its end, while its
Content-Transfer-Encoding field comes first: reading the spool file twice costs less than
holding a part.

What changes (nothing else: 7-bit parts, header sections and delimiters pass octet for
octet, and no header marks the conversion):

* a leaf whose body has an octet >= 0x80 and whose encoding is ``7bit``, ``8bit`` or
  absent → quoted-printable: lines of at most 76 octets with soft breaks, CRLF kept as hard
  breaks, ``=``, controls, 8-bit octets and white space before a line end encoded; its
  Content-Transfer-Encoding field(s) replaced by ``quoted-printable``. At the top of a
  message without MIME-Version, ``MIME-Version: 1.0`` is added (RFC 2045 §4: without it
  the new field means nothing). A ``binary`` leaf → base64 (76-octet lines);
* a multipart or message/rfc822 entity labelled ``8bit`` or ``binary`` → ``7bit``, which it
  now is: RFC 2045 §6.4 allows no other encoding on composite types, so their 8-bit
  children are converted instead. (``message/global*`` are leaves: RFC 6532 §3.7 lets
  them be encoded.)

What cannot be converted (the caller bounces 5.6.3, as before this existed): 8-bit octets
in a header field (only SMTPUTF8 carries those, RFC 6532), in a part already encoded
(quoted-printable, base64, an x-token), in a message/* or multipart/* entity read as a
leaf (RFC 2045 §6.4), in a multipart's preamble or epilogue (no encoding applies there),
and a message beyond the walker's limits.

DKIM: converting changes the body, so a DKIM signature made over the 8-bit form (ours are
made at submission, before relay) no longer verifies at the peer — unavoidable, Postfix
documents the same; RFC 6376 §5.3 recommends that signers convert to 7-bit before signing.

Security: MEDIUM — parses untrusted content (bounded by ``mime_walk``); what it returns
goes to the peer.
"""

from __future__ import annotations

import binascii
from array import array
from dataclasses import dataclass, field

from kittiwake.delivery.mime_walk import Entity, Kind, MimeWalker
from kittiwake.errors import KittiwakeError

QP, BASE64, SEVEN_BIT = 1, 2, 3  # what happens to an entity (low bits of an action)
ADD_MIME_VERSION = 8
FRAGMENT = 64 * 1024  # a longer line is encoded in pieces joined by soft breaks
_CTE = {
    QP: b"Content-Transfer-Encoding: quoted-printable\r\n",
    BASE64: b"Content-Transfer-Encoding: base64\r\n",
    SEVEN_BIT: b"Content-Transfer-Encoding: 7bit\r\n",
}
_MIME_VERSION = b"MIME-Version: 1.0\r\n"
# Octets quoted-printable writes as =XX (RFC 2045 §6.7 rule 2; CR and LF count as CRLF).
_ESCAPED = bytes([*range(9), 11, 12, *range(14, 32), 61, *range(127, 256)])


class DowngradeError(KittiwakeError):
    """Pass 2 met what pass 1 did not (the spool file changed between them): a bug."""


@dataclass(frozen=True, slots=True)
class DowngradePlan:
    eight_bit: bool  # an octet >= 0x80 anywhere in the message
    problem: str | None = None  # why it cannot be converted; None: it can
    size: int = 0  # estimated octets once converted
    entities: array[int] = field(default_factory=lambda: array("Q"))  # ascending indexes
    actions: bytes = b""  # one per entity


class MimeScanner(MimeWalker):
    """Pass 1: ``scan()`` the message in chunks, then ``plan()``."""

    def __init__(self) -> None:
        super().__init__()
        self.eight_bit = False
        self.problem: str | None = None
        self._size = self._delta = 0
        self._entities: array[int] = array("Q")
        self._actions = bytearray()
        self._octets = self._escaped = 0  # of the current leaf body
        self._tail = b"\r\n"
        self._high = False  # the current leaf body has an 8-bit octet

    def scan(self, data: bytes) -> None:
        self._size += len(data)
        if not self.eight_bit and not data.isascii():
            self.eight_bit = True
        self.feed(data)

    def plan(self) -> DowngradePlan:
        self.close()
        return DowngradePlan(
            self.eight_bit,
            self.problem,
            self._size + self._delta,
            self._entities,
            bytes(self._actions),
        )

    def fail(self, why: str) -> None:
        self.problem = self.problem or why
        super().fail(why)

    def on_header_line(self, entity: Entity, line: bytes) -> None:
        if not line.isascii():
            self.fail("8-bit octets in a header field (only SMTPUTF8 carries those, RFC 6532)")

    def on_header_end(self, entity: Entity, blank: bytes) -> None:
        self._octets = self._escaped = 0
        self._tail = b"\r\n"  # the last two octets of the body so far, after a line end
        self._high = False
        if entity.kind is not Kind.LEAF and entity.encoding in ("8bit", "binary"):
            self._change(entity, SEVEN_BIT)

    def on_body(self, data: bytes) -> None:
        if not self.leaf:
            if not data.isascii():
                self.fail("8-bit octets in a multipart preamble or epilogue")
            return
        self._octets += len(data)
        self._escaped += len(data) - len(data.translate(None, _ESCAPED))
        # White space before a line end and a line of one dot are escaped too.
        seen = self._tail + data
        self._escaped += sum(map(seen.count, (b" \r\n", b"\t\r\n", b"\n.\r")))
        self._tail = seen[-2:]
        self._high = self._high or not data.isascii()

    def on_body_end(self) -> None:
        if not self._high:
            return
        if self._tail.endswith((b" ", b"\t", b"\n.")):  # the last line
            self._escaped += 1
        e = self.entity
        composite = e.content_type.partition("/")[0] in ("multipart", "message")
        if composite and not e.content_type.startswith("message/global"):
            self.fail(f"8-bit octets in {e.content_type}, which must not be encoded (RFC 2045)")
        elif e.encoding in (None, "7bit", "8bit"):
            self._change(e, QP | (ADD_MIME_VERSION if e.message and not e.mime_version else 0))
        elif e.encoding == "binary":
            self._change(e, BASE64)
        else:
            self.fail(f"8-bit octets in a part encoded as {e.encoding}")

    def _change(self, e: Entity, action: int) -> None:
        self._entities.append(e.index)
        self._actions.append(action)
        n, base = self._octets, action & 7
        if base == QP:  # every escape adds 2; a soft break per 73 octets, on the high side
            body = n + 2 * self._escaped
            body += 3 * (body // 73 + 1)
        elif base == BASE64:
            body = (n + 2) // 3 * 4
            body += 2 * ((body - 1) // 76) if body else 0
        else:
            body = n
        header = len(_CTE[base]) - e.cte_octets
        if action & ADD_MIME_VERSION:
            header += len(_MIME_VERSION)
        self._delta += body - n + header


class MimeDowngrader(MimeWalker):
    """Pass 2: ``convert()`` each chunk of the message, then ``finish()``; both return the
    converted octets so far. Raises ``DowngradeError`` where the message is not the one
    the plan was made from."""

    def __init__(self, plan: DowngradePlan) -> None:
        if plan.problem is not None:
            raise DowngradeError(f"cannot convert: {plan.problem}")
        self._plan = zip(plan.entities, plan.actions, strict=True)
        self._next = next(self._plan, None)
        self._out: list[bytes] = []
        self._encoder: QuotedPrintable | Base64 | None = None
        super().__init__()

    def convert(self, data: bytes) -> bytes:
        self.feed(data)
        return self._flush()

    def finish(self) -> bytes:
        self.close()
        if self._next is not None:
            raise DowngradeError("the message has fewer MIME entities than planned")
        return self._flush()

    def _flush(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def fail(self, why: str) -> None:
        raise DowngradeError(why)

    def on_entity(self, entity: Entity) -> None:
        if self._next is not None and self._next[0] == entity.index:
            entity.action = self._next[1]
            self._next = next(self._plan, None)

    def on_header_line(self, entity: Entity, line: bytes) -> None:
        if not (entity.action and entity.field_name == "content-transfer-encoding"):
            self._out.append(line)

    def on_header_end(self, entity: Entity, blank: bytes) -> None:
        if entity.action:
            base = entity.action & 7
            if (base == SEVEN_BIT) == (entity.kind is Kind.LEAF):
                raise DowngradeError(f"MIME entity {entity.index} is not the one planned")
            if entity.action & ADD_MIME_VERSION:
                self._out.append(_MIME_VERSION)
            self._out.append(_CTE[base])
            if base == QP:
                self._encoder = QuotedPrintable()
            elif base == BASE64:
                self._encoder = Base64()
        self._out.append(blank)

    def on_body(self, data: bytes) -> None:
        encoder = self._encoder if self.leaf else None
        self._out.append(data if encoder is None else encoder.write(data))

    def on_body_end(self) -> None:
        if self._encoder is not None:
            self._out.append(self._encoder.close())
            self._encoder = None

    def on_delimiter(self, data: bytes) -> None:
        self._out.append(data)


class QuotedPrintable:
    """RFC 2045 §6.7, streaming: ``write`` body octets, then ``close``. CRLF is a hard line
    break; a bare CR or LF is an octet like any other (=0D, =0A), so decoding gives back
    exactly what went in. Holds at most one unfinished line: a line longer than
    ``FRAGMENT`` is encoded in pieces joined by soft breaks."""

    def __init__(self) -> None:
        self._carry = b""

    def write(self, data: bytes) -> bytes:
        data = self._carry + data
        out: list[bytes] = []
        cut = data.rfind(b"\r\n") + 2
        if cut >= 2:
            block, data = data[:cut], data[cut:]
            if len(block) > FRAGMENT and max(map(len, block.split(b"\r\n"))) > FRAGMENT:
                for line in block[:-2].split(b"\r\n"):
                    out.append(_qp_line(_cut(line, out)))
            else:
                out.append(_qp_lines(block))
        self._carry = _cut(data, out)
        return b"".join(out)

    def close(self) -> bytes:
        data, self._carry = self._carry, b""
        return _qp_piece(data)


def _cut(line: bytes, out: list[bytes]) -> bytes:
    """Encode ``FRAGMENT``-octet pieces off the front of ``line`` (part of one line, from
    its start or a previous cut), each ending in a soft break; returns the rest. (A CRLF
    is never cut: a piece is cut only once the octet after it is known.)"""
    while len(line) > FRAGMENT:
        out.append(_soft_break(_qp_piece(line[:FRAGMENT])))
        line = line[FRAGMENT:]
    return line


def _qp_lines(block: bytes) -> bytes:
    """Whole lines (``block`` ends with CRLF); each line is encoded the same way whatever
    else is in the block."""
    crlf = block.count(b"\r\n")
    if block.count(b"\n") == crlf and block.count(b"\r") == crlf:  # the usual case: in C
        return binascii.b2a_qp(block, istext=True)
    return b"".join(map(_qp_line, block[:-2].split(b"\r\n")))


def _qp_line(line: bytes) -> bytes:
    if b"\r" in line or b"\n" in line:
        return _qp_piece(line) + b"\r\n"
    return binascii.b2a_qp(line + b"\r\n", istext=True)


def _qp_piece(piece: bytes) -> bytes:
    """Octets without a CRLF: CR and LF are encoded; soft breaks are CRLF too."""
    return binascii.b2a_qp(piece, istext=False).replace(b"=\n", b"=\r\n")


def _soft_break(encoded: bytes) -> bytes:
    """``encoded`` and a soft break, its last line kept within 76 octets with the ``=``."""
    start = encoded.rfind(b"\n") + 1
    if len(encoded) - start > 75:
        cut = start + 75
        while b"=" in encoded[cut - 2 : cut]:  # never inside an =XX
            cut -= 1
        encoded = encoded[:cut] + b"=\r\n" + encoded[cut:]
    return encoded + b"=\r\n"


class Base64:
    """RFC 2045 §6.8, streaming: 76-character lines joined by CRLF, no CRLF after the last
    (the delimiter or the end of the message brings it)."""

    def __init__(self) -> None:
        self._carry = b""
        self._started = False

    def write(self, data: bytes) -> bytes:
        data = self._carry + data
        whole = len(data) - len(data) % 57  # 57 octets make one 76-character line
        self._carry = data[whole:]
        return self._lines(data[:whole])

    def close(self) -> bytes:
        data, self._carry = self._carry, b""
        return self._lines(data)

    def _lines(self, data: bytes) -> bytes:
        if not data:
            return b""
        text = binascii.b2a_base64(data, newline=False)
        out = b"\r\n".join(text[i : i + 76] for i in range(0, len(text), 76))
        if self._started:
            out = b"\r\n" + out
        self._started = True
        return out
