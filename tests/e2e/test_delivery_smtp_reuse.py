"""Connection reuse (Postfix's connection cache) and multi-transaction sessions."""

from __future__ import annotations

import asyncio
import contextlib

from kittiwake.delivery.api import Outcome, RecipientStatus, Route
from kittiwake.delivery.smtp import SmtpAgent
from tests.e2e.test_delivery_smtp import ROUTE, agent, dest, statuses
from tests.support.sinks import Script, Sink, queued

D = RecipientStatus.DELIVERED


async def send(a: SmtpAgent, n: int = 1, route: Route = ROUTE, rcpts: int = 1) -> list[Outcome]:
    message, qrcpts, opener = queued(
        f"Subject: {n}\r\n\r\nbody {n}\r\n".encode(),
        [f"u{i}@dest.test" for i in range(rcpts)],
        queue_id=f"Q{n:08d}",
    )
    return await a.deliver(message, qrcpts, opener, route)


async def test_two_deliveries_one_connection_then_quit_on_close() -> None:
    async with Sink("127.0.0.2") as mx:
        a = agent([dest(mx)])
        for n in range(3):
            assert statuses(await send(a, n)) == [D]
        assert mx.connections == 1 and a.connections == 1 and len(mx.messages) == 3
        assert a.pool and mx.open_connections == 1
        assert [m.connection for m in mx.messages] == [1, 1, 1]
        assert "RSET" not in mx.commands  # a completed transaction needs none
        await a.close()
        await mx.wait_connections_closed()
    assert mx.commands[-1] == "QUIT"
    assert a.find.calls == ["dest.test"]  # type: ignore[attr-defined]  # no lookup on reuse


async def test_idle_connection_expires() -> None:
    async with Sink("127.0.0.2") as mx:
        a = agent([dest(mx)], reuse_idle=0.2)
        await send(a, 1)
        await asyncio.sleep(0.5)
        await mx.wait_connections_closed()
        assert mx.commands[-1] == "QUIT" and not a.pool
        await send(a, 2)
        assert mx.connections == 2
        await a.close()


async def test_server_closed_idle_connection_reconnects() -> None:
    async with Sink("127.0.0.2") as mx:
        a = agent([dest(mx)])
        await send(a, 1)
        mx.drop_all()
        await asyncio.sleep(0.05)
        assert statuses(await send(a, 2)) == [D]
        assert mx.connections == 2 and len(mx.messages) == 2
        await a.close()


async def test_421_on_reused_connection_reconnects_transparently() -> None:
    mails = 0

    def mail(sender: str) -> str:
        nonlocal mails
        mails += 1
        return "421 4.4.2 idle too long" if mails == 2 else "250 2.1.0 ok"

    async with Sink("127.0.0.2", Script(mail=mail)) as mx:
        a = agent([dest(mx)])
        await send(a, 1)
        out = await send(a, 2)
        assert statuses(out) == [D] and mx.connections == 2 and len(mx.messages) == 2
        await a.close()


async def test_concurrent_deliveries_share_the_pool() -> None:
    async with Sink("127.0.0.2") as mx:
        a = agent([dest(mx)], max_idle_connections_per_destination=3)
        outs = await asyncio.gather(*(send(a, n) for n in range(6)))
        assert all(statuses(o) == [D] for o in outs)
        opened = mx.connections
        assert 1 <= opened <= 6 and len(a.pool) <= 3
        for n in range(6, 12):
            await send(a, n)
        assert mx.connections == opened and len(mx.messages) == 12
        await a.close()


async def test_no_reuse_across_routes() -> None:
    async with Sink("127.0.0.2") as mx:
        a = agent([dest(mx)])
        await send(a, 1, Route("smtp", "dest.test"))
        await send(a, 2, Route("smtp", "other.test"))
        assert mx.connections == 2
        await send(a, 3, Route("smtp", "other.test"))
        assert mx.connections == 2
        await a.close()


async def test_452_too_many_recipients_sent_in_further_transactions() -> None:
    per_tx = 0

    def rcpt(address: str) -> str:
        nonlocal per_tx
        per_tx += 1
        return "250 2.1.5 ok" if per_tx <= 2 else "452 4.5.3 too many recipients"

    def mail(sender: str) -> str:
        nonlocal per_tx
        per_tx = 0
        return "250 2.1.0 ok"

    async with Sink("127.0.0.2", Script(rcpt=rcpt, mail=mail)) as mx:
        a = agent([dest(mx)])
        out = await send(a, 1, rcpts=5)
        await a.close()
    assert statuses(out) == [D] * 5
    assert [len(m.recipients) for m in mx.messages] == [2, 2, 1] and mx.connections == 1


async def test_cancelled_delivery_closes_its_connection() -> None:
    async with Sink("127.0.0.2", Script(stall="end")) as mx:
        a = agent([dest(mx)])
        task = asyncio.create_task(send(a, 1))
        while not mx.messages:  # the content is in; the final reply never comes
            await asyncio.sleep(0.01)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await mx.wait_connections_closed(2.0)
        assert not a.pool
        await a.close()
