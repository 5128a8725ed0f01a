"""The scheduler's admission: two queues (new and deferred mail) feeding one active set.

Owns ``SchedulerAdmission``, a mixin of ``queue.scheduler.Scheduler`` (it works on the
scheduler's state; the attributes it needs are declared below). ``_enqueue`` puts a message
in the incoming queue (new mail, with its snapshot while the backlog is small) or the
deferred queue (by id); ``_pump`` admits them into the active set, at most
``active_limit`` messages at once, alternating between the two queues (Postfix qmgr's
fairness: a flood of retries cannot starve new mail), and reads deferred mail from the
store in batches of ``LOAD_BATCH``. A message already active or loading is marked to be
revisited when its visit ends. Not security sensitive.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from kittiwake.delivery.api import QueuedMessage
from kittiwake.queue.api import QueueStore
from kittiwake.queue.sched_clock import Clock
from kittiwake.queue.sched_jobs import Timers, Visit
from kittiwake.queue.sched_policy import SchedulerSettings

qlog = logging.getLogger("kittiwake.queue")

LOAD_BATCH = 64  # deferred messages read from the store per database call


class SchedulerAdmission:
    store: QueueStore
    settings: SchedulerSettings
    clock: Clock
    _running: bool
    _incoming: deque[QueuedMessage | str]
    _deferred: deque[str]
    _queued: set[str]
    _prefer_new: bool
    _loading: set[str]
    _active: dict[str, Visit]
    _again: set[str]
    _timers: Timers
    _work: asyncio.Event

    def _touch(self) -> None:
        raise NotImplementedError  # the scheduler's

    def _visit(self, message: QueuedMessage) -> None:
        raise NotImplementedError  # the scheduler's

    def _enqueue(self, item: QueuedMessage | str, *, new: bool = False) -> None:
        if not self._running:
            return
        qid = item if isinstance(item, str) else item.queue_id
        if qid in self._active or qid in self._loading:
            self._again.add(qid)
            return
        if qid in self._queued:
            return
        self._timers.cancel(qid)
        self._queued.add(qid)
        if new:
            # A snapshot saves a read; past a backlog keep only the id (memory stays bounded
            # by the ids, like Postfix's incoming queue, which is on disk).
            backlog = len(self._incoming) >= 4 * self.settings.active_limit
            self._incoming.append(qid if backlog else item)
        else:
            self._deferred.append(qid)
        self._work.set()
        self._touch()

    def _on_notice(self, qid: str) -> None:
        self._enqueue(qid, new=True)  # a notice we queued: deliver it now

    def _take(self) -> QueuedMessage | str | None:
        """The next message to admit, alternating new and deferred mail (Postfix qmgr's
        fairness), or None when there is none or the active set is full."""
        while len(self._active) + len(self._loading) < self.settings.active_limit:
            if self._incoming and (self._prefer_new or not self._deferred):
                item: QueuedMessage | str = self._incoming.popleft()
                self._prefer_new = False
            elif self._deferred:
                item = self._deferred.popleft()
                self._prefer_new = True
            else:
                return None
            qid = item if isinstance(item, str) else item.queue_id
            if qid in self._queued:  # else: held or deleted meanwhile
                self._queued.discard(qid)
                return item
        return None

    async def _pump(self) -> None:
        while True:
            item = self._take()
            if item is None:
                self._work.clear()
                self._touch()
                await self._work.wait()
                continue
            if isinstance(item, QueuedMessage):
                self._visit(item)
                continue
            # Deferred mail is known by id only: load a batch of it in one database call
            # (one query per message queued behind the group commits was the drain's
            # bottleneck), then visit each.
            batch = [item]
            self._loading.add(item)  # counts against active_limit in _take()
            while len(batch) < LOAD_BATCH:
                more = self._take()
                if more is None:
                    break
                if isinstance(more, QueuedMessage):
                    self._visit(more)
                    continue
                batch.append(more)
                self._loading.add(more)
            await self._load(batch)

    async def _load(self, batch: list[str]) -> None:
        try:
            found = await self.store.get_many(batch)
        except Exception:
            qlog.exception("%d message(s): cannot read them from the queue; will retry", len(batch))
            for qid in batch:
                self._timers.set(qid, self.clock() + self.settings.retry_first)
            found = {}
        finally:
            self._loading.difference_update(batch)
        for qid in batch:
            message = found.get(qid)
            if message is not None and not message.held:
                self._again.discard(qid)
                self._visit(message)
            elif qid in self._again:
                self._again.discard(qid)
                self._enqueue(qid)
        self._touch()
