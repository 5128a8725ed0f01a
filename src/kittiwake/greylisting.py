"""Greylisting's rules and state contract, shared by the policy check and the store.

Owns ``Rules`` (delay, retry window, auto-whitelist), ``Decision``, the stored rows
(``TripletRow``, ``ClientRow``), the pure transition ``step`` (rows before → decision and
rows after; no I/O, no clock) and ``GreylistState``, the protocol a store implements so
greylisting state lives in the store (``queue.sqlgreylist`` for SQLite; a cluster store
keeps the same two tables). The check itself is ``kittiwake.policy.greylist``.

Kept outside ``policy`` and ``queue`` because both use it and neither may import the other
(design: the store never imports policy). Not security sensitive: values only.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "ClientRow",
    "Decision",
    "GreylistState",
    "Rules",
    "Step",
    "Triplet",
    "TripletRow",
    "step",
]

DAY = 86400.0


class Decision(enum.Enum):
    NEW = "new"  # first seen (or seen again after the retry window): 451
    EARLY = "early"  # retried before the delay: 451
    RETRIED = "retried"  # retried in time: pass, counted for the network
    KNOWN = "known"  # a triplet that passed before: pass
    WHITELISTED = "whitelisted"  # the network is auto-whitelisted: pass

    @property
    def passes(self) -> bool:
        return self not in (Decision.NEW, Decision.EARLY)


@dataclass(frozen=True, slots=True)
class Rules:
    """Timing of greylisting, in seconds (postgrey's defaults are 300 s and 35 days)."""

    delay: float = 300.0
    retry_window: float = 4 * 3600.0
    auto_whitelist_after: int = 5  # successful retries before a network passes; 0 = never
    whitelist_ttl: float = 35 * DAY  # known triplets/networks forgotten after this silence

    def __post_init__(self) -> None:
        if self.delay < 0 or self.retry_window <= self.delay:
            raise ValueError("need 0 <= delay < retry_window")
        if self.whitelist_ttl <= 0:
            raise ValueError("whitelist_ttl must be > 0")
        if self.auto_whitelist_after < 0:
            raise ValueError("auto_whitelist_after must be >= 0")


@dataclass(frozen=True, slots=True)
class Triplet:
    """(client network, MAIL FROM, RCPT TO), addresses lower-cased, null sender ``""``."""

    network: str
    sender: str
    recipient: str


@dataclass(frozen=True, slots=True)
class TripletRow:
    first_seen: float
    last_seen: float
    passed: bool


@dataclass(frozen=True, slots=True)
class ClientRow:
    retries: int  # successful retries seen from the network
    last_seen: float


@dataclass(frozen=True, slots=True)
class Step:
    """What one attempt decides and what the store writes back (in one transaction).

    ``triplet`` is the row to upsert (None: leave it as it is); ``client`` the network's
    row to upsert, or None with ``forget_client`` to delete it.
    """

    decision: Decision
    triplet: TripletRow | None
    client: ClientRow | None = None
    forget_client: bool = False


def step(now: float, rules: Rules, client: ClientRow | None, row: TripletRow | None) -> Step:
    """One attempt of a triplet, given its stored rows (see ``policy.greylist``)."""
    forget = client is not None and now - client.last_seen > rules.whitelist_ttl
    if forget:
        client = None
    if (
        client is not None
        and rules.auto_whitelist_after > 0
        and client.retries >= rules.auto_whitelist_after
    ):
        return Step(Decision.WHITELISTED, None, ClientRow(client.retries, now))
    if row is None:
        return Step(Decision.NEW, TripletRow(now, now, False), forget_client=forget)
    if row.passed and now - row.last_seen <= rules.whitelist_ttl:
        return Step(Decision.KNOWN, TripletRow(row.first_seen, now, True), forget_client=forget)
    if row.passed or now - row.first_seen > rules.retry_window:  # expired: start over
        return Step(Decision.NEW, TripletRow(now, now, False), forget_client=forget)
    if now - row.first_seen < rules.delay:
        return Step(Decision.EARLY, TripletRow(row.first_seen, now, False), forget_client=forget)
    retries = client.retries + 1 if client is not None else 1
    return Step(Decision.RETRIED, TripletRow(row.first_seen, now, True), ClientRow(retries, now))


class GreylistState(Protocol):
    """Greylisting state in the store. Blocking: the check calls it from a worker thread.
    Errors raise (any exception); the check then lets the mail through and logs it."""

    def attempt(self, triplet: Triplet, now: float, rules: Rules) -> Decision:
        """Read the rows, apply ``step``, write the result back: one transaction, so
        concurrent sessions (or cluster nodes) never lose a retry."""

    def expire(self, now: float, rules: Rules) -> int:
        """Delete triplets and networks past their time; the number of rows removed."""

    def close(self) -> None: ...
