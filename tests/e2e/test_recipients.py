"""Recipient placement: mailboxes, postmaster (RFC 5321 §4.5.1), relay refusal on every
listener, and the recipient limit (RFC 5321 §4.5.3.1.8)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.server import KittiwakeServer
from tests.support.smtpclient import RawSMTP, message


@pytest.fixture(scope="module")
def users_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KittiwakeServer]:
    srv = KittiwakeServer(
        tmp_path_factory.mktemp("kittiwake-users"),
        {
            "local": {
                "domains": ["example.test", "other.test"],
                "users": ["alice", "bob@other.test"],
                "postmaster": "hostmaster@example.test",
            }
        },
    )
    srv.start()
    yield srv
    srv.stop()


@pytest.mark.parametrize(
    ("rcpt", "code", "enhanced"),
    [
        ("alice@example.test", 250, "2.1.5"),
        ("ALICE@Example.TEST", 250, "2.1.5"),  # local parts of mailboxes compared case-blind
        ("alice@other.test", 250, "2.1.5"),
        ("bob@other.test", 250, "2.1.5"),
        ("bob@example.test", 550, "5.1.1"),  # bob is a mailbox of other.test only
        ("carol@example.test", 550, "5.1.1"),
        ("postmaster@other.test", 250, "2.1.5"),
        ("alice@elsewhere.test", 554, "5.7.1"),
        ("alice@example.test.elsewhere.test", 554, "5.7.1"),
        ("alice@[192.0.2.1]", 554, "5.7.1"),
        ("@example.test:victim@elsewhere.test", 554, "5.7.1"),  # the route is ignored
    ],
)
def test_recipient_placement(
    users_server: KittiwakeServer, rcpt: str, code: int, enhanced: str
) -> None:
    with RawSMTP(users_server.mx) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<s@client.test>").check(250, "2.1.0")
        c.cmd(f"RCPT TO:<{rcpt}>").check(code, enhanced)


def test_postmaster_routed_to_configured_mailbox(users_server: KittiwakeServer) -> None:
    with RawSMTP(users_server.mx) as c:
        c.ehlo()
        before = len(users_server.maildir("hostmaster@example.test"))
        c.cmd("MAIL FROM:<>").check(250, "2.1.0")
        for rcpt in ("<postmaster>", "<POSTMASTER>", "<PostMaster@example.test>"):
            c.cmd(f"RCPT TO:{rcpt}").check(250, "2.1.5")
        c.cmd("DATA").check(354)
        c.send(message("for the postmaster") + b".\r\n")
        c.read_reply().check(250, "2.0.0")
    msgs = users_server.wait_for_mail("hostmaster@example.test", before + 1)
    assert b"Subject: for the postmaster" in msgs[-1]
    assert users_server.maildir("postmaster@example.test") == []


def test_delivery_to_a_configured_user(users_server: KittiwakeServer) -> None:
    with RawSMTP(users_server.mx) as c:
        c.ehlo()
        before = len(users_server.maildir("alice@example.test"))
        c.send_mail("s@client.test", ["Alice@Example.Test"], message("to alice")).check(250)
    msgs = users_server.wait_for_mail("alice@example.test", before + 1)
    assert b"Subject: to alice" in msgs[-1]


@pytest.mark.parametrize("role", ["mx", "submission", "submission+tls", "smtps"])
def test_never_an_open_relay(server: KittiwakeServer, role: str) -> None:
    addr = server.smtps if role == "smtps" else getattr(server, role.split("+")[0])
    with RawSMTP(addr, implicit_tls=role == "smtps") as c:
        c.ehlo()
        if role.endswith("+tls"):
            c.starttls()
            c.ehlo()
        if role != "mx":  # RFC 6409 §4.3: submission takes no mail before AUTH at all
            c.cmd("MAIL FROM:<someone@example.test>").check(530, "5.7.0")
            return
        c.cmd("MAIL FROM:<someone@example.test>").check(250, "2.1.0")
        for rcpt in (
            "victim@elsewhere.test",
            "victim@[192.0.2.1]",
            "victim@[IPv6:2001:db8::1]",
            "@example.test:victim@elsewhere.test",
        ):
            c.cmd(f"RCPT TO:<{rcpt}>").check(554, "5.7.1")
        c.cmd("DATA").check(554, "5.5.1")


def test_recipient_limit(server: KittiwakeServer, mailboxes) -> None:
    rcpts = mailboxes(101)
    with RawSMTP(server.mx) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<s@client.test>").check(250, "2.1.0")
        c.send("".join(f"RCPT TO:<{r}>\r\n" for r in rcpts))
        for _ in range(100):
            c.read_reply().check(250, "2.1.5")
        c.read_reply().check(452, "4.5.3")  # RFC 5321 §4.5.3.1.10
        c.cmd("RCPT TO:<postmaster>").check(452, "4.5.3")
        c.cmd("DATA").check(354)
        c.send(message("hundred") + b".\r\n")
        c.read_reply().check(250, "2.0.0")
    for r in rcpts[:100]:
        server.wait_for_mail(r, timeout=20)
    assert server.maildir(rcpts[100]) == []
