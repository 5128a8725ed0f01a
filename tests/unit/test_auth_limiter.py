"""The brute-force limiter with a fake clock: per client, per user, window, lockout expiry."""

from __future__ import annotations

import logging

import pytest

from kittiwake.auth.limiter import FailureLimiter, LimiterSettings, client_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(clock: Clock, **kw: float) -> FailureLimiter:
    settings = LimiterSettings(
        **{"max_per_ip": 3, "max_per_user": 5, "window": 60, "lockout": 120, **kw}  # type: ignore[arg-type]
    )
    return FailureLimiter(settings, clock)


def test_ip_locked_at_the_limit_then_expires() -> None:
    clock = Clock()
    lim = limiter(clock)
    for _ in range(2):
        lim.failure("192.0.2.1", "alice")
    assert not lim.ip_locked("192.0.2.1")
    lim.failure("192.0.2.1", "alice")
    assert lim.ip_locked("192.0.2.1") == 120
    assert not lim.ip_locked("192.0.2.2")  # others are not affected
    clock.now += 119
    assert lim.ip_locked("192.0.2.1") == pytest.approx(1)
    clock.now += 1
    assert not lim.ip_locked("192.0.2.1")
    lim.failure("192.0.2.1", None)  # the count started over
    assert not lim.ip_locked("192.0.2.1")


def test_sliding_window() -> None:
    clock = Clock()
    lim = limiter(clock)
    lim.failure("192.0.2.1", None)
    clock.now += 40
    lim.failure("192.0.2.1", None)
    clock.now += 30  # the first failure is out of the 60 s window
    lim.failure("192.0.2.1", None)
    assert not lim.ip_locked("192.0.2.1")
    lim.failure("192.0.2.1", None)
    assert lim.ip_locked("192.0.2.1")


def test_success_resets_the_client_but_not_the_user() -> None:
    clock = Clock()
    lim = limiter(clock)
    for _ in range(2):
        lim.failure("192.0.2.1", "alice")
    lim.success("192.0.2.1")
    for _ in range(2):
        lim.failure("192.0.2.1", "alice")
    assert not lim.ip_locked("192.0.2.1")
    lim.failure("192.0.2.9", "alice")  # the fifth against alice, from anywhere
    assert lim.user_locked("alice") == 120
    assert not lim.user_locked("bob")


def test_user_locked_from_many_addresses() -> None:
    clock = Clock()
    lim = limiter(clock)
    for i in range(5):
        lim.failure(f"198.51.100.{i}", "bob")
    assert lim.user_locked("bob")
    clock.now += 121
    assert not lim.user_locked("bob")


def test_ipv6_counted_per_64_and_mapped_ipv4_as_ipv4() -> None:
    assert (
        client_key("2001:db8:1:2::1") == client_key("2001:db8:1:2:ffff::9") == ("2001:db8:1:2::/64")
    )
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert client_key("not an ip") == "not an ip"
    lim = limiter(Clock())
    lim.failure("2001:db8::1", None)
    lim.failure("2001:db8::2", None)
    lim.failure("2001:db8::3", None)
    assert lim.ip_locked("2001:db8::4")
    assert not lim.ip_locked("2001:db8:0:1::1")


def test_one_log_line_per_failure_and_per_lockout(caplog: pytest.LogCaptureFixture) -> None:
    lim = limiter(Clock())
    with caplog.at_level(logging.INFO, logger="kittiwake.auth"):
        for _ in range(3):
            lim.failure("192.0.2.1", "alice", "PLAIN: wrong password")
    messages = [r.getMessage() for r in caplog.records]
    assert (
        messages[:3]
        == ["authentication failed from 192.0.2.1 user=alice: PLAIN: wrong password"] * 3
    )
    assert messages[3:] == ["authentication lockout: client 192.0.2.1 after 3 failures, for 120s"]


def test_memory_is_swept() -> None:
    clock = Clock()
    lim = limiter(clock, max_per_ip=1000)
    for i in range(10_050):
        lim.failure(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", None)
        if i == 5000:
            clock.now += 61  # the first half is out of the window now
    assert len(lim._ips.failures) < 6000
