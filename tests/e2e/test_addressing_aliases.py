"""Aliases, virtual domains, catch-all, sub-addressing and the open-relay list, through the
wire against the real daemon (nobody may relay: ``relay.mynetworks = []``).

One daemon for the module; each test uses its own sender so that notices and counts of
one test never mix with another's."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.dsn_read import parse_dsn
from tests.support.mta import Relay, relay_env, tag
from tests.support.server import KittiwakeServer
from tests.support.smtpclient import RawSMTP, message

SECRET = "e2e-addressing-secret-0123456789"
CONFIG: dict[str, dict[str, Any]] = {
    "local": {
        "domains": ["example.test", "example.org"],
        "users": ["alice", "bob", "carol", "catchme"],
        "postmaster": "postmaster@example.test",
    },
    "virtual": {"domains": ["virtual.test"], "mailboxes": ["vic@virtual.test"]},
    "aliases": {
        "team@example.test": ["alice@example.test", "bob@example.test"],
        "nested@example.test": ["team@example.test", "carol", "alice@example.test"],
        "sales@virtual.test": "vic@virtual.test",
        "@virtual.test": "catchme@example.test",
        "loop1@example.test": ["loop2@example.test"],
        "loop2@example.test": ["loop1@example.test", "carol@example.test"],
        "pure1@example.test": "pure2@example.test",
        "pure2@example.test": "pure1@example.test",
        "self@example.test": ["self@example.test", "bob@example.test"],
    },
    "srs": {"secret": SECRET},
    "relay": {"mynetworks": []},
}


# Until app.py wires addressing.setup.build_directory (H14's report), the daemon has no
# aliases or SRS: skip. DELETE this marker with the wiring; from then on these must run.
@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    with relay_env(tmp_path_factory.mktemp("addressing-aliases"), **CONFIG) as env:
        yield env


def send(server: KittiwakeServer, sender: str, rcpts: list[str], subject: str) -> str:
    with RawSMTP(server.mx) as c:
        c.ehlo()
        reply = c.send_mail(sender, rcpts, message(subject))
        reply.check(250)
        c.cmd("QUIT")
    return reply.text


def counts(server: KittiwakeServer, *addrs: str) -> dict[str, int]:
    return {a: len(server.maildir(a)) for a in addrs}


def headers(raw: bytes) -> email.message.Message:
    return email.message_from_bytes(raw, policy=email.policy.default)


def test_alias_to_several_local_mailboxes_one_queue_id(relay: Relay) -> None:
    srv = relay.server
    before = counts(srv, "alice@example.test", "bob@example.test")
    text = send(srv, f"s-{tag()}@sender.example", ["team@example.test"], "team")
    assert text.count("queued as") == 1
    for addr in before:
        got = headers(srv.wait_for_mail(addr, before[addr] + 1)[-1])
        assert got["Delivered-To"] == addr and got["Subject"] == "team"


def test_nested_alias_without_duplicates(relay: Relay) -> None:
    srv = relay.server
    addrs = ("alice@example.test", "bob@example.test", "carol@example.test")
    before = counts(srv, *addrs)
    send(srv, f"s-{tag()}@sender.example", ["nested@example.test", "ALICE@example.test"], "nest")
    for addr in addrs:
        srv.exactly(addr, before[addr] + 1)  # alice once, though named three times


def test_sub_addressing_keeps_the_full_address(relay: Relay) -> None:
    srv = relay.server
    before = len(srv.maildir("bob@example.test"))
    send(srv, f"s-{tag()}@sender.example", ["bob+news@example.test"], "plus")
    got = headers(srv.wait_for_mail("bob@example.test", before + 1)[-1])
    assert got["Delivered-To"] == "bob+news@example.test" and got["Subject"] == "plus"
    assert not srv.mailbox_dir("bob+news@example.test").exists()


def test_virtual_domain_mailbox_alias_and_catch_all(relay: Relay) -> None:
    srv = relay.server
    before = counts(srv, "vic@virtual.test", "catchme@example.test")
    send(srv, f"s-{tag()}@sender.example", ["vic@virtual.test"], "virtual")
    send(srv, f"s-{tag()}@sender.example", ["sales@virtual.test"], "virtual alias")
    send(srv, f"s-{tag()}@sender.example", [f"who-{tag()}@virtual.test"], "catch-all")
    vic = srv.wait_for_mail("vic@virtual.test", before["vic@virtual.test"] + 2)
    assert (srv.data_dir / "mail" / "virtual.test" / "vic" / "new").is_dir()
    assert {headers(m)["Subject"] for m in vic[-2:]} == {"virtual", "virtual alias"}
    caught = srv.wait_for_mail("catchme@example.test", before["catchme@example.test"] + 1)
    assert headers(caught[-1])["Subject"] == "catch-all"


@pytest.mark.parametrize(
    "rcpt",
    [
        "nobody@example.test",
        "nobody@example.org",
        "nobody+tag@example.test",
        "pure1@example.test",  # a loop with no mailbox anywhere in it
        "SRS0=abcd=2W=sender.example=s@example.test",  # SRS-looking, but forged
    ],
)
def test_unknown_addresses_550_5_1_1(relay: Relay, rcpt: str) -> None:
    with RawSMTP(relay.server.mx) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<s@sender.example>").check(250)
        c.cmd(f"RCPT TO:<{rcpt}>").check(550, "5.1.1")


def test_alias_loops_deliver_what_exists_and_bounce_the_rest(relay: Relay) -> None:
    """loop1 → loop2 → (loop1, carol): carol gets it; loop1, reached again, has no mailbox
    and bounces 5.1.1. self → (self, bob): bob gets it, self bounces."""
    srv = relay.server
    before = counts(srv, "carol@example.test", "bob@example.test", "alice@example.test")
    sender = "alice@example.test"  # the notice lands in a Maildir we can read
    send(srv, sender, ["loop1@example.test", "self@example.test"], "loops")
    srv.wait_for_mail("carol@example.test", before["carol@example.test"] + 1)
    srv.wait_for_mail("bob@example.test", before["bob@example.test"] + 1)
    dsn = parse_dsn(srv.wait_for_mail(sender, before[sender] + 1)[-1])
    for addr in ("loop1@example.test", "self@example.test"):
        r = dsn.recipient(addr)
        assert r["action"] == "failed" and r["status"] == "5.1.1"
    original = dsn.recipient("loop1@example.test")["original-recipient"]
    assert original.replace(" ", "") == "rfc822;loop1@example.test"


@pytest.mark.parametrize(
    ("rcpt", "code", "enhanced"),
    [
        (f"user%victim.example@{d}", 554, "5.7.1")
        for d in ("example.test", "virtual.test", "[127.0.0.1]")
    ]
    + [
        ('"user@victim.example"@example.test', 554, "5.7.1"),
        ('"user@victim.example"@virtual.test', 554, "5.7.1"),  # the catch-all opens nothing
        ("victim.example!user@example.test", 554, "5.7.1"),
        ("@example.test:user@victim.example", 554, "5.7.1"),
        ("@virtual.test,@example.test:user@victim.example", 554, "5.7.1"),
        ("user@victim.example@example.test", 501, None),  # not even a path
        ("user@[127.0.0.2]", 554, "5.7.1"),  # an address literal of another host
        ("user@[IPv6:::2]", 554, "5.7.1"),
        ("user@victim.example", 554, "5.7.1"),
        ("user@example.test.victim.example", 554, "5.7.1"),
    ],
)
def test_open_relay_list_refused_on_the_mx_port(
    relay: Relay, rcpt: str, code: int, enhanced: str | None
) -> None:
    with RawSMTP(relay.server.mx) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<s@sender.example>").check(250)
        reply = c.cmd(f"RCPT TO:<{rcpt}>")
        assert reply.code == code or (code == 501 and reply.code in (501, 553)), reply
        if enhanced is not None:
            assert reply.enhanced == enhanced, reply


def test_our_own_address_literal_is_local(relay: Relay) -> None:
    srv = relay.server
    before = len(srv.maildir("alice@example.test"))
    send(srv, f"s-{tag()}@sender.example", ["alice@[127.0.0.1]"], "literal")
    got = headers(srv.wait_for_mail("alice@example.test", before + 1)[-1])
    assert got["Subject"] == "literal"
