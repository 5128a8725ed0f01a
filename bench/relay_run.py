"""One relay-throughput run: fill a server's queue with the sink down, then time the drain.

Owns ``DrainResult`` and ``run_drain``: inject N messages for ``remote.test`` with
``smtp-source`` while nothing listens at the next hop (so every message ends up deferred),
wait — bounded — until the queue holds exactly N deferred messages, then start the sink,
tell the server to flush its queue, and time until the sink has counted N messages and
the server's queue is empty. Afterwards a short settle period catches late duplicates;
the sink's final count must be exactly N and no bounce may have come back.

Not security-sensitive (benchmark tooling); loopback only.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import psutil

from bench.measure import MemorySampler, smtp_source_load
from bench.relay_parts import RCPT, QueueState, Sink, wait_until

MESSAGE_SIZE = 4096  # smtp-source -l: body octets per message


class RelayTarget(Protocol):
    name: str
    host: str
    port: int

    def alive(self) -> bool: ...
    def root_pid(self) -> int | None: ...
    def queue_state(self) -> QueueState: ...
    def flush(self) -> str: ...
    def bounces(self) -> int: ...


@dataclass
class DrainResult:
    server: str
    repeat: int
    messages: int  # N injected (and expected at the sink)
    inject_seconds: float = 0.0  # smtp-source wall time
    queued_seconds: float = 0.0  # from injection start until all N sat deferred
    sink_seconds: float = 0.0  # flush until the sink had counted N
    drain_seconds: float = 0.0  # flush until the sink had N and the queue was empty
    sink_messages: int = 0  # the sink's final count (after the settle period)
    sink_sessions: int = 0  # SMTP sessions the server opened to the sink
    queue_left: int = 0  # messages still queued at the end
    bounces: int = 0  # notices that came back to the sender
    cpu_seconds: float = 0.0  # server process tree, user + system, during the drain
    cpu_main_thread: float = 0.0  # of which the root process's main thread (event loop)
    rss_peak: int = 0  # server process tree, during the drain
    flush_command: str = ""
    progress: list[tuple[float, int]] = field(default_factory=list)  # (s after flush, count)
    errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Messages per second drained (until the sink had all and the queue was empty)."""
        return self.messages / self.drain_seconds if self.drain_seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rate": self.rate, "ok": self.ok}


def tree_cpu(root: int | None) -> float:
    """User + system CPU seconds of ``root``'s tree, including reaped children (Postfix's
    short-lived daemons); approximate when a child exits between two readings."""
    if root is None:
        return 0.0
    try:
        proc = psutil.Process(root)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for i, p in enumerate(procs):
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
            if i == 0:
                total += t.children_user + t.children_system
    return total


def main_thread_cpu(root: int | None) -> float:
    """User + system CPU seconds of the main thread of ``root`` (Kittiwake: the event
    loop; its other threads run SQLite writes and reads)."""
    if root is None:
        return 0.0
    try:
        for t in psutil.Process(root).threads():
            if t.id == root:
                return float(t.user_time + t.system_time)
    except psutil.Error:
        pass
    return 0.0


def run_drain(
    target: RelayTarget,
    sink: Sink,
    messages: int,
    repeat: int = 0,
    *,
    sessions: int = 50,
    per_session: int = 20,
    queue_timeout: float | None = None,
    drain_timeout: float | None = None,
    settle: float = 1.0,
    during_drain: Callable[[], AbstractContextManager[object]] | None = None,
) -> DrainResult:
    """Fill ``target``'s queue with ``messages`` deferred messages, then time the drain.
    ``during_drain()`` (a profiler, say) is entered just before the flush and left when
    the queue is empty."""
    res = DrainResult(target.name, repeat, messages)
    queue_timeout = queue_timeout or 120.0 + messages / 50
    drain_timeout = drain_timeout or 120.0 + messages / 20
    sink.stop()  # nothing may listen at the next hop while the queue fills
    if (left := target.queue_state().messages) != 0:
        res.errors.append(f"queue not empty before the run: {left} messages")
        return res

    # 1. Fill: every message is tried once (or skipped: dead destination) and deferred.
    start = time.perf_counter()
    load = smtp_source_load(
        target.host,
        target.port,
        messages=messages,
        sessions=min(sessions, messages),
        per_session=per_session,
        size=MESSAGE_SIZE,
        rcpt=RCPT,
        timeout=queue_timeout,
    )
    res.inject_seconds = load.seconds
    if load.errors:
        res.errors += [f"injection: {e}" for e in load.errors]
        return res
    want = QueueState(messages, messages)
    if not wait_until(
        lambda: target.queue_state() == want or not target.alive(), queue_timeout, 0.5
    ):
        res.errors.append(f"queue did not settle: {target.queue_state()} != {want}")
        return res
    if not target.alive():
        res.errors.append("server died while the queue filled")
        return res
    res.queued_seconds = time.perf_counter() - start

    # 2. Level the ground: other runs' dirty pages must not land on this drain's fsyncs.
    os.sync()
    time.sleep(0.5)

    # 3. Drain: sink up, flush, time until the sink has all and the queue is empty.
    sink.start()
    try:
        extra = during_drain() if during_drain else contextlib.nullcontext()
        with extra, MemorySampler(target.root_pid, interval=0.1, refresh=0.5) as mem:
            cpu0, main0 = tree_cpu(target.root_pid()), main_thread_cpu(target.root_pid())
            t0 = time.perf_counter()
            res.flush_command = target.flush()

            def done() -> bool:
                n = sink.count().messages
                now = time.perf_counter() - t0
                if not res.progress or now - res.progress[-1][0] >= 1.0:
                    res.progress.append((round(now, 3), n))
                return n >= messages or not (target.alive() and sink.alive())

            ok = wait_until(done, drain_timeout)
            res.sink_seconds = time.perf_counter() - t0
            if ok and sink.count().messages >= messages:
                ok = wait_until(
                    lambda: target.queue_state().messages == 0 or not target.alive(),
                    max(1.0, drain_timeout - res.sink_seconds),
                )
            res.drain_seconds = time.perf_counter() - t0
            res.cpu_seconds = tree_cpu(target.root_pid()) - cpu0
            res.cpu_main_thread = main_thread_cpu(target.root_pid()) - main0
        res.rss_peak = mem.peak
        time.sleep(settle)  # late duplicates would show up now
        final = sink.count()
    finally:
        sink.stop()
    res.sink_messages, res.sink_sessions = final.messages, final.sessions
    res.queue_left = target.queue_state().messages
    res.bounces = target.bounces()
    if not target.alive():
        res.errors.append("server died during the drain")
    if not ok:
        res.errors.append(f"drain timed out after {drain_timeout:.0f}s")
    if res.sink_messages < messages:
        res.errors.append(f"{messages - res.sink_messages} of {messages} messages lost")
    if res.sink_messages > messages:
        res.errors.append(f"{res.sink_messages - messages} duplicate deliveries at the sink")
    if res.queue_left:
        res.errors.append(f"{res.queue_left} messages left in the queue")
    if res.bounces:
        res.errors.append(f"{res.bounces} bounces came back to the sender")
    return res
