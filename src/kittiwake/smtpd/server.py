"""Listeners, connection limits and graceful shutdown for every SMTP role.

Owns the sockets' lifecycle: total and per-IP connection limits (over them: 421 4.7.0 and
close, before any greeting), the set of live sessions, and the SIGTERM path — stop
listening, tell idle sessions 421, let transactions in flight finish within a deadline,
then cancel what is left. Moderately security sensitive (resource exhaustion).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import ssl
from dataclasses import dataclass

from kittiwake.envelope import Reply
from kittiwake.smtpd.session import ListenerSettings, Session

log = logging.getLogger("kittiwake.smtpd")

TOO_MANY = Reply(421, "4.7.0", "Too many connections, try again later")
TOO_MANY_FROM_YOU = Reply(421, "4.7.0", "Too many connections from your address")


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_connections: int = 1000
    max_per_ip: int = 100
    backlog: int = 1024


class SmtpServer:
    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self._servers: list[asyncio.Server] = []
        self._sessions: dict[Session, asyncio.Task[None]] = {}
        self._per_ip: collections.Counter[str] = collections.Counter()
        self._accepting = True

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    async def listen(self, host: str, port: int, settings: ListenerSettings) -> asyncio.Server:
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

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, settings: ListenerSettings
    ) -> None:
        peer = writer.get_extra_info("peername") or ("?", 0)
        ip = str(peer[0])
        refusal = None
        if not self._accepting:
            refusal = Reply(421, "4.3.2", "Service shutting down, try again later")
        elif len(self._sessions) >= self.limits.max_connections:
            refusal = TOO_MANY
        elif self._per_ip[ip] >= self.limits.max_per_ip:
            refusal = TOO_MANY_FROM_YOU
        if refusal is not None:
            log.warning("refused connection from [%s]: %s", ip, refusal)
            try:
                writer.write(refusal.to_bytes())
                writer.close()
                await asyncio.wait_for(writer.wait_closed(), 5)
            except (OSError, ssl.SSLError, TimeoutError):
                writer.transport.abort()
            return
        session = Session(settings, reader, writer)
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
