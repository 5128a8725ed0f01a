"""Component tests of the SQLite queue store on a real directory with real SQLite."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from pathlib import Path

import pytest

from kittiwake.delivery.api import Outcome, QueuedMessage, RecipientStatus
from kittiwake.envelope import BodyType, Envelope, Notify, Recipient, Reply, Ret
from kittiwake.errors import StoreError
from kittiwake.queue import sqlite as store_mod
from kittiwake.queue.api import Store
from kittiwake.queue.ids import is_queue_id, new_queue_id, queue_id_time
from kittiwake.queue.spool import BUFFER_SIZE
from kittiwake.queue.sqldb import SCHEMA_VERSION
from kittiwake.queue.sqlite import SQLiteStore

ENV = Envelope("alice@example.org", (Recipient("bob@example.com"), Recipient("carol@example.com")))
OK = Reply(250, "2.0.0", "ok")
LATER = Reply(451, "4.3.0", "try later")


async def put(store: SQLiteStore, body: bytes, env: Envelope = ENV) -> QueuedMessage:
    w = store.new_message()
    for i in range(0, len(body), 1000):
        w.write(body[i : i + 1000])
    return await store.commit(w, env)


def read_body(store: SQLiteStore, qid: str) -> bytes:
    with store.open_body(qid) as f:
        return f.read()


@pytest.fixture
async def store(tmp_path: Path):
    s = SQLiteStore(tmp_path)
    await s.open()
    yield s
    await s.close()


def test_implements_the_store_protocol(tmp_path: Path) -> None:
    store: Store = SQLiteStore(tmp_path)  # mypy checks the structure
    assert callable(store.commit)


def test_queue_ids_are_unique_sortable_and_safe() -> None:
    ids = [new_queue_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(is_queue_id(i) and len(i) == 14 for i in ids)
    future = time.time() + 1000.0  # ids never go back in time, so probe ahead
    assert abs(queue_id_time(new_queue_id(future)) - future) < 0.001
    for bad in ("../../etc/passwd", "", "abc", ids[0].lower(), ids[0] + "/"):
        assert not is_queue_id(bad)


async def test_commit_then_reopen_sees_message(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path)
    await s.open()
    small = await put(s, b"Subject: hi\r\n\r\nsmall\r\n")
    big_body = b"Subject: big\r\n\r\n" + b"x" * (3 * BUFFER_SIZE)
    big = await put(s, big_body)
    assert small.size == 22 and big.size == len(big_body)
    assert [r.status for r in small.recipients] == [RecipientStatus.PENDING] * 2
    # Small bodies travel in the database; big ones are spool files.
    assert not (s.spool_dir / small.queue_id).exists()
    assert (s.spool_dir / big.queue_id).stat().st_size == len(big_body)
    await s.close()

    s2 = SQLiteStore(tmp_path)
    await s2.open()
    try:
        pending = {m.queue_id: m for m in await s2.pending()}
        assert set(pending) == {small.queue_id, big.queue_id}
        assert pending[small.queue_id] == small
        assert await s2.get(big.queue_id) == big
        assert read_body(s2, small.queue_id) == b"Subject: hi\r\n\r\nsmall\r\n"
        assert read_body(s2, big.queue_id) == big_body
    finally:
        await s2.close()


async def test_envelope_round_trips(tmp_path: Path, store: SQLiteStore) -> None:
    env = Envelope(
        "",
        (
            Recipient("a@x.example", Notify.SUCCESS | Notify.FAILURE, "rfc822;a@x.example"),
            Recipient("b@x.example", Notify.NEVER),
            Recipient("ü@x.example"),
        ),
        body_type=BodyType.EIGHTBITMIME,
        smtputf8=True,
        declared_size=1234,
        ret=Ret.HDRS,
        envid="QQ314159",
        auth="<>",
    )
    m = await put(store, b"x\r\n", env)
    again = await store.get(m.queue_id)
    assert again is not None and again.envelope == env
    assert [r.address for r in again.recipients] == ["a@x.example", "b@x.example", "ü@x.example"]


async def test_uncommitted_spool_files_are_removed_at_open(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path)
    await s.open()
    kept = await put(s, b"y" * (2 * BUFFER_SIZE))
    # What a crash mid-DATA leaves: a spool file with no row.
    (s.spool_dir / new_queue_id()).write_bytes(b"z" * (2 * BUFFER_SIZE))
    (s.spool_dir / "junk").write_bytes(b"leftover")
    await s.close()

    s2 = SQLiteStore(tmp_path)
    await s2.open()
    try:
        assert sorted(os.listdir(s2.spool_dir)) == [kept.queue_id]
        assert [m.queue_id for m in await s2.pending()] == [kept.queue_id]
    finally:
        await s2.close()


async def test_missing_spool_file_is_held_loudly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = SQLiteStore(tmp_path)
    await s.open()
    m = await put(s, b"q" * (2 * BUFFER_SIZE))
    await s.close()
    (s.spool_dir / m.queue_id).unlink()

    s2 = SQLiteStore(tmp_path)
    with caplog.at_level(logging.CRITICAL, logger="kittiwake.queue"):
        await s2.open()
    try:
        assert any("CORRUPT" in r.message and m.queue_id in r.message for r in caplog.records)
        assert await s2.pending() == []  # never offered for delivery...
        assert await s2.get(m.queue_id) is not None  # ...but not lost either
        assert await s2.held() == {m.queue_id: "spool file missing"}
    finally:
        await s2.close()


async def test_record_updates_in_place_and_removes_finished(store: SQLiteStore) -> None:
    m = await put(store, b"w" * (2 * BUFFER_SIZE))
    small = await put(store, b"small\r\n")
    when = 4_000_000_000.0
    await store.record(m.queue_id, [Outcome(0, RecipientStatus.DEFERRED, LATER, when)])
    got = await store.get(m.queue_id)
    assert got is not None
    r0, r1 = got.recipients
    assert (r0.status, r0.attempts, r0.next_attempt) == (RecipientStatus.DEFERRED, 1, when)
    assert r0.last_reply == "451 4.3.0 try later"
    assert r1.status is RecipientStatus.PENDING and r1.attempts == 0
    # Due-ness: recipient 1 is due now, recipient 0 only in the far future.
    assert {x.queue_id for x in await store.pending(due_before=1.0)} == {m.queue_id, small.queue_id}
    await store.record(m.queue_id, [Outcome(1, RecipientStatus.DELIVERED, OK)])
    assert [x.queue_id for x in await store.pending(due_before=when - 1)] == [small.queue_id]
    assert {x.queue_id for x in await store.pending(due_before=when)} == {
        m.queue_id,
        small.queue_id,
    }

    await store.record(m.queue_id, [Outcome(0, RecipientStatus.BOUNCED, Reply(550, "5.1.1", "no"))])
    assert await store.get(m.queue_id) is None
    assert not (store.spool_dir / m.queue_id).exists()
    await store.record(
        small.queue_id,
        [Outcome(0, RecipientStatus.DELIVERED, OK), Outcome(1, RecipientStatus.DELIVERED, OK)],
    )
    assert await store.get(small.queue_id) is None
    with pytest.raises(StoreError):
        store.open_body(small.queue_id)
    with contextlib.closing(sqlite3.connect(store.db_path)) as db:
        assert db.execute("SELECT count(*) FROM bodies").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM recipients").fetchone() == (0,)


async def test_final_recipient_never_reopens(store: SQLiteStore) -> None:
    m = await put(store, b"x\r\n")
    await store.record(m.queue_id, [Outcome(0, RecipientStatus.DELIVERED, OK)])
    await store.record(m.queue_id, [Outcome(0, RecipientStatus.DEFERRED, LATER, 5.0)])
    got = await store.get(m.queue_id)
    assert got is not None and got.recipients[0].status is RecipientStatus.DELIVERED
    assert got.recipients[0].attempts == 1


async def test_concurrent_commits_share_transactions(store: SQLiteStore) -> None:
    before = store.transactions
    bodies = [f"message {i}\r\n".encode() * (i * 500 + 1) for i in range(60)]
    msgs = await asyncio.gather(*(put(store, b) for b in bodies))
    assert len({m.queue_id for m in msgs}) == 60
    assert store.transactions - before < 60 // 2  # batched: far fewer than one each
    assert store.largest_batch > 1
    for m, b in zip(msgs, bodies, strict=True):
        assert read_body(store, m.queue_id) == b


async def test_abort_is_idempotent_and_harmless_after_commit(store: SQLiteStore) -> None:
    w = store.new_message()
    w.write(b"a" * (2 * BUFFER_SIZE))
    path = store.spool_dir / w.queue_id
    assert path.exists()
    w.abort()
    w.abort()
    assert not path.exists()
    with pytest.raises(StoreError):
        w.write(b"more")

    w2 = store.new_message()
    w2.write(b"b" * (2 * BUFFER_SIZE))
    m = await store.commit(w2, ENV)
    w2.abort()  # the session driver may do this on its error path: must not lose mail
    assert read_body(store, m.queue_id) == b"b" * (2 * BUFFER_SIZE)


async def test_commit_needs_a_recipient(store: SQLiteStore) -> None:
    w = store.new_message()
    w.write(b"x\r\n")
    with pytest.raises(StoreError):
        await store.commit(w, Envelope("a@example.org", ()))
    w.abort()
    assert await store.pending() == []


async def test_failed_commit_raises_store_error_and_cleans_up(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(path: Path) -> None:
        raise OSError(5, "Input/output error (injected)")

    monkeypatch.setattr(store_mod, "fsync_dir", broken)
    w = store.new_message()
    w.write(b"c" * (2 * BUFFER_SIZE))
    with pytest.raises(StoreError):
        await store.commit(w, ENV)
    assert not (store.spool_dir / w.queue_id).exists()
    assert await store.get(w.queue_id) is None
    monkeypatch.undo()
    m = await put(store, b"after\r\n")  # the store still works
    assert await store.get(m.queue_id) is not None


async def test_one_process_per_queue(tmp_path: Path, store: SQLiteStore) -> None:
    other = SQLiteStore(tmp_path)
    with pytest.raises(StoreError):
        await other.open()


async def test_schema_version_and_refusing_newer(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path)
    await s.open()
    await s.close()
    with contextlib.closing(sqlite3.connect(s.db_path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer"):
        await SQLiteStore(tmp_path).open()


async def test_open_body_refuses_paths(store: SQLiteStore) -> None:
    for bad in ("../../etc/passwd", "/etc/passwd", "queue.db"):
        with pytest.raises(StoreError):
            store.open_body(bad)
    assert await store.get("../x") is None


@pytest.mark.parametrize("mode", ["sequential", "pool", "syncfs"])
async def test_every_fsync_mode_commits(tmp_path: Path, mode: store_mod.FsyncMode) -> None:
    s = SQLiteStore(tmp_path, inline_bodies=False, fsync=mode, fsync_threads=3)
    await s.open()
    try:
        msgs = await asyncio.gather(*(put(s, b"m%d\r\n" % i) for i in range(10)))
        assert sorted(os.listdir(s.spool_dir)) == sorted(m.queue_id for m in msgs)
        assert all(read_body(s, m.queue_id) == b"m%d\r\n" % i for i, m in enumerate(msgs))
    finally:
        await s.close()
