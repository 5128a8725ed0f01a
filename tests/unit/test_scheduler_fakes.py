"""Fakes for the scheduler tests (no tests here): scripted agents, a recording notifier,
a table router, and a harness that builds a real SQLite store and a Scheduler on one
ManualClock. Plain classes implementing the protocols: no mocks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kittiwake.delivery.api import (
    BodyOpener,
    DeliveryAgent,
    Outcome,
    QueuedMessage,
    QueuedRecipient,
    RecipientStatus,
    Route,
)
from kittiwake.envelope import Envelope, Notify, Recipient, Reply
from kittiwake.queue.api import DsnKind, DsnRecipient
from kittiwake.queue.sched_clock import ManualClock
from kittiwake.queue.scheduler import Scheduler, SchedulerSettings
from kittiwake.queue.sqlite import SQLiteStore

OK = Reply(250, "2.0.0", "ok")
BUSY = Reply(451, "4.3.0", "busy")
REFUSED = Reply(421, "4.4.1", "connect to mx.example.org[127.0.0.2]:25: Connection refused")
NO_USER = Reply(550, "5.1.1", "no such user")

# (address, attempt number for that address starting at 1) -> outcome pieces
Script = Callable[[str, int], tuple[RecipientStatus, Reply]]


def delivered(address: str, n: int) -> tuple[RecipientStatus, Reply]:
    return RecipientStatus.DELIVERED, OK


@dataclass
class Call:
    queue_id: str
    addresses: list[str]
    route: Route | None
    body: bytes


class FakeAgent:
    """A DeliveryAgent whose outcome per recipient comes from ``script``. Counts calls
    and the most concurrent calls per route key; ``gate`` (when set) holds every call
    until it is opened."""

    def __init__(
        self,
        name: str = "fake",
        script: Script = delivered,
        *,
        relayed: bool = False,
        peer_dsn: bool = False,
        site_failure: bool = False,
        remote_mta: str | None = "mx.example.org[127.0.0.2]:25",
    ) -> None:
        self.name = name
        self.script = script
        self.relayed = relayed
        self.peer_dsn = peer_dsn
        self.site_failure = site_failure
        self.remote_mta = remote_mta
        self.calls: list[Call] = []
        self.tries: dict[str, int] = {}
        self.gate: asyncio.Event | None = None
        self.pause = 0.0  # real seconds each call takes (to make calls overlap)
        self.running: dict[str, int] = {}
        self.most: dict[str, int] = {}

    async def deliver(
        self,
        message: QueuedMessage,
        recipients: Sequence[QueuedRecipient],
        open_body: BodyOpener,
        route: Route | None = None,
    ) -> list[Outcome]:
        key = route.key if route else ""
        self.running[key] = self.running.get(key, 0) + 1
        self.most[key] = max(self.most.get(key, 0), self.running[key])
        try:
            with open_body() as f:
                body = f.read()
            self.calls.append(Call(message.queue_id, [r.address for r in recipients], route, body))
            if self.gate is not None:
                await self.gate.wait()
            if self.pause:
                await asyncio.sleep(self.pause)
            out = []
            for r in recipients:
                n = self.tries[r.address] = self.tries.get(r.address, 0) + 1
                status, reply = self.script(r.address, n)
                out.append(
                    Outcome(
                        r.index,
                        status,
                        reply,
                        remote_mta=self.remote_mta,
                        relayed=self.relayed,
                        peer_dsn=self.peer_dsn,
                        site_failure=self.site_failure and status is RecipientStatus.DEFERRED,
                    )
                )
            return out
        finally:
            self.running[key] -= 1

    def delivered_to(self) -> list[str]:
        return [a for c in self.calls for a in c.addresses]


@dataclass
class Sent:
    kind: DsnKind
    queue_id: str
    recipients: list[DsnRecipient]


class FakeNotifier:
    """Records each notice; returns no new queue id (so nothing more is delivered), or
    raises while ``fail`` is set."""

    def __init__(self) -> None:
        self.sent: list[Sent] = []
        self.fail = False

    async def send(
        self, kind: DsnKind, message: QueuedMessage, recipients: Sequence[DsnRecipient]
    ) -> str | None:
        if self.fail:
            raise RuntimeError("notifier down (injected)")
        self.sent.append(Sent(kind, message.queue_id, list(recipients)))
        return None

    def kinds(self) -> list[DsnKind]:
        return [s.kind for s in self.sent]


def table_router(table: dict[str, Route]) -> Callable[[str], Route]:
    """Domain -> route; anything else goes ``smtp:<domain>``."""

    def route(address: str) -> Route:
        domain = address.rpartition("@")[2].lower()
        return table.get(domain, Route("smtp", domain))

    return route


def env(*rcpts: str | Recipient, sender: str = "alice@example.com") -> Envelope:
    return Envelope(sender, tuple(r if isinstance(r, Recipient) else Recipient(r) for r in rcpts))


def notify(address: str, *flags: Notify, orcpt: str | None = None) -> Recipient:
    value = Notify.NEVER
    for f in flags:
        value |= f
    return Recipient(address, value, orcpt)


@dataclass
class Harness:
    """A real store in ``tmp``, a Scheduler with fake agents, all on one ManualClock."""

    tmp: Path
    agents: dict[str, DeliveryAgent] = field(default_factory=dict)
    routes: dict[str, Route] = field(default_factory=dict)
    settings: SchedulerSettings = field(default_factory=SchedulerSettings)
    clock: ManualClock = field(default_factory=ManualClock)
    notifier: FakeNotifier = field(default_factory=FakeNotifier)
    store: SQLiteStore | None = None
    sched: Scheduler | None = None

    async def open(self) -> Harness:
        self.store = SQLiteStore(self.tmp, clock=self.clock)
        await self.store.open()
        return self

    def scheduler(self, **settings: Any) -> Scheduler:
        import dataclasses
        import random

        assert self.store is not None
        if settings:
            self.settings = dataclasses.replace(self.settings, **settings)
        self.sched = Scheduler(
            self.store,
            self.agents,
            table_router(self.routes),
            self.notifier,
            self.settings,
            self.clock,
            sleep=self.clock.sleep,
            rng=random.Random(7),
        )
        self.sched.start()
        return self.sched

    async def put(
        self, envelope: Envelope, body: bytes = b"Subject: t\r\n\r\nhi\r\n"
    ) -> QueuedMessage:
        assert self.store is not None
        w = self.store.new_message()
        w.write(body)
        return await self.store.commit(w, envelope)

    async def send(self, envelope: Envelope) -> QueuedMessage:
        m = await self.put(envelope)
        assert self.sched is not None
        self.sched.submit(m)
        return m

    async def idle(self) -> None:
        assert self.sched is not None
        await asyncio.wait_for(self.sched.wait_idle(), 5)

    async def later(self, seconds: float) -> None:
        """Advance the clock and let everything that came due run."""
        self.clock.advance(seconds)
        for _ in range(3):  # let the timer task wake before asking whether we are idle
            await asyncio.sleep(0)
        await self.idle()

    async def close(self) -> None:
        if self.sched is not None:
            await self.sched.stop(1)
        if self.store is not None:
            await self.store.close()
