"""Sending what a message owes: final DSNs (failed, delivered, relayed) and delay warnings.

Owns ``Notices``: it calls the injected ``Notifier`` (the queue never imports cleanup) and
clears the debt in the store. Order matters for crash safety (see ``queue.scheduler``): a
final notice is owed in the store from the moment the recipient's final state is
recorded (one transaction), is sent, and only then is the debt cleared — so it is never
lost, and repeated only if the process dies between the Notifier's commit and the
clearing. A delay warning is sent, then marked. Per message, one notice per kind at a
time: a lock per queue id, and a fresh read of the debts under it, keep a visit and an
admin ``bounce`` from sending the same one twice. Not security sensitive.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from kittiwake.delivery.api import QueuedMessage, QueuedRecipient
from kittiwake.queue.api import DsnKind, Notifier, QueueStore
from kittiwake.queue.sched_clock import Clock
from kittiwake.queue.sched_policy import (
    KIND_LOG,
    SchedulerSettings,
    dsn_recipients,
    marked,
    wants_delay_warning,
)

qlog = logging.getLogger("kittiwake.queue")
_FINAL = ((DsnKind.FAILURE, ("failed",)), (DsnKind.SUCCESS, ("delivered", "relayed")))


def owes(message: QueuedMessage) -> bool:
    """A final notice is owed for some recipient."""
    return any(r.notice for r in message.recipients)


class Notices:
    """``settle(message)`` sends what is owed now; ``on_new(qid)`` hears each notice's id
    (the scheduler delivers it at once)."""

    def __init__(
        self,
        store: QueueStore,
        notifier: Notifier,
        settings: SchedulerSettings,
        clock: Clock,
        on_new: Callable[[str], None],
    ) -> None:
        self.store = store
        self.notifier = notifier
        self.settings = settings
        self.clock = clock
        self.on_new = on_new
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}  # tasks holding or awaiting each lock

    def delay_time(self, message: QueuedMessage) -> float | None:
        """When the delay warning is due, if one is still owed to anybody."""
        if self.settings.delay_warning <= 0:
            return None
        if not any(wants_delay_warning(message, r) for r in message.recipients):
            return None
        return message.received_at + self.settings.delay_warning

    def delay_due(self, message: QueuedMessage, now: float) -> bool:
        when = self.delay_time(message)
        return when is not None and when <= now

    async def settle(self, message: QueuedMessage) -> QueuedMessage | None:
        """Send the final notices owed, then a due delay warning; the message as it now
        is, or None once it is gone (its last debt paid). Raises if the Notifier does:
        what was not sent stays owed."""
        qid = message.queue_id
        lock = self._locks.setdefault(qid, asyncio.Lock())
        self._users[qid] = self._users.get(qid, 0) + 1
        try:
            async with lock:
                return await self._settle(message)
        finally:
            self._users[qid] -= 1
            if not self._users[qid]:
                del self._users[qid], self._locks[qid]

    async def _settle(self, message: QueuedMessage) -> QueuedMessage | None:
        qid = message.queue_id
        if owes(message):
            fresh = await self.store.get(qid)  # another task may have paid it meanwhile
            if fresh is None:
                return None
            message = fresh
        for kind, actions in _FINAL:
            owed = [r for r in message.recipients if r.notice in actions]
            if not owed:
                continue
            await self._send(kind, message, owed)
            indices = [r.index for r in owed]
            if await self.store.notices_sent(qid, indices):
                qlog.info("%s: removed", qid)
                return None
            message = marked(message, indices, delay=False)
        if self.delay_due(message, self.clock()):
            owed = [r for r in message.recipients if wants_delay_warning(message, r)]
            await self._send(DsnKind.DELAY, message, owed)
            indices = [r.index for r in owed]
            await self.store.notices_sent(qid, indices, delay=True)
            message = marked(message, indices, delay=True)
        return message

    async def _send(
        self, kind: DsnKind, message: QueuedMessage, owed: Sequence[QueuedRecipient]
    ) -> None:
        blocks = dsn_recipients(message, owed, kind, self.settings)
        new_id = await self.notifier.send(kind, message, blocks)
        qlog.info("%s: %s: %s", message.queue_id, KIND_LOG[kind], new_id or "none")
        if new_id is not None:
            self.on_new(new_id)
