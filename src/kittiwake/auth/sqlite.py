"""The SQLite user store: ``<data_dir>/users.db`` (WAL), shared by the server and the CLI.

Owns the schema, ``UserDatabase`` (synchronous access: the CLI's writes, loading a
snapshot) and ``SQLiteUserStore`` (the server's ``UserStore``: every read is answered from
an in-memory ``Snapshot``; a background task asks ``PRAGMA data_version`` once a second,
in a worker thread, and reloads the snapshot when another connection — ``kittiwake user``
— has committed a change). The event loop never waits on SQLite.

Concurrency is SQLite's: writers take ``BEGIN IMMEDIATE`` with a busy timeout, so the CLI
works while the server runs. The server's only write, ``update_credentials`` (a stronger
hash after a login), is a compare-and-swap on the stored credentials, never a blind
update. The file is created mode 0600 (it holds password hashes).
Security: HIGH — credentials and address ownership live here.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from kittiwake.auth.hashing import Credentials, ScramKeys
from kittiwake.auth.store import (
    AddressTaken,
    NoSuchUser,
    User,
    UserExists,
    normalize_address,
    normalize_name,
)

__all__ = ["FILENAME", "SQLiteUserStore", "Snapshot", "UserDatabase"]

log = logging.getLogger("kittiwake.auth")

FILENAME = "users.db"
SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    scram_salt BLOB NOT NULL,
    scram_iterations INTEGER NOT NULL,
    scram_stored_key BLOB NOT NULL,
    scram_server_key BLOB NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS addresses (
    address TEXT PRIMARY KEY,
    user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS addresses_by_user ON addresses(user);
"""
_USER_COLUMNS = (
    "name, password_hash, scram_salt, scram_iterations, scram_stored_key, scram_server_key,"
    " disabled, created"
)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every user and address, as of one read transaction."""

    users: dict[str, User] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)  # address → user name
    salt_key: bytes = field(default=b"", repr=False)  # for fake SCRAM salts


class UserDatabase:
    """Synchronous access to ``users.db``. One connection; use from one thread at a time."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None

    # ------------------------------------------------------------------ connection

    def open(self) -> UserDatabase:
        if self._conn is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():  # created 0600 before SQLite opens it (hashes inside)
            with contextlib.suppress(FileExistsError):
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        conn = sqlite3.connect(
            self.path, timeout=10.0, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            with _transaction(conn):
                _create(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return self

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    def __enter__(self) -> UserDatabase:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("UserDatabase is not open")
        return self._conn

    def data_version(self) -> int:
        """Changes when another connection commits (SQLite's ``PRAGMA data_version``)."""
        row = self.conn.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    # ------------------------------------------------------------------ reads

    def load(self) -> Snapshot:
        conn = self.conn
        with _transaction(conn, "BEGIN"):
            addresses: dict[str, list[str]] = {}
            owners: dict[str, str] = {}
            for address, user in conn.execute("SELECT address, user FROM addresses"):
                owners[address] = user
                addresses.setdefault(user, []).append(address)
            users = {
                row[0]: _user(row, addresses.get(row[0], []))
                for row in conn.execute(f"SELECT {_USER_COLUMNS} FROM users")
            }
            key = conn.execute("SELECT value FROM meta WHERE key = 'salt_key'").fetchone()
        return Snapshot(users, owners, bytes(key[0]) if key else b"")

    def users(self) -> list[User]:
        snapshot = self.load()
        return [snapshot.users[name] for name in sorted(snapshot.users)]

    def get(self, name: str) -> User | None:
        return self.load().users.get(normalize_name(name))

    # ------------------------------------------------------------------ writes

    def add_user(self, name: str, credentials: Credentials, addresses: Sequence[str]) -> User:
        name = normalize_name(name)
        normalized = sorted({normalize_address(a) for a in addresses})
        conn = self.conn
        with _transaction(conn):
            if _exists(conn, name):
                raise UserExists(f"user {name} already exists")
            s = credentials.scram
            conn.execute(
                f"INSERT INTO users ({_USER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, 0, ?)",
                (
                    name,
                    credentials.password_hash,
                    s.salt,
                    s.iterations,
                    s.stored_key,
                    s.server_key,
                    time.time(),
                ),
            )
            for address in normalized:
                _insert_address(conn, name, address)
        user = self.get(name)
        assert user is not None
        return user

    def set_credentials(self, name: str, credentials: Credentials) -> None:
        s = credentials.scram
        self._update(
            name,
            "password_hash = ?, scram_salt = ?, scram_iterations = ?, scram_stored_key = ?,"
            " scram_server_key = ?",
            (credentials.password_hash, s.salt, s.iterations, s.stored_key, s.server_key),
        )

    def replace_credentials(self, name: str, expected: Credentials, new: Credentials) -> bool:
        """Compare-and-swap: set ``new`` only where every credential column still holds
        ``expected``; False (nothing written) when the user changed or is gone."""
        s, e = new.scram, expected.scram
        with _transaction(self.conn):
            cur = self.conn.execute(
                "UPDATE users SET password_hash = ?, scram_salt = ?, scram_iterations = ?,"
                " scram_stored_key = ?, scram_server_key = ? WHERE name = ?"
                " AND password_hash = ? AND scram_salt = ? AND scram_iterations = ?"
                " AND scram_stored_key = ? AND scram_server_key = ?",
                (
                    *(new.password_hash, s.salt, s.iterations, s.stored_key, s.server_key),
                    *(normalize_name(name), expected.password_hash),
                    *(e.salt, e.iterations, e.stored_key, e.server_key),
                ),
            )
            return cur.rowcount == 1

    def set_disabled(self, name: str, disabled: bool) -> None:
        self._update(name, "disabled = ?", (int(disabled),))

    def delete_user(self, name: str) -> None:
        name = normalize_name(name)
        with _transaction(self.conn):
            if self.conn.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount == 0:
                raise NoSuchUser(f"no user {name}")

    def add_address(self, name: str, address: str) -> None:
        name, address = normalize_name(name), normalize_address(address)
        with _transaction(self.conn):
            if not _exists(self.conn, name):
                raise NoSuchUser(f"no user {name}")
            _insert_address(self.conn, name, address)

    def remove_address(self, name: str, address: str) -> None:
        name, address = normalize_name(name), normalize_address(address)
        with _transaction(self.conn):
            if not _exists(self.conn, name):
                raise NoSuchUser(f"no user {name}")
            cur = self.conn.execute(
                "DELETE FROM addresses WHERE address = ? AND user = ?", (address, name)
            )
            if cur.rowcount == 0:
                raise NoSuchUser(f"user {name} does not own {address}")

    def _update(self, name: str, assignments: str, values: tuple[object, ...]) -> None:
        name = normalize_name(name)
        with _transaction(self.conn):
            cur = self.conn.execute(
                f"UPDATE users SET {assignments} WHERE name = ?", (*values, name)
            )
            if cur.rowcount == 0:
                raise NoSuchUser(f"no user {name}")


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection, begin: str = "BEGIN IMMEDIATE") -> Iterator[None]:
    conn.execute(begin)
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _create(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute(
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('salt_key', ?)", (os.urandom(32),)
    )
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version == 0:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    elif version > SCHEMA_VERSION:
        raise RuntimeError(f"users.db schema {version} is newer than this Kittiwake knows")


def _exists(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone() is not None


def _insert_address(conn: sqlite3.Connection, name: str, address: str) -> None:
    row = conn.execute("SELECT user FROM addresses WHERE address = ?", (address,)).fetchone()
    if row is not None:
        raise AddressTaken(f"{address} already belongs to user {row[0]}")
    conn.execute("INSERT INTO addresses (address, user) VALUES (?, ?)", (address, name))


def _user(row: tuple[object, ...], addresses: list[str]) -> User:
    name, phash, salt, iterations, stored, server, disabled, created = row
    assert isinstance(name, str) and isinstance(phash, str)
    assert isinstance(salt, bytes) and isinstance(iterations, int)
    assert isinstance(stored, bytes) and isinstance(server, bytes)
    return User(
        name=name,
        credentials=Credentials(phash, ScramKeys(salt, iterations, stored, server)),
        disabled=bool(disabled),
        created=float(created),  # type: ignore[arg-type]
        addresses=tuple(sorted(addresses)),
    )


class SQLiteUserStore:
    """The server's ``UserStore`` over ``users.db`` (see the module docstring)."""

    def __init__(self, path: Path, *, poll_interval: float = 1.0) -> None:
        self._db = UserDatabase(path)
        self._snapshot = Snapshot()
        self._version: int | None = None
        self._lock = threading.Lock()  # the connection is used by one worker at a time
        self._poll = poll_interval
        self._task: asyncio.Task[None] | None = None

    @property
    def path(self) -> Path:
        return self._db.path

    async def start(self) -> None:
        await asyncio.to_thread(self._reload, True)
        users = len(self._snapshot.users)
        log.info(
            "user store %s: %d users, %d addresses", self.path, users, len(self._snapshot.owners)
        )
        self._task = asyncio.create_task(self._follow(), name="users-db-follow")

    async def refresh(self) -> bool:
        return await asyncio.to_thread(self._reload, False)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with self._lock:
            self._db.close()

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self._poll)
            try:
                if await self.refresh():
                    log.info("user store reloaded: %d users", len(self._snapshot.users))
            except Exception as exc:  # keep serving the last good snapshot
                log.warning("user store %s: cannot reload: %s", self.path, exc)

    def _reload(self, force: bool) -> bool:
        with self._lock:
            self._db.open()
            version = self._db.data_version()  # before the load: a change in between shows
            if not force and version == self._version:
                return False
            self._snapshot = self._db.load()
            self._version = version
            return True

    async def update_credentials(self, name: str, verified: Credentials, new: Credentials) -> bool:
        """``CredentialUpdates``: compare-and-swap in SQL, then the snapshot (see below)."""
        return await asyncio.to_thread(self._update_credentials, name, verified, new)

    def _update_credentials(self, name: str, verified: Credentials, new: Credentials) -> bool:
        with self._lock:  # reloads wait: the snapshot cannot move under us
            if not self._db.is_open or not self._db.replace_credentials(name, verified, new):
                return False
            # Our own commit does not change our data_version: patch the snapshot. If it
            # no longer shows ``verified``, a reload already read newer rows; leave it.
            snapshot = self._snapshot
            user = snapshot.users.get(name)
            if user is not None and user.credentials == verified:
                users = {**snapshot.users, name: replace(user, credentials=new)}
                self._snapshot = replace(snapshot, users=users)
            return True

    # ---------------------------------------------------------------- UserDirectory

    def has_users(self) -> bool:
        return bool(self._snapshot.users)

    def get(self, name: str) -> User | None:
        try:
            return self._snapshot.users.get(normalize_name(name))
        except ValueError:
            return None

    def owner_of(self, address: str) -> str | None:
        try:
            return self._snapshot.owners.get(normalize_address(address))
        except ValueError:
            return None

    def addresses_of(self, name: str) -> tuple[str, ...]:
        user = self.get(name)
        return user.addresses if user is not None else ()

    def exists(self, address: str) -> bool:
        return self.owner_of(address) is not None

    def fake_salt(self, name: str) -> bytes:
        key = self._snapshot.salt_key or b"kittiwake"
        return hmac.new(key, name.encode("utf-8"), hashlib.sha256).digest()[:16]
