"""The streaming content-transfer-encoders of ``mime_downgrade``: quoted-printable and
base64 (RFC 2045 §6.7, §6.8).

Owns ``QuotedPrintable`` and ``Base64``: ``write`` octets, then ``close``; each holds at
most one unfinished line (``FRAGMENT`` octets) or one base64 group, whatever the size of
what goes through. Lines: at most 76 octets, CRLF.

Security: LOW — pure encoding of untrusted octets (``binascii``), bounded buffers.
"""

from __future__ import annotations

import binascii

FRAGMENT = 64 * 1024  # a longer line is encoded in pieces joined by soft breaks


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
