"""A raw-socket SMTP client for end-to-end tests: send exact bytes, read whole replies.

Owns ``RawSMTP`` (blocking, one socket, optional STARTTLS/implicit TLS) and ``SMTPReply``
(a parsed multi-line reply). Unlike smtplib it never fixes up what we send: a test can
write bare LFs, pipelined batches, a megabyte without CRLF, or bytes after STARTTLS, and
it checks every reply line the server writes is well formed (RFC 5321 §4.2: ``ddd-``
continuation lines, ``ddd `` last line, CRLF ends each line). Every read has a deadline.
Not security sensitive (test code).
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import time
from dataclasses import dataclass
from types import TracebackType

Address = tuple[str, int]

_LINE_RE = re.compile(rb"(\d{3})([ -])(.*)", re.DOTALL)
_ENHANCED_RE = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?: |$)")
DEFAULT_TIMEOUT = 10.0


class ProtocolViolation(AssertionError):
    """The server wrote something that is not a well-formed SMTP reply."""


@dataclass(frozen=True)
class SMTPReply:
    """One reply: its code and the text of each line (after ``ddd-``/``ddd ``)."""

    code: int
    lines: tuple[str, ...]

    @property
    def enhanced(self) -> str | None:
        """The RFC 3463 enhanced code in front of the first line's text, if any."""
        m = _ENHANCED_RE.match(self.lines[0]) if self.lines else None
        return f"{m[1]}.{m[2]}.{m[3]}" if m else None

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def keywords(self) -> dict[str, str]:
        """An EHLO reply's extensions (after the greeting line): KEYWORD -> parameters."""
        out: dict[str, str] = {}
        for line in self.lines[1:]:
            word, _, params = line.partition(" ")
            out[word.upper()] = params
        return out

    def __str__(self) -> str:
        return " / ".join(f"{self.code} {line}" for line in self.lines)

    def check(self, code: int, enhanced: str | None = None) -> SMTPReply:
        """Assert code (and enhanced code, when given; "" means: must have none)."""
        ok = self.code == code
        if enhanced == "":
            ok = ok and self.enhanced is None
        elif enhanced is not None:
            ok = ok and self.enhanced == enhanced
        if not ok:
            want = f"{code} {enhanced or ''}".strip()
            raise AssertionError(f"expected {want}, got: {self}")
        if enhanced is not None and enhanced != "":
            # RFC 2034 §3: every line of a multi-line reply carries the enhanced code.
            for line in self.lines:
                assert line.startswith(enhanced), f"line without enhanced code: {self}"
        return self


