"""Idle SMTP/LMTP connections kept for the next message to the same destination.

Owns ``SessionPool``: after a completed transaction a session waits here (at most
``idle_time`` seconds, at most ``max_per_key`` per key) for the next ``deliver()`` with the
same key — Postfix's connection cache (scache), which is what lets a queue of thousands of
messages to one domain go out over a handful of connections. The key is chosen by the
agent (next hop, TLS policy, credentials), so no DNS lookup is needed to reuse one.

A session also leaves the pool once it has been open ``max_age`` seconds (Postfix's
``smtp_connection_reuse_time_limit``) or, when ``max_uses`` is set, has carried that many
transactions (``smtp_connection_reuse_count_limit``; 0: no limit). Expired sessions are
closed with QUIT in the background; ``close()`` QUITs everything and waits for it.

Not security sensitive: a session is only reused under the key it was opened for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

from kittiwake.delivery.smtp_session import ClientSession


class SessionPool:
    def __init__(
        self, *, idle_time: float, max_per_key: int, max_age: float, max_uses: int = 0
    ) -> None:
        self.idle_time = idle_time
        self.max_per_key = max_per_key
        self.max_age = max_age
        self.max_uses = max_uses
        # key → [(session, idle since)], most recent last. One sweeper timer for the whole
        # pool rather than a timer per idle period: a busy pool parks and takes thousands
        # of sessions a second, and cancelled timers clog the event loop's heap.
        self._idle: dict[Hashable, list[tuple[ClientSession, float]]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    def __len__(self) -> int:
        return sum(len(v) for v in self._idle.values())

    def take(self, key: Hashable) -> ClientSession | None:
        """The most recently used idle session for ``key`` that still looks alive."""
        idle = self._idle.get(key)
        while idle:
            sess, _ = idle.pop()
            if sess.reusable:
                if not idle:
                    del self._idle[key]
                return sess
            sess.abort()
        self._idle.pop(key, None)
        return None

    def put(self, key: Hashable, sess: ClientSession) -> None:
        """Keep ``sess`` for reuse, or QUIT it if it cannot or should not be kept."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        idle = self._idle.setdefault(key, [])
        if (
            self._closed
            or self.idle_time <= 0
            or not sess.reusable
            or len(idle) >= self.max_per_key
            or now - sess.created >= self.max_age
            or 0 < self.max_uses <= sess.transactions
        ):
            if not idle:
                del self._idle[key]
            self._quit(sess)
            return
        idle.append((sess, now))
        if self._sweeper is None:
            self._sweeper = loop.call_later(self._interval, self._sweep)

    @property
    def _interval(self) -> float:
        return max(0.05, self.idle_time / 4)

    def _sweep(self) -> None:
        """QUIT the sessions idle for ``idle_time`` (give or take a quarter of it)."""
        self._sweeper = None
        loop = asyncio.get_running_loop()
        limit = loop.time() - self.idle_time
        for key in list(self._idle):
            idle = self._idle[key]
            fresh = [(s, t) for s, t in idle if t > limit]
            for sess, since in idle:
                if since <= limit:
                    self._quit(sess)
            if fresh:
                self._idle[key] = fresh
            else:
                del self._idle[key]
        if self._idle:
            self._sweeper = loop.call_later(self._interval, self._sweep)

    def _quit(self, sess: ClientSession) -> None:
        task = asyncio.get_running_loop().create_task(sess.quit())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """QUIT every idle session and wait for the goodbyes (each bounded by its timeout)."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        idle, self._idle = self._idle, {}
        for sessions in idle.values():
            for sess, _ in sessions:
                self._quit(sess)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
