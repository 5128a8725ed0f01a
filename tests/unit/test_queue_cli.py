"""``kittiwake queue`` through click's CliRunner: against a live control socket, and
read-only against a real SQLite queue when the server is down."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from kittiwake.admin.cli import main
from kittiwake.admin.control import ControlServer, socket_path
from kittiwake.delivery.api import Outcome, RecipientStatus
from kittiwake.envelope import Envelope, Recipient, Reply
from kittiwake.queue.sqlite import SQLiteStore
from tests.unit.queue_fakes import DEFERRED, PENDING, FakeAdmin, message


def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "kittiwake.toml"
    path.write_text('data_dir = "d"\n', encoding="utf-8")
    return path


def cli(config: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["queue", *args, "--config", str(config)], env={})


async def acli(config: Path, *args: str) -> Result:
    """Run the CLI in a thread: the control server answers on this event loop."""
    return await asyncio.to_thread(cli, config, *args)


@pytest.fixture
def admin() -> FakeAdmin:
    return FakeAdmin(
        [
            message("alice@example.org", [("bob@example.net", DEFERRED)], age=30),
            message("", [("carol@example.com", PENDING)], age=7200, held=True, size=99),
        ]
    )


@pytest.fixture
async def live(tmp_path: Path, admin: FakeAdmin) -> AsyncIterator[Path]:
    config = config_file(tmp_path)
    server = ControlServer(socket_path(tmp_path / "d"), admin)
    await server.start()
    yield config
    await server.stop()


def ids(admin: FakeAdmin) -> tuple[str, str]:
    alice = next(q for q, m in admin.messages.items() if m.envelope.sender)
    bounce = next(q for q, m in admin.messages.items() if not m.envelope.sender)
    return alice, bounce


async def test_list_is_a_mailq_listing(live: Path, admin: FakeAdmin) -> None:
    alice, bounce = ids(admin)
    result = await acli(live, "list")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("-Queue ID-")
    assert f"{bounce}!" in out and f"{alice} " in out and f"{alice}!" not in out
    assert "<alice@example.org>" in out and "<>" in out
    assert "deferred   bob@example.net" in out and "pending    carol@example.com" in out
    assert "(2 attempts, next " in out and "451 4.4.1 Connection refused" in out
    assert "(held: held by the administrator)" in out
    assert out.rstrip().endswith("-- 1333 octets in 2 messages, 2 recipients, 1 held")
    assert result.stderr == ""  # the server answered: no read-only note
    assert (await acli(live)).stdout == out  # `kittiwake queue` alone
    mailq = await asyncio.to_thread(
        CliRunner().invoke, main, ["mailq", "--config", str(live)], env={}
    )
    assert mailq.exit_code == 0 and mailq.stdout == out


async def test_list_json(live: Path, admin: FakeAdmin) -> None:
    result = await acli(live, "list", "--json")
    assert result.exit_code == 0
    listed = json.loads(result.stdout)
    assert {m["queue_id"] for m in listed} == set(admin.messages)
    group_flag = await asyncio.to_thread(
        CliRunner().invoke, main, ["queue", "--json", "--config", str(live), "list"], env={}
    )
    assert json.loads(group_flag.stdout) == listed


async def test_show(live: Path, admin: FakeAdmin) -> None:
    alice, _ = ids(admin)
    result = await acli(live, "show", alice)
    assert result.exit_code == 0
    assert f"queue id     {alice}" in result.stdout
    assert "recipient    bob@example.net  deferred" in result.stdout
    assert "  orcpt      rfc822;bob@example.net" in result.stdout
    assert "  notify     FAILURE,DELAY" in result.stdout
    as_json = json.loads((await acli(live, "show", alice, "--json")).stdout)
    assert as_json["queue_id"] == alice and as_json["envid"] == "ENV123"
    missing = await acli(live, "show", "00000000000000")
    assert missing.exit_code == 1
    assert missing.stderr == "kittiwake: no such message: 00000000000000\n"


async def test_summary(live: Path) -> None:
    result = await acli(live, "summary")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        *("msgs", "rcpts", "defer", "held"),
        *("5", "10", "20", "40", "80", "160", "320", "640", "1280", "1280+"),
    ]
    assert lines[1].split() == ["TOTAL", "2", "2", "1", "1", "1", "0", "0", "0", "0", "1", *"0000"]
    assert json.loads((await acli(live, "summary", "--json")).stdout)["recipients"] == 2


async def test_changes(live: Path, admin: FakeAdmin) -> None:
    alice, bounce = ids(admin)
    for op, qid, text in [
        ("hold", alice, "held"),
        ("release", alice, "released"),
        ("retry", alice, "scheduled now"),
        ("bounce", bounce, "bounced"),
        ("delete", alice, "deleted"),
    ]:
        result = await acli(live, op, qid)
        assert result.exit_code == 0, result.output
        assert result.stdout == f"{qid}: {text}\n"
        assert (op, qid) in admin.calls
    assert admin.messages == {}
    result = await acli(live, "hold", alice, "--json")
    assert result.exit_code == 1 and "no such message" in result.stderr


async def test_flush(live: Path, admin: FakeAdmin) -> None:
    result = await acli(live, "flush")
    assert (result.exit_code, result.stdout) == (0, "flush: 1 message scheduled\n")
    result = await acli(live, "flush", "--domain", "example.net", "--json")
    assert json.loads(result.stdout) == {
        "ok": True,
        "op": "flush",
        "domain": "example.net",
        "messages": 1,
    }
    assert admin.calls[-1] == ("flush", "example.net")
    bad = await acli(live, "flush", "-d", "not a domain")
    assert bad.exit_code == 1 and "invalid domain" in bad.stderr


# ------------------------------------------------------------------ the server is down


async def fill_store(data_dir: Path) -> tuple[str, str]:
    """Two messages in a real SQLite queue, one deferred; the store is closed after."""
    store = SQLiteStore(data_dir)
    await store.open()
    try:
        queued = []
        for rcpts in (["bob@example.net"], ["carol@example.com", "dan@example.com"]):
            writer = store.new_message()
            writer.write(b"Subject: hello\r\n\r\nhi\r\n")
            env = Envelope("alice@example.org", tuple(Recipient(r) for r in rcpts))
            queued.append(await store.commit(writer, env))
        deferred = Outcome(0, RecipientStatus.DEFERRED, Reply(451, "4.4.1", "Connection refused"))
        await store.record(queued[0].queue_id, [deferred])
        return queued[0].queue_id, queued[1].queue_id
    finally:
        await store.close()


async def test_read_only_when_the_server_is_down(tmp_path: Path) -> None:
    config = config_file(tmp_path)
    first, second = await fill_store(tmp_path / "d")
    result = await acli(config, "list")
    assert result.exit_code == 0, result.output
    assert "server not running; reading the queue read-only" in result.stderr
    assert first in result.stdout and second in result.stdout
    assert "deferred   bob@example.net" in result.stdout
    assert "451 4.4.1 Connection refused" in result.stdout
    assert "pending    dan@example.com" in result.stdout
    listed = json.loads((await acli(config, "list", "--json")).stdout)
    assert [m["queue_id"] for m in listed] == [first, second]
    shown = await acli(config, "show", second)
    assert shown.exit_code == 0 and "recipient    carol@example.com  pending" in shown.stdout
    assert (await acli(config, "show", "00000000000000")).exit_code == 1
    summary = json.loads((await acli(config, "summary", "--json")).stdout)
    assert (summary["messages"], summary["recipients"], summary["deferred"]) == (2, 3, 1)
    assert [d["domain"] for d in summary["domains"]] == ["example.com", "example.net"]


@pytest.mark.parametrize("op", ["hold", "release", "delete", "retry", "bounce"])
async def test_changes_need_the_server(tmp_path: Path, op: str) -> None:
    config = config_file(tmp_path)
    first, _ = await fill_store(tmp_path / "d")
    result = await acli(config, op, first)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "server not running" in result.stderr and "kittiwake serve" in result.stderr
    flush = await acli(config, "flush")
    assert flush.exit_code == 1 and "server not running" in flush.stderr


def test_no_queue_at_all(tmp_path: Path) -> None:
    result = cli(config_file(tmp_path), "list")
    assert result.exit_code == 1
    assert "no queue at" in result.stderr


def test_bad_config_is_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[queue]\nretry_first = 0\n", encoding="utf-8")
    result = cli(path, "list")
    assert result.exit_code == 2
    assert "queue.retry_first" in result.stderr


def test_usage_errors_are_exit_2(tmp_path: Path) -> None:
    assert cli(config_file(tmp_path), "show").exit_code == 2  # missing QUEUE_ID
    assert cli(config_file(tmp_path), "frobnicate").exit_code == 2
