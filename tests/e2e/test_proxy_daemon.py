"""PROXY protocol v1/v2 through the real daemon: the proxied client address is the one the
``Received:`` header, the log and relay control (``relay.mynetworks``) use; headers from
untrusted sources, and connections without one, are refused before any greeting; the
implicit-TLS listener takes the header before the TLS handshake."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.support import proxyproto as pp
from tests.support.mta import Addresses, SinkHost, common_port, wait_until
from tests.support.server import KittiwakeServer, MakeServer
from tests.support.sinks import Sink
from tests.support.smtpclient import RawSMTP, message


def _mail(c: RawSMTP, rcpt: str, subject: str) -> None:
    c.ehlo("client.test")
    reply = c.send_mail("sender@example.test", [rcpt], message(subject))
    reply.check(250, "2.0.0")
    c.cmd("QUIT").check(221)


def _log_has(server: KittiwakeServer, pattern: str, timeout: float = 5.0) -> str:
    found = wait_until(
        lambda: re.search(pattern, server.log_text()), timeout, f"log line {pattern!r}"
    )
    assert found is not None
    return found[0]


@pytest.mark.parametrize(
    ("header", "client", "literal"),
    [
        (pp.v1("192.0.2.77", sport=41000), "[192.0.2.77]:41000", "[192.0.2.77]"),
        (pp.v2("192.0.2.78", sport=41001), "[192.0.2.78]:41001", "[192.0.2.78]"),
        (pp.v2("2001:db8::78", "::1", 41002), "[2001:db8::78]:41002", "[IPv6:2001:db8::78]"),
        (pp.v1("2001:db8::79", "::1", 41003), "[2001:db8::79]:41003", "[IPv6:2001:db8::79]"),
    ],
)
def test_the_proxied_client_is_in_the_trace_header_and_the_log(
    make_server: MakeServer,
    monkeypatch: pytest.MonkeyPatch,
    header: bytes,
    client: str,
    literal: str,
) -> None:
    server = pp.start_proxied(make_server, monkeypatch)
    rcpt = f"p{uuid.uuid4().hex[:10]}@example.test"
    with pp.proxied(server.mx, header) as c:
        c.read_reply().check(220)
        _mail(c, rcpt, "proxied")
    (got,) = server.wait_for_mail(rcpt)
    head = got.decode().replace("\r\n", "\n").split("\n\n")[0]  # Maildir keeps LF
    assert f"\nReceived: from client.test ({literal})\n" in head, head
    assert "127.0.0.1" not in head
    _log_has(server, rf"connect from {re.escape(client)} on mx")
    _log_has(server, rf"client=\[{re.escape(client.rpartition(':')[0][1:-1])}\]")


@pytest.fixture
def relay_sink() -> Iterator[Sink]:
    port = common_port()
    sinks = SinkHost()
    try:
        yield sinks.start(Addresses(port).next(), port)
    finally:
        sinks.close()


def test_mynetworks_is_judged_on_the_proxied_address(
    make_server: MakeServer, monkeypatch: pytest.MonkeyPatch, relay_sink: Sink
) -> None:
    """Only 192.0.2.0/24 may relay; the proxy itself (127.0.0.1) is not in mynetworks."""
    server = pp.start_proxied(
        make_server,
        monkeypatch,
        {
            "relay": {
                "mynetworks": ["192.0.2.0/24"],
                "smarthost": f"[{relay_sink.host}]:{relay_sink.port}",
                "tls_policy": "none",
            }
        },
    )
    inside = pp.v1("192.0.2.5", sport=40100)
    subject = f"relay-{uuid.uuid4().hex[:8]}"
    with pp.proxied(server.mx, inside) as c:
        c.read_reply().check(220)
        _mail(c, "friend@elsewhere.test", subject)
    got = wait_until(lambda: relay_sink.messages, 10, "nothing relayed to the sink")
    assert got[0].recipients == ["friend@elsewhere.test"]
    assert b"Received: from client.test ([192.0.2.5])" in got[0].content
    assert subject.encode() in got[0].content

    for header in (pp.v2("198.51.100.5"), pp.v2_local(), pp.v1_unknown()):
        with pp.proxied(server.mx, header) as c:  # outside, or the proxy's own address
            c.read_reply().check(220)
            c.ehlo()
            c.cmd("MAIL FROM:<sender@example.test>").check(250)
            c.cmd("RCPT TO:<friend@elsewhere.test>").check(554, "5.7.1")
            c.cmd("RCPT TO:<someone@example.test>").check(250)  # local mail is fine
            c.cmd("QUIT")
    assert len(relay_sink.messages) == 1


def test_a_header_from_an_untrusted_source_is_refused(
    make_server: MakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = pp.start_proxied(make_server, monkeypatch)
    with pp.proxied(server.mx, pp.v1("192.0.2.9"), source_ip="127.0.0.2") as c:
        assert c.expect_closed() == b""  # no greeting, nothing at all
    _log_has(server, r"refused connection from \[127\.0\.0\.2\]:\d+: not in proxy\.trusted")
    # and a direct SMTP client from there fares no better
    with RawSMTP(server.mx, read_greeting=False, source_ip="127.0.0.3") as c:
        assert c.expect_closed() == b""


def test_no_header_on_a_proxy_listener_is_refused(
    make_server: MakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = pp.start_proxied(make_server, monkeypatch)
    with pp.proxied(server.mx, b"EHLO client.test\r\n") as c:  # an SMTP client talking first
        assert c.expect_closed() == b""
    _log_has(server, r"refused connection from \[127\.0\.0\.1\]:\d+: not a PROXY protocol header")
    with RawSMTP(server.mx, read_greeting=False) as c:  # silent: waits for our greeting
        started = time.monotonic()
        assert c.expect_closed(timeout=5) == b""
        assert 0.8 < time.monotonic() - started < 4  # proxy.timeout = 1
    _log_has(server, r"no PROXY header within 1s")


def test_proxy_before_implicit_tls(
    make_server: MakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On smtps the header comes first, then the TLS handshake (the LB does not terminate
    TLS); listeners without [proxy] on the same daemon still take direct clients."""
    server = pp.start_proxied(make_server, monkeypatch, roles=("smtps",))
    with pp.proxied(server.smtps, pp.v2("203.0.113.5", sport=46500, dport=465)) as c:
        c.tls_handshake()
        c.read_reply().check(220)
        assert c.tls_version in ("TLSv1.2", "TLSv1.3")
        c.ehlo()
        c.cmd("QUIT").check(221)
    _log_has(server, r"connect from \[203\.0\.113\.5\]:46500 on smtps")
    with pytest.raises(OSError):  # a ClientHello where the header belongs: reset
        RawSMTP(server.smtps, implicit_tls=True, read_greeting=False).read_reply()
    with RawSMTP(server.mx) as c:  # mx is not behind the proxy
        assert c.greeting is not None and c.greeting.code == 220
        c.cmd("QUIT")
