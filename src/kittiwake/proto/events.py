"""Events the sans-I/O server core hands to its driver, and the core's settings.

Owns the vocabulary between ``proto.server.ServerConnection`` and whoever drives it
(``smtpd.session``, tests). Two kinds of events:

* **Decisions** — ``Helo``, ``MailFrom``, ``RcptTo``, ``DataStart``, ``BodyEnd`` (without
  ``failure``), ``AuthStart``, ``AuthResponse``, ``Etrn``. The core pauses until the driver answers
  with exactly one of the ``ServerConnection`` answer methods; ``next_event()`` returns
  ``PAUSED`` meanwhile.
* **Notices** — everything else. The core has already queued any reply; the driver only
  reacts (count, log, abort a spool file, close, start TLS).

Imports only ``envelope``. Not security sensitive by itself.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from kittiwake.envelope import BodyType, Recipient, Reply, Ret


class Sentinel(enum.Enum):
    NEED_DATA = "NEED_DATA"  # feed more bytes with receive_data()
    PAUSED = "PAUSED"  # a decision is pending; answer it first


NEED_DATA = Sentinel.NEED_DATA
PAUSED = Sentinel.PAUSED


class BareLinefeedPolicy(enum.Enum):
    """What to do with a bare CR or LF inside DATA (SMTP smuggling, CVE-2023-51764 class).

    Either way only ``<CRLF>.<CRLF>`` ends DATA. ``REJECT``: the message is refused with
    ``550 5.6.0`` after the end of data. ``NORMALIZE``: every bare CR and bare LF becomes
    CRLF in the stored message, so a smuggled ``.`` line is dot-stuffed on any later relay.
    """

    REJECT = "reject"
    NORMALIZE = "normalize"


@dataclass(frozen=True, slots=True)
class ProtoConfig:
    """Settings of one server connection (one per listener role; the core never reads files)."""

    hostname: str = "localhost"
    max_message_size: int = 50 * 1024 * 1024  # SIZE advertised; 0 = no limit
    max_recipients: int = 100
    max_commands: int = 10_000  # per session; then 421 and close
    max_bad_commands: int = 20  # syntax/sequence errors per session; then 421 and close
    bare_linefeed: BareLinefeedPolicy = BareLinefeedPolicy.NORMALIZE
    starttls_available: bool = False  # a TLS context exists for this listener
    auth_mechanisms: tuple[str, ...] = ()  # offered mechanisms, e.g. ("PLAIN", "LOGIN")
    auth_requires_tls: bool = True  # AUTH only inside TLS; before it 538 5.7.11 (RFC 4954 §6)
    require_tls: bool = False  # before TLS: 530 5.7.0 but to NOOP/EHLO/STARTTLS/QUIT (RFC 3207 §4)
    vrfy_enabled: bool = True  # VRFY answers 252; False → 502
    expn_enabled: bool = False  # EXPN answers 502 by default (RFC 5321 §3.5.2 allows it)
    lmtp: bool = False  # LHLO instead of HELO/EHLO; one reply per recipient after DATA
    etrn_enabled: bool = False  # ETRN (RFC 1985) advertised and raised as Etrn; False → 502
    greeting_text: str = "ESMTP Kittiwake"


# ---------------------------------------------------------------------------------- notices


@dataclass(frozen=True, slots=True)
class BadCommand:
    """A command was refused for syntax or sequence; the core already queued ``reply``."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class Reset:
    """RSET, a new HELO/EHLO or a completed/failed transaction: drop any transaction state."""


@dataclass(frozen=True, slots=True)
class Noop:
    """NOOP, VRFY, EXPN or HELP was answered by the core (for logging/idle accounting)."""

    verb: str


@dataclass(frozen=True, slots=True)
class Quit:
    """QUIT: the core queued 221; flush ``data_to_send()`` and close."""


