"""A real DNS server for tests: dnslib on loopback, UDP and TCP, zone from BIND-style text.

Owns ``TestDNS``. It answers authoritatively from the zone it is given: records by type,
CNAME chains, NODATA for names that exist without the type asked for (including empty
non-terminals), NXDOMAIN for everything else. Faults on demand: ``servfail(name)`` and
``blackhole(name)`` (never answers, for timeouts). UDP answers larger than 512 octets
(or the client's EDNS payload size) are truncated with TC set, so clients retry over TCP
(RFC 1035 §4.2.1, RFC 7766). Every query is logged in ``queries``.

Not security sensitive (test code); binds only to 127.0.0.0/8.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from dnslib import QTYPE, RCODE, RR, DNSError, DNSLabel, DNSRecord
from dnslib.server import DNSHandler, DNSServer

from kittiwake.net.dns import Resolver

UDP_LIMIT = 512  # RFC 1035 §4.2.1, without EDNS
TCP_READ_TIMEOUT = 5.0


@dataclass(frozen=True)
class Query:
    name: str  # lower case, with the trailing dot
    qtype: str  # "MX", "A", ...
    protocol: str  # "udp" or "tcp"


class _Drop(DNSError):  # type: ignore[misc]
    """Raised inside the handler to send nothing at all (a blackholed name)."""


class _Quiet:
    """A dnslib logger that says nothing (tests read ``TestDNS.queries`` instead)."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args: None


def _key(name: str | DNSLabel) -> str:
    text = str(name).lower()
    return text if text.endswith(".") else text + "."


class _Zone:
    """The records and faults, shared by the UDP and TCP servers (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: list[RR] = []
        # (name, qtype or None for every type)
        self.servfail: set[tuple[str, str | None]] = set()
        self.blackhole: set[tuple[str, str | None]] = set()
        self.queries: list[Query] = []

    def _exists(self, name: str) -> bool:
        return any(
            _key(rr.rname) == name or _key(rr.rname).endswith("." + name) for rr in self.records
        )

    def _of(self, name: str, qtype: str) -> list[RR]:
        return [
            rr
            for rr in self.records
            if _key(rr.rname) == name and (qtype in ("ANY", QTYPE[rr.rtype]))
        ]

    def resolve(self, request: DNSRecord, protocol: str) -> DNSRecord:
        name = _key(request.q.qname)
        qtype = QTYPE[request.q.qtype]
        reply = request.reply()
        with self.lock:
            self.queries.append(Query(name, qtype, protocol))
            for _ in range(8):  # follow a CNAME chain, as an authoritative server would
                if (name, None) in self.blackhole or (name, qtype) in self.blackhole:
                    raise _Drop(name)
                if (name, None) in self.servfail or (name, qtype) in self.servfail:
                    reply.header.rcode = RCODE.SERVFAIL
                    return reply
                found = self._of(name, qtype)
                if found:
                    for rr in found:
                        reply.add_answer(rr)
                    return reply
                cname = self._of(name, "CNAME")
                if not cname or qtype == "CNAME":
                    break
                reply.add_answer(cname[0])
                name = _key(cname[0].rdata.label)
            if not self._exists(name):
                reply.header.rcode = RCODE.NXDOMAIN
        return reply


class _UDPServer(socketserver.ThreadingMixIn, socketserver.UDPServer):
    # Non-daemon request threads so that server_close() joins them (a clean stop).
    daemon_threads = False
    block_on_close = True


class _TCPServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True  # TIME_WAIT from a previous test must not block the port


class _Handler(DNSHandler):  # type: ignore[misc]
    """dnslib's handler with our zone, blackholing, EDNS-aware truncation, TCP timeouts."""

    def handle(self) -> None:
        if self.server.socket_type == socket.SOCK_STREAM:
            self.request.settimeout(TCP_READ_TIMEOUT)
        with contextlib.suppress(OSError):  # a client that hangs up is not our failure
            super().handle()

    def get_reply(self, data: bytes) -> bytes:
        request = DNSRecord.parse(data)
        test_dns: TestDNS = self.server.test_dns
        reply = test_dns.zone.resolve(request, self.protocol)
        packed: bytes = reply.pack()
        if self.protocol == "udp":
            limit = test_dns.udp_limit
            for rr in request.ar:
                if rr.rtype == QTYPE.OPT:
                    limit = max(limit, rr.rclass)  # the client's EDNS payload size
            if len(packed) > limit:
                # Keep the question (dnslib's truncate() drops it; clients then ignore the
                # reply as not matching theirs), no records, TC set: RFC 2181 §9.
                truncated = request.reply()
                truncated.header.tc = 1
                packed = truncated.pack()
        return packed


