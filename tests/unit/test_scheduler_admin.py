"""Scheduler admin operations (hold, release, delete, retry, bounce, flush), crash
recovery, stop and the safety sweep — real store, fake agents, manual clock."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from kittiwake.delivery.api import Outcome, RecipientStatus
from kittiwake.envelope import Notify, Recipient
from kittiwake.queue.api import DsnKind
from tests.unit.test_scheduler_fakes import BUSY, NO_USER, OK, FakeAgent, Harness, env


@pytest.fixture
async def h(tmp_path: Path):
    harness = await Harness(tmp_path).open()
    yield harness
    await harness.close()


def deferring(h: Harness) -> FakeAgent:
    """Defers everything until ``agent.script`` is swapped."""
    agent = h.agents["smtp"] = FakeAgent("smtp", lambda a, n: (RecipientStatus.DEFERRED, BUSY))
    return agent


def deliver_all(agent: FakeAgent) -> None:
    agent.script = lambda a, n: (RecipientStatus.DELIVERED, OK)


async def test_hold_and_release(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kittiwake")
    agent = deferring(h)
    sched = h.scheduler()
    m = await h.send(env("a@x.example"))
    await h.idle()
    deliver_all(agent)
    assert await sched.hold(m.queue_id)
    await h.later(10_000)  # its retry time passes...
    assert await sched.flush() == 0  # ...and a flush: held mail stays put
    await h.idle()
    assert len(agent.calls) == 1
    (listed,) = await sched.list_queue()
    assert listed.held and listed.hold_reason == "held by the administrator"
    assert f"{m.queue_id}: held" in [r.getMessage() for r in caplog.records]
    assert await sched.release(m.queue_id)
    await h.idle()
    assert len(agent.calls) == 2
    assert await sched.show(m.queue_id) is None
    assert not await sched.hold("0000000000000000")  # unknown ids are refused, not errors
    assert not await sched.release("../../etc/passwd")


async def test_hold_while_in_flight_records_but_does_not_reschedule(h: Harness) -> None:
    agent = deferring(h)
    agent.gate = asyncio.Event()
    sched = h.scheduler()
    assert h.store is not None
    m = await h.send(env("a@x.example"))
    for _ in range(10):
        await asyncio.sleep(0)
    assert await sched.hold(m.queue_id)
    agent.gate.set()
    await h.idle()
    got = await h.store.get(m.queue_id)
    assert got is not None and got.held
    assert got.recipients[0].attempts == 1  # the running attempt was recorded
    await h.later(100_000)
    assert len(agent.calls) == 1


async def test_delete(h: Harness) -> None:
    agent = deferring(h)
    sched = h.scheduler()
    assert h.store is not None
    big = b"x" * 200_000  # a spool file, not an inline body
    m = await h.put(env("a@x.example"), big)
    sched.submit(m)
    await h.idle()
    assert (h.store.spool_dir / m.queue_id).exists()
    assert await sched.delete(m.queue_id)
    assert await h.store.get(m.queue_id) is None
    assert not (h.store.spool_dir / m.queue_id).exists()
    await h.later(100_000)
    assert len(agent.calls) == 1  # its timer did nothing
    assert not await sched.delete(m.queue_id)


async def test_delete_while_in_flight_drops_the_result(h: Harness) -> None:
    agent = h.agents["smtp"] = FakeAgent("smtp")
    agent.gate = asyncio.Event()
    sched = h.scheduler()
    assert h.store is not None
    m = await h.send(env("a@x.example"))
    for _ in range(10):
        await asyncio.sleep(0)
    assert await sched.delete(m.queue_id)
    agent.gate.set()
    await h.idle()
    assert await h.store.get(m.queue_id) is None
    assert await h.store.all_messages() == []


async def test_retry_now(h: Harness) -> None:
    agent = deferring(h)
    sched = h.scheduler()
    m = await h.send(env("a@x.example"))
    await h.idle()
    deliver_all(agent)
    assert await sched.retry(m.queue_id)
    await h.idle()  # no clock advance
    assert len(agent.calls) == 2 and await sched.show(m.queue_id) is None
    assert not await sched.retry(m.queue_id)


async def test_bounce_fails_every_live_recipient_with_a_dsn(h: Harness) -> None:
    script = lambda a, n: (  # noqa: E731
        (RecipientStatus.DELIVERED, OK) if a.startswith("ok") else (RecipientStatus.DEFERRED, BUSY)
    )
    h.agents["smtp"] = FakeAgent("smtp", script)
    sched = h.scheduler()
    m = await h.send(env("ok@x.example", "a@x.example", Recipient("b@x.example", Notify.NEVER)))
    await h.idle()
    assert await sched.hold(m.queue_id)  # held mail can be bounced too
    assert await sched.bounce(m.queue_id)
    await h.idle()
    (sent,) = h.notifier.sent
    assert sent.kind is DsnKind.FAILURE
    (d,) = sent.recipients  # b said NEVER; ok was delivered
    assert (d.address, d.status, d.diagnostic) == (
        "a@x.example",
        "5.0.0",
        "550 5.0.0 bounced by the administrator",
    )
    assert await sched.show(m.queue_id) is None
    assert not await sched.bounce(m.queue_id)


async def test_flush_by_domain(h: Harness) -> None:
    agent = deferring(h)
    sched = h.scheduler()
    a = await h.send(env("u@a.example"))
    await h.send(env("u@b.example"))
    c = await h.send(env("u@mx.c.example"))
    await h.idle()
    deliver_all(agent)
    assert await sched.flush("A.example") == 1  # ETRN domains are case-insensitive
    await h.idle()
    assert [x.queue_id for x in agent.calls[3:]] == [a.queue_id]
    assert await sched.flush(".c.example") == 1  # subdomains
    await h.idle()
    assert agent.calls[-1].queue_id == c.queue_id
    assert await sched.flush() == 1
    await h.idle()
    assert await sched.list_queue() == []


async def test_flush_forgets_dead_destinations(h: Harness) -> None:
    agent = h.agents["smtp"] = FakeAgent(
        "smtp", lambda a, n: (RecipientStatus.DEFERRED, BUSY), site_failure=True
    )
    sched = h.scheduler(dead_destination_ttl=3600)
    await h.send(env("a@down.example"))
    await h.idle()
    deliver_all(agent)
    assert await sched.flush("down.example") == 1  # ETRN: the site says it is back
    await h.idle()
    assert len(agent.calls) == 2 and await sched.list_queue() == []


async def test_retry_overrides_the_dead_destination_cache(h: Harness) -> None:
    agent = h.agents["smtp"] = FakeAgent(
        "smtp", lambda a, n: (RecipientStatus.DEFERRED, BUSY), site_failure=True
    )
    sched = h.scheduler(dead_destination_ttl=3600)
    m = await h.send(env("a@down.example"))
    await h.idle()
    deliver_all(agent)
    assert await sched.retry(m.queue_id)  # the operator says "now": really try
    await h.idle()
    assert len(agent.calls) == 2 and await sched.list_queue() == []


async def test_recovery_delivers_only_unfinished_recipients(tmp_path: Path) -> None:
    first = await Harness(tmp_path).open()
    assert first.store is not None
    m = await first.put(
        env("done@x.example", Recipient("gone@x.example", Notify.NEVER), "todo@x.example")
    )
    later = await first.put(env("later@y.example"))
    when = first.clock() + 3000
    # A previous run recorded two outcomes, then died before the third.
    await first.store.record(
        m.queue_id,
        [
            Outcome(0, RecipientStatus.DELIVERED, OK),
            Outcome(1, RecipientStatus.BOUNCED, NO_USER),
        ],
    )
    await first.store.record(
        later.queue_id, [Outcome(0, RecipientStatus.DEFERRED, BUSY, next_attempt=when)]
    )
    await first.close()

    again = Harness(tmp_path, clock=first.clock)
    await again.open()
    agent = again.agents["smtp"] = FakeAgent("smtp")
    sched = again.scheduler()
    try:
        assert await sched.recover() == 2
        await again.idle()
        assert agent.delivered_to() == ["todo@x.example"]  # not done@, not gone@
        assert again.notifier.sent == []
        await again.later(2999)
        assert len(agent.calls) == 1
        await again.later(1)  # the deferred one comes back at its time
        assert agent.delivered_to() == ["todo@x.example", "later@y.example"]
        assert await sched.list_queue() == []
    finally:
        await again.close()


async def test_stop_leaves_undelivered_mail_in_the_store(h: Harness) -> None:
    agent = h.agents["smtp"] = FakeAgent("smtp")
    agent.gate = asyncio.Event()
    sched = h.scheduler(destination_concurrency=1, initial_destination_concurrency=1)
    assert h.store is not None
    msgs = [await h.send(env("a@x.example")) for _ in range(3)]
    for _ in range(10):
        await asyncio.sleep(0)
    await sched.stop(timeout=0.05)  # the one in progress is cancelled
    assert {x.queue_id for x in await h.store.pending()} == {x.queue_id for x in msgs}
    sched.submit(msgs[0])  # ignored once stopped
    await sched.wait_idle()  # returns at once when stopped


async def test_sweep_finds_mail_that_was_never_submitted(h: Harness) -> None:
    agent = h.agents["smtp"] = FakeAgent("smtp")
    h.scheduler(sweep_interval=300)
    m = await h.put(env("orphan@x.example"))  # committed, but no submit()
    await h.idle()
    assert agent.calls == []
    await h.later(301)
    assert [c.queue_id for c in agent.calls] == [m.queue_id]


async def test_store_failure_while_recording_retries_later(h: Harness) -> None:
    agent = h.agents["smtp"] = FakeAgent("smtp")
    sched = h.scheduler(retry_first=300)
    assert h.store is not None
    store = h.store
    real_record = store.record
    failures = [1]

    async def flaky_record(*args, **kwargs):
        if failures:
            failures.pop()
            raise OSError("disk full (injected)")
        return await real_record(*args, **kwargs)

    store.record = flaky_record  # type: ignore[method-assign]
    m = await h.send(env("a@x.example"))
    await h.idle()
    assert await store.get(m.queue_id) is not None  # not recorded: still live
    await h.later(301)
    assert len(agent.calls) == 2 and await sched.show(m.queue_id) is None


async def test_summary(h: Harness) -> None:
    deferring(h)
    sched = h.scheduler()
    await h.send(env("a@x.example", "b@x.example"))
    await h.send(env("c@y.example"))
    await h.idle()
    s = await sched.summary()
    assert (s.messages, s.recipients, s.held) == (2, 3, 0)
    assert [(d.domain, d.recipients, d.messages, d.deferred) for d in s.domains] == [
        ("x.example", 2, 1, 2),
        ("y.example", 1, 1, 1),
    ]
