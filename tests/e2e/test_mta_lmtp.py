"""``[transport]`` to LMTP (RFC 2033) through the daemon: into a second Kittiwake's own LMTP
listener (``listen.lmtp``, the MDA role), and into a real Dovecot LMTP server (the private
instance of ``tests/e2e/test_delivery_lmtp.py``; skipped when Dovecot is not installed).
One reply per recipient after the final dot: refused recipients bounce from the first
instance with the LMTP server's reply."""

from __future__ import annotations

import functools
import socket
import time
from typing import Any

from tests.e2e.test_delivery_lmtp import Dovecot, dovecot  # noqa: F401 (a fixture)
from tests.support.mta import FAST_QUEUE, submit, tag, wait_dsns, wait_until
from tests.support.server import KittiwakeServer, MakeServer, free_port
from tests.support.smtpclient import message


def _upstream(make_server: MakeServer, domain: str, nexthop: str) -> KittiwakeServer:
    """A daemon for local domain up.test that routes ``domain`` to LMTP ``nexthop``."""
    overrides: dict[str, Any] = {
        "local": {"domains": ["up.test"], "postmaster": "postmaster@up.test"},
        "transport": {domain: f"lmtp:{nexthop}"},
        "queue": dict(FAST_QUEUE),
    }
    return make_server(overrides)


def _lhlo(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        greeting = s.recv(512)
        s.sendall(b"LHLO probe.test\r\nQUIT\r\n")
        time.sleep(0.05)
        return greeting + s.recv(4096)


def test_lmtp_into_a_second_kittiwake(make_server: MakeServer) -> None:
    lmtp_port = free_port()
    downstream = make_server(
        {
            "hostname": "mda.test",
            "listen": {"lmtp": f"127.0.0.1:{lmtp_port}"},
            "local": {
                "domains": ["lmtp.test"],
                "users": ["alice", "bob"],
                "postmaster": "postmaster@lmtp.test",
            },
        }
    )
    reply = wait_until(lambda: _lhlo(lmtp_port), 5, "LMTP listener not up")
    assert reply.startswith(b"220") and b"250" in reply, reply
    upstream = _upstream(make_server, "lmtp.test", f"127.0.0.1:{lmtp_port}")
    sender = f"s-{tag()}@up.test"
    rcpts = ["alice@lmtp.test", "nobody@lmtp.test", "bob@lmtp.test"]
    content = message("over lmtp", ".dot line\r\nbody\r\n")
    submit(upstream, sender, rcpts, content)
    for rcpt in ("alice@lmtp.test", "bob@lmtp.test"):
        (stored,) = downstream.wait_for_mail(rcpt, 1, 10)
        assert stored.startswith(f"Return-Path: <{sender}>".encode())
        assert content.replace(b"\r\n", b"\n") in stored
        assert b"by mx.test" in stored  # the upstream's Received field travelled along
    (dsn,) = wait_dsns(upstream, sender, 1, 5)
    r = dsn.recipient("nobody@lmtp.test")
    assert r["action"] == "failed" and r["status"] == "5.1.1", r
    assert r["diagnostic-code"].startswith("smtp; 550 5.1.1"), r
    assert [x["final-recipient"] for x in dsn.recipients] == ["rfc822; nobody@lmtp.test"]
    time.sleep(0.3)
    assert downstream.exactly("alice@lmtp.test", 1) and downstream.exactly("bob@lmtp.test", 1)


def test_lmtp_into_dovecot(make_server: MakeServer, dovecot: Dovecot) -> None:  # noqa: F811
    upstream = _upstream(make_server, "example.test", f"127.0.0.5:{dovecot.port}")
    sender = f"s-{tag()}@up.test"
    rcpts = ["alice@example.test", "nobody@example.test", "carol@example.test"]
    content = message("to dovecot", "through kittiwake\r\n")
    submit(upstream, sender, rcpts, content)
    for user in ("alice@example.test", "carol@example.test"):
        (stored,) = wait_until(functools.partial(dovecot.maildir, user), 10, f"no {user}")
        assert stored.startswith(f"Return-Path: <{sender}>".encode()), stored[:200]
        assert stored.endswith(content.replace(b"\r\n", b"\n"))
    (dsn,) = wait_dsns(upstream, sender, 1, 5)
    r = dsn.recipient("nobody@example.test")
    assert r["action"] == "failed" and r["status"] == "5.1.1", r
