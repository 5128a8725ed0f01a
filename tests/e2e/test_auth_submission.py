"""Submission with real users (RFC 6409, RFC 4954): AUTH only under TLS on 587 (538 before),
at once on 465, each mechanism, bad credentials, MAIL before AUTH (530), sender ownership
(553 5.7.1), relaying after AUTH, users' addresses as mailboxes, and changes made with
``kittiwake user`` while the daemon runs."""

from __future__ import annotations

import re
import smtplib
import time
import uuid
from collections.abc import Iterator

import aiosmtplib
import pytest

from tests.e2e.conftest import _remember
from tests.support.auth import (
    add_user,
    b64,
    login_plain,
    login_scram,
    plain,
    tls_session,
    user_cli,
    write_config,
)
from tests.support.mta import Addresses, SinkHost, common_port, wait_until
from tests.support.scram import ScramClient, smtplib_authobject
from tests.support.server import KittiwakeServer
from tests.support.sinks import Sink
from tests.support.smtpclient import RawSMTP, client_tls_context, message, queue_id

ALICE, ALICE_PW = "alice", "correct horse battery"
BOB, BOB_PW = "bob@example.test", "bob's pässword"  # non-ASCII: SASLprep on both sides


class Env:
    def __init__(self, server: KittiwakeServer, sink: Sink) -> None:
        self.server = server
        self.sink = sink


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    port = common_port()
    sinks = SinkHost()
    sink = sinks.start(Addresses(port).next(), port)
    server = KittiwakeServer(
        tmp_path_factory.mktemp("auth-submission"),
        {
            "relay": {"smarthost": f"[{sink.host}]:{port}", "tls_policy": "none"},
            "queue": {"retry_first": 1, "retry_max": 2},
        },
    )
    write_config(server)
    add_user(server, ALICE, ALICE_PW, "alice@example.test", "a.smith@example.test")
    add_user(server, BOB, BOB_PW)  # owns bob@example.test: its name is an address
    add_user(server, "mallory", "mallory-pw", "mallory@example.test")
    assert user_cli(server, "disable", "mallory").returncode == 0
    try:
        server.start()
        yield Env(server, sink)
    finally:
        server.stop_or_kill()
        sinks.close()


@pytest.fixture
def server(env: Env, request: pytest.FixtureRequest) -> KittiwakeServer:
    _remember(request, env.server)
    return env.server


def subject() -> str:
    return f"auth-{uuid.uuid4().hex[:10]}"


def mailbox_has(server: KittiwakeServer, addr: str, subj: str) -> bool:
    return any(f"Subject: {subj}".encode() in m for m in server.maildir(addr))


# ------------------------------------------------------------------ where AUTH is offered


def test_auth_before_starttls_is_538_then_235_after(server: KittiwakeServer) -> None:
    with RawSMTP(server.submission) as c:
        assert "AUTH" not in c.ehlo().keywords  # RFC 4954 §6: never advertised in clear
        login_plain(c, ALICE, ALICE_PW).check(538, "5.7.11")
        c.cmd("AUTH SCRAM-SHA-256").check(538, "5.7.11")
        c.starttls()
        assert c.ehlo().keywords["AUTH"].split() == ["PLAIN", "LOGIN", "SCRAM-SHA-256"]
        login_plain(c, ALICE, ALICE_PW).check(235, "2.7.0")
        c.cmd(f"AUTH PLAIN {plain(ALICE, ALICE_PW)}").check(503, "5.5.1")  # once only


def test_implicit_tls_offers_auth_at_once(server: KittiwakeServer) -> None:
    with RawSMTP(server.smtps, implicit_tls=True) as c:
        assert "SCRAM-SHA-256" in c.ehlo().keywords["AUTH"].split()
        login_scram(c, BOB, BOB_PW).check(235, "2.7.0")


