"""Smoke test of the relay-throughput benchmark (bench/relay*.py), so it cannot silently rot.

Fills Kittiwake's and a private Postfix's queue with 200 messages while the sink is down,
drains each into ``smtp-sink`` and checks that the sink counted exactly 200 and the queue
is empty; plus the sink-counter parsing and the verdict arithmetic. The Postfix case skips
without root or Postfix; everything skips without ``smtp-sink``/``smtp-source``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.measure import SMTP_SOURCE
from bench.relay import main as relay_main
from bench.relay import summary
from bench.relay_parts import SMTP_SINK, RelayKittiwake, RelayPostfix, Sink, SinkCount
from bench.relay_run import DrainResult, run_drain
from tests.support.postfix import free_port, make_base_dir, postfix_unavailable_reason

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

needs_tools = pytest.mark.skipif(
    not (os.access(SMTP_SOURCE, os.X_OK) and os.access(SMTP_SINK, os.X_OK)),
    reason="smtp-source/smtp-sink missing (apt-get install postfix)",
)
N = 200


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = make_base_dir("bench-relay-smoke-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@needs_tools
@pytest.mark.parametrize(
    "server", ["kittiwake", pytest.param("postfix", marks=pytest.mark.needs_root)]
)
def test_drain_delivers_every_message_exactly_once(server: str, workdir: Path) -> None:
    sink = Sink(workdir, f"127.0.0.2:{free_port('127.0.0.2')}")
    listen = f"127.0.0.1:{free_port()}"
    target: RelayKittiwake | RelayPostfix
    if server == "postfix":
        if reason := postfix_unavailable_reason():
            pytest.skip(reason)
        target = RelayPostfix(workdir / server, listen, sink.listen)
    else:
        target = RelayKittiwake(workdir / server, listen, sink.listen)
    target.start()
    try:
        res = run_drain(target, sink, N, sessions=10, per_session=10, settle=0.3)
    finally:
        target.stop()
        sink.stop()
    assert res.errors == [], res.as_dict()
    assert res.sink_messages == N, res.as_dict()  # none lost, none duplicated
    assert res.queue_left == 0 and res.bounces == 0
    assert res.sink_sessions >= 1  # it went over SMTP to the sink
    assert 0 < res.sink_seconds <= res.drain_seconds and res.rate > 0
    assert res.queued_seconds >= res.inject_seconds > 0
    assert not sink.alive() and not target.alive()


@needs_tools
def test_a_refusing_sink_fails_the_run(workdir: Path) -> None:
    # smtp-sink -f . answers 5xx to every end of data (yet counts it): each message bounces,
    # the notice comes back to the (local) sender, and the run must say so.
    sink = Sink(workdir, f"127.0.0.2:{free_port('127.0.0.2')}", options=["-f", "."])
    target = RelayKittiwake(workdir / "kittiwake", f"127.0.0.1:{free_port()}", sink.listen)
    target.start()
    try:
        res = run_drain(target, sink, 20, sessions=5, per_session=4, settle=0.3)
    finally:
        target.stop()
        sink.stop()
    assert res.bounces == 20 and not res.ok
    assert "20 bounces came back to the sender" in res.errors


@needs_tools
def test_command_line_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "relay.json"
    rc = relay_main(["--messages", "50", "--only", "kittiwake", "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "msg/s" in text and "ratio kittiwake/postfix: -" in text
    doc = json.loads(out.read_text())
    (run,) = doc["runs"]
    assert run["server"] == "kittiwake" and run["sink_messages"] == 50 and run["ok"]
    assert doc["summary"]["verdict"] == "n/a"  # no Postfix run to compare with
    assert '"remote.test" = "smtp:[127.0.0.2]:' in doc["settings"]["kittiwake"]["config"]


def test_sink_counter_parsing(tmp_path: Path) -> None:
    sink = Sink(tmp_path, "127.0.0.2:2525")
    assert sink.count() == SinkCount(0, 0, 0)  # no output yet
    sink.out.write_bytes(b"sess=0 quit=0 mesg=1\rsess=0 quit=0 mesg=2\rsess=1 quit=1 mesg=2\r")
    assert sink.count() == SinkCount(1, 1, 2)
    # A record cut short in mid-write never lowers the count.
    sink.out.write_bytes(b"sess=3 quit=3 mesg=19999\rsess=3 quit=3 mesg=2")
    assert sink.count().messages == 19999
    with pytest.raises(ValueError):
        Sink(tmp_path, "10.0.0.1:25")  # loopback only


def _r(server: str, rate_seconds: float, **kw: object) -> DrainResult:
    r = DrainResult(server, 0, 1000, drain_seconds=rate_seconds, sink_messages=1000)
    for k, v in kw.items():
        setattr(r, k, v)
    return r


def test_verdict_needs_ratio_and_exact_counts() -> None:
    s = summary([_r("kittiwake", 1.0), _r("postfix", 1.25)])  # 1000 vs 800 msg/s
    assert s["ratio"] == pytest.approx(1.25) and s["verdict"] == "PASS"
    assert summary([_r("kittiwake", 2.0), _r("postfix", 1.0)])["verdict"] == "FAIL"
    lost = _r("kittiwake", 0.5, sink_messages=999, errors=["1 of 1000 messages lost"])
    s = summary([lost, _r("kittiwake", 1.0), _r("postfix", 1.25)])
    assert s["ratio"] == pytest.approx(1.25)  # the median of good runs
    assert s["verdict"] == "FAIL"  # but a run that lost mail never passes
    assert summary([_r("kittiwake", 1.0)])["verdict"] == "n/a"
