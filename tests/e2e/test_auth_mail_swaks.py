"""Issue 5's end-to-end story with a real mail client: alice@a.test submits on 587 with
swaks (STARTTLS + AUTH PLAIN; the user made with ``kittiwake user add``) → Kittiwake A
signs it (``[[dkim.keys]]`` for a.test) → A finds b.test's MX in the TestDNS → Kittiwake B
(``[[policy.checks]]`` spf, dkim, dmarc, authres; a.test publishes SPF ``ip4:127.0.0.1
-all`` — A's outgoing address —, its DKIM key and ``p=reject``) writes
``Authentication-Results: mx.b.test; spf=pass; dkim=pass; dmarc=pass`` and delivers to
bob's Maildir; the same message forged from another loopback host, unsigned, straight to
B's MX, is refused 550 5.7.1 by DMARC. Fixtures shared with ``test_auth_mail_daemon``."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e import test_auth_mail_daemon as daemon
from tests.e2e.test_auth_mail_daemon import (  # noqa: F401  (fixtures used by name)
    _tables_in_toml,
    dns,
)
from tests.support import server as server_module
from tests.support.auth import add_user
from tests.support.dns import TestDNS
from tests.support.mta import relay_overrides
from tests.support.server import KittiwakeServer
from tests.support.smtpclient import RawSMTP

pytestmark = pytest.mark.skipif(shutil.which("swaks") is None, reason="apt-get install swaks")

PASSWORD = "alice pass 5"
SUBJECT = "swaks-signed"


def swaks_submit(a: KittiwakeServer) -> str:
    host, port = a.submission
    cmd = [
        "swaks", "--server", f"{host}:{port}", "--tls",
        "--auth", "PLAIN", "--auth-user", "alice", "--auth-password", PASSWORD,
        "--helo", "laptop.a.test", "--from", "alice@a.test", "--to", "bob@b.test",
        "--header", f"Subject: {SUBJECT}", "--timeout", "15",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_swaks_submission_signed_relayed_verified(
    tmp_path: Path,
    dns: TestDNS,  # noqa: F811
) -> None:
    b = KittiwakeServer(
        tmp_path / "b",
        {
            "hostname": "mx.b.test",
            "dns": dns.config(timeout=2),
            "local": daemon.LOCAL_B,
            "policy": {"checks": daemon.CHECKS},
        },
    ).start()
    try:
        key_file = tmp_path / "a.test.sel.pem"
        key_file.write_bytes(daemon.KEY)
        overrides = relay_overrides(dns, b.mx[1])
        overrides["hostname"] = "mail.a.test"
        overrides["local"] = {"domains": ["a.test"], "users": [], "postmaster": "postmaster@a.test"}
        overrides["dkim"] = {
            "keys": [{"domain": "a.test", "selector": "sel", "key_file": str(key_file)}]
        }
        a = KittiwakeServer(tmp_path / "a", overrides)
        # auth.write_config, through the patched writer ([dkim] keys as inline tables).
        a.root.mkdir(parents=True, exist_ok=True)
        a.config_path.write_text(server_module.to_toml(a.config))
        add_user(a, "alice", PASSWORD, "alice@a.test")
        a.start()
        try:
            out = swaks_submit(a)
            assert "AUTH PLAIN" in out and "STARTTLS" in out and "queued as" in out
            (got,) = b.wait_for_mail("bob@b.test", 1, timeout=15)
        finally:
            a.stop()
        head = got.split(b"\nReceived:", 1)[0].decode()
        assert "\nAuthentication-Results: mx.b.test;" in head, got[:600]
        flat = " ".join(head.split())
        assert "; spf=pass " in flat and "smtp.mailfrom=alice@a.test" in flat
        assert "; dkim=pass header.d=a.test " in flat and "; dmarc=pass " in flat
        assert f"Subject: {SUBJECT}".encode() in got and b"DKIM-Signature: " in got
        assert b"ESMTPSA" in got  # A's own Received: the client authenticated over TLS
        # The same message forged from outside: unsigned, not from A's address.
        with RawSMTP(b.mx, source_ip="127.0.0.2") as c:
            c.ehlo()
            assert c.cmd("MAIL FROM:<alice@a.test>").code == 250
            assert c.cmd("RCPT TO:<bob@b.test>").code == 250
            assert c.cmd("DATA").code == 354
            c.send(daemon.msg("alice@a.test", "forged") + b".\r\n")
            reply = c.read_reply()
        assert (reply.code, reply.enhanced) == (550, "5.7.1"), reply
        assert "dmarc" in reply.text.lower(), reply
    finally:
        b.stop()
