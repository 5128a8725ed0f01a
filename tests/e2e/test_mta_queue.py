"""Every ``kittiwake queue`` command against the running daemon (its control socket), text
and ``--json``, and the read-only ``list``/``show``/``summary`` once it is stopped.

Retries are a minute apart here, so mail stays deferred until a command moves it."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.mta import (
    Relay,
    queue_cli,
    queue_list,
    queued_message,
    recipient_states,
    relay_env,
    submit,
    tag,
    wait_dsns,
    wait_status,
    wait_until,
)
from tests.support.server import _kittiwake_command
from tests.support.sinks import Script, Sink
from tests.support.smtpclient import message

SLOW_QUEUE = {"retry_first": 60, "retry_max": 120, "max_lifetime": 600, "delay_warning": 0}


def busy() -> Script:
    """An MX that answers 4xx to RCPT (it was reached: no dead-destination entry)."""
    return Script(rcpt="450 4.2.1 mailbox busy")


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    with relay_env(tmp_path_factory.mktemp("mta-queue"), queue=SLOW_QUEUE) as env:
        yield env


def _deferred(relay: Relay, sink: Sink | None = None) -> tuple[str, str, str]:
    """A message deferred for one recipient: (queue id, sender, recipient). With a
    ``sink`` the MX answers 4xx; without, nothing listens (a dead destination)."""
    domain = f"q-{tag()}.test"
    relay.mx(domain, [(10, sink.host if sink else relay.ips.next())])
    sender, rcpt = f"s-{tag()}@example.test", f"user@{domain}"
    qid = submit(relay.server, sender, [rcpt], message("queued"))
    wait_status(relay.server, qid, rcpt)
    return qid, sender, rcpt


def _ok(*args: str, relay: Relay) -> Any:
    result = queue_cli(relay.server, *args)
    assert result.code == 0, result
    return result


def test_list_show_summary(relay: Relay) -> None:
    sink = relay.sink(busy())
    qid, sender, rcpt = _deferred(relay, sink)
    listed = next(m for m in queue_list(relay.server) if m["queue_id"] == qid)
    assert listed["sender"] == sender and not listed["held"]
    (r,) = listed["recipients"]
    assert (r["address"], r["status"], r["attempts"]) == (rcpt, "deferred", 1)
    assert r["last_reply"] == "450 4.2.1 mailbox busy" and r["next_attempt"] > time.time() + 30

    text = _ok("list", relay=relay).out
    assert qid in text and f"<{sender}>" in text and rcpt in text and "mailbox busy" in text
    assert qid in _ok(relay=relay).out  # bare `kittiwake queue`: the mailq listing
    mailq = subprocess.run(
        [*_kittiwake_command(), "mailq", "--config", str(relay.server.config_path)],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert mailq.returncode == 0 and qid in mailq.stdout, mailq

    shown = _ok("show", qid, "--json", relay=relay).json()
    assert shown["queue_id"] == qid and shown["recipients"][0]["address"] == rcpt
    assert qid in _ok("show", qid, relay=relay).out

    summary = _ok("summary", "--json", relay=relay).json()
    domain = rcpt.partition("@")[2]
    (row,) = [d for d in summary["domains"] if d["domain"] == domain]
    assert row["recipients"] == 1 and row["deferred"] == 1
    assert domain in _ok("summary", relay=relay).out


def test_hold_then_release(relay: Relay) -> None:
    """A held message is not delivered (not by flush, not by retry); release delivers it
    again (the scheduler makes it due at once)."""
    sink = relay.sink(busy())
    qid, _, rcpt = _deferred(relay, sink)
    assert _ok("hold", qid, "--json", relay=relay).json() == {
        "ok": True,
        "op": "hold",
        "queue_id": qid,
    }
    held = queued_message(relay.server, qid)
    assert held is not None and held["held"]
    assert f"{qid}!" in _ok("list", relay=relay).out  # mailq marks held mail
    sink.script.rcpt = "250 2.1.5 ok"
    assert queue_cli(relay.server, "retry", qid).code == 1  # held: not retried
    _ok("flush", relay=relay)
    time.sleep(0.5)
    assert not sink.messages  # held mail stays put
    assert f"{qid}: released" in _ok("release", qid, relay=relay).out
    (got,) = wait_until(lambda: sink.messages, 5, "not delivered after release")
    assert got.recipients == [rcpt]
    wait_until(lambda: queued_message(relay.server, qid) is None, 5, "still queued")


def test_retry_one_message(relay: Relay) -> None:
    sink = relay.sink(busy())
    qid, _, rcpt = _deferred(relay, sink)
    other, _, _ = _deferred(relay, sink)
    sink.script.rcpt = "250 2.1.5 ok"
    assert f"{qid}: scheduled now" in _ok("retry", qid, relay=relay).out
    (got,) = wait_until(lambda: sink.messages, 5, "retry did not deliver")
    assert got.recipients == [rcpt]
    time.sleep(0.5)
    assert len(sink.messages) == 1  # only that message
    assert recipient_states(relay.server, other) != {}


def test_flush_by_domain_then_all(relay: Relay) -> None:
    one_ip, two_ip = relay.ips.next(), relay.ips.next()
    one = f"flush1-{tag()}.test"
    two = f"flush2-{tag()}.test"
    relay.mx(one, [(10, one_ip)])
    relay.mx(two, [(10, two_ip)])
    ids = [
        submit(relay.server, f"s-{tag()}@example.test", [f"u@{d}"], message(d)) for d in (one, two)
    ]
    for qid, d in zip(ids, (one, two), strict=True):
        wait_status(relay.server, qid, f"u@{d}")
    sink_one, sink_two = relay.sink(ip=one_ip), relay.sink(ip=two_ip)
    flushed = _ok("flush", "--domain", one, "--json", relay=relay).json()
    assert flushed["messages"] == 1, flushed
    wait_until(lambda: sink_one.messages, 5, "flush --domain did not deliver")
    time.sleep(0.5)
    assert not sink_two.messages
    assert "scheduled" in _ok("flush", relay=relay).out
    wait_until(lambda: sink_two.messages, 5, "flush did not deliver")


def test_delete(relay: Relay) -> None:
    sink = relay.sink(busy())
    qid, sender, _ = _deferred(relay, sink)
    assert f"{qid}: deleted" in _ok("delete", qid, relay=relay).out
    assert queued_message(relay.server, qid) is None
    sink.script.rcpt = "250 2.1.5 ok"
    _ok("flush", relay=relay)
    time.sleep(0.5)
    assert not sink.messages and relay.server.maildir(sender) == []  # no notice either
    assert queue_cli(relay.server, "delete", qid).code == 1  # gone


def test_bounce(relay: Relay) -> None:
    qid, sender, rcpt = _deferred(relay)
    _ok("bounce", qid, relay=relay)
    (dsn,) = wait_dsns(relay.server, sender, 1, 5)
    r = dsn.recipient(rcpt)
    assert (r["action"], r["status"]) == ("failed", "5.0.0"), r
    assert "bounced by the administrator" in r["diagnostic-code"], r
    assert queued_message(relay.server, qid) is None


def test_unknown_and_malformed_ids_fail(relay: Relay) -> None:
    absent, malformed = "1K1D0000000000", "../../etc/passwd"
    cases = [(op, absent) for op in ("show", "hold", "release", "delete", "retry", "bounce")]
    for op, qid in [*cases, ("show", malformed), ("delete", malformed)]:
        result = queue_cli(relay.server, op, qid)
        assert result.code == 1, (op, qid, result)
        assert result.err.startswith("kittiwake:") and not result.out, (op, qid, result)


def test_read_only_when_the_server_is_down(relay: Relay) -> None:
    qid, _, rcpt = _deferred(relay)
    before = queued_message(relay.server, qid)
    assert before is not None
    relay.server.stop()
    try:
        listed = queue_cli(relay.server, "list", "--json")
        assert listed.code == 0 and "read-only" in listed.err, listed
        assert any(m["queue_id"] == qid for m in listed.json())
        shown = queue_cli(relay.server, "show", qid, "--json")
        assert shown.code == 0 and shown.json()["recipients"][0]["status"] == "deferred"
        assert queue_cli(relay.server, "summary", "--json").code == 0
        assert rcpt in queue_cli(relay.server, "list").out
        for op in ("hold", "release", "delete", "retry", "bounce"):
            result = queue_cli(relay.server, op, qid)
            assert result.code == 1 and "not running" in result.err, (op, result)
        assert queue_cli(relay.server, "flush").code == 1
    finally:
        relay.server.start()
    time.sleep(0.5)
    after = queued_message(relay.server, qid)
    assert after is not None and after["recipients"] == before["recipients"]  # nothing changed
    # ...and the restart did not retry it early: deferred mail waits for its time.