def test_mx_offers_no_auth(server: KittiwakeServer) -> None:
    with RawSMTP(server.mx) as c:
        c.ehlo()
        c.starttls()
        assert "AUTH" not in c.ehlo().keywords
        login_plain(c, ALICE, ALICE_PW).check(502, "5.5.1")


# --------------------------------------------------------------------------- mechanisms


def test_plain_with_and_without_initial_response(server: KittiwakeServer) -> None:
    with tls_session(server) as c:
        c.cmd("AUTH PLAIN").check(334)
        c.cmd(plain("ALICE", ALICE_PW)).check(235, "2.7.0")  # user names ignore case
    with tls_session(server) as c:
        login_plain(c, BOB, BOB_PW).check(235, "2.7.0")


def test_login(server: KittiwakeServer) -> None:
    with tls_session(server) as c:
        c.cmd("AUTH LOGIN").check(334)
        c.cmd(b64(ALICE)).check(334)
        c.cmd(b64(ALICE_PW)).check(235, "2.7.0")


def test_scram_sha_256(server: KittiwakeServer) -> None:
    with tls_session(server) as c:
        login_scram(c, ALICE, ALICE_PW).check(235, "2.7.0")
    with tls_session(server) as c:  # the empty initial challenge, then client-first
        client = ScramClient(BOB, BOB_PW)
        assert c.cmd("AUTH SCRAM-SHA-256").check(334).lines == ("",)
        assert c.cmd(b64(client.first())).code == 334


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "SCRAM-SHA-256"])
def test_wrong_password_is_535(server: KittiwakeServer, mechanism: str) -> None:
    with tls_session(server, source_ip="127.0.0.20") as c:
        if mechanism == "PLAIN":
            reply = login_plain(c, ALICE, "wrong")
        elif mechanism == "LOGIN":
            c.cmd(f"AUTH LOGIN {b64(ALICE)}").check(334)
            reply = c.cmd(b64("wrong"))
        else:
            reply = login_scram(c, ALICE, "wrong")
        reply.check(535, "5.7.8")
        login_plain(c, ALICE, ALICE_PW).check(235, "2.7.0")  # may try again


@pytest.mark.parametrize("user", ["nobody", "mallory"])  # unknown; disabled
def test_unknown_and_disabled_users_are_535(server: KittiwakeServer, user: str) -> None:
    with tls_session(server, source_ip="127.0.0.21") as c:
        login_plain(c, user, "mallory-pw").check(535, "5.7.8")
        login_scram(c, user, "mallory-pw").check(535, "5.7.8")


def test_cancel_is_501(server: KittiwakeServer) -> None:
    with tls_session(server) as c:
        c.cmd("AUTH SCRAM-SHA-256").check(334)
        c.cmd("*").check(501, "5.0.0")
        login_plain(c, ALICE, ALICE_PW).check(235, "2.7.0")


def test_smtplib_login_and_scram(server: KittiwakeServer) -> None:
    with smtplib.SMTP(*server.submission, local_hostname="client.test", timeout=10) as s:
        s.starttls(context=client_tls_context())
        assert s.login(ALICE, ALICE_PW)[0] == 235
    with smtplib.SMTP_SSL(
        *server.smtps, local_hostname="client.test", context=client_tls_context(), timeout=10
    ) as s:
        s.ehlo()
        client = ScramClient(ALICE, ALICE_PW)
        assert s.auth("SCRAM-SHA-256", smtplib_authobject(client))[0] == 235
        assert client.verified  # the server proved it knows the keys too


# ------------------------------------------------------------- submission rules (RFC 6409)


@pytest.mark.parametrize("port", ["submission", "smtps"])
def test_mail_before_auth_is_530(server: KittiwakeServer, port: str) -> None:
    if port == "submission":
        c = tls_session(server)
    else:
        c = RawSMTP(server.smtps, implicit_tls=True)
        c.ehlo()
    with c:
        c.cmd("MAIL FROM:<alice@example.test>").check(530, "5.7.0")
        c.cmd("RCPT TO:<bob@example.test>").check(503, "5.5.1")
        login_plain(c, ALICE, ALICE_PW).check(235)
        c.cmd("MAIL FROM:<alice@example.test>").check(250, "2.1.0")


