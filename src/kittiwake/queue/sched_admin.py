"""The scheduler's admin operations: what the control socket, ETRN and `kittiwake queue` ask.

Owns ``SchedulerAdmin``, a mixin of ``queue.scheduler.Scheduler`` (it works on the
scheduler's state; the attributes it needs are declared below). Listing and showing read
the store; hold, release, delete, retry, bounce and flush change it durably first, then
the in-memory schedule. What each does to a message whose delivery is running is
documented in ``queue.scheduler``. Mildly security sensitive: queue ids and domains come
from outside; the store vets ids (``is_queue_id``) and binds every value.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from kittiwake.delivery.api import Outcome, QueuedMessage, RecipientStatus, Route
from kittiwake.queue.api import QueueStore, QueueSummary
from kittiwake.queue.sched_clock import Clock
from kittiwake.queue.sched_dispatch import Dispatcher
from kittiwake.queue.sched_jobs import Timers, Visit
from kittiwake.queue.sched_notices import Notices
from kittiwake.queue.sched_policy import (
    ADMIN_BOUNCE,
    LIVE,
    SchedulerSettings,
    final_notice,
    log_line,
)

qlog = logging.getLogger("kittiwake.queue")
dlog = logging.getLogger("kittiwake.delivery")


class SchedulerAdmin:
    store: QueueStore
    settings: SchedulerSettings
    router: Callable[[str], Route]
    clock: Clock
    _running: bool
    _queued: set[str]
    _again: set[str]
    _active: dict[str, Visit]
    _timers: Timers
    _jobs: Dispatcher
    _notices: Notices

    def _enqueue(self, item: QueuedMessage | str, *, new: bool = False) -> None:
        raise NotImplementedError  # the scheduler's

    def _forget(self, qid: str) -> None:
        """Out of every queue and timer (hold, delete, bounce)."""
        self._queued.discard(qid)
        self._again.discard(qid)
        self._timers.cancel(qid)

    async def list_queue(self) -> list[QueuedMessage]:
        """Every message in the queue, oldest first (held ones included)."""
        return await self.store.all_messages()

    async def show(self, queue_id: str) -> QueuedMessage | None:
        return await self.store.get(queue_id)

    async def summary(self) -> QueueSummary:
        """``mailq``-style counts and ages by destination domain."""
        return await self.store.summary()

    async def flush(self, domain: str | None = None) -> int:
        """Deferred mail for recipient ``domain`` (``.example.org``: its subdomains; None:
        everything) due now, and the dead-destination cache forgotten (ETRN, RFC 1985: the
        site says it is back). Returns how many messages were woken."""
        ids = await self.store.make_due(domain=domain)
        self._jobs.dead.clear()
        for qid in ids:
            self._enqueue(qid)
        qlog.info("flush %s: %d message(s)", domain or "all", len(ids))
        return len(ids)

    async def hold(self, queue_id: str) -> bool:
        """Stop scheduling the message until ``release`` (deliveries already running end
        and are recorded). False if there is no such message."""
        if not await self.store.hold(queue_id):
            return False
        self._forget(queue_id)
        self._stop_visit(queue_id, "held")
        qlog.info("%s: held", queue_id)
        return True

    async def release(self, queue_id: str) -> bool:
        if not await self.store.release(queue_id):
            return False
        qlog.info("%s: released", queue_id)
        visit = self._active.get(queue_id)
        if visit is not None and visit.stop == "held":
            visit.stop = None  # still being visited: carry on, then reschedule as usual
        self._enqueue(queue_id)
        return True

    async def delete(self, queue_id: str) -> bool:
        """Remove the message now, in whatever state; deliveries already running for it
        go on (they cannot be recalled) but their results are dropped."""
        if not await self.store.delete(queue_id):
            return False
        self._forget(queue_id)
        self._stop_visit(queue_id, "deleted")
        qlog.info("%s: removed", queue_id)
        return True

    async def retry(self, queue_id: str) -> bool:
        """Try this message's deferred recipients now — an operator's "now" also overrides
        the dead-destination cache for its routes. False if it is unknown or held."""
        message = await self.store.get(queue_id)
        if message is None or message.held:
            return False
        for r in message.recipients:
            if r.status in LIVE:
                self._jobs.dead.pop(self.router(r.address).key, None)
        await self.store.make_due(queue_id=queue_id)
        self._enqueue(queue_id)
        return True

    async def bounce(self, queue_id: str) -> bool:
        """Fail every live recipient now with 5.0.0 "bounced by the administrator" and send
        the DSN (per NOTIFY). Works on held messages too. False if there is none."""
        message = await self.store.get(queue_id)
        if message is None:
            return False
        self._forget(queue_id)
        self._stop_visit(queue_id, "bounced")
        live = [r for r in message.recipients if r.status in LIVE]
        outcomes = [Outcome(r.index, RecipientStatus.BOUNCED, ADMIN_BOUNCE) for r in live]
        notices = {}
        for o in outcomes:
            if (notice := final_notice(message, o)) is not None:
                notices[o.index] = notice
        now = self.clock()
        await self.store.record(queue_id, outcomes, notices=notices)
        for r, o in zip(live, outcomes, strict=True):
            dlog.info("%s", log_line(message, r, o, "none", now))
        after = await self.store.get(queue_id)
        if after is None:
            qlog.info("%s: removed", queue_id)
            return True
        try:
            await self._notices.settle(after)
        except Exception:
            qlog.exception("%s: cannot send its notices; will retry", queue_id)
            if self._running:
                self._timers.set(queue_id, now + self.settings.retry_first)
        return True

    def _stop_visit(self, queue_id: str, why: str) -> None:
        visit = self._active.get(queue_id)
        if visit is not None:
            visit.stop = why
