"""The control socket over a real Unix socket, with an in-memory QueueAdmin behind it."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kittiwake.admin.control import (
    ControlError,
    ControlServer,
    QueueAdmin,
    ServerDown,
    request,
    socket_path,
)
from tests.unit.queue_fakes import DEFERRED, PENDING, FakeAdmin, message

NOW = 1_750_000_000.0


@pytest.fixture
def admin() -> FakeAdmin:
    return FakeAdmin(
        [
            message("alice@example.org", [("bob@example.net", DEFERRED)], age=30, now=NOW),
            message(
                "",
                [("carol@example.com", PENDING), ("dave@sub.example.com", DEFERRED)],
                age=7200,
                held=True,
                now=NOW,
            ),
        ]
    )


@pytest.fixture
async def server(tmp_path: Path, admin: FakeAdmin) -> AsyncIterator[ControlServer]:
    srv = ControlServer(socket_path(tmp_path), admin, clock=lambda: NOW, idle_timeout=5)
    await srv.start()
    yield srv
    await srv.stop()


async def ask(server: ControlServer, op: str, **args: object) -> object:
    """The synchronous client, in a thread (the server runs on this loop)."""
    return await asyncio.to_thread(request, server.path, op, args, timeout=5)


async def raw(server: ControlServer, *lines: bytes) -> list[dict[str, object]]:
    reader, writer = await asyncio.open_unix_connection(str(server.path))
    writer.write(b"".join(lines))
    writer.write_eof()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    return [json.loads(line) for line in data.splitlines()]


def test_fake_is_a_queue_admin(admin: FakeAdmin) -> None:
    checked: QueueAdmin = admin  # mypy checks the Protocol
    assert checked is admin


async def test_socket_is_private_and_removed_on_stop(tmp_path: Path, server: ControlServer) -> None:
    mode = os.stat(server.path).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600
    assert server.path == tmp_path / "control.sock"
    assert [p.name for p in tmp_path.iterdir()] == ["control.sock"]  # no temp dir left
    await server.stop()
    assert not server.path.exists()
    await server.stop()  # idempotent


async def test_list_and_show(server: ControlServer, admin: FakeAdmin) -> None:
    listed = await ask(server, "list")
    assert isinstance(listed, list) and len(listed) == 2
    first = listed[1]
    assert first["sender"] == "alice@example.org" and not first["held"]
    assert first["recipients"][0] == {
        "index": 0,
        "address": "bob@example.net",
        "status": "deferred",
        "attempts": 2,
        "next_attempt": NOW + 600,
        "last_attempt": 0.0,
        "last_reply": "451 4.4.1 Connection refused",
        "route": "smtp:example.net",
        "remote_mta": None,
        "dsn_status": None,
        "notify": ["FAILURE", "DELAY"],
        "orcpt": "rfc822;bob@example.net",
    }
    held = listed[0]
    assert held["held"] and held["sender"] == "" and held["envid"] == "ENV123"
    shown = await ask(server, "show", queue_id=first["queue_id"])
    assert shown == first


async def test_summary(server: ControlServer) -> None:
    shape = await ask(server, "summary")
    assert isinstance(shape, dict)
    assert (shape["messages"], shape["recipients"], shape["held"], shape["deferred"]) == (
        2,
        3,
        1,
        2,
    )
    domains = {d["domain"]: d for d in shape["domains"]}
    assert set(domains) == {"example.net", "example.com", "sub.example.com"}
    assert domains["example.net"]["buckets"][0] == 1  # 30 s old: the first (5 min) bucket
    assert domains["example.com"]["buckets"][5] == 1  # 120 min: the 160-minute bucket
    assert domains["example.com"]["held"] == 1


async def test_mutations(server: ControlServer, admin: FakeAdmin) -> None:
    qid = next(q for q, m in admin.messages.items() if m.envelope.sender)  # alice's
    assert await ask(server, "hold", queue_id=qid) is True
    assert admin.messages[qid].held
    assert await ask(server, "release", queue_id=qid) is True
    assert not admin.messages[qid].held
    assert await ask(server, "retry", queue_id=qid) is True
    assert await ask(server, "flush") == 2
    assert await ask(server, "flush", domain="Example.NET") == 1
    assert await ask(server, "flush", domain=".example.com") == 0
    assert await ask(server, "bounce", queue_id=qid) is True
    assert qid not in admin.messages
    other = next(iter(admin.messages))
    assert await ask(server, "delete", queue_id=other) is True
    assert admin.messages == {}
    assert ("flush", "example.net") in admin.calls and ("flush", ".example.com") in admin.calls


async def test_why_a_change_did_nothing(server: ControlServer, admin: FakeAdmin) -> None:
    held = next(q for q, m in admin.messages.items() if m.held)
    with pytest.raises(ControlError, match=f"{held} is held; release it first"):
        await ask(server, "retry", queue_id=held)


@pytest.mark.parametrize(
    ("op", "args", "error"),
    [
        ("show", {"queue_id": "0000000000000ZZ"}, "invalid queue id"),
        ("show", {"queue_id": "0000000000000Z"}, "no such message: 0000000000000Z"),
        ("hold", {"queue_id": "0000000000000Z"}, "no such message"),
        ("delete", {"queue_id": "../../etc/passwd"}, "invalid queue id"),
        ("retry", {}, "invalid queue id None"),
        ("flush", {"domain": "exa mple.net"}, "invalid domain"),
        ("flush", {"domain": 7}, "invalid domain"),
        ("list", {"queue_id": "0000000000000Z"}, "unexpected field(s) for list: queue_id"),
        ("explode", {}, "unknown op 'explode'"),
    ],
)
async def test_bad_requests(
    server: ControlServer, op: str, args: dict[str, object], error: str
) -> None:
    with pytest.raises(ControlError, match=None) as info:
        await ask(server, op, **args)
    assert error in str(info.value)
    assert not isinstance(info.value, ServerDown)


async def test_malformed_lines_and_several_requests_per_connection(server: ControlServer) -> None:
    answers = await raw(
        server,
        b"not json\n",
        b"[1, 2]\n",
        b"\xff\xfe\n",
        b"\n",  # blank lines are ignored
        b'{"op": "flush"}\n',
        b'{"op": "list"}',  # the last line may lack its newline
    )
    assert answers[0] == {"ok": False, "error": "request is not valid JSON"}
    assert answers[1]["ok"] is False and "JSON object" in str(answers[1]["error"])
    assert answers[2] == {"ok": False, "error": "request is not valid JSON"}
    assert answers[3] == {"ok": True, "result": 2}
    assert answers[4]["ok"] is True and len(answers[4]["result"]) == 2  # type: ignore[arg-type]
    assert len(answers) == 5


async def test_oversized_request_is_refused(server: ControlServer) -> None:
    answers = await raw(
        server, b'{"op": "list", "x": "' + b"a" * 10_000 + b'"}\n', b'{"op":"list"}\n'
    )
    assert answers == [{"ok": False, "error": "request longer than 4096 octets"}]  # then closed


async def test_a_failing_admin_is_an_error_answer(server: ControlServer, admin: FakeAdmin) -> None:
    admin.broken = True
    with pytest.raises(ControlError, match="internal error: RuntimeError: database disk image"):
        await ask(server, "list")
    admin.broken = False
    assert len(await ask(server, "list")) == 2  # type: ignore[arg-type]


async def test_server_down(tmp_path: Path) -> None:
    with pytest.raises(ServerDown, match="server not running"):
        request(tmp_path / "control.sock", "list")
    # A stale socket file (a server that died): nobody accepts on it.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "control.sock"))
    stale.close()
    with pytest.raises(ServerDown):
        request(tmp_path / "control.sock", "list")


async def test_start_replaces_a_stale_socket(tmp_path: Path, admin: FakeAdmin) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "control.sock"))
    stale.close()
    srv = ControlServer(tmp_path / "control.sock", admin)
    await srv.start()
    try:
        assert len(await ask(srv, "list")) == 2  # type: ignore[arg-type]
    finally:
        await srv.stop()


async def test_stop_ends_idle_connections(server: ControlServer) -> None:
    reader, writer = await asyncio.open_unix_connection(str(server.path))
    writer.write(b'{"op": "flush"}\n')
    assert json.loads(await reader.readline()) == {"ok": True, "result": 2}
    await asyncio.wait_for(server.stop(), 5)
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
    writer.close()


async def test_idle_timeout(tmp_path: Path, admin: FakeAdmin) -> None:
    srv = ControlServer(tmp_path / "c.sock", admin, idle_timeout=0.1)
    await srv.start()
    try:
        reader, writer = await asyncio.open_unix_connection(str(srv.path))
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
    finally:
        await srv.stop()


async def test_path_too_long(tmp_path: Path, admin: FakeAdmin) -> None:
    srv = ControlServer(tmp_path / ("x" * 120) / "control.sock", admin)
    with pytest.raises(OSError, match="too long"):
        await srv.start()
