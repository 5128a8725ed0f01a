"""The scheduler with a real SQLite store, fake agents and a manual clock: scheduling,
backoff, concurrency, fairness, the dead-destination cache, routes and transports."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from kittiwake.delivery.api import RecipientStatus, Route
from kittiwake.envelope import Reply
from kittiwake.queue.sched_policy import SchedulerSettings, backoff
from tests.unit.test_scheduler_fakes import (
    BUSY,
    NO_USER,
    OK,
    REFUSED,
    FakeAgent,
    Harness,
    env,
)


@pytest.fixture
async def h(tmp_path: Path):
    harness = await Harness(tmp_path).open()
    yield harness
    await harness.close()


def always(status: RecipientStatus, reply: Reply):
    return lambda address, n: (status, reply)


def fail_times(k: int):
    """Deferred ``k`` times per address, then delivered."""
    return lambda address, n: (
        (RecipientStatus.DEFERRED, BUSY) if n <= k else (RecipientStatus.DELIVERED, OK)
    )


async def test_new_mail_is_delivered_at_once_and_removed(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kittiwake")
    agent = h.agents["smtp"] = FakeAgent("smtp")
    sched = h.scheduler()
    m = await h.send(env("bob@example.org", "carol@example.org", "dan@example.net"))
    await h.idle()  # no clock advance: nothing waited for a poll
    assert sorted(agent.delivered_to()) == [
        "bob@example.org",
        "carol@example.org",
        "dan@example.net",
    ]
    # Grouped by route: one call per destination, each given its route.
    routes = sorted((c.route.key if c.route else "", len(c.addresses)) for c in agent.calls)
    assert routes == [("smtp:example.net", 1), ("smtp:example.org", 2)]
    assert agent.calls[0].body == b"Subject: t\r\n\r\nhi\r\n"
    assert h.store is not None and await h.store.get(m.queue_id) is None
    lines = [r.getMessage() for r in caplog.records]
    assert f"{m.queue_id}: removed" in lines
    assert any(
        line.startswith(f"{m.queue_id}: to=<bob@example.org>, relay=mx.example.org[127.0.0.2]:25,")
        and "tries=1, dsn=2.0.0, status=delivered (250 2.0.0 ok)" in line
        for line in lines
    ), lines
    assert sched.attempts == 2


def test_backoff_grows_doubles_and_is_capped_with_bounded_jitter() -> None:
    s = SchedulerSettings(retry_first=300, retry_max=3600, retry_jitter=0.2)
    assert backoff(0, s, 0.0) == 300 and backoff(0, s, 0.999) > 240
    assert [backoff(n, s, 0.0) for n in range(6)] == [300, 600, 1200, 2400, 3600, 3600]
    for n in range(12):
        for u in (0.0, 0.5, 0.9999):
            top = min(3600.0, 300 * 2.0**n)
            assert 0.8 * top <= backoff(n, s, u) <= top
    assert backoff(10_000, s, 0.0) == 3600  # no overflow


async def test_deferral_retries_with_backoff_then_succeeds(h: Harness) -> None:
    agent = h.agents["smtp"] = FakeAgent("smtp", fail_times(3))
    h.scheduler()
    assert h.store is not None
    m = await h.send(env("bob@example.org"))
    await h.idle()
    waits = []
    for _ in range(3):
        got = await h.store.get(m.queue_id)
        assert got is not None
        (r,) = got.recipients
        assert r.status is RecipientStatus.DEFERRED and r.last_reply == "451 4.3.0 busy"
        wait = r.next_attempt - h.clock()
        waits.append(wait)
        await h.later(wait - 1)  # not yet
        assert len(agent.calls) == len(waits)
        await h.later(1)
    assert await h.store.get(m.queue_id) is None
    assert len(agent.calls) == 4
    # ~300, ~600, ~1200: each within the jitter band below the doubling value.
    for wait, top in zip(waits, (300, 600, 1200), strict=True):
        assert 0.8 * top <= wait <= top


async def test_agent_next_attempt_overrides_backoff(h: Harness) -> None:
    class Greylisted(FakeAgent):
        async def deliver(self, message, recipients, open_body, route=None):
            out = await super().deliver(message, recipients, open_body, route)
            return [
                o.__class__(o.index, o.status, o.reply, next_attempt=h.clock() + 42) for o in out
            ]

    h.agents["smtp"] = Greylisted("smtp", always(RecipientStatus.DEFERRED, BUSY))
    h.scheduler()
    m = await h.send(env("bob@example.org"))
    await h.idle()
    assert h.store is not None
    got = await h.store.get(m.queue_id)
    assert got is not None and got.recipients[0].next_attempt == h.clock() + 42


async def test_destination_concurrency_is_limited(h: Harness) -> None:
    agent = h.agents["smtp"] = FakeAgent("smtp")
    agent.gate = asyncio.Event()
    h.scheduler(destination_concurrency=3, initial_destination_concurrency=3)
    for i in range(10):
        await h.send(env(f"u{i}@busy.example"))
    await h.send(env("x@other.example"))
    for _ in range(20):
        await asyncio.sleep(0)
    assert agent.running["smtp:busy.example"] == 3  # the limit, not 10
    assert agent.running["smtp:other.example"] == 1  # another destination is not blocked
    agent.gate.set()
    await h.idle()
    assert agent.most["smtp:busy.example"] == 3 and len(agent.calls) == 11


async def test_local_delivery_has_its_own_lower_ceiling(h: Harness) -> None:
    """Maildir deliveries share our disk with the SMTP side's commits: capped lower."""
    agent = h.agents["local"] = FakeAgent("local")
    agent.gate = asyncio.Event()
    h.routes["here.example"] = Route("local")
    h.scheduler(destination_concurrency=20, initial_destination_concurrency=20, local_concurrency=2)
    for i in range(10):
        await h.send(env(f"u{i}@here.example"))
    for _ in range(20):
        await asyncio.sleep(0)
    assert agent.running["local:"] == 2
    agent.gate.set()
    await h.idle()
    assert agent.most["local:"] == 2 and len(agent.calls) == 10


