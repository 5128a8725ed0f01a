"""One SMTP session: bytes from the socket into the core, decisions out of policy and queue.

Owns the per-connection loop: timeouts (RFC 5321 §4.5.3.2), the STARTTLS hand-off
(RFC 3207), the AUTH exchange, ETRN, graceful shutdown. The mail transaction (MAIL, RCPT,
streaming the body into the cleanup sink and committing it before the 250, design
practice 5) is ``smtpd.transaction``. Moderately security sensitive: it faces the Internet,
but every parsing decision lives in ``proto`` and every acceptance decision in ``policy``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import replace

from kittiwake.envelope import Recipient, Reply, SessionInfo
from kittiwake.policy import Action
from kittiwake.policy.results import Results
from kittiwake.proto import events as ev
from kittiwake.proto.server import ServerConnection
from kittiwake.smtpd.auth import Authenticated, AuthExchange
from kittiwake.smtpd.datastage import DataStage
from kittiwake.smtpd.intake import IntakeSink
from kittiwake.smtpd.settings import ListenerSettings
from kittiwake.smtpd.transaction import MailTransaction

log = logging.getLogger("kittiwake.smtpd")

READ_SIZE = 256 * 1024
TIMEOUT_REPLY = Reply(421, "4.4.2", "Timeout exceeded, closing connection")
SHUTDOWN_REPLY = Reply(421, "4.3.2", "Service shutting down, try again later")
AUTH_MALFORMED = Reply(501, "5.5.2", "Malformed authentication response")


class Session(MailTransaction):
    """Drives one ``ServerConnection`` over an asyncio stream pair."""

    def __init__(
        self,
        settings: ListenerSettings,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client: tuple[str, int] | None = None,
    ) -> None:
        """``client``: the client's (address, port) when a PROXY header gave it; every
        check, log line and trace header then uses it instead of the socket's peer."""
        self.settings = settings
        self.reader = reader
        self.writer = writer
        self.conn = ServerConnection(settings.proto, tls=settings.implicit_tls)
        peer = client or writer.get_extra_info("peername") or ("?", 0)
        local = writer.get_extra_info("sockname") or ("?", 0)
        self.info = SessionInfo(
            client_ip=str(peer[0]),
            client_port=int(peer[1]),
            server_ip=str(local[0]),
            server_port=int(local[1]),
            listener=settings.role,
        )
        if settings.implicit_tls:
            self.info = self._with_tls_details(self.info)
        self.shutting_down = False
        self._closing = False
        self._sender = ""
        self._mail: ev.MailFrom | None = None
        self._recipients: list[Recipient] = []
        self._sink: IntakeSink | None = None
        self._stage: DataStage | None = None  # DATA checks configured: the body's tee
        self._conn_results = Results()  # connect/HELO results; each MAIL forks it
        self._tx = Results()
        self._sasl: AuthExchange | None = None
        self.messages = 0

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        name = f"[{self.info.client_ip}]:{self.info.client_port}"
        log.info("connect from %s on %s", name, self.settings.role)
        try:
            verdict = await self.settings.policy.connect(self.info, results=self._conn_results)
            if verdict.action in (Action.REJECT, Action.TEMPFAIL, Action.DISCONNECT):
                reply = verdict.reply or Reply(554, "5.7.1", "Access denied")
                self.writer.write(reply.to_bytes())
                return
            self.writer.write(self.conn.greeting())
            await self._serve()
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
            log.info("lost connection from %s: %s", name, exc.__class__.__name__)
        finally:
            self._abort_transaction()
            await self._close()
            log.info(
                "disconnect from %s commands=%d messages=%d",
                name,
                self.conn.command_count,
                self.messages,
            )

    async def _serve(self) -> None:
        conn = self.conn
        while not self._closing:
            if self.shutting_down and not conn.in_transaction:
                self._send_bytes(conn.close_with(SHUTDOWN_REPLY))
                return
            timeout = (
                self.settings.data_timeout
                if self._sink is not None or self._stage is not None
                else self.settings.command_timeout
            )
            try:
                async with asyncio.timeout(timeout):
                    data = await self.reader.read(READ_SIZE)
            except TimeoutError:
                self._send_bytes(conn.close_with(TIMEOUT_REPLY))
                return
            conn.receive_data(data)
            await self._drain_events()
            out = conn.data_to_send()
            if out:
                self.writer.write(out)
                if self.writer.transport.get_write_buffer_size() > 256 * 1024:
                    await self.writer.drain()
            if not data:
                return

    async def _drain_events(self) -> None:
        conn = self.conn
        while True:
            event = conn.next_event()
            if event is ev.NEED_DATA or event is ev.PAUSED:
                return
            await self._handle(event)
            if self._closing:
                return

    # ------------------------------------------------------------- event handling

    async def _handle(self, event: object) -> None:
        conn = self.conn
        if isinstance(event, ev.BodyData):
            if self._stage is not None:
                self._stage.write(event.data)
            elif self._sink is not None:
                self._sink.write(event.data)
        elif isinstance(event, ev.RcptTo):
            await self._on_rcpt(event)
        elif isinstance(event, ev.MailFrom):
            await self._on_mail(event)
        elif isinstance(event, ev.DataStart):
            self._on_data_start()
        elif isinstance(event, ev.BodyEnd):
            await self._on_body_end(event)
        elif isinstance(event, ev.Helo):
            self._abort_transaction()
            self.info = replace(self.info, helo=event.domain, esmtp=event.verb != "HELO")
            verdict = await self.settings.policy.helo(self.info, results=self._conn_results)
            self._answer(verdict, default_accept=True, accept=conn.accept_helo)
        elif isinstance(event, ev.Reset):
            self._abort_transaction()
        elif isinstance(event, (ev.Quit, ev.Closing, ev.ConnectionClosed)):
            self._closing = True
        elif isinstance(event, ev.StartTLS):
            await self._start_tls()
        elif isinstance(event, ev.AuthStart):
            await self._on_auth_start(event)
        elif isinstance(event, ev.AuthResponse):
            await self._on_auth_step(event.data)
        elif isinstance(event, ev.AuthCancelled):
            self._sasl = None
        elif isinstance(event, ev.Etrn):
            await self._on_etrn(event)
        elif isinstance(event, ev.BadCommand):
            log.debug("bad command from %s: %s", self.info.client_ip, event.reply)

    async def _on_etrn(self, event: ev.Etrn) -> None:
        """RFC 1985: start delivery of deferred mail for a node (the policy owns the codes)."""
        if self.settings.etrn is None:
            self.conn.reject(Reply(502, "5.5.1", "ETRN not available here"))
            return
        reply = await self.settings.etrn(event.argument, self.info.client_ip)
        (self.conn.accept if reply.is_positive else self.conn.reject)(reply)

    # ------------------------------------------------------------------ STARTTLS

    async def _start_tls(self) -> None:
        context = self.settings.tls_context
        self._send_bytes(self.conn.data_to_send())
        if context is None:  # the core offers STARTTLS only with a context; defensive
            self._closing = True
            return
        await self.writer.drain()
        async with asyncio.timeout(self.settings.command_timeout):
            await self.writer.start_tls(context)
        self.info = self._with_tls_details(replace(self.info, helo="", esmtp=False))
        self.conn.tls_established()

    def _with_tls_details(self, info: SessionInfo) -> SessionInfo:
        ssl_object = self.writer.get_extra_info("ssl_object")
        if ssl_object is None:
            return replace(info, tls=True)
        cipher = ssl_object.cipher()
        return replace(
            info,
            tls=True,
            tls_version=ssl_object.version(),
            tls_cipher=cipher[0] if cipher else None,
        )

    # ---------------------------------------------------------------------- AUTH

    async def _on_auth_start(self, event: ev.AuthStart) -> None:
        self._sasl = self.settings.authenticator.begin(event.mechanism, self.info.client_ip)
        self._auth_result(await self._sasl.start(event.initial))

    async def _on_auth_step(self, data: bytes) -> None:
        if self._sasl is None:
            self.conn.reject(AUTH_MALFORMED)
            return
        self._auth_result(await self._sasl.step(data))

    def _auth_result(self, result: bytes | Authenticated | Reply) -> None:
        """A challenge (334), success (235) or the failure reply (smtpd.auth decides)."""
        if isinstance(result, bytes):
            self.conn.auth_challenge(result)
            return
        self._sasl = None
        if isinstance(result, Reply):
            self.conn.reject(result)
            return
        self.info = replace(self.info, auth_user=result.user)
        self.conn.auth_success(result.user)
        log.info("authenticated %s as %s", self.info.client_ip, result.user)

    # --------------------------------------------------------------------- helpers

    def _send_bytes(self, data: bytes) -> None:
        if data and not self.writer.is_closing():
            self.writer.write(data)

    def request_shutdown(self) -> bool:
        """Graceful shutdown: True when the session was idle and has been told 421."""
        self.shutting_down = True
        if self.conn.in_transaction or self._closing:
            return False
        self._send_bytes(self.conn.close_with(SHUTDOWN_REPLY))
        self._closing = True
        self.writer.close()  # wakes the pending read with EOF
        return True

    async def _close(self) -> None:
        try:
            self._send_bytes(self.conn.data_to_send())
            if not self.writer.is_closing():
                await asyncio.wait_for(self.writer.drain(), 5)
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 5)
        except (ConnectionError, ssl.SSLError, TimeoutError, OSError):
            self.writer.transport.abort()
