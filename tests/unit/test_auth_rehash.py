"""Upgrading stored credentials after a login: argon2 hashes with other parameters and
SCRAM keys with fewer iterations are remade from the verified PLAIN/LOGIN password (RFC
5802 §5), stored by compare-and-swap (a concurrent ``kittiwake user passwd`` wins), never
after a wrong password, never failing the login."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher, Type, extract_parameters

from kittiwake.auth.hashing import (
    SCRAM_ITERATIONS,
    Credentials,
    make_credentials,
    needs_upgrade,
    scram_keys,
    upgraded_credentials,
    verify_password,
)
from kittiwake.auth.limiter import FailureLimiter, LimiterSettings
from kittiwake.auth.sqlite import SQLiteUserStore, UserDatabase
from kittiwake.smtpd.auth import AUTH_FAILED, Authenticated, UserAuthenticator
from tests.support.scram import ScramClient

IP = "192.0.2.20"
PASSWORD = "s3cret pässword"  # non-ASCII: SASLprep'd the same way on every path
WEAK_ARGON2 = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1, type=Type.ID)
CURRENT = make_credentials(PASSWORD)


def weak_credentials(password: str = PASSWORD, iterations: int = 4096) -> Credentials:
    """What an older Kittiwake stored: cheaper argon2id, fewer SCRAM iterations."""
    return Credentials(WEAK_ARGON2.hash(password), scram_keys(password, os.urandom(16), iterations))


WEAK = weak_credentials()


def stored(path: Path, name: str = "alice") -> Credentials:
    with UserDatabase(path) as db:
        user = db.get(name)
    assert user is not None
    return user.credentials


def is_current(creds: Credentials) -> bool:
    params = extract_parameters(creds.password_hash)
    return (
        params == extract_parameters(CURRENT.password_hash)
        and creds.scram.iterations == SCRAM_ITERATIONS
    )


# ---------------------------------------------------------------------- hashing


def test_needs_upgrade() -> None:
    assert needs_upgrade(WEAK)
    assert not needs_upgrade(CURRENT)
    assert needs_upgrade(Credentials(CURRENT.password_hash, WEAK.scram))  # SCRAM only
    assert needs_upgrade(Credentials(WEAK.password_hash, CURRENT.scram))  # argon2 only
    assert not needs_upgrade(CURRENT, iterations=4096)  # never lowers the count
    assert not needs_upgrade(Credentials("not a hash", CURRENT.scram))  # cannot verify anyway


def test_upgraded_credentials() -> None:
    assert upgraded_credentials(CURRENT, PASSWORD) is None
    new = upgraded_credentials(WEAK, PASSWORD)
    assert new is not None and is_current(new) and not needs_upgrade(new)
    assert verify_password(new.password_hash, PASSWORD)
    s = new.scram
    assert s.salt != WEAK.scram.salt and scram_keys(PASSWORD, s.salt, s.iterations) == s
    # Only the outdated half is remade.
    scram_only = upgraded_credentials(Credentials(CURRENT.password_hash, WEAK.scram), PASSWORD)
    assert scram_only is not None and scram_only.password_hash == CURRENT.password_hash
    argon_only = upgraded_credentials(Credentials(WEAK.password_hash, CURRENT.scram), PASSWORD)
    assert argon_only is not None and argon_only.scram == CURRENT.scram
    assert is_current(argon_only)
    # A stored count above today's stays (RFC 5802 §5 allows changing it, not weakening).
    strong = Credentials(WEAK.password_hash, scram_keys(PASSWORD, b"s" * 16, 20_000))
    kept = upgraded_credentials(strong, PASSWORD)
    assert kept is not None and kept.scram == strong.scram


# ---------------------------------------------------------------------- store CAS


def test_replace_credentials_is_compare_and_swap(tmp_path: Path) -> None:
    with UserDatabase(tmp_path / "users.db") as db:
        db.add_user("alice", WEAK, [])
        new = make_credentials(PASSWORD)
        other = make_credentials("changed by passwd")
        db.set_credentials("alice", other)  # what `kittiwake user passwd` does
        assert not db.replace_credentials("alice", WEAK, new)  # stale: not overwritten
        user = db.get("alice")
        assert user is not None and user.credentials == other
        assert db.replace_credentials("Alice", other, new)
        user = db.get("alice")
        assert user is not None and user.credentials == new
        assert not db.replace_credentials("nobody", new, other)


# ---------------------------------------------------------------------- through AUTH


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteUserStore]:
    with UserDatabase(tmp_path / "users.db") as db:
        db.add_user("alice", WEAK, ["alice@example.test"])
        db.add_user("bob", weak_credentials("bob-pw"), [])
    s = SQLiteUserStore(tmp_path / "users.db", poll_interval=3600)  # refreshed by hand
    await s.start()
    yield s
    await s.close()


def authenticator(store: SQLiteUserStore) -> UserAuthenticator:
    settings = LimiterSettings(max_per_ip=100, max_per_user=100, window=60, lockout=30)
    return UserAuthenticator(store, FailureLimiter(settings))


async def plain(a: UserAuthenticator, user: str, password: str) -> object:
    return await a.begin("PLAIN", IP).start(f"\0{user}\0{password}".encode())


async def scram_login(a: UserAuthenticator, user: str, password: str) -> object:
    client = ScramClient(user, password)
    ex = a.begin("SCRAM-SHA-256", IP)
    first = await ex.start(client.first())
    assert isinstance(first, bytes)
    final = await ex.step(client.final(first))
    if not isinstance(final, bytes):
        return final
    client.check_final(final)
    return await ex.step(b"")


def upgrade_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "credentials upgraded" in r.getMessage()]


async def test_wrong_password_changes_nothing(store: SQLiteUserStore, tmp_path: Path) -> None:
    a = authenticator(store)
    assert await plain(a, "alice", "wrong") == AUTH_FAILED
    assert await plain(a, "alice", PASSWORD + " ") == AUTH_FAILED
    assert stored(tmp_path / "users.db") == WEAK
    user = store.get("alice")
    assert user is not None and user.credentials == WEAK


async def test_correct_plain_login_upgrades(
    store: SQLiteUserStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kittiwake.smtpd")
    a = authenticator(store)
    assert await plain(a, "Alice", PASSWORD) == Authenticated("alice")
    new = stored(tmp_path / "users.db")
    assert is_current(new) and verify_password(new.password_hash, PASSWORD)
    user = store.get("alice")  # the snapshot shows it at once (no reload needed)
    assert user is not None and user.credentials == new
    assert user.addresses == ("alice@example.test",)
    lines = upgrade_lines(caplog)
    assert len(lines) == 1, lines
    assert "alice" in lines[0] and "m=8192,t=1,p=1" in lines[0] and "i=10000" in lines[0]
    assert PASSWORD not in caplog.text
    # Again: still fine, nothing more to upgrade; SCRAM works with the new keys.
    assert await plain(a, "alice", PASSWORD) == Authenticated("alice")
    assert await scram_login(a, "alice", PASSWORD) == Authenticated("alice")
    assert stored(tmp_path / "users.db") == new and len(upgrade_lines(caplog)) == 1
    assert await store.refresh() is False  # our own write is not "another connection"
    assert stored(tmp_path / "users.db", "bob") != new  # bob untouched


async def test_login_mechanism_upgrades_too(store: SQLiteUserStore, tmp_path: Path) -> None:
    a = authenticator(store)
    ex = a.begin("LOGIN", IP)
    assert await ex.start(b"bob") == b"Password:"
    assert await ex.step(b"bob-pw") == Authenticated("bob")
    assert is_current(stored(tmp_path / "users.db", "bob"))


async def test_scram_login_does_not_upgrade(store: SQLiteUserStore, tmp_path: Path) -> None:
    a = authenticator(store)  # SCRAM never sees the password: nothing to hash
    assert await scram_login(a, "alice", PASSWORD) == Authenticated("alice")
    assert stored(tmp_path / "users.db") == WEAK


async def test_passwd_in_between_is_not_overwritten(
    store: SQLiteUserStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kittiwake.smtpd")
    changed = make_credentials("the new password")
    with UserDatabase(tmp_path / "users.db") as cli:  # `kittiwake user passwd alice`
        cli.set_credentials("alice", changed)
    a = authenticator(store)  # the snapshot is still the old one: the old password passes
    assert await plain(a, "alice", PASSWORD) == Authenticated("alice")
    assert stored(tmp_path / "users.db") == changed  # the CAS refused the stale upgrade
    assert "changed meanwhile" in caplog.text and not upgrade_lines(caplog)
    assert await store.refresh()
    assert await plain(a, "alice", PASSWORD) == AUTH_FAILED
    assert await plain(a, "alice", "the new password") == Authenticated("alice")


async def test_a_failed_update_does_not_fail_the_login(
    store: SQLiteUserStore,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken(name: str, verified: Credentials, new: Credentials) -> bool:
        raise OSError("disk full")

    monkeypatch.setattr(store, "update_credentials", broken)
    a = authenticator(store)
    assert await plain(a, "alice", PASSWORD) == Authenticated("alice")
    assert "cannot upgrade" in caplog.text and "disk full" in caplog.text
    assert stored(tmp_path / "users.db") == WEAK


async def test_closed_store_writes_nothing(store: SQLiteUserStore, tmp_path: Path) -> None:
    new = upgraded_credentials(WEAK, PASSWORD)
    assert new is not None
    await store.close()
    assert not await store.update_credentials("alice", WEAK, new)
    assert stored(tmp_path / "users.db") == WEAK
