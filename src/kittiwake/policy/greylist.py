"""Greylisting: "451, try again later" for a (client network, sender, recipient) never seen.

Owns ``Greylist`` (a RCPT-stage policy check with its SQLite state), ``Decision`` and
``network_of``. The idea (Harris, 2003; postgrey, Postfix's postscreen): real MTAs retry a
temporary failure (RFC 5321 §4.5.4.1), much bulk spamware does not.

The triplet is (client /24 for IPv4 or /64 for IPv6 — big senders retry from another
host of the same pool —, the MAIL FROM address lower-cased with the null sender as "", the
recipient address lower-cased). For a triplet:

* first seen → ``451 4.7.1 Greylisted, please try again later``;
* retried before ``delay`` seconds → 451 again (the first-seen time is kept);
* retried after ``delay`` and within ``retry_window`` of the first attempt → pass; the
  triplet is then known and passes without delay while it keeps being used (it is
  forgotten after ``whitelist_ttl`` of silence);
* retried after the window → treated as new (start over).

Every successful retry counts for the client network; after ``auto_whitelist_after`` of
them the network is not greylisted any more (postgrey's ``--auto-whitelist-clients``),
until it has been silent for ``whitelist_ttl``. Authenticated sessions and sessions for
which ``exempt(session)`` is true (mynetworks, a DNSWL listing — see
``kittiwake.policy.dnsbl.dnswl_listed``) are never greylisted. So are peers that are
not IP addresses.

State: in the store (``kittiwake.greylisting.GreylistState``; for SQLite two tables of
``queue.db``, ``queue.sqlgreylist``): each attempt is one transaction run in a worker
thread. The rules themselves (``greylisting.step``) are pure. Expired rows are deleted
once per ``cleanup_interval`` (and by ``cleanup()``). If the state fails, the check logs
the error and lets the mail through: greylisting is a heuristic and must not stop all
mail (postgrey does the same).

Security: LOW-MEDIUM. Errors delay or admit mail, nothing more; table size is bounded by
the expiry of unanswered triplets (``retry_window``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
import time
from collections.abc import Callable

from kittiwake.envelope import Recipient, Reply, SessionInfo
from kittiwake.greylisting import Decision, GreylistState, Rules, Triplet
from kittiwake.policy.networks import client_address
from kittiwake.policy.results import CheckResult
from kittiwake.policy.verdict import CONTINUE, Action, Verdict, found

log = logging.getLogger("kittiwake.policy.greylist")

Clock = Callable[[], float]
Exempt = Callable[[SessionInfo], bool]
GREYLISTED = Reply(451, "4.7.1", "Greylisted, please try again later")
DEFAULT_RULES = Rules()


def network_of(ip: str) -> str | None:
    """The greylisting network of a peer: its /24 (IPv4) or /64 (IPv6); None if not an IP."""
    address = client_address(ip)
    if address is None:
        return None
    prefix = 24 if address.version == 4 else 64
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


class Greylist:
    """The RCPT-stage check (see the module doc). ``close()`` it when done (it closes the
    state it was given)."""

    name = "greylist"

    def __init__(
        self,
        state: GreylistState,
        rules: Rules = DEFAULT_RULES,
        *,
        exempt: Exempt | None = None,
        clock: Clock = time.time,
        cleanup_interval: float = 3600.0,
    ) -> None:
        self.rules = rules
        self.state = state
        self.exempt = exempt
        self.clock = clock  # wall clock: the state outlives the process
        self.cleanup_interval = cleanup_interval
        self._cleanup_lock = threading.Lock()
        self._next_cleanup = clock() + cleanup_interval

    def close(self) -> None:
        self.state.close()

    def __enter__(self) -> Greylist:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the policy stage -------------------------------------------------------------

    async def rcpt(self, session: SessionInfo, sender: str, recipient: Recipient) -> Verdict:
        if session.auth_user is not None or (self.exempt is not None and self.exempt(session)):
            return CONTINUE
        network = network_of(session.client_ip)
        if network is None:
            return CONTINUE
        try:
            decision = await asyncio.to_thread(self.decide, network, sender, recipient.address)
        except Exception:
            log.exception("greylisting state failed; letting the mail through")
            return CONTINUE
        record = CheckResult("greylist", "pass" if decision.passes else "temperror", decision.value)
        if decision.passes:
            return found(record)
        triplet = f"{network} <{sender}> <{recipient.address}>"
        return Verdict(
            Action.TEMPFAIL,
            GREYLISTED,
            f"greylisted ({decision.value}): {triplet}",
            results=(record,),
        )

    # -- the state (blocking: call from a worker thread) ------------------------------

    def decide(self, network: str, sender: str, recipient: str) -> Decision:
        """Record one attempt of the triplet and say what it gets (one transaction)."""
        now = self.clock()
        with self._cleanup_lock:
            due = now >= self._next_cleanup
            if due:
                self._next_cleanup = now + self.cleanup_interval
        if due:
            self.state.expire(now, self.rules)
        return self.state.attempt(
            Triplet(network, sender.lower(), recipient.lower()), now, self.rules
        )

    async def cleanup(self) -> int:
        """Delete expired triplets and clients now; the number of rows removed."""
        return await asyncio.to_thread(self.state.expire, self.clock(), self.rules)


__all__ = ["GREYLISTED", "Decision", "Greylist", "network_of"]
