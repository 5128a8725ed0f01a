"""Helpers for the AUTH end-to-end tests: users made with the real CLI, AUTH exchanges.

Owns ``user_cli`` (``kittiwake user ...`` against a daemon's config, like an operator
would), ``add_user``, ``write_config`` (so users exist before the daemon first starts),
``login_plain``/``login_scram`` on a ``RawSMTP`` connection. Not security sensitive (test
code).
"""

from __future__ import annotations

import base64
import subprocess

from tests.support.scram import ScramClient
from tests.support.server import KittiwakeServer, _kittiwake_command, to_toml
from tests.support.smtpclient import RawSMTP, SMTPReply


def b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode()


def write_config(server: KittiwakeServer) -> None:
    """Write the daemon's config file now (``start()`` does it too), so that ``user_cli``
    finds ``data_dir`` before the first start."""
    server.root.mkdir(parents=True, exist_ok=True)
    server.config_path.write_text(to_toml(server.config))


def user_cli(
    server: KittiwakeServer, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_kittiwake_command(), "user", *args, "--config", str(server.config_path)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def add_user(server: KittiwakeServer, name: str, password: str, *addresses: str) -> None:
    options = [part for a in addresses for part in ("--address", a)]
    proc = user_cli(server, "add", name, *options, "--password-stdin", stdin=password + "\n")
    assert proc.returncode == 0, proc.stderr


def plain(user: str, password: str) -> str:
    return b64(f"\0{user}\0{password}")


def login_plain(c: RawSMTP, user: str, password: str) -> SMTPReply:
    return c.cmd(f"AUTH PLAIN {plain(user, password)}")


def login_scram(c: RawSMTP, user: str, password: str) -> SMTPReply:
    """The whole SCRAM-SHA-256 exchange; the client checks the server's signature."""
    client = ScramClient(user, password)
    reply = c.cmd(f"AUTH SCRAM-SHA-256 {b64(client.first())}")
    if reply.code != 334:
        return reply
    reply = c.cmd(b64(client.final(base64.b64decode(reply.lines[0]))))
    if reply.code != 334:
        return reply
    client.check_final(base64.b64decode(reply.lines[0]))
    return c.cmd("")


def tls_session(server: KittiwakeServer, *, source_ip: str | None = None) -> RawSMTP:
    """Submission after STARTTLS and a fresh EHLO."""
    c = RawSMTP(server.submission, source_ip=source_ip)
    c.ehlo()
    c.starttls()
    c.ehlo()
    return c
