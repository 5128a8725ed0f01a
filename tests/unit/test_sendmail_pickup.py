"""The pickup service (cleanup.pickup) with a real SQLite store, and ``sendmail -bs``."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kittiwake.admin.sendmail import run
from kittiwake.cleanup.maildrop import (
    MAGIC,
    DropEnvelope,
    DropWriter,
    ensure_dir,
    maildrop_dir,
    ready_files,
)
from kittiwake.cleanup.pickup import Pickup
from kittiwake.cleanup.rewrite import RewriteSettings
from kittiwake.cleanup.writer import Cleanup
from kittiwake.delivery.api import QueuedMessage
from kittiwake.envelope import BodyType, Notify, Ret
from kittiwake.queue.sqlite import SQLiteStore

ENV = DropEnvelope(
    sender="alice@example.test",
    recipients=("bob@example.test",),
    user="alice",
    uid=12345,
    full_name="Alice Smith",
    remove_bcc=True,
)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "data")
    await s.open()
    yield s
    await s.close()


class Harness:
    def __init__(self, tmp_path: Path, store: SQLiteStore, **kw: object) -> None:
        self.data_dir = tmp_path / "data"
        self.store = store
        self.queued: list[QueuedMessage] = []
        self.bounced: list[QueuedMessage] = []
        cleanup = Cleanup(store, "mx.test", rewrite=RewriteSettings("example.test"), max_hops=3)
        self.pickup = Pickup(
            self.data_dir,
            cleanup,
            self.queued.append,
            bounce=self._bounce,
            **kw,  # type: ignore[arg-type]
        )

    async def _bounce(self, message: QueuedMessage) -> None:
        self.bounced.append(message)

    def drop(self, message: bytes, envelope: DropEnvelope = ENV) -> Path:
        directory = maildrop_dir(self.data_dir)
        ensure_dir(directory)
        writer = DropWriter(directory, envelope)
        writer.write(message)
        return writer.commit()

    def body(self, message: QueuedMessage) -> bytes:
        with self.store.open_body(message.queue_id) as f:
            data = f.read()
        assert isinstance(data, bytes)
        return data

    @property
    def corrupt(self) -> list[str]:
        d = self.data_dir / "corrupt"
        return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


async def test_a_dropped_message_is_queued_rewritten_and_removed(
    tmp_path: Path, store: SQLiteStore
) -> None:
    h = Harness(tmp_path, store)
    path = h.drop(b"To: bob\r\nBcc: hidden@example.org\r\nSubject: hi\r\n\r\nbody\r\n")
    assert await h.pickup.scan() == 1
    assert not path.exists()
    [message] = h.queued
    assert message.envelope.sender == "alice@example.test"
    assert [r.address for r in message.envelope.recipients] == ["bob@example.test"]
    assert message.envelope.body_type is BodyType.SEVENBIT
    data = h.body(message)
    assert data.startswith(b"Received: by mx.test (Kittiwake, from userid %d) id " % os.getuid())
    head, _, body = data.partition(b"\r\n\r\n")
    assert (
        b"\r\nTo: bob@example.test\r\nSubject: hi\r\nFrom: Alice Smith <alice@example.test>" in head
    )
    assert b"\r\nDate: " in head and b"\r\nMessage-ID: <" + message.queue_id.encode() in head
    assert b"Bcc" not in data and b"hidden" not in data
    assert body == b"body\r\n"
    assert [m.queue_id for m in await store.pending()] == [message.queue_id]
    assert await h.pickup.scan() == 0  # nothing twice


async def test_files_are_taken_oldest_first_and_dsn_fields_kept(
    tmp_path: Path, store: SQLiteStore
) -> None:
    h = Harness(tmp_path, store)
    env = DropEnvelope(
        "",
        ("a@example.test", "b@example.test"),
        notify=("success", "delay"),
        ret="hdrs",
        envid="E1",
    )
    h.drop(b"first\r\n", env)
    h.drop("Subject: ünïcode\r\n\r\nsecond\r\n".encode(), ENV)
    assert await h.pickup.scan() == 2
    first, second = h.queued
    assert first.envelope.sender == "" and first.envelope.ret is Ret.HDRS
    assert first.envelope.envid == "E1"
    assert all(r.notify == Notify.SUCCESS | Notify.DELAY for r in first.envelope.recipients)
    assert b"\r\nFrom:" not in h.body(first)  # no From made up for the null sender
    assert second.envelope.body_type is BodyType.EIGHTBITMIME


async def test_line_ends_are_normalised_and_a_last_line_end_added(
    tmp_path: Path, store: SQLiteStore
) -> None:
    h = Harness(tmp_path, store)
    h.drop(b"Subject: s\n\na\nb\r\nc")
    await h.pickup.scan()
    assert h.body(h.queued[0]).endswith(b"\r\n\r\na\r\nb\r\nc\r\n")


async def test_unusable_files_are_moved_aside_not_lost(tmp_path: Path, store: SQLiteStore) -> None:
    h = Harness(tmp_path, store)
    directory = maildrop_dir(h.data_dir)
    ensure_dir(directory)
    bad = directory / "0000000000000001.0000000000000001"
    bad.write_bytes(MAGIC + b'{"sender": "", "recipients": ["no address"]}\n' + b"x\r\n")
    link = directory / "0000000000000002.0000000000000002"
    link.symlink_to("/etc/passwd")
    good = h.drop(b"fine\r\n")
    assert await h.pickup.scan() == 1
    assert not good.exists() and not bad.exists() and not link.exists()
    assert h.corrupt == [f"maildrop-{bad.name}", f"maildrop-{link.name}"]
    assert await h.pickup.scan() == 0


async def test_a_message_over_max_size_is_moved_aside(tmp_path: Path, store: SQLiteStore) -> None:
    h = Harness(tmp_path, store, max_size=1000)
    path = h.drop(b"x" * 2000 + b"\r\n")
    assert await h.pickup.scan() == 0
    assert not path.exists() and h.corrupt == [f"maildrop-{path.name}"]
    assert await store.pending() == []


async def test_a_mail_loop_is_bounced_not_queued(tmp_path: Path, store: SQLiteStore) -> None:
    h = Harness(tmp_path, store)
    h.drop(b"Received: a\r\nReceived: b\r\nReceived: c\r\nReceived: d\r\n\r\nloop\r\n")
    assert await h.pickup.scan() == 1
    assert h.queued == [] and len(h.bounced) == 1


class CrashBeforeUnlink(Pickup):
    """A pickup that 'crashes' between the commit and the unlink."""

    def _remove(self, path: Path, st: os.stat_result) -> None:
        self._skip.add((path.name, st.st_ino))


async def test_at_least_once_a_crash_after_commit_queues_again_once(
    tmp_path: Path, store: SQLiteStore
) -> None:
    h = Harness(tmp_path, store)
    cleanup = Cleanup(store, "mx.test")
    crashing = CrashBeforeUnlink(h.data_dir, cleanup, h.queued.append)
    path = h.drop(b"once\r\n")
    assert await crashing.scan() == 1
    assert await crashing.scan() == 0  # the same process never injects it twice
    assert path.exists()
    assert await h.pickup.scan() == 1  # "after the restart": a duplicate, never a loss
    assert not path.exists()
    assert len(await store.pending()) == 2


async def test_the_service_polls_and_wakes(tmp_path: Path, store: SQLiteStore) -> None:
    h = Harness(tmp_path, store, interval=30.0)
    h.drop(b"before start\r\n")
    await h.pickup.start()
    try:
        for _ in range(200):
            if h.queued:
                break
            await asyncio.sleep(0.01)
        assert len(h.queued) == 1  # the first scan runs at start
        h.drop(b"after start\r\n")
        h.pickup.wake()  # without it the next poll is 30 s away
        for _ in range(200):
            if len(h.queued) == 2:
                break
            await asyncio.sleep(0.01)
        assert len(h.queued) == 2
    finally:
        await h.pickup.stop()
    assert ready_files(maildrop_dir(h.data_dir)) == []


async def test_sendmail_bs_speaks_smtp_into_the_maildrop(
    tmp_path: Path, store: SQLiteStore
) -> None:
    config = tmp_path / "k.toml"
    config.write_text(f'hostname = "mx.test"\ndata_dir = "{tmp_path / "data"}"\n')
    dialogue = (
        b"EHLO client\r\nMAIL FROM:<alice@example.test>\r\n"
        b"RCPT TO:<bob@example.test> NOTIFY=FAILURE\r\nDATA\r\n"
        b"To: bob\r\nSubject: via -bs\r\n\r\n..dot-stuffed\r\n.\r\n"
        b"AUTH PLAIN AGFsaWNlAHB3\r\nQUIT\r\n"
    )
    out = io.BytesIO()
    code = await asyncio.to_thread(
        run, ["--config", str(config), "-bs"], io.BytesIO(dialogue), out, io.StringIO()
    )
    assert code == 0
    replies = out.getvalue().decode().split("\r\n")
    assert replies[0].startswith("220 mx.test ")
    assert any(r.startswith("250 2.0.0 Ok: queued as ") for r in replies)
    assert any(r.startswith("221") for r in replies)
    assert not any(r.startswith("235") for r in replies)  # no AUTH here
    h = Harness(tmp_path, store)
    assert await h.pickup.scan() == 1
    [message] = h.queued
    assert message.envelope.recipients[0].notify == Notify.FAILURE
    assert h.body(message).endswith(b"\r\n\r\n.dot-stuffed\r\n")
