"""The delivery-agent contract and the queue's value types it speaks in.

``delivery`` never imports ``queue``; the queue imports these. The scheduler calls an agent
with a message and the recipients due, and records what it returns. An agent never raises
for an ordinary failure: it returns DEFERRED/BOUNCED outcomes, one per recipient.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from kittiwake.envelope import Envelope, Reply


class RecipientStatus(enum.Enum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    BOUNCED = "bounced"


@dataclass(frozen=True, slots=True)
class QueuedRecipient:
    index: int  # position in the envelope; stable key within the message
    address: str
    status: RecipientStatus
    attempts: int = 0
    next_attempt: float = 0.0  # unix time
    last_reply: str | None = None
    # Issue 3 (additive; the store keeps them, the scheduler and `kittiwake queue` read them):
    route: str | None = None  # Route.key of the last attempt (mailq grouping)
    remote_mta: str | None = None  # of the last attempt (DSN Remote-MTA)
    last_attempt: float = 0.0  # unix time of the last attempt; 0 = none yet
    dsn_status: str | None = None  # enhanced status of the last outcome ("4.4.1")
    diagnostic: str | None = None  # the reply behind it (DSN Diagnostic-Code)
    first_deferred: float = 0.0  # unix time of the first deferral; 0 = never deferred
    delay_notified: bool = False  # the delay warning (RFC 3464 "delayed") went out
    notice: str | None = None  # a final DSN owed and not yet sent: "failed"/"delivered"/"relayed"


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    queue_id: str
    envelope: Envelope
    received_at: float  # unix time of commit
    size: int  # octets of the spool file (trace headers included)
    recipients: tuple[QueuedRecipient, ...]
    held: bool = False  # kept but not scheduled (admin hold, or a corrupt entry)
    hold_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """One recipient's result from one delivery attempt (delivery agents return these)."""

    index: int
    status: RecipientStatus  # DELIVERED, DEFERRED or BOUNCED
    reply: Reply
    next_attempt: float = 0.0  # for DEFERRED; 0 = the scheduler's backoff decides
    remote_mta: str | None = None  # RFC 3464 §2.3.5 Remote-MTA (a host name or [address])
    relayed: bool = False  # handed to another MTA (not a final delivery): "relayed" DSN duty
    peer_dsn: bool = False  # the peer accepted our DSN parameters: NOTIFY is its duty now
    # The whole destination failed (no MX answered, every connection refused or dropped:
    # Postfix's site/session failure scope): the scheduler stops trying other mail for the
    # same route for a while (dead-destination cache) instead of retrying it at once.
    site_failure: bool = False


@dataclass(frozen=True, slots=True)
class Route:
    """Where a recipient goes next: Postfix's (transport, nexthop), RFC 5321 §5.

    ``transport`` is one of ``local``, ``smtp``, ``lmtp``, ``discard``, ``error``.
    ``nexthop``: for smtp, ``domain`` (MX lookup) or ``[host]:port`` (no MX lookup);
    for lmtp, ``host:port`` or ``unix:/path``; for error, ``5.1.1 text``; else empty.
    The scheduler groups recipients by ``key`` (per-destination concurrency, reuse).
    """

    transport: str
    nexthop: str = ""

    @property
    def key(self) -> str:
        return f"{self.transport}:{self.nexthop}"


LOCAL_ROUTE = Route("local")


@dataclass(frozen=True, slots=True)
class Destination:
    """One address to try for a next hop, in order (RFC 5321 §5.1)."""

    host: str  # the MX host name (for TLS verification, Remote-MTA), or the literal
    ip: str
    port: int = 25
    preference: int = 0  # MX preference; 0 for implicit MX and [host] routes


class DestinationFinder(Protocol):
    async def __call__(self, nexthop: str) -> list[Destination] | Reply:
        """Destinations to try in order, or the reply that ends the attempt (4xx defer,
        5xx bounce: null MX 5.1.10, NXDOMAIN 5.1.2, loops back to myself 5.4.6)."""


class BodyOpener(Protocol):
    def __call__(self) -> BinaryIO: ...


class DeliveryAgent(Protocol):
    name: str

    async def deliver(
        self,
        message: QueuedMessage,
        recipients: Sequence[QueuedRecipient],
        open_body: BodyOpener,
        route: Route | None = None,
    ) -> list[Outcome]:
        """Deliver ``message`` to ``recipients`` (all on ``route``); one Outcome each."""
