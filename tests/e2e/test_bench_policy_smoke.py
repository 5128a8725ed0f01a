"""Smoke test of the policy-chain benchmark (bench/policy.py), so it cannot silently rot.

Runs every workload with tiny message counts against Kittiwake without and with the issue-5
checks (on a TestDNS), and checks that every message was delivered exactly once, that the
delivered mail carries the expected Authentication-Results field (checks on) or none
(checks off), and that the DNS query log holds only the names the checks have a reason to
ask about. Also the A-R reading and the zone the bench serves, without servers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bench.measure import SMTP_SOURCE
from bench.policy import main as policy_main
from bench.policy_setup import (
    DNSBL_ZONE,
    SENDER_DOMAIN,
    expected_names,
    make_keys,
    query_counts,
    sample_headers,
    write_signed,
    zone_text,
)
from kittiwake.policy.dkim_sign import public_record
from tests.support.dns import Query, TestDNS, raw_query

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.mark.skipif(not os.access(SMTP_SOURCE, os.X_OK), reason="smtp-source missing")
def test_every_workload_runs_and_counts_are_exact(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "policy.json"
    rc = policy_main(
        ["--quick", "--scale", "0.02", "--workdir", str(tmp_path / "w"), "--json", str(out)]
    )
    text = capsys.readouterr().out
    assert rc == 0, text
    doc = json.loads(out.read_text())
    runs = doc["runs"]
    names = {"a", "a1", "b-rsa", "b-ed", "c"}
    assert {(r["workload"], r["server"]) for r in runs} == {
        (w, s) for w in names for s in ("checks-off", "checks-on")
    }
    for r in runs:
        assert r["errors"] == [], r
        assert r["delivered"] == r["expected"] > 0, r
        assert r["extra"]["headers_checked"] in ("2/2", "3/3"), r
        if r["server"] == "checks-off":
            assert r["extra"]["auth_results"] == [] and r["extra"]["dns_queries"] == 0, r
        else:
            ar = r["extra"]["auth_results"][0]
            assert "spf=pass" in ar and "dmarc=pass" in ar, r
            assert ("dkim=pass" in ar) == (r["workload"] not in ("a", "a1")), r
    assert set(doc["ratios"]) == names
    assert doc["unexpected_dns"] == []
    assert "on/off" in text and "every query was for an expected name" in text


def test_zone_serves_what_the_checks_ask(tmp_path: Path) -> None:
    keys = make_keys(tmp_path)
    with TestDNS(zone_text(keys)) as dns:
        spf = raw_query(dns, SENDER_DOMAIN, "TXT")
        assert b"v=spf1 ip4:127.0.0.0/8 -all" in b"".join(spf.rr[0].rdata.data)
        assert raw_query(dns, f"_dmarc.{SENDER_DOMAIN}", "TXT").rr
        for selector, pem in keys.items():
            key = raw_query(dns, f"{selector}._domainkey.{SENDER_DOMAIN}", "TXT", tcp=True)
            assert b"".join(key.rr[0].rdata.data).decode() == public_record(pem)
        listed = raw_query(dns, f"1.0.0.127.{DNSBL_ZONE}", "A")
        assert listed.header.rcode == 3 and not listed.rr  # NXDOMAIN: not listed
    counts, unexpected = query_counts(
        [Query(f"{SENDER_DOMAIN}.", "TXT", "udp"), Query("example.com.", "A", "udp")],
        expected_names(keys),
    )
    assert counts[f"{SENDER_DOMAIN}. TXT/udp"] == 1 and unexpected == ["example.com."]


def test_auth_results_sampling(tmp_path: Path) -> None:
    box = tmp_path / "box"
    (box / "new").mkdir(parents=True)
    keys = make_keys(tmp_path)
    signed = write_signed(tmp_path / "m.eml", 1000, "ed25519", keys["ed25519"]).read_bytes()
    good = b"Authentication-Results: bench.test;\r\n\tspf=pass smtp.mailfrom=x;\r\n\tdkim=pass"
    good += b" header.d=client.bench.test;\r\n\tdmarc=pass header.from=client.bench.test\r\n"
    (box / "new" / "1").write_bytes(good + signed.replace(b"\n", b"\r\n"))
    want = ("spf=pass", "dkim=pass", "dmarc=pass")
    ok = sample_headers(box, want)
    assert (ok.files, ok.good, ok.problems) == (1, 1, [])
    assert sample_headers(box, ()).problems  # checks off: an A-R field is a problem
    (box / "new" / "2").write_bytes(good.replace(b"dkim=pass", b"dkim=passive") + signed)
    bad = sample_headers(box, want)
    assert (bad.files, bad.good) == (2, 1) and "2:" in bad.problems[0]
