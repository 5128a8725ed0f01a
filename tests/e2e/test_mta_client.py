"""The daemon's SMTP client against peers with less (or stranger) capabilities than ours:
a peer's SIZE limit (RFC 1870 §6), SMTPUTF8 to a peer without it (RFC 6531 §3.4), 8-bit
content to a peer without 8BITMIME (RFC 6152 §3), 452 "too many recipients" mid-list
(RFC 5321 §4.5.3.1.10), several addresses for one MX host, and connection reuse."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator

import pytest

from tests.support.mta import (
    Relay,
    delivery_lines,
    queued_message,
    relay_env,
    relay_overrides,
    submit,
    tag,
    wait_dsns,
    wait_until,
)
from tests.support.server import MakeServer
from tests.support.sinks import DEFAULT_EXTENSIONS, Script
from tests.support.smtpclient import message


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    with relay_env(tmp_path_factory.mktemp("mta-client")) as env:
        yield env


def _without(*names: str) -> tuple[str, ...]:
    return tuple(e for e in DEFAULT_EXTENSIONS if e.split()[0] not in names)


def test_peer_size_limit_bounces_without_sending(relay: Relay) -> None:
    domain = f"small-{tag()}.test"
    sink = relay.sink(Script(extensions=(*_without("SIZE"), "SIZE 2000")))
    relay.mx(domain, [(10, sink.host)])
    sender, rcpt = f"s-{tag()}@example.test", f"u@{domain}"
    submit(relay.server, sender, [rcpt], message("big", "x" * 70 + "\r\n") * 60)
    (dsn,) = wait_dsns(relay.server, sender, 1, 5)
    assert dsn.recipient(rcpt)["status"] == "5.3.4"
    assert not any(c.startswith(("MAIL", "DATA", "BDAT")) for c in sink.commands)


def test_smtputf8_to_a_peer_without_it_bounces_567(relay: Relay) -> None:
    domain = f"ascii-{tag()}.test"
    sink = relay.sink(Script(extensions=_without("SMTPUTF8")))
    relay.mx(domain, [(10, sink.host)])
    sender, rcpt = f"s-{tag()}@example.test", f"jürgen@{domain}"
    submit(relay.server, sender, [rcpt], message("utf8"), mail_params="SMTPUTF8")
    (dsn,) = wait_dsns(relay.server, sender, 1, 5)
    r = dsn.recipient(rcpt)
    assert r["action"] == "failed" and r["status"] == "5.6.7", r
    assert "message/global-delivery-status" in dsn.parts  # a UTF-8 address inside (RFC 6533)
    assert not sink.messages


def test_8bit_content_to_a_7bit_peer(relay: Relay) -> None:
    domain = f"sevenbit-{tag()}.test"
    sink = relay.sink(Script(extensions=_without("8BITMIME")))
    relay.mx(domain, [(10, sink.host)])
    sender, rcpt = f"s-{tag()}@example.test", f"u@{domain}"
    body = "Grüße aus Köln\r\n".encode()
    content = message(
        "8bit",
        body,
        headers={
            "MIME-Version": "1.0",
            "Content-Type": "text/plain; charset=utf-8",
            "Content-Transfer-Encoding": "8bit",
        },
    )
    qid = submit(relay.server, sender, [rcpt], content, mail_params="BODY=8BITMIME")
    wait_until(lambda: queued_message(relay.server, qid) is None, 5, "still queued")
    (received,) = sink.messages  # converted to 7-bit MIME (tests/e2e/test_mta_downgrade.py)
    assert received.content.isascii(), received.content[-200:]
    assert received.content.endswith(
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC=C3=9Fe aus K=C3=B6ln\r\n"
    )
    assert "BODY" not in received.mail_params


def test_452_too_many_recipients_continues_in_a_new_transaction(relay: Relay) -> None:
    """RFC 5321 §4.5.3.1.10: a 452 for recipients beyond the peer's limit → the rest go in
    another transaction at once (not after a retry delay)."""
    domain = f"limit-{tag()}.test"
    count = {"n": 0}

    def mail(_: str) -> str:
        count["n"] = 0
        return "250 2.1.0 ok"

    def rcpt(_: str) -> str:
        count["n"] += 1
        return "250 2.1.5 ok" if count["n"] <= 2 else "452 4.5.3 too many recipients"

    sink = relay.sink(Script(mail=mail, rcpt=rcpt))
    relay.mx(domain, [(10, sink.host)])
    rcpts = [f"u{i}@{domain}" for i in range(5)]
    qid = submit(relay.server, f"s-{tag()}@example.test", rcpts, message("many"))
    wait_until(lambda: queued_message(relay.server, qid) is None, 5, "still queued")
    wait_until(lambda: len(delivery_lines(relay.server, qid)) == 5, 5, "five log lines")
    lines = delivery_lines(relay.server, qid)
    assert len(lines) == 5 and all("tries=1," in x for x in lines), lines  # no retry needed
    assert sorted(r for m in sink.messages for r in m.recipients) == rcpts
    assert len(sink.messages) == 3 and all(len(m.recipients) <= 2 for m in sink.messages)


def test_every_address_of_an_mx_host_is_tried(relay: Relay) -> None:
    domain = f"multi-a-{tag()}.test"
    dead_ip = relay.ips.next()
    sink = relay.sink()
    relay.dns.add(f"{domain}. IN MX 10 mx.{domain}.\n")
    relay.dns.add(f"mx.{domain}. IN A {dead_ip}\nmx.{domain}. IN A {sink.host}\n")
    submit(relay.server, f"s-{tag()}@example.test", [f"u@{domain}"], message("two As"))
    wait_until(lambda: sink.messages, 5, "the second address was not tried")


def test_messages_share_connections(relay: Relay) -> None:
    """Several messages to one destination go over fewer connections than messages
    (back-to-back delivery on an open connection)."""
    domain = f"reuse-{tag()}.test"
    sink = relay.sink()
    relay.mx(domain, [(10, sink.host)])
    for i in range(12):
        submit(relay.server, f"s{i}@example.test", [f"u{i}@{domain}"], message(f"m{i}"))
    wait_until(lambda: len(sink.messages) == 12, 10, "not all delivered")
    assert sink.connections < 12, sink.connections
    assert sorted(m.connection for m in sink.messages) != list(range(1, 13))


@pytest.mark.parametrize("chunking", [False, True], ids=["DATA", "BDAT"])
def test_content_arrives_byte_exact(relay: Relay, chunking: bool) -> None:
    """What the MX receives is our Received field followed by the message exactly as it
    was submitted: leading dots, a 998-octet line, 8-bit text, a body over 64 KiB (so it
    was spooled); BODY=8BITMIME and SMTPUTF8 are passed on to a peer that offers them."""
    extensions = (*DEFAULT_EXTENSIONS, "CHUNKING") if chunking else DEFAULT_EXTENSIONS
    domain = f"exact-{tag()}.test"
    sink = relay.sink(Script(extensions=extensions))
    relay.mx(domain, [(10, sink.host)])
    rcpt = f"ünïcode-{tag()}@{domain}"
    body = (
        b".leading dot\r\n..two dots\r\n.\r\n"
        + b"L" * 996
        + b"\r\n"
        + "Grüße 8-bit\r\n".encode()
        + (b"0123456789abcdef" * 4 + b"\r\n") * 1100  # 70 kB: beyond 64 KiB, spooled
        + b"end\r\n"
    )
    content = message("exact", body)
    submit(relay.server, "s@example.test", [rcpt], content, mail_params="BODY=8BITMIME SMTPUTF8")
    (got,) = wait_until(lambda: sink.messages, 5, "not delivered")
    assert got.via == ("BDAT" if chunking else "DATA")
    assert got.recipients == [rcpt]
    assert got.mail_params.get("BODY") == "8BITMIME" and "SMTPUTF8" in got.mail_params
    assert got.content.startswith(b"Received: ")
    assert got.content.endswith(content)
    trace, _, rest = got.content.partition(b"\r\nFrom: ")
    assert b"From: " + rest == content and trace.count(b"Received:") == 1


def test_destination_concurrency_limit(relay: Relay, make_server: MakeServer) -> None:
    """``queue.destination_concurrency = 2``: never more than two connections to one
    destination at once, however much mail waits for it."""
    overrides = relay_overrides(
        relay.dns, relay.port, queue={"destination_concurrency": 2, "max_lifetime": 60}
    )
    srv = make_server(overrides)
    domain = f"conc-{tag()}.test"
    sink = relay.sink(Script(stall="end"))  # every delivery stays in flight
    relay.mx(domain, [(10, sink.host)])
    for i in range(6):
        submit(srv, f"s{i}@example.test", [f"u{i}@{domain}"], message(f"c{i}"))
    wait_until(lambda: sink.open_connections >= 2, 5, "fewer than two deliveries started")
    time.sleep(1.0)
    assert sink.open_connections == 2 and len(sink.messages) == 2
    sink.script.stall = None
    relay.sinks.drop_all(sink)  # the stalled ones fail (retried); the rest flow
    wait_until(
        lambda: (
            {r for m in sink.messages for r in m.recipients} == {f"u{i}@{domain}" for i in range(6)}
        ),
        10,
        "not everything delivered",
    )
    assert sink.connections <= 6


def test_aaaa_address_of_an_mx_host(relay: Relay) -> None:
    """RFC 5321 §5.1: each MX host's A *and* AAAA addresses are tried (IPv4 first: its A
    address refuses; its AAAA address, an IPv4-mapped one so that we stay on 127/8, takes
    the mail)."""
    sink = relay.sink()
    domain = f"v6-{tag()}.test"
    mapped = ipaddress.IPv6Address(f"::ffff:{sink.host}").exploded  # dnslib wants hex
    relay.dns.add(f"{domain}. IN MX 10 mx.{domain}.\n")
    relay.dns.add(f"mx.{domain}. IN A {relay.ips.next()}\nmx.{domain}. IN AAAA {mapped}\n")
    qid = submit(relay.server, f"s-{tag()}@example.test", [f"u@{domain}"], message("v6"))
    wait_until(lambda: sink.messages, 5, "not delivered to the AAAA address")
    wait_until(lambda: delivery_lines(relay.server, qid), 5, "no log line")
    assert "tries=1," in delivery_lines(relay.server, qid)[0]