@pytest.mark.parametrize(
    "sender",
    [
        "alice@example.test",
        "ALICE@EXAMPLE.TEST",
        "a.smith@example.test",
        "alice+lists@example.test",
        "",
    ],
)
def test_own_addresses_accepted(server: KittiwakeServer, sender: str) -> None:
    with tls_session(server) as c:
        login_plain(c, ALICE, ALICE_PW).check(235)
        c.cmd(f"MAIL FROM:<{sender}>").check(250, "2.1.0")


@pytest.mark.parametrize(
    "sender",
    ["bob@example.test", "mallory@example.test", "alice@elsewhere.test", "x+alice@example.test"],
)
def test_other_addresses_refused_553(server: KittiwakeServer, sender: str) -> None:
    with tls_session(server) as c:
        login_plain(c, ALICE, ALICE_PW).check(235)
        reply = c.cmd(f"MAIL FROM:<{sender}>").check(553, "5.7.1")
        assert reply.text == "5.7.1 Sender address rejected: not owned by user alice"
        c.cmd("MAIL FROM:<alice@example.test>").check(250, "2.1.0")  # the session goes on


def test_auth_param_accepted(server: KittiwakeServer) -> None:
    with tls_session(server) as c:
        login_plain(c, ALICE, ALICE_PW).check(235)
        c.cmd("MAIL FROM:<alice@example.test> AUTH=<>").check(250, "2.1.0")
        c.cmd("RSET").check(250)
        c.cmd("MAIL FROM:<alice@example.test> AUTH=bob@example.test").check(250, "2.1.0")


# ---------------------------------------------------------------- relaying and mailboxes


def test_relay_to_a_foreign_domain_needs_auth(env: Env, server: KittiwakeServer) -> None:
    subj = subject()
    with RawSMTP(server.mx) as c:  # the world, unauthenticated: no relay
        c.ehlo()
        c.cmd("MAIL FROM:<alice@example.test>").check(250)
        c.cmd("RCPT TO:<friend@elsewhere.test>").check(554, "5.7.1")
    with tls_session(server) as c:
        login_plain(c, ALICE, ALICE_PW).check(235)
        c.send_mail("alice@example.test", ["friend@elsewhere.test"], message(subj)).check(250)
    got = wait_until(
        lambda: [m for m in env.sink.messages if f"Subject: {subj}".encode() in m.content],
        15,
        "the relayed message at the smarthost sink",
    )
    assert got[0].sender == "alice@example.test"
    assert got[0].recipients == ["friend@elsewhere.test"]
    assert b"with ESMTPSA" in got[0].content  # RFC 3848: TLS and AUTH


def test_users_addresses_are_the_mailboxes(server: KittiwakeServer) -> None:
    subj = subject()
    with RawSMTP(server.mx) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<someone@client.test>").check(250)
        c.cmd("RCPT TO:<nobody@example.test>").check(550, "5.1.1")  # users exist: no catch-all
        c.cmd("RCPT TO:<postmaster@example.test>").check(250)
        c.cmd("RCPT TO:<A.Smith@example.test>").check(250)
        c.cmd("RCPT TO:<bob@example.test>").check(250)
        c.cmd("DATA").check(354)
        c.send(message(subj) + b".\r\n")
        c.read_reply().check(250)
    wait_until(lambda: mailbox_has(server, "bob@example.test", subj), 10, "mail for bob")
    wait_until(lambda: mailbox_has(server, "a.smith@example.test", subj), 10, "for a.smith")


def _rcpt_code(server: KittiwakeServer, addr: str) -> int:
    with RawSMTP(server.mx) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<>").check(250)
        return c.cmd(f"RCPT TO:<{addr}>").code


