"""What the scheduler and the queue admin ask of the SQLite store beyond ``queue.api.Store``.

Owns ``StoreAdmin``, a mixin of ``SQLiteStore``: notice bookkeeping (``notices_sent``),
hold/release, delete, make-due (retry, flush, ETRN), and the listings (``all_messages``,
``schedule``, ``summary``). Every write is an operation inside the store's group commit, so
it is durable when it returns. Mildly security sensitive: queue ids from outside (the
control socket) pass ``is_queue_id`` before they touch anything.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, TypeVar

from kittiwake.delivery.api import QueuedMessage
from kittiwake.queue.api import QueueSummary
from kittiwake.queue.ids import is_queue_id
from kittiwake.queue.sqlbatch import OpFn
from kittiwake.queue.sqldb import QueueDB

_T = TypeVar("_T")


class StoreAdmin:
    """Mixin: needs the host's ``_op`` (run in the next batch) and ``_in_db`` (read)."""

    async def _op(self, fn: OpFn) -> Any:
        raise NotImplementedError

    async def _in_db(self, fn: Callable[[], _T]) -> _T:
        raise NotImplementedError

    def _conn(self) -> QueueDB:
        raise NotImplementedError

    async def notices_sent(
        self, queue_id: str, indices: Collection[int], *, delay: bool = False
    ) -> bool:
        """Mark the notice for these recipients sent: the final one (owed since ``record``),
        or with ``delay`` the delay warning. True when the message is now gone."""

        def op(db: QueueDB, now: float) -> tuple[bool, list[str]]:
            db.notices_sent(queue_id, indices, delay=delay)
            if delay:
                return False, []
            spooled = db.remove_if_finished(queue_id)
            return spooled is not None, [queue_id] if spooled else []

        result: bool = await self._op(op)
        return result

    async def hold(self, queue_id: str, reason: str = "held by the administrator") -> bool:
        """Keep the message but offer it for delivery no more; False if there is none."""
        if not is_queue_id(queue_id):
            return False
        result: bool = await self._op(lambda db, now: (db.hold(queue_id, reason), []))
        return result

    async def release(self, queue_id: str) -> bool:
        """Undo ``hold``; False if there is no such message."""
        if not is_queue_id(queue_id):
            return False
        result: bool = await self._op(lambda db, now: (db.hold(queue_id, None), []))
        return result

    async def delete(self, queue_id: str) -> bool:
        """Remove a message, its recipients and its body, whatever their state."""
        if not is_queue_id(queue_id):
            return False

        def op(db: QueueDB, now: float) -> tuple[bool, list[str]]:
            spooled = db.delete(queue_id)
            return spooled is not None, [queue_id] if spooled else []

        result: bool = await self._op(op)
        return result

    async def make_due(
        self, *, queue_id: str | None = None, domain: str | None = None
    ) -> list[str]:
        """Make deferred recipients due now — of one message, of one recipient domain
        (``.example.org``: its subdomains), or all; the unheld queue ids touched."""
        if queue_id is not None and not is_queue_id(queue_id):
            return []
        result: list[str] = await self._op(
            lambda db, now: (db.make_due(now, queue_id=queue_id, domain=domain), [])
        )
        return result

    async def all_messages(self) -> list[QueuedMessage]:
        """Every message (held ones, and ones only owing a notice, included)."""
        return await self._in_db(lambda: self._conn().all())

    async def schedule(self) -> list[tuple[str, float]]:
        """(queue id, when next due) of every unheld message with work left (start-up)."""
        return await self._in_db(lambda: self._conn().schedule())

    async def summary(self) -> QueueSummary:
        """``mailq``-style counts and ages by destination domain."""
        return await self._in_db(lambda: self._conn().summary())