async def test_slow_start_grows_the_window(h: Harness) -> None:
    agent = h.agents["smtp"] = FakeAgent("smtp")
    agent.gate = asyncio.Event()
    h.scheduler(destination_concurrency=10, initial_destination_concurrency=2)
    for i in range(30):
        await h.send(env(f"u{i}@busy.example"))
    for _ in range(20):
        await asyncio.sleep(0)
    assert agent.running["smtp:busy.example"] == 2
    agent.pause = 0.005
    agent.gate.set()
    await h.idle()
    assert agent.most["smtp:busy.example"] > 2  # grew after good deliveries...
    assert agent.most["smtp:busy.example"] <= 10  # ...never past the limit


async def test_new_mail_is_not_starved_by_a_flood_of_deferred_mail(h: Harness) -> None:
    agent = h.agents["smtp"] = FakeAgent("smtp")
    assert h.store is not None
    old = [await h.put(env(f"old{i}@example.org")) for i in range(12)]
    sched = h.scheduler(active_limit=1, destination_concurrency=1)
    assert await sched.recover() == 12  # all due now: the deferred queue
    new = [await h.send(env(f"new{i}@example.org")) for i in range(3)]
    await h.idle()
    order = [c.queue_id for c in agent.calls]
    assert len(order) == 15
    positions = [order.index(m.queue_id) for m in new]
    assert max(positions) <= 6, order  # alternating: new, old, new, old, new ...
    assert order.index(old[-1].queue_id) == 14


async def test_active_set_is_bounded(h: Harness) -> None:
    agent = h.agents["smtp"] = FakeAgent("smtp")
    agent.gate = asyncio.Event()
    sched = h.scheduler(active_limit=4)
    for i in range(10):
        await h.send(env(f"u{i}@d{i}.example"))  # ten destinations: no per-site limit hit
    for _ in range(20):
        await asyncio.sleep(0)
    assert sum(agent.running.values()) == 4
    assert len(sched._active) == 4
    agent.gate.set()
    await h.idle()
    assert len(agent.calls) == 10