def client_tls_context() -> ssl.SSLContext:
    """A client context that accepts the server's self-signed certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class RawSMTP:
    """One SMTP connection driven byte by byte. Reads the greeting unless told not to."""

    def __init__(
        self,
        addr: Address,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        implicit_tls: bool = False,
        read_greeting: bool = True,
        source_ip: str | None = None,
    ) -> None:
        self.addr = addr
        self.timeout = timeout
        source = (source_ip, 0) if source_ip else None
        self.sock: socket.socket | ssl.SSLSocket = socket.create_connection(
            addr, timeout=timeout, source_address=source
        )
        self.buf = bytearray()
        if implicit_tls:
            self.sock = client_tls_context().wrap_socket(self.sock)
        self.greeting: SMTPReply | None = self.read_reply() if read_greeting else None

    # ---------------------------------------------------------------- context manager

    def __enter__(self) -> RawSMTP:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    # ------------------------------------------------------------------------ writing

    def send(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def cmd(self, line: bytes | str) -> SMTPReply:
        """Send one command line (CRLF appended) and read its reply."""
        if isinstance(line, str):
            line = line.encode("utf-8")
        self.send(line + b"\r\n")
        return self.read_reply()

    def ehlo(self, name: str = "client.test") -> SMTPReply:
        return self.cmd(f"EHLO {name}").check(250)

    # ------------------------------------------------------------------------ reading

    def _fill(self, deadline: float) -> bool:
        """Read more bytes into the buffer; False on EOF."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no complete reply; buffered: {bytes(self.buf)[:300]!r}")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            raise TimeoutError(f"no complete reply; buffered: {bytes(self.buf)[:300]!r}") from None
        if not chunk:
            return False
        self.buf += chunk
        return True

    def read_reply(self, timeout: float | None = None) -> SMTPReply:
        """Read exactly one (possibly multi-line) reply; EOF before it is an error."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        code: bytes | None = None
        lines: list[str] = []
        while True:
            end = self.buf.find(b"\r\n")
            if end < 0:
                if b"\n" in self.buf:
                    raise ProtocolViolation(f"reply line not ended by CRLF: {bytes(self.buf)!r}")
                if not self._fill(deadline):
                    raise ConnectionError(
                        f"server closed the connection; unparsed: {bytes(self.buf)!r}"
                    )
                continue
            raw = bytes(self.buf[:end])
            del self.buf[: end + 2]
            m = _LINE_RE.fullmatch(raw)
            if m is None or (code is not None and m[1] != code):
                raise ProtocolViolation(f"malformed reply line {raw!r} (so far {lines})")
            code = m[1]
            lines.append(m[3].decode("utf-8", "replace"))
            if m[2] == b" ":
                return SMTPReply(int(code), tuple(lines))

    def read_replies(self, count: int) -> list[SMTPReply]:
        return [self.read_reply() for _ in range(count)]

    def expect_closed(self, timeout: float = 5.0) -> bytes:
        """Wait until the server closes; return whatever else it wrote (should be b"")."""
        deadline = time.monotonic() + timeout
        try:
            while self._fill(deadline):
                pass
        except (ConnectionResetError, BrokenPipeError):
            pass
        rest = bytes(self.buf)
        self.buf.clear()
        return rest

    def nothing_pending(self, wait: float = 0.2) -> bytes:
        """Bytes the server sent that no request asked for (waits ``wait`` seconds)."""
        with contextlib.suppress(TimeoutError):
            self._fill(time.monotonic() + wait)
        return bytes(self.buf)

    # --------------------------------------------------------------------------- TLS

    def tls_handshake(self) -> None:
        """Wrap the socket in TLS now (after a 220 to STARTTLS). Buffered bytes are an error:
        anything the server wrote in plaintext after its 220 would be injected state."""
        if self.buf:
            raise ProtocolViolation(f"plaintext bytes after the STARTTLS 220: {bytes(self.buf)!r}")
        assert not isinstance(self.sock, ssl.SSLSocket), "already in TLS"
        self.sock.settimeout(self.timeout)
        self.sock = client_tls_context().wrap_socket(self.sock)

    def starttls(self) -> SMTPReply:
        reply = self.cmd("STARTTLS").check(220, "2.0.0")
        self.tls_handshake()
        return reply

    @property
    def tls_version(self) -> str | None:
        return self.sock.version() if isinstance(self.sock, ssl.SSLSocket) else None

    # ----------------------------------------------------------------------- helpers

    def send_mail(
        self,
        sender: str,
        recipients: list[str],
        body: bytes,
        *,
        mail_params: str = "",
    ) -> SMTPReply:
        """A whole transaction, one command at a time; returns the reply to the final dot.

        ``body`` goes out verbatim followed by ``.\\r\\n`` (it must end with CRLF and be
        dot-stuffed by the caller)."""
        self.cmd(f"MAIL FROM:<{sender}>{' ' + mail_params if mail_params else ''}").check(
            250, "2.1.0"
        )
        for rcpt in recipients:
            self.cmd(f"RCPT TO:<{rcpt}>").check(250, "2.1.5")
        self.cmd("DATA").check(354)
        self.send(body + b".\r\n")
        return self.read_reply()


def queue_id(reply: SMTPReply) -> str:
    """The queue id from ``250 2.0.0 Ok: queued as QID``."""
    m = re.search(r"queued as (\S+)", reply.text)
    assert m, f"no queue id in {reply}"
    return m[1]


def message(
    subject: str = "test",
    body: str | bytes = "Hello.\r\n",
    *,
    headers: dict[str, str] | None = None,
) -> bytes:
    """A small RFC 5322 message with CRLF line ends (not dot-stuffed), ending in CRLF."""
    head = {"From": "sender@client.test", "To": "rcpt@example.test", "Subject": subject}
    head.update(headers or {})
    text = "".join(f"{k}: {v}\r\n" for k, v in head.items()).encode("utf-8") + b"\r\n"
    data = body.encode("utf-8") if isinstance(body, str) else body
    return text + data
