"""Frozen values that travel through the whole pipeline.

Owns: ``Reply`` (an SMTP reply with its RFC 3463 enhanced code), the DSN vocabulary of
RFC 3461, ``Recipient`` and ``Envelope``. Imports nothing of ours. Not security
sensitive by itself, but every field here may carry attacker-chosen text: render it
with care (see ``Reply.to_bytes``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply: ``code``, optional enhanced status code, one or more text lines.

    RFC 5321 §4.2 (reply syntax), RFC 2034 §3 / RFC 3463 (enhanced codes). The enhanced
    code is written in front of every line's text, as RFC 2034 §3 asks.
    """

    code: int
    enhanced: str | None
    text: str | tuple[str, ...] = ""

    def lines(self) -> tuple[str, ...]:
        if isinstance(self.text, tuple):
            return self.text or ("",)
        return (self.text,)

    @property
    def is_positive(self) -> bool:
        return self.code < 400

    @property
    def is_transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        return self.code >= 500

    def to_bytes(self) -> bytes:
        """Wire form, ``code-text`` lines then ``code text``; CR/LF in text are dropped."""
        out: list[bytes] = []
        body = self.lines()
        last = len(body) - 1
        prefix = f"{self.enhanced} " if self.enhanced else ""
        for i, line in enumerate(body):
            clean = line.replace("\r", " ").replace("\n", " ")
            sep = " " if i == last else "-"
            out.append(f"{self.code}{sep}{prefix}{clean}".rstrip(" ").encode("utf-8") + b"\r\n")
        return b"".join(out)

    def __str__(self) -> str:
        prefix = f"{self.enhanced} " if self.enhanced else ""
        return f"{self.code} {prefix}{' / '.join(self.lines())}"


class Notify(enum.Flag):
    """RFC 3461 §4.1 NOTIFY values. ``NEVER`` is the empty flag set made explicit."""

    NEVER = 0
    SUCCESS = enum.auto()
    FAILURE = enum.auto()
    DELAY = enum.auto()


class Ret(enum.Enum):
    """RFC 3461 §4.3 RET: return the full message or only its headers in a DSN."""

    FULL = "FULL"
    HDRS = "HDRS"


class BodyType(enum.Enum):
    """RFC 6152 BODY=8BITMIME, RFC 3030 BODY=BINARYMIME; 7BIT is the default."""

    SEVENBIT = "7BIT"
    EIGHTBITMIME = "8BITMIME"
    BINARYMIME = "BINARYMIME"


@dataclass(frozen=True, slots=True)
class Recipient:
    """One forward-path with its own DSN request (RFC 3461 §4.1, §4.2).

    ``notify`` is ``None`` when the client gave no NOTIFY (the RFC default applies:
    failure, and delay at the MTA's discretion). ``orcpt`` keeps the raw
    ``addr-type;xtext`` value as the client sent it, decoded from xtext.
    """

    address: str
    notify: Notify | None = None
    orcpt: str | None = None

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2].lower()

    @property
    def local_part(self) -> str:
        return self.address.rpartition("@")[0]


@dataclass(frozen=True, slots=True)
class Envelope:
    """Everything the SMTP transaction told us about one message.

    ``sender`` is ``""`` for the null reverse-path ``<>`` (RFC 5321 §4.5.5).
    """

    sender: str
    recipients: tuple[Recipient, ...]
    body_type: BodyType = BodyType.SEVENBIT
    smtputf8: bool = False
    declared_size: int | None = None
    ret: Ret | None = None
    envid: str | None = None
    auth: str | None = None  # RFC 4954 §5 MAIL AUTH= value (decoded), or None
    internal: str | None = None  # generated here: "bounce", "delay", "success", "double-bounce"


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """What we know about the client side of one SMTP session (for trace headers, logs)."""

    client_ip: str
    client_port: int
    server_ip: str
    server_port: int
    helo: str = ""
    esmtp: bool = False
    tls: bool = False
    tls_version: str | None = None
    tls_cipher: str | None = None
    auth_user: str | None = None
    listener: str = "mx"  # "mx", "submission", "smtps", "lmtp"
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
