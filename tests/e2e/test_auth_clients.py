"""Real mail clients against submission with AUTH: swaks (PLAIN, LOGIN; STARTTLS on 587,
implicit TLS on 465) and msmtp as a mail client is set up (GNU SASL: SCRAM-SHA-256, PLAIN,
LOGIN). Each message must land in the recipient's Maildir; wrong passwords must fail."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import _remember
from tests.support.auth import add_user, write_config
from tests.support.mta import wait_until
from tests.support.server import KittiwakeServer
from tests.support.smtpclient import message

PASSWORD = "s3cret pass"
SENDER = "alice@example.test"
RCPT = "bob@example.test"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KittiwakeServer]:
    server = KittiwakeServer(tmp_path_factory.mktemp("auth-clients"))
    write_config(server)
    add_user(server, "alice", PASSWORD, SENDER)
    add_user(server, "bob", "bob-pw", RCPT)
    try:
        server.start()
        yield server
    finally:
        server.stop_or_kill()


@pytest.fixture
def server(env: KittiwakeServer, request: pytest.FixtureRequest) -> KittiwakeServer:
    _remember(request, env)
    return env


def delivered(server: KittiwakeServer, subject: str) -> bytes:
    found = wait_until(
        lambda: [m for m in server.maildir(RCPT) if f"Subject: {subject}".encode() in m],
        10,
        f"message {subject!r} in {RCPT}'s Maildir",
    )
    return found[0]


# ----------------------------------------------------------------------------- swaks

needs_swaks = pytest.mark.skipif(shutil.which("swaks") is None, reason="apt-get install swaks")


def swaks(server: KittiwakeServer, role: str, mechanism: str, password: str, subject: str):
    addr = getattr(server, role)
    cmd = [
        "swaks", "--server", f"{addr[0]}:{addr[1]}",
        "--tls" if role == "submission" else "--tlsc",
        "--auth", mechanism, "--auth-user", "alice", "--auth-password", password,
        "--helo", "client.test", "--from", SENDER, "--to", RCPT,
        "--header", f"Subject: {subject}", "--timeout", "15",
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


@needs_swaks
@pytest.mark.parametrize("role", ["submission", "smtps"])
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_swaks(server: KittiwakeServer, role: str, mechanism: str) -> None:
    subject = f"swaks-{uuid.uuid4().hex[:8]}"
    proc = swaks(server, role, mechanism, PASSWORD, subject)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "235 2.7.0" in proc.stdout
    msg = delivered(server, subject)
    assert b"with ESMTPSA" in msg


@needs_swaks
def test_swaks_wrong_password(server: KittiwakeServer) -> None:
    proc = swaks(server, "submission", "PLAIN", "not it", "never")
    assert proc.returncode != 0
    assert "535 5.7.8" in proc.stdout


# ----------------------------------------------------------------------------- msmtp

needs_msmtp = pytest.mark.skipif(shutil.which("msmtp") is None, reason="apt-get install msmtp")


def msmtp(
    server: KittiwakeServer, tmp_path: Path, role: str, auth: str, password: str, subject: str
) -> subprocess.CompletedProcess[bytes]:
    host, port = getattr(server, role)
    rc = tmp_path / "msmtprc"
    rc.write_text(
        "defaults\n"
        "tls on\n"
        "tls_certcheck off\n"  # the daemon's certificate is self-signed
        f"tls_starttls {'on' if role == 'submission' else 'off'}\n"
        "account kittiwake\n"
        f"host {host}\nport {port}\n"
        f"from {SENDER}\n"
        f"auth {auth}\nuser alice\npassword {password}\n"
        "domain client.test\n"
    )
    rc.chmod(0o600)  # msmtp refuses a password file others can read
    return subprocess.run(
        ["msmtp", "--file", str(rc), "--account", "kittiwake", "--debug", RCPT],
        input=message(subject, headers={"From": SENDER, "To": RCPT}),
        capture_output=True,
        timeout=60,
        check=False,
    )


@needs_msmtp
@pytest.mark.parametrize(
    ("role", "auth"),
    [
        ("submission", "on"),  # msmtp's own choice
        ("submission", "scram-sha-256"),
        ("submission", "plain"),
        ("submission", "login"),
        ("smtps", "on"),
    ],
)
def test_msmtp(server: KittiwakeServer, tmp_path: Path, role: str, auth: str) -> None:
    subject = f"msmtp-{uuid.uuid4().hex[:8]}"
    proc = msmtp(server, tmp_path, role, auth, PASSWORD, subject)
    out = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, out
    # "on": msmtp's own choice (under TLS it takes PLAIN); else exactly the one asked for.
    assert f"--> AUTH {'PLAIN' if auth == 'on' else auth.upper()}" in out, out
    assert b"with ESMTPSA" in delivered(server, subject)


@needs_msmtp
def test_msmtp_wrong_password(server: KittiwakeServer, tmp_path: Path) -> None:
    proc = msmtp(server, tmp_path, "submission", "scram-sha-256", "not it", "never")
    out = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
    assert proc.returncode != 0
    assert "535 5.7.8" in out, out
