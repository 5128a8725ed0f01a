"""The scheduler's decisions that need no event loop: backoff, expiry, who gets which notice.

Owns ``SchedulerSettings``, ``backoff``, ``finalize`` (an agent's raw outcomes → what the
store records: retry times, expiry into a bounce, the final notice owed), ``wants``
(RFC 3461 NOTIFY), ``dsn_recipients`` (the per-recipient blocks of a notice),
``with_outcomes`` (the in-memory twin of the store's update) and the Postfix-style log
line. Pure functions over frozen values, so each rule is tested on its own. Not security
sensitive; log lines quote remote replies, which ``kittiwake.log`` escapes.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from kittiwake.delivery.api import Outcome, QueuedMessage, QueuedRecipient, RecipientStatus
from kittiwake.envelope import Notify, Reply
from kittiwake.queue.api import DsnKind, DsnRecipient

LIVE = (RecipientStatus.PENDING, RecipientStatus.DEFERRED)
NO_AGENT = Reply(451, "4.3.5", "no delivery agent for this destination")
AGENT_FAILED = Reply(451, "4.3.0", "delivery agent failed")
ROUTING_FAILED = "4.3.0 cannot route this recipient"  # an ``error:`` nexthop
ADMIN_BOUNCE = Reply(550, "5.0.0", "bounced by the administrator")
DISCARDED = Reply(250, "2.0.0", "discarded")
_ENHANCED = re.compile(r"([245])\.\d{1,3}\.\d{1,3}")


@dataclass(frozen=True, slots=True)
class SchedulerSettings:
    """Queue manager knobs; defaults like Postfix's (``postconf -d``)."""

    active_limit: int = 1000  # messages in memory at once (qmgr_message_active_limit)
    destination_concurrency: int = 20  # parallel deliveries per route key
    local_concurrency: int = 4  # ... for the local (Maildir) transport: it shares our disk
    retry_first: float = 300.0  # first retry after ~this (minimal_backoff_time)
    retry_max: float = 3600.0  # backoff cap (maximal_backoff_time)
    max_lifetime: float = 5 * 86400.0  # then bounce 5.4.7 (maximal_queue_lifetime)
    delay_warning: float = 4 * 3600.0  # 0 = never (delay_warning_time)
    dead_destination_ttl: float = 60.0  # no attempts to a failed site for this long
    # Additive knobs (issue 3 scheduler):
    initial_destination_concurrency: int = 5  # slow start: +1 per good delivery
    destination_recipient_limit: int = 50  # recipients per agent call
    retry_jitter: float = 0.2  # a retry lands in [(1 - jitter) * backoff, backoff]
    sweep_interval: float = 300.0  # safety-net rescan of the store; 0 = none


def backoff(attempts_before: int, settings: SchedulerSettings, rand: float) -> float:
    """Seconds until the next try after a deferral: ``retry_first`` doubling per earlier
    attempt up to ``retry_max``, jittered down by up to ``retry_jitter`` (``rand`` in
    [0, 1)) so that mail deferred together does not come back together."""
    exponent = min(max(attempts_before, 0), 62)
    base = min(settings.retry_max, settings.retry_first * 2.0**exponent)
    return base * (1.0 - settings.retry_jitter * rand)


def wants(notify: Notify | None, kind: DsnKind) -> bool:
    """Does this recipient's NOTIFY (RFC 3461 §4.1) ask for ``kind``? No NOTIFY means
    FAILURE, and DELAY at the MTA's discretion: we send delay warnings then (as Postfix
    does with delay_warning_time set). NEVER asks for nothing."""
    if kind is DsnKind.SUCCESS:
        return notify is not None and Notify.SUCCESS in notify
    flag = Notify.FAILURE if kind is DsnKind.FAILURE else Notify.DELAY
    return notify is None or flag in notify


def final_notice(message: QueuedMessage, outcome: Outcome) -> str | None:
    """The final DSN action owed for ``outcome``, if any. A null sender gets no success
    notice (RFC 3461 §5.2: no DSN to <>); its failures still go to the Notifier, which
    tells the postmaster. A peer that took our DSN parameters owes the notice now."""
    notify = message.envelope.recipients[outcome.index].notify
    if outcome.status is RecipientStatus.BOUNCED:
        # Null-sender mail ignores NOTIFY here: our own notices carry NOTIFY=NEVER
        # (RFC 3461 §6.1), yet their failure must reach the postmaster (§5.2.2(d)).
        null_sender = message.envelope.sender == ""
        return "failed" if null_sender or wants(notify, DsnKind.FAILURE) else None
    if outcome.status is not RecipientStatus.DELIVERED or message.envelope.sender == "":
        return None
    if not wants(notify, DsnKind.SUCCESS) or outcome.peer_dsn:
        return None
    return "relayed" if outcome.relayed else "delivered"


def wants_delay_warning(message: QueuedMessage, r: QueuedRecipient) -> bool:
    """A deferred recipient still owed its one delay warning."""
    return (
        r.status is RecipientStatus.DEFERRED
        and not r.delay_notified
        and message.envelope.sender != ""  # RFC 3461 §5.2
        and wants(message.envelope.recipients[r.index].notify, DsnKind.DELAY)
    )


def suspended(reason: Reply) -> Reply:
    """Why mail for a dead destination was deferred without an attempt."""
    return Reply(
        reason.code if reason.is_transient else 451,
        reason.enhanced or "4.4.1",
        f"delivery temporarily suspended: {reason}",
    )


