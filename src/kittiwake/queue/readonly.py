"""A read-only view of the queue, for ``kittiwake queue`` when no control socket answers.

Owns ``ReadOnlyQueue``. It opens ``queue.db`` with a ``mode=ro`` URI and never takes the
store's flock, so it works both while the server runs (WAL readers never block the writer,
nor are they blocked by it: each read sees the last committed state) and while it is down.
It never writes, so it cannot upgrade an old schema: it says so instead. Not security
sensitive beyond that promise (queue ids from the command line pass ``is_queue_id``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from kittiwake.delivery.api import QueuedMessage
from kittiwake.errors import StoreError
from kittiwake.queue.api import QueueSummary
from kittiwake.queue.ids import is_queue_id
from kittiwake.queue.sqldb import QueueDB

__all__ = ["QueueSummary", "ReadOnlyQueue"]

_T = TypeVar("_T")


class ReadOnlyQueue:
    """``list()``, ``get(qid)``, ``summary()`` over ``<data_dir>/queue/queue.db``.

    Synchronous (a CLI calls it). The connection opens at the first call and is closed by
    ``close()`` or the ``with`` block. Raises ``StoreError`` when there is no queue.
    """

    def __init__(self, data_dir: Path) -> None:
        self.db_path = Path(data_dir) / "queue" / "queue.db"
        self._db: QueueDB | None = None

    def _conn(self) -> QueueDB:
        if self._db is None:
            if not self.db_path.is_file():
                raise StoreError(f"no queue at {self.db_path.parent}")
            self._db = QueueDB(self.db_path, readonly=True)
        return self._db

    def list(self) -> list[QueuedMessage]:
        """Every message, oldest first (held ones included)."""
        return self._read(lambda db: db.all())

    def get(self, queue_id: str) -> QueuedMessage | None:
        if not is_queue_id(queue_id):
            return None
        return self._read(lambda db: db.get(queue_id))

    def summary(self) -> QueueSummary:
        """Counts and ages by destination domain (``mailq`` summary)."""
        return self._read(lambda db: db.summary())

    def _read(self, fn: Callable[[QueueDB], _T]) -> _T:
        try:
            return fn(self._conn())
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read queue database {self.db_path}: {exc}") from exc

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> ReadOnlyQueue:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
