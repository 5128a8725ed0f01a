"""Rate limits: connections per client address per minute, messages per user per hour.

Owns ``RateLimiter`` (a keyed token bucket), ``ConnectionRate`` (asked by the smtpd
listener for every connection, after PROXY resolution, before the greeting) and
``MessageRate`` (a policy check at the MAIL stage for authenticated sessions). The third
limit of issue 4, recipients per message, is ``limits.max_recipients`` in the protocol core
(``452 4.5.3``); it is not repeated here.

The bucket is GCRA (the "generic cell rate algorithm", a token bucket kept as one
timestamp per key): ``limit`` events may come at once, then one more every
``period / limit`` seconds — so "60 per minute" allows a burst of 60 and then one a second,
and the ``limit + 1``-th event inside a burst is refused. Only allowed events are counted.
State is in memory, per process, and bounded: a key whose bucket has refilled is the same
as no key and is swept out once per ``period``; past ``max_keys`` keys the least recently
used are dropped (their owners start afresh — the limit fails open for them, never closed
for everybody).

Exemptions follow Postfix's ``smtpd_client_event_limit_exceptions = $mynetworks``: clients
in ``exempt`` (``ratelimit.exempt``; by default ``relay.mynetworks`` and loopback) are never
limited. Messages are counted at MAIL time, like Postfix's anvil counts message delivery
requests: every MAIL the check lets through counts, whether or not a message follows
(so it goes last among the MAIL checks, see ``MessageRate``).

Security: MEDIUM (abuse and resource control). Replies are 4xx: the client may retry later.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Container

from kittiwake.envelope import Reply, SessionInfo
from kittiwake.policy.networks import NOBODY, client_address
from kittiwake.policy.verdict import CONTINUE, Verdict, tempfail

log = logging.getLogger("kittiwake.policy")

Clock = Callable[[], float]
TOO_MANY_CONNECTIONS = Reply(
    421, "4.7.0", "Too many connections from your address, try again later"
)
MAX_KEYS = 100_000


class RateLimiter:
    """At most ``limit`` events per ``period`` seconds per key (GCRA, see the module doc)."""

    def __init__(
        self,
        limit: int,
        period: float,
        *,
        clock: Clock = time.monotonic,
        max_keys: int = MAX_KEYS,
    ) -> None:
        if limit < 1 or period <= 0 or max_keys < 1:
            raise ValueError("limit and max_keys must be >= 1, period > 0")
        self.limit = limit
        self.period = period
        self.interval = period / limit  # the refill time of one event
        self.clock = clock
        self.max_keys = max_keys
        self._tat: dict[str, float] = {}  # key -> "theoretical arrival time", LRU order
        self._next_sweep = clock() + period

    def __len__(self) -> int:
        return len(self._tat)

    def hit(self, key: str) -> bool:
        """Count one event for ``key`` and return True, or return False when over the limit."""
        now = self.clock()
        if now >= self._next_sweep:
            self.sweep(now)
        tat = max(self._tat.pop(key, now), now)
        if tat - now > self.period - self.interval + 1e-9:  # the bucket is empty
            self._tat[key] = tat  # (re-inserted: most recently used)
            return False
        self._tat[key] = tat + self.interval
        while len(self._tat) > self.max_keys:
            del self._tat[next(iter(self._tat))]  # least recently used
        return True

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` may have one more event (0 when it may now)."""
        tat = self._tat.get(key)
        if tat is None:
            return 0.0
        return max(0.0, tat - self.clock() - (self.period - self.interval))

    def sweep(self, now: float | None = None) -> None:
        """Forget keys whose bucket is full again (indistinguishable from unknown keys)."""
        now = self.clock() if now is None else now
        self._tat = {k: t for k, t in self._tat.items() if t > now}
        self._next_sweep = now + self.period


class ConnectionRate:
    """``ratelimit.connections_per_ip_per_minute`` for the listener; 0 means no limit."""

    def __init__(
        self,
        per_minute: int,
        exempt: Container[str] = NOBODY,
        *,
        clock: Clock = time.monotonic,
        max_keys: int = MAX_KEYS,
    ) -> None:
        self.per_minute = per_minute
        self.exempt = exempt
        self._limiter = (
            RateLimiter(per_minute, 60.0, clock=clock, max_keys=max_keys) if per_minute else None
        )

    def allow(self, client_ip: str) -> bool:
        """Count a new connection from ``client_ip``; False when it must get 421 4.7.0."""
        if self._limiter is None or client_ip in self.exempt:
            return True
        return self._limiter.hit(_ip_key(client_ip))

    def retry_after(self, client_ip: str) -> float:
        """Seconds until ``client_ip`` may connect again (for the log line)."""
        return 0.0 if self._limiter is None else self._limiter.retry_after(_ip_key(client_ip))


def _ip_key(client_ip: str) -> str:
    """One bucket per address: ``::ffff:192.0.2.1`` counts as ``192.0.2.1``."""
    address = client_address(client_ip)
    return str(address) if address is not None else client_ip


class MessageRate:
    """Policy check: ``ratelimit.messages_per_user_per_hour`` for authenticated sessions.

    Put it last among the MAIL-stage checks (after ``RequireAuth``, ``SenderOwnership``):
    then only a MAIL the session accepts is counted, as no check refuses after it. No
    earlier check may answer ACCEPT at MAIL (none does: they continue or refuse), or this
    one would be skipped. Sessions without ``auth_user`` and clients in ``exempt`` are not
    limited.
    """

    name = "ratelimit"

    def __init__(
        self,
        per_hour: int,
        exempt: Container[str] = NOBODY,
        *,
        clock: Clock = time.monotonic,
        max_keys: int = MAX_KEYS,
    ) -> None:
        self.per_hour = per_hour
        self.exempt = exempt
        self._limiter = (
            RateLimiter(per_hour, 3600.0, clock=clock, max_keys=max_keys) if per_hour else None
        )

    async def mail(self, session: SessionInfo, sender: str) -> Verdict:
        user = session.auth_user
        if self._limiter is None or user is None or session.client_ip in self.exempt:
            return CONTINUE
        if self._limiter.hit(user):
            return CONTINUE
        shown = _printable(user)
        log.warning(
            "message rate limit: user %s from [%s] over %d messages per hour (retry in %.0fs)",
            shown,
            session.client_ip,
            self.per_hour,
            self._limiter.retry_after(user),
        )
        return tempfail(
            450,
            "4.7.1",
            f"Message rate limit exceeded for user {shown}",
            reason="ratelimit.messages_per_user_per_hour",
        )


def _printable(text: str, limit: int = 100) -> str:
    """A user name fit for a reply line and a log: printable ASCII, bounded."""
    out = "".join(c if " " < c <= "~" else "?" for c in text[:limit])
    return out + ("..." if len(text) > limit else "")
