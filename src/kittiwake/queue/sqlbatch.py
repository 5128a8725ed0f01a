"""The group commit's jobs and how a written batch resolves its waiters.

Owns the job records that ``SQLiteStore`` queues for its committer — a commit (new message),
a record (one attempt's outcomes), an operation (admin or notice bookkeeping run inside the
transaction) — the ``Batch`` that carries them into one SQLite transaction, and ``settle``,
which resolves every waiter once the batch is durable (or failed). Security sensitive only
as part of the durability promise: no waiter may hear "done" before its batch committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kittiwake.delivery.api import Outcome, QueuedMessage
from kittiwake.envelope import Envelope
from kittiwake.errors import StoreError
from kittiwake.queue.spool import SpoolFile
from kittiwake.queue.sqldb import QueueDB

log = logging.getLogger("kittiwake.queue")


@dataclass(slots=True)
class Commit:
    writer: SpoolFile
    envelope: Envelope
    future: asyncio.Future[QueuedMessage]
    inline: bool
    error: Exception | None = None


@dataclass(slots=True)
class Record:
    queue_id: str
    outcomes: Sequence[Outcome]
    future: asyncio.Future[None]
    route: str | None = None
    notices: Mapping[int, str] | None = None
    diagnostics: Mapping[int, str] | None = None


# An operation runs in the batch's transaction: it returns its result and the queue ids of
# messages it deleted that had a spool file (unlinked once the transaction is durable).
OpFn = Callable[[QueueDB, float], tuple[Any, list[str]]]


@dataclass(slots=True)
class Op:
    fn: OpFn
    future: asyncio.Future[Any]
    result: Any = None


@dataclass(slots=True)
class Batch:
    commits: list[Commit] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)
    error: Exception | None = None  # fails every job of the batch
    queued: list[QueuedMessage] = field(default_factory=list)


def settle(batch: Batch) -> None:
    """Event loop: resolve every waiter of a written (or failed) batch."""
    queued = {m.queue_id: m for m in batch.queued}
    for c in batch.commits:
        msg = queued.get(c.writer.queue_id)
        if msg is not None:
            c.writer.mark_committed()
            if not c.future.done():
                c.future.set_result(msg)
            continue
        exc = c.error or batch.error or StoreError("commit failed")
        try:
            c.writer.abort()
        except StoreError as abort_exc:
            log.error("%s", abort_exc)
        log.error("%s: commit failed: %s", c.writer.queue_id, exc)
        if not c.future.done():
            c.future.set_exception(as_store_error(c.writer.queue_id, exc))
    for r in batch.records:
        if r.future.done():
            continue
        if batch.error is None:
            r.future.set_result(None)
        else:
            r.future.set_exception(as_store_error(r.queue_id, batch.error))
    for op in batch.ops:
        if op.future.done():
            continue
        if batch.error is None:
            op.future.set_result(op.result)
        else:
            op.future.set_exception(as_store_error("queue", batch.error))


def retrieved(future: asyncio.Future[Any]) -> None:
    # A caller cancelled while its job was on disk never reads the outcome; it has been
    # logged already, so keep asyncio from reporting "exception was never retrieved".
    if not future.cancelled():
        future.exception()


def as_store_error(queue_id: str, exc: BaseException) -> StoreError:
    if isinstance(exc, StoreError):
        return exc
    err = StoreError(f"{queue_id}: {exc}")
    err.__cause__ = exc
    return err
