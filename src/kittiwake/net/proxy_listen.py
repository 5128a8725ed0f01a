"""A listener that expects the PROXY protocol: accept, vet the peer, read the header, hand on.

Owns ``ProxyListener`` (its own accept loop on a listening socket; ``close``/``wait_closed``
like ``asyncio.Server``) and ``read_proxy_header`` (the exact header octets off a raw
socket). For each connection: a peer outside ``trusted`` is closed at once; otherwise the
header must arrive within ``timeout`` seconds (HAProxy's spec, §2: "a short timeout ... at
least 3 seconds to cover a TCP retransmit"), else — or if it is malformed — the connection
is closed. No greeting is ever sent to such a connection: the spec says the receiver MUST
NOT guess whether a header is present (§2), so a PROXY listener refuses connections
without one even from a trusted peer. Then the socket becomes an asyncio stream pair —
through the TLS handshake first on an implicit-TLS listener — and ``on_connection`` gets
it with the client endpoint to use (the header's, or the real peer's for LOCAL/UNKNOWN).

Why not ``asyncio.start_server`` plus ``StreamWriter.start_tls``: the stream transport
reads whatever has arrived, and a proxy may send the client's first octets (a TLS
ClientHello) in the same segment as the header; ``start_tls`` would never see those octets
still sitting in the ``StreamReader``. Here the header is read with ``MSG_PEEK`` and then
exactly its length is consumed, so the kernel still holds everything after it when asyncio
(or the TLS layer) takes the socket over. Needs ``loop.add_reader`` (selector loops and
uvloop; not the Windows proactor).

Security: HIGH. Only peers in ``trusted`` can choose the client address every later check
believes. Nothing SMTP-specific here.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Container
from dataclasses import dataclass

from kittiwake.net.proxy import Endpoint, ProxyError, ProxyHeader, parse_header

log = logging.getLogger("kittiwake.net.proxy")

PEEK_SIZE = 4096  # a normal header is < 240 octets; longer ones (TLVs) take more rounds

OnConnection = Callable[[asyncio.StreamReader, asyncio.StreamWriter, Endpoint], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ProxySettings:
    """Who may send a header (``trusted``, e.g. ``policy.networks.Networks``) and how long
    we wait for it (seconds)."""

    trusted: Container[str]
    timeout: float = 5.0


async def read_proxy_header(sock: socket.socket) -> ProxyHeader:
    """Read one PROXY header off the non-blocking ``sock``, consuming exactly its octets.

    Raises ``ProxyError`` (malformed, or EOF first) or ``OSError``; the caller bounds the
    time. Peeked octets that ``parse_header`` calls an incomplete header are all header
    octets, so they are consumed; once it finds the end, only the rest of it is.
    """
    loop = asyncio.get_running_loop()
    got = b""
    while True:
        await _readable(loop, sock)
        try:
            peeked = sock.recv(PEEK_SIZE, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            continue  # a spurious wake-up
        if not peeked:
            raise ProxyError("connection closed before a complete PROXY header")
        header = parse_header(got + peeked)
        take = len(peeked) if header is None else header.length - len(got)
        got += _recv_exactly(sock, take)
        if header is not None:
            return header


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    fd = sock.fileno()
    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    """``size`` octets that a peek has shown are already in the kernel's buffer."""
    out = b""
    while len(out) < size:
        try:
            chunk = sock.recv(size - len(out))
        except (BlockingIOError, InterruptedError):
            raise ProxyError("PROXY header octets vanished after peeking") from None
        if not chunk:
            raise ProxyError("connection closed inside the PROXY header")
        out += chunk
    return out


