"""The SMTP delivery agent: hand a message to the next hop's servers, one per recipient outcome.

Owns ``SmtpAgent`` (a ``delivery.api.DeliveryAgent``). For one ``deliver()`` call:

1. An idle connection kept from an earlier delivery to the same next hop (same TLS policy,
   same credentials) is used first, without any DNS lookup (``smtp_pool``).
2. Otherwise — or for recipients still unfinished — the ``DestinationFinder`` gives the
   servers to try in order (MX preference; a ``Reply`` ends the attempt: 4xx defers,
   5xx bounces everyone). For each: a session made ready by ``smtp_connect`` (EHLO,
   STARTTLS per ``TlsPolicy``, AUTH to a smart host), then one transaction
   (``smtp_transaction``) — with the message converted to 7-bit MIME for a peer without
   8BITMIME (RFC 6152 §3), and its lines over 998 octets re-encoded or broken for any peer
   (RFC 5321 §4.5.3.1.6): ``smtp_downgrade``.

Failure scope decides what happens next (Postfix's smtp_trouble.c):

* the connection fails (refused, timeout, lost, malformed reply, 421, refused greeting or
  HELO, TLS required but missing): the unfinished recipients go to the next server; when
  none is left they are DEFERRED with the last error (a 5xx greeting becomes 4xx);
* a 5xx to MAIL, or one of our own message-scope checks (SMTPUTF8, SIZE, BINARYMIME, 8-bit
  content that cannot be converted for a peer without 8BITMIME): every unfinished
  recipient BOUNCES; a 4xx to MAIL: the next server is tried;
* RCPT 5xx → that recipient BOUNCES; RCPT 4xx → it is tried at the next server, then
  DEFERRED (a 452 with others accepted is retried at once in a new transaction);
* DATA/BDAT or final reply: 2xx → the accepted recipients are DELIVERED (``relayed``;
  ``peer_dsn`` when the peer took our DSN parameters), 5xx → they BOUNCE, 4xx → next server.

A deferral where no server got as far as answering MAIL (other than with 421), or the
finder's 4xx, is marked ``site_failure`` (the scheduler's dead-destination cache).

Security: MEDIUM. Everything the peer says is parsed in ``proto``; credentials never leave
without TLS; certificate checks follow ``tlspolicy``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from kittiwake.delivery.api import (
    BodyOpener,
    Destination,
    DestinationFinder,
    Outcome,
    QueuedMessage,
    QueuedRecipient,
    RecipientStatus,
    Route,
)
from kittiwake.delivery.smtp_connect import Connector, Credentials, no_credentials, remote_name
from kittiwake.delivery.smtp_downgrade import Downgrade
from kittiwake.delivery.smtp_plan import (
    as_transient,
    message_problem,
    plan_mail,
    plan_recipients,
    recipient_replies,
)
from kittiwake.delivery.smtp_pool import SessionPool
from kittiwake.delivery.smtp_session import (
    ClientSession,
    SessionError,
    SmtpClientTimeouts,
    local_failure,
    with_default_enhanced,
)
from kittiwake.delivery.smtp_transaction import (
    BodySource,
    TxRecipient,
    TxResult,
    transact,
    unreadable_body,
)
from kittiwake.delivery.tlspolicy import TlsPolicyTable
from kittiwake.envelope import Reply
from kittiwake.errors import KittiwakeError
from kittiwake.proto.client_replies import Capabilities

__all__ = ["Credentials", "SmtpAgent", "SmtpClientTimeouts", "TlsPolicyTable"]

log = logging.getLogger("kittiwake.delivery.smtp")

DEFAULT_TIMEOUTS = SmtpClientTimeouts()
NO_DESTINATION = local_failure("4.4.4", "no server to deliver to")


class SmtpAgent:
    """Delivers over SMTP to a route's next hop. See the module docstring."""

    name = "smtp"

    def __init__(
        self,
        hostname: str,
        find: DestinationFinder,
        tls: TlsPolicyTable,
        *,
        credentials: Credentials = no_credentials,
        connect_timeout: float = 30.0,
        timeouts: SmtpClientTimeouts = DEFAULT_TIMEOUTS,
        max_idle_connections_per_destination: int = 20,
        reuse_idle: float = 5.0,
        reuse_time_limit: float = 300.0,
    ) -> None:
        self.hostname = hostname
        self.find = find
        self.tls = tls
        self.credentials = credentials
        self.connector = Connector(hostname, tls, timeouts, connect_timeout)
        self.pool = SessionPool(
            idle_time=reuse_idle,
            max_per_key=max_idle_connections_per_destination,
            max_age=reuse_time_limit,
        )

    @property
    def connections(self) -> int:
        """TCP connections opened (stats, tests)."""
        return self.connector.connections

    async def deliver(
        self,
        message: QueuedMessage,
        recipients: Sequence[QueuedRecipient],
        open_body: BodyOpener,
        route: Route | None = None,
    ) -> list[Outcome]:
        if not recipients:
            return []
        if route is None or not route.nexthop:
            route = Route("smtp", recipients[0].address.rpartition("@")[2])
        return await _Delivery(self, message, recipients, open_body, route).run()

    async def close(self) -> None:
        """QUIT the idle connections."""
        await self.pool.close()


