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

State: its own SQLite file (WAL, e.g. ``data_dir / "greylist.sqlite"``), each decision one
``BEGIN IMMEDIATE`` transaction run in a worker thread, so several processes may share the
file. Expired rows are deleted once per ``cleanup_interval`` (and by ``cleanup()``).
If the database fails, the check logs the error and lets the mail through: greylisting is
a heuristic and must not stop all mail (postgrey does the same).

Security: LOW-MEDIUM. Errors delay or admit mail, nothing more; table size is bounded by
the expiry of unanswered triplets (``retry_window``).
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from kittiwake.envelope import Recipient, Reply, SessionInfo
from kittiwake.policy.networks import client_address
from kittiwake.policy.results import CheckResult
from kittiwake.policy.verdict import CONTINUE, Action, Verdict, found

log = logging.getLogger("kittiwake.policy.greylist")

Clock = Callable[[], float]
Exempt = Callable[[SessionInfo], bool]
GREYLISTED = Reply(451, "4.7.1", "Greylisted, please try again later")
DAY = 86400.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS triplet (
    network    TEXT NOT NULL,
    sender     TEXT NOT NULL,
    recipient  TEXT NOT NULL,
    first_seen REAL NOT NULL,
    last_seen  REAL NOT NULL,
    passed     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (network, sender, recipient)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS triplet_last_seen ON triplet (last_seen);
CREATE TABLE IF NOT EXISTS client (
    network   TEXT PRIMARY KEY,
    retries   INTEGER NOT NULL,
    last_seen REAL NOT NULL
) WITHOUT ROWID;
"""


class Decision(enum.Enum):
    NEW = "new"  # first seen (or seen again after the retry window): 451
    EARLY = "early"  # retried before the delay: 451
    RETRIED = "retried"  # retried in time: pass, counted for the network
    KNOWN = "known"  # a triplet that passed before: pass
    WHITELISTED = "whitelisted"  # the network is auto-whitelisted: pass
    EXEMPT = "exempt"  # authenticated, exempt, or not an IP: not looked at

    @property
    def passes(self) -> bool:
        return self not in (Decision.NEW, Decision.EARLY)


def network_of(ip: str) -> str | None:
    """The greylisting network of a peer: its /24 (IPv4) or /64 (IPv6); None if not an IP."""
    address = client_address(ip)
    if address is None:
        return None
    prefix = 24 if address.version == 4 else 64
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


class Greylist:
    """The RCPT-stage check (see the module doc). ``close()`` it when done."""

    name = "greylist"

    def __init__(
        self,
        db_path: Path,
        *,
        delay: float = 300.0,
        retry_window: float = 4 * 3600.0,
        auto_whitelist_after: int = 5,
        whitelist_ttl: float = 35 * DAY,
        exempt: Exempt | None = None,
        clock: Clock = time.time,
        cleanup_interval: float = 3600.0,
    ) -> None:
        if delay < 0 or retry_window <= delay:
            raise ValueError("need 0 <= delay < retry_window")
        if whitelist_ttl <= 0:
            raise ValueError("whitelist_ttl must be > 0")
        self.db_path = db_path
        self.delay = delay
        self.retry_window = retry_window
        self.auto_whitelist_after = auto_whitelist_after  # 0: never auto-whitelist
        self.whitelist_ttl = whitelist_ttl
        self.exempt = exempt
        self.clock = clock  # wall clock: the state outlives the process
        self.cleanup_interval = cleanup_interval
        self._lock = threading.Lock()  # one statement sequence at a time on the connection
        self._conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        try:
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA busy_timeout = 5000")
            self._conn.executescript(_SCHEMA)
        except sqlite3.Error:
            self._conn.close()
            raise
        self._next_cleanup = clock() + cleanup_interval

    def close(self) -> None:
        with self._lock:
            self._conn.close()

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
        except sqlite3.Error:
            log.exception("greylist database %s failed; letting the mail through", self.db_path)
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
        sender, recipient = sender.lower(), recipient.lower()
        now = self.clock()
        with self._lock:
            if now >= self._next_cleanup:
                self._cleanup(now)
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                decision = self._decide(now, network, sender, recipient)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        return decision

    def _decide(self, now: float, network: str, sender: str, recipient: str) -> Decision:
        db = self._conn
        client = db.execute(
            "SELECT retries, last_seen FROM client WHERE network = ?", (network,)
        ).fetchone()
        if client is not None and now - client[1] > self.whitelist_ttl:
            db.execute("DELETE FROM client WHERE network = ?", (network,))
            client = None
        if (
            client is not None
            and self.auto_whitelist_after > 0
            and client[0] >= self.auto_whitelist_after
        ):
            db.execute("UPDATE client SET last_seen = ? WHERE network = ?", (now, network))
            return Decision.WHITELISTED
        key = (network, sender, recipient)
        row = db.execute(
            "SELECT first_seen, last_seen, passed FROM triplet"
            " WHERE network = ? AND sender = ? AND recipient = ?",
            key,
        ).fetchone()
        if row is None:
            db.execute(
                "INSERT INTO triplet (network, sender, recipient, first_seen, last_seen, passed)"
                " VALUES (?, ?, ?, ?, ?, 0)",
                (*key, now, now),
            )
            return Decision.NEW
        first_seen, last_seen, passed = row
        if passed and now - last_seen <= self.whitelist_ttl:
            self._touch(key, first_seen, now, passed=True)
            return Decision.KNOWN
        if passed or now - first_seen > self.retry_window:  # expired: start over
            self._touch(key, now, now, passed=False)
            return Decision.NEW
        if now - first_seen < self.delay:
            self._touch(key, first_seen, now, passed=False)
            return Decision.EARLY
        self._touch(key, first_seen, now, passed=True)
        db.execute(
            "INSERT INTO client (network, retries, last_seen) VALUES (?, 1, ?)"
            " ON CONFLICT (network) DO UPDATE SET retries = retries + 1, last_seen = ?",
            (network, now, now),
        )
        return Decision.RETRIED

    def _touch(
        self, key: tuple[str, str, str], first_seen: float, now: float, *, passed: bool
    ) -> None:
        self._conn.execute(
            "UPDATE triplet SET first_seen = ?, last_seen = ?, passed = ?"
            " WHERE network = ? AND sender = ? AND recipient = ?",
            (first_seen, now, int(passed), *key),
        )

    def _cleanup(self, now: float) -> int:
        cur = self._conn.execute(
            "DELETE FROM triplet WHERE (passed = 0 AND first_seen < ?)"
            " OR (passed = 1 AND last_seen < ?)",
            (now - self.retry_window, now - self.whitelist_ttl),
        )
        removed = cur.rowcount
        cur = self._conn.execute(
            "DELETE FROM client WHERE last_seen < ?", (now - self.whitelist_ttl,)
        )
        self._next_cleanup = now + self.cleanup_interval
        return removed + cur.rowcount

    async def cleanup(self) -> int:
        """Delete expired triplets and clients now; the number of rows removed."""

        def run() -> int:
            with self._lock:
                return self._cleanup(self.clock())

        return await asyncio.to_thread(run)


__all__ = ["GREYLISTED", "Decision", "Greylist", "network_of"]
