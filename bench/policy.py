"""What the issue-5 policy chain costs on inbound mail: Kittiwake without and with it, in one run.

Usage (from the repository root; root is not needed, but the numbers in bench/README.md were
taken as root like bench/run.py's)::

    .venv/bin/python bench/policy.py [--quick] [--only a,b-rsa] [--repeat N] [--json FILE]
                                     [--py-spy BIN]

Owns: the command line, the policy workloads (smtp-source's own messages; DKIM-signed
4 KiB messages, rsa-2048 and ed25519, sent with ``smtp-source -F``; a few signed 10 MiB
messages), starting the TestDNS and the two Kittiwake targets (``policy_setup``), running
every workload against both back to back (the order rotating per repeat), checking the
delivered mail's Authentication-Results field and the DNS query log, the table of checks-on
/ checks-off ratios, and an optional py-spy profile of the checks-on server (extra runs,
not counted). See bench/README.md, "Policy chain cost".

Not security-sensitive; binds and connects to 127.0.0.1 only, and the servers' only
nameserver is the TestDNS on loopback.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psutil

if __package__ in (None, ""):  # run as a script: make `bench` and `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.measure import SMTP_SOURCE, MiB
from bench.policy_setup import (
    PolicyKittiwakeTarget,
    expected_names,
    make_keys,
    query_counts,
    sample_headers,
    write_signed,
    zone_text,
)
from bench.relay_profile import py_spy, report
from bench.report import Summary, document, summarise
from bench.run import machine, print_settings, raise_fd_limit
from bench.targets import TargetUnavailable
from bench.workloads import RunResult, Workload, run_workload
from tests.support.dns import TestDNS
from tests.support.postfix import free_port

SPF_DMARC = ("spf=pass", "dmarc=pass")
ALL_PASS = ("spf=pass", "dkim=pass", "dmarc=pass")


@dataclass(frozen=True)
class PolicyWorkload:
    workload: Workload
    want: tuple[str, ...]  # what the A-R field of every checked delivery must say
    quick: int  # message count with --quick


def policy_workloads(files: dict[str, Path], quick: bool, scale: float) -> list[PolicyWorkload]:
    def load(name: str, title: str, n: int, per: int, file: str = "") -> Workload:
        path = str(files[file]) if file else ""
        return Workload(name, title, "load", 4096, n, 50, per, message_file=path)

    big = str(files["c"])
    rows = [
        PolicyWorkload(load("a", "smtp-source's 4 KiB, reused conns", 5000, 10), SPF_DMARC, 1000),
        PolicyWorkload(load("a1", "smtp-source's 4 KiB, conn per msg", 2000, 1), SPF_DMARC, 500),
        PolicyWorkload(load("b-rsa", "4 KiB rsa-2048 signed", 5000, 10, "rsa"), ALL_PASS, 1000),
        PolicyWorkload(load("b-ed", "4 KiB ed25519 signed", 5000, 10, "ed25519"), ALL_PASS, 1000),
        PolicyWorkload(
            Workload("c", "10 MiB rsa-2048 signed", "load", 10 * MiB, 8, 2, 2, message_file=big),
            ALL_PASS,
            4,
        ),
    ]
    out = []
    for row in rows:
        w = row.workload
        n = max(w.per_session, int((row.quick if quick else w.messages) * scale))
        out.append(replace(row, workload=replace(w, messages=n)))
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Kittiwake with and without the issue-5 checks")
    p.add_argument("--quick", action="store_true", help="fewer messages, one repeat")
    p.add_argument("--only", default="", help="comma list of workloads (a,a1,b-rsa,b-ed,c)")
    p.add_argument("--repeat", type=int, default=None, help="runs per workload (median)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every message count")
    p.add_argument("--dns-ttl", type=int, default=3600, help="TTL of the zone's records")
    p.add_argument("--json", type=Path, help="write all runs, medians and ratios here")
    p.add_argument("--workdir", type=Path, help="where servers keep data (default: new temp)")
    p.add_argument("--keep", action="store_true", help="keep the work directory and mail")
    p.add_argument("--py-spy", default="", metavar="BIN", help="profile checks-on (extra runs)")
    p.add_argument("--kittiwake-cmd", default="", help="instead of `.venv/bin/kittiwake serve`")
    return p.parse_args(argv)


def check_run(target: PolicyKittiwakeTarget, pw: PolicyWorkload, res: RunResult) -> None:
    """Delivered mail carries the expected A-R field (checks-on) or none (checks-off)."""
    sample = sample_headers(target.mailbox(res.mailbox), pw.want if target.checks else ())
    res.extra["headers_checked"] = f"{sample.good}/{sample.files}"
    res.extra["auth_results"] = sample.fields[:1]
    if res.delivered and sample.problems:
        res.errors.append("Authentication-Results: " + "; ".join(sample.problems)[:400])


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU of the server process (Kittiwake is one process; its threads)."""
    if pid is None:
        return 0.0
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(t.user + t.system)


