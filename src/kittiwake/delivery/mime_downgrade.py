"""8-bit MIME to 7-bit MIME (RFC 6152 §3), and lines over 998 octets re-encoded or broken
(RFC 5321 §4.5.3.1.6, RFC 5322 §2.1.1), for the peer at hand.

Two reasons to change a message on relay, handled in the same two passes:

* RFC 6152 §3: an 8BITMIME message relayed to a server without 8BITMIME must either be
  returned or converted to 7-bit MIME (RFC 2045). Like Postfix, we convert;
* RFC 5321 §4.5.3.1.6: no line may exceed 998 octets (CRLF excluded) unless the message
  goes as BINARYMIME; strict receivers refuse or mangle longer ones. Postfix breaks them
  (``smtp_line_length_limit = 998``, inserting ``<CR><LF><SPACE>``); we re-encode the
  leaves that have one, which keeps their content exact (RFC 2045 §6.7 soft line breaks),
  for a peer with 8BITMIME too, and break (``line_limit``) only what cannot be re-encoded.

Owns, all sans-I/O over ``mime_walk.MimeWalker`` and in constant memory whatever the
message size:

* ``MimeScanner`` — pass 1: reads the message and returns a ``DowngradePlan``: whether it
  has 8-bit octets and lines over 998 octets, why it cannot be converted to 7 bit (or
  None), which entities change — for a peer without 8BITMIME and for one with it — and
  the estimated size either way (for SIZE=, RFC 1870 §4: on the high side);
* ``MimeDowngrader`` — pass 2: reads it again and returns the changed octets, for one kind
  of peer (``seven_bit``); the encoders are ``mime_encode``'s.

Two passes, because whether a part needs converting is known only at its end, while its
Content-Transfer-Encoding field comes first: reading the spool file twice costs less than
holding a part.

What changes (nothing else: other parts, header sections and delimiters pass octet for
octet, and no header marks the conversion):

* a leaf encoded as ``7bit``, ``8bit`` or not labelled, with an octet >= 0x80 (for a peer
  without 8BITMIME) or a line over 998 octets (for any peer) → quoted-printable: lines of
  at most 76 octets with soft breaks, CRLF kept as hard breaks, ``=``, controls, 8-bit
  octets and white space before a line end encoded; its Content-Transfer-Encoding
  field(s) replaced by ``quoted-printable``. At the top of a message without MIME-Version,
  ``MIME-Version: 1.0`` is added (RFC 2045 §4: without it the new field means nothing). A
  ``binary`` leaf → base64 (76-octet lines), on the same conditions;
* for a peer without 8BITMIME, a multipart or message/rfc822 entity labelled ``8bit`` or
  ``binary`` → ``7bit``, which it now is: RFC 2045 §6.4 allows no other encoding on
  composite types, so their 8-bit children are converted instead. (``message/global*``
  are leaves: RFC 6532 §3.7 lets them be encoded.)
* a line over 998 octets that no re-encoding can shorten, broken by
  ``line_limit.LineBreaker``: in a quoted-printable part, with soft line breaks (exact);
  a header line, a line of a preamble or epilogue, of a message/* or multipart/* entity
  read as a leaf (RFC 2045 §6.4 forbids encoding those) or of a part in any other
  encoding: folded before white space within the first 998 octets, else by inserting
  ``<CR><LF><SPACE>`` — Postfix's behaviour, which changes the content (a header's value
  keeps its words; base64 decodes the same, RFC 2045 §6.8). A delimiter line made long by
  transport padding loses the padding (RFC 2046 §5.1.1).

What cannot be converted to 7 bit (the caller bounces 5.6.3, as before this existed):
8-bit octets in a header field (only SMTPUTF8 carries those, RFC 6532), in a part already
encoded (quoted-printable, base64, an x-token), in a message/* or multipart/* entity read
as a leaf (RFC 2045 §6.4), in a multipart's preamble or epilogue (no encoding applies
there), and a message beyond the walker's limits (``walk_failed``: its long lines can only
be broken without regard to MIME, ``smtp_downgrade`` does that).

DKIM: converting changes the body, so a DKIM signature made over the original form (ours
are made at submission, before relay) no longer verifies at the peer — unavoidable,
Postfix documents the same; RFC 6376 §5.3 recommends that signers convert to 7-bit before
signing (and a signature over a line that had to be broken was never going to survive).

Security: MEDIUM — parses untrusted content (bounded by ``mime_walk``); what it returns
goes to the peer.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

from kittiwake.delivery.line_limit import (
    LIMIT,
    LineBreaker,
    LineMeter,
    break_line,
    fold_growth,
)
from kittiwake.delivery.mime_encode import Base64, QuotedPrintable
from kittiwake.delivery.mime_walk import Entity, Kind, MimeWalker
from kittiwake.errors import KittiwakeError

__all__ = [
    "Base64",
    "DowngradeError",
    "DowngradePlan",
    "MimeDowngrader",
    "MimeScanner",
    "QuotedPrintable",
]

# What happens to an entity: the low bits of an action's half (the low half of a planned
# action is for a peer without 8BITMIME, the high half for a peer with it).
QP, BASE64, SEVEN_BIT, FOLD, SOFT = 1, 2, 3, 4, 5
ADD_MIME_VERSION = 8
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
    problem: str | None = None  # why it cannot be converted to 7 bit; None: it can
    size: int = 0  # estimated octets once converted for a peer without 8BITMIME
    entities: array[int] = field(default_factory=lambda: array("Q"))  # ascending indexes
    actions: bytes = b""  # one per entity: low half without 8BITMIME, high half with it
    long_lines: bool = False  # a line over 998 octets anywhere
    size_8bit: int = 0  # estimated octets once changed for a peer with 8BITMIME
    walk_failed: bool = False  # beyond the walker's limits: nothing MIME-aware can be done,
    # and ``long_lines`` says nothing of what followed


class MimeScanner(MimeWalker):
    """Pass 1: ``scan()`` the message in chunks, then ``plan()``."""

    def __init__(self) -> None:
        super().__init__()
        self.eight_bit = False
        self.problem: str | None = None
        self.long_lines = False
        self.walk_failed = False
        self._size = 0
        self._delta = [0, 0]  # octets added: without 8BITMIME, with it
        self._entities: array[int] = array("Q")
        self._actions = bytearray()
        self._octets = self._escaped = 0  # of the current leaf body
        self._tail = b"\r\n"
        self._high = False  # the current leaf body has an 8-bit octet
        self._meter = LineMeter()  # the current body (a leaf's, a preamble, an epilogue)

    def scan(self, data: bytes) -> None:
        self._size += len(data)
        if not self.eight_bit and not data.isascii():
            self.eight_bit = True
        self.feed(data)

    def plan(self) -> DowngradePlan:
        self.close()
        self._outer_end()
        return DowngradePlan(
            self.eight_bit,
            self.problem,
            self._size + self._delta[0],
            self._entities,
            bytes(self._actions),
            self.long_lines,
            self._size + self._delta[1],
            self.walk_failed,
        )

    def fail(self, why: str) -> None:
        self.walk_failed = True
        self._refuse(why)
        super().fail(why)

    def _refuse(self, why: str) -> None:
        """The message cannot go to a peer without 8BITMIME (the walk goes on: long lines
        may still need fixing for a peer with it)."""
        self.problem = self.problem or why

    def on_header_line(self, entity: Entity, line: bytes) -> None:
        if not line.isascii():
            self._refuse("8-bit octets in a header field (only SMTPUTF8 carries those, RFC 6532)")
        if len(line) > LIMIT and (n := _content(line)) > LIMIT:
            self._grow(fold_growth(n, 1))

    def on_header_end(self, entity: Entity, blank: bytes) -> None:
        self._octets = self._escaped = 0
        self._tail = b"\r\n"  # the last two octets of the body so far, after a line end
        self._high = False
        self._meter = LineMeter()
        if entity.kind is not Kind.LEAF and entity.encoding in ("8bit", "binary"):
            self._change(entity, SEVEN_BIT, 0, self._meter)

    def on_body(self, data: bytes) -> None:
        self._meter.feed(data)
        if not self.leaf:
            if not data.isascii():
                self._refuse("8-bit octets in a multipart preamble or epilogue")
            return
        self._octets += len(data)
        self._escaped += len(data) - len(data.translate(None, _ESCAPED))
        # White space before a line end and a line of one dot are escaped too.
        seen = self._tail + data
        self._escaped += sum(map(seen.count, (b" \r\n", b"\t\r\n", b"\n.\r")))
        self._tail = seen[-2:]
        self._high = self._high or not data.isascii()

    def on_delimiter(self, data: bytes) -> None:
        self._outer_end()  # a preamble or epilogue ends here (a leaf's, in on_body_end)
        if len(data) > LIMIT and _content(data[_eol(data) :]) > LIMIT:
            self.long_lines = True  # transport padding, dropped (no growth)

    def _outer_end(self) -> None:
        meter, self._meter = self._meter, LineMeter()
        meter.end()
        if meter.long_lines:
            self._grow(fold_growth(meter.long_octets, meter.long_lines))

    def _grow(self, octets: int) -> None:
        """A line over 998 octets, broken whatever the peer, adding at most ``octets``."""
        self.long_lines = True
        self._delta[0] += octets
        self._delta[1] += octets

    def on_body_end(self) -> None:
        meter, self._meter = self._meter, LineMeter()
        meter.end()
        long = meter.long_lines > 0
        if not (self._high or long):
            return
        if self._tail.endswith((b" ", b"\t", b"\n.")):  # the last line
            self._escaped += 1
        e = self.entity
        composite = e.content_type.partition("/")[0] in ("multipart", "message")
        composite = composite and not e.content_type.startswith("message/global")
        encodable = not composite and e.encoding in (None, "7bit", "8bit", "binary")
        if self._high and composite:
            self._refuse(f"8-bit octets in {e.content_type}, which must not be encoded (RFC 2045)")
        elif self._high and not encodable:
            self._refuse(f"8-bit octets in a part encoded as {e.encoding}")
        if encodable:
            fix = BASE64 if e.encoding == "binary" else QP
            if e.message and not e.mime_version:
                fix |= ADD_MIME_VERSION
        else:
            fix = SOFT if e.encoding == "quoted-printable" else FOLD
        self.long_lines = self.long_lines or long
        seven = fix if long or (self._high and encodable) else 0
        self._change(e, seven, fix if long else 0, meter)

    def _change(self, e: Entity, seven: int, eight: int, meter: LineMeter) -> None:
        if not (seven or eight):
            return
        self._entities.append(e.index)
        self._actions.append(seven | eight << 4)
        self._delta[0] += self._growth(e, seven, meter)
        self._delta[1] += self._growth(e, eight, meter)

    def _growth(self, e: Entity, action: int, meter: LineMeter) -> int:
        if not action:
            return 0
        n, base = self._octets, action & 7
        if base == QP:  # every escape adds 2; a soft break per 73 octets, on the high side
            body = n + 2 * self._escaped
            body += 3 * (body // 73 + 1)
        elif base == BASE64:
            body = (n + 2) // 3 * 4
            body += 2 * ((body - 1) // 76) if body else 0
        elif base in (FOLD, SOFT):
            body = n + fold_growth(meter.long_octets, meter.long_lines)
        else:
            body = n
        header = len(_CTE[base]) - e.cte_octets if base in _CTE else 0
        if action & ADD_MIME_VERSION:
            header += len(_MIME_VERSION)
        return body - n + header


def _content(line: bytes) -> int:
    """Octets of ``line`` (one line, from its start) without its line end."""
    if line.endswith(b"\r\n"):
        return len(line) - 2
    return len(line) - line.endswith(b"\n")


def _eol(delimiter: bytes) -> int:
    """Octets of the line end before a delimiter line."""
    return 2 if delimiter.startswith(b"\r\n") else 1 if delimiter.startswith(b"\n") else 0


def _unpadded(delimiter: bytes) -> bytes:
    """A delimiter (its line end before, the line, its line end) without transport padding
    (RFC 2046 §5.1.1), when that brings it within the limit."""
    eol = _eol(delimiter)
    line = delimiter[eol:]
    end = len(line.rstrip(b"\r\n"))
    text = line[:end].rstrip(b" \t")
    return delimiter[:eol] + text + line[end:] if len(text) <= LIMIT else delimiter


class MimeDowngrader(MimeWalker):
    """Pass 2: ``convert()`` each chunk of the message, then ``finish()``; both return the
    converted octets so far. ``seven_bit``: for a peer without 8BITMIME (else one with
    it: only long lines are fixed). Raises ``DowngradeError`` where the message is not the
    one the plan was made from."""

    def __init__(self, plan: DowngradePlan, *, seven_bit: bool = True) -> None:
        if plan.walk_failed or (seven_bit and plan.problem is not None):
            raise DowngradeError(f"cannot convert: {plan.problem}")
        self._shift = 0 if seven_bit else 4
        self._plan = zip(plan.entities, plan.actions, strict=True)
        self._next = self._advance()
        self._long = plan.long_lines
        self._out: list[bytes] = []
        self._coder: QuotedPrintable | Base64 | LineBreaker | None = None  # a leaf's body
        self._outer: LineBreaker | None = None  # a preamble's or epilogue's
        super().__init__()

    def _advance(self) -> tuple[int, int] | None:
        for index, actions in self._plan:
            if action := actions >> self._shift & 15:
                return index, action
        return None

    def convert(self, data: bytes) -> bytes:
        self.feed(data)
        return self._flush()

    def finish(self) -> bytes:
        self.close()
        if self._outer is not None:
            self._out.append(self._outer.close())
        if self._next is not None:
            raise DowngradeError("the message has fewer MIME entities than planned")
        return self._flush()

    def _flush(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def fail(self, why: str) -> None:
        raise DowngradeError(why)

    def _is_delimiter(self, line: bytes) -> bool:
        return self._match(line) is not None

    def on_entity(self, entity: Entity) -> None:
        if self._next is not None and self._next[0] == entity.index:
            entity.action = self._next[1]
            self._next = self._advance()

    def on_header_line(self, entity: Entity, line: bytes) -> None:
        if entity.field_name == "content-transfer-encoding" and entity.action & 7 in _CTE:
            return
        self._out.append(break_line(line, self._is_delimiter))

    def on_header_end(self, entity: Entity, blank: bytes) -> None:
        if entity.action:
            base = entity.action & 7
            if (base == SEVEN_BIT) == (entity.kind is Kind.LEAF):
                raise DowngradeError(f"MIME entity {entity.index} is not the one planned")
            if entity.action & ADD_MIME_VERSION:
                self._out.append(_MIME_VERSION)
            if base in _CTE:
                self._out.append(_CTE[base])
            if base == QP:
                self._coder = QuotedPrintable()
            elif base == BASE64:
                self._coder = Base64()
            elif base in (FOLD, SOFT):
                self._coder = LineBreaker(soft=base == SOFT, is_delimiter=self._is_delimiter)
        self._out.append(blank)
        if entity.kind is Kind.MULTIPART and self._long:
            self._outer = LineBreaker(is_delimiter=self._is_delimiter)

    def on_body(self, data: bytes) -> None:
        coder = self._coder if self.leaf else self._outer
        self._out.append(data if coder is None else coder.write(data))

    def on_body_end(self) -> None:
        if self._coder is not None:
            self._out.append(self._coder.close())
            self._coder = None

    def on_delimiter(self, data: bytes) -> None:
        if self._outer is not None:
            self._out.append(self._outer.close())
        self._out.append(_unpadded(data) if len(data) > LIMIT else data)
        if self._long:  # for an epilogue (a preamble gets its own in on_header_end)
            self._outer = LineBreaker(is_delimiter=self._is_delimiter)