@dataclass(frozen=True, slots=True)
class Closing:
    """The core decided to end the session (limits, fatal errors); reply already queued."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class StartTLS:
    """STARTTLS was accepted: flush the queued ``220``, upgrade the transport, then call
    ``ServerConnection.tls_established()``. Input buffered after the command has already been
    discarded (RFC 3207 §5, CVE-2011-0411)."""


@dataclass(frozen=True, slots=True)
class BodyData:
    """A piece of the message content, already dot-unstuffed (DATA) or raw (BDAT)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed its side (``receive_data(b"")``)."""


@dataclass(frozen=True, slots=True)
class AuthCancelled:
    """The client answered a 334 challenge with ``*``; the core queued 501."""


# -------------------------------------------------------------------------------- decisions


@dataclass(frozen=True, slots=True)
class Helo:
    """HELO/EHLO/LHLO. Answer ``accept_helo()`` or ``reject(reply)``."""

    verb: str  # "HELO", "EHLO" or "LHLO"
    domain: str  # as given: a domain or an address literal


@dataclass(frozen=True, slots=True)
class MailFrom:
    """MAIL FROM, already validated (RFC 5321 §4.1.1.2, RFC 1870, 6152, 3030, 6531, 3461, 4954)."""

    sender: str  # "" for <>
    size: int | None = None
    body_type: BodyType = BodyType.SEVENBIT
    smtputf8: bool = False
    ret: Ret | None = None
    envid: str | None = None  # xtext-decoded
    auth: str | None = None  # xtext-decoded, "<>" kept literally


@dataclass(frozen=True, slots=True)
class RcptTo:
    """RCPT TO, validated (RFC 5321 §4.1.1.3, RFC 3461 §4.1-4.2). ``accept()`` or ``reject()``."""

    recipient: Recipient


@dataclass(frozen=True, slots=True)
class DataStart:
    """DATA (after at least one accepted RCPT) or the first BDAT of a transaction.

    For DATA, ``accept()`` queues ``354``; for BDAT, ``accept()`` lets the chunk flow.
    ``reject(reply)`` refuses the transaction (BDAT chunk bytes are still consumed).
    """

    bdat: bool


@dataclass(frozen=True, slots=True)
class BodyEnd:
    """End of the message content (``<CRLF>.<CRLF>`` or BDAT LAST).

    ``failure`` set: the core refused the message itself (too big, bare LF under REJECT,
    line over 1000 octets); the reply is already queued, this is a notice — abort the spool.
    ``failure`` None: a decision — answer ``accept(reply)`` with the 250 carrying the queue id
    (or one reply per recipient with ``accept_lmtp()`` in LMTP mode), or ``reject(reply)``.
    """

    size: int  # octets of content received (after unstuffing)
    failure: Reply | None = None


@dataclass(frozen=True, slots=True)
class AuthStart:
    """AUTH <mechanism> [initial-response]. Answer ``auth_challenge``, ``auth_success``
    or ``reject``. ``initial`` is the decoded initial response (``b""`` for ``=``)."""

    mechanism: str
    initial: bytes | None


@dataclass(frozen=True, slots=True)
class AuthResponse:
    """A base64-decoded line answering our last 334 challenge."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Etrn:
    """ETRN [option]node (RFC 1985 §5), syntax already checked and outside a transaction.

    ``argument`` is as the client wrote it: ``example.org`` (that domain), ``@example.org``
    (it and its subdomains, §5.3) or ``#queue`` (a named queue, §5.3). Answer ``accept(reply)``
    with 250/251/252/253 or ``reject(reply)`` with 458/459 (§5.1).
    """

    argument: str

    @property
    def option(self) -> str:
        """``""``, ``"@"`` or ``"#"``."""
        return self.argument[0] if self.argument[:1] in ("@", "#") else ""

    @property
    def node(self) -> str:
        """The node (or queue) name without the option character, lower-cased, no final dot."""
        return self.argument[len(self.option) :].rstrip(".").lower()


Event = (
    BadCommand
    | Reset
    | Noop
    | Quit
    | Closing
    | StartTLS
    | BodyData
    | ConnectionClosed
    | AuthCancelled
    | Helo
    | MailFrom
    | RcptTo
    | DataStart
    | BodyEnd
    | AuthStart
    | AuthResponse
    | Etrn
)
