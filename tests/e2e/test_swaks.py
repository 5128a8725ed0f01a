"""A real SMTP client peer: swaks, plain, pipelined, STARTTLS and implicit TLS."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.support.server import KittiwakeServer

pytestmark = pytest.mark.skipif(shutil.which("swaks") is None, reason="apt-get install swaks")


def swaks(server_addr: tuple[str, int], rcpt: str, *extra: str) -> str:
    cmd = [
        "swaks",
        "--server", f"{server_addr[0]}:{server_addr[1]}",
        "--helo", "client.test",
        "--from", "swaks@client.test",
        "--to", rcpt,
        "--timeout", "10",
        "--header", "Subject: from swaks",
        *extra,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.parametrize(
    ("role", "extra"),
    [
        ("mx", ()),
        ("mx", ("--pipeline",)),
        ("mx", ("--tls",)),
        ("mx", ("--tls", "--pipeline")),
    ],  # submission and implicit TLS need AUTH first: test_auth_clients.py runs swaks there
    ids=["plain", "pipeline", "starttls", "starttls-pipeline"],
)
def test_swaks_delivers(
    server: KittiwakeServer, mailbox: str, role: str, extra: tuple[str, ...]
) -> None:
    out = swaks(getattr(server, role), mailbox, *extra)
    assert "queued as" in out
    [msg] = server.wait_for_mail(mailbox)
    assert b"Subject: from swaks" in msg
    if "--tls" in extra or "--tlsc" in extra:
        assert b"ESMTPS" in msg
    else:
        assert b"with ESMTP " in msg or b"with ESMTP\n" in msg


def test_swaks_auth_is_refused(server: KittiwakeServer, mailbox: str) -> None:
    cmd = [
        "swaks", "--server", f"{server.submission[0]}:{server.submission[1]}", "--tls",
        "--auth", "PLAIN", "--auth-user", "alice", "--auth-password", "secret",
        "--from", "alice@example.test", "--to", mailbox, "--timeout", "10",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode != 0
    assert "535 5.7.8" in proc.stdout
