"""Optional profiling of Kittiwake's drain with py-spy, and a summary of where the time went.

Owns ``py_spy`` (a context manager: ``py-spy record`` attached to the server's PID for
exactly the drain, stopped with SIGINT, which makes it write its collapsed-stack file) and
``hot_spots`` (reads that file; the share of samples per ``file:function``, both *self* —
the function was on top of the stack — and *inclusive* — it was anywhere on the stack).
py-spy is not a project dependency: ``bench/relay.py --py-spy PATH`` names a binary
installed elsewhere (e.g. ``python3 -m venv /tmp/pyspy && /tmp/pyspy/bin/pip install
py-spy``).

Not security-sensitive (benchmark tooling); py-spy reads another process's memory, which
needs root or ptrace permission — only the server we started is attached.
"""

from __future__ import annotations

import os
import pstats
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


@contextmanager
def py_spy(
    binary: str, pid: int, out: Path, rate: int = 200, extra: Sequence[str] = ()
) -> Iterator[None]:
    """Sample ``pid`` (all threads, idle ones left out) while the block runs."""
    cmd = [binary, "record", "-p", str(pid), "-r", str(rate), "-f", "raw", "-o", str(out)]
    log = out.with_suffix(".log")
    with open(log, "wb") as f:
        proc = subprocess.Popen(
            [*cmd, *extra], stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )
    time.sleep(1.0)  # attached before the timed part starts
    try:
        yield
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@contextmanager
def signalled(pid: int, out: Path, timeout: float = 30.0) -> Iterator[None]:
    """SIGUSR1 to a server run by ``bench.relay_cprofile`` (profiling on), SIGUSR2 at the
    end (off, and the stats are written to ``out``); waits for the file."""
    out.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR1)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGUSR2)
        deadline = time.monotonic() + timeout
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)  # dump_stats writes it in one go, but give it a moment


def cprofile_report(path: Path, top: int = 30) -> str:
    """The functions with the most own time, and the most cumulative time."""
    stats = pstats.Stats(str(path))
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = []
    for (file, _line, func), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append((tt, ct, nc, _short(file) + ":" + func))
    lines = [f"cProfile: {total:.2f}s profiled on the event-loop thread — own time, top {top}:"]
    for tt, _ct, nc, name in sorted(rows, reverse=True)[:top]:
        lines.append(f"  {tt / total:6.1%}  {tt:7.2f}s  {nc:>9} calls  {name}")
    lines.append(f"cumulative time (callees included), top {top}:")
    for _tt, ct, nc, name in sorted(rows, key=lambda r: r[1], reverse=True)[:top]:
        lines.append(f"  {ct / total:6.1%}  {ct:7.2f}s  {nc:>9} calls  {name}")
    return "\n".join(lines)


def _short(path: str) -> str:
    for marker in ("/src/", "/site-packages/", "/lib/python3.11/", "/lib/python3."):
        if marker in path:
            return path.rsplit(marker, 1)[1]
    return path


def _name(frame: str) -> str:
    """``kittiwake/queue/sqlite.py:record`` — line numbers dropped, paths shortened."""
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    return f"{_short(m['file'])}:{m['func']}"


def hot_spots(raw: Path, only: str = "") -> tuple[int, Counter[str], Counter[str]]:
    """(total samples, self samples per file:function, inclusive samples per file:function)
    from a py-spy ``-f raw`` file (``frame;frame;... count`` lines, outermost first);
    ``only``: just the stacks with a frame containing that text (``Runner.run``: the
    event-loop thread)."""
    total = 0
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit() or only not in stack:
            continue
        n = int(count_text)
        frames = [_name(f) for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith("process ") and not f.startswith("thread ")]
        if not frames:
            continue
        total += n
        own[frames[-1]] += n
        for name in set(frames):
            incl[name] += n
    return total, own, incl


def report(raw: Path, top: int = 25, only: str = "", what: str = "all threads") -> str:
    total, own, incl = hot_spots(raw, only)
    if not total:
        return f"no samples in {raw}"
    lines = [f"py-spy, {what}: {total} samples (non-idle) — self time, top {top}:"]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in own.most_common(top)]
    lines.append(f"inclusive time (on the stack), top {top}:")
    lines += [f"  {n / total:6.1%}  {name}" for name, n in incl.most_common(top)]
    return "\n".join(lines)
