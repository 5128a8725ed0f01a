"""Post-queue hooks: the scheduler tells its ``DeliveryEvents`` (the policy chain in the
daemon) about each committed message and each recorded recipient outcome."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from kittiwake.delivery.api import Outcome, QueuedMessage, RecipientStatus
from kittiwake.policy import PolicyChain
from kittiwake.queue.api import DeliveryEvents
from kittiwake.queue.scheduler import Scheduler
from tests.unit.test_scheduler_fakes import BUSY, NO_USER, OK, FakeAgent, Harness, env, table_router


class Recorder:
    """A DeliveryEvents that records (event, queue id, address or status)."""

    def __init__(self, *, explode: bool = False) -> None:
        self.seen: list[tuple[str, str, str]] = []
        self.explode = explode

    def queued(self, message: QueuedMessage) -> None:
        self.seen.append(("queued", message.queue_id, message.envelope.sender))
        if self.explode:
            raise RuntimeError("handler bug (injected)")

    def _outcome(self, kind: str, message: QueuedMessage, outcome: Outcome) -> None:
        address = message.recipients[outcome.index].address
        self.seen.append((kind, message.queue_id, address))
        if self.explode:
            raise RuntimeError("handler bug (injected)")

    def delivered(self, message: QueuedMessage, outcome: Outcome) -> None:
        self._outcome("delivered", message, outcome)

    def deferred(self, message: QueuedMessage, outcome: Outcome) -> None:
        self._outcome("deferred", message, outcome)

    def bounced(self, message: QueuedMessage, outcome: Outcome) -> None:
        self._outcome("bounced", message, outcome)


def by_address(address: str, n: int) -> tuple[RecipientStatus, object]:
    if address.startswith("ok"):
        return RecipientStatus.DELIVERED, OK
    if address.startswith("busy"):
        return RecipientStatus.DEFERRED, BUSY
    return RecipientStatus.BOUNCED, NO_USER


@pytest.fixture
async def h(tmp_path: Path):
    harness = await Harness(tmp_path).open()
    yield harness
    await harness.close()


def scheduler(h: Harness, events: DeliveryEvents) -> Scheduler:
    assert h.store is not None
    h.sched = Scheduler(
        h.store,
        h.agents,
        table_router(h.routes),
        h.notifier,
        h.settings,
        h.clock,
        sleep=h.clock.sleep,
        rng=random.Random(7),
        events=events,
    )
    h.sched.start()
    return h.sched


@pytest.mark.parametrize("explode", [False, True])
async def test_events_per_message_and_outcome(h: Harness, explode: bool) -> None:
    h.agents["smtp"] = FakeAgent("smtp", by_address)  # type: ignore[arg-type]
    events = Recorder(explode=explode)
    scheduler(h, events)
    m = await h.send(env("ok@example.org", "busy@example.net", "gone@example.com"))
    await h.idle()
    qid = m.queue_id
    assert events.seen[0] == ("queued", qid, "alice@example.com")
    assert sorted(events.seen[1:]) == [
        ("bounced", qid, "gone@example.com"),
        ("deferred", qid, "busy@example.net"),
        ("delivered", qid, "ok@example.org"),
    ]
    # A handler that raises changes nothing in the queue: the bounce notice still went out.
    assert h.notifier.kinds()


async def test_policy_chain_hears_the_events(h: Harness) -> None:
    """The real wiring: a PolicyChain is a DeliveryEvents; its checks' stages run as
    fire-and-forget tasks, awaited by ``drain()`` (as at shutdown)."""
    heard: list[tuple[str, str]] = []

    class Watcher:
        name = "watcher"

        async def queued(self, message: QueuedMessage) -> None:
            heard.append(("queued", message.queue_id))

        async def delivered(self, message: QueuedMessage, outcome: Outcome) -> None:
            heard.append(("delivered", message.recipients[outcome.index].address))

    chain = PolicyChain([Watcher()])
    h.agents["smtp"] = FakeAgent("smtp")
    scheduler(h, chain)
    m = await h.send(env("ok@example.org"))
    await h.idle()
    await chain.drain()
    assert heard == [("queued", m.queue_id), ("delivered", "ok@example.org")]
