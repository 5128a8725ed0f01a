"""Password hashing (argon2id + SCRAM keys), SASLprep, names and addresses, and the SQLite
user store: CRUD through ``UserDatabase``, the server's snapshot following another
connection's writes."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from kittiwake.auth.hashing import (
    Credentials,
    make_credentials,
    scram_keys,
    verify_password,
)
from kittiwake.auth.saslprep import SaslPrepError, saslprep
from kittiwake.auth.sqlite import SQLiteUserStore, UserDatabase
from kittiwake.auth.store import (
    AddressTaken,
    NoSuchUser,
    UserExists,
    normalize_address,
    normalize_name,
)

# One hash for the whole module: argon2 is slow on purpose.
CREDS = make_credentials("correct horse")


def test_argon2_round_trip() -> None:
    assert CREDS.password_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert verify_password(CREDS.password_hash, "correct horse")
    assert not verify_password(CREDS.password_hash, "correct horse ")
    assert not verify_password(CREDS.password_hash, "")
    assert not verify_password("not a hash", "correct horse")
    assert "correct" not in repr(CREDS)


def test_scram_keys_derived_from_the_same_password() -> None:
    s = CREDS.scram
    assert s.iterations >= 4096 and len(s.salt) == 16
    assert scram_keys("correct horse", s.salt, s.iterations) == s
    assert scram_keys("wrong", s.salt, s.iterations) != s


def test_password_is_saslprepped_both_ways() -> None:
    creds = make_credentials("I\u00adX")  # RFC 4013 §3: soft hyphen mapped to nothing
    assert verify_password(creds.password_hash, "IX")
    assert creds.scram == scram_keys("IX", creds.scram.salt, creds.scram.iterations)


@pytest.mark.parametrize("bad", ["", "a\x07b", "x" * 1025])
def test_unusable_passwords(bad: str) -> None:
    with pytest.raises(ValueError):
        make_credentials(bad)


@pytest.mark.parametrize(
    ("given", "prepared"),
    [  # RFC 4013 §3 examples
        ("I\u00adX", "IX"),
        ("user", "user"),
        ("USER", "USER"),
        ("\u00aa", "a"),
        ("\u2168", "IX"),
        ("a\u00a0b", "a b"),  # non-ASCII space → SPACE
    ],
)
def test_saslprep_examples(given: str, prepared: str) -> None:
    assert saslprep(given) == prepared


@pytest.mark.parametrize("bad", ["\u0007", "\u0627\u0031", "a\u200eb", "\ufffe"])
def test_saslprep_prohibited(bad: str) -> None:
    with pytest.raises(SaslPrepError):
        saslprep(bad)


def test_normal_forms() -> None:
    assert normalize_name(" Alice ") == "alice"
    assert normalize_name("Bob@Example.ORG") == "bob@example.org"
    for bad in ("", "a b", "a\tb", "x" * 256):
        with pytest.raises(ValueError):
            normalize_name(bad)
    assert normalize_address("Alice@Example.ORG.") == "alice@example.org"
    assert normalize_address('"bob"@x.test') == "bob@x.test"
    assert normalize_address("a@bücher.example") == "a@xn--bcher-kva.example"
    assert normalize_address("a@[192.0.2.1]") == "a@[192.0.2.1]"
    for bad in ("alice", "@x.test", "a@", "a@bad..domain", "a b@x.test"):
        with pytest.raises(ValueError):
            normalize_address(bad)


def db(tmp_path: Path) -> UserDatabase:
    return UserDatabase(tmp_path / "data" / "users.db").open()


def test_database_crud(tmp_path: Path) -> None:
    d = db(tmp_path)
    alice = d.add_user("Alice", CREDS, ["Alice@Example.test", "a.smith@example.test"])
    assert alice.name == "alice"
    assert alice.addresses == ("a.smith@example.test", "alice@example.test")
    assert alice.created > 0 and not alice.disabled
    with pytest.raises(UserExists):
        d.add_user("ALICE", CREDS, [])
    with pytest.raises(AddressTaken):
        d.add_user("bob", CREDS, ["alice@example.test"])
    assert d.get("bob") is None  # the failed add left nothing behind
    d.add_user("bob", CREDS, [])
    d.add_address("bob", "bob@example.test")
    with pytest.raises(AddressTaken):
        d.add_address("bob", "ALICE@example.test")
    with pytest.raises(NoSuchUser):
        d.add_address("carol", "carol@example.test")
    with pytest.raises(NoSuchUser):
        d.remove_address("bob", "alice@example.test")
    d.set_disabled("bob", True)
    other = make_credentials("new password")
    d.set_credentials("bob", other)
    bob = d.get("bob")
    assert bob is not None and bob.disabled and bob.credentials == other
    assert [u.name for u in d.users()] == ["alice", "bob"]
    d.delete_user("alice")
    with pytest.raises(NoSuchUser):
        d.delete_user("alice")
    d.add_address("bob", "alice@example.test")  # released by the delete (cascade)
    d.remove_address("bob", "bob@example.test")
    bob = d.get("bob")
    assert bob is not None and bob.addresses == ("alice@example.test",)
    d.close()


def test_file_mode_0600(tmp_path: Path) -> None:
    d = db(tmp_path)
    d.close()
    mode = (tmp_path / "data" / "users.db").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600


def test_reopen_keeps_everything(tmp_path: Path) -> None:
    d = db(tmp_path)
    d.add_user("alice", CREDS, ["alice@example.test"])
    salt_key = d.load().salt_key
    d.close()
    again = db(tmp_path)
    snapshot = again.load()
    assert snapshot.salt_key == salt_key and len(salt_key) == 32
    assert snapshot.owners == {"alice@example.test": "alice"}
    assert snapshot.users["alice"].credentials == CREDS


async def test_server_snapshot_follows_cli_writes(tmp_path: Path) -> None:
    path = tmp_path / "data" / "users.db"
    store = SQLiteUserStore(path, poll_interval=3600)  # refresh by hand here
    await store.start()
    try:
        assert not store.has_users() and not store.exists("alice@example.test")
        assert not await store.refresh()  # nothing changed
        cli = UserDatabase(path).open()
        cli.add_user("alice", CREDS, ["alice@example.test"])
        assert not store.has_users()  # the snapshot is not reread on the hot path...
        assert await store.refresh()  # ...but by the follower
        assert store.has_users()
        assert store.owner_of("ALICE@Example.Test") == "alice"
        assert store.exists("alice@example.test")
        assert not store.exists("bob@example.test")
        assert store.addresses_of("Alice") == ("alice@example.test",)
        found = store.get("ALICE")
        assert found is not None and found.credentials == CREDS
        assert store.get("a b") is None and store.owner_of("junk") is None
        cli.delete_user("alice")
        cli.close()
        assert await store.refresh()
        assert not store.has_users() and store.owner_of("alice@example.test") is None
        assert store.fake_salt("x") == store.fake_salt("x") != store.fake_salt("y")
    finally:
        await store.close()


async def test_follower_task_reloads_by_itself(tmp_path: Path) -> None:
    import asyncio

    path = tmp_path / "users.db"
    store = SQLiteUserStore(path, poll_interval=0.05)
    await store.start()
    try:
        with UserDatabase(path) as cli:
            cli.add_user("alice", Credentials(CREDS.password_hash, CREDS.scram), [])
        for _ in range(100):
            if store.has_users():
                break
            await asyncio.sleep(0.02)
        assert store.has_users()
    finally:
        await store.close()
