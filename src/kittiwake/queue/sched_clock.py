"""Time for the scheduler: the wall clock it reads and the sleep it waits with, injectable.

Owns ``Sleep`` (the type) and ``ManualClock``, a clock that moves only when told, so tests
drive backoff, expiry and delay warnings through hours of queue time in milliseconds
(trio's MockClock in spirit). The scheduler only ever reads ``clock()`` and awaits
``sleep(seconds)``; with the defaults (``time.time``, ``asyncio.sleep``) it runs on real
time. Not security sensitive.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable, Callable

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class ManualClock:
    """``clock()`` returns ``now``; ``await clock.sleep(s)`` returns once ``advance`` has
    moved ``now`` past the deadline. Use it as both the clock and the sleep."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> Awaitable[None]:
        """Registers the deadline at the call, not when first awaited: a task that starts
        after ``advance`` must not sleep from the new time (a race asyncio.sleep's real
        clock never shows). Cancelling the awaitable cancels the sleep."""
        if seconds <= 0:
            return asyncio.sleep(0)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + seconds, next(self._seq), future))
        return future

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline has come."""
        self.now += seconds
        while self._sleepers and self._sleepers[0][0] <= self.now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    @property
    def sleepers(self) -> int:
        """Sleeps still waiting (for tests)."""
        return sum(not f.done() for _, _, f in self._sleepers)