def one_run(
    target: PolicyKittiwakeTarget, pw: PolicyWorkload, repeat: int, dns: TestDNS, keep: bool
) -> RunResult:
    before, cpu = len(dns.queries), cpu_seconds(target.root_pid())
    try:
        res = run_workload(target, pw.workload, repeat, delivery_timeout=300, keep_mail=True)
    except TargetUnavailable as exc:  # died and would not restart
        return RunResult(pw.workload.name, target.name, repeat, "", errors=[str(exc)[:500]])
    res.extra["dns_queries"] = len(dns.queries) - before
    if res.expected:  # server CPU (all threads) from the load's start until all was delivered
        res.extra["cpu_ms"] = 1000 * (cpu_seconds(target.root_pid()) - cpu) / res.expected
    check_run(target, pw, res)
    if not keep:
        target.remove_mailbox(res.mailbox)
    return res


def _median_extra(runs: list[RunResult], workload: str, server: str, key: str) -> float:
    xs = [
        float(r.extra[key])
        for r in runs
        if (r.workload, r.server) == (workload, server) and key in r.extra and not r.errors
    ]
    return float(statistics.median(xs)) if xs else 0.0


def ratio_table(
    s: dict[tuple[str, str], Summary], wls: list[PolicyWorkload], runs: list[RunResult]
) -> str:
    head = (
        f"{'workload':<10}{'count':>7}{'off msg/s':>11}{'on msg/s':>10}{'on/off':>8}"
        f"{'off e2e/s':>11}{'on e2e/s':>10}{'on/off':>8}{'CPU ms/msg off':>16}{'on':>7}"
        "  description"
    )
    lines = [head]
    for pw in wls:
        name = pw.workload.name
        off, on = s.get((name, "checks-off")), s.get((name, "checks-on"))
        if off is None or on is None:
            continue
        r = on.rate / off.rate if on.rate > 0 and off.rate > 0 else 0.0
        e = on.e2e_rate / off.e2e_rate if on.e2e_rate > 0 and off.e2e_rate > 0 else 0.0
        cpu = [
            _median_extra(runs, name, server, "cpu_ms") for server in ("checks-off", "checks-on")
        ]
        lines.append(
            f"{name:<10}{min(on.delivered, off.delivered):>7}{off.rate:>11.0f}{on.rate:>10.0f}"
            f"{r:>7.2f}x{off.e2e_rate:>11.0f}{on.e2e_rate:>10.0f}{e:>7.2f}x"
            f"{cpu[0]:>16.2f}{cpu[1]:>7.2f}  "
            f"{pw.workload.describe()}"
        )
        for x in (off, on):
            lines += [f"{'':3}! {x.server}: {err}" for err in x.errors[:5]]
    return "\n".join(lines)


def ratios(s: dict[tuple[str, str], Summary], wls: list[PolicyWorkload]) -> dict[str, float]:
    out = {}
    for pw in wls:
        off, on = s.get((pw.workload.name, "checks-off")), s.get((pw.workload.name, "checks-on"))
        if off and on and off.ok and on.ok and off.rate > 0:
            out[pw.workload.name] = on.rate / off.rate
    return out


