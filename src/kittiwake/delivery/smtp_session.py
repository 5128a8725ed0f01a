"""One outbound SMTP/LMTP connection: a socket, a ``proto.client.ClientConnection``, timeouts.

Owns ``ClientSession`` (connect, read replies, write commands, greeting + EHLO with the
HELO fallback, STARTTLS, SASL PLAIN/LOGIN, QUIT), ``SmtpClientTimeouts`` (RFC 5321
§4.5.3.2) and ``SessionError``: whatever makes this connection unusable — refused or timed
out connect, a timeout, a lost connection, a malformed reply, a refused greeting, a TLS or
AUTH failure — carrying the ``Reply`` to report (the peer's, or one we make up).

The socket is driven by a small ``asyncio.Protocol`` that feeds every received byte straight
into the sans-I/O core, so pipelined replies are parsed without extra awaits and, across
STARTTLS, no plaintext byte can survive into the TLS session (the core discards input from
the 220 until ``tls_established()``; RFC 3207 §5).

Security: MEDIUM-HIGH — this faces servers on the Internet. Parsing is in ``proto``; here:
timeouts on every wait, credentials only inside TLS, certificate checks per policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from dataclasses import dataclass
from typing import cast

from kittiwake.delivery.api import Destination
from kittiwake.envelope import Reply
from kittiwake.errors import LocalProtocolError, RemoteProtocolError
from kittiwake.proto.client import NEED_DATA, ClientConnection, Phase, Response, Verb

log = logging.getLogger("kittiwake.delivery.smtp")


@dataclass(frozen=True, slots=True)
class SmtpClientTimeouts:
    """Seconds to wait for each step (defaults: RFC 5321 §4.5.3.2 and Postfix)."""

    greeting: float = 300.0  # §4.5.3.2.1 initial 220
    helo: float = 300.0  # EHLO/HELO/LHLO (Postfix smtp_helo_timeout)
    starttls: float = 300.0  # the STARTTLS reply and the handshake
    auth: float = 300.0
    mail: float = 300.0  # §4.5.3.2.2
    rcpt: float = 300.0  # §4.5.3.2.3
    data_init: float = 120.0  # §4.5.3.2.4 the 354
    data_block: float = 180.0  # §4.5.3.2.5 each write of content
    data_end: float = 600.0  # §4.5.3.2.6 the reply to the final dot
    rset: float = 20.0  # Postfix smtp_rset_timeout
    quit: float = 5.0  # short: idle connections are QUIT at shutdown


class SessionError(Exception):
    """This connection failed; ``reply`` says why. ``kind``: connect, timeout, lost,
    protocol, refused (greeting/HELO), tls, auth, closed (a 421)."""

    def __init__(self, reply: Reply, kind: str) -> None:
        super().__init__(str(reply))
        self.reply = reply
        self.kind = kind


def local_failure(enhanced: str, text: str) -> Reply:
    """A reply we make up for a failure no server stated (code 451 / 554 by class)."""
    return Reply(451 if enhanced[0] == "4" else 554, enhanced, text)


class _Protocol(asyncio.Protocol):
    """Feeds received bytes to the core and wakes whoever waits for a reply or a drain."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.drain_waiter: asyncio.Future[None] | None = None
        self.paused = False
        self.lost = False
        self.error: RemoteProtocolError | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.conn.receive_data(data)
        except RemoteProtocolError as exc:  # too much unrequested input
            self.error = exc
            if self.transport is not None:
                self.transport.abort()
        self._wake()

    def eof_received(self) -> bool:
        self.conn.receive_data(b"")
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.conn.receive_data(b"")
        self._wake()
        self._wake_drain()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._wake_drain()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_drain(self) -> None:
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _what(verb: Verb) -> str:
    return {
        Verb.GREETING: "receiving the initial server greeting",
        Verb.END: "sending end of data -- message may be sent more than once",
        Verb.DATA: "sending DATA",
        Verb.BDAT: "sending message content",
    }.get(verb, f"sending {verb.value}")


