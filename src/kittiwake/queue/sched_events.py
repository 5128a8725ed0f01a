"""Telling the injected ``DeliveryEvents`` what happened to a message (post-queue hooks).

Owns ``announce_queued`` and ``announce_outcomes``. The events object is someone else's
code (the policy chain's queued/delivered/deferred/bounced stages): anything it raises is
logged and ignored, so a plugin can never stop the queue. Not security sensitive.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from kittiwake.delivery.api import Outcome, QueuedMessage, RecipientStatus
from kittiwake.queue.api import DeliveryEvents

__all__ = ["announce_outcomes", "announce_queued"]

qlog = logging.getLogger("kittiwake.queue")


def announce_queued(events: DeliveryEvents | None, message: QueuedMessage) -> None:
    if events is None:
        return
    try:
        events.queued(message)
    except Exception:
        qlog.exception("%s: queued event handler failed", message.queue_id)


def announce_outcomes(
    events: DeliveryEvents | None, message: QueuedMessage, outcomes: Sequence[Outcome]
) -> None:
    """One call per recipient outcome, by its status (after it has been recorded)."""
    if events is None:
        return
    for outcome in outcomes:
        try:
            if outcome.status is RecipientStatus.DELIVERED:
                events.delivered(message, outcome)
            elif outcome.status is RecipientStatus.BOUNCED:
                events.bounced(message, outcome)
            elif outcome.status is RecipientStatus.DEFERRED:
                events.deferred(message, outcome)
        except Exception:
            qlog.exception("%s: %s event handler failed", message.queue_id, outcome.status.value)
