"""The queue manager: decides what to try now, hands it to delivery agents, records the result.

Owns ``Scheduler`` (Postfix's qmgr in spirit, see its STRATEGIES). The store stays the only
truth; the scheduler keeps a bounded *active set* in memory. Not security sensitive by
itself: it never parses message content (log lines quote replies; ``kittiwake.log``
escapes them).

- New mail (``submit``, right after commit) is scheduled at once; deferred mail comes back
  from a timer heap at its time, never from polling the database (a sweep every few
  minutes is only a safety net). Admission to the active set (``active_limit`` messages)
  alternates between the two queues, so a flood of retries cannot starve new mail
  (``sched_admission``).
- Each due recipient is routed (``router(address) -> Route``); a message's recipients are
  grouped by ``route.key`` (≤ ``destination_recipient_limit`` per call) and queued per
  destination. A destination runs at most its window of deliveries at once: slow start
  from ``initial_destination_concurrency``, +1 per good delivery, up to
  ``destination_concurrency``. When one finishes, the next job for the same destination
  starts at once, so the agent can reuse its open connection (back-to-back delivery).
- ``discard`` and ``error`` routes are handled here; an unknown transport defers 4.3.5.
- A deferral is retried after ``retry_first`` doubling to ``retry_max``, with jitter, or at
  the agent's ``next_attempt``. A site failure (``Outcome.site_failure``, or every
  recipient deferred 4.4.1) puts the destination in the dead-destination cache: for
  ``dead_destination_ttl`` its mail is deferred without an attempt.
- Past ``max_lifetime`` a deferral becomes a bounce (5.4.7). Delay warnings go out once
  per recipient after ``delay_warning``, per NOTIFY (``sched_policy.wants``).
- Post-queue hooks: the optional ``events`` (``queue.api.DeliveryEvents``, e.g. the policy
  chain) hears ``queued`` on ``submit`` and delivered/deferred/bounced per recorded outcome.

Notices and crash safety. An outcome is recorded in place before anything else happens.
A final outcome that owes a DSN is recorded *together with* the debt (``notice`` column,
one transaction); the notice is then sent through the injected Notifier and the debt
cleared (``notices_sent``); the message is removed only when no recipient is live and no
notice is owed. A crash before the record repeats the delivery (at least once); a crash
after it finds the debt at ``recover`` and sends the notice; only a crash between the
Notifier's commit and the clearing (one group commit, milliseconds) can send it twice.
Delay warnings are sent first and marked after (a crash may repeat one, never a bounce).

Admin operations on a message that is being delivered: ``hold`` lets deliveries already
running finish and be recorded, starts no more, and does not reschedule; ``delete``
removes it from the store at once, starts nothing more, and drops the results of
deliveries already running (the peer may still get the message: it cannot be recalled);
``bounce`` fails every live recipient at once — an attempt already running for one of
them may still deliver it, but its result can no longer change the recorded bounce.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from kittiwake.delivery.api import (
    DeliveryAgent,
    QueuedMessage,
    QueuedRecipient,
    Route,
)
from kittiwake.queue.api import DeliveryEvents, Notifier, QueueStore
from kittiwake.queue.sched_admin import SchedulerAdmin
from kittiwake.queue.sched_admission import SchedulerAdmission
from kittiwake.queue.sched_clock import Sleep
from kittiwake.queue.sched_dispatch import Dispatcher
from kittiwake.queue.sched_events import announce_queued
from kittiwake.queue.sched_jobs import Job, Timers, Visit
from kittiwake.queue.sched_notices import Notices, owes
from kittiwake.queue.sched_policy import (
    LIVE,
    ROUTING_FAILED,
    SchedulerSettings,
)

__all__ = ["Scheduler", "SchedulerSettings"]

qlog = logging.getLogger("kittiwake.queue")
dlog = logging.getLogger("kittiwake.delivery")


class Scheduler(SchedulerAdmission, SchedulerAdmin):
    """Schedules the queue's mail: ``start()``, ``await recover()``, ``submit()`` each new
    message, ``await stop()``. ``clock``/``sleep`` (and ``rng``, for the jitter) are
    injectable: ``sched_clock.ManualClock`` runs hours of queue time in a test."""

    def __init__(
        self,
        store: QueueStore,
        agents: Mapping[str, DeliveryAgent],
        router: Callable[[str], Route],
        notifier: Notifier,
        settings: SchedulerSettings | None = None,
        clock: Callable[[], float] = time.time,
        *,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        events: DeliveryEvents | None = None,
    ) -> None:
        self.store = store
        self.agents = agents
        self.router = router
        self.settings = settings = settings or SchedulerSettings()
        self.clock = clock
        self._events = events
        self._notices = Notices(store, notifier, settings, clock, self._on_notice)
        self._timers = Timers(
            clock, sleep, self._enqueue, self._sweep, settings.sweep_interval, self._touch
        )
        self._running = False
        self._incoming: deque[QueuedMessage | str] = deque()
        self._deferred: deque[str] = deque()
        self._queued: set[str] = set()  # ids in either deque (stale entries are skipped)
        self._prefer_new = True
        self._loading: set[str] = set()  # taken from a queue, being read from the store
        self._active: dict[str, Visit] = {}
        self._again: set[str] = set()  # revisit when the current visit ends
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._work = asyncio.Event()
        self._changed = asyncio.Event()
        self._jobs = Dispatcher(
            store,
            agents,
            settings,
            clock,
            rng or random.Random(),
            self._spawn,
            self._job_done,
            events,
        )

    @property
    def attempts(self) -> int:
        """Agent calls made so far (tests, metrics)."""
        return self._jobs.attempts

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self._running:
            return
        self._running = True
        self._jobs.closed = False
        loop = asyncio.get_running_loop()
        self._loops = [
            loop.create_task(self._pump(), name="scheduler-pump"),
            loop.create_task(self._timers.run(), name="scheduler-timers"),
        ]

    async def recover(self) -> int:
        """At start-up: schedule every unheld message with work left — due ones now, the
        rest at their time (starts the scheduler if need be). Returns how many."""
        self.start()
        entries = await self.store.schedule()
        now = self.clock()
        for qid, due in entries:
            if due <= now:
                self._enqueue(qid)
            else:
                self._timers.set(qid, due)
        if entries:
            qlog.info("recovered %d queued message(s)", len(entries))
        return len(entries)

    def submit(self, message: QueuedMessage) -> None:
        """New mail, right after commit: scheduled at once (the snapshot saves a read).
        Ignored unless started. Announced to ``events.queued`` (post-queue hooks)."""
        if self._running:
            announce_queued(self._events, message)
        self._enqueue(message, new=True)

    async def stop(self, timeout: float = 10.0) -> None:
        """Start nothing more; let deliveries in progress finish for up to ``timeout``
        seconds, then cancel them. What is left is in the store for the next ``recover``."""
        if not self._running:
            return
        self._running = False
        for task in self._loops:
            task.cancel()
        for task in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._loops = []
        self._incoming.clear()
        self._deferred.clear()
        self._queued.clear()
        self._timers.clear()
        self._jobs.close()
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in late:
                task.cancel()
            for task in late:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._active.clear()
        self._changed.set()

    async def wait_idle(self) -> None:
        """Until nothing is queued, loading, active or due — timers and the sweep included
        (timers set for later remain). Returns at once when stopped."""
        while self._running and not self._idle():
            self._changed.clear()
            await self._changed.wait()

    def _idle(self) -> bool:
        if self._queued or self._active or self._loading or self._tasks:
            return False
        return not self._timers.pending(self.clock())

    def _touch(self) -> None:
        self._changed.set()

    # -- one visit: route the due recipients, queue one job per destination -----------------

    def _visit(self, message: QueuedMessage) -> None:
        qid = message.queue_id
        now = self.clock()
        visit = Visit(message)
        self._active[qid] = visit
        due = [r for r in message.recipients if r.status in LIVE and r.next_attempt <= now]
        if due and all(r.attempts == 0 for r in message.recipients):
            qlog.info(
                "%s: from=<%s>, size=%d, nrcpt=%d (queue active)",
                qid,
                message.envelope.sender,
                message.size,
                len(message.recipients),
            )
        groups: dict[str, tuple[Route, list[QueuedRecipient]]] = {}
        for r in due:
            try:
                route = self.router(r.address)
            except Exception:
                qlog.exception("%s: routing <%s> failed", qid, r.address)
                route = Route("error", ROUTING_FAILED)
            groups.setdefault(route.key, (route, []))[1].append(r)
        limit = max(1, self.settings.destination_recipient_limit)
        for route, rcpts in groups.values():
            for i in range(0, len(rcpts), limit):
                visit.jobs += 1
                self._jobs.dispatch(Job(visit, route, rcpts[i : i + limit]))
        if visit.jobs == 0:
            self._end_visit(visit)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._touch()

    def _job_done(self, job: Job) -> None:
        job.visit.jobs -= 1
        if job.visit.jobs == 0:
            self._end_visit(job.visit)
        self._touch()

    # -- the end of a visit: notices, then the next timer -----------------------------------

    def _end_visit(self, visit: Visit) -> None:
        message = visit.message
        if visit.stop is None and (
            visit.stale or owes(message) or self._notices.delay_due(message, self.clock())
        ):
            self._spawn(self._wrap_up(visit))
        else:
            self._close(visit, message)

    async def _wrap_up(self, visit: Visit) -> None:
        message: QueuedMessage | None = visit.message
        try:
            if visit.stale:  # a write failed: what does the store say now?
                message = await self.store.get(visit.message.queue_id)
            if message is not None:
                message = await self._notices.settle(message)
        except Exception:
            qlog.exception("%s: cannot send its notices; will retry", visit.message.queue_id)
            visit.stale = True
        self._close(visit, message)

    def _close(self, visit: Visit, message: QueuedMessage | None) -> None:
        """Out of the active set; removed, or back at its next time."""
        qid = visit.message.queue_id
        if self._active.get(qid) is visit:
            del self._active[qid]
        self._work.set()
        self._touch()
        again = qid in self._again
        self._again.discard(qid)
        if visit.stop is not None or not self._running or message is None or message.held:
            return  # held, deleted, bounced by the admin, or gone (logged where it went)
        live = [r for r in message.recipients if r.status in LIVE]
        if not live and not owes(message) and not visit.stale:
            qlog.info("%s: removed", qid)
            return
        if again:
            self._enqueue(qid)
            return
        now = self.clock()
        if visit.stale:  # something failed (the store, the Notifier): not in a hot loop
            self._timers.set(qid, now + self.settings.retry_first)
            return
        times = [r.next_attempt for r in live]
        if owes(message):  # the Notifier failed: try again later
            times.append(now + self.settings.retry_first)
        warn = self._notices.delay_time(message)
        if warn is not None:
            times.append(max(warn, now))
        if times:
            self._timers.set(qid, min(times))

    async def _sweep(self) -> None:
        """The safety net: anything due in the store that we do not know about."""
        try:
            entries = await self.store.schedule()
        except Exception:
            qlog.exception("queue sweep failed")
            return
        now = self.clock()
        for qid, due in entries:
            if qid in self._active or qid in self._queued or qid in self._loading:
                continue
            if due <= now:
                self._enqueue(qid)
            elif qid not in self._timers:
                self._timers.set(qid, due)
