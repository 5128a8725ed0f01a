"""Micro-benchmark of the queue store's group commit: N concurrent sessions commit messages.

    .venv/bin/python bench/store_bench.py --sessions 50 --messages 5000 --fsync pool
    .venv/bin/python bench/store_bench.py --compare        # every fsync mode, same run

Each "session" loops: new_message → write a 4 KiB body in 1 KiB chunks → commit. With
``--deliver`` every commit is followed by a record() of a DELIVERED outcome (message removed),
the steady state of a server that delivers as fast as it accepts. ``--pipeline`` runs the
real path instead: Cleanup (Received header) → store → Scheduler → MaildirAgent, and
prints the accept rate and the rate at which the mail lands in Maildirs. Prints commits/s, the
number of SQLite transactions and the mean batch size. The store lives in a temporary
directory on the same filesystem as this checkout (``--dir`` to change), never in tmpfs.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from kittiwake.cleanup.writer import Cleanup
from kittiwake.delivery.api import LOCAL_ROUTE, Outcome, QueuedMessage, RecipientStatus
from kittiwake.delivery.local import LocalMailboxes
from kittiwake.delivery.maildir import MaildirAgent
from kittiwake.envelope import Envelope, Recipient, Reply, SessionInfo
from kittiwake.queue.api import DsnKind, DsnRecipient
from kittiwake.queue.scheduler import Scheduler, SchedulerSettings
from kittiwake.queue.sqlite import FsyncMode, SQLiteStore

BODY = b""  # set by main()
ENVELOPE = Envelope("sender@example.org", (Recipient("rcpt@example.com"),))
DELIVERED = (Outcome(0, RecipientStatus.DELIVERED, Reply(250, "2.0.0", "ok")),)


async def session(store: SQLiteStore, count: int, deliver: bool) -> None:
    for _ in range(count):
        w = store.new_message()
        for i in range(0, len(BODY), 1024):
            w.write(BODY[i : i + 1024])
        msg = await store.commit(w, ENVELOPE)
        if deliver:
            await store.record(msg.queue_id, DELIVERED)


async def run(
    root: Path,
    mode: FsyncMode,
    sessions: int,
    messages: int,
    threads: int,
    deliver: bool,
    inline: bool,
) -> None:
    data = Path(tempfile.mkdtemp(prefix="store-bench-", dir=root))
    try:
        store = SQLiteStore(data, inline_bodies=inline, fsync=mode, fsync_threads=threads)
        await store.open()
        per = messages // sessions
        t0 = time.perf_counter()
        await asyncio.gather(*(session(store, per, deliver) for _ in range(sessions)))
        elapsed = time.perf_counter() - t0
        await store.close()
        n = per * sessions
        print(
            f"inline={inline!s:<5} fsync={mode:<10} threads={threads:<3} sessions={sessions:<4}"
            f" deliver={deliver!s:<5} size={len(BODY)}"
            f" {n / elapsed:8.0f} commits/s  {store.transactions:6d} transactions"
            f"  mean batch {(n * (2 if deliver else 1)) / max(1, store.transactions):5.1f}"
            f"  largest {store.largest_batch}"
        )
    finally:
        shutil.rmtree(data, ignore_errors=True)


class NoNotices:
    async def send(
        self, kind: DsnKind, message: QueuedMessage, recipients: Sequence[DsnRecipient]
    ) -> str | None:
        return None


async def pipeline(root: Path, sessions: int, messages: int, concurrency: int) -> None:
    data = Path(tempfile.mkdtemp(prefix="pipeline-bench-", dir=root))
    try:
        store = SQLiteStore(data)
        await store.open()
        boxes = LocalMailboxes(data / "mail", ["example.com"], [], "postmaster")
        agent = MaildirAgent(boxes, "bench.example")
        runner = Scheduler(
            store,
            {"local": agent},
            lambda address: LOCAL_ROUTE,
            NoNotices(),
            SchedulerSettings(destination_concurrency=concurrency),
        )
        runner.start()
        cleanup = Cleanup(store, "bench.example")
        info = SessionInfo("127.0.0.1", 40000, "127.0.0.1", 25, "client.example", esmtp=True)

        async def one_session(count: int) -> None:
            for _ in range(count):
                sink = cleanup.begin(info, ENVELOPE)
                for i in range(0, len(BODY), 1024):
                    sink.write(BODY[i : i + 1024])
                runner.submit(await sink.commit(ENVELOPE))

        per = messages // sessions
        t0 = time.perf_counter()
        await asyncio.gather(*(one_session(per) for _ in range(sessions)))
        accepted = time.perf_counter() - t0
        await runner.wait_idle()
        delivered = time.perf_counter() - t0
        await runner.stop()
        await store.close()
        n = per * sessions
        landed = len(list((data / "mail" / "example.com" / "rcpt" / "new").iterdir()))
        print(
            f"pipeline sessions={sessions} delivery-concurrency={concurrency} size={len(BODY)}:"
            f" accepted {n / accepted:.0f}/s, delivered to Maildir {n / delivered:.0f}/s"
            f" ({landed} files), {store.transactions} transactions"
        )
    finally:
        shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=50)
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--fsync", choices=["pool", "sequential", "syncfs"], default="pool")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--deliver", action="store_true")
    ap.add_argument("--files", action="store_true", help="every body a spool file")
    ap.add_argument("--compare", action="store_true", help="run every mode and thread count")
    ap.add_argument("--uvloop", action="store_true")
    ap.add_argument("--pipeline", action="store_true", help="cleanup → store → maildir")
    ap.add_argument("--concurrency", type=int, default=8, help="delivery workers (pipeline)")
    ap.add_argument("--dir", type=Path, default=Path(__file__).resolve().parent.parent)
    ap.add_argument("--size", type=int, default=4096, help="body octets (default 4096)")
    a = ap.parse_args()
    global BODY
    BODY = (b"X" * 1022 + b"\r\n") * (a.size // 1024) + b"Y" * (a.size % 1024)
    runner = asyncio.run
    if a.uvloop:
        import uvloop

        runner = uvloop.run
    if a.pipeline:
        runner(pipeline(a.dir, a.sessions, a.messages, a.concurrency))
    elif a.compare:
        configs: list[tuple[bool, FsyncMode, int]] = [
            (True, "pool", 8),
            (False, "sequential", 1),
            (False, "pool", 4),
            (False, "pool", 8),
            (False, "pool", 16),
            (False, "syncfs", 1),
        ]
        for sessions in (1, 50):
            for inline, mode, threads in configs:
                runner(run(a.dir, mode, sessions, a.messages, threads, a.deliver, inline))
    else:
        runner(run(a.dir, a.fsync, a.sessions, a.messages, a.threads, a.deliver, not a.files))


if __name__ == "__main__":
    main()
