"""The LMTP delivery agent (RFC 2033): hand mail to Dovecot or any LMTP server for final delivery.

Owns ``LmtpAgent`` (a ``delivery.api.DeliveryAgent``) and ``parse_lmtp_nexthop``. The
next hop is ``host:port``, ``[host]:port``, ``host`` (port 24) or ``unix:/path``. One
connection per ``deliver()``: LHLO, MAIL, RCPT..., DATA (BDAT when CHUNKING is offered),
then one reply per accepted recipient (RFC 2033 §4.2) — each recipient gets its own
DELIVERED/DEFERRED/BOUNCED. A connection failure defers everyone (there is no second
server to try). Delivery is final: ``relayed`` stays False, so a NOTIFY=SUCCESS gets a
"delivered" DSN from us.

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
from kittiwake.delivery.smtp_plan import (
    as_transient,
    message_problem,
    plan_mail,
    plan_recipients,
    recipient_replies,
)
from kittiwake.delivery.smtp_session import (
    ClientSession,
    SessionError,
    SmtpClientTimeouts,
    local_failure,
    with_default_enhanced,
)
from kittiwake.delivery.smtp_transaction import BodySource, TxResult, transact, unreadable_body
from kittiwake.envelope import Reply
from kittiwake.errors import KittiwakeError

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


class LmtpAgent:
    """Delivers over LMTP to ``route.nexthop``. See the module docstring."""

    name = "lmtp"

    def __init__(
        self,
        hostname: str,
        *,
        timeouts: SmtpClientTimeouts = DEFAULT_TIMEOUTS,
        connect_timeout: float = 30.0,
    ) -> None:
        self.hostname = hostname
        self.timeouts = timeouts
        self.connect_timeout = connect_timeout

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
        remote = None if unix_path is not None else dest.host
        decided: dict[int, Reply] = {}
        failure: Reply | None = None
        body = BodySource(open_body)
        body.prefetch()
        sess: ClientSession | None = None
        finished = False
        try:
            sess = await ClientSession.connect(
                dest,
                timeouts=self.timeouts,
                connect_timeout=self.connect_timeout,
                lmtp=True,
                unix_path=unix_path,
            )
            log.info("connect to %s", sess.name)
            await sess.hello(self.hostname)
            caps = sess.conn.capabilities
            problem = message_problem(message, caps, sess.name)
            if problem is not None:
                decided = dict.fromkeys((r.index for r in recipients), problem)
            else:
                rcpts, decided = plan_recipients(message, recipients, caps)
                if rcpts:
                    result = TxResult()
                    try:
                        await transact(sess, plan_mail(message, caps), rcpts, body, result)
                    finally:
                        decided.update(recipient_replies(result, rcpts, lmtp=True))
            await sess.quit()
            finished = True
        except SessionError as exc:
            failure = exc.reply
            log.info("%s: %s", message.queue_id, exc.reply.text)
        except (OSError, KittiwakeError) as exc:  # the spool body
            failure = unreadable_body(log, message.queue_id, exc)
        finally:
            if sess is not None and not finished:  # failed, or cancelled
                sess.abort()
            await body.aclose()
        return [self._outcome(r.index, decided.get(r.index), failure, remote) for r in recipients]

    async def close(self) -> None:
        """Nothing to close (no connection outlives a ``deliver()``); for symmetry."""

    @staticmethod
    def _outcome(
        index: int, reply: Reply | None, failure: Reply | None, remote: str | None
    ) -> Outcome:
        if reply is None:
            return Outcome(
                index,
                RecipientStatus.DEFERRED,
                as_transient(failure or NOT_ANSWERED),
                remote_mta=remote,
            )
        if reply.is_positive:
            status = RecipientStatus.DELIVERED
        elif reply.is_permanent:
            status = RecipientStatus.BOUNCED
        else:
            status = RecipientStatus.DEFERRED
        return Outcome(index, status, with_default_enhanced(reply), remote_mta=remote)
