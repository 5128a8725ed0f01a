"""Message content readers: the DATA decoder (RFC 5321 §4.5.2) and BDAT chunk bookkeeping.

Owns: finding the end of DATA, dot-unstuffing, bare CR/LF handling, the 1000-octet text
line limit and the message size limit while the content streams through. Nothing here
buffers a message: at most four bytes are carried from one chunk to the next.

Security: HIGH. This is where SMTP smuggling (CVE-2023-51764 class) is decided:

* Only ``<CRLF>.<CRLF>`` ends DATA. The CRLF that ended the DATA command counts as the
  first CRLF, so ``.<CRLF>`` right after the 354 ends an empty message. ``\\n.\\n``,
  ``\\n.\\r\\n``, ``\\r.\\r\\n``, ``\\r\\n.\\r``, ``\\r\\n.\\n`` and friends never end it.
* ``REJECT``: a bare CR or LF anywhere makes the message fail with 550 5.6.0 once the real
  end arrives. ``NORMALIZE``: every bare CR and bare LF becomes CRLF in the output.
* Dot-unstuffing happens only at line starts after a real CRLF, *before* normalisation:
  ``<CRLF>.x`` loses its dot (RFC 5321 §4.5.2 deletes the first dot of any longer line),
  whereas ``<LF>.<LF>`` becomes the output line ``.`` which any later relay dot-stuffs.

Speed: every step is a C-level ``bytes`` operation on a whole chunk (find, count, replace,
rfind); the only Python loop, the line-length check, advances ~1000 octets per turn.
"""

from __future__ import annotations

import enum

from kittiwake.envelope import Reply
from kittiwake.proto import replies

# RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets including CRLF (not counting a
# stuffed dot, which is why the check runs on unstuffed output).
MAX_TEXT_LINE = 1000

_END = b"\r\n.\r\n"


def _tail_len(buf: bytes) -> int:
    """Octets at the end of ``buf`` that could begin ``<CRLF>.<CRLF>`` (kept for later)."""
    last = buf[-1:]
    if last == b"\r":
        return 4 if buf.endswith(b"\r\n.\r") else 1
    if last == b"\n":
        return 2 if buf.endswith(b"\r\n") else 0
    if last == b".":
        return 3 if buf.endswith(b"\r\n.") else 0
    return 0


class DataDecoder:
    """Incremental DATA decoder. ``feed()`` chunks until it reports the end.

    >>> d = DataDecoder(normalize=True, max_size=0)
    >>> d.feed(b"Subject: x\\r\\n\\r\\n..hi\\r\\n.\\r\\nQUIT\\r\\n")
    (b'Subject: x\\r\\n\\r\\n.hi\\r\\n', 23)
    """

    __slots__ = ("_carry", "_first", "_line_len", "_max_size", "_normalize", "failure", "size")

    def __init__(self, *, normalize: bool, max_size: int) -> None:
        # The CRLF that ended the DATA command line starts the stream: a leading ".<CRLF>"
        # then ends the data, and a leading "." is unstuffed. It is stripped from the output.
        self._carry = b"\r\n"
        self._first = True
        self._normalize = normalize
        self._max_size = max_size  # 0 = unlimited
        self._line_len = 0  # octets of the current, unterminated output line
        self.size = 0  # content octets so far (after unstuffing / normalisation)
        self.failure: Reply | None = None  # set once the message is refused

    def feed(self, data: bytes) -> tuple[bytes, int]:
        """Decode ``data``. Return ``(content, end)``.

        ``end`` is -1 while the data goes on; otherwise the number of octets of ``data``
        that belonged to the message (up to and including the final ``.<CRLF>``); the rest
        is the next command. ``content`` is empty once ``failure`` is set.
        """
        carry = self._carry
        buf = carry + data if carry else data
        i = buf.find(_END)
        if i >= 0:
            seg = buf[: i + 2]  # the CRLF before the dot ends the last line
            end = i + 5 - len(carry)
            self._carry = b""
        else:
            keep = _tail_len(buf)
            if keep:
                seg = buf[:-keep]
                self._carry = buf[-keep:]
            else:
                seg = buf
                self._carry = b""
            end = -1
        if not seg:
            return b"", end
        return self._process(seg), end

    def _process(self, seg: bytes) -> bytes:
        if self.failure is not None:
            self.size += len(seg)
            return b""
        # RFC 5321 §4.5.2: drop the first dot of every line (the end marker is not in seg).
        seg = seg.replace(b"\r\n.", b"\r\n")
        crlf = seg.count(b"\r\n")
        if seg.count(b"\r") != crlf or seg.count(b"\n") != crlf:
            if not self._normalize:
                return self._fail(replies.BARE_LINEFEED, seg)
            seg = seg.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
        if self._first:
            seg = seg[2:]  # the virtual CRLF of the DATA command
            self._first = False
        if not self._lines_ok(seg):
            return self._fail(replies.BODY_LINE_TOO_LONG, seg)
        self.size += len(seg)
        if self._max_size and self.size > self._max_size:
            self.failure = replies.TOO_BIG
            return b""
        return seg

    def _fail(self, reply: Reply, seg: bytes) -> bytes:
        self.failure = reply
        self.size += len(seg)
        return b""

    def _lines_ok(self, out: bytes) -> bool:
        """Check that no line of ``out`` (continuing the current one) exceeds 1000 octets."""
        n = len(out)
        pos = 0
        current = self._line_len  # octets of the line at ``pos`` that came before ``out``
        while pos + MAX_TEXT_LINE - current <= n:
            # The line's LF must fall within the window; jump to the last LF in it.
            r = out.rfind(b"\n", pos, pos + MAX_TEXT_LINE - current)
            if r < 0:
                return False
            pos = r + 1
            current = 0
        r = out.rfind(b"\n", pos)
        self._line_len = n - r - 1 if r >= 0 else current + n - pos
        return True


class ChunkKind(enum.Enum):
    """What happens to the octets of a BDAT chunk and what is answered after it."""

    STREAM = "stream"  # accepted: BodyData events, then 250 (or BodyEnd after LAST)
    FAIL = "fail"  # the transaction fails (too big): discard, then BodyEnd(failure)
    REFUSE = "refuse"  # the core refuses the command (sequence): discard, then BadCommand
    REJECTED = "rejected"  # the driver rejected DataStart: discard, then its reply


class Chunk:
    """One BDAT chunk being read (RFC 3030 §2): how much is left and what happens after.

    Any kind but STREAM consumes and discards the octets before ``reply`` is sent: RFC 3030
    §2 says the server "MUST accept and discard the associated message data before sending
    the appropriate 5XX or 4XX code". ``reply`` None with REFUSE means no reply at all
    (LMTP ``BDAT LAST`` without any accepted recipient, RFC 2033 §4.3).
    """

    __slots__ = ("kind", "last", "remaining", "reply", "size")

    def __init__(self, size: int, last: bool, kind: ChunkKind, reply: Reply | None = None) -> None:
        self.size = size
        self.remaining = size
        self.last = last
        self.kind = kind
        self.reply = reply
