"""The LMTP delivery agent (RFC 2033): hand mail to Dovecot or any LMTP server for final delivery.

Owns ``LmtpAgent`` (a ``delivery.api.DeliveryAgent``) and ``parse_lmtp_nexthop``. The
next hop is ``host:port``, ``[host]:port``, ``host`` (port 24) or ``unix:/path``. One
transaction per ``deliver()``: LHLO (on a new connection), MAIL, RCPT..., DATA (BDAT when
CHUNKING is offered), then one reply per accepted recipient (RFC 2033 §4.2) — each
recipient gets its own DELIVERED/DEFERRED/BOUNCED. A connection failure defers everyone
(there is no second server to try). Delivery is final: ``relayed`` stays False, so a
NOTIFY=SUCCESS gets a "delivered" DSN from us.

Connections are reused, as Postfix's lmtp client does (``lmtp_connection_cache_on_demand``):
after the transaction the session waits in a ``smtp_pool.SessionPool`` keyed by the socket
path or address and port (``reuse_idle`` seconds idle, ``reuse_time_limit`` seconds in
all, optionally ``reuse_count_limit`` transactions, at most
``max_idle_connections_per_destination`` per next hop; an unfinished transaction is RSET
first, RFC 5321 §4.1.1.5). A cached connection the server closed while it was idle (lost
before MAIL was answered, or a 421 to MAIL) is not a failure of the message: it is
dropped and the message goes over a new connection, once. ``close()`` QUITs the idle ones.

An 8-bit message goes to a server without 8BITMIME (RFC 2033 §5 only says SHOULD)
converted to 7-bit MIME, as over SMTP (``smtp_downgrade``, RFC 6152 §3); one that cannot
be converted bounces 5.6.3.

Security: LOW-MEDIUM. The LMTP server is ours or trusted (local socket or loopback); the
same parser as for SMTP reads its replies.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence

from kittiwake.delivery.api import (
    BodyOpener,
    Destination,
    Outcome,
    QueuedMessage,
    QueuedRecipient,
    RecipientStatus,
    Route,
)
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
from kittiwake.envelope import Reply
from kittiwake.errors import KittiwakeError
from kittiwake.proto.client_replies import Capabilities

log = logging.getLogger("kittiwake.delivery.lmtp")

DEFAULT_PORT = 24  # RFC 2033 §5 suggests not using 25; 24 is the usual choice
DEFAULT_TIMEOUTS = SmtpClientTimeouts()
NOT_ANSWERED = local_failure("4.4.2", "no reply from the LMTP server for this recipient")


def parse_lmtp_nexthop(nexthop: str) -> tuple[Destination, str | None]:
    """``unix:/path`` → (placeholder, path); ``[host]:port``/``host:port``/``host`` →
    (Destination, None). Raises ValueError for anything else."""
    text = nexthop.strip()
    if text.startswith("unix:"):
        path = text[5:]
        if not path:
            raise ValueError("empty unix socket path")
        return Destination(path, "", 0), path
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise ValueError(f"bad LMTP next hop {nexthop!r}")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    elif ":" in text:  # a bare IPv6 address, without a port
        try:
            host, port_text = str(ipaddress.ip_address(text)), ""
        except ValueError:
            raise ValueError(f"bad LMTP next hop {nexthop!r}") from None
    else:
        host, port_text = text, ""
    if not host:
        raise ValueError(f"bad LMTP next hop {nexthop!r}")
    port = DEFAULT_PORT
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"bad port in LMTP next hop {nexthop!r}")
        port = int(port_text)
    return Destination(host, host, port), None


PoolKey = tuple[str | None, str, int]  # (unix socket path, address, port)


class LmtpAgent:
    """Delivers over LMTP to ``route.nexthop``. See the module docstring."""

    name = "lmtp"

    def __init__(
        self,
        hostname: str,
        *,
        timeouts: SmtpClientTimeouts = DEFAULT_TIMEOUTS,
        connect_timeout: float = 30.0,
        max_idle_connections_per_destination: int = 20,
        reuse_idle: float = 5.0,
        reuse_time_limit: float = 300.0,
        reuse_count_limit: int = 0,
    ) -> None:
        self.hostname = hostname
        self.timeouts = timeouts
        self.connect_timeout = connect_timeout
        self.pool = SessionPool(
            idle_time=reuse_idle,
            max_per_key=max_idle_connections_per_destination,
            max_age=reuse_time_limit,
            max_uses=reuse_count_limit,
        )
        self.connections = 0  # connections opened (stats, tests)

    async def deliver(
        self,
        message: QueuedMessage,
        recipients: Sequence[QueuedRecipient],
        open_body: BodyOpener,
        route: Route | None = None,
    ) -> list[Outcome]:
        if not recipients:
            return []
        nexthop = route.nexthop if route is not None else ""
        try:
            dest, unix_path = parse_lmtp_nexthop(nexthop)
        except ValueError as exc:
            reply = local_failure("4.3.5", f"LMTP next hop misconfigured: {exc}")
            return [Outcome(r.index, RecipientStatus.DEFERRED, reply) for r in recipients]
        return await _Delivery(self, message, recipients, open_body, dest, unix_path).run()

    async def close(self) -> None:
        """QUIT the idle connections."""
        await self.pool.close()

    async def connect(self, dest: Destination, unix_path: str | None) -> ClientSession:
        """A new session, greeted and LHLO'd; raises ``SessionError``."""
        sess = await ClientSession.connect(
            dest,
            timeouts=self.timeouts,
            connect_timeout=self.connect_timeout,
            lmtp=True,
            unix_path=unix_path,
        )
        self.connections += 1
        log.info("connect to %s", sess.name)
        try:
            await sess.hello(self.hostname)
        except BaseException:
            sess.abort()
            raise
        return sess


