"""Getting a session ready for mail: connect, greeting, EHLO, STARTTLS per policy, AUTH.

Owns ``Connector`` (what the SMTP agent knows about reaching any server: our HELO name,
the TLS policy table, timeouts) and its ``open()``, plus the names we give a destination
(``remote_name`` for DSNs, ``tls_server_name`` for SNI). For one destination ``open``:
connect, read the greeting, EHLO (HELO on a 5xx); when the policy attempts TLS and the
server offers STARTTLS, the handshake and a second EHLO (RFC 3207 §4.2); a refusal or a
missing STARTTLS fails only a mandatory policy (4.7.4). Opportunistic TLS whose handshake
fails is retried once in plaintext on the same host, as Postfix does. AUTH to a smart host
happens only if the server offers it (``ClientSession`` refuses it outside TLS).

Security: MEDIUM-HIGH — the TLS decisions are made here: a mandatory policy never falls
back to plaintext, certificate checks follow ``tlspolicy``.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable

from kittiwake.delivery.api import Destination, Route
from kittiwake.delivery.smtp_session import (
    ClientSession,
    SessionError,
    SmtpClientTimeouts,
    local_failure,
)
from kittiwake.delivery.tlspolicy import TlsPolicy, TlsPolicyTable

log = logging.getLogger("kittiwake.delivery.smtp")

Credentials = Callable[[Route], "tuple[str, str] | None"]


def no_credentials(route: Route) -> tuple[str, str] | None:
    return None


def remote_name(dest: Destination) -> str:
    """RFC 3464 §2.3.5 Remote-MTA: the host name, or ``[ip]`` when we only have an address."""
    host = dest.host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host or f"[{dest.ip}]"
    return f"[{host}]"


def tls_server_name(dest: Destination) -> str | None:
    """SNI and the name to verify: the MX host name (an address literal is sent as is)."""
    host = dest.host.strip("[]")
    return host or None


class Connector:
    """Opens ready sessions; ``connections`` counts the TCP connections (stats, tests)."""

    def __init__(
        self,
        hostname: str,
        tls: TlsPolicyTable,
        timeouts: SmtpClientTimeouts,
        connect_timeout: float,
    ) -> None:
        self.hostname = hostname
        self.tls = tls
        self.timeouts = timeouts
        self.connect_timeout = connect_timeout
        self.connections = 0

    async def open(
        self, dest: Destination, policy: TlsPolicy, creds: tuple[str, str] | None
    ) -> ClientSession:
        """A session ready for MAIL; raises ``SessionError``."""
        try:
            return await self._connect(dest, policy, creds, tls=True)
        except SessionError as exc:
            if exc.kind != "tls" or policy.mandatory:
                raise
            log.info("%s; trying again without TLS", exc.reply.text)
            return await self._connect(dest, policy, creds, tls=False)

    async def _connect(
        self, dest: Destination, policy: TlsPolicy, creds: tuple[str, str] | None, *, tls: bool
    ) -> ClientSession:
        sess = await ClientSession.connect(
            dest, timeouts=self.timeouts, connect_timeout=self.connect_timeout
        )
        self.connections += 1
        log.info("connect to %s", sess.name)
        try:
            await sess.hello(self.hostname)
            if tls and policy.attempts:
                await self._starttls(sess, dest, policy)
            if creds is not None and sess.conn.capabilities.auth:
                await sess.authenticate(*creds)
        except BaseException:
            sess.abort()
            raise
        return sess

    async def _starttls(self, sess: ClientSession, dest: Destination, policy: TlsPolicy) -> None:
        if sess.conn.capabilities.starttls:
            refusal = await sess.starttls(self.tls.context(policy), tls_server_name(dest))
            if refusal is None:
                await sess.ehlo(self.hostname)
            elif policy.mandatory:
                raise SessionError(
                    local_failure("4.7.4", f"STARTTLS refused by {sess.name}: {refusal}"),
                    "tls-refused",
                )
        elif policy.mandatory:
            raise SessionError(
                local_failure("4.7.4", f"TLS is required, but was not offered by host {sess.name}"),
                "tls-missing",
            )
