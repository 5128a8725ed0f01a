"""Rate limits through the real daemon: connections per client address per minute (421 4.7.0
before the greeting, counted per address — and per proxied address behind a PROXY load
balancer), exemptions, and messages per authenticated user per hour (450 4.7.1)."""

from __future__ import annotations

import re

import pytest

from tests.support import proxyproto as pp
from tests.support.mta import wait_until
from tests.support.server import KittiwakeServer, MakeServer
from tests.support.smtpclient import RawSMTP, SMTPReply, message

TOO_MANY = "4.7.0 Too many connections from your address, try again later"


def _greeting(server: KittiwakeServer, source_ip: str) -> SMTPReply:
    """Connect from ``source_ip``; the first reply, and QUIT after a 220."""
    with RawSMTP(server.mx, source_ip=source_ip, read_greeting=False) as c:
        reply = c.read_reply()
        if reply.code == 220:
            c.cmd("QUIT").check(221)
        else:
            assert c.expect_closed() == b""  # the 421 closes the connection
        return reply


def _log_has(server: KittiwakeServer, pattern: str) -> None:
    wait_until(lambda: re.search(pattern, server.log_text()), 5, f"log line {pattern!r}")


def test_connections_per_ip_per_minute(make_server: MakeServer) -> None:
    server = make_server({"ratelimit": {"connections_per_ip_per_minute": 3, "exempt": []}})
    codes = [_greeting(server, "127.0.0.2").code for _ in range(3)]
    assert codes == [220, 220, 220]
    refused = _greeting(server, "127.0.0.2")
    assert (refused.code, refused.text) == (421, TOO_MANY)
    assert _greeting(server, "127.0.0.3").code == 220  # another address: its own count
    assert _greeting(server, "127.0.0.2").code == 421  # refusals are not "used up" time
    _log_has(
        server,
        r"refused connection from \[127\.0\.0\.2\]: 421 4\.7\.0 Too many connections from "
        r"your address, try again later \(over ratelimit\.connections_per_ip_per_minute = 3;"
        r" retry in \d+s\)",
    )


def test_mynetworks_and_loopback_are_exempt_by_default(make_server: MakeServer) -> None:
    server = make_server({"ratelimit": {"connections_per_ip_per_minute": 1}})
    assert [_greeting(server, "127.0.0.4").code for _ in range(4)] == [220] * 4


def test_connection_rate_counts_the_proxied_client(
    make_server: MakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Behind a load balancer every connection comes from the LB's address: the limit must
    apply to the address in the PROXY header, not to the LB."""
    server = pp.start_proxied(
        make_server,
        monkeypatch,
        {"ratelimit": {"connections_per_ip_per_minute": 2, "exempt": []}},
    )

    def first_reply(client: str) -> int:
        with pp.proxied(server.mx, pp.v2(client)) as c:
            reply = c.read_reply()
            if reply.code == 220:
                c.cmd("QUIT")
            return reply.code

    assert [first_reply("192.0.2.1") for _ in range(3)] == [220, 220, 421]
    assert [first_reply("192.0.2.2") for _ in range(2)] == [220, 220]
    _log_has(server, r"refused connection from \[192\.0\.2\.1\]: 421 4\.7\.0")


def test_messages_per_user_per_hour(make_server: MakeServer) -> None:
    from tests.support.auth import add_user, login_plain, write_config

    server = make_server(
        {"ratelimit": {"messages_per_user_per_hour": 2, "exempt": []}}, start=False
    )
    write_config(server)
    add_user(server, "alice", "alice-password", "alice@example.test")
    add_user(server, "bob", "bob-password", "bob@example.test")  # users exist: no catch-all
    server.start()
    with RawSMTP(server.smtps, implicit_tls=True) as c:
        c.ehlo()
        login_plain(c, "alice", "alice-password").check(235)
        for n in range(2):
            c.send_mail("alice@example.test", ["bob@example.test"], message(f"m{n}"))
        c.cmd("MAIL FROM:<alice@example.test>").check(450, "4.7.1")
        assert c.cmd("NOOP").code == 250  # a 4xx for the message, not the end of the session
    with RawSMTP(server.mx) as c:  # unauthenticated mail is not counted against anyone
        c.ehlo()
        c.send_mail("x@elsewhere.test", ["bob@example.test"], message("mx")).check(250)
    server.wait_for_mail("bob@example.test", 3)
    _log_has(server, r"message rate limit: user alice from \[127\.0\.0\.1\] over 2 messages")
