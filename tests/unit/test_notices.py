"""NoticeSender (cleanup.notices): who gets a notice, and the notice as queued, with a real
SQLite store and the real cleanup writer."""

from __future__ import annotations

import email
import email.message
import email.policy
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kittiwake.cleanup.notices import NoticeSender, requested
from kittiwake.cleanup.writer import TOO_MANY_HOPS, Cleanup
from kittiwake.delivery.api import Outcome, QueuedMessage, RecipientStatus
from kittiwake.envelope import BodyType, Envelope, Notify, Recipient, Reply, Ret, SessionInfo
from kittiwake.queue.api import DsnKind, DsnRecipient
from kittiwake.queue.sqlite import SQLiteStore

SESSION = SessionInfo("192.0.2.7", 40000, "127.0.0.1", 25, helo="client.example.org", esmtp=True)
BODY = b"From: alice@example.org\r\nSubject: numbers\r\n\r\nSECRET BODY\r\n"
NOW = 1_732_886_400.0


@dataclass
class World:
    store: SQLiteStore
    cleanup: Cleanup
    sender: NoticeSender
    queued: list[QueuedMessage] = field(default_factory=list)

    async def original(self, envelope: Envelope, body: bytes = BODY) -> QueuedMessage:
        sink = self.cleanup.begin(SESSION, envelope)
        sink.write(body)
        return await sink.commit()

    async def body(self, queue_id: str) -> bytes:
        with self.store.open_body(queue_id) as f:
            return f.read()

    async def notice(self, queue_id: str) -> tuple[QueuedMessage, email.message.EmailMessage]:
        msg = await self.store.get(queue_id)
        assert msg is not None
        parsed = email.message_from_bytes(await self.body(queue_id), policy=email.policy.default)
        assert isinstance(parsed, email.message.EmailMessage)
        return msg, parsed


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    store = SQLiteStore(tmp_path)
    await store.open()
    cleanup = Cleanup(store, "mx.example.net")
    queued: list[QueuedMessage] = []
    sender = NoticeSender(
        cleanup, store, "mx.example.net", "postmaster@example.net", queued.append, clock=lambda: NOW
    )
    try:
        yield World(store, cleanup, sender, queued)
    finally:
        await store.close()


def failed(address: str = "bob@example.net", orcpt: str | None = None) -> DsnRecipient:
    return DsnRecipient(address, orcpt, "failed", "5.1.1", "550 5.1.1 no such user", "mx.example")


def blocks(parsed: email.message.EmailMessage) -> list[email.message.Message]:
    part = list(parsed.iter_parts())[1]
    payload = part.get_payload()
    assert isinstance(payload, list)
    return [b for b in payload if isinstance(b, email.message.Message)]


