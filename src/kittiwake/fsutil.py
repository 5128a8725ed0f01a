"""Durability helpers shared by every part that writes files it has promised to keep.

Imports nothing of ours, so ``queue`` and ``delivery`` can both use it.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make new (or removed) directory entries durable: fsync of a file alone is not enough."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _DirState:
    __slots__ = ("completed", "cond", "requested", "running")

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.requested = 0  # tickets handed out
        self.completed = 0  # every ticket up to this one is covered by a finished fsync
        self.running = False


class DirSyncer:
    """Group fsync of a directory for threads that renamed entries into it.

    A caller is covered by any fsync that *started* after its request: one running fsync
    serves everyone who asked before it began, the next one everyone who asked while it
    ran. Under load N deliveries into one Maildir cost about two directory fsyncs, not N.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dirs: dict[Path, _DirState] = {}

    def sync(self, path: Path) -> None:
        with self._lock:
            state = self._dirs.get(path)
            if state is None:
                state = self._dirs[path] = _DirState()
        with state.cond:
            state.requested += 1
            ticket = state.requested
            while state.completed < ticket:
                if not state.running:
                    break
                state.cond.wait()
            else:
                return
            state.running = True
            target = state.requested
        ok = False
        try:
            fsync_dir(path)
            ok = True
        finally:
            with state.cond:
                state.running = False
                if ok:
                    state.completed = max(state.completed, target)
                state.cond.notify_all()
