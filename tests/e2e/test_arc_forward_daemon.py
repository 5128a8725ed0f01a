"""ARC through a forward, between real daemons (RFC 8617): alice@a.test's mail reaches
Kittiwake B (checks spf, dkim, dmarc, arc, authres) for ``fwd@b.test``, an alias of the
outside ``carol@c.test``; B forwards it under an SRS sender and seals it with its
``[[dkim.keys]]`` key for b.test (the SRS domain); Kittiwake C (checks arc, authres)
validates the chain: ``arc=pass`` in C's Authentication-Results, and B's own results
(spf=pass, dmarc=pass) in the ARC-Authentication-Results it sealed."""

from __future__ import annotations

from pathlib import Path

from kittiwake.policy.dkim_sign import generate_key, public_record, txt_record
from tests.e2e import test_auth_mail_daemon as daemon
from tests.e2e.test_auth_mail_daemon import (  # noqa: F401  (fixtures used by name)
    _tables_in_toml,
    dns,
)
from tests.support.dns import TestDNS
from tests.support.mta import relay_overrides, submit
from tests.support.server import KittiwakeServer

B_KEY = generate_key("rsa", 2048)


def test_forward_is_sealed_by_b_and_validated_by_c(
    tmp_path: Path,
    dns: TestDNS,  # noqa: F811
) -> None:
    dns.add(txt_record("b.test", "arc", public_record(B_KEY)))
    c = KittiwakeServer(
        tmp_path / "c",
        {
            "hostname": "mx.c.test",
            "dns": dns.config(timeout=2),
            "local": {"domains": ["c.test"], "users": [], "postmaster": "postmaster@c.test"},
            "policy": {"checks": [{"name": "arc"}, {"name": "authres"}]},
        },
    ).start()
    try:
        dns.add("c.test. IN MX 10 mx.c.test.\nmx.c.test. IN A 127.0.0.1\n")
        key_file = tmp_path / "b.test.arc.pem"
        key_file.write_bytes(B_KEY)
        overrides = relay_overrides(dns, c.mx[1], relay={"mynetworks": []})
        overrides.update(
            hostname="mx.b.test",
            local=daemon.LOCAL_B,
            aliases={"fwd@b.test": ["carol@c.test"]},
            srs={"secret": "arc-e2e-srs-secret-0123456789", "domain": "b.test"},
            policy={"checks": [{"name": n} for n in ("spf", "dkim", "dmarc", "arc", "authres")]},
            dkim={"keys": [{"domain": "b.test", "selector": "arc", "key_file": str(key_file)}]},
        )
        b = KittiwakeServer(tmp_path / "b", overrides).start()
        try:
            # From 127.0.0.1: a.test's SPF passes, so DMARC passes (SPF aligned).
            submit(b, "alice@a.test", ["fwd@b.test"], daemon.msg("alice@a.test", "fwd"))
            (got,) = c.wait_for_mail("carol@c.test", 1, timeout=15)
        finally:
            b.stop()
        head = got.split(b"\n\n", 1)[0].decode()
        flat = " ".join(head.split())
        assert "Authentication-Results: mx.c.test; arc=pass" in flat, head
        assert "ARC-Seal: i=1; cv=none; a=rsa-sha256; d=b.test; s=arc;" in flat, head
        aar = flat.split("ARC-Authentication-Results: ", 1)[1]
        assert aar.startswith("i=1; mx.b.test;") and "spf=pass" in aar and "dmarc=pass" in aar
    finally:
        c.stop()
