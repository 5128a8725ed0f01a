"""Forwarding outside with SRS and bounces coming back, through the wire: the daemon
forwards to a scripted remote MX (found through the test DNS) with an ``SRS0`` sender that
validates; a null-sender message to an SRS address — from a stranger, on the MX port — is
relayed to the original sender; forged and expired SRS addresses are refused at RCPT."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from kittiwake.addressing.srs import Srs
from tests.support.mta import Relay, relay_env, tag, wait_until
from tests.support.server import KittiwakeServer
from tests.support.smtpclient import RawSMTP, message

SECRET = "e2e-srs-secret-abcdefghijklmnop"
CONFIG: dict[str, dict[str, Any]] = {
    "local": {
        "domains": ["example.test", "example.org"],
        "users": ["alice", "carol"],
        "postmaster": "postmaster@example.test",
    },
    "aliases": {
        "fwd@example.test": ["carol@example.test", "ext@elsewhere.example"],
        "away@example.test": "far@elsewhere.example",
    },
    "srs": {"secret": SECRET, "domain": "example.test"},
    "relay": {"mynetworks": []},  # nobody may relay: SRS bounces must still get through
}


# Until app.py wires addressing.setup.build_directory (H14's report), the daemon has no
# aliases or SRS: skip. DELETE this marker with the wiring; from then on these must run.
@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    with relay_env(tmp_path_factory.mktemp("addressing-srs"), **CONFIG) as env:
        yield env


def srs(clock: float | None = None) -> Srs:
    return Srs([SECRET], "example.test", clock=(lambda: clock) if clock else time.time)


def send(server: KittiwakeServer, sender: str, rcpts: list[str], subject: str) -> None:
    with RawSMTP(server.mx) as c:
        c.ehlo()
        c.send_mail(sender, rcpts, message(subject)).check(250)
        c.cmd("QUIT")


def test_alias_to_an_external_address_goes_out_with_an_srs_sender(relay: Relay) -> None:
    sink = relay.sink()
    relay.mx("elsewhere.example", [(10, sink.host)])
    sender = f"s-{tag()}@sender.example"
    before = len(relay.server.maildir("carol@example.test"))
    send(relay.server, sender, ["fwd@example.test"], "forward me")
    (got,) = wait_until(lambda: list(sink.messages), 15, "the forwarded copy at the sink")
    assert got.recipients == ["ext@elsewhere.example"]
    assert got.sender.startswith("SRS0=") and got.sender.endswith("@example.test")
    assert srs().reverse(got.sender) == sender  # it validates with our secret
    assert got.rcpt_params[0].get("ORCPT") == "rfc822;fwd@example.test"  # RFC 3461 §4.2
    assert b"Subject: forward me" in got.content
    # The local target of the same alias keeps the original sender.
    local = relay.server.wait_for_mail("carol@example.test", before + 1)[-1]
    assert local.startswith(f"Return-Path: <{sender}>".encode())
    relay.sinks.stop(sink)


def test_null_sender_is_forwarded_as_null(relay: Relay) -> None:
    sink = relay.sink()
    relay.mx("elsewhere.example", [(5, sink.host)])  # preferred over earlier tests' sinks
    send(relay.server, "", ["away@example.test"], "a bounce to forward")
    (got,) = wait_until(lambda: list(sink.messages), 15, "the forwarded bounce at the sink")
    assert got.sender == "" and got.recipients == ["far@elsewhere.example"]
    relay.sinks.stop(sink)


def test_srs_bounce_back_to_an_outside_sender(relay: Relay) -> None:
    domain = f"b{tag()}.example"
    sink = relay.sink()
    relay.mx(domain, [(10, sink.host)])
    original = f"orig-{tag()}@{domain}"
    address = srs().forward(original)
    send(relay.server, "", [address], "Undelivered Mail Returned to Sender")  # a stranger
    (got,) = wait_until(lambda: list(sink.messages), 15, "the bounce at the original sender")
    assert got.sender == "" and got.recipients == [original]
    assert b"Undelivered Mail Returned to Sender" in got.content


def test_srs_bounce_back_to_a_local_sender(relay: Relay) -> None:
    """Mail from alice@example.org was forwarded (its SRS address names example.org); the
    bounce comes back to example.test's SRS address and lands in alice's mailbox."""
    address = srs().forward("alice@example.org")
    assert address.startswith("SRS0=")
    before = len(relay.server.maildir("alice@example.test"))
    send(relay.server, "", [address.upper().replace("@EXAMPLE.TEST", "@example.test")], "back")
    got = relay.server.wait_for_mail("alice@example.test", before + 1)[-1]
    assert b"Delivered-To: ALICE@EXAMPLE.ORG" in got or b"Delivered-To: alice@example.org" in got


@pytest.mark.parametrize("how", ["forged", "expired", "other-secret", "srs1-forged"])
def test_bad_srs_addresses_refused_at_rcpt(relay: Relay, how: str) -> None:
    victim = "victim@open-relay-test.example"
    if how == "forged":
        address = srs().forward(victim).replace("open-relay-test", "another-victim")
    elif how == "expired":
        address = srs(time.time() - 30 * 86400).forward(victim)
    elif how == "other-secret":
        address = Srs(["not our secret, but long"], "example.test").forward(victim)
    else:
        address = "SRS1=abcd=x.example==HHHH=TT=v.example=victim@example.test"
    with RawSMTP(relay.server.mx) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<>").check(250)
        reply = c.cmd(f"RCPT TO:<{address}>")
        reply.check(550, "5.1.1")
        assert ("expired" in reply.text) is (how == "expired")
