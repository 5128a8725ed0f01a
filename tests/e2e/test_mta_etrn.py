"""ETRN (RFC 1985) on the MX port: mail deferred for a domain whose MX was down is
delivered at once when an allowed client says ``ETRN domain`` (the first retry is a
minute away here), with the RFC's replies; a client outside ``etrn.allowed`` gets 459."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.support.mta import (
    Relay,
    recipient_states,
    relay_env,
    submit,
    tag,
    wait_status,
    wait_until,
)
from tests.support.server import KittiwakeServer
from tests.support.smtpclient import RawSMTP, message

SLOW_QUEUE = {"retry_first": 60, "retry_max": 120, "max_lifetime": 600, "delay_warning": 0}


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    root = tmp_path_factory.mktemp("mta-etrn")
    with relay_env(root, queue=SLOW_QUEUE, etrn={"allowed": ["127.0.0.1/32"]}) as env:
        yield env


def _deferred(relay: Relay, domain: str, count: int) -> tuple[str, list[str]]:
    """``count`` messages for ``domain``, whose only MX refuses connections: deferred."""
    ip = relay.ips.next()
    relay.mx(domain, [(10, ip)])
    ids = [
        submit(relay.server, f"s-{tag()}@example.test", [f"u{i}@{domain}"], message(f"m{i}"))
        for i in range(count)
    ]
    for i, qid in enumerate(ids):
        wait_status(relay.server, qid, f"u{i}@{domain}")
    return ip, ids


def _etrn(relay: Relay, argument: str, source_ip: str | None = None) -> tuple[int, str]:
    with RawSMTP(relay.server.mx, source_ip=source_ip) as c:
        ehlo = c.ehlo()
        assert source_ip is not None or "ETRN" in ehlo.keywords, ehlo  # RFC 1985 §4
        reply = c.cmd(f"ETRN {argument}")
        c.cmd("QUIT")
    return reply.code, reply.text


def test_etrn_delivers_deferred_mail_now(relay: Relay) -> None:
    domain = f"etrn-{tag()}.test"
    ip, ids = _deferred(relay, domain, 2)
    sink = relay.sink(ip=ip)  # the site is back
    time.sleep(1.0)
    assert not sink.messages  # nothing would happen before the next retry, a minute away
    started = time.monotonic()
    code, text = _etrn(relay, domain)
    assert code == 253 and "2 pending messages" in text and domain in text, text
    wait_until(lambda: len(sink.messages) == 2, 5, "ETRN did not start delivery")
    assert time.monotonic() - started < 5
    assert sorted(r for m in sink.messages for r in m.recipients) == [
        f"u0@{domain}",
        f"u1@{domain}",
    ]
    wait_until(lambda: all(not recipient_states(relay.server, q) for q in ids), 5, "queued")


def test_etrn_at_domain_covers_subdomains(relay: Relay) -> None:
    parent = f"etrn-{tag()}.test"
    ip, _ = _deferred(relay, f"sub.{parent}", 1)
    sink = relay.sink(ip=ip)
    code, text = _etrn(relay, f"@{parent}")
    assert code == 253, text
    wait_until(lambda: sink.messages, 5, "ETRN @domain did not reach the subdomain")


def test_etrn_with_nothing_waiting(relay: Relay) -> None:
    code, text = _etrn(relay, f"empty-{tag()}.test")
    assert code == 251 and "no messages waiting" in text, text


def test_etrn_from_a_client_not_allowed(relay: Relay) -> None:
    domain = f"etrn-{tag()}.test"
    ip, ids = _deferred(relay, domain, 1)
    sink = relay.sink(ip=ip)
    code, text = _etrn(relay, domain, source_ip="127.0.0.9")
    assert code == 459 and text.startswith("4.7.1"), text
    time.sleep(1.0)
    assert not sink.messages
    assert recipient_states(relay.server, ids[0]) == {f"u0@{domain}": "deferred"}


def test_etrn_off_by_default(server: KittiwakeServer) -> None:
    """No ``etrn.allowed``: ETRN is not advertised and is an unknown command (502)."""
    with RawSMTP(server.mx) as c:
        assert "ETRN" not in c.ehlo().keywords
        c.cmd("ETRN example.net").check(502)
