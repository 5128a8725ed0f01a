"""Relay throughput: how fast Kittiwake and Postfix drain a queue into smtp-sink, in one run.

Usage (from the repository root, as root — Postfix needs it)::

    .venv/bin/python bench/relay.py                  # 20,000 x 4 KiB, once per server
    .venv/bin/python bench/relay.py --quick          # 2,000 messages
    .venv/bin/python bench/relay.py --messages 5000 --repeat 3 --json relay.json

Owns the command line and the run: for each repeat and each server (the order rotates per
repeat), start the server fresh with the sink down, fill its queue, time the drain into the
same ``smtp-sink`` (``bench.relay_run``), stop the server; then print the settings, the
drain rates, the Kittiwake/Postfix ratio and the PASS/FAIL verdict (ratio >= 1.0 with the
sink counting exactly N for both). Every process started is stopped by PID (Postfix by
``postfix -c DIR stop``), also on errors and Ctrl-C. See bench/README.md.

Not security-sensitive; loopback addresses only, no DNS.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import signal
import statistics
import sys
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` and `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.measure import MiB
from bench.relay_parts import RelayKittiwake, RelayPostfix, Sink
from bench.relay_profile import cprofile_report, py_spy, report, signalled
from bench.relay_run import MESSAGE_SIZE, DrainResult, run_drain
from bench.run import machine, print_settings, raise_fd_limit
from bench.targets import Target, TargetUnavailable
from tests.support.postfix import free_port

SERVERS = ("kittiwake", "postfix")
TARGET_RATIO = 1.0
SINK_HOST = "127.0.0.2"  # the "remote" MX: another loopback address


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Kittiwake vs Postfix: draining a queue")
    p.add_argument("--messages", type=int, help="messages queued (default 20000)")
    p.add_argument("--quick", action="store_true", help="2000 messages (unless --messages)")
    p.add_argument("--repeat", type=int, default=1, help="runs per server (median)")
    p.add_argument("--only", default="", help="kittiwake or postfix (default: both)")
    p.add_argument("--json", type=Path, help="write every run and the verdict here")
    p.add_argument("--workdir", type=Path, help="where servers keep data (default: new temp)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    p.add_argument("--kittiwake-log-level", default="info", help="Kittiwake's log_level")
    p.add_argument(
        "--kittiwake-cmd", default="", help="command instead of `.venv/bin/kittiwake serve`"
    )
    p.add_argument(
        "--kittiwake-set",
        action="append",
        default=[],
        metavar="TABLE.KEY=TOML",
        help="extra Kittiwake setting, e.g. queue.destination_concurrency=50; recorded",
    )
    p.add_argument("--py-spy", default="", metavar="BIN", help="profile Kittiwake's drains")
    p.add_argument(
        "--cprofile",
        type=Path,
        help="cProfile Kittiwake's event-loop thread during each drain; stats to this file",
    )
    p.add_argument("--py-spy-args", default="", help='e.g. "--native --nonblocking"')
    p.add_argument(
        "--profile",
        type=Path,
        default=Path("/tmp/kittiwake-drain.pyspy"),
        help="py-spy's collapsed stacks go here (default %(default)s)",
    )
    p.add_argument(
        "--postfix-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra main.cf setting for Postfix; recorded",
    )
    args = p.parse_args(argv)
    if args.messages is None:
        args.messages = 2000 if args.quick else 20_000
    if args.messages < 1 or args.repeat < 1:
        p.error("--messages and --repeat must be at least 1")
    return args


def _numbered(path: Path, repeat: int) -> Path:
    return path.with_name(f"{path.stem}-{repeat}{path.suffix}")


def make_target(name: str, root: Path, sink: str, args: argparse.Namespace, repeat: int) -> Target:
    workdir = root / name
    shutil.rmtree(workdir, ignore_errors=True)  # a fresh, empty queue for every run
    listen = f"127.0.0.1:{free_port()}"
    if name == "kittiwake":
        command = args.kittiwake_cmd.split()
        if args.cprofile:
            out = _numbered(args.cprofile, repeat)
            command = [sys.executable, "-m", "bench.relay_cprofile", str(out), "serve"]
        return RelayKittiwake(
            workdir,
            listen,
            sink,
            log_level=args.kittiwake_log_level,
            command=command,
            extra=dict(kv.split("=", 1) for kv in args.kittiwake_set),
        )
    extra = dict(kv.split("=", 1) for kv in args.postfix_set)
    return RelayPostfix(workdir, listen, sink, extra)


def one_run(t: Target, sink: Sink, args: argparse.Namespace, repeat: int) -> DrainResult:
    try:
        t.start()
    except TargetUnavailable as exc:
        return DrainResult(t.name, repeat, args.messages, errors=[str(exc)[:1000]])
    try:
        assert isinstance(t, RelayKittiwake | RelayPostfix)
        profile: Callable[[], AbstractContextManager[object]] | None = None
        pid = t.root_pid()
        if isinstance(t, RelayKittiwake) and pid is not None:
            if args.py_spy:
                out = _numbered(args.profile, repeat)
                profile = functools.partial(
                    py_spy, args.py_spy, pid, out, extra=args.py_spy_args.split()
                )
            elif args.cprofile:
                profile = functools.partial(signalled, pid, _numbered(args.cprofile, repeat))
        return run_drain(t, sink, args.messages, repeat, during_drain=profile)
    finally:
        t.stop()


def summary(runs: list[DrainResult]) -> dict[str, Any]:
    """Median drain rate per server (good runs only), the ratio and the verdict."""
    rates: dict[str, float] = {}
    for name in SERVERS:
        good = [r.rate for r in runs if r.server == name and r.ok]
        if good:
            rates[name] = statistics.median(good)
    all_ok = all(r.ok for r in runs)
    ratio = (
        rates["kittiwake"] / rates["postfix"]
        if {"kittiwake", "postfix"} <= rates.keys() and rates["postfix"] > 0
        else None
    )
    if ratio is None:
        verdict = "n/a" if all_ok else "FAIL"
    else:
        verdict = "PASS" if all_ok and ratio >= TARGET_RATIO else "FAIL"
    return {"rates": rates, "ratio": ratio, "verdict": verdict, "all_exact": all_ok}


def table(runs: list[DrainResult], s: dict[str, Any]) -> str:
    head = (
        f"{'server':<10}{'run':>4}{'queued':>8}{'msg/s':>9}{'drain s':>9}{'sink s':>8}"
        f"{'at sink':>9}{'sess':>7}{'left':>6}{'bounced':>8}{'CPU s':>7}{'RSS MiB':>9}"
    )
    lines = [head]
    for r in runs:
        lines.append(
            f"{r.server:<10}{r.repeat:>4}{r.messages:>8}{r.rate:>9.0f}{r.drain_seconds:>9.2f}"
            f"{r.sink_seconds:>8.2f}{r.sink_messages:>9}{r.sink_sessions:>7}{r.queue_left:>6}"
            f"{r.bounces:>8}{r.cpu_seconds:>7.1f}{r.rss_peak / MiB:>9.0f}"
        )
        lines += [f"    ! {e}" for e in r.errors[:5]]
        per_s = [b[1] - a[1] for a, b in zip(r.progress, r.progress[1:], strict=False)]
        if per_s:
            lines.append("    per second: " + " ".join(map(str, per_s)))
    for r in runs:
        if r.server == "kittiwake" and r.ok:
            lines.append(
                f"kittiwake #{r.repeat} CPU during the drain: {r.cpu_seconds:.1f}s = event-loop "
                f"thread {r.cpu_main_thread:.1f}s + other threads "
                f"{r.cpu_seconds - r.cpu_main_thread:.1f}s, in {r.drain_seconds:.1f}s wall"
            )
    lines.append("")
    for name, rate in s["rates"].items():
        lines.append(f"{name} drain rate (median of good runs): {rate:.0f} msg/s")
    ratio = s["ratio"]
    lines.append("ratio kittiwake/postfix: " + ("-" if ratio is None else f"{ratio:.3g}x"))
    lines.append(
        f"target: kittiwake drains >= {TARGET_RATIO:g}x postfix, exactly N at the sink for "
        f"both: {s['verdict']}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = [n.strip().lower() for n in args.only.split(",") if n.strip()] or list(SERVERS)
    if unknown := [n for n in names if n not in SERVERS]:
        raise SystemExit(f"--only: unknown {unknown}; use {SERVERS}")
    raise_fd_limit()
    old_term = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="kittiwake-relay-"))
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)  # Postfix's unprivileged daemons must traverse it
    sink = Sink(root, f"{SINK_HOST}:{free_port(SINK_HOST)}")
    runs: list[DrainResult] = []
    settings: dict[str, Any] = {"machine": machine()}
    try:
        for rep in range(args.repeat):
            order = names[rep % len(names) :] + names[: rep % len(names)]
            for name in order:
                t = make_target(name, root, sink.listen, args, rep)
                print(f"{name} #{rep}: filling its queue with {args.messages} ...", flush=True)
                res = one_run(t, sink, args, rep)
                runs.append(res)
                settings.setdefault(name, t.settings() | {"flush": res.flush_command})
                status = "ok" if res.ok else "; ".join(res.errors)[:300]
                print(
                    f"{name} #{rep}: queued in {res.queued_seconds:.1f}s, drained in "
                    f"{res.drain_seconds:.2f}s = {res.rate:.0f} msg/s, sink counted "
                    f"{res.sink_messages} over {res.sink_sessions} connections  {status}",
                    flush=True,
                )
                if not res.ok and hasattr(t, "log_tail"):
                    print(f"--- {name} log (tail)\n{t.log_tail(2000)}\n---", flush=True)
    finally:
        sink.stop()
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)
        if not args.keep and args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    settings["sink"] = {"command": " ".join(sink.command())}
    settings["load"] = {
        "messages": str(args.messages),
        "size": f"{MESSAGE_SIZE} body octets (smtp-source -l), to rcpt@remote.test",
        "injection": "waves of smtp-source -s 50 -m 1000 -d while the sink is down",
        "repeat": str(args.repeat),
        "workdir": str(root) + ("" if args.keep or args.workdir else " (removed)"),
    }
    s = summary(runs)
    print()
    print_settings(settings)
    print("\n== Relay drain")
    print(table(runs, s))
    if args.json:
        doc = {"settings": settings, "runs": [r.as_dict() for r in runs], "summary": s}
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    if args.cprofile:
        for rep in range(args.repeat):
            if (out := _numbered(args.cprofile, rep)).exists():
                print(f"\n== Kittiwake drain #{rep}, event-loop thread (cProfile, {out})")
                print(cprofile_report(out))
    if args.py_spy:
        for rep in range(args.repeat):
            if (out := _numbered(args.profile, rep)).exists():
                print(f"\n== Kittiwake drain #{rep} profile ({out})")
                print(report(out))
                print(report(out, only="Runner.run", what="event-loop thread"))
    return 0 if all(r.ok for r in runs) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted; every process started was stopped", file=sys.stderr)
        sys.exit(130)
