"""The scheduler's in-memory bookkeeping: visits, jobs, destinations, and the timer heap.

Owns ``Visit`` (one message in the active set), ``Job`` (its recipients for one route),
``Destination`` (the jobs waiting for one route key, how many run, the slow-start window)
and ``Timers`` (when each deferred message comes back: a heap with lazy deletion and one
task that sleeps until the earliest entry, woken early when an earlier one is added, with
a periodic sweep as a safety net). Nothing here is durable: after a crash the store's
``schedule()`` rebuilds it all. Not security sensitive.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from kittiwake.delivery.api import QueuedMessage, QueuedRecipient, Route
from kittiwake.queue.sched_clock import Clock, Sleep

_MAX_SLEEP = 3600.0  # re-check the heap at least hourly, whatever the clock does


@dataclass(eq=False, slots=True)
class Visit:
    """One message in the active set, from admission until its last job is recorded."""

    message: QueuedMessage  # kept current as outcomes are recorded
    jobs: int = 0  # route jobs not finished yet
    stop: str | None = None  # "held", "deleted", "bounced": start no more jobs
    stale: bool = False  # the store changed under us (or a write failed): re-read at the end


@dataclass(eq=False, slots=True)
class Job:
    visit: Visit
    route: Route
    recipients: list[QueuedRecipient]


@dataclass(eq=False, slots=True)
class Destination:
    """Jobs for one route key. ``window`` is the slow-start concurrency (Postfix's
    destination concurrency window): the scheduler starts at most that many at once."""

    key: str
    window: int
    jobs: deque[Job] = field(default_factory=deque)
    running: int = 0


class Timers:
    """Queue ids with the time they are due again; ``run()`` calls ``fire(qid)`` for each
    one that comes due, and ``sweep()`` every ``sweep_interval`` seconds (0: never)."""

    def __init__(
        self,
        clock: Clock,
        sleep: Sleep,
        fire: Callable[[str], None],
        sweep: Callable[[], Awaitable[None]],
        sweep_interval: float,
        changed: Callable[[], None] = lambda: None,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._fire = fire
        self._sweep = sweep
        self._interval = sweep_interval
        self._changed = changed  # told when a sweep ends (``pending`` may have changed)
        self._heap: list[tuple[float, int, str]] = []
        self._at: dict[str, float] = {}
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._deadline = float("inf")  # when the sleeping loop wakes up anyway
        self._next_sweep: float | None = None
        self._sweeping = False

    def __contains__(self, qid: str) -> bool:
        return qid in self._at

    def set(self, qid: str, when: float) -> None:
        """Due at ``when``, unless it is already due earlier."""
        old = self._at.get(qid)
        if old is not None and old <= when:
            return
        self._at[qid] = when
        heapq.heappush(self._heap, (when, next(self._seq), qid))
        if when < self._deadline:
            self._wake.set()

    def cancel(self, qid: str) -> None:
        self._at.pop(qid, None)  # its heap entry goes stale and is skipped

    def clear(self) -> None:
        self._heap.clear()
        self._at.clear()

    def next(self) -> float | None:
        """When the earliest live entry is due."""
        while self._heap:
            when, _, qid = self._heap[0]
            if self._at.get(qid) == when:
                return when
            heapq.heappop(self._heap)
        return None

    def fire_due(self, now: float) -> None:
        while (when := self.next()) is not None and when <= now:
            _, _, qid = heapq.heappop(self._heap)
            del self._at[qid]
            self._fire(qid)

    def pending(self, now: float) -> bool:
        """Work is due now: an entry, or a sweep (or one is running)."""
        when = self.next()
        sweep = self._next_sweep is not None and self._next_sweep <= now
        return self._sweeping or sweep or (when is not None and when <= now)

    async def run(self) -> None:
        if self._interval > 0:
            self._next_sweep = self._clock() + self._interval
        while True:
            now = self._clock()
            self.fire_due(now)
            if self._next_sweep is not None and now >= self._next_sweep:
                self._sweeping = True
                try:
                    await self._sweep()
                finally:
                    self._sweeping = False
                    self._next_sweep = now + self._interval
                    self._changed()
            candidates = (self.next(), self._next_sweep, now + _MAX_SLEEP)
            self._deadline = deadline = min(t for t in candidates if t is not None)
            self._wake.clear()
            await self._sleep_or_wake(deadline - self._clock())  # the sweep took time

    async def _sleep_or_wake(self, seconds: float) -> None:
        # ensure_future at once (not inside a new task): a clock's sleep may register its
        # deadline when called, and that must be before anybody can move the clock.
        sleeper = asyncio.ensure_future(self._sleep(max(0.0, seconds)))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, waker):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