class _Delivery:
    """The state of one ``deliver()`` call."""

    def __init__(
        self,
        agent: LmtpAgent,
        message: QueuedMessage,
        recipients: Sequence[QueuedRecipient],
        open_body: BodyOpener,
        dest: Destination,
        unix_path: str | None,
    ) -> None:
        self.agent = agent
        self.message = message
        self.recipients = recipients
        self.qid = message.queue_id
        self.dest = dest
        self.unix_path = unix_path
        self.key: PoolKey = (unix_path, dest.ip.lower(), dest.port)
        self.remote = None if unix_path is not None else dest.host
        self.body = BodySource(open_body)
        self.downgrade = Downgrade(message, open_body, self.body)
        self.decided: dict[int, tuple[Reply, str | None]] = {}  # reply, Remote-MTA
        self.failure: Reply | None = None  # what defers the undecided recipients

    async def run(self) -> list[Outcome]:
        self.body.prefetch()
        self.downgrade.prefetch()  # the long-line look overlaps the connection
        try:
            cached = self.agent.pool.take(self.key)
            if cached is None or not await self._use(cached, reused=True):
                try:
                    sess = await self.agent.connect(self.dest, self.unix_path)
                except SessionError as exc:
                    self.failure = exc.reply
                    log.info("%s: %s", self.qid, exc.reply.text)
                else:
                    await self._use(sess, reused=False)
        finally:
            await self.body.aclose()
            await self.downgrade.aclose()
        return [self._outcome(r.index) for r in self.recipients]

    async def _use(self, sess: ClientSession, *, reused: bool) -> bool:
        """One transaction over ``sess``, which then goes back to the pool (or is closed).
        False: ``sess`` was a cached connection that died idle — nothing was decided."""
        try:
            return await self._transaction(sess, reused)
        except BaseException:  # cancelled (shutdown) or a bug: never leave it half-used
            sess.abort()
            raise

    async def _transaction(self, sess: ClientSession, reused: bool) -> bool:
        caps = sess.conn.capabilities
        chosen = await self._body_for(sess, caps)
        if chosen is None:
            self.agent.pool.put(self.key, sess)
            return True
        body, size = chosen
        rcpts, refused = plan_recipients(self.message, self.recipients, caps)
        for index, reply in refused.items():
            self.decided[index] = (reply, None)  # our own refusal: no Remote-MTA
        if not rcpts:
            self.agent.pool.put(self.key, sess)
            return True
        result = TxResult()
        body.rewind()
        try:
            await transact(sess, plan_mail(self.message, caps, size), rcpts, body, result)
        except SessionError as exc:
            if reused and _died_idle(result):
                log.info("%s: cached connection to %s died, reconnecting", self.qid, sess.name)
                return False
            self._apply(result, rcpts)
            self.failure = exc.reply
            log.info("%s: %s", self.qid, exc.reply.text)
            return True
        except (OSError, KittiwakeError) as exc:  # the spool body
            sess.abort()
            self._apply(result, rcpts)
            self.failure = unreadable_body(log, self.qid, exc)
            return True
        if _closing(result):
            sess.abort()
            if reused and _died_idle(result):  # 421 to MAIL: the server timed it out
                log.info("%s: cached connection to %s closing, reconnecting", self.qid, sess.name)
                return False
            self._apply(result, rcpts)
            return True
        self._apply(result, rcpts)
        if result.complete or await sess.rset():
            self.agent.pool.put(self.key, sess)
        return True

    async def _body_for(
        self, sess: ClientSession, caps: Capabilities
    ) -> tuple[BodySource, int | None] | None:
        """What to send over ``sess`` and the size to declare (None: the spool file's): the
        message, or its 7-bit form for a server without 8BITMIME. None: the message cannot
        go (everyone decided) or the spool failed."""
        problem = message_problem(self.message, caps, sess.name)
        if problem is not None:
            self._decide_all(problem, self.remote)
            return None
        try:
            converted = await self.downgrade.for_peer(caps, sess.name)
        except (OSError, KittiwakeError) as exc:
            self.failure = unreadable_body(log, self.qid, exc)
            return None
        if isinstance(converted, Reply):
            self._decide_all(converted, None)  # our own decision: no Remote-MTA
            return None
        return converted or (self.body, None)

    def _decide_all(self, reply: Reply, remote: str | None) -> None:
        for r in self.recipients:
            self.decided.setdefault(r.index, (reply, remote))

    def _apply(self, result: TxResult, rcpts: Sequence[TxRecipient]) -> None:
        for index, reply in recipient_replies(result, rcpts, lmtp=True).items():
            self.decided[index] = (reply, self.remote)

    def _outcome(self, index: int) -> Outcome:
        decided = self.decided.get(index)
        if decided is None:
            return Outcome(
                index,
                RecipientStatus.DEFERRED,
                as_transient(self.failure or NOT_ANSWERED),
                remote_mta=self.remote,
            )
        reply, remote = decided
        if reply.is_positive:
            status = RecipientStatus.DELIVERED
        elif reply.is_permanent:
            status = RecipientStatus.BOUNCED
        else:
            status = RecipientStatus.DEFERRED
        return Outcome(index, status, with_default_enhanced(reply), remote_mta=remote)


def _died_idle(result: TxResult) -> bool:
    """On a cached connection: lost before MAIL was answered, or a 421 to MAIL — the server
    dropped it while idle; nothing happened to this message there."""
    return result.mail is None or result.mail.code == 421


def _closing(result: TxResult) -> bool:
    """A 421 anywhere: the server is closing the connection (RFC 5321 §3.8)."""
    replies = [result.mail, result.data, *result.rcpt.values(), *result.end]
    return any(r is not None and r.code == 421 for r in replies)
