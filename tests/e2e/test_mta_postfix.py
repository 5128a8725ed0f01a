"""Interoperability with a real Postfix (a private instance, ``tests.support.postfix``):
Postfix as the downstream MX that Kittiwake relays to (``[transport]`` to a bracketed
address), and as an upstream relay whose ``relayhost`` is Kittiwake. Skipped where a
private Postfix cannot run (not installed, not root)."""

from __future__ import annotations

import email
import email.policy
import shutil
import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mta import FAST_QUEUE, submit, tag, wait_dsns, wait_until
from tests.support.postfix import (
    PrivatePostfix,
    free_port,
    make_base_dir,
    postfix_unavailable_reason,
)
from tests.support.server import MakeServer
from tests.support.smtpclient import message

pytestmark = [
    pytest.mark.needs_root,
    pytest.mark.skipif(
        postfix_unavailable_reason() is not None, reason=str(postfix_unavailable_reason())
    ),
]


@pytest.fixture
def base_dir() -> Iterator[Path]:
    path = make_base_dir("kittiwake-mta-postfix-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _maildir_files(box: Path) -> list[bytes]:
    return [
        p.read_bytes()
        for sub in ("new", "cur")
        if (box / sub).is_dir()
        for p in (box / sub).iterdir()
    ]


def test_kittiwake_relays_into_postfix(make_server: MakeServer, base_dir: Path) -> None:
    listen = f"127.0.0.1:{free_port()}"
    pf = PrivatePostfix(
        base_dir, listen, virtual_domains=["b.test"], mailboxes=["alice@b.test"], catchall=False
    )
    with pf:
        srv = make_server(
            {"transport": {"b.test": f"smtp:[{pf.host}]:{pf.port}"}, "queue": dict(FAST_QUEUE)}
        )
        sender = f"s-{tag()}@example.test"
        body = "8-bit body: Grüße\r\n.leading dot\r\n".encode()
        content = message("to postfix", body)
        submit(srv, sender, ["alice@b.test", "nobody@b.test"], content, mail_params="BODY=8BITMIME")
        assert pf.wait_delivered("b.test", "alice", 1) == 1, pf.log()[-3000:]
        (stored,) = _maildir_files(pf.mailbox("b.test", "alice"))
        # Postfix adds Message-ID and Date (the message had none): compare the rest.
        assert stored.endswith(b"\n\n" + body.replace(b"\r\n", b"\n")), stored[-300:]
        parsed = email.message_from_bytes(stored, policy=email.policy.default)
        assert parsed["Subject"] == "to postfix" and parsed["From"] == "sender@client.test"
        assert parsed["Return-Path"] == f"<{sender}>"
        assert any("by mx.test" in str(r) for r in parsed.get_all("Received", []))
        (dsn,) = wait_dsns(srv, sender, 1, 10)
        r = dsn.recipient("nobody@b.test")
        assert r["action"] == "failed" and r["status"] == "5.1.1", r
        assert r["diagnostic-code"].startswith("smtp; 550 5.1.1"), r
        assert r["remote-mta"] == f"dns; [{pf.host}]", r
        assert pf.wait_delivered("b.test", "alice", 2, timeout=0.3) == 1  # exactly once


def test_postfix_relays_into_kittiwake(make_server: MakeServer, base_dir: Path) -> None:
    srv = make_server()
    listen = f"127.0.0.1:{free_port()}"
    relayhost = f"[{srv.mx[0]}]:{srv.mx[1]}"
    with PrivatePostfix(base_dir, listen, main_cf_extra={"relayhost": relayhost}) as pf:
        rcpts = [f"r{i}-{tag()}@example.test" for i in range(3)]
        content = message("through postfix", "relayed by postfix\r\n")
        with smtplib.SMTP(pf.host, pf.port, timeout=10) as client:
            client.ehlo("client.test")
            refused = client.sendmail("someone@client.test", rcpts, content)
            assert refused == {}
        for rcpt in rcpts:
            (stored,) = srv.wait_for_mail(rcpt, 1, 20)
            assert stored.startswith(b"Return-Path: <someone@client.test>")
            assert b"relayed by postfix" in stored
            parsed = email.message_from_bytes(stored, policy=email.policy.default)
            received = [str(r) for r in parsed.get_all("Received", [])]
            assert "by mx.test" in received[0] and "postfix.test" in received[0], received
        wait_until(lambda: pf.queue_count() == 0, 10, "Postfix kept mail queued")
        assert "status=sent" in pf.log()
