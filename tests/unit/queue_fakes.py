"""An in-memory ``QueueAdmin`` (the scheduler's admin surface) for control-socket tests."""

from __future__ import annotations

import dataclasses
import time

from kittiwake.delivery.api import QueuedMessage, QueuedRecipient, RecipientStatus
from kittiwake.envelope import Envelope, Notify, Recipient
from kittiwake.queue.ids import new_queue_id

DEFERRED = RecipientStatus.DEFERRED
PENDING = RecipientStatus.PENDING


def message(
    sender: str,
    recipients: list[tuple[str, RecipientStatus]],
    *,
    age: float = 0.0,
    size: int = 1234,
    held: bool = False,
    now: float | None = None,
) -> QueuedMessage:
    now = time.time() if now is None else now
    env = Envelope(
        sender,
        tuple(Recipient(a, Notify.FAILURE | Notify.DELAY, f"rfc822;{a}") for a, _ in recipients),
        envid="ENV123",
    )
    queued = tuple(
        QueuedRecipient(
            i,
            a,
            s,
            attempts=2 if s is DEFERRED else 0,
            next_attempt=now + 600 if s is DEFERRED else 0.0,
            last_reply="451 4.4.1 Connection refused" if s is DEFERRED else None,
            route=f"smtp:{a.rpartition('@')[2]}",
        )
        for i, (a, s) in enumerate(recipients)
    )
    return QueuedMessage(
        new_queue_id(now - age),
        env,
        now - age,
        size,
        queued,
        held=held,
        hold_reason="held by the administrator" if held else None,
    )


class FakeAdmin:
    """The Scheduler admin methods over a dict; ``calls`` records what was asked."""

    def __init__(self, messages: list[QueuedMessage]) -> None:
        self.messages = {m.queue_id: m for m in messages}
        self.calls: list[tuple[str, str | None]] = []
        self.broken = False

    async def list_queue(self) -> list[QueuedMessage]:
        self.calls.append(("list", None))
        if self.broken:
            raise RuntimeError("database disk image is malformed")
        return sorted(self.messages.values(), key=lambda m: m.received_at)

    async def show(self, queue_id: str) -> QueuedMessage | None:
        self.calls.append(("show", queue_id))
        return self.messages.get(queue_id)

    async def flush(self, domain: str | None = None) -> int:
        self.calls.append(("flush", domain))
        return sum(
            any(
                r.status is DEFERRED and (domain is None or r.address.rpartition("@")[2] == domain)
                for r in m.recipients
            )
            for m in self.messages.values()
        )

    def _update(self, queue_id: str, **changes: object) -> bool:
        m = self.messages.get(queue_id)
        if m is None:
            return False
        self.messages[queue_id] = dataclasses.replace(m, **changes)  # type: ignore[arg-type]
        return True

    async def hold(self, queue_id: str) -> bool:
        self.calls.append(("hold", queue_id))
        return self._update(queue_id, held=True, hold_reason="held by the administrator")

    async def release(self, queue_id: str) -> bool:
        self.calls.append(("release", queue_id))
        return self._update(queue_id, held=False, hold_reason=None)

    async def delete(self, queue_id: str) -> bool:
        self.calls.append(("delete", queue_id))
        return self.messages.pop(queue_id, None) is not None

    async def retry(self, queue_id: str) -> bool:
        self.calls.append(("retry", queue_id))
        m = self.messages.get(queue_id)
        return m is not None and not m.held  # like Scheduler.retry

    async def bounce(self, queue_id: str) -> bool:
        self.calls.append(("bounce", queue_id))
        return self.messages.pop(queue_id, None) is not None
