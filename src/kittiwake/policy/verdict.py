"""The verdict vocabulary every policy check answers in (Haraka's CONT/OK/DENY, typed)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from kittiwake.envelope import Reply


class Action(enum.Enum):
    CONTINUE = "continue"  # no opinion: ask the next check
    ACCEPT = "accept"  # decided yes; later checks are skipped
    REJECT = "reject"  # permanent refusal (5xx)
    TEMPFAIL = "tempfail"  # temporary refusal (4xx)
    DISCONNECT = "disconnect"  # refuse and close the session


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    reply: Reply | None = None
    reason: str = ""  # for the log, never shown to the client

    @property
    def decided(self) -> bool:
        return self.action is not Action.CONTINUE


CONTINUE = Verdict(Action.CONTINUE)
ACCEPT = Verdict(Action.ACCEPT)


def reject(code: int, enhanced: str, text: str, reason: str = "") -> Verdict:
    return Verdict(Action.REJECT, Reply(code, enhanced, text), reason)


def tempfail(code: int, enhanced: str, text: str, reason: str = "") -> Verdict:
    return Verdict(Action.TEMPFAIL, Reply(code, enhanced, text), reason)
