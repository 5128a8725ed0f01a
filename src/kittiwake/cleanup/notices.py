"""Delivery status notifications on their way into the queue: the ``Notifier`` the scheduler
calls (``queue.api.Notifier``; queue never imports cleanup, so ``app`` injects this).

Owns ``NoticeSender``: it decides who gets a notice, writes it with ``queue.dsn.write_dsn``
through ``Cleanup.begin_local`` (so a notice is spooled, fsynced and committed like any
other message), and hands the queued notice to the scheduler (``on_queued``).

Who gets a notice (RFC 3461 §6, RFC 5321 §4.5.5, §6.1):

- the envelope sender, for the recipients whose NOTIFY asked for this kind (no NOTIFY:
  failures and delays, never successes — RFC 3461 §4.1);
- nobody, for delay and success notices about null-sender mail;
- the postmaster (a *double bounce*, ``internal="double-bounce"``, headers only), when
  null-sender mail — a notice of ours, or anyone's — fails: there is nobody else to tell,
  and the postmaster should see that notices do not get through. NOTIFY is not asked here:
  our notices carry NOTIFY=NEVER (RFC 3461 §6.1: the only value a DSN may carry), and a
  NEVER failure "MAY inform the local postmaster" (RFC 3461 §5.2.2(d)) — so the scheduler
  must hand null-sender failures to ``send`` whatever their NOTIFY;
- nobody, for a double bounce that fails: it is dropped with the log line
  ``QID: double bounce dropped`` (the loop stops here).

A notice has the null reverse-path (RFC 5321 §4.5.5, RFC 3461 §6.1), no RET or ENVID, one
recipient with NOTIFY=NEVER, and ``Envelope.internal`` set to "bounce", "delay", "success" or
"double-bounce". Security: a notice quotes the original and remote replies; ``write_dsn``
sanitises them. Backscatter is limited by design upstream: mail we refuse at SMTP time gets
no notice from us.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import BinaryIO

from kittiwake.cleanup.writer import TOO_MANY_HOPS, Cleanup, CleanupSink
from kittiwake.delivery.api import Outcome, QueuedMessage, RecipientStatus
from kittiwake.envelope import BodyType, Envelope, Notify, Recipient, Reply
from kittiwake.errors import StoreError
from kittiwake.queue.api import DsnKind, DsnRecipient, Store
from kittiwake.queue.dsn import DsnResult, write_dsn

log = logging.getLogger("kittiwake.bounce")

_INTERNAL = {DsnKind.FAILURE: "bounce", DsnKind.DELAY: "delay", DsnKind.SUCCESS: "success"}
_FLAG = {
    DsnKind.FAILURE: Notify.FAILURE,
    DsnKind.DELAY: Notify.DELAY,
    DsnKind.SUCCESS: Notify.SUCCESS,
}
_WHAT = {
    DsnKind.FAILURE: "sender non-delivery notification",
    DsnKind.DELAY: "sender delay notification",
    DsnKind.SUCCESS: "sender delivery status notification",
}
DOUBLE_BOUNCE = "double-bounce"
_LIVE = (RecipientStatus.PENDING, RecipientStatus.DEFERRED)


def requested(kind: DsnKind, notify: Notify | None) -> bool:
    """Did this NOTIFY ask for a ``kind`` notice? RFC 3461 §4.1: without NOTIFY, failures
    are reported and delays at our discretion (yes); success only when asked."""
    if notify is None:
        return kind is not DsnKind.SUCCESS
    return bool(notify & _FLAG[kind])


class NoticeSender:
    """``queue.api.Notifier`` on top of ``Cleanup`` (see the module docstring).

    ``on_queued`` receives each committed notice (the scheduler's ``submit``); ``clock``
    dates the notices; ``max_original`` caps the octets of a returned message (RFC 3461
    §4.3 RET=FULL), beyond which only its headers are returned.
    """

    def __init__(
        self,
        cleanup: Cleanup,
        store: Store,
        hostname: str,
        postmaster: str,
        on_queued: Callable[[QueuedMessage], None],
        *,
        max_original: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._cleanup = cleanup
        self._store = store
        self._hostname = hostname
        self._postmaster = postmaster
        self._on_queued = on_queued
        self._max_original = max_original
        self._clock = clock

    async def send(
        self, kind: DsnKind, message: QueuedMessage, recipients: Sequence[DsnRecipient]
    ) -> str | None:
        """Queue the notice; its queue id, or None when no notice is due. Raises
        StoreError/OSError when the notice could not be queued (the caller may retry)."""
        qid = message.queue_id
        env = message.envelope
        if not recipients:
            return None
        if env.internal == DOUBLE_BOUNCE:
            log.warning("%s: double bounce dropped", qid)
            return None
        if env.sender == "":
            if kind is not DsnKind.FAILURE:
                return None  # nobody to tell that null-sender mail is late or delivered
            if not self._postmaster:
                log.warning("%s: double bounce dropped (no postmaster address)", qid)
                return None
            return await self._queue(
                kind, message, recipients, self._postmaster, DOUBLE_BOUNCE, double=True
            )
        wanted = self._requested(kind, env, recipients)
        if not wanted:
            return None
        return await self._queue(kind, message, wanted, env.sender, _INTERNAL[kind])

    async def bounce_now(self, message: QueuedMessage, reply: Reply = TOO_MANY_HOPS) -> str | None:
        """Fail every unfinished recipient of a committed ``message`` now with ``reply``:
        the notice first (while the body exists), then the outcomes (which remove the
        message). For mail with no SMTP client to refuse it, e.g. a locally injected
        message whose ``CleanupSink.hops_exceeded`` (RFC 5321 §6.3, 5.4.6)."""
        live = [r for r in message.recipients if r.status in _LIVE]
        now = self._clock()
        status = reply.enhanced or ("5.0.0" if reply.is_permanent else "4.0.0")
        notes = [
            DsnRecipient(
                address=r.address,
                original=_orcpt(message.envelope, r.index),
                action="failed",
                status=status,
                diagnostic=str(reply),
                last_attempt=now,
            )
            for r in live
        ]
        notice = await self.send(DsnKind.FAILURE, message, notes) if notes else None
        outcomes = [Outcome(r.index, RecipientStatus.BOUNCED, reply) for r in live]
        await self._store.record(message.queue_id, outcomes)
        log.info("%s: bounced %d recipient(s): %s", message.queue_id, len(outcomes), reply)
        return notice

    # -------------------------------------------------------------------------------------

    @staticmethod
    def _requested(
        kind: DsnKind, env: Envelope, recipients: Sequence[DsnRecipient]
    ) -> list[DsnRecipient]:
        """The recipients whose NOTIFY asked for ``kind`` (matched by address; one we do
        not find in the envelope is kept: the caller chose it)."""
        asks: dict[str, bool] = {}
        for r in env.recipients:
            asks[r.address] = asks.get(r.address, False) or requested(kind, r.notify)
        return [r for r in recipients if asks.get(r.address, True)]

    async def _queue(
        self,
        kind: DsnKind,
        message: QueuedMessage,
        recipients: Sequence[DsnRecipient],
        to: str,
        internal: str,
        *,
        double: bool = False,
    ) -> str:
        envelope = Envelope("", (Recipient(to, notify=Notify.NEVER),), internal=internal)
        sink = self._cleanup.begin_local(envelope)
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(None, self._write, sink, kind, message, recipients, to, double)
        try:
            result = await work
            envelope = Envelope(
                "",
                envelope.recipients,
                body_type=BodyType.EIGHTBITMIME if result.eight_bit else BodyType.SEVENBIT,
                smtputf8=result.smtputf8,
                internal=internal,
            )
            queued = await sink.commit(envelope)
        except BaseException:
            if work.done():
                sink.abort()
            else:  # cancelled while the thread writes: drop the spool once it is done
                work.add_done_callback(lambda _: sink.abort())
            raise
        what = "postmaster non-delivery notification" if double else _WHAT[kind]
        log.info("%s: %s: %s", message.queue_id, what, queued.queue_id)
        self._on_queued(queued)
        return queued.queue_id

    def _write(
        self,
        sink: CleanupSink,
        kind: DsnKind,
        message: QueuedMessage,
        recipients: Sequence[DsnRecipient],
        to: str,
        double: bool,
    ) -> DsnResult:
        """Worker thread: open the original and stream the notice into the spool."""
        original: BinaryIO | None = None
        try:
            original = self._store.open_body(message.queue_id)
        except StoreError as exc:  # still tell the sender; just without the original
            log.warning("%s: original unavailable for the notice: %s", message.queue_id, exc)
        try:
            return write_dsn(
                sink.write,
                kind=kind,
                reporting_mta=self._hostname,
                message=message,
                recipients=recipients,
                original=original,
                now=self._clock(),
                max_original=self._max_original,
                message_id=f"<{sink.queue_id}@{self._hostname}>",
                postmaster=self._postmaster,
                to=to,
                double_bounce=double,
            )
        finally:
            if original is not None:
                original.close()


def _orcpt(envelope: Envelope, index: int) -> str | None:
    if 0 <= index < len(envelope.recipients):
        return envelope.recipients[index].orcpt
    return None