def _expired(last: Reply) -> Reply:
    return Reply(554, "5.4.7", f"delivery time expired; last error: {last}")


@dataclass(slots=True)
class Finalized:
    """What to record for one attempt."""

    outcomes: list[Outcome] = field(default_factory=list)
    notices: dict[int, str] = field(default_factory=dict)
    diagnostics: dict[int, str] = field(default_factory=dict)


def finalize(
    message: QueuedMessage,
    recipients: Sequence[QueuedRecipient],
    raw: Sequence[Outcome],
    now: float,
    settings: SchedulerSettings,
    rand: Sequence[float],
) -> Finalized:
    """Turn an attempt's outcomes (one per recipient, same order) into what is recorded:
    DEFERRED gets its retry time (the agent's ``next_attempt`` if in the future, else the
    backoff) or, past ``max_lifetime``, becomes BOUNCED 5.4.7 quoting the last reply
    (RFC 3463); each final outcome gets the notice it owes."""
    out = Finalized()
    expired = now - message.received_at >= settings.max_lifetime
    for r, o, u in zip(recipients, raw, rand, strict=True):
        if o.status is RecipientStatus.PENDING:  # not an outcome: treat as a deferral
            o = dataclasses.replace(o, status=RecipientStatus.DEFERRED)
        if o.status is RecipientStatus.DEFERRED:
            if expired:
                out.diagnostics[o.index] = str(o.reply)
                o = dataclasses.replace(o, status=RecipientStatus.BOUNCED, reply=_expired(o.reply))
            else:
                when = o.next_attempt
                if when <= now:
                    when = now + backoff(r.attempts, settings, u)
                o = dataclasses.replace(o, next_attempt=when)
        else:
            o = dataclasses.replace(o, next_attempt=0.0)
        notice = final_notice(message, o)
        if notice is not None:
            out.notices[o.index] = notice
        out.outcomes.append(o)
    return out


def with_outcomes(
    message: QueuedMessage,
    fin: Finalized,
    now: float,
    route: str | None,
) -> QueuedMessage:
    """``message`` as the store now has it (mirrors ``QueueDB.apply``; final never reopens)."""
    by_index = {o.index: o for o in fin.outcomes}
    rcpts = []
    for r in message.recipients:
        o = by_index.get(r.index)
        if o is None or r.status not in LIVE:
            rcpts.append(r)
            continue
        reply = str(o.reply)
        deferred = o.status is RecipientStatus.DEFERRED
        rcpts.append(
            dataclasses.replace(
                r,
                status=o.status,
                attempts=r.attempts + 1,
                next_attempt=o.next_attempt,
                last_reply=reply,
                route=route or r.route,
                remote_mta=o.remote_mta or r.remote_mta,
                last_attempt=now,
                dsn_status=o.reply.enhanced or f"{o.reply.code // 100}.0.0",
                diagnostic=fin.diagnostics.get(r.index, reply),
                first_deferred=r.first_deferred or (now if deferred else 0.0),
                notice=fin.notices.get(r.index),
            )
        )
    return dataclasses.replace(message, recipients=tuple(rcpts))


def marked(message: QueuedMessage, indices: Sequence[int], *, delay: bool) -> QueuedMessage:
    """``message`` after ``notices_sent`` (the in-memory twin)."""
    chosen = set(indices)
    rcpts = tuple(
        (
            dataclasses.replace(r, delay_notified=True)
            if delay
            else dataclasses.replace(r, notice=None)
        )
        if r.index in chosen
        else r
        for r in message.recipients
    )
    return dataclasses.replace(message, recipients=rcpts)


def dsn_recipients(
    message: QueuedMessage,
    recipients: Sequence[QueuedRecipient],
    kind: DsnKind,
    settings: SchedulerSettings,
) -> list[DsnRecipient]:
    """The per-recipient blocks (RFC 3464 §2.3) for a notice of ``kind``."""
    out = []
    for r in recipients:
        delayed = kind is DsnKind.DELAY
        action = "delayed" if delayed else (r.notice or "failed")
        status = r.dsn_status or ("4.0.0" if delayed else "5.0.0")
        out.append(
            DsnRecipient(
                address=r.address,
                original=message.envelope.recipients[r.index].orcpt,
                action=action,
                status=status,
                diagnostic=r.diagnostic or r.last_reply,
                remote_mta=r.remote_mta,
                last_attempt=r.last_attempt or None,
                will_retry_until=(message.received_at + settings.max_lifetime) if delayed else None,
            )
        )
    return out


def log_line(message: QueuedMessage, r: QueuedRecipient, o: Outcome, relay: str, now: float) -> str:
    """``QID: to=<rcpt>, relay=..., delay=1.2, tries=2, dsn=4.4.1, status=deferred (...)``"""
    dsn = o.reply.enhanced or f"{o.reply.code // 100}.0.0"
    return (
        f"{message.queue_id}: to=<{r.address}>, relay={relay},"
        f" delay={max(0.0, now - message.received_at):.2f}, tries={r.attempts + 1},"
        f" dsn={dsn}, status={o.status.value} ({o.reply})"
    )


KIND_LOG: Mapping[DsnKind, str] = {
    DsnKind.FAILURE: "sender non-delivery notification",
    DsnKind.DELAY: "sender delay notification",
    DsnKind.SUCCESS: "sender delivery status notification",
}
