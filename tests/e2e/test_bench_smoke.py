"""Smoke test of the benchmark machinery (bench/), so it cannot silently rot.

Runs tiny versions of the workloads against each server the benchmark compares (aiosmtpd,
a private Postfix, Kittiwake — skipped while ``kittiwake serve`` cannot start) and checks
that every message sent is found in the server's Maildir, plus the report's arithmetic.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.measure import SMTP_SOURCE, MiB
from bench.report import summarise, table, verdicts
from bench.run import main as bench_main
from bench.targets import (
    AiosmtpdTarget,
    KittiwakeTarget,
    PostfixTarget,
    Target,
    TargetUnavailable,
)
from bench.workloads import RunResult, Workload, run_workload
from tests.support.postfix import free_port, make_base_dir, postfix_unavailable_reason

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

needs_smtp_source = pytest.mark.skipif(
    not os.access(SMTP_SOURCE, os.X_OK), reason="smtp-source missing (apt-get install postfix)"
)

TINY = (
    Workload("A", "tiny A", "load", size=1024, messages=20, sessions=5, per_session=4),
    Workload("B", "tiny B", "load", size=1024, messages=10, sessions=5, per_session=1),
    Workload("D", "tiny D", "big", size=1 * MiB, messages=1, sessions=1, fresh=True),
    Workload("E", "tiny E", "idle", size=0, messages=20, fresh=True),
)


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = make_base_dir("bench-smoke-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _target(name: str, workdir: Path) -> Target:
    listen = f"127.0.0.1:{free_port()}"
    if name == "postfix":
        reason = postfix_unavailable_reason()
        if reason:
            pytest.skip(reason)
        return PostfixTarget(workdir / name, listen, ["wa0", "wb0", "wd0"])
    if name == "kittiwake":
        return KittiwakeTarget(workdir / name, listen)
    return AiosmtpdTarget(workdir / name, listen)


@needs_smtp_source
@pytest.mark.parametrize(
    "server", ["aiosmtpd", pytest.param("postfix", marks=pytest.mark.needs_root), "kittiwake"]
)
def test_every_message_sent_is_delivered(server: str, workdir: Path) -> None:
    target = _target(server, workdir)
    try:
        target.start()
    except TargetUnavailable as exc:
        if server == "kittiwake":
            pytest.skip(f"`kittiwake serve` not available yet: {str(exc).splitlines()[0]}")
        raise
    try:
        runs = [run_workload(target, w, 0, delivery_timeout=30, hold=0.2) for w in TINY]
    finally:
        target.stop()
    assert target.root_pid() is None or server == "postfix"
    for r in runs:
        assert r.errors == [], (r.workload, r.errors)
        assert r.delivered == r.expected, r.as_dict()
        assert r.rss_peak > 0, r.as_dict()  # the sampler saw the server's process tree
    by_name = {r.workload: r for r in runs}
    assert by_name["A"].rate > 0 and by_name["B"].rate > 0
    assert by_name["D"].extra["reply"].startswith("250")
    # Mail was counted, then removed so repeated runs don't fill the disk.
    assert target.delivered("wa0") == 0


@needs_smtp_source
def test_command_line_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    rc = bench_main(["--quick", "--only", "aiosmtpd,A", "--scale", "0.02", "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "in_flow_delay" not in text  # Postfix was not selected
    assert "aiosmtpd" in text and "msg/s" in text
    doc = out.read_text()
    assert '"missing": 0' in doc and '"workload": "A"' in doc


def _run(wl: str, server: str, **kw: float) -> RunResult:
    r = RunResult(wl, server, 0, "box", expected=100, delivered=100)
    for k, v in kw.items():
        setattr(r, k, v)
    return r


def test_report_ratios_and_verdicts() -> None:
    runs = [
        _run("A", "kittiwake", rate=2100.0, seconds=1.0),
        _run("A", "postfix", rate=1000.0, seconds=2.0),
        _run("A", "aiosmtpd", rate=1800.0, seconds=1.2),
        _run("B", "kittiwake", rate=1400.0),
        _run("B", "postfix", rate=1000.0),
        _run("D", "kittiwake", seconds=0.5, rss_before=100 * MiB, rss_peak=140 * MiB),
        _run("D", "postfix", seconds=1.0, rss_before=10 * MiB, rss_peak=20 * MiB),
    ]
    runs[-1].expected = runs[-2].expected = runs[-1].delivered = runs[-2].delivered = 1
    s = summarise(runs)
    got = {(t.workload, t.text): v for t, v in verdicts(s)}
    assert got[("A", "rate >= 2.0x postfix")] == "PASS"
    assert got[("A", "rate >= 1.2x aiosmtpd")] == "FAIL"  # 2100 < 1.2 * 1800
    assert got[("B", "rate >= 1.5x postfix")] == "FAIL"
    assert got[("D", "time to final 250 <= postfix")] == "PASS"
    assert got[("D", "RSS growth < 30 MiB")] == "FAIL"  # grew 40 MiB
    assert got[("E", "all greeted and RSS growth < 150 MiB")] == "n/a"
    text = table(s, {})
    assert "rate kittiwake/postfix: 2.1x" in text
    assert "time kittiwake/postfix: 0.5x" in text


def test_missing_messages_fail_the_target() -> None:
    runs = [_run("A", "kittiwake", rate=5000.0), _run("A", "postfix", rate=1000.0)]
    runs[0].delivered = 99
    runs[0].errors = ["1 of 100 messages missing"]
    got = {t.text: v for t, v in verdicts(summarise(runs)) if t.workload == "A"}
    assert got["rate >= 2.0x postfix"] == "FAIL"
