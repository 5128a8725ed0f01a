"""handle_etrn (RFC 1985 §5.1 reply codes), with a recording flush and over a real store."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from kittiwake.delivery.api import Outcome, RecipientStatus
from kittiwake.envelope import Envelope, Recipient, Reply
from kittiwake.policy.etrn import handle_etrn
from kittiwake.policy.networks import NOBODY, Networks
from kittiwake.queue.sqlite import SQLiteStore

ALLOWED = Networks.parse(["192.0.2.0/24", "::1"])


class Flushes:
    """A flush that records its calls and reports a fixed count per domain."""

    def __init__(self, counts: dict[str, int] | None = None, fail: bool = False) -> None:
        self.calls: list[str | None] = []
        self.counts = counts or {}
        self.fail = fail

    async def __call__(self, domain: str | None = None) -> int:
        self.calls.append(domain)
        if self.fail:
            raise RuntimeError("database is locked")
        return self.counts.get(domain or "", 0)


async def test_253_with_the_count() -> None:
    flush = Flushes({"example.org": 14})
    reply = await handle_etrn("Example.ORG.", "192.0.2.5", ALLOWED, flush)
    assert reply == Reply(253, "2.0.0", "OK, 14 pending messages for node example.org started")
    assert flush.calls == ["example.org"]


async def test_251_when_nothing_waits() -> None:
    flush = Flushes()
    reply = await handle_etrn("example.org", "::1", ALLOWED, flush)
    assert reply == Reply(251, "2.0.0", "OK, no messages waiting for node example.org")


async def test_at_option_flushes_the_domain_and_its_subdomains() -> None:
    flush = Flushes({"example.org": 2, ".example.org": 3})
    reply = await handle_etrn("@example.org", "192.0.2.5", ALLOWED, flush)
    assert flush.calls == ["example.org", ".example.org"]
    assert reply.code == 253 and "5 pending messages for node @example.org" in str(reply)


@pytest.mark.parametrize(
    ("client", "argument", "text"),
    [
        ("203.0.113.1", "example.org", "Node example.org not allowed: client not authorized"),
        ("::ffff:203.0.113.1", "example.org", "not authorized"),
        ("192.0.2.5", "#uucp", "Node #uucp not allowed: no such queue"),
        ("192.0.2.5", "@com", "Node @com not allowed: too broad"),  # RFC 1985 §8
        ("192.0.2.5", "@COM.", "Node @com not allowed: too broad"),
    ],
)
async def test_459_refusals_flush_nothing(client: str, argument: str, text: str) -> None:
    flush = Flushes({"example.org": 1})
    reply = await handle_etrn(argument, client, ALLOWED, flush)
    assert (reply.code, reply.enhanced) == (459, "4.7.1")
    assert text in str(reply)
    assert flush.calls == []


async def test_nobody_allowed_by_default() -> None:
    reply = await handle_etrn("example.org", "127.0.0.1", NOBODY, Flushes())
    assert reply.code == 459


async def test_458_when_the_flush_fails(caplog: pytest.LogCaptureFixture) -> None:
    reply = await handle_etrn("example.org", "192.0.2.5", ALLOWED, Flushes(fail=True))
    assert reply == Reply(458, "4.3.0", "Unable to queue messages for node example.org")
    assert "flush failed" in caplog.text


async def test_over_a_real_store(tmp_path: Path) -> None:
    """Deferred mail in a real SQLite queue: ETRN makes exactly the named domain's mail due."""
    store = SQLiteStore(tmp_path)
    await store.open()
    try:
        later = time.time() + 3600
        ids = {}
        for domain in ("example.org", "mx.example.org", "example.net"):
            writer = store.new_message()
            writer.write(b"Subject: x\r\n\r\nbody\r\n")
            env = Envelope("a@sender.test", (Recipient(f"rcpt@{domain}"),))
            message = await store.commit(writer, env)
            deferred = Outcome(0, RecipientStatus.DEFERRED, Reply(451, "4.4.1", "no answer"), later)
            await store.record(message.queue_id, [deferred])
            ids[domain] = message.queue_id

        async def flush(domain: str | None = None) -> int:
            return len(await store.make_due(domain=domain))

        reply = await handle_etrn("example.net", "192.0.2.5", ALLOWED, flush)
        assert reply.code == 253 and "1 pending message" in str(reply)
        due = {m.queue_id for m in await store.pending(due_before=time.time() + 1)}
        assert due == {ids["example.net"]}

        reply = await handle_etrn("@example.org", "192.0.2.5", ALLOWED, flush)
        assert reply.code == 253 and "2 pending messages" in str(reply)
        assert await handle_etrn("example.com", "192.0.2.5", ALLOWED, flush) == Reply(
            251, "2.0.0", "OK, no messages waiting for node example.com"
        )
        due = {m.queue_id for m in await store.pending(due_before=time.time() + 1)}
        assert due == set(ids.values())
    finally:
        await store.close()
