"""A tiny auto-driver for ``kittiwake.proto.ServerConnection`` tests (plus its own checks).

``Driver.feed(bytes) -> bytes`` pushes input through the core, answers every decision with
an ``Answers`` policy (accept everything by default) and returns what the core would write.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from kittiwake.envelope import Reply
from kittiwake.proto import (
    AuthResponse,
    AuthStart,
    BodyData,
    BodyEnd,
    ConnectionClosed,
    DataStart,
    Event,
    Helo,
    MailFrom,
    ProtoConfig,
    RcptTo,
    Sentinel,
    ServerConnection,
    StartTLS,
)

E = TypeVar("E")

QUEUED = Reply(250, "2.0.0", "Ok: queued as ABC123")
REJECTED = Reply(550, "5.7.1", "Rejected by policy")
AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")

_REPLY_LINE = re.compile(rb"(\d{3})([ -])(.*)")


def reply_codes(out: bytes) -> list[str]:
    """``"250 2.1.0"``-style code of every complete reply in ``out`` (multi-line → one)."""
    codes: list[str] = []
    for line in out.split(b"\r\n")[:-1]:
        m = _REPLY_LINE.fullmatch(line)
        assert m is not None, f"malformed reply line {line!r}"
        if m[2] == b" ":
            text = m[3].decode()
            enhanced = re.match(r"\d\.\d{1,3}\.\d{1,3}(?= |$)", text)
            codes.append(f"{m[1].decode()} {enhanced[0]}" if enhanced else m[1].decode())
    assert out == b"" or out.endswith(b"\r\n")
    return codes


def config(**kw: object) -> ProtoConfig:
    kw.setdefault("hostname", "mx.test")
    return ProtoConfig(**kw)  # type: ignore[arg-type]


@dataclass
class Answers:
    """How the auto-driver answers each decision."""

    helo: bool = True
    mail: bool = True
    rcpt: bool | Callable[[RcptTo], bool] = True
    data: bool = True
    body: bool = True
    auth_identity: str | None = "alice"  # None → reject AUTH
    auth_challenges: int = 0  # 334 rounds before deciding
    lmtp_replies: Callable[[int], list[Reply]] | None = None
    tls: bool = True  # call tls_established() on StartTLS


@dataclass
class Driver:
    cfg: ProtoConfig = field(default_factory=config)
    tls: bool = False
    answers: Answers = field(default_factory=Answers)
    events: list[Event] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)

    def __post_init__(self) -> None:
        self.conn = ServerConnection(self.cfg, tls=self.tls)
        self._auth_rounds = 0

    def feed(self, data: bytes) -> bytes:
        self.conn.receive_data(data)
        self.pump()
        return self.conn.data_to_send()

    def codes(self, data: bytes) -> list[str]:
        return reply_codes(self.feed(data))

    def pump(self) -> None:
        while True:
            ev = self.conn.next_event()
            if isinstance(ev, Sentinel):
                return
            self.events.append(ev)
            if isinstance(ev, ConnectionClosed):
                return
            self.answer(ev)

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]

    def answer(self, ev: Event) -> None:
        a, conn = self.answers, self.conn
        if isinstance(ev, BodyData):
            self.body += ev.data
        elif isinstance(ev, Helo):
            conn.accept_helo() if a.helo else conn.reject(REJECTED)
        elif isinstance(ev, MailFrom):
            conn.accept() if a.mail else conn.reject(REJECTED)
        elif isinstance(ev, RcptTo):
            ok = a.rcpt(ev) if callable(a.rcpt) else a.rcpt
            conn.accept() if ok else conn.reject(REJECTED)
        elif isinstance(ev, DataStart):
            conn.accept() if a.data else conn.reject(REJECTED)
        elif isinstance(ev, BodyEnd) and ev.failure is None:
            if not a.body:
                conn.reject(REJECTED)
            elif a.lmtp_replies is not None:
                conn.accept_lmtp(a.lmtp_replies(conn.recipient_count))
            else:
                conn.accept(QUEUED)
        elif isinstance(ev, AuthStart | AuthResponse):
            if self._auth_rounds < a.auth_challenges:
                self._auth_rounds += 1
                conn.auth_challenge(b"challenge")
            elif a.auth_identity is None:
                self._auth_rounds = 0
                conn.reject(AUTH_FAILED)
            else:
                self._auth_rounds = 0
                conn.auth_success(a.auth_identity)
        elif isinstance(ev, StartTLS) and a.tls:
            conn.tls_established()


def ehlo(driver: Driver, verb: bytes = b"EHLO") -> bytes:
    out = driver.feed(verb + b" client.test\r\n")
    assert out.startswith(b"250"), out
    return out


# ------------------------------------------------------------------ the helpers' own tests


def test_reply_codes_parses_multiline_and_enhanced() -> None:
    out = b"250-mx greets x\r\n250 DSN\r\n250 2.1.0 Sender OK\r\n354 End data\r\n"
    assert reply_codes(out) == ["250", "250 2.1.0", "354"]


def test_driver_roundtrip() -> None:
    d = Driver()
    assert d.conn.greeting() == b"220 mx.test ESMTP Kittiwake\r\n"
    ehlo(d)
    assert d.codes(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n") == [
        "250 2.1.0",
        "250 2.1.5",
        "354",
    ]
    assert d.codes(b"hello\r\n.\r\n") == ["250 2.0.0"]
    assert bytes(d.body) == b"hello\r\n"
