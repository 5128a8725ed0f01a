"""The client core's vocabulary: which command a reply answers, and the session phases.

Owns ``Verb`` (what a ``Response`` answers), ``Phase`` (where the client session is),
``Response`` and ``GROUP_ENDERS`` (RFC 2920 §3.1). Used by ``proto.client``. Pure values;
not security sensitive.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from kittiwake.envelope import Reply


class Verb(enum.Enum):
    """Which command a reply answers. ``END``: the end of the message (final dot, BDAT LAST)."""

    GREETING = "greeting"
    EHLO = "EHLO"
    HELO = "HELO"
    LHLO = "LHLO"
    STARTTLS = "STARTTLS"
    AUTH = "AUTH"
    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"
    BDAT = "BDAT"
    END = "END"
    RSET = "RSET"
    NOOP = "NOOP"
    QUIT = "QUIT"


# RFC 2920 §3.1 (+ RFC 3207, RFC 4954): these must be the last command of a group.
GROUP_ENDERS = frozenset(
    {
        Verb.GREETING,
        Verb.EHLO,
        Verb.HELO,
        Verb.LHLO,
        Verb.STARTTLS,
        Verb.AUTH,
        Verb.DATA,
        Verb.NOOP,
        Verb.QUIT,
    }
)


class Phase(enum.Enum):
    """Where the session is, as far as what we have sent (and the replies that steer it)."""

    GREETING = "greeting"  # waiting for the banner
    HELLO = "hello"  # EHLO/HELO/LHLO needed (after the banner, a failed EHLO, or TLS)
    READY = "ready"  # greeted, no transaction
    MAIL = "mail"  # MAIL sent: RCPT, DATA, BDAT, RSET
    DATA = "data"  # DATA sent, or its 354 received: body() / end_data()
    BDAT = "bdat"  # some BDAT chunks sent, not the LAST one
    AUTH = "auth"  # inside an AUTH exchange (334 received)
    TLS = "tls"  # 220 to STARTTLS received: upgrade, then tls_established()
    CLOSED = "closed"  # QUIT sent, or the greeting refused us


@dataclass(frozen=True, slots=True)
class Response:
    """One reply and the command it answers."""

    verb: Verb
    reply: Reply
