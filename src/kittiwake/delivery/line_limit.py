"""The 998-octet line limit of SMTP (RFC 5321 §4.5.3.1.6, RFC 5322 §2.1.1): finding and
breaking longer lines, streaming.

Owns, sans-I/O and in constant memory whatever the line length:

* ``LineMeter`` — counts the lines longer than ``LIMIT`` octets (the line end excluded)
  in a stream, and their octets (for a size estimate);
* ``has_long_line`` — the same for octets in memory (a small message);
* ``LineBreaker`` — passes a stream through, breaking every longer line: the last resort
  for a line that re-encoding cannot shorten (``mime_downgrade`` re-encodes the leaves it
  can, RFC 2045 §6.7). Two styles:

  - *fold* (header lines, and body lines in a part that cannot be re-encoded): Postfix's
    ``smtp_line_length_limit`` behaviour for headers — the line is folded before a run of
    white space when there is one within the first ``LIMIT`` octets (RFC 5322 §2.2.3:
    a header field keeps its value), else ``<CR><LF><SPACE>`` is inserted after ``LIMIT``
    octets, as Postfix does (this adds a space to the content). Base64 decoders ignore the
    inserted octets (RFC 2045 §6.8), so a base64 part decodes unchanged;
  - *soft* (a part already in quoted-printable): a soft line break ``=<CR><LF>`` is
    inserted (never inside an ``=XX``), so the part decodes to exactly what it did.

A line is what ends in LF; its length excludes a CRLF (a bare CR counts as content). A
break never makes a MIME delimiter line of what was not one: every line the breaker starts
begins with white space or ``=``, and the first piece of a line is checked with the
caller's ``is_delimiter`` (then the line is broken after its first octet instead).

Security: LOW — bounded arithmetic over untrusted octets; what it returns goes to the peer.
"""

from __future__ import annotations

from collections.abc import Callable

LIMIT = 998  # octets of a line, CRLF excluded
_WSP = b" \t"


def _never(line: bytes) -> bool:
    return False


def next_long(data: bytes, pos: int) -> int:
    """Where the first line of ``data`` from ``pos`` (a line start) that is known to be
    longer than ``LIMIT`` starts; -1: none (the unfinished last line is at most
    ``LIMIT + 1`` octets and may still end in CRLF). One ``rfind`` per ~1000 octets: this
    is the hot loop of every look at a message (~2 GB/s)."""
    n, rfind, window = len(data), data.rfind, LIMIT + 1
    while True:
        while (i := rfind(b"\n", pos, pos + window)) >= 0:  # within LIMIT, a CR included
            pos = i + 1
        end = pos + window  # no LF in [pos, end)
        if end >= n:
            return -1
        if data[end] != 10 or data[end - 1] != 13:  # not LIMIT octets and CRLF
            return pos
        pos = end + 1


