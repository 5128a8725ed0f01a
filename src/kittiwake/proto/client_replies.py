"""The client side's reading half: server replies (RFC 5321 §4.2) and EHLO capabilities.

Owns ``ReplyParser`` (bytes → ``Reply``, multi-line aware) and ``Capabilities`` (the
extensions an EHLO/LHLO reply advertises, RFC 5321 §4.1.1.1). Pure; no I/O.

Security: HIGH — every byte comes from the remote server, which may be hostile. Rules:

* A reply is ``Reply-line = *( Reply-code "-" [ textstring ] CRLF )
  Reply-code [ SP textstring ] CRLF`` (RFC 5321 §4.2). Each line starts with three digits,
  the first 2-5; the lines of one reply carry the same code; anything else raises
  ``RemoteProtocolError``. A bare LF is accepted as a line end (Postfix does the same):
  a server's reply cannot smuggle anything past us, and being strict only loses mail.
* Bounded memory: one line may be at most ``MAX_LINE`` octets and one reply at most
  ``MAX_LINES`` lines; unparsed input is capped at ``MAX_BUFFER`` octets. Beyond → error.
* Reply text is decoded as UTF-8 with replacement and its control characters become
  ``?``: it ends up in logs and in DSNs we send to other people.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from kittiwake.envelope import Reply
from kittiwake.errors import RemoteProtocolError

MAX_LINE = 4096  # RFC 5321 §4.5.3.1.5 says 512 octets; deployed servers exceed it
MAX_LINES = 256  # a long EHLO reply has ~20 lines
MAX_BUFFER = 1024 * 1024  # unparsed input (an LMTP server answers once per recipient)

# RFC 3463 §2: status-code = class "." subject "." detail; class 2/4/5, 1-3 digits each.
# RFC 2034 §4: it comes first in the text, followed by a space.
_ENHANCED_RE = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?: |$)")
# C0 controls and DEL (tab kept) become "?" in reply text.
_CONTROLS = {c: "?" for c in (*range(9), *range(10, 32), 127)}
_EMPTY: Mapping[str, str] = MappingProxyType({})


def _text(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace")
    return text if text.isprintable() else text.translate(_CONTROLS)


class ReplyParser:
    """Incremental reply parser: ``feed()`` bytes, then ``next_reply()`` until None."""

    __slots__ = ("_buf", "_code", "_lines", "_scan")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._scan = 0  # no LF before this offset
        self._code = 0  # code of the reply being assembled (0 = none)
        self._lines: list[str] = []

    def __len__(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) > MAX_BUFFER:
            raise RemoteProtocolError("too much unanswered input from the server")

    def clear(self) -> None:
        """Forget everything unparsed (after the 220 to STARTTLS: RFC 3207 §5)."""
        self._buf.clear()
        self._scan = 0
        self._code = 0
        self._lines = []

    def next_reply(self) -> Reply | None:
        """The next complete reply, or None until more bytes arrive."""
        buf = self._buf
        while True:
            i = buf.find(b"\n", self._scan)
            if i < 0:
                if len(buf) > MAX_LINE:
                    raise RemoteProtocolError("reply line too long")
                self._scan = len(buf)
                return None
            end = i - 1 if i and buf[i - 1] == 13 else i  # strip the CR of CRLF
            line = bytes(buf[:end])
            del buf[: i + 1]
            self._scan = 0
            if len(line) > MAX_LINE:
                raise RemoteProtocolError("reply line too long")
            reply = self._line(line)
            if reply is not None:
                return reply

    def _line(self, line: bytes) -> Reply | None:
        # Reply-code = %x32-35 %x30-35 %x30-39 (RFC 5321 §4.2); we accept any second digit.
        if (
            len(line) < 3
            or not 0x32 <= line[0] <= 0x35
            or not 0x30 <= line[1] <= 0x39
            or not 0x30 <= line[2] <= 0x39
        ):
            raise RemoteProtocolError(f"malformed reply line {line[:40]!r}")
        sep = line[3:4]
        if sep not in (b"", b" ", b"-"):
            raise RemoteProtocolError(f"malformed reply line {line[:40]!r}")
        code = int(line[:3])
        if self._code and code != self._code:
            raise RemoteProtocolError("reply code changes within a multi-line reply")
        self._code = code
        self._lines.append(_text(line[4:]))
        if sep == b"-":
            if len(self._lines) >= MAX_LINES:
                raise RemoteProtocolError("reply has too many lines")
            return None
        lines, self._lines, self._code = self._lines, [], 0
        return _make_reply(code, lines)


def _make_reply(code: int, lines: list[str]) -> Reply:
    """Split off the RFC 2034 enhanced code (if its class matches the reply's)."""
    enhanced: str | None = None
    m = _ENHANCED_RE.match(lines[0])
    if m is not None and int(m[1]) == code // 100:
        enhanced = f"{m[1]}.{m[2]}.{m[3]}"
        n = len(enhanced)
        lines = [
            ln[n + 1 :] if ln.startswith(enhanced) and ln[n : n + 1] in ("", " ") else ln
            for ln in lines
        ]
    if len(lines) == 1:
        return Reply(code, enhanced, lines[0])
    return Reply(code, enhanced, tuple(lines))


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a server's EHLO (or LHLO) reply offers. ``esmtp`` False after a HELO."""

    esmtp: bool = False
    size: int | None = None  # RFC 1870: None = not offered; 0 = offered without a limit
    pipelining: bool = False  # RFC 2920
    eightbitmime: bool = False  # RFC 6152
    smtputf8: bool = False  # RFC 6531
    chunking: bool = False  # RFC 3030
    binarymime: bool = False  # RFC 3030
    dsn: bool = False  # RFC 3461
    starttls: bool = False  # RFC 3207
    enhancedstatuscodes: bool = False  # RFC 2034
    auth: frozenset[str] = frozenset()  # RFC 4954 mechanisms, upper case
    keywords: Mapping[str, str] = field(default_factory=lambda: _EMPTY)  # keyword → params

    @classmethod
    def from_ehlo(cls, reply: Reply) -> Capabilities:
        """Parse ``250-greeting / 250-KEYWORD params...`` (RFC 5321 §4.1.1.1)."""
        keywords: dict[str, str] = {}
        auth: set[str] = set()
        for line in reply.lines()[1:]:
            word, _, params = line.strip().partition(" ")
            word = word.upper()
            if word.startswith("AUTH="):  # pre-RFC 4954 servers: "AUTH=LOGIN PLAIN"
                params = f"{word[5:]} {params}"
                word = "AUTH"
            if not word:
                continue
            if word == "AUTH":
                auth.update(m.upper() for m in params.split())
            keywords[word] = params.strip()
        size: int | None = None
        if "SIZE" in keywords:
            value = keywords["SIZE"]
            size = int(value) if value.isascii() and value.isdigit() else 0
        return cls(
            esmtp=True,
            size=size,
            pipelining="PIPELINING" in keywords,
            eightbitmime="8BITMIME" in keywords,
            smtputf8="SMTPUTF8" in keywords,
            chunking="CHUNKING" in keywords,
            binarymime="BINARYMIME" in keywords,
            dsn="DSN" in keywords,
            starttls="STARTTLS" in keywords,
            enhancedstatuscodes="ENHANCEDSTATUSCODES" in keywords,
            auth=frozenset(auth),
            keywords=MappingProxyType(keywords),
        )
