"""Routing by configuration through the daemon: the ``[transport]`` table (``smtp:[host]:port``,
``smtp:domain`` with MX lookup, ``.domain`` for subdomains, ``discard``, ``error:``) and the
smart host (``relay.smarthost`` with AUTH, which must only happen inside TLS) for the rest.
Postfix transport(5) order: table first, then local domains, then the smart host."""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from kittiwake.net.tls import ensure_self_signed, server_context
from tests.support.dns import TestDNS
from tests.support.mta import (
    Addresses,
    SinkHost,
    common_port,
    queue_list,
    relay_overrides,
    submit,
    tag,
    wait_until,
)
from tests.support.server import KittiwakeServer
from tests.support.sinks import Script, Sink
from tests.support.smtpclient import RawSMTP, message

USER, PASSWORD = "kittiwake", "s3cret pass"


@dataclass
class Routed:
    server: KittiwakeServer
    dns: TestDNS
    smarthost: Sink
    literal: Sink  # "literal.test" = "smtp:[ip]:port"
    subdomains: Sink  # ".sub.test" = "smtp:[ip]:port"
    via_mx: Sink  # "alias.test" = "smtp:target.test" → target.test's MX


@pytest.fixture(scope="module")
def routed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Routed]:
    root = tmp_path_factory.mktemp("mta-transport")
    cert, key = ensure_self_signed(root / "sink-tls", "smarthost.test")
    tls: ssl.SSLContext = server_context(cert, key)
    port = common_port()
    ips = Addresses(port)
    sinks = SinkHost()
    with TestDNS() as dns:
        try:
            smart = sinks.start(ips.next(), port, Script(tls=tls, auth=(USER, PASSWORD)))
            literal, sub, via_mx = (sinks.start(ips.next(), port) for _ in range(3))
            dns.add(f"target.test. IN MX 10 mx.target.test.\nmx.target.test. IN A {via_mx.host}\n")
            overrides = relay_overrides(
                dns,
                port,
                relay={
                    "smarthost": f"[{smart.host}]:{port}",
                    "smarthost_username": USER,
                    "smarthost_password": PASSWORD,
                },
            )
            overrides["transport"] = {
                "literal.test": f"smtp:[{literal.host}]:{port}",
                ".sub.test": f"smtp:[{sub.host}]:{port}",
                "alias.test": "smtp:target.test",
                "discard.test": "discard",
                "error.test": "error:5.1.1 this domain is gone",
            }
            server = KittiwakeServer(root / "kittiwake", overrides)
            server.start()
            try:
                yield Routed(server, dns, smart, literal, sub, via_mx)
            finally:
                server.stop()
        finally:
            sinks.close()


def _arrived(sink: Sink, rcpt: str) -> bool:
    return any(rcpt in m.recipients for m in sink.messages)


@pytest.mark.parametrize(
    ("rcpt_domain", "where"),
    [
        ("literal.test", "literal"),
        ("a.sub.test", "subdomains"),
        ("deep.a.sub.test", "subdomains"),
        ("alias.test", "via_mx"),
        ("anywhere-else.test", "smarthost"),
        ("sub.test", "smarthost"),  # ".sub.test" is its subdomains only
    ],
)
def test_route(routed: Routed, rcpt_domain: str, where: str) -> None:
    rcpt = f"u-{tag()}@{rcpt_domain}"
    submit(routed.server, f"s-{tag()}@example.test", [rcpt], message(f"to {rcpt_domain}"))
    target: Sink = getattr(routed, where)
    wait_until(lambda: _arrived(target, rcpt), 5, f"{rcpt} not at {where}")
    others = (routed.smarthost, routed.literal, routed.subdomains, routed.via_mx)
    assert all(not _arrived(s, rcpt) for s in others if s is not target)


def test_smarthost_auth_only_inside_tls(routed: Routed) -> None:
    rcpt = f"u-{tag()}@far-away.test"
    submit(routed.server, f"s-{tag()}@example.test", [rcpt], message("auth"))
    wait_until(lambda: _arrived(routed.smarthost, rcpt), 5, "not at the smart host")
    (got,) = [m for m in routed.smarthost.messages if rcpt in m.recipients]
    assert got.tls
    assert routed.smarthost.auth_attempts and all(
        user == USER and inside_tls for user, inside_tls in routed.smarthost.auth_attempts
    )


def test_discard_and_error_routes(routed: Routed) -> None:
    sender = f"s-{tag()}@example.test"
    with RawSMTP(routed.server.mx) as c:
        c.ehlo()
        c.cmd(f"MAIL FROM:<{sender}>").check(250)
        c.cmd("RCPT TO:<x@error.test>").check(550, "5.1.1")
    qid = submit(routed.server, sender, ["x@discard.test"], message("into the void"))
    wait_until(lambda: all(m["queue_id"] != qid for m in queue_list(routed.server)), 5, "queued")
    time.sleep(0.3)
    assert routed.server.maildir(sender) == []  # discarded silently: no notice
    sinks = (routed.smarthost, routed.literal, routed.subdomains, routed.via_mx)
    assert all(not _arrived(s, "x@discard.test") for s in sinks)


def test_smarthost_ignores_dns(routed: Routed) -> None:
    """A domain with an MX of its own still goes to the smart host."""
    domain = f"has-mx-{tag()}.test"
    routed.dns.add(f"{domain}. IN MX 10 mx.{domain}.\nmx.{domain}. IN A 127.0.0.1\n")
    rcpt = f"u@{domain}"
    submit(routed.server, f"s-{tag()}@example.test", [rcpt], message("smarthost"))
    wait_until(lambda: _arrived(routed.smarthost, rcpt), 5, "not at the smart host")
