"""One loop timer for a run of awaits that each have their own time limit.

Owns ``Deadline``, which ``policy.chain`` uses to cut every check off at exactly its own
timeout without one ``asyncio.timeout`` (a context object, a loop timer scheduled and
cancelled) per check call. One ``Deadline`` serves one stage of the chain, in one task:

* ``start(seconds)`` before a check: its deadline is now + ``seconds``. The timer already
  armed is kept when it fires no later than that (it will re-arm itself when it fires
  early); only an earlier deadline schedules a new one. Checks are short next to their
  timeouts, so a stage usually schedules one timer and cancels it at the end.
* When the timer fires at or after the current check's deadline, the task is cancelled,
  as ``asyncio.timeout`` does (``Task.cancel``, later withdrawn with ``uncancel``).
* ``stop()`` after the check: True when its deadline passed (the caller turns that into a
  tempfail — also when the check swallowed the cancellation and returned a verdict);
  ``cancelled_elsewhere()`` tells an outside cancellation (the session closing) from ours.
* ``close()`` at the end of the stage cancels the timer.

Security: moderate. A hanging or slow check must be cut off at its timeout and never
count as a pass (design practice 7); the chain's tests hold this class to it.
"""

from __future__ import annotations

import asyncio

__all__ = ["Deadline"]


class Deadline:
    """The time limits of one task's checks, one after another (module docstring)."""

    __slots__ = ("_cancelling", "_deadline", "_expired", "_handle", "_loop", "_task")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Deadline needs to run inside a task")
        self._task = task
        self._deadline: float | None = None  # of the running check; None: none running
        self._handle: asyncio.TimerHandle | None = None
        self._expired = False
        self._cancelling = 0

    def start(self, seconds: float) -> None:
        """A check starts: cut it off ``seconds`` from now."""
        when = self._loop.time() + seconds
        self._deadline = when
        self._expired = False
        self._cancelling = self._task.cancelling()
        handle = self._handle
        if handle is None or handle.when() > when:
            if handle is not None:
                handle.cancel()
            self._handle = self._loop.call_at(when, self._fire, when)

    def _fire(self, armed: float) -> None:
        self._handle = None
        deadline = self._deadline
        if deadline is None:  # no check running (cannot happen while armed; harmless)
            return
        if armed < deadline:  # armed for an earlier check: wait for this one's deadline
            self._handle = self._loop.call_at(deadline, self._fire, deadline)
            return
        self._expired = True
        self._task.cancel()

    def stop(self) -> bool:
        """The check is over: True when its deadline passed (our cancellation withdrawn)."""
        self._deadline = None
        if not self._expired:
            return False
        self._expired = False
        self._task.uncancel()
        return True

    def cancelled_elsewhere(self) -> bool:
        """Is the task being cancelled by someone else too (e.g. the session closing)?"""
        return self._task.cancelling() > self._cancelling

    def close(self) -> None:
        """The stage is over: no timer left behind."""
        self._deadline = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
