"""DirSyncer: concurrent callers share directory fsyncs, and none returns uncovered."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from kittiwake import fsutil


def test_every_caller_is_covered_by_an_fsync_that_started_after_its_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    starts: list[float] = []
    lock = threading.Lock()

    def slow_fsync(path: Path) -> None:
        with lock:
            starts.append(time.monotonic())
        time.sleep(0.01)

    monkeypatch.setattr(fsutil, "fsync_dir", slow_fsync)
    syncer = fsutil.DirSyncer()
    requested: list[float] = []
    returned: list[float] = []

    def worker() -> None:
        t = time.monotonic()
        syncer.sync(tmp_path)
        with lock:
            requested.append(t)
            returned.append(time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(returned) == 40
    # Coalesced: far fewer fsyncs than callers.
    assert 1 <= len(starts) < 20
    # Each caller saw an fsync begin after it asked and end before it returned.
    for asked, done in zip(requested, returned, strict=True):
        assert any(asked <= s and s + 0.01 <= done + 1e-3 for s in starts)


def test_a_failed_fsync_is_retried_not_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def flaky(path: Path) -> None:
        calls.append(path)
        if len(calls) == 1:
            raise OSError("EIO")

    monkeypatch.setattr(fsutil, "fsync_dir", flaky)
    syncer = fsutil.DirSyncer()
    with pytest.raises(OSError):
        syncer.sync(tmp_path)
    syncer.sync(tmp_path)
    assert len(calls) == 2


def test_real_directory(tmp_path: Path) -> None:
    fsutil.DirSyncer().sync(tmp_path)