async def test_sender_gets_a_bounce_with_a_null_sender(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    env = Envelope(
        "alice@example.org",
        (Recipient("bob@example.net", orcpt="rfc822;bob@example.net"),),
        envid="ENV-7",
    )
    original = await world.original(env)
    with caplog.at_level(logging.INFO, logger="kittiwake.bounce"):
        qid = await world.sender.send(
            DsnKind.FAILURE, original, [failed(orcpt="rfc822;bob@example.net")]
        )
    assert qid is not None
    notice, parsed = await world.notice(qid)
    assert world.queued == [notice]
    assert notice.envelope.sender == ""
    assert notice.envelope.internal == "bounce"
    assert notice.envelope.recipients == (Recipient("alice@example.org", notify=Notify.NEVER),)
    assert notice.envelope.body_type is BodyType.SEVENBIT and not notice.envelope.smtputf8
    assert parsed["To"] == "alice@example.org"
    assert parsed["Message-ID"] == f"<{qid}@mx.example.net>"
    raw = await world.body(qid)
    assert raw.startswith(f"Received: by mx.example.net (Kittiwake) id {qid};\r\n".encode())
    assert [p.get_content_type() for p in parsed.iter_parts()] == [
        "text/plain",
        "message/delivery-status",
        "message/rfc822",
    ]
    per_message, per_rcpt = blocks(parsed)
    assert per_message["Original-Envelope-Id"] == "ENV-7"
    assert per_rcpt["Original-Recipient"] == "rfc822; bob@example.net"
    assert per_rcpt["Diagnostic-Code"] == "smtp; 550 5.1.1 no such user"
    assert BODY in raw  # no RET: the whole message comes back
    assert f"{original.queue_id}: sender non-delivery notification: {qid}" in caplog.messages


async def test_notify_decides_per_kind(world: World) -> None:
    env = Envelope(
        "alice@example.org",
        (
            Recipient("never@example.net", notify=Notify.NEVER),
            Recipient("plain@example.net"),
            Recipient("success@example.net", notify=Notify.SUCCESS | Notify.FAILURE),
            Recipient("delay@example.net", notify=Notify.DELAY),
        ),
    )
    original = await world.original(env)

    async def who(kind: DsnKind, action: str) -> list[str]:
        rcpts = [
            DsnRecipient(r.address, None, action, "2.0.0" if action == "delivered" else "4.0.0")
            for r in env.recipients
        ]
        qid = await world.sender.send(kind, original, rcpts)
        if qid is None:
            return []
        _, parsed = await world.notice(qid)
        return [str(b["Final-Recipient"]).split("; ")[1] for b in blocks(parsed)[1:]]

    assert await who(DsnKind.FAILURE, "failed") == ["plain@example.net", "success@example.net"]
    assert await who(DsnKind.DELAY, "delayed") == ["plain@example.net", "delay@example.net"]
    assert await who(DsnKind.SUCCESS, "delivered") == ["success@example.net"]
    only_never = await world.sender.send(DsnKind.FAILURE, original, [failed("never@example.net")])
    assert only_never is None
    assert await world.sender.send(DsnKind.FAILURE, original, []) is None
    assert requested(DsnKind.SUCCESS, None) is False
    assert requested(DsnKind.DELAY, None) is True


async def test_null_sender_failure_goes_to_the_postmaster(world: World) -> None:
    env = Envelope("", (Recipient("bob@example.net"),), ret=Ret.FULL)
    original = await world.original(env)
    qid = await world.sender.send(DsnKind.FAILURE, original, [failed()])
    assert qid is not None
    notice, parsed = await world.notice(qid)
    assert notice.envelope.sender == ""
    assert notice.envelope.internal == "double-bounce"
    assert notice.envelope.recipients == (Recipient("postmaster@example.net", notify=Notify.NEVER),)
    assert parsed["Subject"] == "Postmaster Copy: Undelivered Mail"
    assert list(parsed.iter_parts())[2].get_content_type() == "text/rfc822-headers"
    assert b"SECRET BODY" not in await world.body(qid)


async def test_null_sender_mail_gets_no_delay_or_success_notice(world: World) -> None:
    original = await world.original(Envelope("", (Recipient("bob@example.net"),)))
    late = DsnRecipient("bob@example.net", None, "delayed", "4.4.1")
    done = DsnRecipient("bob@example.net", None, "delivered", "2.0.0")
    assert await world.sender.send(DsnKind.DELAY, original, [late]) is None
    assert await world.sender.send(DsnKind.SUCCESS, original, [done]) is None
    assert world.queued == []


async def test_bounce_of_a_bounce_then_the_double_bounce_is_dropped(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    original = await world.original(Envelope("alice@example.org", (Recipient("b@example.net"),)))
    bounce_id = await world.sender.send(DsnKind.FAILURE, original, [failed("b@example.net")])
    assert bounce_id is not None
    bounce, _ = await world.notice(bounce_id)

    # The bounce itself cannot be delivered to alice: the postmaster hears of it.
    undeliverable = failed("alice@example.org")
    with caplog.at_level(logging.INFO, logger="kittiwake.bounce"):
        double_id = await world.sender.send(DsnKind.FAILURE, bounce, [undeliverable])
    assert double_id is not None
    double, parsed = await world.notice(double_id)
    assert double.envelope.internal == "double-bounce"
    assert f"{bounce_id}: postmaster non-delivery notification: {double_id}" in caplog.messages
    returned = list(parsed.iter_parts())[2].get_content()
    assert "Undelivered Mail Returned to Sender" in returned  # the bounce's headers

    # And when even that fails: dropped, logged, nothing queued.
    before = len(await world.store.pending())
    with caplog.at_level(logging.INFO, logger="kittiwake.bounce"):
        gone = await world.sender.send(DsnKind.FAILURE, double, [failed("postmaster@example.net")])
    assert gone is None
    assert f"{double_id}: double bounce dropped" in caplog.messages
    assert len(await world.store.pending()) == before
    assert world.queued == [bounce, double]


async def test_notice_without_its_original(world: World) -> None:
    original = await world.original(Envelope("alice@example.org", (Recipient("b@example.net"),)))
    await world.store.record(
        original.queue_id, [Outcome(0, RecipientStatus.BOUNCED, Reply(550, "5.1.1", "no"))]
    )
    assert await world.store.get(original.queue_id) is None  # removed with its body
    qid = await world.sender.send(DsnKind.FAILURE, original, [failed("b@example.net")])
    assert qid is not None
    _, parsed = await world.notice(qid)
    assert len(list(parsed.iter_parts())) == 2


async def test_eight_bit_original_makes_an_8bitmime_notice(world: World) -> None:
    env = Envelope(
        "alice@example.org", (Recipient("b@example.net"),), body_type=BodyType.EIGHTBITMIME
    )
    original = await world.original(env, BODY.replace(b"SECRET", "Grüße".encode()))
    qid = await world.sender.send(DsnKind.FAILURE, original, [failed("b@example.net")])
    assert qid is not None
    notice, _ = await world.notice(qid)
    assert notice.envelope.body_type is BodyType.EIGHTBITMIME
    assert not notice.envelope.smtputf8


async def test_utf8_sender_makes_an_smtputf8_notice(world: World) -> None:
    env = Envelope("jörg@bücher.example", (Recipient("b@example.net"),), smtputf8=True)
    original = await world.original(env)
    qid = await world.sender.send(DsnKind.FAILURE, original, [failed("b@example.net")])
    assert qid is not None
    notice, _ = await world.notice(qid)
    assert notice.envelope.smtputf8
    assert notice.envelope.recipients[0].address == "jörg@bücher.example"


async def test_large_original_is_streamed_into_the_notice(world: World) -> None:
    big = b"Subject: big\r\n\r\n" + b"x" * 76 + b"\r\n"
    body = big + (b"y" * 998 + b"\r\n") * 300  # ~300 KB: over the default cap
    original = await world.original(
        Envelope("alice@example.org", (Recipient("b@x.example"),)), body
    )
    small_cap = await world.sender.send(DsnKind.FAILURE, original, [failed("b@x.example")])
    assert small_cap is not None
    assert b"y" * 998 not in await world.body(small_cap)  # headers only

    generous = NoticeSender(
        world.cleanup, world.store, "mx.example.net", "pm@example.net", world.queued.append,
        max_original=1_000_000,
    )  # fmt: skip
    full = await generous.send(DsnKind.FAILURE, original, [failed("b@x.example")])
    assert full is not None
    assert body in await world.body(full)


async def test_bounce_now_for_a_looping_local_message(world: World) -> None:
    env = Envelope("alice@example.org", (Recipient("b@example.net"), Recipient("c@example.net")))
    sink = world.cleanup.begin_local(env)
    sink.write(b"Received: from x\r\n" * 51 + b"Subject: loop\r\n\r\nbody\r\n")
    assert sink.hops_exceeded
    looping = await sink.commit()
    qid = await world.sender.bounce_now(looping)
    assert qid is not None
    assert await world.store.get(looping.queue_id) is None  # every recipient bounced
    _, parsed = await world.notice(qid)
    rcpts = blocks(parsed)[1:]
    assert [str(b["Status"]) for b in rcpts] == ["5.4.6", "5.4.6"]
    assert str(rcpts[0]["Diagnostic-Code"]) == f"smtp; {TOO_MANY_HOPS}"
    assert world.queued[-1].queue_id == qid