class ClientSession:
    """A connected client session. Create with ``await ClientSession.connect(...)``."""

    def __init__(
        self,
        dest: Destination,
        protocol: _Protocol,
        transport: asyncio.Transport,
        timeouts: SmtpClientTimeouts,
        name: str,
    ) -> None:
        self.dest = dest
        self.conn = protocol.conn
        self.timeouts = timeouts
        self.name = name  # "mx.example.org[192.0.2.1]:25" for logs and replies
        self._protocol = protocol
        self._transport = transport
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.created = loop.time()
        self.transactions = 0
        self.tls_version: str | None = None
        self.tls_cipher: str | None = None

    @classmethod
    async def connect(
        cls,
        dest: Destination,
        *,
        timeouts: SmtpClientTimeouts,
        connect_timeout: float,
        lmtp: bool = False,
        unix_path: str | None = None,
    ) -> ClientSession:
        loop = asyncio.get_running_loop()
        protocol = _Protocol(ClientConnection(lmtp=lmtp))
        name = unix_path or f"{dest.host}[{dest.ip}]:{dest.port}"
        log.debug("connect to %s", name)
        try:
            async with asyncio.timeout(connect_timeout):
                if unix_path is not None:
                    transport, _ = await loop.create_unix_connection(lambda: protocol, unix_path)
                else:
                    transport, _ = await loop.create_connection(
                        lambda: protocol, dest.ip, dest.port
                    )
        except TimeoutError:
            raise SessionError(
                local_failure("4.4.1", f"connect to {name}: Connection timed out"), "connect"
            ) from None
        except OSError as exc:
            # asyncio words a refusal "Connect call failed (...)": say what errno says.
            reason = os.strerror(exc.errno) if exc.errno else str(exc) or type(exc).__name__
            raise SessionError(
                local_failure("4.4.1", f"connect to {name}: {reason}"), "connect"
            ) from None
        return cls(dest, protocol, transport, timeouts, name)

    # ------------------------------------------------------------------------ I/O

    def _fail(self, enhanced: str, text: str, kind: str) -> SessionError:
        self.abort()
        return SessionError(local_failure(enhanced, text), kind)

    async def response(self, timeout: float, verb: Verb) -> Response:
        """The next reply (``verb`` only names the step in error messages)."""
        protocol = self._protocol
        conn = self.conn
        try:
            r = conn.next_response()
            if r is NEED_DATA:
                async with asyncio.timeout(timeout):
                    while r is NEED_DATA:
                        if protocol.error is not None:
                            raise protocol.error
                        protocol.waiter = waiter = self._loop.create_future()
                        await waiter
                        r = conn.next_response()
        except TimeoutError:
            raise self._fail(
                "4.4.2", f"conversation with {self.name} timed out while {_what(verb)}", "timeout"
            ) from None
        except RemoteProtocolError as exc:
            raise self._fail(
                "4.5.0", f"protocol error talking to {self.name}: {exc}", "protocol"
            ) from None
        finally:
            protocol.waiter = None
        if not isinstance(r, Response):
            raise self._fail(
                "4.4.2", f"lost connection with {self.name} while {_what(verb)}", "lost"
            )
        return r

    def write(self, data: bytes) -> None:
        if self._protocol.lost:
            raise self._fail("4.4.2", f"lost connection with {self.name}", "lost")
        self._transport.write(data)

    async def drain(self, timeout: float) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        protocol = self._protocol
        if not protocol.paused or protocol.lost:
            if protocol.lost:
                raise self._fail("4.4.2", f"lost connection with {self.name}", "lost")
            return
        protocol.drain_waiter = waiter = self._loop.create_future()
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            raise self._fail(
                "4.4.2", f"conversation with {self.name} timed out while sending message", "timeout"
            ) from None
        finally:
            protocol.drain_waiter = None
        if protocol.lost:
            raise self._fail("4.4.2", f"lost connection with {self.name}", "lost")

    async def command(self, data: bytes, timeout: float, verb: Verb) -> Reply:
        self.write(data)
        return (await self.response(timeout, verb)).reply

    # ------------------------------------------------------------------ the session

    async def hello(self, helo_name: str) -> None:
        """Read the greeting, then EHLO (LHLO), falling back to HELO on a 5xx (SMTP only).
        A refused greeting or HELO raises ``SessionError(kind="refused")``."""
        t = self.timeouts
        greeting = (await self.response(t.greeting, Verb.GREETING)).reply
        if not greeting.is_positive:
            raise self._refused(greeting)
        await self.ehlo(helo_name)

    async def ehlo(self, helo_name: str) -> None:
        conn, t = self.conn, self.timeouts
        reply = await self.command(conn.ehlo(helo_name), t.helo, Verb.EHLO)
        if reply.is_positive:
            return
        if reply.is_permanent and not conn.lmtp:  # RFC 5321 §3.2: an old server, try HELO
            reply = await self.command(conn.helo(helo_name), t.helo, Verb.HELO)
            if reply.is_positive:
                return
        raise self._refused(reply)

    def _refused(self, reply: Reply) -> SessionError:
        kind = "closed" if reply.code == 421 else "refused"
        self.abort()
        return SessionError(with_default_enhanced(reply), kind)

    async def starttls(self, context: ssl.SSLContext, server_hostname: str | None) -> Reply | None:
        """STARTTLS and the handshake, then EHLO again. Returns the peer's refusal (the
        session stays usable in plaintext) or None; a failed handshake raises
        ``SessionError(kind="tls")`` with the connection closed."""
        conn, t = self.conn, self.timeouts
        reply = await self.command(conn.starttls(), t.starttls, Verb.STARTTLS)
        if reply.code != 220:
            if reply.code == 421:
                raise self._refused(reply)
            return reply
        try:
            new = await self._loop.start_tls(
                self._transport,
                self._protocol,
                context,
                server_side=False,
                server_hostname=server_hostname,
                ssl_handshake_timeout=t.starttls,
            )
        except ssl.SSLCertVerificationError as exc:
            raise self._fail(
                "4.7.5",
                f"server certificate not trusted: {self.name}: {exc.verify_message}",
                "tls",
            ) from None
        except (ssl.SSLError, OSError, TimeoutError, ConnectionError) as exc:
            reason = str(exc) or type(exc).__name__
            raise self._fail(
                "4.7.5", f"TLS handshake with {self.name} failed: {reason}", "tls"
            ) from None
        if new is None:
            raise self._fail("4.7.5", f"TLS handshake with {self.name} failed", "tls")
        self._transport = new
        self._protocol.transport = new
        conn.tls_established()
        ssl_object = new.get_extra_info("ssl_object")
        if ssl_object is not None:
            cipher = ssl_object.cipher()
            self.tls_version = ssl_object.version()
            self.tls_cipher = cipher[0] if cipher else None
        log.info("TLS established with %s: %s %s", self.name, self.tls_version, self.tls_cipher)
        return None

    async def authenticate(self, username: str, password: str) -> None:
        """SASL PLAIN (RFC 4616) or LOGIN to a smart host; only inside TLS."""
        conn, t = self.conn, self.timeouts
        mechanisms = conn.capabilities.auth
        if not conn.tls:
            raise self._fail(
                "4.7.0", f"will not send credentials to {self.name} without TLS", "auth"
            )
        if "PLAIN" in mechanisms:
            reply = await self.command(conn.auth_plain(username, password), t.auth, Verb.AUTH)
        elif "LOGIN" in mechanisms:
            reply = await self.command(conn.auth("LOGIN"), t.auth, Verb.AUTH)
            for secret in (username, password):
                if reply.code != 334:
                    break
                reply = await self.command(conn.auth_response(secret.encode()), t.auth, Verb.AUTH)
        else:
            offered = " ".join(sorted(mechanisms)) or "none"
            raise self._fail(
                "4.7.0", f"no common SASL mechanism with {self.name} (offered: {offered})", "auth"
            )
        if reply.code != 235:
            raise self._fail(
                "4.7.0", f"SASL authentication failed with {self.name}: {reply}", "auth"
            )

    async def rset(self) -> bool:
        """RSET; False (and the connection closed) if it did not work."""
        try:
            reply = await self.command(self.conn.rset(), self.timeouts.rset, Verb.RSET)
        except SessionError:
            return False
        if not reply.is_positive:
            self.abort()
            return False
        return True

    async def quit(self) -> None:
        """QUIT politely (waiting briefly for the 221), then close. Never raises."""
        try:
            if not self._protocol.lost and self.conn.phase is not Phase.CLOSED:
                with contextlib.suppress(SessionError, LocalProtocolError):
                    await self.command(self.conn.quit(), self.timeouts.quit, Verb.QUIT)
        finally:
            self.close()

    def close(self) -> None:
        if not self._transport.is_closing():
            self._transport.close()

    def abort(self) -> None:
        self._transport.abort()

    @property
    def reusable(self) -> bool:
        """Idle, greeted, nothing outstanding: another transaction may start."""
        return (
            not self._protocol.lost
            and not self._transport.is_closing()
            and self.conn.phase is Phase.READY
            and self.conn.awaiting == 0
        )


def with_default_enhanced(reply: Reply) -> Reply:
    """A peer reply without an RFC 3463 code gets ``X.0.0`` from its class (for the DSN)."""
    if reply.enhanced is not None or reply.code < 400:
        return reply
    return Reply(reply.code, f"{reply.code // 100}.0.0", reply.text)
