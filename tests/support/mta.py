"""Helpers for the MTA end-to-end tests (tests/e2e/test_mta_*.py): the daemon relays for real.

Owns ``SinkHost`` (scripted ``tests.support.sinks.Sink`` MX hosts running in an event loop
of their own thread, so the tests stay synchronous while the daemon under test delivers to
them), ``Addresses`` (unique 127.0.1xx.y addresses, one per remote host, so a retry left
over from one test never lands on another test's sink), ``relay_overrides``/``relay_env``/
``Relay`` (a ``KittiwakeServer`` relaying through a ``TestDNS`` to the sinks, fast queue
timers), ``submit`` (one SMTP transaction into the daemon), ``control``/``queue_list``/
``recipient_states``/``wait_status`` (the queue as the control socket reports it),
``queue_cli`` (``kittiwake queue ...`` as a subprocess), ``delivery_lines`` (the daemon's
per-recipient log lines), ``wait_dsns`` (notices in a Maildir, parsed by
``tests.support.dsn_read``) and ``wait_until``.

Not security sensitive (test code); binds and connects to 127.0.0.0/8 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tests.support.dns import TestDNS
from tests.support.dsn_read import Dsn, parse_dsn
from tests.support.server import KittiwakeServer, Overrides, _kittiwake_command
from tests.support.sinks import Script, Sink
from tests.support.smtpclient import RawSMTP, queue_id

T = TypeVar("T")

# Fast queue for tests: first retry after ~1 s, backoff capped at 2 s, bounce after 4 s,
# delay warning after 1 s (config_mta: retry_first <= retry_max, retry_first <= lifetime).
# The dead-destination cache (60 s, not configurable) still applies: a destination that
# failed as a site (refused, DNS 4xx) is not tried again before a flush.
FAST_QUEUE: dict[str, Any] = {
    "retry_first": 1,
    "retry_max": 2,
    "max_lifetime": 4,
    "delay_warning": 1,
}


def wait_until(predicate: Callable[[], T], timeout: float, what: str) -> T:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` if late."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout}s: {what}")
        time.sleep(0.02)


class Addresses:
    """Loopback addresses not used by anybody else in this test session (127.0.100.1 ...);
    every address handed out has ``port`` free (nothing bound to it yet)."""

    _counter = itertools.count()

    def __init__(self, port: int) -> None:
        self.port = port

    def next(self) -> str:
        while True:
            n = next(self._counter)
            ip = f"127.0.{100 + n // 250}.{1 + n % 250}"
            with socket.socket() as s:
                try:
                    s.bind((ip, self.port))
                except OSError:
                    continue
            return ip


def common_port() -> int:
    """A TCP port that the sinks of one daemon share (``relay.smtp_port``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SinkHost:
    """Runs sinks in a background event loop. ``start(ip, script)`` → a listening ``Sink``
    (its ``messages``/``commands`` lists are appended from the loop thread; reading them
    from the test thread is safe), ``stop(sink)``, ``close()`` for all."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="sinks", daemon=True)
        self._thread.start()
        self._sinks: list[Sink] = []

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(
        self, host: str, port: int, script: Script | None = None, hostname: str = "sink.test"
    ) -> Sink:
        sink = Sink(host, script or Script(), hostname=hostname, port=port)
        self.run(sink.__aenter__())
        self._sinks.append(sink)
        return sink

    def stop(self, sink: Sink) -> None:
        if sink in self._sinks:
            self._sinks.remove(sink)
            self.run(sink.__aexit__(None, None, None))

    def drop_all(self, sink: Sink) -> None:
        self.loop.call_soon_threadsafe(sink.drop_all)

    def close(self) -> None:
        for sink in list(self._sinks):
            self.stop(sink)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def relay_overrides(dns: TestDNS, smtp_port: int, **sections: dict[str, Any]) -> Overrides:
    """A daemon that relays: loopback clients may relay, MX hosts are reached on
    ``smtp_port``, DNS is ``dns``, the queue is fast. ``sections`` deep-merge on top."""
    base: Overrides = {
        "relay": {"mynetworks": ["127.0.0.0/8"], "smtp_port": smtp_port},
        "dns": dns.config(timeout=2),
        "queue": dict(FAST_QUEUE),
    }
    for name, table in sections.items():
        base[name] = {**base.get(name, {}), **table}
    return base


def submit(
    server: KittiwakeServer,
    sender: str,
    recipients: Iterable[str],
    content: bytes,
    *,
    mail_params: str = "",
    rcpt_params: dict[str, str] | None = None,
    source_ip: str | None = None,
) -> str:
    """One transaction into the daemon's MX port; the queue id of the 250 reply.
    ``content`` ends with CRLF and is not dot-stuffed yet (this does it)."""
    params = rcpt_params or {}
    stuffed = b"".join(
        b"." + line if line.startswith(b".") else line for line in content.splitlines(True)
    )
    with RawSMTP(server.mx, source_ip=source_ip) as c:
        c.ehlo()
        c.cmd(f"MAIL FROM:<{sender}>{' ' + mail_params if mail_params else ''}").check(250)
        for rcpt in recipients:
            extra = params.get(rcpt, "")
            c.cmd(f"RCPT TO:<{rcpt}>{' ' + extra if extra else ''}").check(250)
        c.cmd("DATA").check(354)
        c.send(stuffed + b".\r\n")
        reply = c.read_reply()
        reply.check(250)
        c.cmd("QUIT")
    return queue_id(reply)


# ---------------------------------------------------------------------- kittiwake queue


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def queue_cli(server: KittiwakeServer, *args: str, timeout: float = 20.0) -> CliResult:
    """``kittiwake queue ARGS --config <server's config>``."""
    proc = subprocess.run(
        [*_kittiwake_command(), "queue", *args, "--config", str(server.config_path)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def control(server: KittiwakeServer, op: str, **args: str) -> Any:
    """One request on the running daemon's control socket (``<data_dir>/control.sock``,
    line-delimited JSON, see admin/control.py): its ``result``. A client of its own, and
    much faster than the CLI for polling."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(server.data_dir / "control.sock"))
        s.sendall(json.dumps({"op": op, **args}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            assert chunk, f"control socket closed after {data!r}"
            data += chunk
    response = json.loads(data)
    assert response["ok"], response
    return response["result"]


def queue_list(server: KittiwakeServer) -> list[dict[str, Any]]:
    """Every queued message (the ``list`` request: ``kittiwake queue list --json``)."""
    messages: list[dict[str, Any]] = control(server, "list")
    return messages


def queued_message(server: KittiwakeServer, qid: str) -> dict[str, Any] | None:
    return next((m for m in queue_list(server) if m["queue_id"] == qid), None)


def recipient_states(server: KittiwakeServer, qid: str) -> dict[str, str]:
    """address -> status of a message still in the queue ({} once it is gone)."""
    m = queued_message(server, qid)
    return {} if m is None else {r["address"]: r["status"] for r in m["recipients"]}


def wait_status(
    server: KittiwakeServer, qid: str, rcpt: str, status: str = "deferred", timeout: float = 5.0
) -> None:
    """Wait until recipient ``rcpt`` of queued message ``qid`` has ``status``."""

    def reached() -> bool:
        return recipient_states(server, qid).get(rcpt) == status

    wait_until(reached, timeout, f"{qid}: <{rcpt}> not {status}")


def delivery_lines(server: KittiwakeServer, qid: str) -> list[str]:
    """The daemon's per-recipient delivery log lines for ``qid`` (Postfix style:
    ``QID: to=<rcpt>, relay=..., delay=..., tries=N, dsn=X.Y.Z, status=...``)."""
    return [
        line.partition("kittiwake.delivery info: ")[2]
        for line in server.log_text().splitlines()
        if f"kittiwake.delivery info: {qid}: to=<" in line
    ]


def wait_dsns(
    server: KittiwakeServer, addr: str, count: int = 1, timeout: float = 15.0
) -> list[Dsn]:
    return [parse_dsn(raw) for raw in server.wait_for_mail(addr, count, timeout)]


# ------------------------------------------------------------------- a relaying daemon


@dataclass
class Relay:
    """A relaying daemon with its DNS and its sinks (see ``relay_env``)."""

    server: KittiwakeServer
    dns: TestDNS
    sinks: SinkHost
    ips: Addresses

    @property
    def port(self) -> int:
        return self.ips.port

    def sink(self, script: Script | None = None, ip: str | None = None) -> Sink:
        """A sink on a fresh address (or ``ip``) on the shared port."""
        return self.sinks.start(ip or self.ips.next(), self.port, script)

    def mx(self, domain: str, hosts: Iterable[tuple[int, str]]) -> list[str]:
        """MX records for ``domain``: ``(preference, ip)`` each become ``mxN.domain`` with
        that A record. Returns the MX host names in the order given."""
        names = []
        for n, (pref, ip) in enumerate(hosts, 1):
            name = f"mx{n}.{domain}"
            self.dns.add(f"{domain}. IN MX {pref} {name}.\n{name}. IN A {ip}\n")
            names.append(name)
        return names


@contextlib.contextmanager
def relay_env(root: Path, **sections: dict[str, Any]) -> Iterator[Relay]:
    """A TestDNS, a SinkHost and a daemon under ``root`` relaying through them (started);
    everything stopped (the daemon by PID) on the way out."""
    port = common_port()
    with TestDNS() as dns:
        sinks = SinkHost()
        server = KittiwakeServer(root, relay_overrides(dns, port, **sections))
        try:
            server.start()
            yield Relay(server, dns, sinks, Addresses(port))
        finally:
            try:
                server.stop()
            except RuntimeError:
                server.kill9()
            sinks.close()


def tag() -> str:
    """A short unique word for addresses and domains of one test."""
    return uuid.uuid4().hex[:10]
