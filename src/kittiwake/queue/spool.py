"""Spool files: one file per message body, ``<data_dir>/queue/spool/<queue_id>``.

Owns ``SpoolFile`` (the ``queue.api.SpoolWriter`` implementation) and the fsync helpers the
store's group commit uses. Security sensitive only in that paths are built from queue ids,
which ``queue.ids.is_queue_id`` vets.

The directory is flat: ext4/xfs index large directories (htree), and one directory means one
directory fsync per commit batch instead of one per hashed subdirectory touched.
A spool file with no database row is, by definition, uncommitted (``SQLiteStore.open``
deletes it): the row is the commit marker, so the file is written and fsynced *before* the
row is inserted.

Small bodies never become files (measured, see bench/store_bench.py and the README): the
first ``memory_limit`` octets (64 KiB, the write buffer a file would have had anyway) stay in
memory. If the body ends within that limit, the store writes it *into the database row's
transaction* (table ``bodies``), so one WAL fsync makes a whole batch durable — creating and
fsyncing one new file per message costs a journal commit each on ext4, 10-30× slower. A
larger body spills to its spool file as soon as it outgrows the limit; that file is fsynced
at commit, in a worker thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from pathlib import Path
from typing import BinaryIO

from kittiwake.errors import StoreError

BUFFER_SIZE = 64 * 1024


class SpoolFile:
    """A body being received: in memory up to ``memory_limit`` octets, then in a file.

    States: receiving → detached (the store's committer owns it) → committed, or aborted.
    ``write`` is synchronous and never fsyncs. ``abort`` unlinks, is idempotent and never
    removes a committed body.
    """

    __slots__ = (
        "_buf",
        "_closed",
        "_committed",
        "_file",
        "_limit",
        "_on_disk",
        "_queue_id",
        "_size",
        "path",
    )

    def __init__(self, queue_id: str, path: Path, memory_limit: int = BUFFER_SIZE) -> None:
        self._queue_id = queue_id
        self.path = path
        self._limit = memory_limit
        self._size = 0
        self._committed = False
        self._closed = False
        self._buf = bytearray()
        self._file: BinaryIO | None = None
        self._on_disk = False

    @property
    def queue_id(self) -> str:
        return self._queue_id

    @property
    def size(self) -> int:
        return self._size

    @property
    def in_memory(self) -> bool:
        """True while the whole body is still in memory (no file was created)."""
        return not self._on_disk

    def write(self, data: bytes) -> None:
        if self._closed:
            raise StoreError(f"{self._queue_id}: write to a closed spool file")
        try:
            if self._file is not None:
                self._file.write(data)
            elif len(self._buf) + len(data) <= self._limit:
                self._buf += data
            else:
                self._file = _create(self.path, BUFFER_SIZE)
                self._on_disk = True
                self._file.write(self._buf)
                self._buf = bytearray()
                self._file.write(data)
        except OSError as exc:
            raise StoreError(f"{self._queue_id}: spool write failed: {exc}") from exc
        self._size += len(data)

    def detach(self) -> None:
        """The committer takes over; further writes fail."""
        if self._closed:
            raise StoreError(f"{self._queue_id}: spool file already closed")
        self._closed = True

    def memory_body(self) -> bytes:
        """The body, when it never left memory (committer, to store it in the database)."""
        return bytes(self._buf)

    def sync(self, *, fsync: bool = True) -> None:
        """Worker thread: put the whole body in its file, fdatasync it (unless the caller
        syncs the filesystem itself) and close it."""
        f = self._file
        if f is None:
            f = self._file = _create(self.path, 0)
            self._on_disk = True
        try:
            if self._buf:
                f.write(self._buf)
                self._buf = bytearray()
            f.flush()
            if fsync:
                os.fdatasync(f.fileno())  # the size is included: it is needed to read back
        finally:
            self._file = None
            f.close()

    def mark_committed(self) -> None:
        self._committed = True
        self._buf = bytearray()

    def abort(self) -> None:
        if self._committed:
            return
        self._closed = True
        self._buf = bytearray()
        f, self._file = self._file, None
        if f is not None:
            with contextlib.suppress(OSError):  # unlinking below is what matters
                f.close()
        if not self._on_disk:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:  # left behind: removed by the next open() as uncommitted
            raise StoreError(f"{self._queue_id}: cannot remove spool file: {exc}") from exc


def _create(path: Path, buffering: int) -> BinaryIO:
    # "x": a fresh file; never append to someone else's leftovers.
    return open(path, "xb", buffering=buffering)


_libc: ctypes.CDLL | None = None


def syncfs(path: Path) -> None:
    """Linux syncfs(2): write back and flush the whole filesystem holding ``path``.

    One call covers every file and directory entry of a batch, but it also flushes whatever
    else is dirty on that filesystem, so it is only a win on a dedicated spool filesystem.
    """
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)
