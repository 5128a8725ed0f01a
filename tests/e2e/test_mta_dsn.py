"""Delivery status notifications through the daemon (RFC 3461, RFC 3464, RFC 6522): DSN
parameters passed on to a DSN-capable peer, our own "relayed" notice for one that is not,
RET/ENVID/ORCPT in our notices, NOTIFY=NEVER, double bounces, and the hop-count loop
check (RFC 5321 §6.3). Notices land in local Maildirs and are read with ``email``."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.support.dsn_read import Dsn, parse_dsn
from tests.support.mta import (
    Relay,
    queue_list,
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
from tests.support.smtpclient import RawSMTP, message, queue_id

NO_DSN = tuple(e for e in DEFAULT_EXTENSIONS if e != "DSN")
POSTMASTER = "postmaster@example.test"


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    with relay_env(tmp_path_factory.mktemp("mta-dsn")) as env:
        yield env


def _sender() -> str:
    return f"s-{tag()}@example.test"


def test_dsn_parameters_reach_a_dsn_capable_peer(relay: Relay) -> None:
    """RFC 3461 §4: NOTIFY, ORCPT, RET and ENVID go on unchanged; the peer now owes the
    success notice, so we send none. A recipient without NOTIFY gets none added."""
    domain = f"pass-{tag()}.test"
    sink = relay.sink()
    relay.mx(domain, [(10, sink.host)])
    sender = _sender()
    asked, plain = f"asked@{domain}", f"plain@{domain}"
    orcpt = "rfc822;Original+2BTag@Before.Example"
    submit(
        relay.server,
        sender,
        [asked, plain],
        message("dsn pass-through"),
        mail_params="RET=HDRS ENVID=QQ+2Bx314",
        rcpt_params={asked: f"NOTIFY=SUCCESS,FAILURE ORCPT={orcpt}"},
    )
    (got,) = wait_until(lambda: sink.messages, 5, "not delivered")
    assert got.mail_params.get("RET") == "HDRS" and got.mail_params.get("ENVID") == "QQ+2Bx314"
    params = dict(zip(got.recipients, got.rcpt_params, strict=True))
    notify = params[asked].get("NOTIFY") or ""
    assert set(notify.split(",")) == {"SUCCESS", "FAILURE"}, params
    assert params[asked].get("ORCPT") == orcpt, params
    assert "NOTIFY" not in params[plain], params
    time.sleep(1.0)
    assert relay.server.maildir(sender) == []  # the peer reports success, not us


def test_relayed_notice_when_the_peer_has_no_dsn(relay: Relay) -> None:
    """RFC 3461 §4.2: NOTIFY=SUCCESS and a peer without DSN → we say ``relayed``."""
    domain = f"nodsn-{tag()}.test"
    sink = relay.sink(Script(extensions=NO_DSN))
    (mx_name,) = relay.mx(domain, [(10, sink.host)])
    sender, rcpt = _sender(), f"user@{domain}"
    submit(
        relay.server,
        sender,
        [rcpt],
        message("relayed", "the body\r\n"),
        mail_params="ENVID=env-77",
        rcpt_params={rcpt: "NOTIFY=SUCCESS ORCPT=rfc822;first@before.example"},
    )
    (got,) = wait_until(lambda: sink.messages, 5, "not delivered")
    assert got.mail_params == {} or "ENVID" not in got.mail_params
    assert "NOTIFY" not in got.rcpt_params[0] and "ORCPT" not in got.rcpt_params[0]
    (dsn,) = wait_dsns(relay.server, sender, 1, 5)
    assert dsn.subject == "Delivery Status Notification (relayed)"
    r = dsn.recipient(rcpt)
    assert r["action"] == "relayed" and r["status"].startswith("2."), r
    assert r["original-recipient"] == "rfc822; first@before.example"
    assert r["remote-mta"] == f"dns; {mx_name}"
    assert dsn.report["original-envelope-id"] == "env-77"
    assert dsn.returned_type == "text/rfc822-headers" and b"the body" not in dsn.returned


def test_failure_notice_honours_ret_envid_orcpt(relay: Relay) -> None:
    domain = f"ret-{tag()}.test"
    rcpt = f"gone@{domain}"
    sink = relay.sink(Script(rcpt={rcpt: "550 5.1.1 <gone> no such user"}))
    relay.mx(domain, [(10, sink.host)])
    sender = _sender()
    submit(
        relay.server,
        sender,
        [rcpt],
        message("ret hdrs", "secret body\r\n"),
        mail_params="RET=HDRS ENVID=abc-1",
        rcpt_params={rcpt: "NOTIFY=FAILURE ORCPT=rfc822;alias@before.example"},
    )
    (dsn,) = wait_dsns(relay.server, sender, 1, 5)
    r = dsn.recipient(rcpt)
    assert (r["action"], r["status"]) == ("failed", "5.1.1")
    assert r["original-recipient"] == "rfc822; alias@before.example"
    assert r["diagnostic-code"] == "smtp; 550 5.1.1 <gone> no such user"
    assert dsn.report["original-envelope-id"] == "abc-1"
    assert dsn.returned_type == "text/rfc822-headers"
    assert b"Subject: ret hdrs" in dsn.returned and b"secret body" not in dsn.returned
    assert not sink.messages


def test_one_notice_for_failures_at_several_destinations(relay: Relay) -> None:
    """Recipients in two domains fail in the same queue run: one DSN with both blocks."""
    sender = _sender()
    rcpts = []
    for _ in range(2):
        domain = f"multi-{tag()}.test"
        relay.mx(domain, [(10, relay.sink(Script(rcpt="550 5.1.1 unknown")).host)])
        rcpts.append(f"user@{domain}")
    submit(relay.server, sender, rcpts, message("two domains"))
    (dsn,) = wait_dsns(relay.server, sender, 1, 5)
    assert sorted(r["final-recipient"] for r in dsn.recipients) == [
        f"rfc822; {a}" for a in sorted(rcpts)
    ]
    time.sleep(0.5)
    assert len(relay.server.maildir(sender)) == 1


def test_ret_full_beyond_the_size_cap_returns_headers_only(relay: Relay) -> None:
    domain = f"bigret-{tag()}.test"
    relay.mx(domain, [(10, relay.sink(Script(rcpt="550 5.1.1 unknown")).host)])
    sender, rcpt = _sender(), f"user@{domain}"
    body = ("y" * 98 + "\r\n") * 1500  # 150 kB: over the 100 kB cap for a returned message
    submit(relay.server, sender, [rcpt], message("big one", body), mail_params="RET=FULL")
    (dsn,) = wait_dsns(relay.server, sender, 1, 5)
    assert dsn.returned_type == "text/rfc822-headers"
    assert b"Subject: big one" in dsn.returned and b"yyyy" not in dsn.returned


def test_notify_never_means_no_bounce(relay: Relay) -> None:
    domain = f"never-{tag()}.test"
    sink = relay.sink(Script(rcpt="550 5.1.1 nobody"))
    relay.mx(domain, [(10, sink.host)])
    sender, rcpt = _sender(), f"user@{domain}"
    qid = submit(relay.server, sender, [rcpt], message("never"), rcpt_params={rcpt: "NOTIFY=NEVER"})
    wait_until(lambda: queued_message(relay.server, qid) is None, 5, "still queued")
    time.sleep(0.5)
    assert relay.server.maildir(sender) == []
    assert relay.server.maildir(POSTMASTER) == [] or all(
        rcpt not in parse_dsn(m).human for m in relay.server.maildir(POSTMASTER)
    )


def test_success_notice_for_local_delivery(relay: Relay) -> None:
    sender, rcpt = _sender(), f"r-{tag()}@example.test"
    submit(relay.server, sender, [rcpt], message("local"), rcpt_params={rcpt: "NOTIFY=SUCCESS"})
    relay.server.wait_for_mail(rcpt)
    (dsn,) = wait_dsns(relay.server, sender, 1, 5)
    assert dsn.subject == "Successful Mail Delivery Report"
    r = dsn.recipient(rcpt)
    assert r["action"] == "delivered" and r["status"].startswith("2."), r


def _postmaster_copies(relay: Relay, about: str) -> list[Dsn]:
    dsns = [parse_dsn(m) for m in relay.server.maildir(POSTMASTER)]
    return [d for d in dsns if any(about in r["final-recipient"] for r in d.recipients)]


def test_null_sender_failure_goes_to_postmaster(relay: Relay) -> None:
    """RFC 3461 §5.2.2(d) / RFC 5321 §4.5.5: a bounce (null reverse-path) that fails is
    never bounced to <>; the postmaster gets a copy with the headers only."""
    domain = f"db-{tag()}.test"
    rcpt = f"gone@{domain}"
    sink = relay.sink(Script(rcpt="550 5.1.1 no such user"))
    relay.mx(domain, [(10, sink.host)])
    submit(relay.server, "", [rcpt], message("a bounce of someone's", "private text\r\n"))
    wait_until(lambda: _postmaster_copies(relay, rcpt), 5, "no double bounce")
    time.sleep(0.5)
    (copy,) = _postmaster_copies(relay, rcpt)
    assert copy.subject == "Postmaster Copy: Undelivered Mail"
    assert copy.recipient(rcpt)["status"] == "5.1.1"
    assert copy.returned_type == "text/rfc822-headers" and b"private text" not in copy.returned
    assert [c.split()[1] for c in sink.commands if c.startswith("MAIL")] == ["FROM:<>"]


def test_bounce_chain_stops_at_the_postmaster(relay: Relay) -> None:
    """The sender's own MX refuses the bounce: the postmaster gets one double bounce and
    nothing is bounced again."""
    sender_domain = f"badsender-{tag()}.test"
    sender = f"someone@{sender_domain}"
    sender_mx = relay.sink(Script(rcpt="550 5.7.1 we take no bounces"))
    relay.mx(sender_domain, [(10, sender_mx.host)])
    domain = f"gone-{tag()}.test"
    rcpt = f"gone@{domain}"
    relay.mx(domain, [(10, relay.sink(Script(rcpt="550 5.1.1 no such user")).host)])
    submit(relay.server, sender, [rcpt], message("chain"))
    wait_until(lambda: _postmaster_copies(relay, sender), 6, "no double bounce")
    time.sleep(1.0)
    (copy,) = _postmaster_copies(relay, sender)
    assert copy.recipient(sender)["status"] == "5.7.1"
    assert [c.split()[1] for c in sender_mx.commands if c.startswith("MAIL")] == ["FROM:<>"]
    assert not sender_mx.messages
    assert all(m["internal"] is None or rcpt not in str(m) for m in queue_list(relay.server))


def test_undeliverable_double_bounce_is_dropped(make_server: MakeServer, relay: Relay) -> None:
    """The postmaster's own mail cannot be delivered: the double bounce is dropped with a
    log line, not bounced again (no loop)."""
    pm_sink = relay.sink(Script(rcpt="550 5.2.1 mailbox disabled"))
    overrides = relay_overrides(
        relay.dns,
        relay.port,
        local={"domains": ["example.test", "pm.test"], "postmaster": "postmaster@pm.test"},
    )
    overrides["transport"] = {"pm.test": f"smtp:[{pm_sink.host}]:{relay.port}"}
    srv = make_server(overrides)
    domain = f"dd-{tag()}.test"
    rcpt_sink = relay.sink(Script(rcpt="550 5.1.1 no such user"))
    relay.mx(domain, [(10, rcpt_sink.host)])
    submit(srv, "", [f"user@{domain}"], message("null sender"))
    wait_until(lambda: "double bounce dropped" in srv.log_text(), 8, "no 'double bounce dropped'")
    time.sleep(1.0)
    tries = [c for c in pm_sink.commands if c.startswith("RCPT TO:<postmaster@pm.test>")]
    assert len(tries) == 1, pm_sink.commands
    assert not pm_sink.messages
    assert queue_list(srv) == []
    assert srv.all_mail() == {}


def _received(n: int) -> bytes:
    return b"".join(
        f"Received: from hop{i}.example ([192.0.2.{i % 250}]) by relay{i}.example; "
        f"Mon, 1 Jan 2024 00:00:{i % 60:02d} +0000\r\n".encode()
        for i in range(n)
    )


@pytest.mark.parametrize(("hops", "accepted"), [(50, True), (51, False)])
def test_hop_count_loop_detection(relay: Relay, hops: int, accepted: bool) -> None:
    """More than 50 Received fields is a loop: 554 5.4.6 at the end of data (RFC 5321
    §6.3); 50 still pass."""
    rcpt = f"r-{tag()}@example.test"
    body = _received(hops) + message("looping")
    with RawSMTP(relay.server.mx) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<s@client.test>").check(250)
        c.cmd(f"RCPT TO:<{rcpt}>").check(250)
        c.cmd("DATA").check(354)
        c.send(body + b".\r\n")
        reply = c.read_reply()
        if accepted:
            queue_id(reply.check(250))
        else:
            reply.check(554, "5.4.6")
        c.cmd("NOOP").check(250)  # the session goes on
    if accepted:
        relay.server.wait_for_mail(rcpt)
    else:
        time.sleep(0.3)
        assert relay.server.maildir(rcpt) == []
