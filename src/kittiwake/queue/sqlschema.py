"""The queue database's schema, its migrations, and rows ⇄ values.

Owns ``MIGRATIONS`` (``PRAGMA user_version`` steps), the column lists every query shares,
``decode_message`` (rows → ``QueuedMessage``) and the ``mailq`` summary values. Pure: no
connection is opened here. Not security sensitive (no SQL is built from data).

``MIGRATIONS[i]`` takes version ``i`` to ``i + 1``. A step may call ``kw_domain(address)``,
a Python function the connection registers before migrating (the domain of an address
whose local part may itself be quoted and contain ``@``).
"""

from __future__ import annotations

from collections.abc import Sequence

from kittiwake.delivery.api import QueuedMessage, QueuedRecipient, RecipientStatus
from kittiwake.envelope import BodyType, Envelope, Notify, Recipient, Ret

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
    # 1 → 2 (issue 3, the MTA): notices generated here are marked (``internal``); each
    # recipient keeps its domain (flush by domain, mailq), the route and remote MTA of its
    # last attempt, the status and diagnostic for a DSN, when it was first deferred, and the
    # notices: ``delay_notified`` once the delay warning went out, ``notice`` while a final
    # DSN ("failed", "delivered", "relayed") is owed — a message is removed only once no
    # recipient is live and no notice is owed, so the body is there to quote.
    """
    ALTER TABLE messages ADD COLUMN internal TEXT;
    ALTER TABLE recipients ADD COLUMN domain TEXT NOT NULL DEFAULT '';
    ALTER TABLE recipients ADD COLUMN route TEXT;
    ALTER TABLE recipients ADD COLUMN remote_mta TEXT;
    ALTER TABLE recipients ADD COLUMN last_attempt REAL NOT NULL DEFAULT 0;
    ALTER TABLE recipients ADD COLUMN dsn_status TEXT;
    ALTER TABLE recipients ADD COLUMN diagnostic TEXT;
    ALTER TABLE recipients ADD COLUMN first_deferred REAL NOT NULL DEFAULT 0;
    ALTER TABLE recipients ADD COLUMN delay_notified INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE recipients ADD COLUMN notice TEXT;
    UPDATE recipients SET domain = kw_domain(address);
    CREATE INDEX recipients_domain ON recipients (domain) WHERE status = 'deferred';
    CREATE INDEX recipients_notice ON recipients (queue_id) WHERE notice IS NOT NULL;
    """,
    # 2 → 3 (issue 5): greylisting state (``queue.sqlgreylist``; rules in
    # ``kittiwake.greylisting``). Kept in the store so a cluster shares it.
    """
    CREATE TABLE greylist_triplets (
        network    TEXT NOT NULL,
        sender     TEXT NOT NULL,
        recipient  TEXT NOT NULL,
        first_seen REAL NOT NULL,
        last_seen  REAL NOT NULL,
        passed     INTEGER NOT NULL,
        PRIMARY KEY (network, sender, recipient)
    ) WITHOUT ROWID;
    CREATE INDEX greylist_triplets_seen ON greylist_triplets (last_seen);
    CREATE TABLE greylist_clients (
        network    TEXT PRIMARY KEY,
        retries    INTEGER NOT NULL,
        last_seen  REAL NOT NULL
    ) WITHOUT ROWID;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

LIVE = "('pending', 'deferred')"
MSG_COLS = (
    "m.queue_id, m.sender, m.body_type, m.smtputf8, m.declared_size, m.ret, m.envid, m.auth,"
    " m.received_at, m.size, m.hold, m.internal"
)
N_MSG_COLS = 12
RCPT_COLS = (
    "r.idx, r.address, r.notify, r.orcpt, r.status, r.attempts, r.next_attempt, r.last_reply,"
    " r.route, r.remote_mta, r.last_attempt, r.dsn_status, r.diagnostic, r.first_deferred,"
    " r.delay_notified, r.notice"
)
_STATUS = {s.value: s for s in RecipientStatus}
_BODY = {b.value: b for b in BodyType}


def address_domain(address: str) -> str:
    """The domain of ``address``, lower-cased ("" for a bare local part such as postmaster)."""
    _local, at, domain = address.rpartition("@")
    return domain.lower() if at else ""


def decode_message(m: Sequence[object], rows: Sequence[Sequence[object]]) -> QueuedMessage:
    """One ``messages`` row (``MSG_COLS``) and its ``recipients`` rows (``RCPT_COLS``)."""
    qid, sender, body_type, smtputf8, declared, ret, envid, auth, received_at, size = m[:10]
    hold, internal = m[10:N_MSG_COLS]
    recipients = []
    queued = []
    for row in rows:
        idx, address, notify, orcpt, status, attempts, next_attempt, last_reply = row[:8]
        route, remote_mta, last_attempt, dsn_status, diagnostic = row[8:13]
        first_deferred, delay_notified, notice = row[13:16]
        assert isinstance(idx, int) and isinstance(address, str) and isinstance(attempts, int)
        assert isinstance(next_attempt, float | int) and isinstance(status, str)
        assert isinstance(last_attempt, float | int) and isinstance(first_deferred, float | int)
        recipients.append(
            Recipient(
                address,
                None if notify is None else Notify(notify),
                orcpt if isinstance(orcpt, str) else None,
            )
        )
        reply = last_reply if isinstance(last_reply, str) else None
        queued.append(
            QueuedRecipient(
                idx,
                address,
                _STATUS[status],
                attempts,
                float(next_attempt),
                reply,
                route=_str(route),
                remote_mta=_str(remote_mta),
                last_attempt=float(last_attempt),
                dsn_status=_str(dsn_status),
                diagnostic=_str(diagnostic) or reply,  # stored only when it differs
                first_deferred=float(first_deferred),
                delay_notified=bool(delay_notified),
                notice=_str(notice),
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
        envid=_str(envid),
        auth=_str(auth),
        internal=_str(internal),
    )
    return QueuedMessage(
        qid,
        envelope,
        float(received_at),
        size,
        tuple(queued),
        held=hold is not None,
        hold_reason=_str(hold),
    )


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None
