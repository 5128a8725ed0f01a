"""Brute-force protection through the wire: failed AUTH counted per client and per user,
``454 4.7.0`` during the lockout (even for the right password), and its expiry."""

from __future__ import annotations

import time

import pytest

from tests.support.auth import add_user, login_plain, login_scram, tls_session
from tests.support.auth import write_config as _write_config
from tests.support.server import KittiwakeServer, MakeServer
from tests.support.smtpclient import RawSMTP

LOCKOUT = 2.0


@pytest.fixture
def server(make_server: MakeServer) -> KittiwakeServer:
    srv = make_server(
        {
            "auth": {
                "max_failures_per_ip": 3,
                "max_failures_per_user": 5,
                "failure_window": 60,
                "lockout": LOCKOUT,
            }
        },
        start=False,
    )
    _write_config(srv)
    add_user(srv, "alice", "alice-pw", "alice@example.test")
    add_user(srv, "bob", "bob-pw", "bob@example.test")
    return srv.start()


def test_client_lockout_and_expiry(server: KittiwakeServer) -> None:
    attacker = "127.0.0.31"
    with tls_session(server, source_ip=attacker) as c:
        login_plain(c, "alice", "guess1").check(535, "5.7.8")
        login_plain(c, "bob", "guess2").check(535, "5.7.8")
    with tls_session(server, source_ip=attacker) as c:
        login_scram(c, "alice", "guess3").check(535, "5.7.8")
        # Locked out now: the right password does not help, nor another mechanism.
        login_plain(c, "alice", "alice-pw").check(454, "4.7.0")
        c.cmd("AUTH LOGIN").check(454, "4.7.0")
        c.cmd("NOOP").check(250)
    with tls_session(server, source_ip="127.0.0.32") as c:  # someone else is not affected
        login_plain(c, "alice", "alice-pw").check(235, "2.7.0")
    time.sleep(LOCKOUT + 0.3)
    with tls_session(server, source_ip=attacker) as c:
        login_plain(c, "alice", "alice-pw").check(235, "2.7.0")
    log = server.log_text()
    assert log.count("authentication failed from 127.0.0.31") == 3
    assert "authentication lockout: client 127.0.0.31 after 3 failures" in log
    assert "alice-pw" not in log and "guess1" not in log  # never a password in the log


def test_user_lockout_from_many_clients(server: KittiwakeServer) -> None:
    for i in range(5):  # five clients, two guesses or fewer each: no client lockout
        with tls_session(server, source_ip=f"127.0.0.{40 + i}") as c:
            login_plain(c, "bob", f"guess{i}").check(535, "5.7.8")
    with tls_session(server, source_ip="127.0.0.50") as c:
        login_plain(c, "bob", "bob-pw").check(454, "4.7.0")
        login_scram(c, "BOB", "bob-pw").check(454, "4.7.0")
        login_plain(c, "alice", "alice-pw").check(235, "2.7.0")  # other users are fine
    assert "authentication lockout: user bob after 5 failures" in server.log_text()
    time.sleep(LOCKOUT + 0.3)
    with tls_session(server, source_ip="127.0.0.50") as c:
        login_plain(c, "bob", "bob-pw").check(235, "2.7.0")


def test_success_resets_the_client_count(server: KittiwakeServer) -> None:
    ip = "127.0.0.60"
    for _ in range(2):  # 4 failures from one client (limit 3), a success in between
        with tls_session(server, source_ip=ip) as c:
            login_plain(c, "alice", "wrong").check(535)
            login_plain(c, "alice", "wrong").check(535)
            login_plain(c, "alice", "alice-pw").check(235)
    with RawSMTP(server.smtps, implicit_tls=True, source_ip=ip) as c:
        c.ehlo()
        login_plain(c, "alice", "alice-pw").check(235)
