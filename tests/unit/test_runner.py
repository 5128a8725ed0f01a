"""The 0.1 delivery runner with a real store, a real Maildir agent and small scripted agents."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from kittiwake.delivery.api import (
    BodyOpener,
    DeliveryAgent,
    Outcome,
    QueuedMessage,
    QueuedRecipient,
    RecipientStatus,
)
from kittiwake.delivery.local import LocalMailboxes
from kittiwake.delivery.maildir import MaildirAgent
from kittiwake.envelope import Envelope, Recipient, Reply
from kittiwake.queue.runner import DeliveryRunner
from kittiwake.queue.sqlite import SQLiteStore

ENV = Envelope("alice@example.com", (Recipient("bob@example.org"), Recipient("carol@example.org")))


async def put(store: SQLiteStore, body: bytes = b"Subject: t\r\n\r\nhi\r\n") -> QueuedMessage:
    w = store.new_message()
    w.write(body)
    return await store.commit(w, ENV)


def maildir_files(root: Path, user: str) -> list[bytes]:
    new = root / "example.org" / user / "new"
    return [(new / n).read_bytes() for n in sorted(os.listdir(new))] if new.is_dir() else []


class Flaky:
    """Defers every recipient ``failures`` times, then delivers (reading the body)."""

    name = "flaky"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[list[int]] = []
        self.bodies: list[bytes] = []

    async def deliver(
        self, message: QueuedMessage, recipients: Sequence[QueuedRecipient], open_body: BodyOpener
    ) -> list[Outcome]:
        self.calls.append([r.index for r in recipients])
        with open_body() as f:
            self.bodies.append(f.read())
        if len(self.calls) <= self.failures:
            return [
                Outcome(r.index, RecipientStatus.DEFERRED, Reply(451, "4.4.1", "busy"))
                for r in recipients
            ]
        return [
            Outcome(r.index, RecipientStatus.DELIVERED, Reply(250, "2.0.0", "ok"))
            for r in recipients
        ]


class Broken:
    name = "broken"

    async def deliver(
        self, message: QueuedMessage, recipients: Sequence[QueuedRecipient], open_body: BodyOpener
    ) -> list[Outcome]:
        raise RuntimeError("agent bug")


@pytest.fixture
async def store(tmp_path: Path):
    s = SQLiteStore(tmp_path / "data")
    await s.open()
    yield s
    await s.close()


def always(agent: DeliveryAgent):
    return lambda rcpt, msg: agent


async def test_delivers_at_once_and_removes(
    tmp_path: Path, store: SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "mail"
    agent = MaildirAgent(LocalMailboxes(root, ["example.org"], [], "postmaster"), "mx")
    runner = DeliveryRunner(store, always(agent))
    runner.start()
    caplog.set_level(logging.INFO, logger="kittiwake")
    try:
        m = await put(store)
        runner.submit(m)
        await asyncio.wait_for(runner.wait_idle(), 5)
    finally:
        await runner.stop()
    assert await store.get(m.queue_id) is None
    (bob,) = maildir_files(root, "bob")
    assert bob.startswith(b"Return-Path: <alice@example.com>\nDelivered-To: bob@example.org\n")
    assert len(maildir_files(root, "carol")) == 1
    lines = [r.getMessage() for r in caplog.records]
    assert any(
        line.startswith(f"{m.queue_id}: to=<bob@example.org>, relay=maildir, delay=")
        and line.endswith("tries=1, status=delivered (250 2.0.0 delivered to maildir)")
        for line in lines
    ), lines
    assert f"{m.queue_id}: removed" in lines


async def test_recovery_delivers_what_a_previous_run_left(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = SQLiteStore(data)
    await first.open()
    queued = [await put(first, b"n%d\r\n" % i) for i in range(5)]
    await first.close()  # "crash": nobody delivered them

    store = SQLiteStore(data)
    await store.open()
    agent = Flaky(0)
    runner = DeliveryRunner(store, always(agent), concurrency=2)
    runner.start()
    try:
        assert await runner.recover() == 5
        await asyncio.wait_for(runner.wait_idle(), 5)
        assert await store.pending() == []
        assert sorted(agent.bodies) == sorted(b"n%d\r\n" % i for i in range(5))
        assert len(agent.calls) == len(queued)
    finally:
        await runner.stop()
        await store.close()


async def test_deferred_recipients_retry_with_backoff(store: SQLiteStore) -> None:
    agent = Flaky(2)
    runner = DeliveryRunner(store, always(agent), retry_base=0.05, retry_max=0.08)
    runner.start()
    try:
        m = await put(store)
        runner.submit(m)
        await asyncio.wait_for(runner.wait_idle(), 5)
        after_one = await store.get(m.queue_id)
        assert after_one is not None
        assert [r.status for r in after_one.recipients] == [RecipientStatus.DEFERRED] * 2
        assert after_one.recipients[0].last_reply == "451 4.4.1 busy"
        assert runner.next_retry(m.queue_id) is not None
        for _ in range(100):
            if await store.get(m.queue_id) is None:
                break
            await asyncio.sleep(0.02)
        assert await store.get(m.queue_id) is None
        assert agent.calls == [[0, 1], [0, 1], [0, 1]]
    finally:
        await runner.stop()


async def test_expired_deferrals_bounce(
    store: SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kittiwake.delivery")
    runner = DeliveryRunner(store, always(Flaky(99)), max_age=0.0)
    runner.start()
    try:
        m = await put(store)
        runner.submit(m)
        await asyncio.wait_for(runner.wait_idle(), 5)
    finally:
        await runner.stop()
    assert await store.get(m.queue_id) is None
    assert any(
        "status=bounced (554 5.4.7 delivery time expired" in r.getMessage() for r in caplog.records
    )


async def test_no_agent_or_broken_agent_defers(store: SQLiteStore) -> None:
    broken = Broken()
    runner = DeliveryRunner(
        store, lambda rcpt, msg: broken if rcpt.index == 0 else None, retry_base=3600
    )
    runner.start()
    try:
        m = await put(store)
        runner.submit(m)
        await asyncio.wait_for(runner.wait_idle(), 5)
        got = await store.get(m.queue_id)
        assert got is not None
        r0, r1 = got.recipients
        assert (r0.status, r0.last_reply) == (
            RecipientStatus.DEFERRED,
            "451 4.3.0 delivery agent failed",
        )
        assert r1.last_reply == "451 4.3.5 no delivery agent for this destination"
        assert r0.next_attempt > got.received_at + 3000  # backoff from retry_base
        # Recovery of a message whose recipients are not due yet only sets a timer.
        again = DeliveryRunner(store, always(Flaky(0)))
        again.start()
        assert await again.recover() == 1
        await asyncio.wait_for(again.wait_idle(), 5)
        assert again.attempts == 0 and again.next_retry(m.queue_id) is not None
        await again.stop()
    finally:
        await runner.stop()


async def test_stop_leaves_undelivered_mail_in_the_store(store: SQLiteStore) -> None:
    gate = asyncio.Event()

    class Slow:
        name = "slow"

        async def deliver(self, message, recipients, open_body):
            await gate.wait()
            return [
                Outcome(r.index, RecipientStatus.DELIVERED, Reply(250, "2.0.0", "ok"))
                for r in recipients
            ]

    runner = DeliveryRunner(store, always(Slow()), concurrency=1)
    runner.start()
    msgs = [await put(store) for _ in range(3)]
    for m in msgs:
        runner.submit(m)
    await asyncio.sleep(0.05)
    await runner.stop(timeout=0.1)  # the one in progress is cancelled, the rest never began
    assert {m.queue_id for m in await store.pending()} == {m.queue_id for m in msgs}
    runner.submit(msgs[0])  # ignored once stopped


async def test_sweep_finds_mail_that_was_never_submitted(store: SQLiteStore) -> None:
    agent = Flaky(0)
    runner = DeliveryRunner(store, always(agent), sweep_interval=0.05)
    runner.start()
    try:
        w = store.new_message()
        w.write(b"orphan\r\n")
        task = asyncio.create_task(store.commit(w, ENV))
        await asyncio.sleep(0)  # the commit is queued for the next batch...
        task.cancel()  # ...and its session goes away: no 250, no submit()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(100):
            if agent.bodies:
                break
            await asyncio.sleep(0.02)
        await asyncio.wait_for(runner.wait_idle(), 5)
    finally:
        await runner.stop()
    assert agent.bodies == [b"orphan\r\n"]  # committed all the same, then swept up once
    assert await store.get(w.queue_id) is None
