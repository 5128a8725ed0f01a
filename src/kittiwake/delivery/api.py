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


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    queue_id: str
    envelope: Envelope
    received_at: float  # unix time of commit
    size: int  # octets of the spool file (trace headers included)
    recipients: tuple[QueuedRecipient, ...]


@dataclass(frozen=True, slots=True)
class Outcome:
    """One recipient's result from one delivery attempt (delivery agents return these)."""

    index: int
    status: RecipientStatus  # DELIVERED, DEFERRED or BOUNCED
    reply: Reply
    next_attempt: float = 0.0  # for DEFERRED


class BodyOpener(Protocol):
    def __call__(self) -> BinaryIO: ...


class DeliveryAgent(Protocol):
    name: str

    async def deliver(
        self,
        message: QueuedMessage,
        recipients: Sequence[QueuedRecipient],
        open_body: BodyOpener,
    ) -> list[Outcome]:
        """Deliver ``message`` to ``recipients``; exactly one Outcome per recipient."""
