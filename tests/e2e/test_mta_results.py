"""What the remote MX answers decides each recipient's fate: per-recipient results in one
transaction (250 / 4xx / 5xx), a reply to the whole message, deferral then success on
retry, expiry into a 5.4.7 bounce, and the one delay warning (RFC 5321 §4.2.5, §4.5.4.1;
RFC 3464 for the notices, read with the stdlib ``email`` package).

Queue timings (``tests.support.mta.FAST_QUEUE``): retry after ~1 s, at most 2 s apart,
bounce after 4 s, delay warning after 1 s."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.support.dsn_read import Dsn, parse_dsn
from tests.support.mta import (
    Relay,
    queue_cli,
    queued_message,
    recipient_states,
    relay_env,
    submit,
    tag,
    wait_dsns,
    wait_until,
)
from tests.support.sinks import Script
from tests.support.smtpclient import message


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    with relay_env(tmp_path_factory.mktemp("mta-results")) as env:
        yield env


def _notices(relay: Relay, sender: str) -> list[Dsn]:
    return [parse_dsn(raw) for raw in relay.server.maildir(sender)]


def _actions(dsns: list[Dsn]) -> list[str]:
    return [r["action"] for d in dsns for r in d.recipients]


def test_mixed_results_in_one_transaction(relay: Relay) -> None:
    """250 → delivered; 550 → bounced with a full DSN; 450 → deferred, then delivered on
    retry once the MX accepts it."""
    domain = f"mixed-{tag()}.test"
    ok, soft, hard = (f"{w}@{domain}" for w in ("ok", "soft", "hard"))
    answers = {soft: "450 4.2.1 mailbox busy, try later", hard: "550 5.1.1 no such user here"}
    sink = relay.sink(Script(rcpt=dict(answers)))
    (mx_name,) = relay.mx(domain, [(10, sink.host)])
    sender = f"s-{tag()}@example.test"
    content = message("mixed", "Body of the mixed message.\r\n")
    qid = submit(relay.server, sender, [ok, soft, hard], content)

    first = wait_until(lambda: sink.messages, 5, "nothing delivered")[0]
    assert first.recipients == [ok] and first.content.endswith(content)
    (bounce,) = wait_dsns(relay.server, sender, 1, 5)
    assert bounce.subject == "Undelivered Mail Returned to Sender"
    assert [r["final-recipient"] for r in bounce.recipients] == [f"rfc822; {hard}"]
    r = bounce.recipient(hard)
    assert r["action"] == "failed" and r["status"] == "5.1.1"
    assert r["remote-mta"] == f"dns; {mx_name}"
    assert r["diagnostic-code"] == "smtp; 550 5.1.1 no such user here"
    assert "last-attempt-date" in r
    assert bounce.report["reporting-mta"] == "dns; mx.test"
    assert "arrival-date" in bounce.report
    assert bounce.returned_type == "message/rfc822"  # no RET: the whole message comes back
    assert b"Body of the mixed message." in bounce.returned
    assert bounce.message["Return-Path"] == "<>"  # RFC 3461 §6.1 / RFC 5321 §4.5.5
    assert recipient_states(relay.server, qid) == {
        ok: "delivered",
        soft: "deferred",
        hard: "bounced",
    }

    sink.script.rcpt = {hard: answers[hard]}  # the busy mailbox is free again
    second = wait_until(lambda: sink.messages[1:], 4, "the deferred recipient never came")[0]
    assert second.recipients == [soft] and second.content == first.content
    wait_until(lambda: queued_message(relay.server, qid) is None, 5, "still queued")
    assert sum(len(m.recipients) for m in sink.messages) == 2  # nobody twice
    assert _actions(_notices(relay, sender)) in (["failed"], ["failed", "delayed"])


@pytest.mark.parametrize(
    ("end", "expect"), [("554 5.6.0 content refused", "bounced"), ("451 4.3.0 disk", "deferred")]
)
def test_reply_to_the_message_applies_to_every_recipient(
    relay: Relay, end: str, expect: str
) -> None:
    domain = f"whole-{tag()}.test"
    sink = relay.sink(Script(end=end))
    relay.mx(domain, [(10, sink.host)])
    sender = f"s-{tag()}@example.test"
    rcpts = [f"a@{domain}", f"b@{domain}"]
    qid = submit(relay.server, sender, rcpts, message("whole"))
    if expect == "bounced":
        (dsn,) = wait_dsns(relay.server, sender, 1, 5)
        assert sorted(r["final-recipient"] for r in dsn.recipients) == [
            f"rfc822; {a}" for a in rcpts
        ]
        assert {r["status"] for r in dsn.recipients} == {"5.6.0"}
        assert queued_message(relay.server, qid) is None
    else:
        wait_until(
            lambda: set(recipient_states(relay.server, qid).values()) == {"deferred"},
            5,
            "not deferred",
        )
        sink.script.end = "250 2.0.0 fine now"
        wait_until(lambda: queued_message(relay.server, qid) is None, 5, "not delivered")
    assert not sink.messages or expect == "deferred"


def test_expiry_bounces_with_547_after_one_delay_warning(relay: Relay) -> None:
    """The MX never answers: one delay warning after ``delay_warning``, then after
    ``max_lifetime`` a bounce 5.4.7 quoting the last error (RFC 3463 §3.5). A second
    message asked NOTIFY=FAILURE only: no delay warning for it (RFC 3461 §4.1)."""
    domain = f"expire-{tag()}.test"
    relay.mx(domain, [(10, relay.ips.next())])  # nothing listens there
    sender, rcpt = f"s-{tag()}@example.test", f"user@{domain}"
    other = f"s-{tag()}@example.test"
    started = time.monotonic()
    qid = submit(relay.server, sender, [rcpt], message("expire"), mail_params="ENVID=exp-42")
    submit(relay.server, other, [rcpt], message("x"), rcpt_params={rcpt: "NOTIFY=FAILURE"})
    delay, bounce = wait_dsns(relay.server, sender, 2, 12)
    assert time.monotonic() - started >= 3.5  # not before max_lifetime (4 s)

    assert delay.subject == "Delayed Mail (still being retried)"
    d = delay.recipient(rcpt)
    assert d["action"] == "delayed" and d["status"].startswith("4."), d
    assert "will-retry-until" in d and "diagnostic-code" in d
    assert delay.returned_type == "text/rfc822-headers"  # only headers for a delay
    assert delay.report["original-envelope-id"] == "exp-42"

    assert bounce.subject == "Undelivered Mail Returned to Sender"
    b = bounce.recipient(rcpt)
    assert b["action"] == "failed" and b["status"] == "5.4.7", b
    assert b["diagnostic-code"].split("; ", 1)[1].startswith("4"), b  # the last (4xx) error
    assert bounce.report["original-envelope-id"] == "exp-42"
    assert queued_message(relay.server, qid) is None
    (only,) = wait_dsns(relay.server, other, 1, 3)
    assert _actions([only]) == ["failed"] and only.recipient(rcpt)["status"] == "5.4.7"
    time.sleep(1.5)
    assert len(relay.server.maildir(sender)) == 2  # and nothing more
    assert len(relay.server.maildir(other)) == 1


def test_delay_warning_sent_once_then_delivered(relay: Relay) -> None:
    """Deferred across several retries: exactly one ``Action: delayed`` notice (NOTIFY=
    DELAY asked for it), then delivery and no further notice (no SUCCESS asked)."""
    domain = f"delay-{tag()}.test"
    rcpt = f"user@{domain}"
    sink = relay.sink(Script(rcpt={rcpt: "451 4.3.2 system busy"}))
    relay.mx(domain, [(10, sink.host)])
    sender = f"s-{tag()}@example.test"
    qid = submit(
        relay.server,
        sender,
        [rcpt],
        message("delay"),
        rcpt_params={rcpt: "NOTIFY=DELAY,FAILURE"},
    )
    (delay,) = wait_dsns(relay.server, sender, 1, 4)
    d = delay.recipient(rcpt)
    assert d["action"] == "delayed" and d["status"] == "4.3.2"
    assert d["diagnostic-code"] == "smtp; 451 4.3.2 system busy"

    def tries() -> list[str]:
        return [c for c in sink.commands if c.startswith(f"RCPT TO:<{rcpt}>")]

    wait_until(lambda: len(tries()) >= 2, 3, "no retry after the delay warning")
    for command in tries():  # the peer offers DSN: NOTIFY is passed on (RFC 3461 §4.2)
        assert set(command.partition("NOTIFY=")[2].split()[0].split(",")) == {"DELAY", "FAILURE"}
    sink.script.rcpt = "250 2.1.5 ok"
    assert queue_cli(relay.server, "retry", qid).code == 0  # now, well before the expiry
    wait_until(lambda: sink.messages, 4, "never delivered")
    time.sleep(1.2)
    assert len(relay.server.maildir(sender)) == 1


def test_no_remote_mta_when_the_mx_never_answered(relay: Relay) -> None:
    domain = f"refused-{tag()}.test"
    relay.mx(domain, [(10, relay.ips.next())])  # nothing listens: connection refused
    sender, rcpt = f"s-{tag()}@example.test", f"user@{domain}"
    submit(relay.server, sender, [rcpt], message("refused"))
    (delay,) = wait_dsns(relay.server, sender, 1, 4)
    block = delay.recipient(rcpt)
    assert block["action"] == "delayed"
    assert "remote-mta" not in block, block
