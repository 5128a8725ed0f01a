"""Receive buffer with CRLF line extraction under a hard length limit.

Owns the bytes the peer sent that the core has not consumed yet. Lines end only at CRLF
(RFC 5321 §2.3.8); a bare CR or LF stays inside the line and the caller refuses the line
(500 5.5.2) — it is never taken as a line end, so ``NOOP\\nMAIL ...`` cannot smuggle a
command past a front end that splits on CRLF.

Security: HIGH (memory exhaustion). Two rules keep it bounded and linear:

* A line longer than the limit is thrown away *as it arrives* ("discarding" mode): at
  most one byte (a possible CR of a split CRLF) is kept, never the line. When its CRLF
  finally comes, ``next_line`` returns ``TOO_LONG`` once and the caller answers 500.
* Scanning is O(n) overall: a failed search remembers where it stopped, so a line that
  trickles in one byte at a time is not rescanned from the start (h11's
  ``_receivebuffer.py`` makes the same point). Removing a prefix of a ``bytearray`` is
  amortised O(1) in CPython.
"""

from __future__ import annotations

import enum


class TooLong(enum.Enum):
    TOO_LONG = "TOO_LONG"


TOO_LONG = TooLong.TOO_LONG


class ReceiveBuffer:
    """Bytes received but not consumed. Not thread-safe; one per connection."""

    __slots__ = ("_data", "_discarding", "_scan")

    def __init__(self) -> None:
        self._data = bytearray()
        self._scan = 0  # no CRLF starts before this offset
        self._discarding = False  # inside an over-long line, dropping it

    def __len__(self) -> int:
        return len(self._data)

    def __bool__(self) -> bool:
        return bool(self._data)

    def feed(self, data: bytes) -> None:
        self._data += data

    def clear(self) -> None:
        """Forget everything buffered (STARTTLS: RFC 3207 §5, CVE-2011-0411)."""
        self._data.clear()
        self._scan = 0
        self._discarding = False

    def take(self, n: int) -> bytes:
        """Remove and return up to ``n`` bytes from the front."""
        data = self._data
        if n >= len(data):
            out = bytes(data)
            data.clear()
        else:
            out = bytes(data[:n])
            del data[:n]
        self._scan = 0
        return out

    def take_all(self) -> bytes:
        out = bytes(self._data)
        self._data.clear()
        self._scan = 0
        return out

    def unread(self, data: bytes) -> None:
        """Put bytes back at the front (what followed the end of DATA)."""
        if data:
            self._data[:0] = data
            self._scan = 0

    def next_line(self, limit: int) -> bytes | TooLong | None:
        """Return the next line without its CRLF, ``TOO_LONG``, or None if incomplete.

        ``limit`` counts the CRLF (RFC 5321 §4.5.3.1.4 style). A line of more than ``limit``
        octets yields ``TOO_LONG`` once its CRLF has arrived; it is never accumulated.
        """
        data = self._data
        i = data.find(b"\r\n", self._scan)
        if i < 0:
            n = len(data)
            if self._discarding or n >= limit:
                # Over the limit whatever comes next: drop it, keep a trailing CR (it may be
                # the first half of the CRLF that ends this line).
                self._discarding = True
                if n:
                    keep = 1 if data[-1] == 13 else 0
                    del data[: n - keep]
                self._scan = 0
            else:
                self._scan = n - 1 if n else 0
            return None
        self._scan = 0
        if self._discarding or i + 2 > limit:
            self._discarding = False
            del data[: i + 2]
            return TOO_LONG
        line = bytes(data[:i])
        del data[: i + 2]
        return line