PEER_REPLY_KINDS = frozenset({"refused", "closed"})  # SessionErrors carrying the peer's reply


class _Delivery:
    """The state of one ``deliver()`` call."""

    def __init__(
        self,
        agent: SmtpAgent,
        message: QueuedMessage,
        recipients: Sequence[QueuedRecipient],
        open_body: BodyOpener,
        route: Route,
    ) -> None:
        self.agent = agent
        self.message = message
        self.recipients = recipients
        self.qid = message.queue_id
        self.nexthop = route.nexthop
        domains = {r.address.rpartition("@")[2].lower() for r in recipients}
        self.policy = agent.tls.lookup(self.nexthop, domains)
        self.creds = agent.credentials(route)
        self.key = (self.nexthop.lower(), self.policy, self.creds)
        self.body = BodySource(open_body)
        self.downgrade = Downgrade(message, open_body, self.body)
        self.pending = {r.index: r for r in recipients}
        self.done: dict[int, Outcome] = {}
        self.soft: dict[int, tuple[Reply, str]] = {}  # last 4xx per recipient, and from whom
        self.last: Reply = NO_DESTINATION
        self.last_remote: str | None = None
        self.fatal: Reply | None = None  # the spool could not be read: stop
        self.reached = False  # a server answered MAIL with other than 421 (else: site failure)

    async def run(self) -> list[Outcome]:
        self.body.prefetch()
        self.downgrade.prefetch()
        try:
            skip: tuple[str, int] | None = None
            sess = self.agent.pool.take(self.key)
            if sess is not None:
                skip = await self._use(sess, reused=True)
            if self.pending and self.fatal is None:
                await self._destinations(skip)
        finally:
            await self.body.aclose()
            await self.downgrade.aclose()
        return self._outcomes()

    async def _destinations(self, skip: tuple[str, int] | None) -> None:
        try:
            found = await self.agent.find(self.nexthop)
        except Exception:  # a finder bug must not lose the message: defer
            log.exception("%s: looking up %s failed", self.qid, self.nexthop)
            found = local_failure("4.4.3", f"cannot find the servers for {self.nexthop}")
        if isinstance(found, Reply):
            status = RecipientStatus.BOUNCED if found.is_permanent else RecipientStatus.DEFERRED
            for index in list(self.pending):
                self._finish(index, status, found, None, site=found.is_transient)
            return
        for dest in found:
            if skip == (dest.ip, dest.port):
                continue
            sess = await self._open(dest)
            if sess is not None:
                await self._use(sess)
            if not self.pending or self.fatal is not None:
                return

    # ----------------------------------------------------------------- connections

    async def _open(self, dest: Destination) -> ClientSession | None:
        try:
            return await self.agent.connector.open(dest, self.policy, self.creds)
        except SessionError as exc:
            self._session_failed(dest, exc)
            return None

    def _session_failed(self, dest: Destination, exc: SessionError) -> None:
        self.last = exc.reply
        # RFC 3464 §2.3.5: Remote-MTA only when that MTA issued the diagnostic.
        self.last_remote = remote_name(dest) if exc.kind in PEER_REPLY_KINDS else None
        log.info("%s: %s", self.qid, exc.reply.text if exc.kind != "refused" else exc.reply)

    def _release(self, sess: ClientSession) -> None:
        self.agent.pool.put(self.key, sess)

    # ---------------------------------------------------------------- transactions

    async def _use(self, sess: ClientSession, *, reused: bool = False) -> tuple[str, int] | None:
        """Send the unfinished recipients over ``sess``; returns the endpoint not to try
        again in this call (None: a reused connection that died idle — reconnect)."""
        try:
            return await self._transactions(sess, reused)
        except BaseException:  # cancelled (shutdown) or a bug: never leave it half-used
            sess.abort()
            raise

    async def _transactions(self, sess: ClientSession, reused: bool) -> tuple[str, int] | None:
        endpoint = (sess.dest.ip, sess.dest.port)
        remote = remote_name(sess.dest)
        caps = sess.conn.capabilities
        chosen = await self._body_for(sess, caps, remote)
        if chosen is None:
            self._release(sess)
            return endpoint
        body, size = chosen
        mail = plan_mail(self.message, caps, size)
        batch = list(self.pending.values())
        while batch:
            rcpts, refused = plan_recipients(self.message, batch, caps)
            for index, reply in refused.items():
                self._finish(index, RecipientStatus.BOUNCED, reply, None)
            if not rcpts:
                break
            result = TxResult()
            body.rewind()
            try:
                await transact(sess, mail, rcpts, body, result)
            except SessionError as exc:
                self._apply(result, rcpts, remote, caps.dsn)
                self.reached = self.reached or not _died_idle(result)
                if reused and _died_idle(result):
                    log.info("%s: cached connection to %s died, reconnecting", self.qid, sess.name)
                    return None
                self._session_failed(sess.dest, exc)
                return endpoint
            except (OSError, KittiwakeError) as exc:  # the spool body
                sess.abort()
                self.fatal = unreadable_body(log, self.qid, exc)
                return endpoint
            self._apply(result, rcpts, remote, caps.dsn)
            self.reached = self.reached or not _died_idle(result)
            if _closing(result):
                sess.abort()
                if reused and _died_idle(result):
                    log.info(
                        "%s: cached connection to %s closing, reconnecting", self.qid, sess.name
                    )
                    return None  # an idle connection the server timed out
                return endpoint
            if not result.complete and not await sess.rset():
                return endpoint
            # RFC 5321 §4.5.3.1.10: "452 too many recipients" — send the rest at once.
            retry = [r for r in batch if _too_many(result, r.index) and r.index in self.pending]
            batch = retry if result.accepted else []
        self._release(sess)
        return endpoint

    async def _body_for(
        self, sess: ClientSession, caps: Capabilities, remote: str | None
    ) -> tuple[BodySource, int | None] | None:
        """What to send over ``sess`` and the size to declare (None: the spool file's): the
        message, or its 7-bit form for a peer without 8BITMIME, or its form with no line
        over 998 octets. None: the message cannot go there (everyone bounced) or the spool
        failed."""
        problem = message_problem(self.message, caps, sess.name)
        if problem is not None:
            self._bounce_all(problem, remote)
            return None
        try:
            converted = await self.downgrade.for_peer(caps, sess.name)
        except (OSError, KittiwakeError) as exc:
            self.fatal = unreadable_body(log, self.qid, exc)
            return None
        if isinstance(converted, Reply):
            self._bounce_all(converted, None)  # our own decision: no Remote-MTA
            return None
        return converted or (self.body, None)

    def _bounce_all(self, reply: Reply, remote: str | None) -> None:
        for index in list(self.pending):
            self._finish(index, RecipientStatus.BOUNCED, reply, remote)

    def _apply(
        self, result: TxResult, rcpts: Sequence[TxRecipient], remote: str, peer_dsn: bool
    ) -> None:
        decided = recipient_replies(result, rcpts, lmtp=False)
        for index, reply in decided.items():
            if index not in self.pending:
                continue
            if reply.is_positive:
                outcome = Outcome(
                    index,
                    RecipientStatus.DELIVERED,
                    reply,
                    remote_mta=remote,
                    relayed=True,
                    peer_dsn=peer_dsn,
                )
                self.done[index] = outcome
                del self.pending[index]
            elif reply.is_permanent:
                self._finish(index, RecipientStatus.BOUNCED, with_default_enhanced(reply), remote)
            else:
                self.soft[index] = (with_default_enhanced(reply), remote)

    def _finish(
        self,
        index: int,
        status: RecipientStatus,
        reply: Reply,
        remote: str | None,
        *,
        site: bool = False,
    ) -> None:
        if self.pending.pop(index, None) is not None:
            self.done[index] = Outcome(index, status, reply, remote_mta=remote, site_failure=site)

    def _outcomes(self) -> list[Outcome]:
        out = []
        for r in self.recipients:
            outcome = self.done.get(r.index)
            if outcome is None:
                if self.fatal is not None:
                    reply, remote = self.fatal, None
                else:
                    reply, remote = self.soft.get(r.index) or (self.last, self.last_remote)
                outcome = Outcome(
                    r.index,
                    RecipientStatus.DEFERRED,
                    as_transient(reply),
                    remote_mta=remote,
                    site_failure=not self.reached and self.fatal is None,
                )
            out.append(outcome)
        return out


def _died_idle(result: TxResult) -> bool:
    """A reused connection that failed before or with a 421 at MAIL: the server dropped it
    while it was idle — nothing happened to this message there; reconnect."""
    return result.mail is None or result.mail.code == 421


def _too_many(result: TxResult, index: int) -> bool:
    reply = result.rcpt.get(index)
    return reply is not None and reply.code == 452


def _closing(result: TxResult) -> bool:
    """A 421 anywhere: the server is closing the connection (RFC 5321 §3.8)."""
    replies = [result.mail, result.data, *result.rcpt.values(), *result.end]
    return any(r is not None and r.code == 421 for r in replies)
