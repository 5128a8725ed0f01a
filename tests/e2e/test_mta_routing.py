"""The daemon relays by DNS: MX order, fallback to the next MX, implicit MX, null MX,
NXDOMAIN, SERVFAIL and MX records pointing back at us (RFC 5321 §5.1, RFC 7505).

One daemon for the module (``relay_env``); each test has its own domains and sink
addresses, and a sender in the local domain so that its bounces land in a Maildir."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.mta import (
    Relay,
    delivery_lines,
    queue_cli,
    queued_message,
    relay_env,
    submit,
    tag,
    wait_dsns,
    wait_status,
    wait_until,
)
from tests.support.server import MakeServer
from tests.support.sinks import Script
from tests.support.smtpclient import message


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    with relay_env(tmp_path_factory.mktemp("mta-routing")) as env:
        yield env


def _sender() -> str:
    return f"s-{tag()}@example.test"


def test_lowest_preference_first(relay: Relay) -> None:
    domain = f"order-{tag()}.test"
    best, worse = relay.sink(), relay.sink()
    relay.mx(domain, [(20, worse.host), (10, best.host)])
    rcpt = f"user@{domain}"
    content = message("mx order")
    submit(relay.server, _sender(), [rcpt], content)
    got = wait_until(lambda: best.messages, 10, "nothing at the preferred MX")
    assert got[0].recipients == [rcpt]
    assert got[0].content.endswith(content)
    assert got[0].content.startswith(b"Received: ")  # our trace field, RFC 5321 §4.4
    assert worse.connections == 0


FIRST_MX_FAILURES: dict[str, Script | None] = {
    "refused": None,  # nothing listens
    "greeting-421": Script(greeting="421 4.3.2 busy, try later"),
    "greeting-554": Script(greeting="554 5.3.2 no service here"),
    "ehlo-dropped": Script(drop="ehlo"),
    "mail-421": Script(mail="421 4.3.2 going down"),
    "mail-451": Script(mail="451 4.3.0 local problem"),
    "rcpt-450": Script(rcpt="450 4.2.1 try another MX"),
    "drop-mid-data": Script(drop="data"),
    "end-451": Script(end="451 4.3.0 queue file write error"),
}


@pytest.mark.parametrize("failure", list(FIRST_MX_FAILURES))
def test_falls_back_to_next_mx(relay: Relay, failure: str) -> None:
    """RFC 5321 §5.1: when the first MX cannot take the mail now (no connection, 421, a
    refused greeting, a 4xx for the sender, the recipient or the data, a lost connection)
    the next MX is tried in the same attempt."""
    domain = f"fallback-{tag()}.test"
    second = relay.sink()
    first_ip = relay.ips.next()
    script = FIRST_MX_FAILURES[failure]
    first = relay.sink(Script(**vars(script)), ip=first_ip) if script is not None else None
    relay.mx(domain, [(10, first_ip), (20, second.host)])
    rcpt = f"user@{domain}"
    content = message(f"fallback {failure}")
    qid = submit(relay.server, _sender(), [rcpt], content)
    got = wait_until(lambda: second.messages, 5, f"not at the second MX after {failure}")
    assert got[0].recipients == [rcpt] and got[0].content.endswith(content)
    if first is not None:
        assert first.connections >= 1 and not first.messages
    wait_until(lambda: queued_message(relay.server, qid) is None, 5, "message still queued")
    # the outcome is recorded before its log line is written: wait for the line too
    lines = wait_until(lambda: delivery_lines(relay.server, qid), 5, "no delivery log line")
    (line,) = lines  # one attempt, not a retry
    assert f"relay=mx2.{domain}" in line and "tries=1," in line and "status=delivered" in line


def test_implicit_mx(relay: Relay) -> None:
    """No MX record: the domain's own A record is the MX (RFC 5321 §5.1)."""
    domain = f"implicit-{tag()}.test"
    sink = relay.sink()
    relay.dns.add(f"{domain}. IN A {sink.host}\n")
    rcpt = f"user@{domain}"
    submit(relay.server, _sender(), [rcpt], message("implicit"))
    got = wait_until(lambda: sink.messages, 10, "nothing at the implicit MX")
    assert got[0].recipients == [rcpt]
    assert any(q.name == f"{domain}." and q.qtype == "MX" for q in relay.dns.queries)


def _bounce_for(relay: Relay, sender: str, rcpt: str, status: str, timeout: float = 8.0) -> None:
    (dsn,) = wait_dsns(relay.server, sender, 1, timeout)
    assert dsn.subject == "Undelivered Mail Returned to Sender"
    r = dsn.recipient(rcpt)
    assert r["action"] == "failed" and r["status"] == status, r
    assert "diagnostic-code" in r
    assert dsn.report["reporting-mta"] == "dns; mx.test"
    assert dsn.message["To"].addresses[0].addr_spec == sender
    assert dsn.message["From"].addresses[0].addr_spec == "MAILER-DAEMON@mx.test"


