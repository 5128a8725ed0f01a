"""The chain's per-check timeouts on one stage timer (``policy.deadline.Deadline``): every
check cut off at exactly its own timeout, never a silent pass, outside cancellation kept."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from kittiwake.envelope import SessionInfo
from kittiwake.policy import PolicyChain, Verdict
from kittiwake.policy.chain import CHECK_FAILED
from kittiwake.policy.deadline import Deadline
from kittiwake.policy.plugins import ConfiguredCheck
from kittiwake.policy.verdict import ACCEPT, CONTINUE

SESSION = SessionInfo("192.0.2.9", 40000, "127.0.0.1", 25, helo="client.test")


class Sleeps:
    """``helo`` sleeps ``seconds`` and answers ``verdict``; records when it ended."""

    def __init__(self, name: str, seconds: float, verdict: Verdict = CONTINUE) -> None:
        self.name = name
        self.seconds = seconds
        self.verdict = verdict
        self.finished = False

    async def helo(self, session: SessionInfo) -> Verdict:
        await asyncio.sleep(self.seconds)
        self.finished = True
        return self.verdict


class Stubborn:
    """Swallows the cancellation and answers ACCEPT anyway."""

    name = "stubborn"

    async def helo(self, session: SessionInfo) -> Verdict:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)
        return ACCEPT


def timers() -> int:
    """Live (not cancelled) timers on the running loop."""
    loop = asyncio.get_running_loop()
    scheduled = getattr(loop, "_scheduled", [])
    return sum(1 for h in scheduled if not h.cancelled())


async def test_each_check_gets_its_own_full_timeout() -> None:
    # The first check's deadline passes while the second runs: the second, with a
    # longer timeout of its own, must not be cut off at the first one's.
    first = Sleeps("first", 0.01)
    second = Sleeps("second", 0.25, ACCEPT)
    chain = PolicyChain(
        [
            ConfiguredCheck("first", first, timeout=0.1),
            ConfiguredCheck("second", second, timeout=2.0),
        ]
    )
    assert await chain.helo(SESSION) is ACCEPT
    assert first.finished and second.finished


async def test_a_shorter_timeout_after_a_longer_one_is_exact(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR)
    chain = PolicyChain(
        [
            ConfiguredCheck("quick", Sleeps("quick", 0.0), timeout=30),
            ConfiguredCheck("hangs", Sleeps("hangs", 3600, ACCEPT), timeout=0.05),
        ]
    )
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await chain.helo(SESSION) is CHECK_FAILED
    assert loop.time() - start < 1.0
    assert "policy check hangs timed out at helo after 0.05s" in caplog.text


async def test_a_check_that_swallows_the_cancellation_is_still_a_tempfail(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR)
    chain = PolicyChain([ConfiguredCheck("stubborn", Stubborn(), timeout=0.05)])
    assert await chain.helo(SESSION) is CHECK_FAILED
    assert "policy check stubborn timed out at helo" in caplog.text
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # our cancellation withdrawn


async def test_outside_cancellation_propagates_not_a_tempfail() -> None:
    chain = PolicyChain([ConfiguredCheck("slow", Sleeps("slow", 3600), timeout=30)])
    task = asyncio.create_task(chain.helo(SESSION))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_outside_cancellation_at_the_deadline_still_propagates() -> None:
    class CancelledTwice:
        name = "twice"

        async def helo(self, session: SessionInfo) -> Verdict:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:  # our deadline; the session closes meanwhile
                task = asyncio.current_task()
                assert task is not None
                task.cancel()
                raise
            return ACCEPT

    chain = PolicyChain([ConfiguredCheck("twice", CancelledTwice(), timeout=0.05)])
    task = asyncio.create_task(chain.helo(SESSION))
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_no_timer_is_left_behind_and_one_serves_a_stage() -> None:
    before = timers()
    armed: list[int] = []

    class Counts:
        def __init__(self, name: str) -> None:
            self.name = name

        async def helo(self, session: SessionInfo) -> Verdict:
            armed.append(timers() - before)
            await asyncio.sleep(0)
            return CONTINUE

    chain = PolicyChain([Counts(f"c{i}") for i in range(5)], timeout=30)
    assert await chain.helo(SESSION) is CONTINUE
    assert armed == [1, 1, 1, 1, 1]  # one timer for five checks of the same timeout
    assert timers() == before


async def test_deadline_outside_a_task_is_refused() -> None:
    def make() -> Deadline:
        return Deadline()

    loop = asyncio.get_running_loop()
    fut: asyncio.Future[object] = loop.create_future()

    def in_callback() -> None:
        try:
            fut.set_result(make())
        except RuntimeError as exc:
            fut.set_result(exc)

    loop.call_soon(in_callback)
    assert isinstance(await fut, RuntimeError)
