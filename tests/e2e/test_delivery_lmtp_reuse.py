"""LmtpAgent's connection cache (Postfix's ``lmtp_connection_cache_on_demand``), through real
sockets: the scripted LMTP sink counts the connections it accepts (TCP and unix socket), and
a real Dovecot LMTP (the private instance of ``test_delivery_lmtp``) takes several messages
over one connection. A cached connection the server closed never defers a message."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

import pytest

from kittiwake.delivery.api import Outcome, RecipientStatus, Route
from kittiwake.delivery.lmtp import LmtpAgent
from tests.e2e.test_delivery_lmtp import FAST, Dovecot, dovecot, statuses  # noqa: F401
from tests.support.sinks import DEFAULT_EXTENSIONS, Script, Sink, queued

D = RecipientStatus.DELIVERED
F = RecipientStatus.DEFERRED
B = RecipientStatus.BOUNCED


def agent(**kw: Any) -> LmtpAgent:
    return LmtpAgent("client.test", timeouts=FAST, connect_timeout=3.0, **kw)


async def send(a: LmtpAgent, nexthop: str, n: int, rcpts: list[str] | None = None) -> list[Outcome]:
    message, qrcpts, opener = queued(
        f"Subject: {n}\r\n\r\nbody {n}\r\n".encode(),
        rcpts or [f"u{n}@x.test"],
        queue_id=f"Q{n:08d}",
    )
    return await a.deliver(message, qrcpts, opener, Route("lmtp", nexthop))


def lmtp_script(**kw: Any) -> Script:
    return Script(lmtp=True, **kw)


@pytest.mark.parametrize("unix", [False, True])
async def test_several_messages_one_connection(tmp_path: Path, unix: bool) -> None:
    path = str(tmp_path / "lmtp.sock") if unix else None
    async with Sink("127.0.0.2", lmtp_script(), path=path) as sink:
        nexthop = f"unix:{path}" if unix else f"127.0.0.2:{sink.port}"
        a = agent()
        for n in range(4):
            assert statuses(await send(a, nexthop, n, [f"a{n}@x.test", f"b{n}@x.test"])) == [D, D]
        assert sink.connections == 1 and a.connections == 1 and len(sink.messages) == 4
        assert [m.connection for m in sink.messages] == [1] * 4
        assert sink.commands.count("LHLO client.test") == 1
        assert "RSET" not in sink.commands  # every transaction completed
        assert len(a.pool) == 1 and sink.open_connections == 1
        await a.close()
        await sink.wait_connections_closed()
    assert sink.commands[-1] == "QUIT" and not a.pool


async def test_same_server_under_another_spelling_shares_the_connection() -> None:
    async with Sink("127.0.0.2", lmtp_script()) as sink:
        a = agent()
        await send(a, f"127.0.0.2:{sink.port}", 1)
        await send(a, f"[127.0.0.2]:{sink.port}", 2)
        assert sink.connections == 1
        async with Sink("127.0.0.3", lmtp_script()) as other:
            await send(a, f"127.0.0.3:{other.port}", 3)  # another server: its own connection
            await send(a, f"127.0.0.2:{sink.port}", 4)
            assert other.connections == 1 and sink.connections == 1 and len(a.pool) == 2
            await a.close()


@pytest.mark.parametrize("noticed", [True, False])
async def test_server_closed_cached_connection_is_replaced(
    noticed: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """``noticed``: the close reached us before the next message (the pool drops the dead
    connection); else the next message finds out by writing MAIL and goes again over a new
    connection — DELIVERED either way, never DEFERRED."""
    caplog.set_level(logging.INFO, "kittiwake.delivery.lmtp")
    async with Sink("127.0.0.2", lmtp_script()) as sink:
        a = agent()
        nexthop = f"127.0.0.2:{sink.port}"
        assert statuses(await send(a, nexthop, 1)) == [D]
        sink.drop_all()
        if noticed:
            await asyncio.sleep(0.05)
        out = await send(a, nexthop, 2, ["a@x.test", "b@x.test"])
        assert statuses(out) == [D, D], out
        assert sink.connections == 2 and [m.connection for m in sink.messages] == [1, 2]
        assert a.connections == 2 and len(a.pool) == 1
        await a.close()
    died = [r for r in caplog.records if "cached connection" in r.getMessage()]
    assert bool(died) is not noticed


async def test_421_to_mail_on_cached_connection_reconnects() -> None:
    mails = 0

    def mail(sender: str) -> str:
        nonlocal mails
        mails += 1
        return "421 4.4.2 idle too long" if mails == 2 else "250 2.1.0 ok"

    for pipelining in (True, False):
        mails = 0
        ext = DEFAULT_EXTENSIONS if pipelining else DEFAULT_EXTENSIONS[1:]
        async with Sink("127.0.0.2", lmtp_script(mail=mail, extensions=ext)) as sink:
            a = agent()
            await send(a, f"127.0.0.2:{sink.port}", 1)
            out = await send(a, f"127.0.0.2:{sink.port}", 2)
            assert statuses(out) == [D] and sink.connections == 2 and len(sink.messages) == 2
            await a.close()


async def test_fresh_connection_failure_still_defers() -> None:
    """The one retry is on a new connection; when that fails too, the message waits."""
    sink = Sink("127.0.0.2", lmtp_script())
    async with sink:
        a = agent()
        await send(a, f"127.0.0.2:{sink.port}", 1)
        sink.drop_all()
    out = await send(a, f"127.0.0.2:{sink.port}", 2)  # the server is gone
    assert statuses(out) == [F] and out[0].reply.enhanced == "4.4.1"
    assert a.connections == 1
    await a.close()


async def test_idle_connection_expires() -> None:
    async with Sink("127.0.0.2", lmtp_script()) as sink:
        a = agent(reuse_idle=0.2)
        await send(a, f"127.0.0.2:{sink.port}", 1)
        assert sink.open_connections == 1 and len(a.pool) == 1
        await asyncio.sleep(0.5)
        await sink.wait_connections_closed()
        assert sink.commands[-1] == "QUIT" and not a.pool
        await send(a, f"127.0.0.2:{sink.port}", 2)
        assert sink.connections == 2 and len(sink.messages) == 2
        await a.close()


async def test_reuse_count_and_time_limits() -> None:
    async with Sink("127.0.0.2", lmtp_script()) as sink:
        a = agent(reuse_count_limit=2)
        for n in range(5):
            await send(a, f"127.0.0.2:{sink.port}", n)
        assert [m.connection for m in sink.messages] == [1, 1, 2, 2, 3]
        await a.close()
    async with Sink("127.0.0.2", lmtp_script()) as sink:
        a = agent(reuse_time_limit=0.0)
        for n in range(3):
            await send(a, f"127.0.0.2:{sink.port}", n)
        assert sink.connections == 3 and not a.pool
        await sink.wait_connections_closed()  # each one QUIT at once
        assert sink.commands.count("QUIT") == 3
        await a.close()


async def test_unfinished_transaction_is_rset_before_reuse() -> None:
    rcpt = {"nobody@x.test": "550 5.1.1 no such user"}
    async with Sink("127.0.0.2", lmtp_script(rcpt=rcpt)) as sink:
        a = agent()
        out = await send(a, f"127.0.0.2:{sink.port}", 1, ["nobody@x.test"])
        assert statuses(out) == [B] and out[0].remote_mta == "127.0.0.2"
        assert sink.commands[-1] == "RSET" and len(a.pool) == 1
        assert statuses(await send(a, f"127.0.0.2:{sink.port}", 2)) == [D]
        assert sink.connections == 1
        await a.close()


async def test_421_in_a_final_reply_is_not_reused() -> None:
    def end(rcpt: str) -> str:
        return "421 4.3.2 shutting down" if rcpt.startswith("b") else "250 2.0.0 saved"

    async with Sink("127.0.0.2", lmtp_script(end=end)) as sink:
        a = agent()
        out = await send(a, f"127.0.0.2:{sink.port}", 1, ["a@x.test", "b@x.test"])
        assert statuses(out) == [D, F] and not a.pool
        assert statuses(await send(a, f"127.0.0.2:{sink.port}", 2)) == [D]
        assert sink.connections == 2
        await a.close()


async def test_pool_bounded_per_destination() -> None:
    async with Sink("127.0.0.2", lmtp_script()) as sink:
        a = agent(max_idle_connections_per_destination=2)
        outs = await asyncio.gather(*(send(a, f"127.0.0.2:{sink.port}", n) for n in range(6)))
        assert all(statuses(o) == [D] for o in outs)
        opened = sink.connections
        assert 1 <= opened <= 6 and len(a.pool) <= 2
        for n in range(6, 12):
            await send(a, f"127.0.0.2:{sink.port}", n)
        assert sink.connections == opened and len(sink.messages) == 12
        await a.close()
        await sink.wait_connections_closed()


async def test_cancelled_delivery_closes_its_connection() -> None:
    async with Sink("127.0.0.2", lmtp_script(stall="end")) as sink:
        a = agent()
        task = asyncio.create_task(send(a, f"127.0.0.2:{sink.port}", 1))
        while not sink.messages:  # the content is in; the final replies never come
            await asyncio.sleep(0.01)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await sink.wait_connections_closed(2.0)
        assert not a.pool
        await a.close()


async def test_dovecot_several_messages_one_connection(dovecot: Dovecot) -> None:  # noqa: F811
    a = agent()
    nexthop = f"127.0.0.5:{dovecot.port}"
    try:
        for n in range(3):
            out = await send(a, nexthop, n, ["alice@example.test", "nobody@example.test"])
            assert statuses(out) == [D, B], out
        assert a.connections == 1 and len(a.pool) == 1
    finally:
        await a.close()
    stored = [m for m in dovecot.maildir("alice@example.test") if b"Subject: " in m]
    assert {m.split(b"Subject: ")[1].split(b"\n")[0] for m in stored} >= {b"0", b"1", b"2"}