def test_cli_changes_while_running(server: KittiwakeServer) -> None:
    name = f"dave{uuid.uuid4().hex[:6]}"
    addr = f"{name}@example.test"
    assert _rcpt_code(server, addr) == 550
    add_user(server, name, "first password", addr)
    # The daemon's snapshot follows within about a second.
    wait_until(lambda: _rcpt_code(server, addr) == 250, 10, "the new mailbox")
    with tls_session(server) as c:
        login_plain(c, name, "first password").check(235)
        c.cmd(f"MAIL FROM:<{addr}>").check(250)
    proc = user_cli(server, "passwd", name, "--password-stdin", stdin="second password\n")
    assert proc.returncode == 0, proc.stderr
    time.sleep(1.5)
    with tls_session(server, source_ip="127.0.0.22") as c:
        login_plain(c, name, "first password").check(535, "5.7.8")
        login_plain(c, name, "second password").check(235)
    extra = f"{name}.extra@example.test"
    assert user_cli(server, "address", "add", name, extra).returncode == 0
    time.sleep(1.5)
    with tls_session(server) as c:
        login_plain(c, name, "second password").check(235)
        c.cmd(f"MAIL FROM:<{extra}>").check(250)
    assert user_cli(server, "del", name).returncode == 0
    wait_until(lambda: _rcpt_code(server, addr) == 550, 10, "the mailbox gone")
    with tls_session(server, source_ip="127.0.0.22") as c:
        login_plain(c, name, "second password").check(535, "5.7.8")


# ------------------------------------------------------- delivered through 465 and 587


def _received(msg: bytes) -> str:
    head = msg.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode()
    m = re.search(r"^Received:(.*(?:\n[ \t].*)*)", head, re.M)
    assert m, head
    return " ".join(m[1].split())


def _mail_for_bob(server: KittiwakeServer, subj: str) -> bytes:
    found = wait_until(
        lambda: [m for m in server.maildir(BOB) if f"Subject: {subj}".encode() in m],
        10,
        f"{subj} in bob's Maildir",
    )
    return found[0]


def test_implicit_tls_delivery_trace(server: KittiwakeServer) -> None:
    """RFC 8314 §3.3 and RFC 3848: the Received line says ESMTPSA and the TLS version."""
    subj = subject()
    with RawSMTP(server.smtps, implicit_tls=True) as c:
        c.ehlo()
        login_plain(c, ALICE, ALICE_PW).check(235)
        qid = queue_id(c.send_mail("alice@example.test", [BOB], message(subj)).check(250))
        version = c.tls_version
    received = _received(_mail_for_bob(server, subj))
    assert re.search(r"\bwith ESMTPSA\b", received), received
    assert f"id {qid}" in received
    assert re.search(rf"\(using {re.escape(str(version))}\b[^)]*\)", received), received


def test_smtplib_smtp_ssl_sends(server: KittiwakeServer) -> None:
    subj = subject()
    with smtplib.SMTP_SSL(
        *server.smtps, local_hostname="client.test", context=client_tls_context(), timeout=10
    ) as s:
        s.login(ALICE, ALICE_PW)
        s.sendmail("a.smith@example.test", [BOB], message(subj))
    assert "ESMTPSA" in _received(_mail_for_bob(server, subj))


async def test_aiosmtplib_starttls_and_implicit(server: KittiwakeServer) -> None:
    subjects = [subject(), subject()]
    for subj, port, implicit in (
        (subjects[0], server.submission[1], False),
        (subjects[1], server.smtps[1], True),
    ):
        errors, _ = await aiosmtplib.send(
            message(subj),
            sender="alice@example.test",
            recipients=[BOB],
            hostname=server.smtps[0],
            port=port,
            use_tls=implicit,
            start_tls=not implicit,
            tls_context=client_tls_context(),
            username=ALICE,
            password=ALICE_PW,
            local_hostname="client.test",
            timeout=10,
        )
        assert errors == {}
    for subj in subjects:
        assert "ESMTPSA" in _received(_mail_for_bob(server, subj))
