"""Benchmark Kittiwake against Postfix and aiosmtpd, back to back, in one run.

Usage (from the repository root, as root)::

    .venv/bin/python bench/run.py [--quick] [--only A,B,postfix] [--repeat N] [--json FILE]

Owns: the command line, starting the three servers on their own loopback ports, running each
workload against each server in turn (rotating the order per repeat so no server always goes
first), stopping every server it started — also on errors and Ctrl-C — and printing the
settings, the table, the ratios and the PASS/FAIL verdicts. See bench/README.md.

Not security-sensitive; binds and connects to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` and `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.measure import SMTP_SOURCE
from bench.report import document, summarise, table
from bench.targets import (
    AiosmtpdTarget,
    KittiwakeTarget,
    PostfixTarget,
    SubprocessTarget,
    Target,
    TargetUnavailable,
)
from bench.workloads import RunResult, Workload, run_workload, workloads
from tests.support.postfix import free_port

SERVERS = ("kittiwake", "postfix", "aiosmtpd")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Kittiwake vs Postfix vs aiosmtpd")
    p.add_argument("--quick", action="store_true", help="fewer messages, one repeat")
    p.add_argument("--only", default="", help="comma list of workloads (A-E) and/or servers")
    p.add_argument("--repeat", type=int, default=None, help="runs per workload (median)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply message counts of A-C")
    p.add_argument("--json", type=Path, help="write all runs, medians and verdicts here")
    p.add_argument("--workdir", type=Path, help="where servers keep data (default: new temp)")
    p.add_argument("--keep", action="store_true", help="keep the work directory and mail")
    p.add_argument(
        "--postfix-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra main.cf setting for Postfix (e.g. in_flow_delay=0); recorded",
    )
    p.add_argument("--aiosmtpd-loop", choices=("uvloop", "asyncio"), default="uvloop")
    p.add_argument("--aiosmtpd-fsync-dir", action="store_true")
    p.add_argument(
        "--kittiwake-cmd", default="", help="command instead of `.venv/bin/kittiwake serve`"
    )
    return p.parse_args(argv)


def select(only: str, wls: dict[str, Workload]) -> tuple[list[Workload], list[str]]:
    tokens = [t.strip() for t in only.split(",") if t.strip()]
    chosen_w = [t.upper() for t in tokens if t.upper() in wls]
    chosen_s = [t.lower() for t in tokens if t.lower() in SERVERS]
    unknown = [t for t in tokens if t.upper() not in wls and t.lower() not in SERVERS]
    if unknown:
        raise SystemExit(f"--only: unknown {unknown}; use {sorted(wls)} and/or {SERVERS}")
    return [wls[n] for n in (chosen_w or sorted(wls))], chosen_s or list(SERVERS)


def raise_fd_limit(want: int = 65536) -> None:
    """1000 idle connections need more descriptors than a default shell gives (children
    inherit this, so the servers get it too)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    new = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < new:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


def make_targets(
    args: argparse.Namespace, root: Path, names: list[str], repeat: int
) -> list[Target]:
    extra = dict(kv.split("=", 1) for kv in args.postfix_set)
    boxes = [f"w{w.lower()}{r}" for w in "ABCD" for r in range(repeat)]
    out: list[Target] = []
    for name in names:
        listen = f"127.0.0.1:{free_port()}"
        if name == "kittiwake":
            out.append(KittiwakeTarget(root / name, listen, args.kittiwake_cmd.split()))
        elif name == "postfix":
            out.append(PostfixTarget(root / name, listen, boxes, extra))
        else:
            out.append(
                AiosmtpdTarget(
                    root / name, listen, loop=args.aiosmtpd_loop, fsync_dir=args.aiosmtpd_fsync_dir
                )
            )
    return out


def machine() -> dict[str, str]:
    fs = subprocess.run(["df", "-T", "/tmp"], capture_output=True, text=True, check=False)
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": str(os.cpu_count()),
        "filesystem (df -T /tmp)": fs.stdout.splitlines()[-1] if fs.stdout else "?",
    }


def print_settings(settings: dict[str, Any]) -> None:
    print("== Settings")
    for section, values in settings.items():
        print(f"-- {section}")
        if isinstance(values, dict):
            for k, v in values.items():
                text = str(v).rstrip("\n")
                if "\n" in text:
                    print(f"  {k}:")
                    print("\n".join(f"    {line}" for line in text.splitlines()))
                else:
                    print(f"  {k}: {text}")
        else:
            print(f"  {values}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not os.access(SMTP_SOURCE, os.X_OK):
        raise SystemExit(f"{SMTP_SOURCE} missing: apt-get install postfix")
    repeat = args.repeat or (1 if args.quick else 3)
    wls, names = select(args.only, workloads(args.quick, args.scale))
    raise_fd_limit()
    # SIGTERM, like Ctrl-C, must unwind through the finally that stops the servers.
    old_term = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)  # even if inherited ignored
    root = args.workdir or Path(tempfile.mkdtemp(prefix="kittiwake-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)  # Postfix's virtual(8) (uid 65534) must traverse it
    targets = make_targets(args, root, names, repeat)
    runs: list[RunResult] = []
    skipped: dict[str, str] = {}
    settings: dict[str, Any] = {"machine": machine()}
    started: list[Target] = []
    shown_log: set[str] = set()
    try:
        for t in targets:
            try:
                t.start()
                started.append(t)
                print(f"started {t.name} on {t.listen}", flush=True)
            except TargetUnavailable as exc:
                skipped[t.name] = str(exc)
                print(f"SKIP {t.name}: {exc}", flush=True)
        for w in wls:
            for r in range(repeat):
                order = started[r % len(started) :] + started[: r % len(started)] if started else []
                for t in order:
                    try:
                        res = run_workload(t, w, r)
                    except TargetUnavailable as exc:  # died and would not restart
                        res = RunResult(w.name, t.name, r, "", errors=[str(exc)[:500]])
                    runs.append(res)
                    status = "ok" if not res.errors else "; ".join(res.errors)[:200]
                    print(
                        f"{w.name} #{r} {t.name:<9} {res.seconds:8.2f}s {res.rate:8.0f} msg/s "
                        f"count {res.delivered}/{res.expected} "
                        f"rss +{res.rss_growth / 2**20:.1f} MiB  {status}",
                        flush=True,
                    )
                    if res.errors and isinstance(t, SubprocessTarget) and t.name not in shown_log:
                        shown_log.add(t.name)
                        print(f"--- {t.name} log (tail)\n{t.log_tail(2000)}\n---", flush=True)
        for t in started:
            settings[t.name] = t.settings()
    finally:
        for t in targets:
            t.stop()
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)
        if not args.keep and args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    settings["workloads"] = {w.name: w.describe() for w in wls}
    settings["load generator"] = {
        f"{r.workload}": " | ".join(r.extra.get("commands", []))
        or "python client (bench/measure.py)"
        for r in runs
        if r.repeat == 0 and r.server == (started[0].name if started else "")
    }
    settings["run"] = {"repeat": str(repeat), "quick": str(args.quick), "workdir": str(root)}
    if skipped:
        settings["skipped"] = skipped
    summary = summarise(runs)
    print()
    print_settings(settings)
    print("\n== Results (medians over repeats)")
    print(table(summary, {w.name: w.describe() for w in wls}))
    if args.json:
        args.json.write_text(json.dumps(document(runs, summary, settings), indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 1 if any(r.errors for r in runs) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted; every server started was stopped", file=sys.stderr)
        sys.exit(130)
