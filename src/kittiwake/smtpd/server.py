"""Listeners, connection limits and graceful shutdown for every SMTP role.

Owns the sockets' lifecycle: total and per-IP connection limits and the per-IP connection
rate (over them: 421 4.7.0 and close, before any greeting), the set of live sessions, and
the SIGTERM path — stop listening, tell idle sessions 421, let transactions in flight
finish within a deadline, then cancel what is left.

A listener may expect the PROXY protocol (``listen(..., proxy=ProxySettings)``, see
``kittiwake.net.proxy_listen``): its connections are vetted and their header read before
anything here runs, and the client address the header carries is the one every limit,
check, log line and ``Received:`` header uses (the session gets it instead of the peer's).
Moderately security sensitive (resource exhaustion; PROXY decides the client address).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import ssl
from dataclasses import dataclass
from typing import Protocol

from kittiwake.envelope import Reply
from kittiwake.net.proxy import Endpoint
from kittiwake.net.proxy_listen import ProxyListener, ProxySettings
from kittiwake.policy.ratelimit import TOO_MANY_CONNECTIONS, ConnectionRate
from kittiwake.smtpd.session import Session
from kittiwake.smtpd.settings import ListenerSettings

log = logging.getLogger("kittiwake.smtpd")

TOO_MANY = Reply(421, "4.7.0", "Too many connections, try again later")
TOO_MANY_FROM_YOU = Reply(421, "4.7.0", "Too many connections from your address")


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_connections: int = 1000
    max_per_ip: int = 100
    backlog: int = 1024


class Listening(Protocol):
    """What ``listen`` returns: an ``asyncio.Server`` or a ``ProxyListener``."""

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


class SmtpServer:
    def __init__(
        self, limits: ConnectionLimits, connection_rate: ConnectionRate | None = None
    ) -> None:
        self.limits = limits
        self.connection_rate = connection_rate
        self._servers: list[Listening] = []
        self._sessions: dict[Session, asyncio.Task[None]] = {}
        self._per_ip: collections.Counter[str] = collections.Counter()
        self._accepting = True

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    async def listen(
        self,
        host: str,
        port: int,
        settings: ListenerSettings,
        proxy: ProxySettings | None = None,
    ) -> asyncio.Server | ProxyListener:
        """Listen for ``settings.role``; with ``proxy``, every connection must start with a
        PROXY header from a trusted address (then, on implicit TLS, the handshake)."""
        if proxy is not None:
            return await self._listen_proxied(host, port, settings, proxy)
        implicit = settings.tls_context if settings.implicit_tls else None

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._serve(reader, writer, settings)

        server = await asyncio.start_server(
            on_connect,
            host,
            port,
            ssl=implicit,
            backlog=self.limits.backlog,
            ssl_handshake_timeout=settings.command_timeout if implicit else None,
            reuse_address=True,
        )
        self._servers.append(server)
        log.info("listening on %s:%d (%s)", host, port, settings.role)
        return server

    async def _listen_proxied(
        self, host: str, port: int, settings: ListenerSettings, proxy: ProxySettings
    ) -> ProxyListener:
        async def on_connect(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: Endpoint
        ) -> None:
            await self._serve(reader, writer, settings, client)

        implicit = settings.tls_context if settings.implicit_tls else None
        listener = await ProxyListener.start(
            host,
            port,
            proxy,
            on_connect,
            backlog=self.limits.backlog,
            ssl_context=implicit,
            handshake_timeout=settings.command_timeout if implicit else None,
        )
        self._servers.append(listener)
        log.info("listening on %s:%d (%s, PROXY protocol)", host, port, settings.role)
        return listener

    async def _serve(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        settings: ListenerSettings,
        client: Endpoint | None = None,
    ) -> None:
        peer = client or writer.get_extra_info("peername") or ("?", 0)
        ip = str(peer[0])
        refusal = None
        why = ""
        if not self._accepting:
            refusal = Reply(421, "4.3.2", "Service shutting down, try again later")
        elif len(self._sessions) >= self.limits.max_connections:
            refusal = TOO_MANY
        elif self._per_ip[ip] >= self.limits.max_per_ip:
            refusal = TOO_MANY_FROM_YOU
        elif self.connection_rate is not None and not self.connection_rate.allow(ip):
            refusal = TOO_MANY_CONNECTIONS
            why = (
                f" (over ratelimit.connections_per_ip_per_minute ="
                f" {self.connection_rate.per_minute}; retry in"
                f" {self.connection_rate.retry_after(ip):.0f}s)"
            )
        if refusal is not None:
            log.warning("refused connection from [%s]: %s%s", ip, refusal, why)
            try:
                writer.write(refusal.to_bytes())
                writer.close()
                await asyncio.wait_for(writer.wait_closed(), 5)
            except (OSError, ssl.SSLError, TimeoutError):
                writer.transport.abort()
            return
        session = Session(settings, reader, writer, client=client)
        task = asyncio.current_task()
        assert task is not None
        self._sessions[session] = task
        self._per_ip[ip] += 1
        try:
            await session.run()
        finally:
            del self._sessions[session]
            self._per_ip[ip] -= 1
            if self._per_ip[ip] <= 0:
                del self._per_ip[ip]

    async def shutdown(self, grace: float) -> None:
        """Stop listening, 421 idle sessions, wait ``grace`` seconds for the rest, cancel."""
        self._accepting = False
        for server in self._servers:
            server.close()
        for session in list(self._sessions):
            session.request_shutdown()
        tasks = list(self._sessions.values())
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("shutdown: cancelled %d sessions after %.0fs", len(pending), grace)
                await asyncio.wait(pending, timeout=5)
        for server in self._servers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 5)
