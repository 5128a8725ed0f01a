"""The 0.1 delivery runner: deliver what was just queued, retry what was deferred.

Owns ``DeliveryRunner``. Deliberately small and replaceable (the real scheduler — active
set limits, per-destination concurrency, jittered backoff, bounces — comes later): a
bounded pool of worker tasks takes messages from an in-memory work queue; the store stays
the only truth, so anything not yet done when we stop is found again by ``recover``.
Not security sensitive by itself; it never touches message content.

Life of a message: ``submit`` (right after commit: no polling delay) → a worker asks
``agent_for`` which agent handles each due recipient, calls each agent once with its
recipients, and records the outcomes with ``store.record`` after each agent (so a crash
never re-delivers to a recipient already recorded). A DEFERRED recipient is retried after
``retry_base`` seconds, doubling per attempt up to ``retry_max``, via a loop timer; one
still deferred ``max_age`` after arrival is BOUNCED with 5.4.7 (RFC 3463: delivery time
expired). A sweep every ``sweep_interval`` seconds re-reads what is due from the store, a
safety net for mail whose ``submit`` never came (a session cancelled mid-commit, say).
Everything but ``submit`` enqueues queue ids, re-read from the store when a worker takes
them, so a stale snapshot can never deliver twice. Log lines follow Postfix:
``QID: to=<rcpt>, relay=maildir, delay=0.02, tries=1, status=delivered (250 2.0.0 ...)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from kittiwake.delivery.api import (
    DeliveryAgent,
    Outcome,
    QueuedMessage,
    QueuedRecipient,
    RecipientStatus,
)
from kittiwake.envelope import Reply
from kittiwake.queue.api import Store

qlog = logging.getLogger("kittiwake.queue")
dlog = logging.getLogger("kittiwake.delivery")

AgentFor = Callable[[QueuedRecipient, QueuedMessage], DeliveryAgent | None]
_LIVE = (RecipientStatus.PENDING, RecipientStatus.DEFERRED)
NO_AGENT = Reply(451, "4.3.5", "no delivery agent for this destination")
AGENT_FAILED = Reply(451, "4.3.0", "delivery agent failed")
_Item = QueuedMessage | str | None  # a message, a queue id to re-read, or "stop"


class DeliveryRunner:
    def __init__(
        self,
        store: Store,
        agent_for: AgentFor,
        concurrency: int = 8,
        *,
        retry_base: float = 60.0,
        retry_max: float = 3600.0,
        max_age: float = 5 * 86400.0,
        sweep_interval: float | None = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.agent_for = agent_for
        self.concurrency = max(1, concurrency)
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.max_age = max_age
        self.sweep_interval = sweep_interval
        self.clock = clock
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._inflight: set[str] = set()  # queued or being delivered
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._sweeper: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._running = False
        self.attempts = 0  # agent calls made (for tests and metrics)

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self._running:
            return
        self._running = True
        loop = asyncio.get_running_loop()
        self._workers = [
            loop.create_task(self._work(), name=f"delivery-{i}") for i in range(self.concurrency)
        ]
        if self.sweep_interval:
            self._sweeper = loop.create_task(self._sweep(self.sweep_interval), name="sweep")

    async def recover(self) -> int:
        """Queue everything the store holds that still has a live recipient (start-up)."""
        messages = await self.store.pending()
        for m in messages:
            self._enqueue(m.queue_id, m.queue_id)
        if messages:
            qlog.info("recovered %d queued message(s)", len(messages))
        return len(messages)

    async def _sweep(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                due = await self.store.pending(due_before=self.clock())
            except Exception:
                qlog.exception("queue sweep failed")
                continue
            for m in due:
                self._enqueue(m.queue_id, m.queue_id)

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop taking work, let deliveries in progress finish (up to ``timeout``). What is
        left stays in the store for the next ``recover``."""
        if not self._running:
            return
        self._running = False
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None:
                self._inflight.discard(item if isinstance(item, str) else item.queue_id)
        for _ in self._workers:
            self._queue.put_nowait(None)
        _, late = await asyncio.wait(self._workers, timeout=timeout)
        for task in late:
            task.cancel()
        for task in late:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers = []
        self._inflight.clear()
        self._idle.set()

    async def wait_idle(self) -> None:
        """Until nothing is queued or being delivered (timers may still be pending)."""
        await self._idle.wait()

    def next_retry(self, queue_id: str) -> float | None:
        """When the timer for ``queue_id`` fires (loop time), if one is set."""
        handle = self._timers.get(queue_id)
        return None if handle is None else handle.when()

    # -- work queue -----------------------------------------------------------------------

    def submit(self, message: QueuedMessage) -> None:
        """Deliver ``message`` now: call it right after ``commit`` with what commit returned
        (the snapshot is used as is, saving a read). Ignored unless started."""
        self._enqueue(message.queue_id, message)

    def _enqueue(self, queue_id: str, item: QueuedMessage | str) -> None:
        if not self._running or queue_id in self._inflight:
            return
        timer = self._timers.pop(queue_id, None)
        if timer is not None:
            timer.cancel()
        self._inflight.add(queue_id)
        self._idle.clear()
        self._queue.put_nowait(item)

    def _schedule(self, queue_id: str, when: float) -> None:
        if not self._running:
            return
        delay = max(0.0, when - self.clock())
        old = self._timers.pop(queue_id, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._timers[queue_id] = loop.call_later(delay, self._wake, queue_id)

    def _wake(self, queue_id: str) -> None:
        self._timers.pop(queue_id, None)
        self._enqueue(queue_id, queue_id)  # re-read: the store has the current state

    async def _work(self) -> None:
        while (item := await self._queue.get()) is not None:
            qid = item if isinstance(item, str) else item.queue_id
            next_due: float | None = None
            try:
                message = item if isinstance(item, QueuedMessage) else await self.store.get(qid)
                if message is not None:
                    next_due = await self._attempt(message)
            except asyncio.CancelledError:
                raise
            except Exception:
                qlog.exception("%s: delivery attempt failed; will retry", qid)
                next_due = self.clock() + self.retry_base
            finally:
                self._inflight.discard(qid)
                if not self._inflight:
                    self._idle.set()
            if next_due is not None:
                self._schedule(qid, next_due)

    # -- one attempt ------------------------------------------------------------------------

    async def _attempt(self, message: QueuedMessage) -> float | None:
        """Try every due recipient once; returns when the next attempt is due, or None."""
        now = self.clock()
        live = [r for r in message.recipients if r.status in _LIVE]
        due = [r for r in live if r.next_attempt <= now]
        later = [r.next_attempt for r in live if r.next_attempt > now]
        if not due:
            return min(later) if later else None
        if all(r.attempts == 0 for r in live):
            qlog.info(
                "%s: from=<%s>, size=%d, nrcpt=%d (queue active)",
                message.queue_id,
                message.envelope.sender,
                message.size,
                len(message.recipients),
            )
        groups: dict[int, tuple[DeliveryAgent, list[QueuedRecipient]]] = {}
        orphans: list[QueuedRecipient] = []
        for r in due:
            agent = self.agent_for(r, message)
            if agent is None:
                orphans.append(r)
            else:
                groups.setdefault(id(agent), (agent, []))[1].append(r)
        retries: list[float] = list(later)
        for agent, rcpts in groups.values():
            outcomes = await self._call(agent, message, rcpts)
            retries += await self._record(message, rcpts, outcomes, agent.name)
        if orphans:
            outcomes = [Outcome(r.index, RecipientStatus.DEFERRED, NO_AGENT) for r in orphans]
            retries += await self._record(message, orphans, outcomes, "none")
        if not retries:
            qlog.info("%s: removed", message.queue_id)
            return None
        return min(retries)

    async def _call(
        self, agent: DeliveryAgent, message: QueuedMessage, rcpts: list[QueuedRecipient]
    ) -> list[Outcome]:
        self.attempts += 1
        qid = message.queue_id
        try:
            outcomes = await agent.deliver(message, rcpts, lambda: self.store.open_body(qid))
        except Exception:
            dlog.exception("%s: agent %s raised", qid, agent.name)
            outcomes = []
        by_index = {o.index: o for o in outcomes}
        # Exactly one outcome per recipient: whatever the agent forgot is deferred.
        return [
            by_index.get(r.index) or Outcome(r.index, RecipientStatus.DEFERRED, AGENT_FAILED)
            for r in rcpts
        ]

    async def _record(
        self,
        message: QueuedMessage,
        rcpts: Sequence[QueuedRecipient],
        outcomes: list[Outcome],
        relay: str,
    ) -> list[float]:
        """Apply backoff and expiry, record durably, log; returns the retry times."""
        now = self.clock()
        final: list[Outcome] = []
        retries: list[float] = []
        for r, o in zip(rcpts, outcomes, strict=True):
            if o.status is RecipientStatus.DEFERRED:
                if now - message.received_at >= self.max_age:
                    o = Outcome(r.index, RecipientStatus.BOUNCED, _expired(o.reply))
                else:
                    backoff = min(self.retry_max, self.retry_base * 2.0**r.attempts)
                    when = o.next_attempt if o.next_attempt > now else now + backoff
                    o = Outcome(r.index, o.status, o.reply, when)
                    retries.append(when)
            elif o.status is RecipientStatus.PENDING:  # not an outcome: treat as a deferral
                o = Outcome(r.index, RecipientStatus.DEFERRED, o.reply, now + self.retry_base)
                retries.append(o.next_attempt)
            final.append(o)
            dlog.info(
                "%s: to=<%s>, relay=%s, delay=%.2f, tries=%d, status=%s (%s)",
                message.queue_id,
                r.address,
                relay,
                max(0.0, now - message.received_at),
                r.attempts + 1,
                o.status.value,
                o.reply,
            )
        await self.store.record(message.queue_id, final)
        return retries


def _expired(reply: Reply) -> Reply:
    return Reply(554, "5.4.7", f"delivery time expired; last error: {reply}")
