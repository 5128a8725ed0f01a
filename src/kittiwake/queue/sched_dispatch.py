"""Running the jobs: per-destination queues and windows, one attempt, the dead-site cache.

Owns ``Dispatcher``. The scheduler hands it ``Job``s (one message's recipients on one
route); it keeps one FIFO per route key and runs at most that destination's window at once
— slow start from ``initial_destination_concurrency``, +1 per attempt that got something
through, up to ``destination_concurrency``, back to 1 on a site failure. When a job ends,
the next one for the same destination starts in the same tick, so the agent finds its
connection still open (back-to-back delivery, connection reuse).

One attempt: ``discard`` and ``error`` routes are answered here, a known transport's agent
is called (an agent that raises or forgets a recipient defers it, 4.3.0), an unknown one
defers 4.3.5 loudly; the outcomes are finalized (``sched_policy.finalize``), recorded in
place, logged one line per recipient, and announced to the ``DeliveryEvents``. A site
failure puts the route key in the dead-destination cache: its jobs are deferred without an
attempt until the entry expires.
Not security sensitive.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

from kittiwake.delivery.api import (
    DeliveryAgent,
    Outcome,
    QueuedMessage,
    QueuedRecipient,
    RecipientStatus,
    Route,
)
from kittiwake.queue.api import DeliveryEvents, QueueStore
from kittiwake.queue.routing import error_reply
from kittiwake.queue.sched_clock import Clock
from kittiwake.queue.sched_events import announce_outcomes
from kittiwake.queue.sched_jobs import Destination, Job
from kittiwake.queue.sched_policy import (
    AGENT_FAILED,
    DISCARDED,
    NO_AGENT,
    SchedulerSettings,
    finalize,
    log_line,
    suspended,
    with_outcomes,
)

qlog = logging.getLogger("kittiwake.queue")
dlog = logging.getLogger("kittiwake.delivery")


class Dispatcher:
    """``dispatch(job)``; ``on_done(job)`` is called when a job ends (run or skipped)."""

    def __init__(
        self,
        store: QueueStore,
        agents: Mapping[str, DeliveryAgent],
        settings: SchedulerSettings,
        clock: Clock,
        rng: random.Random,
        spawn: Callable[[Coroutine[Any, Any, None]], None],
        on_done: Callable[[Job], None],
        events: DeliveryEvents | None = None,
    ) -> None:
        self.store = store
        self.agents = agents
        self.settings = settings
        self.clock = clock
        self.rng = rng
        self.spawn = spawn
        self.on_done = on_done
        self.events = events  # post-queue hooks, told each recorded outcome
        self.dests: dict[str, Destination] = {}
        self.dead: dict[str, tuple[float, Outcome]] = {}  # route key -> (until, why)
        self.closed = False
        self.attempts = 0  # agent calls made (tests, metrics)

    def dispatch(self, job: Job) -> None:
        dest = self.dests.get(job.route.key)
        if dest is None:
            window = max(1, self.settings.initial_destination_concurrency)
            dest = self.dests[job.route.key] = Destination(job.route.key, window)
        dest.jobs.append(job)
        self._start(dest)

    def _cap(self, key: str) -> int:
        """The concurrency ceiling of a destination. Local delivery has its own, lower one
        (Postfix: local_destination_concurrency_limit): parallel fsyncs into one disk beyond
        a few only slow the SMTP side's commits down, and deliver no faster (measured)."""
        if key.startswith("local:"):
            return self.settings.local_concurrency
        return self.settings.destination_concurrency

    def close(self) -> None:
        """Start no more jobs (shutdown); jobs running finish or are cancelled by the owner."""
        self.closed = True
        for dest in self.dests.values():
            dest.jobs.clear()

    def _start(self, dest: Destination) -> None:
        limit = max(1, min(dest.window, self._cap(dest.key)))
        while dest.jobs and dest.running < limit and not self.closed:
            job = dest.jobs.popleft()
            dest.running += 1
            self.spawn(self._run(job, dest))

    async def _run(self, job: Job, dest: Destination) -> None:
        visit = job.visit
        try:
            if visit.stop is None:
                await self._attempt(job, dest)
        except Exception:
            qlog.exception("%s: delivery attempt failed; will retry", visit.message.queue_id)
            visit.stale = True
        finally:
            dest.running -= 1
            if not self.closed:
                self.on_done(job)
                self._start(dest)  # the next message for this destination, at once
            if not dest.running and not dest.jobs:
                self.dests.pop(dest.key, None)

    async def _attempt(self, job: Job, dest: Destination) -> None:
        visit, route, rcpts = job.visit, job.route, job.recipients
        qid = visit.message.queue_id
        relay = route.transport
        dead = self.dead.get(route.key)
        if dead is not None and dead[0] <= self.clock():
            del self.dead[route.key]
            dead = None
        agent: DeliveryAgent | None = None
        raw: list[Outcome]
        if dead is not None:
            relay = dead[1].remote_mta or "none"
            reply = suspended(dead[1].reply)
            raw = [Outcome(r.index, RecipientStatus.DEFERRED, reply) for r in rcpts]
        elif route.transport == "discard":
            raw = [Outcome(r.index, RecipientStatus.DELIVERED, DISCARDED) for r in rcpts]
        elif route.transport == "error":
            reply = error_reply(route.nexthop)
            status = RecipientStatus.DEFERRED if reply.is_transient else RecipientStatus.BOUNCED
            raw = [Outcome(r.index, status, reply) for r in rcpts]
        elif (agent := self.agents.get(route.transport)) is None:
            qlog.error("%s: no delivery agent for transport %r", qid, route.transport)
            raw = [Outcome(r.index, RecipientStatus.DEFERRED, NO_AGENT) for r in rcpts]
        else:
            relay = agent.name
            raw = await self._call(agent, visit.message, rcpts, route)
        now = self.clock()
        rand = [self.rng.random() for _ in rcpts]
        fin = finalize(visit.message, rcpts, raw, now, self.settings, rand)
        if visit.stop == "deleted":
            return  # its rows are gone: nothing to record
        await self.store.record(
            qid, fin.outcomes, route=route.key, notices=fin.notices, diagnostics=fin.diagnostics
        )
        for r, o in zip(rcpts, fin.outcomes, strict=True):
            dlog.info("%s", log_line(visit.message, r, o, o.remote_mta or relay, now))
        visit.message = with_outcomes(visit.message, fin, now, route.key)
        announce_outcomes(self.events, visit.message, fin.outcomes)
        if agent is not None:
            self._learn(dest, raw, now)

    async def _call(
        self,
        agent: DeliveryAgent,
        message: QueuedMessage,
        rcpts: Sequence[QueuedRecipient],
        route: Route,
    ) -> list[Outcome]:
        self.attempts += 1
        qid = message.queue_id
        try:
            outcomes = await agent.deliver(message, rcpts, lambda: self.store.open_body(qid), route)
        except Exception:
            dlog.exception("%s: agent %s raised", qid, agent.name)
            outcomes = []
        by_index = {o.index: o for o in outcomes}
        # Exactly one outcome per recipient: whatever the agent forgot is deferred.
        return [
            by_index.get(r.index) or Outcome(r.index, RecipientStatus.DEFERRED, AGENT_FAILED)
            for r in rcpts
        ]

    def _learn(self, dest: Destination, raw: Sequence[Outcome], now: float) -> None:
        """Slow start, and the dead-destination cache: a site failure (the agent says so,
        or every recipient was deferred 4.4.1 "no answer from host") stops attempts to this
        destination for ``dead_destination_ttl`` (Postfix: site/session failure scope)."""
        if all(o.status is RecipientStatus.DEFERRED for o in raw):
            site = [o for o in raw if o.site_failure or o.reply.enhanced == "4.4.1"]
            ttl = self.settings.dead_destination_ttl
            if site and ttl > 0:
                self.dead[dest.key] = (now + ttl, site[0])
                dest.window = 1
                qlog.warning("%s: destination dead for %gs: %s", dest.key, ttl, site[0].reply)
        else:
            dest.window = min(dest.window + 1, self._cap(dest.key))
