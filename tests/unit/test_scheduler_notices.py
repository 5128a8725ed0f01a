"""Scheduler notices: expiry into a bounce, delay warnings, NOTIFY, success/relayed
notices, and the crash-safety of owed notices (real store, fake agents and notifier)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from kittiwake.delivery.api import QueuedMessage, RecipientStatus, Route
from kittiwake.envelope import Envelope, Notify, Recipient, Reply
from kittiwake.queue.api import DsnKind, DsnRecipient
from kittiwake.queue.sqlite import SQLiteStore
from tests.unit.test_scheduler_fakes import (
    BUSY,
    NO_USER,
    OK,
    FakeAgent,
    FakeNotifier,
    Harness,
    env,
    notify,
)

HOUR = 3600.0
DAY = 86400.0


@pytest.fixture
async def h(tmp_path: Path):
    harness = await Harness(tmp_path).open()
    yield harness
    await harness.close()


def always(status: RecipientStatus, reply: Reply):
    return lambda address, n: (status, reply)


async def run_for(h: Harness, seconds: float, step: float = 600.0) -> None:
    """Let ``seconds`` of queue time pass in ``step``s, letting due work run each time."""
    t = 0.0
    while t < seconds:
        await h.later(step)
        t += step


async def test_expiry_turns_a_deferral_into_a_bounce_with_a_dsn(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kittiwake")
    h.agents["smtp"] = FakeAgent("smtp", always(RecipientStatus.DEFERRED, BUSY))
    h.scheduler(max_lifetime=1 * DAY, delay_warning=0)
    assert h.store is not None
    m = await h.send(env(Recipient("bob@example.org", Notify.FAILURE, "rfc822;Bob@Example.org")))
    received = m.received_at
    await h.idle()
    await run_for(h, 1 * DAY + 2 * HOUR, step=HOUR)
    assert await h.store.get(m.queue_id) is None  # bounced, notice sent, removed
    (sent,) = h.notifier.sent
    assert sent.kind is DsnKind.FAILURE and sent.queue_id == m.queue_id
    (d,) = sent.recipients
    assert d.address == "bob@example.org" and d.original == "rfc822;Bob@Example.org"
    assert (d.action, d.status) == ("failed", "5.4.7")
    assert d.diagnostic == "451 4.3.0 busy"  # the last remote reply, not our own words
    assert d.remote_mta == "mx.example.org[127.0.0.2]:25"
    assert d.last_attempt is not None and d.last_attempt >= received + DAY
    assert d.will_retry_until is None
    lines = [r.getMessage() for r in caplog.records]
    assert any(
        "status=bounced (554 5.4.7 delivery time expired; last error: 451" in x for x in lines
    )
    assert f"{m.queue_id}: sender non-delivery notification: none" in lines
    assert f"{m.queue_id}: removed" in lines


async def test_delay_warning_is_sent_once(h: Harness) -> None:
    h.agents["smtp"] = FakeAgent("smtp", always(RecipientStatus.DEFERRED, BUSY))
    h.scheduler(delay_warning=4 * HOUR, max_lifetime=5 * DAY)
    m = await h.send(env("nonotify@x.example", notify("delay@x.example", Notify.DELAY)))
    await h.idle()
    await run_for(h, 3.5 * HOUR)
    assert h.notifier.sent == []
    await run_for(h, 1 * HOUR)
    assert h.notifier.kinds() == [DsnKind.DELAY]
    (sent,) = h.notifier.sent
    assert sorted(d.address for d in sent.recipients) == ["delay@x.example", "nonotify@x.example"]
    d = sent.recipients[0]
    assert (d.action, d.status, d.diagnostic) == ("delayed", "4.3.0", "451 4.3.0 busy")
    assert d.will_retry_until == m.received_at + 5 * DAY
    await run_for(h, 12 * HOUR, step=HOUR)
    assert h.notifier.kinds() == [DsnKind.DELAY]  # once, not at every retry
    assert h.store is not None
    got = await h.store.get(m.queue_id)
    assert got is not None and all(r.delay_notified for r in got.recipients)


async def test_delay_warning_comes_on_time_between_retries(h: Harness) -> None:
    # Retries every ~hour; the warning is due at 4 h sharp, not at the next retry.
    h.agents["smtp"] = FakeAgent("smtp", always(RecipientStatus.DEFERRED, BUSY))
    h.scheduler(delay_warning=4 * HOUR, retry_first=3 * HOUR, retry_max=3 * HOUR)
    await h.send(env("a@x.example"))
    await h.idle()
    await h.later(4 * HOUR - 1)
    assert h.notifier.sent == []
    await h.later(1)
    assert h.notifier.kinds() == [DsnKind.DELAY]


@pytest.mark.parametrize(
    ("recipient", "expected"),
    [
        (Recipient("a@x.example", Notify.NEVER), []),
        (notify("a@x.example", Notify.SUCCESS), []),
        (notify("a@x.example", Notify.FAILURE), [DsnKind.FAILURE]),
        (notify("a@x.example", Notify.DELAY), [DsnKind.DELAY]),
        (Recipient("a@x.example"), [DsnKind.DELAY, DsnKind.FAILURE]),
    ],
)
async def test_notify_decides_which_notices(
    h: Harness, recipient: Recipient, expected: list[DsnKind]
) -> None:
    h.agents["smtp"] = FakeAgent("smtp", always(RecipientStatus.DEFERRED, BUSY))
    h.scheduler(delay_warning=1 * HOUR, max_lifetime=3 * HOUR)
    assert h.store is not None
    m = await h.send(env(recipient))
    await h.idle()
    await run_for(h, 5 * HOUR)
    assert h.notifier.kinds() == expected
    assert await h.store.get(m.queue_id) is None  # gone either way


async def test_bounces_are_batched_per_message(h: Harness) -> None:
    h.agents["smtp"] = FakeAgent("smtp", always(RecipientStatus.BOUNCED, NO_USER))
    h.scheduler()
    m = await h.send(env("a@one.example", "b@one.example", "c@two.example"))
    await h.idle()
    (sent,) = h.notifier.sent
    assert sent.queue_id == m.queue_id
    assert sorted(d.address for d in sent.recipients) == [
        "a@one.example",
        "b@one.example",
        "c@two.example",
    ]
    assert {(d.action, d.status, d.diagnostic) for d in sent.recipients} == {
        ("failed", "5.1.1", "550 5.1.1 no such user")
    }


@pytest.mark.parametrize(
    ("route", "relayed", "peer_dsn", "expected"),
    [
        (Route("local"), False, False, "delivered"),
        (Route("smtp", "x.example"), True, False, "relayed"),
        (Route("smtp", "x.example"), True, True, None),  # the peer took the duty
    ],
)
async def test_success_notices(
    h: Harness, route: Route, relayed: bool, peer_dsn: bool, expected: str | None
) -> None:
    h.routes["x.example"] = route
    h.agents[route.transport] = FakeAgent(route.transport, relayed=relayed, peer_dsn=peer_dsn)
    h.scheduler()
    await h.send(env(notify("s@x.example", Notify.SUCCESS), "plain@x.example"))
    await h.idle()
    if expected is None:
        assert h.notifier.sent == []
        return
    (sent,) = h.notifier.sent
    assert sent.kind is DsnKind.SUCCESS
    (d,) = sent.recipients  # only the one that asked
    assert (d.address, d.action, d.status) == ("s@x.example", expected, "2.0.0")


async def test_null_sender_gets_failures_only(h: Harness) -> None:
    script = lambda a, n: (  # noqa: E731
        (RecipientStatus.BOUNCED, NO_USER)
        if a.startswith("no")
        else (RecipientStatus.DEFERRED, BUSY)
    )
    h.agents["smtp"] = FakeAgent("smtp", script)
    h.scheduler(delay_warning=1 * HOUR)
    await h.send(
        env(notify("s@x.example", Notify.SUCCESS, Notify.DELAY), "no@x.example", sender="")
    )
    await h.idle()
    await run_for(h, 3 * HOUR)
    assert h.notifier.kinds() == [DsnKind.FAILURE]  # the Notifier tells the postmaster


async def test_notifier_failure_keeps_the_debt_and_retries(h: Harness) -> None:
    h.agents["smtp"] = FakeAgent("smtp", always(RecipientStatus.BOUNCED, NO_USER))
    h.scheduler(retry_first=300)
    assert h.store is not None
    h.notifier.fail = True
    m = await h.send(env("a@x.example"))
    await h.idle()
    got = await h.store.get(m.queue_id)
    assert got is not None and got.recipients[0].notice == "failed"  # kept: owed
    assert got.recipients[0].status is RecipientStatus.BOUNCED
    h.notifier.fail = False
    await h.later(301)
    assert h.notifier.kinds() == [DsnKind.FAILURE]
    assert await h.store.get(m.queue_id) is None


async def test_owed_notice_survives_a_crash(tmp_path: Path) -> None:
    first = await Harness(tmp_path).open()
    first.agents["smtp"] = FakeAgent("smtp", always(RecipientStatus.BOUNCED, NO_USER))
    first.scheduler()
    first.notifier.fail = True  # "crash" between the record and the notice
    m = await first.send(env("a@x.example", "b@x.example"))
    await first.idle()
    await first.close()

    again = Harness(tmp_path, clock=first.clock)
    await again.open()
    agent = again.agents["smtp"] = FakeAgent("smtp")
    sched = again.scheduler()
    try:
        assert await sched.recover() == 1
        await again.idle()
        assert agent.calls == []  # nothing re-delivered: both recipients were final
        (sent,) = again.notifier.sent
        assert sent.queue_id == m.queue_id and len(sent.recipients) == 2
        assert again.store is not None and await again.store.get(m.queue_id) is None
    finally:
        await again.close()


async def test_a_notice_the_notifier_queues_is_delivered_at_once(h: Harness) -> None:
    class Queueing(FakeNotifier):
        """Commits a real bounce message, like cleanup would, and returns its id."""

        def __init__(self, store: SQLiteStore) -> None:
            super().__init__()
            self.store = store

        async def send(
            self, kind: DsnKind, message: QueuedMessage, recipients: Sequence[DsnRecipient]
        ) -> str | None:
            await super().send(kind, message, recipients)
            w = self.store.new_message()
            w.write(b"Subject: Undelivered Mail\r\n\r\nsorry\r\n")
            dsn = await self.store.commit(
                w, Envelope("", (Recipient(message.envelope.sender),), internal="bounce")
            )
            return dsn.queue_id

    assert h.store is not None
    h.notifier = Queueing(h.store)
    script = lambda a, n: (  # noqa: E731
        (RecipientStatus.BOUNCED, NO_USER)
        if a.startswith("no")
        else (RecipientStatus.DELIVERED, OK)
    )
    agent = h.agents["smtp"] = FakeAgent("smtp", script)
    h.scheduler()
    await h.send(env("no@x.example", sender="alice@example.com"))
    await h.idle()  # no submit() for the bounce, no clock advance: still delivered
    assert agent.delivered_to() == ["no@x.example", "alice@example.com"]
    assert agent.calls[1].body.startswith(b"Subject: Undelivered Mail")
