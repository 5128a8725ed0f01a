"""Outbound STARTTLS policy through the daemon (RFC 3207): ``relay.tls_policy = "required"``
for everyone, ``opportunistic`` for two domains and ``verify`` (against ``relay.tls_ca_file``,
a CA of the test's own) for two more in ``[relay.tls_policies]``. The sinks record whether
the message came over TLS."""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kittiwake.net.tls import ensure_self_signed, server_context
from tests.support.mta import (
    Relay,
    queued_message,
    relay_env,
    submit,
    tag,
    wait_status,
    wait_until,
)
from tests.support.sinks import Script
from tests.support.smtpclient import message
from tests.support.tlsca import TestCA

OPPORTUNISTIC = "opp.tls.test"
CLEAR = "clear.tls.test"
VERIFY = "verify.tls.test"
VERIFY_SELF_SIGNED = "verify-self.tls.test"
VERIFY_WRONG_NAME = "verify-name.tls.test"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("mta-tls-ca"))


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory, ca: TestCA) -> Iterator[Relay]:
    root = tmp_path_factory.mktemp("mta-tls")
    policies = {
        OPPORTUNISTIC: "opportunistic",
        CLEAR: "opportunistic",
        VERIFY: "verify",
        VERIFY_SELF_SIGNED: "verify",
        VERIFY_WRONG_NAME: "verify",
    }
    settings = {"tls_policy": "required", "tls_policies": policies, "tls_ca_file": str(ca.ca_file)}
    with relay_env(root, relay=settings) as env:
        yield env


@pytest.fixture(scope="module")
def tls_context(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    cert, key = ensure_self_signed(Path(tmp_path_factory.mktemp("sink-tls")), "sink.test")
    return server_context(cert, key)


def test_opportunistic_uses_starttls_when_offered(
    relay: Relay, tls_context: ssl.SSLContext
) -> None:
    sink = relay.sink(Script(tls=tls_context))
    relay.mx(OPPORTUNISTIC, [(10, sink.host)])
    rcpt = f"u-{tag()}@{OPPORTUNISTIC}"
    submit(relay.server, f"s-{tag()}@example.test", [rcpt], message("tls"))
    (got,) = wait_until(lambda: sink.messages, 5, "not delivered")
    assert got.tls and got.recipients == [rcpt]
    assert "STARTTLS" in sink.commands
    # RFC 3207 §4.2: the client forgets what it knew and says EHLO again inside TLS.
    assert [c.split()[0] for c in sink.commands[:3]] == ["EHLO", "STARTTLS", "EHLO"]


def test_opportunistic_sends_in_clear_without_starttls(relay: Relay) -> None:
    sink = relay.sink()
    relay.mx(CLEAR, [(10, sink.host)])
    submit(relay.server, f"s-{tag()}@example.test", [f"u@{CLEAR}"], message("clear"))
    (got,) = wait_until(lambda: sink.messages, 5, "not delivered")
    assert not got.tls


def test_required_defers_when_the_peer_has_no_starttls(relay: Relay) -> None:
    domain = f"req-{tag()}.test"
    sink = relay.sink()  # no STARTTLS offered
    relay.mx(domain, [(10, sink.host)])
    rcpt = f"u@{domain}"
    qid = submit(relay.server, f"s-{tag()}@example.test", [rcpt], message("must be tls"))
    wait_status(relay.server, qid, rcpt)
    message_json = queued_message(relay.server, qid)
    assert message_json is not None
    (r,) = message_json["recipients"]
    assert r["dsn_status"].startswith("4."), r
    time.sleep(0.3)
    assert sink.connections >= 1 and sink.commands[0].startswith("EHLO")
    assert not sink.messages
    assert not any(c.startswith(("MAIL", "RCPT", "DATA", "BDAT")) for c in sink.commands)


def test_required_delivers_over_tls(relay: Relay, tls_context: ssl.SSLContext) -> None:
    domain = f"req-ok-{tag()}.test"
    sink = relay.sink(Script(tls=tls_context))
    relay.mx(domain, [(10, sink.host)])
    submit(relay.server, f"s-{tag()}@example.test", [f"u@{domain}"], message("tls ok"))
    (got,) = wait_until(lambda: sink.messages, 5, "not delivered")
    assert got.tls


def test_verify_delivers_to_a_certificate_our_ca_signed(relay: Relay, ca: TestCA) -> None:
    sink = relay.sink()
    (mx_name,) = relay.mx(VERIFY, [(10, sink.host)])
    sink.script.tls = ca.server(mx_name)  # a certificate naming the MX host (RFC 6125)
    submit(relay.server, f"s-{tag()}@example.test", [f"u@{VERIFY}"], message("verified"))
    (got,) = wait_until(lambda: sink.messages, 5, "not delivered")
    assert got.tls


@pytest.mark.parametrize("domain", [VERIFY_SELF_SIGNED, VERIFY_WRONG_NAME])
def test_verify_defers_on_a_bad_certificate(
    relay: Relay, ca: TestCA, tls_context: ssl.SSLContext, domain: str
) -> None:
    """A self-signed certificate, or one of our CA's for another name: no mail is sent."""
    sink = relay.sink()
    relay.mx(domain, [(10, sink.host)])
    bad = tls_context if domain == VERIFY_SELF_SIGNED else ca.server("someone-else.test")
    sink.script.tls = bad
    rcpt = f"u-{tag()}@{domain}"
    qid = submit(relay.server, f"s-{tag()}@example.test", [rcpt], message("unverified"))
    wait_status(relay.server, qid, rcpt)
    time.sleep(0.3)
    assert "STARTTLS" in sink.commands  # it was tried...
    assert not sink.messages  # ...and nothing went over the unverified channel
    assert not any(c.startswith(("MAIL", "RCPT")) for c in sink.commands)
