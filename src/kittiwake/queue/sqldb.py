"""The queue database: every SQL statement, synchronous.

Owns ``QueueDB``, a thin wrapper around one ``sqlite3.Connection``. The store uses one from
exactly one thread (its database thread); ``queue.readonly`` opens one read-only. Nothing
here knows about asyncio. Not security sensitive beyond always binding parameters (no SQL
is built from data). The schema and its migrations live in ``queue.sqlschema``.

Durability: WAL with ``synchronous=FULL`` — in WAL mode ``NORMAL`` skips the fsync at each
commit, and we promise durability before the 250 reply (design practice 5). One
transaction carries many messages (group commit), so one WAL fsync serves them all.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from kittiwake.delivery.api import Outcome, QueuedMessage
from kittiwake.errors import StoreError
from kittiwake.queue.api import DomainSummary, QueueSummary
from kittiwake.queue.sqlschema import (
    LIVE,
    MIGRATIONS,
    MSG_COLS,
    N_MSG_COLS,
    RCPT_COLS,
    SCHEMA_VERSION,
    address_domain,
    decode_message,
)

__all__ = ["SCHEMA_VERSION", "QueueDB", "read_body"]

_INSERT_MESSAGE = (
    "INSERT INTO messages (queue_id, sender, body_type, smtputf8, declared_size, ret, envid,"
    " auth, received_at, size, spooled, hold, internal)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)"
)
_INSERT_BODY = "INSERT INTO bodies VALUES (?, ?)"
_INSERT_RCPT = (
    "INSERT INTO recipients (queue_id, idx, address, notify, orcpt, status, domain)"
    " VALUES (?, ?, ?, ?, ?, 'pending', ?)"
)
# One attempt's result; a final recipient (delivered, bounced) never reopens. The route and
# remote MTA are kept from earlier attempts when this one has none (a dead-destination
# deferral makes no connection).
_UPDATE_RCPT = f"""
    UPDATE recipients SET
        status = :status, attempts = attempts + 1, next_attempt = :next, last_reply = :reply,
        route = coalesce(:route, route), remote_mta = coalesce(:mta, remote_mta),
        last_attempt = :now, dsn_status = :dsn, diagnostic = :diag, notice = :notice,
        first_deferred = CASE WHEN :status = 'deferred' AND first_deferred = 0
                              THEN :now ELSE first_deferred END
    WHERE queue_id = :qid AND idx = :idx AND status IN {LIVE}"""


class QueueDB:
    """One connection to ``queue.db``; single-threaded use only.

    ``readonly`` opens with a ``mode=ro`` URI: no migration, no pragma that writes, and a
    schema older or newer than this code is refused (the server upgrades it at start).
    WAL readers never block the server's writer, nor does it block them.
    """

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        try:
            if readonly:
                uri = f"{Path(path).resolve().as_uri()}?mode=ro"
                self.conn = sqlite3.connect(uri, uri=True, isolation_level=None)
                self.conn.execute("PRAGMA busy_timeout = 5000")
                (version,) = self.conn.execute("PRAGMA user_version").fetchone()
                if version != SCHEMA_VERSION:
                    self.conn.close()
                    raise StoreError(
                        f"queue database {path} has schema version {version}, this Kittiwake"
                        f" reads {SCHEMA_VERSION}: start the server once to upgrade it"
                    )
                return
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, one per batch.
            self.conn = sqlite3.connect(path, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = FULL")
            self.conn.execute("PRAGMA busy_timeout = 5000")
            # Small bodies pass through the WAL: after a burst, shrink it back at checkpoint.
            self.conn.execute("PRAGMA journal_size_limit = 67108864")
            self.conn.create_function("kw_domain", 1, address_domain, deterministic=True)
            self._migrate()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open queue database {path}: {exc}") from exc

    def _migrate(self) -> None:
        (version,) = self.conn.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"queue database schema version {version} is newer than this Kittiwake"
                f" ({SCHEMA_VERSION}); refusing to touch it"
            )
        for step in range(version, SCHEMA_VERSION):
            self.conn.executescript(
                f"BEGIN IMMEDIATE; {MIGRATIONS[step]}; PRAGMA user_version = {step + 1}; COMMIT;"
            )

    def close(self) -> None:
        self.conn.close()

    # -- writes (the caller wraps them in begin()/commit()) -------------------------------

    def begin(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    def insert(self, messages: Sequence[tuple[QueuedMessage, bytes | None]]) -> None:
        """New messages; a body given here is stored inline, else it is a spool file."""
        m_rows = []
        r_rows = []
        b_rows = []
        for m, body in messages:
            e = m.envelope
            qid = m.queue_id
            m_rows.append(
                (
                    qid,
                    e.sender,
                    e.body_type.value,
                    e.smtputf8,
                    e.declared_size,
                    None if e.ret is None else e.ret.value,
                    e.envid,
                    e.auth,
                    m.received_at,
                    m.size,
                    body is None,
                    e.internal,
                )
            )
            if body is not None:
                b_rows.append((qid, body))
            for i, r in enumerate(e.recipients):
                notify = None if r.notify is None else r.notify.value
                r_rows.append((qid, i, r.address, notify, r.orcpt, address_domain(r.address)))
        self.conn.executemany(_INSERT_MESSAGE, m_rows)
        self.conn.executemany(_INSERT_RCPT, r_rows)
        if b_rows:
            self.conn.executemany(_INSERT_BODY, b_rows)

    def apply(
        self,
        queue_id: str,
        outcomes: Iterable[Outcome],
        now: float,
        *,
        route: str | None = None,
        notices: Mapping[int, str] | None = None,
        diagnostics: Mapping[int, str] | None = None,
    ) -> None:
        """Record one attempt's outcomes in place. ``notices[i]`` marks a final DSN owed
        for recipient ``i``; ``diagnostics[i]`` is the reply a DSN quotes when it is not
        the outcome's own (an expiry quotes the last remote reply)."""
        notices = notices or {}
        diagnostics = diagnostics or {}
        rows = []
        for o in outcomes:
            reply = str(o.reply)
            diag = diagnostics.get(o.index)
            rows.append(
                {
                    "status": o.status.value,
                    "next": o.next_attempt,
                    "reply": reply,
                    "route": route,
                    "mta": o.remote_mta,
                    "now": now,
                    "dsn": o.reply.enhanced or f"{o.reply.code // 100}.0.0",
                    "diag": None if diag is None or diag == reply else diag,
                    "notice": notices.get(o.index),
                    "qid": queue_id,
                    "idx": o.index,
                }
            )
        self.conn.executemany(_UPDATE_RCPT, rows)

    def notices_sent(self, queue_id: str, indices: Iterable[int], *, delay: bool) -> None:
        """A final notice (or, with ``delay``, the delay warning) went out for these."""
        sql = (
            "UPDATE recipients SET delay_notified = 1 WHERE queue_id = ? AND idx = ?"
            if delay
            else "UPDATE recipients SET notice = NULL WHERE queue_id = ? AND idx = ?"
        )
        self.conn.executemany(sql, [(queue_id, i) for i in indices])

    def remove_if_finished(self, queue_id: str) -> bool | None:
        """Delete a message none of whose recipients is live or owed a notice. Returns None
        if nothing was deleted, else whether it had a spool file (for the caller to unlink)."""
        busy = self.conn.execute(
            f"SELECT 1 FROM recipients WHERE queue_id = ?"
            f" AND (status IN {LIVE} OR notice IS NOT NULL) LIMIT 1",
            (queue_id,),
        ).fetchone()
        if busy is not None:
            return None
        return self.delete(queue_id)

    def delete(self, queue_id: str) -> bool | None:
        """Delete a message whatever its state: None if there was none, else whether it
        had a spool file."""
        row = self.conn.execute(
            "SELECT spooled FROM messages WHERE queue_id = ?", (queue_id,)
        ).fetchone()
        if row is None:
            return None
        self.conn.execute("DELETE FROM messages WHERE queue_id = ?", (queue_id,))
        self.conn.execute("DELETE FROM recipients WHERE queue_id = ?", (queue_id,))
        if not row[0]:
            self.conn.execute("DELETE FROM bodies WHERE queue_id = ?", (queue_id,))
        return bool(row[0])

    def hold(self, queue_id: str, reason: str | None) -> bool:
        """Hold (with a reason) or release (None); False when there is no such message."""
        cur = self.conn.execute(
            "UPDATE messages SET hold = ? WHERE queue_id = ?", (reason, queue_id)
        )
        return cur.rowcount > 0

    def make_due(self, now: float, *, queue_id: str | None, domain: str | None) -> list[str]:
        """Deferred recipients due at ``now``: of one message, of one recipient domain
        (``.example.org`` = its subdomains), or all. Returns the unheld messages touched."""
        where = "status = 'deferred'"
        args: list[object] = [now]
        if queue_id is not None:
            where += " AND queue_id = ?"
            args.append(queue_id)
        if domain is not None:
            domain = domain.lower()
            if domain.startswith("."):
                escaped = domain.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                where += " AND domain LIKE ? ESCAPE '\\'"
                args.append("%" + escaped)
            else:
                where += " AND domain = ?"
                args.append(domain)
        rows = self.conn.execute(
            f"UPDATE recipients SET next_attempt = ? WHERE {where} RETURNING queue_id",
            args,
        ).fetchall()
        touched = sorted({qid for (qid,) in rows})
        held = self.held()
        return [qid for qid in touched if qid not in held]

    # -- reads ----------------------------------------------------------------------------

    def spooled_ids(self) -> set[str]:
        """Messages whose body is a spool file."""
        rows = self.conn.execute("SELECT queue_id FROM messages WHERE spooled")
        return {row[0] for row in rows}

    def count(self) -> int:
        (n,) = self.conn.execute("SELECT count(*) FROM messages").fetchone()
        assert isinstance(n, int)
        return n

    def held(self) -> dict[str, str]:
        rows = self.conn.execute("SELECT queue_id, hold FROM messages WHERE hold IS NOT NULL")
        return {qid: reason for qid, reason in rows}

    def get(self, queue_id: str) -> QueuedMessage | None:
        found = self._load("m.queue_id = ?", (queue_id,))
        return found[0] if found else None

    def get_many(self, queue_ids: Sequence[str]) -> list[QueuedMessage]:
        """The messages that exist among ``queue_ids`` (one query; at most a few hundred)."""
        marks = ",".join("?" * len(queue_ids))
        return self._load(f"m.queue_id IN ({marks})", tuple(queue_ids))

    def all(self) -> list[QueuedMessage]:
        """Every message, held ones and ones waiting only for a notice included."""
        return self._load("1", ())

    def pending(self, due_before: float | None) -> list[QueuedMessage]:
        live = f"SELECT queue_id FROM recipients WHERE status IN {LIVE}"
        if due_before is None:
            return self._load(f"m.hold IS NULL AND m.queue_id IN ({live})", ())
        where = f"m.hold IS NULL AND m.queue_id IN ({live} AND next_attempt <= ?)"
        return self._load(where, (due_before,))

    def schedule(self) -> list[tuple[str, float]]:
        """What the scheduler must know at start-up, cheaply: each unheld message with a
        live recipient or an owed notice, and when it is next due (0 for a notice)."""
        rows = self.conn.execute(
            f"""SELECT r.queue_id,
                       min(CASE WHEN r.notice IS NOT NULL THEN 0 ELSE r.next_attempt END)
                FROM recipients r JOIN messages m ON m.queue_id = r.queue_id
                WHERE m.hold IS NULL AND (r.status IN {LIVE} OR r.notice IS NOT NULL)
                GROUP BY r.queue_id ORDER BY r.queue_id"""
        )
        return [(qid, float(when)) for qid, when in rows]

    def summary(self) -> QueueSummary:
        (messages, held) = self.conn.execute(
            "SELECT count(*), count(hold) FROM messages"
        ).fetchone()
        rows = self.conn.execute(
            f"""SELECT r.domain, count(*), count(DISTINCT r.queue_id),
                       sum(r.status = 'deferred'), min(m.received_at)
                FROM recipients r JOIN messages m ON m.queue_id = r.queue_id
                WHERE r.status IN {LIVE}
                GROUP BY r.domain ORDER BY count(*) DESC, r.domain"""
        ).fetchall()
        domains = tuple(
            DomainSummary(d, int(n), int(nm), int(nd), float(old)) for d, n, nm, nd, old in rows
        )
        return QueueSummary(int(messages), sum(d.recipients for d in domains), int(held), domains)

    def _load(self, where: str, args: tuple[object, ...]) -> list[QueuedMessage]:
        sql = (
            f"SELECT {MSG_COLS}, {RCPT_COLS} FROM messages m JOIN recipients r"
            f" ON r.queue_id = m.queue_id WHERE {where} ORDER BY m.queue_id, r.idx"
        )
        out: list[QueuedMessage] = []
        current: tuple[object, ...] | None = None
        rcpts: list[tuple[object, ...]] = []
        for row in self.conn.execute(sql, args):
            if current is None or row[0] != current[0]:
                if current is not None:
                    out.append(decode_message(current, rcpts))
                current, rcpts = row[:N_MSG_COLS], []
            rcpts.append(row[N_MSG_COLS:])
        if current is not None:
            out.append(decode_message(current, rcpts))
        return out


def read_body(conn: sqlite3.Connection, queue_id: str) -> bytes | None:
    """An inline body, or None (on a reader connection: any thread, WAL readers never wait)."""
    row = conn.execute("SELECT data FROM bodies WHERE queue_id = ?", (queue_id,)).fetchone()
    return None if row is None else bytes(row[0])
