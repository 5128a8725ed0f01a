"""Issue 5 end to end through real daemons: Kittiwake A signs (DKIM, ``[[dkim.keys]]``)
the mail of a ``[relay] mynetworks`` client and relays it by MX to Kittiwake B, whose
``[[policy.checks]]`` (spf, dkim, dmarc, authres) write ``Authentication-Results: ...;
spf=pass; dkim=pass; dmarc=pass`` above its Received line; the same author forged from
another loopback address, unsigned, is refused by DMARC p=reject; a DNSBL listing of the
client is a 554 at connect; greylisting answers 451 first and accepts after its delay.

A signs for its mynetworks clients here, like OpenDKIM's InternalHosts (the AUTH
submission path is test_auth_mail_swaks.py's).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kittiwake.policy.dkim_sign import generate_key, public_record, txt_record
from tests.support import server as server_module
from tests.support.dns import TestDNS
from tests.support.mta import relay_overrides, submit
from tests.support.server import KittiwakeServer
from tests.support.smtpclient import RawSMTP

KEY = generate_key("rsa", 2048)
CHECKS = [{"name": n} for n in ("spf", "dkim", "dmarc", "authres")]
LOCAL_B = {"domains": ["b.test"], "users": [], "postmaster": "postmaster@b.test"}


def msg(author: str, subject: str) -> bytes:
    return (
        f"From: Alice <{author}>\r\nTo: bob@b.test\r\nSubject: {subject}\r\n"
        f"Date: Sun, 29 Nov 2026 16:00:00 +0000\r\nMessage-ID: <{subject}@a.test>\r\n"
        "\r\nHello Bob.\r\n"
    ).encode()


def _inline(value: Any) -> str:
    """TOML inline values, tables included (the support writer has no arrays of tables)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_inline(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


@pytest.fixture(autouse=True)
def _tables_in_toml(monkeypatch: pytest.MonkeyPatch) -> None:
    """``[policy] checks`` and ``[dkim] keys`` written as arrays of inline tables."""
    original = server_module.to_toml

    def to_toml(doc: dict[str, Any]) -> str:
        rest = {k: v for k, v in doc.items() if k not in ("policy", "dkim")}
        text = original(rest)
        for section in ("policy", "dkim"):
            if section in doc:
                lines = [f"{k} = {_inline(v)}" for k, v in doc[section].items()]
                text += f"\n[{section}]\n" + "\n".join(lines) + "\n"
        return text

    monkeypatch.setattr(server_module, "to_toml", to_toml)


@pytest.fixture
def dns() -> Iterator[TestDNS]:
    with TestDNS() as server:
        server.add(
            'a.test. IN TXT "v=spf1 ip4:127.0.0.1 -all"\n'
            '_dmarc.a.test. IN TXT "v=DMARC1; p=reject"\n'
            "b.test. IN MX 10 mx.b.test.\nmx.b.test. IN A 127.0.0.1\n"
            "3.0.0.127.bl.test. IN A 127.0.0.2\n"
            '3.0.0.127.bl.test. IN TXT "listed by the test"\n'
        )
        server.add(txt_record("a.test", "sel", public_record(KEY)))
        yield server


def _server(root: Path, overrides: dict[str, object]) -> KittiwakeServer:
    return KittiwakeServer(root, overrides).start()


def test_signed_by_a_verified_by_b_forgery_refused(tmp_path: Path, dns: TestDNS) -> None:
    b = _server(
        tmp_path / "b",
        {
            "hostname": "mx.b.test",
            "dns": dns.config(timeout=2),
            "local": LOCAL_B,
            "policy": {"checks": CHECKS},
        },
    )
    try:
        key_file = tmp_path / "a.test.sel.pem"
        key_file.write_bytes(KEY)
        overrides = relay_overrides(dns, b.mx[1])
        overrides["hostname"] = "mail.a.test"
        overrides["dkim"] = {
            "keys": [{"domain": "a.test", "selector": "sel", "key_file": str(key_file)}]
        }
        a = _server(tmp_path / "a", overrides)
        try:
            submit(a, "alice@a.test", ["bob@b.test"], msg("alice@a.test", "signed"))
            (got,) = b.wait_for_mail("bob@b.test", 1, timeout=15)
        finally:
            a.stop()
        head = got.split(b"\nReceived:", 1)[0].decode()
        assert "\nDelivered-To: bob@b.test\nAuthentication-Results: mx.b.test;" in head, got[:400]
        flat = " ".join(head.split())
        assert "; spf=pass " in flat and "; dkim=pass header.d=a.test " in flat
        assert "; dmarc=pass " in flat
        assert b"DKIM-Signature: " in got
        with RawSMTP(b.mx, source_ip="127.0.0.2") as c:  # not in a.test's SPF, unsigned
            c.ehlo()
            assert c.cmd("MAIL FROM:<alice@a.test>").code == 250
            assert c.cmd("RCPT TO:<bob@b.test>").code == 250
            assert c.cmd("DATA").code == 354
            c.send(msg("alice@a.test", "forged") + b".\r\n")
            reply = c.read_reply()
        assert (reply.code, reply.enhanced) == (550, "5.7.1"), reply
    finally:
        b.stop()


def test_dnsbl_refuses_at_connect_and_greylisting_delays(tmp_path: Path, dns: TestDNS) -> None:
    checks = [
        {"name": "dnsbl", "options": {"zones": ["bl.test"]}},
        {"name": "greylist", "options": {"delay": 1, "retry_window": 60}},
    ]
    b = _server(
        tmp_path / "b",
        {"dns": dns.config(timeout=2), "local": LOCAL_B, "policy": {"checks": checks}},
    )
    try:
        with RawSMTP(b.mx, source_ip="127.0.0.3") as c:
            greeting = c.greeting
        assert (
            greeting is not None and greeting.code == 554 and "listed by the test" in greeting.text
        )
        with RawSMTP(b.mx, source_ip="127.0.0.4") as c:
            c.ehlo()
            assert c.cmd("MAIL FROM:<x@c.test>").code == 250
            first = c.cmd("RCPT TO:<bob@b.test>")
            assert (first.code, first.enhanced) == (451, "4.7.1")
            time.sleep(1.2)
            assert c.cmd("RCPT TO:<bob@b.test>").code == 250
    finally:
        b.stop()