def profile(
    target: PolicyKittiwakeTarget, wls: list[PolicyWorkload], dns: TestDNS, args: argparse.Namespace
) -> None:
    for pw in wls:
        pid = target.root_pid()
        if pid is None:
            return
        out = target.workdir / f"py-spy-{pw.workload.name}.txt"
        with py_spy(args.py_spy, pid, out):
            res = one_run(target, pw, 90, dns, keep=False)
        print(
            f"\n== py-spy, checks-on, workload {pw.workload.name} (profiled, not counted): "
            f"{res.rate:.0f} msg/s, {'ok' if not res.errors else res.errors}"
        )
        print(report(out, top=30, only="Runner.run", what="event-loop thread"))
        print(report(out, top=15, what="all threads"))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not Path(SMTP_SOURCE).exists():
        raise SystemExit(f"{SMTP_SOURCE} missing: apt-get install postfix")
    repeat = args.repeat or (1 if args.quick else 3)
    raise_fd_limit()
    old_term = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="kittiwake-policy-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    keys = make_keys(root)
    files = {
        "rsa": write_signed(root / "signed-4k-rsa.eml", 4096, "rsa", keys["rsa"]),
        "ed25519": write_signed(root / "signed-4k-ed25519.eml", 4096, "ed25519", keys["ed25519"]),
        "c": write_signed(root / "signed-10m-rsa.eml", 10 * MiB, "rsa", keys["rsa"]),
    }
    all_wls = policy_workloads(files, args.quick, args.scale)
    chosen = [t.strip() for t in args.only.split(",") if t.strip()]
    unknown = set(chosen) - {pw.workload.name for pw in all_wls}
    if unknown:
        raise SystemExit(f"--only: unknown {sorted(unknown)}")
    wls = [pw for pw in all_wls if not chosen or pw.workload.name in chosen]
    dns = TestDNS(zone_text(keys, args.dns_ttl))
    cmd = args.kittiwake_cmd.split()
    targets: list[PolicyKittiwakeTarget] = []
    runs: list[RunResult] = []
    settings: dict[str, Any] = {"machine": machine()}
    try:
        dns.start()
        for checks in (False, True):
            listen = f"127.0.0.1:{free_port()}"
            t = PolicyKittiwakeTarget(
                root / f"k{int(checks)}", listen, dns, checks=checks, command=cmd
            )
            targets.append(t)
            t.start()
            print(f"started {t.name} on {t.listen}", flush=True)
        for pw in wls:
            for r in range(repeat):
                for t in targets[r % 2 :] + targets[: r % 2]:
                    res = one_run(t, pw, r, dns, args.keep)
                    runs.append(res)
                    status = "ok" if not res.errors else "; ".join(res.errors)[:300]
                    print(
                        f"{pw.workload.name:<6}#{r} {t.name:<10} {res.seconds:7.2f}s "
                        f"{res.rate:7.0f} msg/s count {res.delivered}/{res.expected} "
                        f"A-R {res.extra.get('headers_checked', '-')} "
                        f"dns {res.extra.get('dns_queries', '-')}  {status}",
                        flush=True,
                    )
        if args.py_spy:
            profile(targets[1], wls, dns, args)
        for t in targets:
            settings[t.name] = t.settings()
    finally:
        for t in targets:
            t.stop()
        dns.stop()
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)
        if not args.keep and args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    counts, unexpected = query_counts(dns.queries, expected_names(keys))
    settings["dns zone (TestDNS on 127.0.0.1)"] = zone_text(keys, args.dns_ttl)
    settings["dns queries (name type/protocol: count)"] = dict(sorted(counts.items()))
    settings["workloads"] = {pw.workload.name: pw.workload.describe() for pw in wls}
    settings["run"] = {"repeat": str(repeat), "quick": str(args.quick), "workdir": str(root)}
    summary = summarise(runs)
    print()
    print_settings(settings)
    print("\n== Results (medians over repeats; on/off = checks-on rate / checks-off rate)")
    print(ratio_table(summary, wls, runs))
    if unexpected:
        print(f"\n! DNS queries for unexpected names: {unexpected}")
    else:
        print("\nDNS: every query was for an expected name (SPF, DMARC, DKIM keys, DNSBL)")
    if args.json:
        doc = document(runs, summary, settings)
        doc["ratios"] = ratios(summary, wls)
        doc["unexpected_dns"] = unexpected
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 1 if unexpected or any(r.errors for r in runs) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted; every server started was stopped", file=sys.stderr)
        sys.exit(130)
