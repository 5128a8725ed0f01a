"""The session-facing authenticator over a real user store: PLAIN, LOGIN, SCRAM outcomes,
lockouts, the AUTH= value kept with a message; the submission and sender checks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kittiwake.auth.hashing import make_credentials
from kittiwake.auth.limiter import FailureLimiter, LimiterSettings
from kittiwake.auth.ownership import Ownership, base_address
from kittiwake.auth.sqlite import SQLiteUserStore, UserDatabase
from kittiwake.envelope import Reply, SessionInfo
from kittiwake.policy.sender import SenderOwnership
from kittiwake.policy.submission import RequireAuth
from kittiwake.policy.verdict import Action
from kittiwake.smtpd.auth import (
    AUTH_FAILED,
    AUTH_LOCKED,
    AUTH_MALFORMED,
    Authenticated,
    NoUsers,
    UserAuthenticator,
)
from tests.support.scram import ScramClient

IP = "192.0.2.10"
CREDS = make_credentials("s3cret")


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteUserStore]:
    path = tmp_path / "users.db"
    with UserDatabase(path) as db:
        db.add_user("alice", CREDS, ["alice@example.test", "a.smith@example.test"])
        db.add_user("bob", CREDS, ["bob@example.test", "alice+bob@example.test"])
        db.add_user("mallory", CREDS, [])
        db.set_disabled("mallory", True)
    s = SQLiteUserStore(path, poll_interval=3600)
    await s.start()
    yield s
    await s.close()


def auth(
    store: SQLiteUserStore, clock: Clock | None = None, max_per_ip: int = 3
) -> UserAuthenticator:
    settings = LimiterSettings(max_per_ip=max_per_ip, max_per_user=4, window=60, lockout=30)
    return UserAuthenticator(store, FailureLimiter(settings, clock or Clock()))


async def plain(a: UserAuthenticator, user: str, password: str, ip: str = IP) -> object:
    return await a.begin("PLAIN", ip).start(f"\0{user}\0{password}".encode())


async def test_plain(store: SQLiteUserStore) -> None:
    a = auth(store, max_per_ip=100)
    assert await plain(a, "Alice", "s3cret") == Authenticated("alice")
    assert await plain(a, "alice", "wrong") == AUTH_FAILED
    assert await plain(a, "nobody", "s3cret") == AUTH_FAILED
    assert await plain(a, "mallory", "s3cret") == AUTH_FAILED  # disabled
    ex = a.begin("PLAIN", IP)
    assert await ex.start(None) == b""
    assert await ex.step(b"alice\0alice\0s3cret") == Authenticated("alice")
    assert await a.begin("PLAIN", IP).start(b"bob\0alice\0s3cret") == AUTH_FAILED  # proxy
    assert await a.begin("PLAIN", IP).start(b"no nul here") == AUTH_MALFORMED


async def test_login(store: SQLiteUserStore) -> None:
    a = auth(store)
    ex = a.begin("LOGIN", IP)
    assert await ex.start(None) == b"Username:"
    assert await ex.step(b"alice") == b"Password:"
    assert await ex.step(b"s3cret") == Authenticated("alice")
    ex = a.begin("LOGIN", IP)
    assert await ex.start(b"alice") == b"Password:"
    assert await ex.step(b"nope") == AUTH_FAILED


async def test_scram(store: SQLiteUserStore) -> None:
    a = auth(store)
    client = ScramClient("alice", "s3cret")
    ex = a.begin("SCRAM-SHA-256", IP)
    first = await ex.start(client.first())
    assert isinstance(first, bytes)
    final = await ex.step(client.final(first))
    assert isinstance(final, bytes)
    client.check_final(final)
    assert await ex.step(b"") == Authenticated("alice")
    bad = ScramClient("alice", "wrong")
    ex = a.begin("SCRAM-SHA-256", IP)
    first = await ex.start(bad.first())
    assert isinstance(first, bytes)
    assert await ex.step(bad.final(first)) == AUTH_FAILED


async def test_ip_lockout_and_expiry(store: SQLiteUserStore) -> None:
    clock = Clock()
    a = auth(store, clock)
    for _ in range(3):
        assert await plain(a, "alice", "wrong") == AUTH_FAILED
    # Locked: even the right password gets 454, and the exchange does not even start.
    assert await plain(a, "alice", "s3cret") == AUTH_LOCKED
    assert await a.begin("LOGIN", IP).start(None) == AUTH_LOCKED
    assert await plain(a, "alice", "s3cret", ip="192.0.2.99") == Authenticated("alice")
    clock.now += 31
    assert await plain(a, "alice", "s3cret") == Authenticated("alice")


async def test_user_lockout(store: SQLiteUserStore) -> None:
    clock = Clock()
    a = auth(store, clock)
    for i in range(4):
        assert await plain(a, "bob", "wrong", ip=f"198.51.100.{i}") == AUTH_FAILED
    assert await plain(a, "bob", "s3cret", ip="203.0.113.1") == AUTH_LOCKED
    ex = a.begin("LOGIN", "203.0.113.1")
    await ex.start(None)
    assert await ex.step(b"bob") == AUTH_LOCKED  # before the password is asked for
    client = ScramClient("bob", "s3cret")
    assert await a.begin("SCRAM-SHA-256", "203.0.113.1").start(client.first()) == AUTH_LOCKED
    assert await plain(a, "alice", "s3cret", ip="203.0.113.1") == Authenticated("alice")
    clock.now += 31
    assert await plain(a, "bob", "s3cret", ip="203.0.113.1") == Authenticated("bob")


async def test_no_users() -> None:
    a = NoUsers()
    assert await plain(a, "alice", "s3cret") == AUTH_FAILED
    client = ScramClient("alice", "s3cret")
    ex = a.begin("SCRAM-SHA-256", IP)
    first = await ex.start(client.first())
    assert isinstance(first, bytes)
    assert await ex.step(client.final(first)) == AUTH_FAILED


async def test_submitter_rfc4954_section5(store: SQLiteUserStore) -> None:
    a = auth(store)
    # Not authenticated: never trusted.
    assert a.submitter(None, None, "x@y.test") is None
    assert a.submitter(None, "alice@example.test", "x@y.test") == "<>"
    # Authenticated: AUTH=<> kept; an owned identity kept; someone else's → <>.
    assert a.submitter("alice", "<>", "alice@example.test") == "<>"
    assert a.submitter("alice", "a.smith@example.test", "") == "a.smith@example.test"
    assert a.submitter("alice", "bob@example.test", "alice@example.test") == "<>"
    # No AUTH=: generated from the (owned) sender.
    assert a.submitter("alice", None, "alice+x@example.test") == "alice+x@example.test"
    assert a.submitter("alice", None, "") == "<>"


async def test_ownership(store: SQLiteUserStore) -> None:
    own = Ownership(store, delimiter="+-")
    assert own.owns("alice", "ALICE@Example.Test")
    assert own.owns("alice", "alice+lists@example.test")
    assert own.owns("alice", "a.smith-work@example.test")
    assert not own.owns("alice", "bob@example.test")
    # alice+bob@ is owned as such by bob: never alice's sub-address.
    assert own.owns("bob", "alice+bob@example.test")
    assert not own.owns("alice", "alice+bob@example.test")
    assert not own.owns("alice", "+alice@example.test")
    assert not own.owns("alice", "not an address")
    assert not Ownership(store, delimiter="").owns("alice", "alice+x@example.test")
    assert Ownership(store, strict=False).owns("alice", "bob@example.test")
    assert base_address("a+b+c@x", "+") == "a@x"
    assert base_address("a@x", "+") is None


def session(user: str | None) -> SessionInfo:
    return SessionInfo(IP, 1, "127.0.0.1", 587, auth_user=user, listener="submission")


async def test_require_auth() -> None:
    check = RequireAuth()
    refused = await check.mail(session(None), "alice@example.test")
    assert refused.action is Action.REJECT
    assert refused.reply == Reply(530, "5.7.0", "Authentication required")
    assert (await check.mail(session("alice"), "")).action is Action.CONTINUE


async def test_sender_ownership(store: SQLiteUserStore) -> None:
    check = SenderOwnership(Ownership(store))
    for sender in ("alice@example.test", "alice+tag@example.test", ""):
        assert (await check.mail(session("alice"), sender)).action is Action.CONTINUE
    v = await check.mail(session("alice"), "bob@example.test")
    assert v.action is Action.REJECT
    assert v.reply == Reply(553, "5.7.1", "Sender address rejected: not owned by user alice")
    assert (await check.mail(session(None), "bob@example.test")).action is Action.CONTINUE
    relaxed = SenderOwnership(Ownership(store, strict=False))
    assert (await relaxed.mail(session("alice"), "bob@x.test")).action is Action.CONTINUE