def fold_growth(octets: int, lines: int) -> int:
    """Octets that breaking ``lines`` long lines of ``octets`` in all may add, on the high
    side: a break adds at most 5 octets and two breaks advance at least ``LIMIT`` - 3."""
    return 5 * (2 * octets // (LIMIT - 3) + 2 * lines)


class LineMeter:
    """``feed`` octets, then ``end``: ``long_lines`` and ``long_octets`` count the lines
    longer than ``LIMIT``. Holds at most ``LIMIT + 1`` octets."""

    __slots__ = ("_cr", "_over", "_tail", "long_lines", "long_octets")

    def __init__(self) -> None:
        self.long_lines = 0
        self.long_octets = 0
        self._tail = b""  # the unfinished line, while it may still be short enough
        self._over = -1  # octets so far of an unfinished line known to be long; -1: none
        self._cr = False  # that line's last octet so far is CR

    def feed(self, data: bytes) -> None:
        pos, n = 0, len(data)
        while pos < n:
            if self._over >= 0:
                i = data.find(b"\n", pos)
                if i < 0:
                    self._over += n - pos
                    self._cr = data[-1] == 13
                    return
                cr = data[i - 1] == 13 if i > pos else self._cr
                self._count(self._over + i - pos - cr)
                self._over, pos = -1, i + 1
            elif self._tail:
                tail = self._tail
                head = data[pos : pos + LIMIT + 2 - len(tail)]
                i = head.find(b"\n")
                self._tail = b""
                if i >= 0:
                    self._count(len(tail) + i - (head[:i] or tail).endswith(b"\r"))
                    pos += i + 1
                elif len(tail) + len(head) < LIMIT + 2:
                    self._tail = tail + head
                    return
                else:
                    self._over, self._cr = len(tail) + len(head), head.endswith(b"\r")
                    pos += len(head)
            else:
                k = next_long(data, pos)
                if k < 0:
                    self._tail = data[max(data.rfind(b"\n", pos) + 1, pos) :]
                    return
                self._over, pos = 0, k

    def end(self) -> None:
        """The stream (or this body) ends: its unfinished last line counts as it is."""
        if self._over >= 0:
            self._count(self._over)
        else:
            self._count(len(self._tail))
        self._tail, self._over, self._cr = b"", -1, False

    def _count(self, octets: int) -> None:
        if octets > LIMIT:
            self.long_lines += 1
            self.long_octets += octets


def has_long_line(data: bytes) -> bool:
    """``data`` (a whole message) has a line longer than ``LIMIT``."""
    if len(data) <= LIMIT:
        return False
    return next_long(data, 0) >= 0 or len(data) - data.rfind(b"\n") - 1 > LIMIT


class LineBreaker:
    """``write`` octets, then ``close``; both return octets whose lines are at most
    ``LIMIT`` long (see the module docstring for ``soft``). Holds at most one unfinished
    line's first ``LIMIT + 4`` octets."""

    def __init__(
        self, *, soft: bool = False, is_delimiter: Callable[[bytes], bool] = _never
    ) -> None:
        self._soft = soft
        self._is_delimiter = is_delimiter
        self._line = b""  # the unfinished output line (no LF)
        self._start = True  # it starts a line of the input (not a continuation we made)

    def write(self, data: bytes) -> bytes:
        out: list[bytes] = []
        pos, n = 0, len(data)
        line = self._line
        while True:
            if not line:
                k = next_long(data, pos)
                if k < 0:
                    tail = max(data.rfind(b"\n", pos) + 1, pos)
                    out.append(data[pos:tail])
                    line, self._start = data[tail:], True
                    break
                out.append(data[pos:k])
                # No LF in these: ``next_long`` saw at least this many octets before one.
                line, pos, self._start = data[k : k + LIMIT + 1], k + LIMIT + 1, True
            room = LIMIT + 2 - len(line)  # octets needed to know that ``line`` is too long
            if room > 0:
                if pos >= n:
                    break
                i = data.find(b"\n", pos, pos + room)
                if i >= 0:
                    line += data[pos:i]
                    pos = i
                    if len(line) <= LIMIT or (len(line) == LIMIT + 1 and line[-1] == 13):
                        out.append(line + b"\n")
                        line, pos = b"", i + 1
                        if pos >= n:
                            break
                        continue
                else:
                    more = data[pos : pos + room]
                    line += more
                    pos += len(more)
                    if len(line) < LIMIT + 2:
                        break
            piece, line = self._cut(line)
            out.append(piece)
            self._start = False
        self._line = line
        return b"".join(out)

    def close(self) -> bytes:
        """The stream ends here (the end of a body: a delimiter's line end may follow)."""
        out: list[bytes] = []
        line, self._line = self._line, b""
        while len(line) > LIMIT:
            piece, line = self._cut(line)
            out.append(piece)
            self._start = False
        out.append(line)
        self._start = True
        return b"".join(out)

    def _cut(self, line: bytes) -> tuple[bytes, bytes]:
        """The first piece of ``line`` (longer than ``LIMIT``, no LF) with its break, and
        the rest (which starts with white space or ``=``)."""
        if self._soft:
            p = LIMIT - 1  # the piece and its "=" fit
            while p > 0 and b"=" in line[max(p - 2, 0) : p]:  # never inside an =XX
                p -= 1
            if p == 0:
                p = LIMIT - 1  # "=" everywhere: not quoted-printable anyway
            if self._start and line.startswith(b"--") and self._is_delimiter(line[:p] + b"="):
                p = 1
            rest = line[p:]
            if rest.startswith(b"-"):  # the same octet, and no line starting with "--"
                rest = b"=2D" + rest[1:]
            return line[:p] + b"=\r\n", rest
        window = line[: LIMIT + 1]
        p = max(window.rfind(b" ", 1), window.rfind(b"\t", 1))
        while p > 0 and line[p - 1] in _WSP:  # fold before the whole run of white space
            p -= 1
        if p > 0:
            piece, rest = line[:p], line[p:]
        else:
            piece, rest = line[:LIMIT], b" " + line[LIMIT:]
        if self._start and piece.startswith(b"--") and self._is_delimiter(piece):
            piece, rest = line[:1], b" " + line[1:]
        return piece + b"\r\n", rest


def break_line(line: bytes, is_delimiter: Callable[[bytes], bool] = _never) -> bytes:
    """One whole line (with its line end, if any) folded if it is longer than ``LIMIT``."""
    if len(line) <= LIMIT:
        return line
    breaker = LineBreaker(is_delimiter=is_delimiter)
    return breaker.write(line) + breaker.close()
