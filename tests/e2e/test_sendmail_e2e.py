"""``sendmail`` and ``kittiwake sendmail`` against the real daemon: maildrop → pickup →
cleanup (submission rewriting) → queue → Maildir; with the server up, and down then up."""

from __future__ import annotations

import email
import email.policy
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.server import KittiwakeServer, MakeServer, to_toml

BIN = Path(sys.executable).parent
SENDMAIL = [str(BIN / "sendmail")]
KITTIWAKE_SENDMAIL = [str(BIN / "kittiwake"), "sendmail"]


def sendmail(
    server: KittiwakeServer, args: list[str], stdin: bytes, *, command: list[str] = SENDMAIL
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*command, "--config", str(server.config_path), *args],
        input=stdin,
        capture_output=True,
        timeout=30,
        cwd=server.root,
    )


def parse(raw: bytes) -> email.message.EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


def maildrop(server: KittiwakeServer) -> list[Path]:
    d = server.data_dir / "maildrop"
    return sorted(p for p in d.iterdir() if not p.name.startswith(".")) if d.is_dir() else []


def test_sendmail_delivers_with_date_and_message_id_added(
    server: KittiwakeServer, mailbox: str
) -> None:
    local = mailbox.split("@")[0]
    done = sendmail(
        server,
        ["-oi", local],
        b"Subject: cron output\nTo: " + local.encode() + b"\n\nline 1\n.\nline 3\n",
    )
    assert done.returncode == 0, done.stderr
    [raw] = server.wait_for_mail(mailbox)
    msg = parse(raw)
    assert msg["Subject"] == "cron output"
    assert msg["To"] == mailbox  # qualified with [submission] rewrite_domain
    assert msg["Date"] is not None and msg["Message-ID"] is not None
    assert msg["Message-ID"].endswith("@mx.test>")
    assert "(Kittiwake, from userid " in msg["Received"]
    assert msg.get_content() == "line 1\n.\nline 3\n"  # -oi: the lone dot is content
    assert maildrop(server) == []


def test_kittiwake_sendmail_keeps_present_headers(server: KittiwakeServer, mailbox: str) -> None:
    message = (
        b"From: Someone <someone@example.org>\nDate: Mon, 01 Jan 2024 00:00:00 +0000\n"
        b"Message-ID: <fixed@example.org>\nSubject: kept\n\nbody\n"
    )
    done = sendmail(
        server, ["-f", "someone@example.org", mailbox], message, command=KITTIWAKE_SENDMAIL
    )
    assert done.returncode == 0, done.stderr
    msg = parse(server.wait_for_mail(mailbox)[0])
    assert msg["Message-ID"] == "<fixed@example.org>"
    assert msg["Date"] == "Mon, 01 Jan 2024 00:00:00 +0000"
    assert msg["Return-Path"] == "<someone@example.org>"


def test_t_with_bcc(server: KittiwakeServer, mailboxes: Callable[[int], list[str]]) -> None:
    to, bcc = mailboxes(2)
    message = f"To: {to}\nBcc: {bcc}\nSubject: blind\n\nhello\n".encode()
    done = sendmail(server, ["-t", "-i", "-F", "Cron Daemon"], message)
    assert done.returncode == 0, done.stderr
    seen = parse(server.wait_for_mail(to)[0])
    blind = parse(server.wait_for_mail(bcc)[0])  # the Bcc recipient still gets it
    for msg in (seen, blind):
        assert msg["Bcc"] is None and msg["Subject"] == "blind"
        assert msg["From"].startswith("Cron Daemon <")
    assert bcc not in seen.as_string()
    assert blind["Delivered-To"] == bcc  # its only mention: added at delivery, to its copy
    assert blind.as_string().count(bcc) == 1


def test_sendmail_bs_through_the_server(server: KittiwakeServer, mailbox: str) -> None:
    dialogue = (
        f"HELO localhost\r\nMAIL FROM:<robot@example.test>\r\nRCPT TO:<{mailbox}>\r\n"
        "DATA\r\nSubject: -bs\r\n\r\nvia stdio\r\n.\r\nQUIT\r\n"
    ).encode()
    done = sendmail(server, ["-bs"], dialogue)
    assert done.returncode == 0, done.stderr
    assert b"250 2.0.0 Ok: queued as " in done.stdout
    msg = parse(server.wait_for_mail(mailbox)[0])
    assert msg["Subject"] == "-bs" and msg["Message-ID"] is not None


def test_usage_errors_exit_with_sysexits(server: KittiwakeServer) -> None:
    assert sendmail(server, [], b"x\n").returncode == 64  # EX_USAGE: no recipients
    assert sendmail(server, ["-Z", "bob"], b"x\n").returncode == 64
    assert sendmail(server, ["-t"], b"Subject: x\n\nx\n").returncode == 64
    assert sendmail(server, ["alice bob"], b"x\n").returncode == 67  # EX_NOUSER
    assert sendmail(server, ["bob@"], b"x\n", command=KITTIWAKE_SENDMAIL).returncode == 67


def test_server_down_then_up(make_server: MakeServer) -> None:
    srv = make_server(start=False)
    srv.root.mkdir(parents=True, exist_ok=True)
    srv.config_path.write_text(to_toml(srv.config))
    done = sendmail(srv, ["-i", "waiting@example.test"], b"Subject: queued while down\n\nhi\n")
    assert done.returncode == 0, done.stderr
    [path] = maildrop(srv)
    assert path.read_bytes().startswith(b"KITTIWAKE-MAILDROP 1 ")
    time.sleep(0.2)
    assert srv.maildir("waiting@example.test") == []
    srv.start()
    msg = parse(srv.wait_for_mail("waiting@example.test")[0])
    assert msg["Subject"] == "queued while down" and msg["Date"] is not None
    assert maildrop(srv) == []
