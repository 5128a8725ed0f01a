"""The queue database: schema, migrations and every SQL statement, synchronous.

Owns ``QueueDB``, a thin wrapper around one ``sqlite3.Connection``. It is used from exactly
one thread (the store's database thread); nothing here knows about asyncio. Not security
sensitive beyond always binding parameters (no SQL is built from data).

Durability: WAL with ``synchronous=FULL`` — in WAL mode ``NORMAL`` skips the fsync at each
commit, and we promise durability before the 250 reply (design practice 5). One
transaction carries many messages (group commit), so one WAL fsync serves them all.

Schema versions live in ``PRAGMA user_version``; ``MIGRATIONS[i]`` takes version ``i`` to
``i + 1``. Issue 3 (per-recipient route/transport) adds its step at the end of the list.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

from kittiwake.delivery.api import Outcome, QueuedMessage, QueuedRecipient, RecipientStatus
from kittiwake.envelope import BodyType, Envelope, Notify, Recipient, Ret
from kittiwake.errors import StoreError

MIGRATIONS: tuple[str, ...] = (
    # 0 → 1: the 0.1 schema. ``hold`` is NULL for live mail, else why it is held (e.g. its
    # spool file is missing); held messages are kept but never offered for delivery.
    # ``spooled`` is 1 when the body is a spool file, 0 when it is in ``bodies`` (small
    # bodies travel in the commit transaction itself: see queue.spool).
    """
    CREATE TABLE messages (
        queue_id      TEXT PRIMARY KEY,
        sender        TEXT NOT NULL,
        body_type     TEXT NOT NULL,
        smtputf8      INTEGER NOT NULL,
        declared_size INTEGER,
        ret           TEXT,
        envid         TEXT,
        auth          TEXT,
        received_at   REAL NOT NULL,
        size          INTEGER NOT NULL,
        spooled       INTEGER NOT NULL,
        hold          TEXT
    ) WITHOUT ROWID;
    CREATE TABLE bodies (
        queue_id      TEXT PRIMARY KEY,
        data          BLOB NOT NULL
    );
    CREATE TABLE recipients (
        queue_id     TEXT NOT NULL,
        idx          INTEGER NOT NULL,
        address      TEXT NOT NULL,
        notify       INTEGER,
        orcpt        TEXT,
        status       TEXT NOT NULL,
        attempts     INTEGER NOT NULL DEFAULT 0,
        next_attempt REAL NOT NULL DEFAULT 0,
        last_reply   TEXT,
        PRIMARY KEY (queue_id, idx)
    ) WITHOUT ROWID;
    CREATE INDEX recipients_due ON recipients (next_attempt, queue_id)
        WHERE status IN ('pending', 'deferred');
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

_LIVE = "('pending', 'deferred')"
_MSG_COLS = (
    "m.queue_id, m.sender, m.body_type, m.smtputf8, m.declared_size, m.ret, m.envid, m.auth,"
    " m.received_at, m.size"
)
_RCPT_COLS = (
    "r.idx, r.address, r.notify, r.orcpt, r.status, r.attempts, r.next_attempt, r.last_reply"
)
_INSERT_MESSAGE = "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)"
_INSERT_BODY = "INSERT INTO bodies VALUES (?, ?)"
_INSERT_RCPT = "INSERT INTO recipients VALUES (?, ?, ?, ?, ?, 'pending', 0, 0, NULL)"
_UPDATE_RCPT = (
    "UPDATE recipients SET status = ?, attempts = attempts + 1, next_attempt = ?,"
    f" last_reply = ? WHERE queue_id = ? AND idx = ? AND status IN {_LIVE}"
)
_STATUS = {s.value: s for s in RecipientStatus}
_BODY = {b.value: b for b in BodyType}


