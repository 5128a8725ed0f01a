"""The store's issue-3 extensions on real SQLite: the v1 → v2 migration, per-recipient
state, owed notices, admin operations, the summary, and ReadOnlyQueue."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from kittiwake.delivery.api import Outcome, QueuedMessage, RecipientStatus
from kittiwake.envelope import Envelope, Recipient, Reply
from kittiwake.errors import StoreError
from kittiwake.queue.readonly import ReadOnlyQueue
from kittiwake.queue.spool import BUFFER_SIZE
from kittiwake.queue.sqldb import SCHEMA_VERSION
from kittiwake.queue.sqlite import SQLiteStore
from kittiwake.queue.sqlschema import MIGRATIONS, address_domain

OK = Reply(250, "2.0.0", "ok")
LATER = Reply(451, "4.4.1", "no answer")
NO = Reply(550, "5.1.1", "no such user")
ENV = Envelope(
    "alice@example.org",
    (Recipient("bob@Example.COM"), Recipient("carol@sub.example.com"), Recipient("dan@x.net")),
)


async def put(store: SQLiteStore, env: Envelope = ENV, body: bytes = b"hi\r\n") -> QueuedMessage:
    w = store.new_message()
    w.write(body)
    return await store.commit(w, env)


@pytest.fixture
async def store(tmp_path: Path):
    s = SQLiteStore(tmp_path, clock=lambda: 1000.0)
    await s.open()
    yield s
    await s.close()


def test_address_domain() -> None:
    assert address_domain("a@Example.ORG") == "example.org"
    assert address_domain('"a@b"@c.example') == "c.example"
    assert address_domain("postmaster") == ""


async def test_migration_from_the_0_1_schema(tmp_path: Path) -> None:
    db_path = tmp_path / "queue" / "queue.db"
    db_path.parent.mkdir(parents=True)
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        db.executescript(MIGRATIONS[0] + "; PRAGMA user_version = 1;")
        db.execute(
            "INSERT INTO messages VALUES ('0000000000000A', 'a@b.example', '7BIT', 0, NULL,"
            " NULL, NULL, NULL, 5.0, 4, 0, NULL)"
        )
        db.execute("INSERT INTO bodies VALUES ('0000000000000A', x'6869')")
        db.execute(
            "INSERT INTO recipients VALUES ('0000000000000A', 0, '\"x@y\"@Old.Example', NULL,"
            " NULL, 'deferred', 2, 50.0, '451 4.0.0 later')"
        )
        db.commit()
    s = SQLiteStore(tmp_path)
    await s.open()
    try:
        m = await s.get("0000000000000A")
        assert m is not None and m.envelope.internal is None and not m.held
        (r,) = m.recipients
        assert (r.status, r.attempts, r.last_reply) == (
            RecipientStatus.DEFERRED,
            2,
            "451 4.0.0 later",
        )
        assert r.notice is None and not r.delay_notified
        assert await s.make_due(domain="old.example") == ["0000000000000A"]  # backfilled
    finally:
        await s.close()
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


async def test_internal_and_recipient_state_round_trip(store: SQLiteStore) -> None:
    env = Envelope("", (Recipient("alice@example.org"),), internal="bounce")
    m = await put(store, env)
    assert m == await store.get(m.queue_id)  # the commit snapshot is what a read gives
    assert m.envelope.internal == "bounce"

    m = await put(store)
    await store.record(
        m.queue_id,
        [
            Outcome(0, RecipientStatus.DEFERRED, LATER, 2000.0, remote_mta="mx.example.com"),
            Outcome(1, RecipientStatus.BOUNCED, Reply(554, "5.4.7", "expired"), 0.0),
        ],
        route="smtp:example.com",
        notices={1: "failed"},
        diagnostics={1: "451 4.4.1 no answer"},
    )
    got = await store.get(m.queue_id)
    assert got is not None
    a, b, c = got.recipients
    assert (a.route, a.remote_mta, a.last_attempt, a.first_deferred) == (
        "smtp:example.com",
        "mx.example.com",
        1000.0,
        1000.0,
    )
    assert (a.dsn_status, a.diagnostic, a.notice) == ("4.4.1", "451 4.4.1 no answer", None)
    assert (b.status, b.dsn_status, b.notice) == (RecipientStatus.BOUNCED, "5.4.7", "failed")
    assert b.last_reply == "554 5.4.7 expired" and b.diagnostic == "451 4.4.1 no answer"
    assert c.route is None and c.attempts == 0
    # A second deferral keeps the first deferral time and the last known remote MTA.
    await store.record(m.queue_id, [Outcome(0, RecipientStatus.DEFERRED, LATER, 3000.0)])
    got = await store.get(m.queue_id)
    assert got is not None
    assert (got.recipients[0].first_deferred, got.recipients[0].remote_mta) == (
        1000.0,
        "mx.example.com",
    )


async def test_an_owed_notice_keeps_the_message_until_sent(store: SQLiteStore) -> None:
    big = b"B" * (2 * BUFFER_SIZE)
    m = await put(store, Envelope("a@b.example", (Recipient("x@y.example"),)), big)
    await store.record(m.queue_id, [Outcome(0, RecipientStatus.BOUNCED, NO)], notices={0: "failed"})
    assert await store.pending() == []  # nothing to deliver...
    assert await store.schedule() == [(m.queue_id, 0.0)]  # ...but work to do: the notice
    with store.open_body(m.queue_id) as f:  # the body is still there to quote
        assert f.read() == big
    assert await store.notices_sent(m.queue_id, [0]) is True  # the last debt: removed
    assert await store.get(m.queue_id) is None
    assert not (store.spool_dir / m.queue_id).exists()


async def test_delay_notice_marks(store: SQLiteStore) -> None:
    m = await put(store)
    assert await store.notices_sent(m.queue_id, [0, 2], delay=True) is False
    got = await store.get(m.queue_id)
    assert got is not None
    assert [r.delay_notified for r in got.recipients] == [True, False, True]


async def test_hold_release_delete(store: SQLiteStore) -> None:
    m = await put(store, body=b"S" * (2 * BUFFER_SIZE))
    assert await store.hold(m.queue_id)
    got = await store.get(m.queue_id)
    assert got is not None and got.held and got.hold_reason == "held by the administrator"
    assert await store.pending() == [] and await store.schedule() == []
    assert len(await store.all_messages()) == 1
    assert await store.release(m.queue_id)
    assert [x.queue_id for x in await store.pending()] == [m.queue_id]
    assert await store.delete(m.queue_id)
    assert await store.get(m.queue_id) is None
    assert not (store.spool_dir / m.queue_id).exists()
    for op in (store.hold, store.release, store.delete):
        assert await op(m.queue_id) is False
        assert await op("../etc/passwd") is False


async def test_make_due(store: SQLiteStore) -> None:
    m1 = await put(store)
    m2 = await put(store, Envelope("a@b.example", (Recipient("z@example.com"),)))
    for m in (m1, m2):
        await store.record(
            m.queue_id,
            [Outcome(i, RecipientStatus.DEFERRED, LATER, 9000.0) for i in range(len(m.recipients))],
        )
    assert await store.make_due(domain="EXAMPLE.com") == sorted([m1.queue_id, m2.queue_id])
    got = await store.get(m1.queue_id)
    assert got is not None
    assert [r.next_attempt for r in got.recipients] == [1000.0, 9000.0, 9000.0]
    assert await store.make_due(domain=".example.com") == [m1.queue_id]  # sub.example.com
    assert await store.make_due(domain="nowhere.example") == []
    assert await store.make_due(domain="%") == []  # LIKE wildcards are not wildcards
    await store.hold(m2.queue_id)
    assert await store.make_due(queue_id=m2.queue_id) == []  # held: not woken
    assert await store.make_due() == [m1.queue_id]
    assert await store.make_due(queue_id="bad") == []


async def test_summary_and_schedule(store: SQLiteStore) -> None:
    m1 = await put(store)
    m2 = await put(store, Envelope("a@b.example", (Recipient("z@example.com"),)))
    await store.record(m1.queue_id, [Outcome(2, RecipientStatus.DELIVERED, OK)])
    await store.record(m2.queue_id, [Outcome(0, RecipientStatus.DEFERRED, LATER, 4000.0)])
    s = await store.summary()
    assert (s.messages, s.recipients, s.held) == (2, 3, 0)
    assert [(d.domain, d.recipients, d.messages, d.deferred, d.oldest) for d in s.domains] == [
        ("example.com", 2, 2, 1, 1000.0),
        ("sub.example.com", 1, 1, 0, 1000.0),
    ]
    assert dict(await store.schedule()) == {m1.queue_id: 0.0, m2.queue_id: 4000.0}


async def test_read_only_queue_while_the_server_runs_and_after(
    tmp_path: Path, store: SQLiteStore
) -> None:
    m = await put(store)
    with ReadOnlyQueue(tmp_path) as ro:
        assert [x.queue_id for x in ro.list()] == [m.queue_id]
        assert ro.get(m.queue_id) == m
        assert ro.get("nope") is None and ro.get("0000000000000Z") is None
        assert ro.summary().recipients == 3
        # The writer goes on while a reader is open, and the reader sees its commits.
        m2 = await put(store)
        await store.record(m.queue_id, [Outcome(0, RecipientStatus.DELIVERED, OK)])
        assert len(ro.list()) == 2
        got = ro.get(m.queue_id)
        assert got is not None and got.recipients[0].status is RecipientStatus.DELIVERED
        with pytest.raises(sqlite3.OperationalError):
            ro._conn().conn.execute("DELETE FROM messages")  # it really is read-only
    await store.close()
    with ReadOnlyQueue(tmp_path) as ro:  # the server is down
        assert {x.queue_id for x in ro.list()} == {m.queue_id, m2.queue_id}
    await store.open()  # the fixture closes it again


def test_read_only_queue_without_a_queue(tmp_path: Path) -> None:
    with ReadOnlyQueue(tmp_path) as ro, pytest.raises(StoreError, match="no queue"):
        ro.list()


def test_read_only_queue_refuses_an_old_schema(tmp_path: Path) -> None:
    db_path = tmp_path / "queue" / "queue.db"
    db_path.parent.mkdir(parents=True)
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        db.executescript(MIGRATIONS[0] + "; PRAGMA user_version = 1;")
    with ReadOnlyQueue(tmp_path) as ro, pytest.raises(StoreError, match="start the server"):
        ro.list()
    with contextlib.closing(sqlite3.connect(db_path)) as db:  # and left it alone
        assert db.execute("PRAGMA user_version").fetchone() == (1,)