def test_null_mx_bounces_at_once(relay: Relay) -> None:
    """RFC 7505 §3-4: ``MX 0 .`` → the domain takes no mail: 556 5.1.10 with no retry."""
    domain = f"nullmx-{tag()}.test"
    relay.dns.add(f"{domain}. IN MX 0 .\n")
    sender, rcpt = _sender(), f"user@{domain}"
    qid = submit(relay.server, sender, [rcpt], message("null mx"))
    _bounce_for(relay, sender, rcpt, "5.1.10", timeout=3)  # before any retry (1 s) or expiry
    assert queued_message(relay.server, qid) is None


def test_nxdomain_bounces(relay: Relay) -> None:
    domain = f"nx-{tag()}.test"  # not in the zone at all
    sender, rcpt = _sender(), f"user@{domain}"
    submit(relay.server, sender, [rcpt], message("nxdomain"))
    _bounce_for(relay, sender, rcpt, "5.1.2", timeout=3)


def test_servfail_defers(relay: Relay) -> None:
    """A DNS failure is temporary: deferred (4.4.3), listed so, delivered after a flush
    once DNS answers (the failed site is in the dead-destination cache until then)."""
    domain = f"servfail-{tag()}.test"
    relay.dns.servfail(domain)
    sender, rcpt = _sender(), f"user@{domain}"
    qid = submit(relay.server, sender, [rcpt], message("servfail"))
    wait_status(relay.server, qid, rcpt, timeout=8)
    listed = queue_cli(relay.server, "list", "--json")  # what the operator sees
    assert listed.code == 0, listed
    (m,) = [m for m in listed.json() if m["queue_id"] == qid]
    (r,) = m["recipients"]
    assert (r["status"], r["dsn_status"]) == ("deferred", "4.4.3") and r["attempts"] >= 1, r
    assert "SERVFAIL" in r["last_reply"] or "4.4.3" in r["last_reply"], r
    relay.dns.clear_faults()
    sink = relay.sink()
    relay.mx(domain, [(10, sink.host)])
    assert queue_cli(relay.server, "flush", "--domain", domain).code == 0
    wait_until(lambda: sink.messages, 5, "not delivered after the flush")
    assert sink.messages[0].recipients == [rcpt]


def test_mx_naming_ourselves_bounces(relay: Relay) -> None:
    """RFC 5321 §5.1: an MX that is us (our hostname) with no better MX → 5.4.6 loop."""
    domain = f"loop-{tag()}.test"
    relay.dns.add(f"{domain}. IN MX 10 mx.test.\nmx.test. IN A 127.0.0.1\n")
    sender, rcpt = _sender(), f"user@{domain}"
    submit(relay.server, sender, [rcpt], message("loop"))
    _bounce_for(relay, sender, rcpt, "5.4.6", timeout=3)


def test_mx_better_than_us_is_used(relay: Relay) -> None:
    """RFC 5321 §5.1: our own preference level and worse are dropped, better ones kept."""
    domain = f"backup-{tag()}.test"
    primary = relay.sink()
    relay.dns.add(
        f"{domain}. IN MX 10 primary.{domain}.\nprimary.{domain}. IN A {primary.host}\n"
        f"{domain}. IN MX 20 mx.test.\n"
    )
    submit(relay.server, _sender(), [f"user@{domain}"], message("backup mx"))
    wait_until(lambda: primary.messages, 10, "nothing at the primary")


def test_mx_address_is_our_listener(make_server: MakeServer, relay: Relay) -> None:
    """The loop is also caught by address: the MX host resolves to the very socket we
    listen on (relay.smtp_port = our own MX port)."""
    srv = make_server(start=False)
    srv.config = {
        **srv.config,
        "relay": {"mynetworks": ["127.0.0.0/8"], "smtp_port": srv.mx[1]},
        "dns": relay.dns.config(timeout=2),
        "queue": dict(relay.server.config["queue"]),
    }
    srv.start()
    domain = f"selfaddr-{tag()}.test"
    relay.dns.add(f"{domain}. IN MX 10 other-name.{domain}.\nother-name.{domain}. IN A 127.0.0.1\n")
    sender, rcpt = _sender(), f"user@{domain}"
    submit(srv, sender, [rcpt], message("loop by address"))
    (dsn,) = wait_dsns(srv, sender, 1, 5)
    assert dsn.recipient(rcpt)["status"] == "5.4.6"
    assert srv.maildir("user@example.test") == []


def test_transport_to_our_own_listener_bounces(make_server: MakeServer) -> None:
    """``[transport]`` pointing at our own MX socket would relay to ourselves forever:
    5.4.6 "loops back to myself" at once (RFC 5321 §5.1), not 50 hops later."""
    srv = make_server(start=False)
    srv.config["transport"] = {"self.test": f"smtp:[{srv.mx[0]}]:{srv.mx[1]}"}
    srv.start()
    sender, rcpt = _sender(), "user@self.test"
    submit(srv, sender, [rcpt], message("to myself"))
    (dsn,) = wait_dsns(srv, sender, 1, 5)
    r = dsn.recipient(rcpt)
    assert r["status"] == "5.4.6" and "loops back" in r["diagnostic-code"], r
    assert "Too many hops" not in srv.log_text()
