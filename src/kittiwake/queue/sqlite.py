"""The embedded queue store: SQLite metadata (and small bodies) plus spool files, group commit.

Owns ``SQLiteStore`` (implements ``queue.api.Store``). Layout under ``data_dir/queue/``:
``queue.db`` (+ WAL), ``spool/<queue_id>`` for bodies over 64 KiB, and ``lock`` (an flock:
one process per queue). Security sensitive in one way: it is the durability promise behind
every 250 reply.

Group commit (design practice 5): ``commit`` and ``record`` only enqueue a job and await
its future. One committer task takes *every* job waiting at that moment as a batch and
hands it to the database thread, which (1) flushes and fdatasyncs the batch's spool files
(in a small thread pool: the filesystem merges concurrent journal commits), (2) fsyncs the
spool directory once, (3) writes all rows — new messages with their small bodies inline,
recipients' outcomes — in ONE SQLite transaction (one WAL fsync), then (4) unlinks the spool
files of finished messages. Only then are the waiters' futures resolved. While a batch is
on disk, new jobs pile up for the next one, so the batch grows with the load by itself.

Admin and notice bookkeeping (hold, release, delete, make due, notices sent) ride the same
batches as small "operations" run inside the transaction, so they are durable when their
future resolves and cost no fsync of their own under load.

Crash consistency: the row is the commit marker. A spool file with no row (crash before the
transaction, or a client gone mid-DATA) is deleted at ``open``; a row whose spool file is
missing is logged as corruption and *held* (kept, never offered for delivery).
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import io
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO, Literal, TypeVar

from kittiwake.delivery.api import Outcome, QueuedMessage, QueuedRecipient, RecipientStatus
from kittiwake.envelope import Envelope
from kittiwake.errors import StoreError
from kittiwake.fsutil import fsync_dir
from kittiwake.queue.api import SpoolWriter
from kittiwake.queue.ids import is_queue_id, new_queue_id
from kittiwake.queue.spool import SpoolFile, syncfs
from kittiwake.queue.sqladmin import StoreAdmin
from kittiwake.queue.sqlbatch import Batch, Commit, Op, OpFn, Record, retrieved, settle
from kittiwake.queue.sqldb import QueueDB, read_body
from kittiwake.queue.sqlgreylist import SQLiteGreylist

log = logging.getLogger("kittiwake.queue")

FsyncMode = Literal["pool", "sequential", "syncfs"]
_T = TypeVar("_T")


class SQLiteStore(StoreAdmin):
    """``Store`` on SQLite (WAL, synchronous=FULL) + a flat spool directory.

    ``inline_bodies`` (default True) keeps bodies that fit the writer's 64 KiB memory buffer
    in the database, inside the commit transaction; False makes every body a spool file.
    ``fsync`` picks how a batch's spool files reach the disk: ``"pool"`` (fdatasync each in
    ``fsync_threads`` threads at once), ``"sequential"``, or ``"syncfs"`` (one Linux
    syncfs(2) for the whole filesystem: only for a dedicated spool filesystem).
    Counters ``transactions``, ``committed`` and ``largest_batch`` show the batching at work.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        inline_bodies: bool = True,
        fsync: FsyncMode = "pool",
        fsync_threads: int = 8,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.queue_dir = Path(data_dir) / "queue"
        self.spool_dir = self.queue_dir / "spool"
        self.db_path = self.queue_dir / "queue.db"
        self._inline = inline_bodies
        self._fsync_mode = fsync
        self._fsync_threads = max(1, fsync_threads)
        self._clock = clock
        self._db: QueueDB | None = None  # touched only in the database thread
        self._db_thread: ThreadPoolExecutor | None = None
        self._fsync_pool: ThreadPoolExecutor | None = None
        self._readers: list[sqlite3.Connection] = []  # for open_body, any thread
        self._readers_lock = threading.Lock()
        self._lock_fd: int | None = None
        self._waiting = Batch()
        self._committer: asyncio.Task[None] | None = None
        self._closing = False
        self.transactions = 0  # batches written (each one SQLite transaction)
        self.committed = 0  # messages committed
        self.largest_batch = 0  # most jobs (commits + records) in one transaction

    # -- life cycle -------------------------------------------------------------------------

    async def open(self) -> None:
        try:
            self.spool_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._lock_fd = os.open(self.queue_dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._release_lock()
            raise StoreError(f"cannot open queue {self.queue_dir}: {exc}") from exc
        self._db_thread = ThreadPoolExecutor(1, thread_name_prefix="kittiwake-store")
        if self._fsync_mode == "pool":
            self._fsync_pool = ThreadPoolExecutor(
                self._fsync_threads, thread_name_prefix="kittiwake-fsync"
            )
        self._closing = False
        try:
            await self._in_db(self._open_db)
        except BaseException:
            await self.close()
            raise

    def _open_db(self) -> None:
        self._db = db = QueueDB(self.db_path)
        spooled = db.spooled_ids()
        files = {e.name for e in os.scandir(self.spool_dir) if e.is_file(follow_symlinks=False)}
        leftovers = files - spooled
        for name in leftovers:  # uncommitted: crash before the row, or client gone
            try:
                os.unlink(self.spool_dir / name)
            except OSError as exc:
                log.error("cannot remove uncommitted spool file %s: %s", name, exc)
        if leftovers:
            log.info("removed %d uncommitted spool file(s)", len(leftovers))
        already = db.held()
        for qid in sorted(spooled - files - already.keys()):
            log.critical("%s: CORRUPT QUEUE: spool file missing; message held", qid)
            db.begin()
            db.hold(qid, "spool file missing")
            db.commit()
        log.info("queue %s open: %d message(s)", self.queue_dir, db.count())

    async def close(self) -> None:
        """Finish the batch on disk and close. Stop the producers (SMTP sessions, the
        delivery runner) first: a ``record`` arriving during close fails with StoreError."""
        self._closing = True
        if self._committer is not None:
            await asyncio.shield(self._committer)
            self._committer = None
        if self._db_thread is not None:
            if self._db is not None:
                await self._in_db(self._db.close)
                self._db = None
            self._db_thread.shutdown(wait=True)
            self._db_thread = None
        if self._fsync_pool is not None:
            self._fsync_pool.shutdown(wait=True)
            self._fsync_pool = None
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        self._release_lock()

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    # -- receiving ------------------------------------------------------------------------

    def greylist_state(self) -> SQLiteGreylist:
        return SQLiteGreylist(self.db_path)  # tables: sqlschema migration 2 → 3

    def new_message(self) -> SpoolWriter:
        if self._db_thread is None or self._closing:
            raise StoreError("queue store is not open")
        qid = new_queue_id()
        return SpoolFile(qid, self.spool_dir / qid)

    async def commit(self, writer: SpoolWriter, envelope: Envelope) -> QueuedMessage:
        if not isinstance(writer, SpoolFile):
            raise TypeError("commit() takes a writer from this store's new_message()")
        if self._db_thread is None or self._closing:
            raise StoreError("queue store is not open")
        if not envelope.recipients:  # it could never be delivered nor removed
            raise StoreError(f"{writer.queue_id}: a message needs at least one recipient")
        writer.detach()  # no more writes from here on
        future: asyncio.Future[QueuedMessage] = asyncio.get_running_loop().create_future()
        future.add_done_callback(retrieved)
        inline = self._inline and writer.in_memory
        self._waiting.commits.append(Commit(writer, envelope, future, inline))
        self._kick()
        # Shield: a caller cancelled mid-commit (client gone) must not tear the batch.
        return await asyncio.shield(future)

    # -- delivery side --------------------------------------------------------------------

    async def record(
        self,
        queue_id: str,
        outcomes: Sequence[Outcome],
        *,
        route: str | None = None,
        notices: Mapping[int, str] | None = None,
        diagnostics: Mapping[int, str] | None = None,
    ) -> None:
        """Record one attempt's outcomes in place (``Store.record``), durably, batched.

        Extras for the scheduler: ``route`` (the Route.key tried), ``notices`` (recipient
        index → the final DSN action owed: "failed", "delivered", "relayed"; recorded in the
        same transaction as the final state, so a crash can neither lose the notice nor
        forget that it is owed), ``diagnostics`` (index → the reply a DSN should quote when
        it differs from the outcome's). A message is removed once no recipient is live and
        no notice is owed."""
        if self._db_thread is None:
            raise StoreError("queue store is not open")
        if not outcomes:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.add_done_callback(retrieved)
        job = Record(queue_id, tuple(outcomes), future, route, notices, diagnostics)
        self._waiting.records.append(job)
        self._kick()
        await asyncio.shield(future)

    async def _op(self, fn: OpFn) -> Any:
        if self._db_thread is None or self._closing:
            raise StoreError("queue store is not open")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.add_done_callback(retrieved)
        self._waiting.ops.append(Op(fn, future))
        self._kick()
        return await asyncio.shield(future)

    async def pending(self, *, due_before: float | None = None) -> list[QueuedMessage]:
        return await self._in_db(lambda: self._conn().pending(due_before))

    async def get(self, queue_id: str) -> QueuedMessage | None:
        if not is_queue_id(queue_id):
            return None
        return await self._in_db(lambda: self._conn().get(queue_id))

    async def get_many(self, queue_ids: Sequence[str]) -> dict[str, QueuedMessage]:
        """Several messages in one database call (the scheduler loads deferred mail in
        batches: one thread hop and one query instead of one per message)."""
        ids = [q for q in queue_ids if is_queue_id(q)]
        if not ids:
            return {}
        found = await self._in_db(lambda: self._conn().get_many(ids))
        return {m.queue_id: m for m in found}

    async def held(self) -> dict[str, str]:
        """Queue ids kept but not offered for delivery, with the reason (admin use)."""
        return await self._in_db(lambda: self._conn().held())

    def open_body(self, queue_id: str) -> BinaryIO:
        """The committed body. Blocking (a file open or a database read): call it from a
        worker thread, as the delivery agents do. An inline body comes back as BytesIO."""
        if not is_queue_id(queue_id):
            raise StoreError(f"not a queue id: {queue_id!r}")
        try:
            return open(self.spool_dir / queue_id, "rb")  # the caller closes it
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StoreError(f"{queue_id}: cannot open spool file: {exc}") from exc
        data = self._read_inline(queue_id)
        if data is None:
            raise StoreError(f"{queue_id}: no such message body")
        return io.BytesIO(data)

    def _read_inline(self, queue_id: str) -> bytes | None:
        # A small pool of reader connections: WAL readers never wait for the writer thread.
        with self._readers_lock:
            conn = self._readers.pop() if self._readers else None
        try:
            if conn is None:
                conn = sqlite3.connect(self.db_path, check_same_thread=False)
            return read_body(conn, queue_id)
        except sqlite3.Error as exc:
            raise StoreError(f"{queue_id}: cannot read body: {exc}") from exc
        finally:
            if conn is not None:
                with self._readers_lock:
                    if self._db_thread is None:  # closed meanwhile
                        conn.close()
                    else:
                        self._readers.append(conn)

    # -- group commit ---------------------------------------------------------------------

    def _kick(self) -> None:
        if self._committer is None or self._committer.done():
            self._committer = asyncio.get_running_loop().create_task(self._run_committer())

    async def _run_committer(self) -> None:
        while self._waiting.commits or self._waiting.records or self._waiting.ops:
            batch, self._waiting = self._waiting, Batch()
            try:
                await self._in_db(functools.partial(self._write_batch, batch))
            except Exception as exc:  # the executor itself failed
                batch.error = exc
            settle(batch)
            # Let the waiters just resolved run first: the scheduler's next records (and a
            # session's next commit) then join the next batch instead of trailing it alone.
            await asyncio.sleep(0)

    def _write_batch(self, batch: Batch) -> None:
        """Database thread: spool files to disk, then one transaction. Errors land in
        ``batch`` (whole batch) or in each ``_Commit`` (its own spool file)."""
        db = self._conn()
        files = self._sync_files([c for c in batch.commits if not c.inline])
        now = self._clock()
        rows: list[tuple[QueuedMessage, bytes | None]] = []
        for c in batch.commits:
            if c.error is not None:
                continue
            w = c.writer
            rcpts = tuple(
                QueuedRecipient(i, r.address, RecipientStatus.PENDING)
                for i, r in enumerate(c.envelope.recipients)
            )
            msg = QueuedMessage(w.queue_id, c.envelope, now, w.size, rcpts)
            rows.append((msg, w.memory_body() if c.inline else None))
        finished: list[str] = []
        try:
            if files:
                fsync_dir(self.spool_dir)  # the new names must survive a crash too
            db.begin()
            try:
                db.insert(rows)
                for r in batch.records:
                    db.apply(
                        r.queue_id,
                        r.outcomes,
                        now,
                        route=r.route,
                        notices=r.notices,
                        diagnostics=r.diagnostics,
                    )
                for qid in dict.fromkeys(r.queue_id for r in batch.records):
                    if db.remove_if_finished(qid):
                        finished.append(qid)
                for op in batch.ops:
                    op.result, unlink = op.fn(db, now)
                    finished += unlink
                db.commit()
            except BaseException:
                db.rollback()
                raise
        except Exception as exc:
            batch.error = exc
            return
        batch.queued = [m for m, _ in rows]
        self.transactions += 1
        self.committed += len(rows)
        jobs = len(batch.commits) + len(batch.records) + len(batch.ops)
        self.largest_batch = max(self.largest_batch, jobs)
        for qid in finished:  # not durable on purpose: a leftover is removed at open()
            try:
                os.unlink(self.spool_dir / qid)
            except OSError as exc:
                log.error("%s: cannot remove spool file: %s", qid, exc)

    def _sync_files(self, commits: list[Commit]) -> int:
        """Make these bodies' spool files durable; returns how many made it."""
        if not commits:
            return 0
        each = self._fsync_mode != "syncfs"

        def one(c: Commit) -> None:
            try:
                c.writer.sync(fsync=each)
            except Exception as exc:
                c.error = exc

        if self._fsync_pool is not None and len(commits) > 1:
            list(self._fsync_pool.map(one, commits))
        else:
            for c in commits:
                one(c)
        if not each:
            try:
                syncfs(self.spool_dir)
            except OSError as exc:
                for c in commits:
                    c.error = c.error or exc
        return sum(c.error is None for c in commits)

    # -- plumbing ---------------------------------------------------------------------------

    def _conn(self) -> QueueDB:
        if self._db is None:
            raise StoreError("queue store is not open")
        return self._db

    async def _in_db(self, fn: Callable[[], _T]) -> _T:
        if self._db_thread is None:
            raise StoreError("queue store is not open")
        return await asyncio.get_running_loop().run_in_executor(self._db_thread, fn)


__all__ = ["FsyncMode", "SQLiteStore"]
