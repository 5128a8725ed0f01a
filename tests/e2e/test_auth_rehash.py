"""A stored password hash with older argon2 parameters (and SCRAM keys with fewer
iterations) is upgraded by the daemon after a PLAIN login over STARTTLS: the new hash has
today's parameters, the login still works, SCRAM too (RFC 5802 §5). The weak credentials
are written straight into ``users.db``, as an older Kittiwake would have left them."""

from __future__ import annotations

import os
import smtplib
from collections.abc import Iterator

import pytest
from argon2 import PasswordHasher, Type, extract_parameters

from kittiwake.auth.hashing import (
    SCRAM_ITERATIONS,
    Credentials,
    make_credentials,
    needs_upgrade,
    scram_keys,
    verify_password,
)
from kittiwake.auth.sqlite import UserDatabase
from tests.e2e.conftest import _remember
from tests.support.auth import add_user, write_config
from tests.support.scram import ScramClient, smtplib_authobject
from tests.support.server import KittiwakeServer
from tests.support.smtpclient import client_tls_context

USER, PASSWORD = "carol", "old hash, same password"  # ASCII: smtplib encodes PLAIN so
WEAK = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1, type=Type.ID)


def users_db(server: KittiwakeServer) -> UserDatabase:
    return UserDatabase(server.data_dir / "users.db")


def stored(server: KittiwakeServer) -> Credentials:
    with users_db(server) as db:
        user = db.get(USER)
    assert user is not None
    return user.credentials


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KittiwakeServer]:
    server = KittiwakeServer(tmp_path_factory.mktemp("auth-rehash"))
    write_config(server)
    add_user(server, USER, PASSWORD, "carol@example.test")  # the real CLI, today's hash
    weak = Credentials(WEAK.hash(PASSWORD), scram_keys(PASSWORD, os.urandom(16), 4096))
    with users_db(server) as db:  # ...then made old, as `user passwd` would have stored it
        db.set_credentials(USER, weak)
    assert stored(server) == weak and needs_upgrade(weak)
    try:
        server.start()
        yield server
    finally:
        server.stop_or_kill()


@pytest.fixture
def server(daemon: KittiwakeServer, request: pytest.FixtureRequest) -> KittiwakeServer:
    _remember(request, daemon)
    return daemon


def login_plain(server: KittiwakeServer, password: str) -> int:
    with smtplib.SMTP(*server.submission, local_hostname="client.test", timeout=10) as s:
        s.starttls(context=client_tls_context())
        s.ehlo()
        s.user, s.password = USER, password
        try:
            code, _ = s.auth("PLAIN", s.auth_plain)
        except smtplib.SMTPAuthenticationError as exc:
            code = exc.smtp_code
        return code


def test_plain_login_upgrades_the_stored_hash(server: KittiwakeServer) -> None:
    before = stored(server)
    assert login_plain(server, "wrong password") == 535
    assert stored(server) == before  # no upgrade without the right password

    assert login_plain(server, PASSWORD) == 235
    after = stored(server)  # written before the 235: no waiting
    today = extract_parameters(make_credentials("x").password_hash)
    assert extract_parameters(after.password_hash) == today
    assert after.scram.iterations == SCRAM_ITERATIONS and not needs_upgrade(after)
    assert verify_password(after.password_hash, PASSWORD)
    assert scram_keys(PASSWORD, after.scram.salt, after.scram.iterations) == after.scram

    assert login_plain(server, PASSWORD) == 235  # the second login, on the new hash
    assert stored(server) == after
    with smtplib.SMTP_SSL(
        *server.smtps, local_hostname="client.test", context=client_tls_context(), timeout=10
    ) as s:
        s.ehlo()
        client = ScramClient(USER, PASSWORD)  # the refreshed SCRAM keys work too
        assert s.auth("SCRAM-SHA-256", smtplib_authobject(client))[0] == 235
    log = server.log_text()
    assert log.count(f"user {USER}: credentials upgraded") == 1, log
    assert PASSWORD not in log
