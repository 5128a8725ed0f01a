"""The pieces of the relay-throughput benchmark: the sink, and the two relaying servers.

Owns: ``Sink`` (Postfix's ``smtp-sink`` on a loopback address, started and stopped by PID,
its ``-c`` counters read back from its output), ``RelayKittiwake`` and ``RelayPostfix`` —
each a server that accepts mail for ``remote.test`` from 127.0.0.0/8 and relays it to the
sink's bracketed address (no MX lookup), can tell how much mail it holds and how much of
it is deferred, can be told to flush its queue now, and reports the settings it ran with.

Not security-sensitive (benchmark tooling), but careful: loopback addresses only, every
next hop is an IP literal, Kittiwake's resolver points at a closed loopback port and
Postfix's DNS is off, so nothing asks the machine's resolver anything. The sender's domain
(``client.bench.test``) is a local domain of both servers, so a bounce would stay local
(and be counted) instead of being routed anywhere.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.measure import SENDER
from bench.targets import (
    DOMAIN,
    POSTFIX_REPORTED,
    KittiwakeTarget,
    PostfixTarget,
    TargetUnavailable,
)
from tests.support.postfix import (
    count_maildir,
    process_children,
    split_hostport,
    wait_for_port,
)

SMTP_SINK = "/usr/sbin/smtp-sink"
POSTQUEUE = "/usr/sbin/postqueue"
REMOTE = "remote.test"  # the one remote domain the queue is for
RCPT = f"rcpt@{REMOTE}"
SENDER_LOCAL, _, SENDER_DOMAIN = SENDER.partition("@")  # bench @ client.bench.test
LOCAL_DOMAINS = (DOMAIN, SENDER_DOMAIN)  # a bounce to the sender stays on this machine

# Postfix parameters that shape the drain (their defaults are what we measure with).
POSTFIX_RELAY_REPORTED = (
    *POSTFIX_REPORTED,
    "transport_maps",
    "default_destination_concurrency_limit",
    "initial_destination_concurrency",
    "default_destination_recipient_limit",
    "smtp_connection_cache_on_demand",
    "smtp_connection_cache_destinations",
    "smtp_connection_reuse_time_limit",
    "smtp_tls_security_level",
    "minimal_backoff_time",
    "queue_run_delay",
    "qmgr_message_recipient_limit",
)

_COUNTERS = re.compile(rb"sess=(\d+) quit=(\d+) mesg=(\d+)")


# -- the sink ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SinkCount:
    sessions: int  # SMTP sessions ended
    quits: int  # QUIT commands seen
    messages: int  # "." received: messages taken


class Sink:
    """``smtp-sink -c`` on ``listen``; ``count()`` reads its latest counters.

    ``-c`` rewrites one ``sess=N quit=N mesg=N`` record (``\\r``-terminated) to stdout
    whenever a session ends, a QUIT arrives or a message's "." is received; stdout goes to
    a file here and the last complete record is the count.
    """

    def __init__(
        self,
        workdir: Path,
        listen: str,
        max_connections: int = 256,
        options: Sequence[str] = (),
    ) -> None:
        self.listen = listen
        self.options = list(options)  # more smtp-sink options (tests: -f . rejects every "." )
        self.host, self.port = split_hostport(listen)
        self.max_connections = max_connections
        self.out = workdir / "smtp-sink.out"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        user = ["-u", "nobody"] if os.geteuid() == 0 else []  # required as root
        limit = ["-m", str(self.max_connections)]
        return [SMTP_SINK, *user, "-c", *limit, *self.options, self.listen, "1024"]

    def start(self, timeout: float = 10.0) -> None:
        if not os.access(SMTP_SINK, os.X_OK):
            raise TargetUnavailable(f"{SMTP_SINK} missing: apt-get install postfix")
        self.stop()
        self.out.parent.mkdir(parents=True, exist_ok=True)
        with open(self.out, "wb") as out:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if not wait_for_port(self.host, self.port, timeout):
            self.stop()
            raise TargetUnavailable(f"smtp-sink did not listen on {self.listen}: {self.tail()}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def count(self) -> SinkCount:
        """The latest counters (all zero before the first event)."""
        try:
            with open(self.out, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 256))
                tail = f.read()
        except FileNotFoundError:
            return SinkCount(0, 0, 0)
        found = _COUNTERS.findall(tail)
        if not found:
            return SinkCount(0, 0, 0)
        # The last record may be half written: of the last two, take the larger count.
        recs = [SinkCount(*map(int, m)) for m in found[-2:]]
        return max(recs, key=lambda c: (c.messages, c.sessions, c.quits))

    def tail(self, size: int = 500) -> str:
        try:
            return self.out.read_bytes()[-size:].decode("latin-1").replace("\r", "\n")
        except FileNotFoundError:
            return ""


# -- the relays --------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueState:
    messages: int  # messages in the queue
    deferred: int  # of which waiting for a retry (nothing being tried)


class RelayKittiwake(KittiwakeTarget):
    """Kittiwake relaying ``remote.test`` to ``[sink]:port``; queue defaults unchanged."""

    def __init__(
        self,
        workdir: Path,
        listen: str,
        sink: str,
        *,
        log_level: str = "info",
        dns_port: int = 9,
        command: Sequence[str] = (),
        extra: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(workdir, listen, command)
        self.extra = dict(extra or {})
        self.sink = sink
        self.log_level = log_level
        self.dns_port = dns_port  # a closed loopback port: a DNS query would fail, not leak

    def config_text(self) -> str:
        """The TOML: Kittiwake's defaults except what a relay on loopback needs, plus
        ``settings`` (``{"queue.destination_concurrency": "50"}``, values in TOML)."""
        domains = ", ".join(f'"{d}"' for d in LOCAL_DOMAINS)
        tables: dict[str, dict[str, str]] = {
            "": {
                "hostname": f'"kittiwake.{DOMAIN}"',
                "data_dir": f'"{self.data_dir}"',
                "log_level": f'"{self.log_level}"',
            },
            "listen": {"mx": f'"{self.listen}"', "submission": '""', "smtps": '""'},
            "limits": {"max_connections": "2000", "max_connections_per_ip": "2000"},
            "local": {"domains": f"[{domains}]"},
            "relay": {"mynetworks": '["127.0.0.0/8"]'},
            "dns": {"nameservers": '["127.0.0.1"]', "port": str(self.dns_port), "timeout": "1"},
            "transport": {f'"{REMOTE}"': f'"smtp:[{self.sink_host}]:{self.sink_port}"'},
        }
        for dotted, value in self.extra.items():
            table, _, key = dotted.rpartition(".")
            tables.setdefault(table, {})[key] = value
        text = "".join(f"{k} = {v}\n" for k, v in tables.pop("").items())
        for name, values in tables.items():
            text += f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in values.items())
        return text

    @property
    def sink_host(self) -> str:
        return split_hostport(self.sink)[0]

    @property
    def sink_port(self) -> int:
        return split_hostport(self.sink)[1]

    def queue_state(self) -> QueueState:
        """Read-only SQL over the queue database (WAL: the server is never blocked)."""
        from kittiwake.errors import StoreError
        from kittiwake.queue.readonly import ReadOnlyQueue

        try:
            with ReadOnlyQueue(self.data_dir) as q:
                s = q.summary()
        except StoreError:
            return QueueState(0, 0)
        return QueueState(s.messages, sum(d.deferred for d in s.domains))

    def flush(self) -> str:
        """``kittiwake queue flush`` through the control socket (the CLI's own client)."""
        from kittiwake.admin.control import request, socket_path

        count = request(socket_path(self.data_dir), "flush", timeout=60.0)
        return f"control socket flush: {count} messages scheduled"

    def bounces(self) -> int:
        """Notices that came back to the sender (there should be none)."""
        return count_maildir(self.data_dir / "mail" / SENDER_DOMAIN / SENDER_LOCAL)

    def server_pids(self) -> list[int]:
        pid = self.root_pid()
        return [pid, *process_children(pid)] if pid else []


class RelayPostfix(PostfixTarget):
    """A private Postfix relaying ``remote.test`` to ``[sink]:port`` (transport_maps);
    Postfix's defaults otherwise, plus ``extra`` main.cf settings (recorded)."""

    reported = POSTFIX_RELAY_REPORTED

    def __init__(
        self, workdir: Path, listen: str, sink: str, extra: dict[str, str] | None = None
    ) -> None:
        self.sink = sink
        host, port = split_hostport(sink)
        main_cf = {
            "transport_maps": f"inline:{{ {REMOTE}=smtp:[{host}]:{port} }}",
            # Only paces the (untimed) injection: cleanup sleeps when mail arrives faster
            # than it leaves, which it always does while the sink is down.
            "in_flow_delay": "0",
            **(extra or {}),
        }
        super().__init__(
            workdir,
            listen,
            (),
            main_cf,
            virtual_domains=LOCAL_DOMAINS,
            myhostname=f"postfix.{DOMAIN}",
        )

    def queue_state(self) -> QueueState:
        return QueueState(self.pf.queue_count(), _files(self.pf.queue / "deferred"))

    def flush(self) -> str:
        cmd = [POSTQUEUE, "-c", str(self.pf.etc), "-f"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()}")
        return " ".join(cmd)

    def bounces(self) -> int:
        return count_maildir(self.pf.mail / SENDER_DOMAIN / "catchall")

    def server_pids(self) -> list[int]:
        pid = self.root_pid()
        return [pid, *process_children(pid)] if pid else []

    def log_tail(self, size: int = 3000) -> str:
        return self.pf.log()[-size:]


def _files(top: Path) -> int:
    return sum(len(files) for _root, _dirs, files in os.walk(top))


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll ``predicate()`` until true or ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
