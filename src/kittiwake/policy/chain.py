"""Runs the configured checks for one SMTP stage, in order, with a time limit each."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

from kittiwake.envelope import Recipient, SessionInfo
from kittiwake.policy.verdict import CONTINUE, Action, Verdict, tempfail

log = logging.getLogger("kittiwake.policy")

CHECK_FAILED = tempfail(451, "4.3.0", "Temporary policy failure, try again later")


class StageCheck(Protocol):
    """A policy check. Implement any subset of the stage methods; absent ones mean CONTINUE.

    Stages: ``connect(session)``, ``helo(session)``, ``mail(session, sender)``,
    ``rcpt(session, sender, recipient)``.
    """

    name: str


class PolicyChain:
    """The ordered checks; ``describe()`` prints the order an operator will see."""

    def __init__(self, checks: Sequence[StageCheck], timeout: float = 30.0) -> None:
        self.checks = tuple(checks)
        self.timeout = timeout
        self._by_stage = {
            stage: tuple(c for c in self.checks if hasattr(c, stage))
            for stage in ("connect", "helo", "mail", "rcpt")
        }

    def describe(self) -> list[str]:
        return [
            f"{stage}: {', '.join(c.name for c in checks) or '-'}"
            for stage, checks in self._by_stage.items()
        ]

    async def _run(self, stage: str, *args: object) -> Verdict:
        for check in self._by_stage[stage]:
            try:
                verdict: Verdict = await asyncio.wait_for(
                    getattr(check, stage)(*args), self.timeout
                )
            except Exception:  # a broken check must fail safe, not open
                log.exception("policy check %s failed at %s; tempfail", check.name, stage)
                return CHECK_FAILED
            if verdict.action is not Action.CONTINUE:
                return verdict
        return CONTINUE

    async def connect(self, session: SessionInfo) -> Verdict:
        return await self._run("connect", session)

    async def helo(self, session: SessionInfo) -> Verdict:
        return await self._run("helo", session)

    async def mail(self, session: SessionInfo, sender: str) -> Verdict:
        return await self._run("mail", session, sender)

    async def rcpt(self, session: SessionInfo, sender: str, recipient: Recipient) -> Verdict:
        return await self._run("rcpt", session, sender, recipient)

    def has(self, stage: str) -> bool:
        return bool(self._by_stage[stage])
