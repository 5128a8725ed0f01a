"""Expansion at enqueue time through the real cleanup and a real SQLite store: the stored
recipients, DSN parameters, the SRS-forwarded copy (same body, committed first), aborts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kittiwake.addressing import Directory, Srs
from kittiwake.cleanup.expand import Expander, original_recipient
from kittiwake.cleanup.writer import Cleanup, MessageRefused
from kittiwake.delivery.api import QueuedMessage
from kittiwake.delivery.local import LocalMailboxes
from kittiwake.envelope import Envelope, Notify, Recipient, SessionInfo
from kittiwake.errors import StoreError
from kittiwake.queue.sqlite import SQLiteStore

SECRET = "0123456789abcdef-secret"
SESSION = SessionInfo("192.0.2.7", 40000, "127.0.0.1", 25, helo="mail.sender.example", esmtp=True)
BODY = b"Subject: hi\r\n\r\nhello\r\n"
ALIASES = {
    "info@example.test": ["alice@example.test", "carol@elsewhere.example"],
    "fwd@example.test": ["dave@elsewhere.example"],
    "both@example.test": ["info@example.test", "alice@example.test"],
    "team@example.test": ["alice@example.test", "bob@example.test"],
    "@example.test": ["bob@example.test"],
}


@dataclass
class World:
    store: SQLiteStore
    cleanup: Cleanup
    directory: Directory
    forwarded: list[QueuedMessage] = field(default_factory=list)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    store = SQLiteStore(tmp_path / "q")
    await store.open()
    mb = LocalMailboxes(
        tmp_path / "mail", ["example.test"], ["alice", "bob"], "postmaster", recipient_delimiter="+"
    )
    directory = Directory(mb, ALIASES, srs=Srs([SECRET], "example.test"))
    w = World(store, Cleanup(store, "mx.example.test"), directory)
    w.cleanup.expander = Expander(directory)
    w.cleanup.on_forward = w.forwarded.append
    yield w
    await store.close()


def env(sender: str, *rcpts: str | Recipient) -> Envelope:
    return Envelope(sender, tuple(r if isinstance(r, Recipient) else Recipient(r) for r in rcpts))


async def receive(w: World, envelope: Envelope, body: bytes = BODY) -> QueuedMessage:
    sink = w.cleanup.begin(SESSION, envelope)
    sink.write(body)
    return await sink.commit(envelope)


def body_of(w: World, queue_id: str) -> bytes:
    with w.store.open_body(queue_id) as f:
        return f.read()


def addresses(message: QueuedMessage) -> list[str]:
    return [r.address for r in message.envelope.recipients]


async def test_local_only_alias_one_message_no_duplicates(world: World) -> None:
    m = await receive(world, env("s@sender.example", "team@example.test", "Alice@example.test"))
    assert not world.forwarded
    assert m.envelope.sender == "s@sender.example"
    assert addresses(m) == ["alice@example.test", "bob@example.test"]  # Alice: a duplicate


async def test_nested_alias_with_an_outside_target(world: World) -> None:
    m = await receive(world, env("s@sender.example", "both@example.test"))
    assert addresses(m) == ["alice@example.test"]
    (copy,) = world.forwarded
    assert addresses(copy) == ["carol@elsewhere.example"]
    assert [r.orcpt for r in copy.envelope.recipients] == ["rfc822;both@example.test"]


async def test_forwarded_copy_has_srs_sender_and_same_body(world: World) -> None:
    rcpt = Recipient("info@example.test", notify=Notify.FAILURE | Notify.DELAY)
    m = await receive(world, env("s@sender.example", rcpt, "bob+x@example.test"))
    (copy,) = world.forwarded
    assert copy.queue_id != m.queue_id
    assert addresses(m) == ["alice@example.test", "bob+x@example.test"]
    assert m.envelope.sender == "s@sender.example"
    assert addresses(copy) == ["carol@elsewhere.example"]
    assert copy.envelope.sender.startswith("SRS0=") and copy.envelope.sender.endswith(
        "@example.test"
    )
    assert world.directory.srs is not None
    assert world.directory.srs.reverse(copy.envelope.sender) == "s@sender.example"
    # DSN parameters: NOTIFY of the original, ORCPT = what the client sent (RFC 3461 §4.2).
    alice, bobx = m.envelope.recipients
    assert alice.notify == Notify.FAILURE | Notify.DELAY
    assert alice.orcpt == "rfc822;info@example.test"
    assert bobx == Recipient("bob+x@example.test")  # unchanged: it resolves to itself
    (carol,) = copy.envelope.recipients
    assert (carol.notify, carol.orcpt) == (rcpt.notify, "rfc822;info@example.test")
    # Both spool files hold the same body under their own trace field.
    main_body, copy_body = body_of(world, m.queue_id), body_of(world, copy.queue_id)
    assert main_body.endswith(BODY) and copy_body.endswith(BODY)
    assert f"id {m.queue_id}".encode() in main_body and f"id {copy.queue_id}".encode() in copy_body
    assert {q.queue_id for q in await world.store.pending()} == {m.queue_id, copy.queue_id}


async def test_all_forwarded_is_one_message_under_the_srs_sender(world: World) -> None:
    m = await receive(world, env("s@sender.example", "fwd@example.test"))
    assert not world.forwarded  # the message itself is the forwarded one
    assert addresses(m) == ["dave@elsewhere.example"] and m.envelope.sender.startswith("SRS0=")
    assert [q.queue_id for q in await world.store.pending()] == [m.queue_id]


async def test_client_orcpt_kept_and_null_sender_not_rewritten(world: World) -> None:
    rcpt = Recipient("fwd@example.test", orcpt="rfc822;Fwd@Example.Test")
    m = await receive(world, env("", rcpt, "info@example.test"))
    assert not world.forwarded  # <> stays <>: nothing to rewrite, so no second message
    assert m.envelope.sender == ""
    assert [(r.address, r.orcpt) for r in m.envelope.recipients] == [
        ("dave@elsewhere.example", "rfc822;Fwd@Example.Test"),
        ("alice@example.test", "rfc822;info@example.test"),
        ("carol@elsewhere.example", "rfc822;info@example.test"),
    ]


async def test_own_domain_sender_not_rewritten(world: World) -> None:
    m = await receive(world, env("alice@example.test", "fwd@example.test"))
    assert m.envelope.sender == "alice@example.test" and not world.forwarded


async def test_catch_all_srs_bounce_and_relay_recipients(world: World) -> None:
    srs = world.directory.srs
    assert srs is not None
    bounce = srs.forward("orig@sender.example")
    m = await receive(world, env("", "nobody@example.test", bounce, "x@relayed.example"))
    assert [(r.address, r.orcpt) for r in m.envelope.recipients] == [
        ("bob@example.test", "rfc822;nobody@example.test"),
        ("orig@sender.example", f"rfc822;{bounce}"),
        ("x@relayed.example", None),  # plain relaying: untouched
    ]


async def test_notices_through_begin_local_are_expanded(world: World) -> None:
    srs = world.directory.srs
    assert srs is not None
    envelope = env("", Recipient(srs.forward("orig@sender.example"), notify=Notify.NEVER))
    sink = world.cleanup.begin_local(envelope)
    sink.write(BODY)
    m = await sink.commit(envelope)
    (r,) = m.envelope.recipients
    assert (r.address, r.notify) == ("orig@sender.example", Notify.NEVER)


async def test_begin_local_copy_for_a_local_sender_of_foreign_domain(world: World) -> None:
    sink = world.cleanup.begin_local(env("s@sender.example", "info@example.test"))
    sink.write(BODY)
    m = await sink.commit()
    assert addresses(m) == ["alice@example.test"] and len(world.forwarded) == 1
    assert body_of(world, world.forwarded[0].queue_id).startswith(b"Received: by mx.example.test")


async def test_abort_drops_both_spools(world: World, tmp_path: Path) -> None:
    big = b"x" * 200_000 + b"\r\n"  # past the inline limit: real spool files
    envelope = env("s@sender.example", "info@example.test")
    sink = world.cleanup.begin(SESSION, envelope)
    sink.write(big)
    assert len(list((tmp_path / "q").rglob("spool/*"))) == 2
    sink.abort()
    sink.abort()
    assert not list((tmp_path / "q").rglob("spool/*"))
    assert await world.store.pending() == []


async def test_loop_refusal_drops_the_copy_too(world: World, tmp_path: Path) -> None:
    envelope = env("s@sender.example", "info@example.test")
    sink = world.cleanup.begin(SESSION, envelope)
    sink.write(b"Received: x\r\n" * 60 + b"\r\n" + b"y" * 100_000)
    with pytest.raises(MessageRefused):
        await sink.commit(envelope)
    assert not list((tmp_path / "q").rglob("spool/*"))
    assert await world.store.pending() == [] and not world.forwarded


async def test_without_expander_nothing_changes(world: World) -> None:
    world.cleanup.expander = None
    m = await receive(world, env("s@sender.example", "info@example.test"))
    assert addresses(m) == ["info@example.test"]


def test_original_recipient_forms() -> None:
    assert original_recipient("a@b.example") == "rfc822;a@b.example"
    assert original_recipient("ü@b.example") is None
    assert original_recipient('"a b"@b.example') is None


async def test_recipients_changed_between_begin_and_commit(world: World, tmp_path: Path) -> None:
    """The copy's spool is opened at begin: a commit that suddenly needs one fails cleanly;
    one that no longer needs it drops it."""
    sink = world.cleanup.begin(SESSION, env("s@sender.example", "alice@example.test"))
    sink.write(BODY)
    with pytest.raises(StoreError):
        await sink.commit(env("s@sender.example", "alice@example.test", "info@example.test"))
    sink.abort()
    sink = world.cleanup.begin(SESSION, env("s@sender.example", "info@example.test"))
    sink.write(b"y" * 100_000)
    m = await sink.commit(env("s@sender.example", "alice@example.test"))
    assert addresses(m) == ["alice@example.test"] and not world.forwarded
    assert [q.queue_id for q in await world.store.pending()] == [m.queue_id]
    assert len(list((tmp_path / "q").rglob("spool/*"))) == 1
