"""Brute-force protection: failed AUTH attempts counted per client network and per user.

Owns ``FailureLimiter``. Failures are kept in a sliding window (``window`` seconds); the
``max_per_ip``-th failure from one client, or the ``max_per_user``-th against one user
name, locks that client (or name) out for ``lockout`` seconds, during which AUTH answers
``454 4.7.0`` without looking at the credentials. A success resets its client's count (not
the user's: an attacker spraying one name from many addresses keeps being counted).

IPv6 clients are counted per /64 (one host usually owns a whole /64); an IPv4 address
mapped into IPv6 counts as the IPv4 address. In memory, per process; the clock is
injected for tests. Memory is bounded: old entries are swept as the tables grow.
Security: HIGH — an unlimited password guesser is the attack this exists for. Note the
trade-off of the per-user lock: anyone can lock a user out for ``lockout`` seconds.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["FailureLimiter", "LimiterSettings", "client_key"]

log = logging.getLogger("kittiwake.auth")

_SWEEP_AT = 10_000  # tracked keys before old ones are swept


@dataclass(frozen=True, slots=True)
class LimiterSettings:
    max_per_ip: int = 10
    max_per_user: int = 20
    window: float = 600.0
    lockout: float = 900.0


def client_key(ip: str) -> str:
    """The unit we count failures for: the IPv4 address, or the IPv6 /64."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


class _Counter:
    """Failure times per key within the window, and lock expiry times."""

    def __init__(self, limit: int, settings: LimiterSettings) -> None:
        self.limit = limit
        self.settings = settings
        self.failures: dict[str, deque[float]] = {}
        self.locked: dict[str, float] = {}  # key → until

    def locked_for(self, key: str, now: float) -> float:
        until = self.locked.get(key)
        if until is None:
            return 0.0
        if until <= now:
            del self.locked[key]
            return 0.0
        return until - now

    def fail(self, key: str, now: float) -> bool:
        """Record a failure; True when it starts a lockout."""
        times = self.failures.setdefault(key, deque())
        times.append(now)
        horizon = now - self.settings.window
        while times and times[0] <= horizon:
            times.popleft()
        if len(times) >= self.limit:
            self.locked[key] = now + self.settings.lockout
            del self.failures[key]
            return True
        if len(self.failures) > _SWEEP_AT:
            self.sweep(now)
        return False

    def sweep(self, now: float) -> None:
        horizon = now - self.settings.window
        for key in [k for k, t in self.failures.items() if not t or t[-1] <= horizon]:
            del self.failures[key]
        for key in [k for k, until in self.locked.items() if until <= now]:
            del self.locked[key]


class FailureLimiter:
    def __init__(
        self,
        settings: LimiterSettings = LimiterSettings(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._ips = _Counter(settings.max_per_ip, settings)
        self._users = _Counter(settings.max_per_user, settings)

    def ip_locked(self, ip: str) -> float:
        """Seconds of lockout left for this client (0: not locked)."""
        return self._ips.locked_for(client_key(ip), self._clock())

    def user_locked(self, name: str) -> float:
        """Seconds of lockout left for this user name (0: not locked)."""
        return self._users.locked_for(name, self._clock())

    def failure(self, ip: str, name: str | None, reason: str = "") -> None:
        """Count one failed attempt (one log line; one more when a lockout starts)."""
        now = self._clock()
        key = client_key(ip)
        log.info("authentication failed from %s user=%s: %s", ip, name or "-", reason or "-")
        if self._ips.fail(key, now):
            log.warning(
                "authentication lockout: client %s after %d failures, for %gs",
                key,
                self.settings.max_per_ip,
                self.settings.lockout,
            )
        if name is not None and self._users.fail(name, now):
            log.warning(
                "authentication lockout: user %s after %d failures, for %gs",
                name,
                self.settings.max_per_user,
                self.settings.lockout,
            )

    def success(self, ip: str) -> None:
        self._ips.failures.pop(client_key(ip), None)
