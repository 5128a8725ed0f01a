"""The store contract: what the rest of Kittiwake may ask of the queue's persistence.

Owns the ``Store`` protocol and its value types. The embedded backend is SQLite (WAL) for
metadata plus one spool file per message body (``queue.sqlite``); a PostgreSQL backend for
clusters implements the same protocol later, so nothing outside ``queue`` may depend on a
backend. Durability rule (design practice 5): ``commit`` returns only after the body file
and the metadata are fsynced; the caller says 250 after that and never before.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from kittiwake.delivery.api import Outcome, QueuedMessage, RecipientStatus
from kittiwake.envelope import Envelope
from kittiwake.greylisting import GreylistState

__all__ = [
    "DeliveryEvents",
    "DomainSummary",
    "Outcome",
    "QueueStore",
    "QueueSummary",
    "QueuedMessage",
    "RecipientStatus",
    "SpoolWriter",
    "Store",
]


class SpoolWriter(Protocol):
    """A message body being received. Writes go to a file, never to a growing buffer."""

    @property
    def queue_id(self) -> str: ...

    @property
    def size(self) -> int: ...

    def write(self, data: bytes) -> None: ...

    def abort(self) -> None:
        """Remove everything written; idempotent. Nothing of the message remains."""


class Store(Protocol):
    async def open(self) -> None:
        """Create/open the database and spool directories; clean up uncommitted spool files."""

    async def close(self) -> None: ...

    def new_message(self) -> SpoolWriter:
        """Allocate a queue id and an (uncommitted) spool file."""

    async def commit(self, writer: SpoolWriter, envelope: Envelope) -> QueuedMessage:
        """Fsync the body, persist the envelope with every recipient PENDING, fsync the
        metadata (group commit: concurrent callers share one database transaction/fsync)."""

    async def pending(self, *, due_before: float | None = None) -> list[QueuedMessage]:
        """Messages with at least one PENDING/DEFERRED recipient (due ones, if a time is given)."""

    async def get(self, queue_id: str) -> QueuedMessage | None: ...

    def open_body(self, queue_id: str) -> BinaryIO:
        """The committed spool file, opened for binary reading (caller closes)."""

    async def record(self, queue_id: str, outcomes: Sequence[Outcome]) -> None:
        """Record outcomes in place, durably; a message whose recipients are all final is
        removed with its spool file."""


class DsnKind(enum.Enum):
    """Which notice (RFC 3464): a failure (bounce), a delay warning, or a success notice."""

    FAILURE = "failure"
    DELAY = "delay"
    SUCCESS = "success"


@dataclass(frozen=True, slots=True)
class DsnRecipient:
    """One per-recipient block of a delivery status notification (RFC 3464 §2.3)."""

    address: str  # Final-Recipient (rfc822;...)
    original: str | None  # Original-Recipient from ORCPT (addr-type;address), if given
    action: str  # "failed" | "delayed" | "delivered" | "relayed" | "expanded"
    status: str  # enhanced status code, e.g. "5.1.1"
    diagnostic: str | None = None  # the remote reply, e.g. "550 5.1.1 no such user"
    remote_mta: str | None = None
    last_attempt: float | None = None
    will_retry_until: float | None = None  # delay notices


class Notifier(Protocol):
    """Sends delivery status notifications; injected into the scheduler (queue never
    imports cleanup). Decides the notice's recipient: the envelope sender, or for mail
    with a null sender the postmaster (double bounce), or nobody (a double bounce that
    fails is dropped with a log line)."""

    async def send(
        self, kind: DsnKind, message: QueuedMessage, recipients: Sequence[DsnRecipient]
    ) -> str | None:
        """Queue the notice; its queue id, or None when none was sent."""


class DeliveryEvents(Protocol):
    """Post-queue notifications, injected into the scheduler (queue never imports policy;
    the policy chain's notification stages fit as they are). Called synchronously from the
    scheduler's loop: an implementation must return at once (schedule its own work) —
    the scheduler logs and ignores anything it raises."""

    def queued(self, message: QueuedMessage) -> None:
        """A message was committed and handed to the scheduler."""

    def delivered(self, message: QueuedMessage, outcome: Outcome) -> None: ...

    def deferred(self, message: QueuedMessage, outcome: Outcome) -> None: ...

    def bounced(self, message: QueuedMessage, outcome: Outcome) -> None: ...


@dataclass(frozen=True, slots=True)
class DomainSummary:
    """Live recipients for one destination domain (a ``mailq``/qshape line)."""

    domain: str
    recipients: int
    messages: int
    deferred: int  # of ``recipients``, how many have been tried and deferred
    oldest: float  # received_at of the oldest message (unix time)


@dataclass(frozen=True, slots=True)
class QueueSummary:
    messages: int  # every message in the queue, held ones included
    recipients: int  # live recipients
    held: int  # held messages
    domains: tuple[DomainSummary, ...]  # most recipients first


class QueueStore(Store, Protocol):
    """What the scheduler and the admin operations need beyond ``Store``: per-attempt
    extras on ``record``, notices, holds, and whole-queue views. The SQLite backend
    implements it; a PostgreSQL backend for clusters implements the same."""

    async def get_many(self, queue_ids: Sequence[str]) -> dict[str, QueuedMessage]: ...

    async def record(
        self,
        queue_id: str,
        outcomes: Sequence[Outcome],
        *,
        route: str | None = None,
        notices: Mapping[int, str] | None = None,
        diagnostics: Mapping[int, str] | None = None,
    ) -> None: ...

    async def notices_sent(
        self, queue_id: str, indices: Collection[int], *, delay: bool = False
    ) -> bool: ...

    async def hold(self, queue_id: str, reason: str = ...) -> bool: ...

    async def release(self, queue_id: str) -> bool: ...

    async def delete(self, queue_id: str) -> bool: ...

    async def make_due(
        self, *, queue_id: str | None = None, domain: str | None = None
    ) -> list[str]: ...

    async def all_messages(self) -> list[QueuedMessage]: ...

    async def schedule(self) -> list[tuple[str, float]]: ...

    async def summary(self) -> QueueSummary: ...

    def greylist_state(self) -> GreylistState:
        """Greylisting's state, kept in this store (the caller closes it)."""