class TestDNS:
    """A DNS server on ``address`` (127.0.0.x), UDP and TCP on one free port.

    Use as a context manager, or ``start()`` / ``stop()``. ``nameservers`` and ``port``
    are what a ``kittiwake.net.dns.Resolver`` needs. ``origin`` completes relative names.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        zone: str = "",
        *,
        address: str = "127.0.0.1",
        port: int = 0,
        origin: str = "",
        udp_limit: int = UDP_LIMIT,
    ) -> None:
        if not address.startswith("127."):
            raise ValueError("TestDNS binds to loopback (127.0.0.0/8) only")
        self.address = address
        self.origin = origin
        self.udp_limit = udp_limit
        self.zone = _Zone()
        self._wanted_port = port
        self._servers: list[DNSServer] = []
        self._threads: list[threading.Thread] = []
        self.port = 0
        self.set_zone(zone)

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> TestDNS:
        for _ in range(50):  # a free UDP port may be taken for TCP: try another
            udp = DNSServer(
                None,
                address=self.address,
                port=self._wanted_port,
                logger=_Quiet(),
                handler=_Handler,
                server=_UDPServer,
            )
            port = udp.server.server_address[1]
            try:
                tcp = DNSServer(
                    None,
                    address=self.address,
                    port=port,
                    logger=_Quiet(),
                    handler=_Handler,
                    server=_TCPServer,
                )
            except OSError:
                udp.server.server_close()
                if self._wanted_port:
                    raise
                continue
            break
        else:
            raise OSError("no free port for both UDP and TCP")
        self._threads = []
        for server in (udp, tcp):
            server.server.test_dns = self
            # A short poll interval: stop() returns in milliseconds, not half a second.
            thread = threading.Thread(
                target=server.server.serve_forever,
                kwargs={"poll_interval": 0.02},
                name=f"TestDNS-{port}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        self._servers = [udp, tcp]
        self.port = port
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.server.shutdown()  # serve_forever returns
            server.server.server_close()  # joins the request threads
        for thread in self._threads:
            thread.join(timeout=10)
        self._servers = []
        self._threads = []

    def __enter__(self) -> TestDNS:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def nameservers(self) -> list[str]:
        return [self.address]

    def resolver(self, timeout: float = 2.0) -> Resolver:
        """A kittiwake Resolver pointed at this server, without a cache (zones change)."""
        return Resolver(self.nameservers, self.port, timeout, cache_size=0)

    def config(self, timeout: float = 2.0) -> dict[str, Any]:
        """The ``[dns]`` config section for a daemon under test (KittiwakeServer overrides)."""
        return {"nameservers": self.nameservers, "port": self.port, "timeout": timeout}

    # -- zone -------------------------------------------------------------------------

    def _parse(self, text: str) -> list[RR]:
        return list(RR.fromZone(text, origin=self.origin, ttl=0)) if text.strip() else []

    def set_zone(self, text: str) -> None:
        """Replace every record (faults and the query log stay)."""
        records = self._parse(text)
        with self.zone.lock:
            self.zone.records = records

    def add(self, record: str | RR | Iterable[RR]) -> None:
        """Add zone-text line(s) or dnslib RR(s)."""
        if isinstance(record, str):
            records = self._parse(record)
        elif isinstance(record, RR):
            records = [record]
        else:
            records = list(record)
        with self.zone.lock:
            self.zone.records.extend(records)

    def remove(self, name: str, qtype: str | None = None) -> None:
        key = _key(name)
        with self.zone.lock:
            self.zone.records = [
                rr
                for rr in self.zone.records
                if not (_key(rr.rname) == key and qtype in (None, QTYPE[rr.rtype]))
            ]

    # -- faults and observation -------------------------------------------------------

    def servfail(self, name: str, qtype: str | None = None) -> None:
        """Answer SERVFAIL for ``name`` (for ``qtype`` only, or every type)."""
        with self.zone.lock:
            self.zone.servfail.add((_key(name), qtype))

    def blackhole(self, name: str, qtype: str | None = None) -> None:
        """Never answer for ``name`` (``qtype`` only, or every type): clients time out."""
        with self.zone.lock:
            self.zone.blackhole.add((_key(name), qtype))

    def clear_faults(self) -> None:
        with self.zone.lock:
            self.zone.servfail.clear()
            self.zone.blackhole.clear()

    @property
    def queries(self) -> list[Query]:
        with self.zone.lock:
            return list(self.zone.queries)


def raw_query(
    server: TestDNS, name: str, qtype: str = "A", *, tcp: bool = False, timeout: float = 2.0
) -> DNSRecord:
    """Ask ``server`` directly (no resolver in between): for testing the server itself."""
    request = DNSRecord.question(name, qtype)
    data = request.pack()
    if tcp:
        with socket.create_connection((server.address, server.port), timeout=timeout) as s:
            s.sendall(struct.pack("!H", len(data)) + data)
            buf = b""
            while len(buf) < 2 or len(buf) - 2 < struct.unpack("!H", buf[:2])[0]:
                chunk = s.recv(65535)
                if not chunk:
                    break
                buf += chunk
            return DNSRecord.parse(buf[2:])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(data, (server.address, server.port))
        return DNSRecord.parse(s.recv(65535))


__all__ = ["Query", "TestDNS", "raw_query"]


def dkimpy_dnsfunc(server: TestDNS) -> Callable[..., bytes | None]:
    """A ``dnsfunc`` for dkimpy's own verifiers, answering TXT from ``server``'s zone."""

    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        reply = raw_query(server, name.decode(), "TXT", tcp=True)
        for rr in reply.rr:
            return b"".join(rr.rdata.data)
        return None

    return lookup