async def test_dead_destination_defers_other_mail_without_attempts(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    agent = h.agents["smtp"] = FakeAgent(
        "smtp", always(RecipientStatus.DEFERRED, REFUSED), site_failure=True
    )
    h.scheduler(dead_destination_ttl=60, initial_destination_concurrency=1)
    assert h.store is not None
    first = await h.send(env("a@down.example"))
    await h.idle()
    others = [await h.send(env(f"b{i}@down.example")) for i in range(3)]
    elsewhere = await h.send(env("c@up.example"))
    await h.idle()
    assert [c.queue_id for c in agent.calls] == [first.queue_id, elsewhere.queue_id]
    for m in others:
        got = await h.store.get(m.queue_id)
        assert got is not None
        r = got.recipients[0]
        assert r.status is RecipientStatus.DEFERRED and r.attempts == 1
        assert r.last_reply is not None and "delivery temporarily suspended" in r.last_reply
        assert r.dsn_status == "4.4.1"
    assert any("destination dead" in rec.getMessage() for rec in caplog.records)
    # After the TTL the destination is tried again.
    h.clock.advance(61)
    m = await h.send(env("late@down.example"))
    await h.idle()
    assert agent.calls[-1].queue_id == m.queue_id


async def test_per_recipient_deferral_does_not_kill_the_destination(h: Harness) -> None:
    script = lambda a, n: (  # noqa: E731
        (RecipientStatus.DEFERRED, BUSY)
        if a.startswith("full")
        else (RecipientStatus.DELIVERED, OK)
    )
    agent = h.agents["smtp"] = FakeAgent("smtp", script)
    h.scheduler()
    await h.send(env("full@x.example"))
    await h.idle()
    await h.send(env("ok@x.example"))
    await h.idle()
    assert agent.delivered_to() == ["full@x.example", "ok@x.example"]


async def test_discard_error_and_unknown_transports(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h.routes.update(
        {
            "void.example": Route("discard"),
            "gone.example": Route("error", "5.1.1 this domain is gone"),
            "later.example": Route("error", "4.3.2 come back later"),
            "odd.example": Route("uucp", "somewhere"),
        }
    )
    h.scheduler()
    assert h.store is not None
    m = await h.send(env("a@void.example", "b@gone.example", "c@later.example", "d@odd.example"))
    await h.idle()
    got = await h.store.get(m.queue_id)
    assert got is not None
    a, b, c, d = got.recipients
    assert (a.status, a.last_reply) == (RecipientStatus.DELIVERED, "250 2.0.0 discarded")
    assert (b.status, b.last_reply) == (RecipientStatus.BOUNCED, "550 5.1.1 this domain is gone")
    assert (c.status, c.last_reply) == (RecipientStatus.DEFERRED, "450 4.3.2 come back later")
    assert (d.status, d.dsn_status) == (RecipientStatus.DEFERRED, "4.3.5")
    assert any(
        r.levelno == logging.ERROR and "no delivery agent for transport 'uucp'" in r.getMessage()
        for r in caplog.records
    )
    assert [s.kind.value for s in h.notifier.sent] == ["failure"]  # b bounced


async def test_agent_that_raises_or_forgets_defers(h: Harness) -> None:
    class Forgetful(FakeAgent):
        async def deliver(self, message, recipients, open_body, route=None):
            out = await super().deliver(message, recipients, open_body, route)
            if any(r.address.startswith("boom") for r in recipients):
                raise RuntimeError("agent bug")
            return out[:1]

    h.agents["smtp"] = Forgetful("smtp")
    h.scheduler()
    assert h.store is not None
    m1 = await h.send(env("one@x.example", "two@x.example"))
    m2 = await h.send(env("boom@y.example"))
    await h.idle()
    assert await h.store.get(m1.queue_id) is not None
    got1 = await h.store.get(m1.queue_id)
    assert got1 is not None
    assert [r.status for r in got1.recipients] == [
        RecipientStatus.DELIVERED,
        RecipientStatus.DEFERRED,
    ]
    assert got1.recipients[1].last_reply == "451 4.3.0 delivery agent failed"
    got2 = await h.store.get(m2.queue_id)
    assert got2 is not None and got2.recipients[0].dsn_status == "4.3.0"


async def test_router_failure_defers(h: Harness) -> None:
    h.agents["smtp"] = FakeAgent("smtp")
    sched = h.scheduler()

    def broken(address: str) -> Route:
        raise ValueError("table broken")

    sched.router = broken
    assert h.store is not None
    m = await h.send(env("a@x.example"))
    await h.idle()
    got = await h.store.get(m.queue_id)
    assert got is not None and got.recipients[0].status is RecipientStatus.DEFERRED


async def test_recipient_limit_splits_big_messages(h: Harness) -> None:
    agent = h.agents["smtp"] = FakeAgent("smtp")
    h.scheduler(destination_recipient_limit=2)
    await h.send(env(*(f"u{i}@x.example" for i in range(5))))
    await h.idle()
    assert sorted(len(c.addresses) for c in agent.calls) == [1, 2, 2]


async def test_mixed_results_in_one_attempt(h: Harness) -> None:
    def script(address: str, n: int):
        return {
            "ok": (RecipientStatus.DELIVERED, OK),
            "busy": (RecipientStatus.DEFERRED, BUSY),
            "nouser": (RecipientStatus.BOUNCED, NO_USER),
        }[address.partition("@")[0]]

    h.agents["smtp"] = FakeAgent("smtp", script)
    h.scheduler()
    assert h.store is not None
    m = await h.send(env("ok@x.example", "busy@x.example", "nouser@x.example"))
    await h.idle()
    got = await h.store.get(m.queue_id)
    assert got is not None
    assert [r.status.value for r in got.recipients] == ["delivered", "deferred", "bounced"]
    (sent,) = h.notifier.sent
    assert [d.address for d in sent.recipients] == ["nouser@x.example"]


async def test_with_the_real_maildir_agent(tmp_path: Path) -> None:
    from kittiwake.delivery.local import LocalMailboxes
    from kittiwake.delivery.maildir import MaildirAgent

    h = await Harness(tmp_path / "data").open()
    root = tmp_path / "mail"
    h.agents["local"] = MaildirAgent(LocalMailboxes(root, ["example.org"], [], "postmaster"), "mx")
    h.routes["example.org"] = Route("local")
    h.scheduler()
    try:
        m = await h.send(env("bob@example.org"))
        await h.idle()
        assert h.store is not None and await h.store.get(m.queue_id) is None
        (name,) = (root / "example.org" / "bob" / "new").iterdir()
        assert name.read_bytes().endswith(b"Subject: t\r\n\r\nhi\r\n".replace(b"\r\n", b"\n"))
    finally:
        await h.close()
