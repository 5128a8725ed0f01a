"""Rate limits with a fake clock: the GCRA bucket, connection rate, message rate policy."""

from __future__ import annotations

import pytest

from kittiwake.envelope import SessionInfo
from kittiwake.policy import Action, PolicyChain
from kittiwake.policy.networks import Networks
from kittiwake.policy.ratelimit import ConnectionRate, MessageRate, RateLimiter


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_a_burst_of_limit_then_refused() -> None:
    clock = Clock()
    limiter = RateLimiter(5, 60.0, clock=clock)
    assert [limiter.hit("a") for _ in range(6)] == [True] * 5 + [False]
    assert limiter.hit("b")  # per key
    assert limiter.retry_after("a") == pytest.approx(12.0)  # one refills every 60/5 s


def test_refused_events_are_not_counted_and_the_bucket_refills() -> None:
    clock = Clock()
    limiter = RateLimiter(3, 60.0, clock=clock)
    for _ in range(3):
        assert limiter.hit("a")
    for _ in range(10):
        assert not limiter.hit("a")  # hammering does not push the refill further out
    clock.advance(19.9)
    assert not limiter.hit("a")
    clock.advance(0.1)
    assert limiter.hit("a")  # one slot back after 60/3 s
    assert not limiter.hit("a")
    clock.advance(60)
    assert [limiter.hit("a") for _ in range(4)] == [True, True, True, False]


def test_steady_rate_at_the_limit_is_always_allowed() -> None:
    clock = Clock()
    limiter = RateLimiter(7, 60.0, clock=clock)
    for _ in range(100):  # float steps of 60/7 must not accumulate into a refusal
        assert limiter.hit("a")
        clock.advance(60 / 7)


def test_idle_keys_are_swept() -> None:
    clock = Clock()
    limiter = RateLimiter(2, 60.0, clock=clock)
    for i in range(50):
        limiter.hit(f"k{i}")
    assert len(limiter) == 50
    clock.advance(61)
    limiter.hit("new")
    assert len(limiter) == 1  # everyone else's bucket was full again: forgotten


def test_key_count_is_bounded_least_recently_used_first() -> None:
    clock = Clock()
    limiter = RateLimiter(1, 60.0, clock=clock, max_keys=3)
    for key in ("a", "b", "c"):
        assert limiter.hit(key)
    assert not limiter.hit("a")  # "a" is now the most recently used
    assert limiter.hit("d")  # evicts "b"
    assert len(limiter) == 3
    assert limiter.hit("b")  # forgotten: starts afresh (fails open for it)
    assert not limiter.hit("d")


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        RateLimiter(0, 60.0)
    with pytest.raises(ValueError):
        RateLimiter(1, 0.0)


# ----------------------------------------------------------------------- connection rate


def test_connection_rate_per_address_with_exemptions() -> None:
    clock = Clock()
    rate = ConnectionRate(2, Networks.parse(["192.0.2.0/24"]), clock=clock)
    assert [rate.allow("198.51.100.1") for _ in range(3)] == [True, True, False]
    assert rate.allow("198.51.100.2")
    assert all(rate.allow("192.0.2.9") for _ in range(50))  # exempt
    assert rate.retry_after("198.51.100.1") == pytest.approx(30.0)
    clock.advance(30)
    assert rate.allow("198.51.100.1")


def test_connection_rate_counts_a_mapped_address_as_its_ipv4() -> None:
    rate = ConnectionRate(1, clock=Clock())
    assert rate.allow("192.0.2.1")
    assert not rate.allow("::ffff:192.0.2.1")


def test_connection_rate_zero_is_off() -> None:
    rate = ConnectionRate(0)
    assert all(rate.allow("198.51.100.1") for _ in range(1000))
    assert rate.retry_after("198.51.100.1") == 0.0


# -------------------------------------------------------------------------- message rate


def _session(user: str | None, ip: str = "198.51.100.1") -> SessionInfo:
    return SessionInfo(ip, 40000, "127.0.0.1", 587, auth_user=user, listener="submission")


async def test_message_rate_per_authenticated_user() -> None:
    clock = Clock()
    check = MessageRate(3, Networks.parse(["10.0.0.0/8"]), clock=clock)
    alice = _session("alice@example.org")
    verdicts = [await check.mail(alice, "alice@example.org") for _ in range(4)]
    assert [v.action for v in verdicts] == [Action.CONTINUE] * 3 + [Action.TEMPFAIL]
    refused = verdicts[-1].reply
    assert refused is not None
    assert (refused.code, refused.enhanced) == (450, "4.7.1")
    assert refused.text == "Message rate limit exceeded for user alice@example.org"
    # another user, the same user from elsewhere counts for the user, unauthenticated: no limit
    assert (await check.mail(_session("bob"), "")).action is Action.CONTINUE
    other_ip = _session("alice@example.org", "203.0.113.9")
    assert (await check.mail(other_ip, "")).action is Action.TEMPFAIL
    for _ in range(10):
        assert (await check.mail(_session(None), "x@y")).action is Action.CONTINUE
        assert (await check.mail(_session("alice@example.org", "10.1.2.3"), "")).decided is False
    clock.advance(1200)  # 3600 / 3: one message back
    assert (await check.mail(alice, "")).action is Action.CONTINUE
    assert (await check.mail(alice, "")).action is Action.TEMPFAIL


async def test_message_rate_reply_cannot_carry_line_breaks() -> None:
    check = MessageRate(1, clock=Clock())
    user = "eve\r\n250 fake"
    await check.mail(_session(user), "")
    verdict = await check.mail(_session(user), "")
    assert verdict.reply is not None
    assert "\r" not in verdict.reply.text and "\n" not in verdict.reply.text
    assert verdict.reply.to_bytes().count(b"\r\n") == 1


async def test_message_rate_in_a_chain_and_off() -> None:
    chain = PolicyChain([MessageRate(1, clock=Clock())])
    assert chain.describe()[2] == "mail: ratelimit"
    assert (await chain.mail(_session("u"), "")).action is Action.CONTINUE
    assert (await chain.mail(_session("u"), "")).action is Action.TEMPFAIL
    off = MessageRate(0)
    for _ in range(100):
        assert (await off.mail(_session("u"), "")).action is Action.CONTINUE
