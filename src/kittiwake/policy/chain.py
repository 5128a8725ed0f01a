"""Runs the configured checks for each stage, in order, with a time limit each.

Owns ``PolicyChain``. SMTP stages (``connect``, ``helo``, ``mail``, ``rcpt``, ``data``)
stop at the first deciding verdict (ACCEPT, REJECT, TEMPFAIL, DISCONNECT); QUARANTINE and
ADD_HEADER are recorded in the transaction's ``Results`` and the chain goes on, so the
stage methods only ever return CONTINUE or a deciding verdict. A check that raises or
exceeds its timeout gives ``451 4.3.0`` (design practice 7: fail safe, never a silent
pass). Post-queue notifications (``queued``, ``delivered``, ``deferred``, ``bounced``)
are fire-and-forget tasks whose failures are only logged. Security sensitive: the order
and the fail-safe rule decide what gets in.

Each check is cut off at exactly its own timeout, but a stage does not pay for one
``asyncio.timeout`` per check: a ``policy.deadline.Deadline`` keeps one loop timer for the
stage and re-arms it only when a later check's deadline is earlier than the armed one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from kittiwake.envelope import Recipient, SessionInfo
from kittiwake.policy.deadline import Deadline
from kittiwake.policy.message import MessageContext
from kittiwake.policy.results import Results, reset_current, set_current
from kittiwake.policy.verdict import CONTINUE, NON_DECIDING, Action, Verdict, tempfail

log = logging.getLogger("kittiwake.policy")

CHECK_FAILED = tempfail(451, "4.3.0", "Temporary policy failure, try again later")
SMTP_STAGES = ("connect", "helo", "mail", "rcpt")
MESSAGE_STAGES = ("data",)
NOTIFY_STAGES = ("queued", "delivered", "deferred", "bounced")
STAGES = SMTP_STAGES + MESSAGE_STAGES + NOTIFY_STAGES


class StageCheck(Protocol):
    """A policy check. Implement any subset of the stage methods; absent ones mean CONTINUE.

    Stages: ``connect(session)``, ``helo(session)``, ``mail(session, sender)``,
    ``rcpt(session, sender, recipient)``, ``data(ctx)`` → ``Verdict``; notifications
    ``queued(message)``, ``delivered/deferred/bounced(message, outcome)`` → None. Optional
    attributes: ``timeout`` (seconds, else the chain's) and ``stages`` (a subset to run).
    """

    @property
    def name(self) -> str: ...


@dataclass(frozen=True, slots=True)
class _Entry:
    name: str
    target: object
    timeout: float


class PolicyChain:
    """The ordered checks; ``describe()`` prints the order an operator will see."""

    def __init__(self, checks: Sequence[StageCheck], timeout: float = 30.0) -> None:
        self.checks = tuple(checks)
        self.timeout = timeout
        self._by_stage: dict[str, tuple[_Entry, ...]] = {
            stage: tuple(_entries(self.checks, stage, timeout)) for stage in STAGES
        }
        self._tasks: set[asyncio.Task[None]] = set()

    def describe(self) -> list[str]:
        """``stage: check, check`` lines: the SMTP stages always, the others when used."""
        return [
            f"{stage}: {', '.join(e.name for e in entries) or '-'}"
            for stage, entries in self._by_stage.items()
            if entries or stage in SMTP_STAGES
        ]

    def order(self, stage: str) -> tuple[str, ...]:
        return tuple(e.name for e in self._by_stage[stage])

    def has(self, stage: str) -> bool:
        return bool(self._by_stage[stage])

    async def _run(self, stage: str, results: Results | None, *args: object) -> Verdict:
        entries = self._by_stage[stage]
        if not entries:
            return CONTINUE
        token = set_current(results)
        clock = Deadline()
        try:
            for entry in entries:
                verdict = await self._call(clock, entry, stage, args)
                if verdict is None:
                    return CHECK_FAILED
                if not _record(entry, stage, verdict, results):
                    return CHECK_FAILED
                if verdict.action not in NON_DECIDING:
                    log.debug("policy %s at %s: %s", entry.name, stage, verdict.action.value)
                    return verdict
            return CONTINUE
        finally:
            clock.close()
            reset_current(token)

    async def _call(
        self, clock: Deadline, entry: _Entry, stage: str, args: tuple[object, ...]
    ) -> Verdict | None:
        clock.start(entry.timeout)
        try:
            verdict = await getattr(entry.target, stage)(*args)
        except asyncio.CancelledError:
            if not clock.stop() or clock.cancelled_elsewhere():
                raise  # not (only) our deadline: the session is going away
            _timed_out(entry, stage)
            return None
        except Exception:  # a broken check must fail safe, not open
            clock.stop()
            log.exception("policy check %s failed at %s; tempfail", entry.name, stage)
            return None
        if clock.stop():  # it swallowed our cancellation: too late all the same
            _timed_out(entry, stage)
            return None
        if not isinstance(verdict, Verdict):
            log.error("policy check %s returned %r at %s; tempfail", entry.name, verdict, stage)
            return None
        return verdict

    async def connect(self, session: SessionInfo, *, results: Results | None = None) -> Verdict:
        return await self._run("connect", results, session)

    async def helo(self, session: SessionInfo, *, results: Results | None = None) -> Verdict:
        return await self._run("helo", results, session)

    async def mail(
        self, session: SessionInfo, sender: str, *, results: Results | None = None
    ) -> Verdict:
        return await self._run("mail", results, session, sender)

    async def rcpt(
        self,
        session: SessionInfo,
        sender: str,
        recipient: Recipient,
        *,
        results: Results | None = None,
    ) -> Verdict:
        return await self._run("rcpt", results, session, sender, recipient)

    async def data(self, ctx: MessageContext) -> Verdict:
        """End of DATA: the verdict for the final reply; ``ctx.results`` then holds the
        headers to add and the quarantine decision (see the README, "Writing a plugin")."""
        verdict = await self._run("data", ctx.results, ctx)
        log.info(
            "%s: policy results: %s -> %s",
            ctx.queue_id or "-",
            ctx.results.summary(),
            verdict.action.value,
        )
        return verdict

    # ------------------------------------------------------- post-queue notifications

    def queued(self, message: object) -> None:
        self._notify("queued", message)

    def delivered(self, message: object, outcome: object) -> None:
        self._notify("delivered", message, outcome)

    def deferred(self, message: object, outcome: object) -> None:
        self._notify("deferred", message, outcome)

    def bounced(self, message: object, outcome: object) -> None:
        self._notify("bounced", message, outcome)

    def _notify(self, stage: str, *args: object) -> None:
        """Fire and forget: needs a running loop; errors and timeouts are logged only."""
        for entry in self._by_stage[stage]:
            task = asyncio.get_running_loop().create_task(self._notify_one(entry, stage, args))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _notify_one(self, entry: _Entry, stage: str, args: tuple[object, ...]) -> None:
        try:
            async with asyncio.timeout(entry.timeout):
                await getattr(entry.target, stage)(*args)
        except Exception:
            log.exception("policy notification %s.%s failed", entry.name, stage)

    async def drain(self) -> None:
        """Wait for pending notifications (shutdown, tests)."""
        while self._tasks:
            await asyncio.gather(*tuple(self._tasks), return_exceptions=True)


def _timed_out(entry: _Entry, stage: str) -> None:
    log.error(
        "policy check %s timed out at %s after %gs; tempfail", entry.name, stage, entry.timeout
    )


def _entries(checks: Sequence[StageCheck], stage: str, default: float) -> list[_Entry]:
    found: list[_Entry] = []
    for check in checks:
        target = getattr(check, "plugin", check)  # a plugins.ConfiguredCheck wraps one
        stages: frozenset[str] | None = getattr(check, "stages", None)
        if not hasattr(target, stage) or (stages is not None and stage not in stages):
            continue
        timeout: float | None = getattr(check, "timeout", None)
        found.append(_Entry(check.name, target, default if timeout is None else timeout))
    return found


def _record(entry: _Entry, stage: str, verdict: Verdict, results: Results | None) -> bool:
    """Put a verdict's results, headers and quarantine into ``results``; False when the
    verdict is malformed (a bad header field), which counts as a failed check."""
    if results is None:
        if verdict.headers or verdict.action is Action.QUARANTINE:
            log.warning(
                "policy check %s at %s: %s dropped (no transaction)",
                entry.name,
                stage,
                verdict.action.value,
            )
        return True
    for result in verdict.results:
        results.add(entry.name, result)
    try:
        for name, value in verdict.headers:
            results.add_header(name, value)
    except ValueError as exc:
        log.error("policy check %s at %s: %s; tempfail", entry.name, stage, exc)
        return False
    if verdict.action is Action.QUARANTINE and results.quarantine is None:
        results.quarantine = f"{entry.name}: {verdict.reason}" if verdict.reason else entry.name
    return True
