"""Resource limits: error budget, connection limits (total and per IP, 421 before the
greeting), idle timeout (RFC 5321 §4.5.3.2), commands per session, 500 concurrent clients."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from tests.support.server import KittiwakeServer, MakeServer
from tests.support.smtpclient import RawSMTP, SMTPReply, message


def _until_421(c: RawSMTP, line: str, limit: int = 30) -> list[SMTPReply]:
    """Send ``line`` one at a time until a 421 arrives (as a reply or right after one)."""
    got: list[SMTPReply] = []
    for _ in range(limit):
        got.append(c.cmd(line))
        if got[-1].code == 421:
            break
    return got


def test_too_many_bad_commands(server: KittiwakeServer) -> None:
    # max_bad_commands = 20: the session is closed with 421 4.7.0 once it is exceeded
    # (Postfix's smtpd_hard_error_limit style: the 421 may follow the last 500 unasked).
    with RawSMTP(server.mx) as c:
        c.ehlo()
        got = _until_421(c, "XYZZY")
        for reply in got[:-1]:
            reply.check(500, "5.5.2")
        got[-1].check(421, "4.7.0")
        assert 20 <= len(got) - 1 <= 21, [r.code for r in got]
        assert c.expect_closed() == b""


def test_bad_sequences_count_as_errors_too(server: KittiwakeServer) -> None:
    with RawSMTP(server.mx) as c:
        c.ehlo()
        got = _until_421(c, "RCPT TO:<a@example.test>")
        assert {r.code for r in got[:-1]} == {503}, got
        got[-1].check(421, "4.7.0")
        assert 20 <= len(got) - 1 <= 21, [r.code for r in got]


def test_good_commands_do_not_use_up_the_error_budget(server: KittiwakeServer) -> None:
    with RawSMTP(server.mx) as c:
        c.ehlo()
        for _ in range(3):
            for _ in range(15):
                c.cmd("NOOP").check(250, "2.0.0")
            c.cmd("XYZZY").check(500, "5.5.2")
        c.cmd("NOOP").check(250, "2.0.0")


def _greeted(addr: tuple[str, int], source_ip: str | None = None) -> RawSMTP:
    """A connection that got its 220 (retrying while the server still counts a session
    that has just ended, e.g. the harness's readiness probe)."""
    deadline = time.monotonic() + 5
    while True:
        c = RawSMTP(addr, source_ip=source_ip)
        assert c.greeting is not None
        if c.greeting.code == 220:
            return c
        c.close()
        assert time.monotonic() < deadline, f"never greeted: {c.greeting}"
        time.sleep(0.05)


def test_connection_limits_before_greeting(make_server: MakeServer) -> None:
    srv = make_server({"limits": {"max_connections": 3, "max_connections_per_ip": 2}})
    a = _greeted(srv.mx)
    b = _greeted(srv.mx)
    try:
        # Third from 127.0.0.1: over the per-IP limit, refused before any greeting.
        with RawSMTP(srv.mx, read_greeting=False) as c:
            c.read_reply().check(421, "4.7.0")
            assert c.expect_closed() == b""
        # Another loopback address still gets in (3 in total) ...
        with _greeted(srv.mx, source_ip="127.0.0.2") as other:
            # ... and a fourth connection is over the total limit.
            with RawSMTP(srv.mx, read_greeting=False, source_ip="127.0.0.3") as d:
                d.read_reply().check(421, "4.7.0")
                assert d.expect_closed() == b""
            other.cmd("NOOP").check(250, "2.0.0")
        a.cmd("QUIT").check(221, "2.0.0")
        a.expect_closed()
        # The freed slot is usable again (the server notices the close quickly).
        deadline = time.monotonic() + 5
        while True:
            with RawSMTP(srv.mx, read_greeting=False) as e:
                first = e.read_reply()
                if first.code == 220:
                    e.ehlo()
                    break
            assert time.monotonic() < deadline, f"slot never freed: {first}"
            time.sleep(0.05)
        b.cmd("NOOP").check(250, "2.0.0")
    finally:
        a.close()
        b.close()


def test_idle_timeout(make_server: MakeServer) -> None:
    srv = make_server({"timeouts": {"command": 1}})
    with RawSMTP(srv.mx) as c:
        c.ehlo()
        started = time.monotonic()
        c.read_reply(timeout=10).check(421, "4.4.2")
        assert 0.8 < time.monotonic() - started < 5
        assert c.expect_closed() == b""


def test_commands_per_session(make_server: MakeServer) -> None:
    srv = make_server({"limits": {"max_commands": 10}})
    with RawSMTP(srv.mx) as c:
        codes = [c.cmd("NOOP").code for _ in range(10)]
        assert codes == [250] * 10
        reply = c.cmd("NOOP")
        assert reply.code == 421 and (reply.enhanced or "").startswith("4."), reply
        assert c.expect_closed() == b""


# ------------------------------------------------------------- 500 concurrent clients

CONCURRENT = 500


async def _read_reply(reader: asyncio.StreamReader) -> bytes:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed")
        if line[3:4] != b"-":
            return line


async def _one_client(
    srv: KittiwakeServer, i: int, rcpt: str, go: asyncio.Event, ready: list[int]
) -> bytes:
    reader, writer = await asyncio.open_connection(*srv.mx)
    try:
        greeting = await _read_reply(reader)
        assert greeting.startswith(b"220 "), greeting
        ready.append(i)
        await go.wait()  # every connection is open before any transaction starts
        writer.write(
            f"EHLO c{i}.client.test\r\nMAIL FROM:<s{i}@client.test>\r\n"
            f"RCPT TO:<{rcpt}>\r\nDATA\r\n".encode()
        )
        replies = [await _read_reply(reader) for _ in range(4)]
        assert [r[:3] for r in replies] == [b"250", b"250", b"250", b"354"], replies
        writer.write(message(f"client {i}", f"body {i}\r\n" * 50) + b".\r\nQUIT\r\n")
        end = await _read_reply(reader)
        assert end.startswith(b"250 2.0.0"), end
        assert (await _read_reply(reader)).startswith(b"221")
        return end
    finally:
        writer.close()


@pytest.mark.slow
async def test_500_concurrent_connections(make_server: MakeServer) -> None:
    srv = make_server({"log_level": "info"})
    tag = uuid.uuid4().hex[:6]
    rcpts = [f"load{tag}x{n}@example.test" for n in range(10)]
    go = asyncio.Event()
    ready: list[int] = []
    async with asyncio.timeout(60):
        tasks = [
            asyncio.create_task(_one_client(srv, i, rcpts[i % 10], go, ready))
            for i in range(CONCURRENT)
        ]
        while len(ready) < CONCURRENT:
            done = [t for t in tasks if t.done()]
            for t in done:
                t.result()  # surfaces an early failure
            await asyncio.sleep(0.05)
        go.set()
        ends = await asyncio.gather(*tasks)
    qids = {e.split(b"queued as ")[1].strip() for e in ends}
    assert len(qids) == CONCURRENT
    deadline = time.monotonic() + 30
    while sum(len(srv.maildir(r)) for r in rcpts) < CONCURRENT:
        assert time.monotonic() < deadline, [len(srv.maildir(r)) for r in rcpts]
        await asyncio.sleep(0.1)
    assert [len(srv.maildir(r)) for r in rcpts] == [CONCURRENT // 10] * 10