async def accepted_streams(
    sock: socket.socket,
    ssl_context: ssl.SSLContext | None = None,
    handshake_timeout: float | None = None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Turn an accepted socket into a server-side stream pair (TLS handshake first with a
    context), as ``asyncio.start_server`` would: ``StreamWriter.start_tls`` later knows it
    is the server side because the protocol has a connected callback."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]]
    ready = loop.create_future()

    def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not ready.done():
            ready.set_result((reader, writer))

    protocol = asyncio.StreamReaderProtocol(asyncio.StreamReader(), connected)
    if ssl_context is None:
        await loop.connect_accepted_socket(lambda: protocol, sock)
    else:
        await loop.connect_accepted_socket(
            lambda: protocol, sock, ssl=ssl_context, ssl_handshake_timeout=handshake_timeout
        )
    return await ready


class ProxyListener:
    """One listening socket whose every connection starts with a PROXY header."""

    def __init__(
        self,
        sock: socket.socket,
        settings: ProxySettings,
        on_connection: OnConnection,
        *,
        ssl_context: ssl.SSLContext | None = None,
        handshake_timeout: float | None = None,
    ) -> None:
        self._sock = sock
        self.settings = settings
        self.on_connection = on_connection
        self.ssl_context = ssl_context
        self.handshake_timeout = handshake_timeout
        self._tasks: set[asyncio.Task[None]] = set()
        self._before_session: set[asyncio.Task[None]] = set()
        self._closed = False
        self._accepting = asyncio.get_running_loop().create_task(self._accept_loop())

    @classmethod
    async def start(
        cls,
        host: str,
        port: int,
        settings: ProxySettings,
        on_connection: OnConnection,
        *,
        backlog: int = 1024,
        ssl_context: ssl.SSLContext | None = None,
        handshake_timeout: float | None = None,
    ) -> ProxyListener:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, backlog=backlog)
        sock.setblocking(False)
        return cls(
            sock,
            settings,
            on_connection,
            ssl_context=ssl_context,
            handshake_timeout=handshake_timeout,
        )

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return () if self._closed else (self._sock,)

    def close(self) -> None:
        """Stop accepting; connections still before their session are dropped."""
        if self._closed:
            return
        self._closed = True
        self._accepting.cancel()
        # Close the socket once the accept task has let go of it (its reader removed).
        self._accepting.add_done_callback(lambda _task: self._sock.close())
        for task in self._before_session:
            task.cancel()

    async def wait_closed(self) -> None:
        waiting = [self._accepting, *self._before_session]
        await asyncio.gather(*waiting, return_exceptions=True)

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, addr = await loop.sock_accept(self._sock)
            except OSError as exc:  # EMFILE and friends: do not spin
                log.warning("accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            conn.setblocking(False)
            task = loop.create_task(self._connection(conn, (str(addr[0]), int(addr[1]))))
            self._tasks.add(task)
            self._before_session.add(task)
            task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._before_session.discard(task)

    async def _connection(self, conn: socket.socket, peer: Endpoint) -> None:
        try:
            client = await self._vet(conn, peer)
            streams = None if client is None else await self._streams(conn, peer, client)
        except BaseException:  # cancelled by close(): drop the half-open connection
            conn.close()
            raise
        if client is None or streams is None:
            conn.close()  # no greeting: the peer learns nothing about why
            return
        task = asyncio.current_task()
        if task is not None:
            self._before_session.discard(task)  # the session's own shutdown takes over
        await self.on_connection(*streams, client)

    async def _vet(self, conn: socket.socket, peer: Endpoint) -> Endpoint | None:
        """The client endpoint to believe, or None (the reason is logged)."""
        where = _show(peer)
        if peer[0] not in self.settings.trusted:
            log.warning("refused connection from %s: not in proxy.trusted", where)
            return None
        try:
            async with asyncio.timeout(self.settings.timeout):
                header = await read_proxy_header(conn)
        except TimeoutError:
            log.warning(
                "refused connection from %s: no PROXY header within %gs",
                where,
                self.settings.timeout,
            )
            return None
        except ProxyError as exc:
            log.warning("refused connection from %s: %s", where, exc)
            return None
        except OSError as exc:
            log.info("lost connection from %s before its PROXY header: %s", where, exc)
            return None
        if header.source is None:
            log.info("PROXY v%d from %s: no addresses, using the proxy's", header.version, where)
            return peer
        log.info("PROXY v%d from %s: client %s", header.version, where, _show(header.source))
        return header.source

    async def _streams(
        self, conn: socket.socket, peer: Endpoint, client: Endpoint
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        try:
            return await accepted_streams(conn, self.ssl_context, self.handshake_timeout)
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            log.info(
                "TLS handshake with %s (via proxy %s) failed: %s",
                _show(client),
                _show(peer),
                exc.__class__.__name__,
            )
            return None


def _show(endpoint: Endpoint) -> str:
    return f"[{endpoint[0]}]:{endpoint[1]}"
