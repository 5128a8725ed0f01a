"""Greylisting state in the SQLite store: ``SQLiteGreylist`` (a ``GreylistState``).

The two tables (``greylist_triplets``, ``greylist_clients``) are created by the queue
schema's migrations (``sqlschema``), so they live in ``queue.db`` with the queue: one
database to back up, and the store — not a side file — holds the state a cluster store
will share. This class uses its own connection (WAL: it never blocks the queue's readers;
its short ``BEGIN IMMEDIATE`` transactions take turns with the queue's group commits) and
``synchronous = NORMAL``: losing the last greylisting writes in a power cut only means a
sender is greylisted once more, so they do not pay for an fsync each.
The connection opens on first use, after the store has migrated the schema.
Not security sensitive (no SQL is built from data).
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from kittiwake.greylisting import ClientRow, Decision, Rules, Triplet, TripletRow, step

__all__ = ["SQLiteGreylist"]

_KEY = "network = ? AND sender = ? AND recipient = ?"


class SQLiteGreylist:
    """``GreylistState`` on the queue database at ``db_path`` (blocking; thread-safe)."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    def _db(self) -> sqlite3.Connection:
        if self._closed:
            raise sqlite3.ProgrammingError("greylisting state is closed")
        if self._conn is None:
            conn = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False)
            try:
                conn.execute("PRAGMA busy_timeout = 5000")
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.execute("SELECT 1 FROM greylist_clients LIMIT 0")  # schema is there
            except sqlite3.Error:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def attempt(self, triplet: Triplet, now: float, rules: Rules) -> Decision:
        key = (triplet.network, triplet.sender, triplet.recipient)
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                found = db.execute(
                    "SELECT retries, last_seen FROM greylist_clients WHERE network = ?",
                    (triplet.network,),
                ).fetchone()
                client = ClientRow(*found) if found is not None else None
                found = db.execute(
                    f"SELECT first_seen, last_seen, passed FROM greylist_triplets WHERE {_KEY}",
                    key,
                ).fetchone()
                row = TripletRow(found[0], found[1], bool(found[2])) if found else None
                result = step(now, rules, client, row)
                if result.triplet is not None:
                    t = result.triplet
                    db.execute(
                        "INSERT OR REPLACE INTO greylist_triplets (network, sender, recipient,"
                        " first_seen, last_seen, passed) VALUES (?, ?, ?, ?, ?, ?)",
                        (*key, t.first_seen, t.last_seen, int(t.passed)),
                    )
                if result.client is not None:
                    db.execute(
                        "INSERT OR REPLACE INTO greylist_clients (network, retries, last_seen)"
                        " VALUES (?, ?, ?)",
                        (triplet.network, result.client.retries, result.client.last_seen),
                    )
                elif result.forget_client:
                    db.execute("DELETE FROM greylist_clients WHERE network = ?", (triplet.network,))
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        return result.decision

    def expire(self, now: float, rules: Rules) -> int:
        with self._lock:
            db = self._db()
            removed = db.execute(
                "DELETE FROM greylist_triplets WHERE (passed = 0 AND first_seen < ?)"
                " OR (passed = 1 AND last_seen < ?)",
                (now - rules.retry_window, now - rules.whitelist_ttl),
            ).rowcount
            removed += db.execute(
                "DELETE FROM greylist_clients WHERE last_seen < ?", (now - rules.whitelist_ttl,)
            ).rowcount
        return removed

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None
