"""The client side's writing helpers: DATA dot-stuffing, xtext, command argument checks.

Owns ``DataEncoder`` (RFC 5321 §4.5.2 transparency, streaming), ``xtext_encode``
(RFC 3461 §4) and ``check_path`` (what may appear between ``<`` and ``>``). Pure; no I/O.

Security: HIGH. What leaves here goes to another server, which may parse it differently
from us (SMTP smuggling, CVE-2023-51764 class). So in DATA mode:

* every line starting with ``.`` gets a second dot, including the first line;
* only CRLF leaves as a line end: a bare CR or bare LF in the content becomes CRLF (the
  receiving side of Kittiwake does the same under ``bare_linefeed = "normalize"``), so no
  downstream server can find an end of data (``<LF>.<LF>``...) before ours;
* the content always ends with CRLF before the final ``.<CRLF>`` (RFC 5321 §4.1.1.4).

Only the octet carried between chunks (a trailing CR) is buffered: a message of any size
streams through in constant memory. Addresses and parameters are checked for control
characters so that no queue content can inject a command line.
"""

from __future__ import annotations

from kittiwake.envelope import Notify
from kittiwake.errors import LocalProtocolError

_END = b".\r\n"


class DataEncoder:
    """Dot-stuffs and CRLF-normalises message content chunk by chunk.

    >>> e = DataEncoder()
    >>> e.feed(b".hi\\r\\n.") + e.feed(b"\\r\\nend") + e.end()
    b'..hi\\r\\n..\\r\\nend\\r\\n.\\r\\n'
    """

    __slots__ = ("_carry_cr", "_line_start", "normalized", "size")

    def __init__(self) -> None:
        self._line_start = True  # the next octet begins a line
        self._carry_cr = False  # a CR ended the last chunk; held until we see what follows
        self.normalized = False  # a bare CR or LF was turned into CRLF
        self.size = 0  # content octets fed

    def feed(self, chunk: bytes) -> bytes:
        """The encoded form of ``chunk`` (it may lack a final CR, held for the next call)."""
        self.size += len(chunk)
        if self._carry_cr:
            chunk = b"\r" + chunk
            self._carry_cr = False
        if chunk[-1:] == b"\r":
            chunk = chunk[:-1]
            self._carry_cr = True
        if not chunk:
            return b""
        crlf = chunk.count(b"\r\n")
        if chunk.count(b"\r") != crlf or chunk.count(b"\n") != crlf:
            self.normalized = True
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
        out = chunk.replace(b"\r\n.", b"\r\n..")
        if self._line_start and out[:1] == b".":
            out = b"." + out
        self._line_start = out[-2:] == b"\r\n"
        return out

    def end(self) -> bytes:
        """The rest of the content (a held CR as CRLF, a missing final CRLF) and ``.<CRLF>``."""
        if self._carry_cr:  # a bare CR at the very end: a line end
            self._carry_cr = False
            self.normalized = True
            return b"\r\n" + _END
        return _END if self._line_start else b"\r\n" + _END


def xtext_encode(text: str) -> str:
    """RFC 3461 §4: ``xchar`` (``!``-``~`` but ``+`` and ``=``) as is, every other octet
    of the UTF-8 form as ``+XX`` (upper-case hex)."""
    if text.isascii() and text.isprintable() and not any(c in text for c in " +="):
        return text
    out = []
    for byte in text.encode("utf-8"):
        if 33 <= byte <= 126 and byte not in (0x2B, 0x3D):
            out.append(chr(byte))
        else:
            out.append(f"+{byte:02X}")
    return "".join(out)


def check_path(address: str, *, utf8: bool) -> None:
    """Refuse what must never appear in a MAIL/RCPT path: controls, SP outside quotes is
    left to the peer; CR, LF, NUL and other controls are ours to stop. Non-ASCII needs
    SMTPUTF8 (RFC 6531 §3.4)."""
    if not address.isprintable():
        raise LocalProtocolError(f"control character in address {address!r}")
    if not utf8 and not address.isascii():
        raise LocalProtocolError(f"non-ASCII address without SMTPUTF8: {address!r}")
    if len(address.encode("utf-8")) > 1000:
        raise LocalProtocolError("address too long")


def check_word(text: str, what: str) -> None:
    """A HELO argument, AUTH mechanism or parameter value: printable, no spaces."""
    if not text or not text.isprintable() or " " in text:
        raise LocalProtocolError(f"bad {what}: {text!r}")


_NOTIFY_WORDS = (("SUCCESS", Notify.SUCCESS), ("FAILURE", Notify.FAILURE), ("DELAY", Notify.DELAY))


def notify_value(notify: Notify) -> str:
    """RFC 3461 §4.1: ``NEVER``, or a comma list of SUCCESS, FAILURE, DELAY."""
    if not notify:
        return "NEVER"
    return ",".join(word for word, flag in _NOTIFY_WORDS if flag & notify)
