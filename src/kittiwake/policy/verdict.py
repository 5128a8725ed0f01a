"""The verdict vocabulary every policy check answers in (Haraka's CONT/OK/DENY, typed).

Deciding actions stop the chain: ACCEPT, REJECT, TEMPFAIL, DISCONNECT. The others let the
next check run: CONTINUE, QUARANTINE (deliver into the mailbox's Junk folder; a later
REJECT still wins) and ADD_HEADER (fields to add to the message). Any verdict may carry
``results`` (RFC 8601 check results, logged and readable by later checks) and
``headers``; the chain collects both into ``policy.results.Results``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from kittiwake.envelope import Reply
from kittiwake.policy.results import CheckResult, valid_header


class Action(enum.Enum):
    CONTINUE = "continue"  # no opinion: ask the next check
    ACCEPT = "accept"  # decided yes; later checks are skipped
    REJECT = "reject"  # permanent refusal (5xx)
    TEMPFAIL = "tempfail"  # temporary refusal (4xx)
    DISCONNECT = "disconnect"  # refuse and close the session
    QUARANTINE = "quarantine"  # accept into the Junk folder; later checks still run
    ADD_HEADER = "add_header"  # add ``headers`` to the message; later checks still run


NON_DECIDING = frozenset({Action.CONTINUE, Action.QUARANTINE, Action.ADD_HEADER})


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    reply: Reply | None = None
    reason: str = ""  # for the log, never shown to the client
    headers: tuple[tuple[str, str], ...] = ()  # (name, value) fields to add (any action)
    results: tuple[CheckResult, ...] = ()  # what the check found (any action)

    @property
    def decided(self) -> bool:
        return self.action not in NON_DECIDING


CONTINUE = Verdict(Action.CONTINUE)
ACCEPT = Verdict(Action.ACCEPT)


def reject(code: int, enhanced: str, text: str, reason: str = "") -> Verdict:
    return Verdict(Action.REJECT, Reply(code, enhanced, text), reason)


def tempfail(code: int, enhanced: str, text: str, reason: str = "") -> Verdict:
    return Verdict(Action.TEMPFAIL, Reply(code, enhanced, text), reason)


def disconnect(code: int, enhanced: str, text: str, reason: str = "") -> Verdict:
    return Verdict(Action.DISCONNECT, Reply(code, enhanced, text), reason)


def quarantine(reason: str, *results: CheckResult) -> Verdict:
    """Deliver into the Junk folder (``reason`` is logged and kept with the message)."""
    return Verdict(Action.QUARANTINE, reason=reason, results=results)


def add_header(name: str, value: str, *results: CheckResult) -> Verdict:
    """Add ``name: value`` to the message (RFC 5322 field; ``ValueError`` if malformed)."""
    if not valid_header(name, value):
        raise ValueError(f"invalid header field {name!r}: {value!r}")
    return Verdict(Action.ADD_HEADER, headers=((name, value),), results=results)


def found(*results: CheckResult) -> Verdict:
    """CONTINUE, recording ``results`` for later checks and the log."""
    return Verdict(Action.CONTINUE, results=results)