class QueueDB:
    """One connection to ``queue.db``; single-threaded use only."""

    def __init__(self, path: Path) -> None:
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, one per batch.
            self.conn = sqlite3.connect(path, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = FULL")
            self.conn.execute("PRAGMA busy_timeout = 5000")
            # Small bodies pass through the WAL: after a burst, shrink it back at checkpoint.
            self.conn.execute("PRAGMA journal_size_limit = 67108864")
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
                )
            )
            if body is not None:
                b_rows.append((qid, body))
            for i, r in enumerate(e.recipients):
                notify = None if r.notify is None else r.notify.value
                r_rows.append((qid, i, r.address, notify, r.orcpt))
        self.conn.executemany(_INSERT_MESSAGE, m_rows)
        self.conn.executemany(_INSERT_RCPT, r_rows)
        if b_rows:
            self.conn.executemany(_INSERT_BODY, b_rows)

    def apply(self, queue_id: str, outcomes: Iterable[Outcome]) -> None:
        """Update recipients in place; a final recipient (delivered, bounced) never reopens."""
        self.conn.executemany(
            _UPDATE_RCPT,
            [(o.status.value, o.next_attempt, str(o.reply), queue_id, o.index) for o in outcomes],
        )

    def remove_if_finished(self, queue_id: str) -> bool | None:
        """Delete a message none of whose recipients is live. Returns None if nothing was
        deleted, else whether the message had a spool file (for the caller to unlink)."""
        live = self.conn.execute(
            f"SELECT 1 FROM recipients WHERE queue_id = ? AND status IN {_LIVE} LIMIT 1",
            (queue_id,),
        ).fetchone()
        if live is not None:
            return None
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

    def hold(self, queue_id: str, reason: str) -> None:
        self.conn.execute("UPDATE messages SET hold = ? WHERE queue_id = ?", (reason, queue_id))

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

    def pending(self, due_before: float | None) -> list[QueuedMessage]:
        live = f"SELECT queue_id FROM recipients WHERE status IN {_LIVE}"
        if due_before is None:
            return self._load(f"m.hold IS NULL AND m.queue_id IN ({live})", ())
        where = f"m.hold IS NULL AND m.queue_id IN ({live} AND next_attempt <= ?)"
        return self._load(where, (due_before,))

    def _load(self, where: str, args: tuple[object, ...]) -> list[QueuedMessage]:
        sql = (
            f"SELECT {_MSG_COLS}, {_RCPT_COLS} FROM messages m JOIN recipients r"
            f" ON r.queue_id = m.queue_id WHERE {where} ORDER BY m.queue_id, r.idx"
        )
        out: list[QueuedMessage] = []
        current: tuple[object, ...] | None = None
        rcpts: list[tuple[object, ...]] = []
        for row in self.conn.execute(sql, args):
            if current is None or row[0] != current[0]:
                if current is not None:
                    out.append(_message(current, rcpts))
                current, rcpts = row[:10], []
            rcpts.append(row[10:])
        if current is not None:
            out.append(_message(current, rcpts))
        return out


def read_body(conn: sqlite3.Connection, queue_id: str) -> bytes | None:
    """An inline body, or None (on a reader connection: any thread, WAL readers never wait)."""
    row = conn.execute("SELECT data FROM bodies WHERE queue_id = ?", (queue_id,)).fetchone()
    return None if row is None else bytes(row[0])


def _message(m: tuple[object, ...], rows: list[tuple[object, ...]]) -> QueuedMessage:
    qid, sender, body_type, smtputf8, declared, ret, envid, auth, received_at, size = m
    recipients = []
    queued = []
    for idx, address, notify, orcpt, status, attempts, next_attempt, last_reply in rows:
        assert isinstance(idx, int) and isinstance(address, str) and isinstance(attempts, int)
        assert isinstance(next_attempt, float | int) and isinstance(status, str)
        recipients.append(
            Recipient(
                address,
                None if notify is None else Notify(notify),
                orcpt if isinstance(orcpt, str) else None,
            )
        )
        queued.append(
            QueuedRecipient(
                idx,
                address,
                _STATUS[status],
                attempts,
                float(next_attempt),
                last_reply if isinstance(last_reply, str) else None,
            )
        )
    assert isinstance(qid, str) and isinstance(sender, str) and isinstance(body_type, str)
    assert isinstance(received_at, float | int) and isinstance(size, int)
    envelope = Envelope(
        sender=sender,
        recipients=tuple(recipients),
        body_type=_BODY[body_type],
        smtputf8=bool(smtputf8),
        declared_size=declared if isinstance(declared, int) else None,
        ret=Ret(ret) if isinstance(ret, str) else None,
        envid=envid if isinstance(envid, str) else None,
        auth=auth if isinstance(auth, str) else None,
    )
    return QueuedMessage(qid, envelope, float(received_at), size, tuple(queued))
