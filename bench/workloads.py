"""The benchmark's workloads (A-E) and running one of them against one server.

Owns: the workload definitions and their --quick variants, and ``run_workload``: level the
ground (sync, pause), measure while the load runs, then wait — bounded — until the server's
Maildir holds every message, and report anything missing.

Not security-sensitive (benchmark tooling).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from bench.measure import (
    MemorySampler,
    MiB,
    idle_connections,
    send_big_message,
    smtp_source_load,
    tree_pss,
)
from bench.targets import DOMAIN, Target


@dataclass(frozen=True)
class Workload:
    name: str  # "A".."E"
    title: str
    kind: str  # "load" (smtp-source) | "big" (one streamed message) | "idle"
    size: int = 4096  # body bytes per message
    messages: int = 0  # total messages ("load"), connections ("idle")
    sessions: int = 50
    per_session: int = 1
    fresh: bool = False  # restart the server first: memory is measured from a cold start
    timeout: float = 600.0  # bound on the load phase
    message_file: str = ""  # "load": send this pre-formatted message (smtp-source -F)

    def describe(self) -> str:
        if self.kind == "big":
            return f"{self.title}: 1 message, {self.size / MiB:.0f} MiB body, streamed"
        if self.kind == "idle":
            return f"{self.title}: {self.messages} idle connections (greeting read, then wait)"
        per = f"{self.per_session} per connection (-d)" if self.per_session > 1 else "1 per conn"
        if self.message_file:
            name = os.path.basename(self.message_file)
            return f"{self.title}: {self.messages} x {name}, {self.sessions} sessions, {per}"
        return (
            f"{self.title}: {self.messages} x {self.size / 1024:g} KiB, "
            f"{self.sessions} concurrent sessions, {per}"
        )


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("A", "4 KiB, reused connections", "load", 4096, 5000, 50, 10),
        Workload("B", "4 KiB, a connection per message", "load", 4096, 2000, 50, 1),
        Workload("C", "100 KiB, reused connections", "load", 100 * 1024, 1000, 50, 10),
        Workload("D", "one 50 MiB message", "big", 50 * MiB, 1, 1, 1, fresh=True),
        Workload("E", "1000 idle connections", "idle", 0, 1000, fresh=True),
    )
}

QUICK = {"A": 1000, "B": 500, "C": 500, "D": 1, "E": 1000}


def workloads(quick: bool = False, scale: float = 1.0) -> dict[str, Workload]:
    """The standard set; ``quick`` uses fewer messages, ``scale`` multiplies A-C counts."""
    out = {}
    for name, w in WORKLOADS.items():
        n = QUICK[name] if quick else w.messages
        if w.kind == "load":
            n = max(w.per_session, int(n * scale))
        out[name] = replace(w, messages=n)
    return out


@dataclass
class RunResult:
    workload: str
    server: str
    repeat: int
    mailbox: str
    expected: int = 0  # messages sent (or connections opened, for E)
    delivered: int = 0  # messages found in the Maildir (or connections greeted, for E)
    seconds: float = 0.0  # load wall time (D: connect to final 250)
    rate: float = 0.0  # messages/second accepted (expected / seconds)
    delivered_seconds: float = 0.0  # load start until the Maildir held them all
    rss_before: int = 0
    rss_peak: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def missing(self) -> int:
        return max(0, self.expected - self.delivered)

    @property
    def rss_growth(self) -> int:
        return self.rss_peak - self.rss_before

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["missing"] = self.missing
        d["rss_growth"] = self.rss_growth
        return d


def _level_ground() -> None:
    """Flush other runs' dirty pages so they don't land on this run's fsyncs."""
    os.sync()
    time.sleep(0.3)


def wait_delivered(target: Target, local: str, expected: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while (n := target.delivered(local)) < expected and time.monotonic() < deadline:
        if not target.alive():  # a dead server delivers nothing more
            return target.delivered(local)
        time.sleep(0.02)
    return n


def run_workload(
    target: Target,
    w: Workload,
    repeat: int,
    *,
    delivery_timeout: float = 120.0,
    hold: float = 1.0,
    keep_mail: bool = False,
) -> RunResult:
    """Run workload ``w`` against ``target`` (already started) once and measure it."""
    local = f"w{w.name.lower()}{repeat}"
    res = RunResult(w.name, target.name, repeat, local)
    if w.fresh or not target.alive():
        target.restart()  # TargetUnavailable propagates: the caller records it
    _level_ground()
    target.remove_mailbox(local)
    rcpt = f"{local}@{DOMAIN}"
    start = time.perf_counter()
    with MemorySampler(target.root_pid) as mem:
        if w.kind == "load":
            load = smtp_source_load(
                target.host,
                target.port,
                messages=w.messages,
                sessions=w.sessions,
                per_session=w.per_session,
                size=w.size,
                rcpt=rcpt,
                timeout=w.timeout,
                message_file=w.message_file,
            )
            res.expected, res.seconds, res.errors = w.messages, load.seconds, load.errors
            res.extra["commands"] = load.commands
        elif w.kind == "big":
            res.expected = 1
            try:
                big = send_big_message(
                    target.host, target.port, size=w.size, rcpt=rcpt, timeout=w.timeout
                )
                res.seconds = big.seconds
                res.extra.update(
                    data_seconds=big.data_seconds,
                    commit_seconds=big.commit_seconds,
                    reply=big.reply,
                )
                if not big.reply.startswith("250"):
                    res.errors.append(f"final reply: {big.reply}")
            except (OSError, ConnectionError) as exc:
                res.errors.append(f"{type(exc).__name__}: {exc}")
        else:
            res.expected = w.messages
            pid = target.root_pid()
            res.extra["pss_before"] = tree_pss(pid) if pid else 0
            t0 = time.perf_counter()
            with idle_connections(target.host, target.port, w.messages, 10.0) as greeted:
                res.seconds = time.perf_counter() - t0
                res.delivered = greeted
                time.sleep(hold)  # let the server settle with all of them open
                res.extra["pss_held"] = tree_pss(pid) if pid else 0
    res.rss_before, res.rss_peak = mem.before, mem.peak
    res.extra["procs_peak"] = mem.procs_peak
    if w.kind != "idle":
        if res.seconds > 0 and not res.errors:
            res.rate = res.expected / res.seconds
        res.delivered = wait_delivered(target, local, res.expected, delivery_timeout)
        res.delivered_seconds = time.perf_counter() - start
        if res.missing:
            res.errors.append(
                f"{res.missing} of {res.expected} messages missing from {target.mailbox(local)}"
            )
        if res.delivered > res.expected:
            res.errors.append(f"{res.delivered - res.expected} more messages than sent")
        if not keep_mail:
            target.remove_mailbox(local)
    elif res.missing:  # a limit of the server (Postfix: 100 smtpd), not a broken run
        res.extra["note"] = f"only {res.delivered} of {res.expected} connections greeted in 10s"
    return res
