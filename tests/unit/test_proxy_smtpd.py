"""``SmtpServer.listen(..., proxy=...)`` with real sessions in process: the PROXY client
address reaches the session (greeting, relay control on ``mynetworks``), the connection
rate limit counts it, and shutdown closes a PROXY listener like any other."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from kittiwake.config import Config
from kittiwake.envelope import Envelope, SessionInfo
from kittiwake.net.proxy_listen import ProxyListener, ProxySettings
from kittiwake.policy import PolicyChain
from kittiwake.policy.networks import NOBODY, Networks
from kittiwake.policy.ratelimit import ConnectionRate
from kittiwake.policy.recipients import Recipients
from kittiwake.smtpd.auth import NoUsers
from kittiwake.smtpd.intake import IntakeSink
from kittiwake.smtpd.server import ConnectionLimits, SmtpServer
from kittiwake.smtpd.settings import ListenerSettings
from tests.support import proxyproto as pp


class LocalOnly:
    def is_local_domain(self, domain: str) -> bool:
        return domain == "example.test"

    def lookup(self, address: str) -> str | None:
        return address if address.endswith("@example.test") else None


class NoIntake:
    def begin(
        self, session: SessionInfo, envelope: Envelope, *, prepend: bytes = b""
    ) -> IntakeSink:
        raise OSError("no spool in this test")


def _settings() -> ListenerSettings:
    recipients = Recipients(LocalOnly(), mynetworks=Networks.parse(["192.0.2.0/24"]))
    return ListenerSettings(
        role="mx",
        proto=Config(hostname="mx.test").proto_config(starttls_available=False),
        policy=PolicyChain([recipients]),
        intake=NoIntake(),
        authenticator=NoUsers(),
        tls_context=None,
        command_timeout=10,
        data_timeout=10,
        on_queued=lambda notice: None,
    )


@pytest.fixture
async def mx() -> AsyncIterator[int]:
    server = SmtpServer(ConnectionLimits(), ConnectionRate(2, NOBODY))
    trusted = ProxySettings(Networks.parse(["127.0.0.1/32"]), timeout=2)
    listener = await server.listen("127.0.0.1", 0, _settings(), proxy=trusted)
    assert isinstance(listener, ProxyListener)
    yield int(listener.sockets[0].getsockname()[1])
    await server.shutdown(2)
    assert listener.sockets == ()


async def _open(port: int, header: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(header)
    return reader, writer


async def _ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: str) -> bytes:
    writer.write(line.encode() + b"\r\n")
    reply = b""
    while not reply or reply.split(b"\r\n")[-2][3:4] == b"-":
        reply += await reader.readuntil(b"\r\n")
    return reply


async def test_relay_control_sees_the_proxied_client(mx: int) -> None:
    for client, relay in (("192.0.2.5", b"250 2.1.5"), ("198.51.100.5", b"554 5.7.1")):
        reader, writer = await _open(mx, pp.v1(client, sport=4000))
        assert (await reader.readline()).startswith(b"220 mx.test")
        assert (await _ask(reader, writer, "EHLO c.test")).startswith(b"250")
        assert (await _ask(reader, writer, "MAIL FROM:<a@example.test>")).startswith(b"250")
        assert (await _ask(reader, writer, "RCPT TO:<x@elsewhere.test>")).startswith(relay)
        assert (await _ask(reader, writer, "QUIT")).startswith(b"221")
        writer.close()


async def test_the_connection_rate_counts_proxied_clients(mx: int) -> None:
    greetings = []
    for client in ("192.0.2.1", "192.0.2.1", "192.0.2.1", "192.0.2.2"):
        reader, writer = await _open(mx, pp.v2(client))
        greetings.append(await reader.readline())
        writer.close()
    assert [g[:9] for g in greetings] == [b"220 mx.te", b"220 mx.te", b"421 4.7.0", b"220 mx.te"]
    assert greetings[2] == (
        b"421 4.7.0 Too many connections from your address, try again later\r\n"
    )


async def test_shutdown_says_421_to_idle_proxied_sessions() -> None:
    server = SmtpServer(ConnectionLimits())
    trusted = ProxySettings(Networks.parse(["127.0.0.1/32"]), timeout=2)
    listener = await server.listen("127.0.0.1", 0, _settings(), proxy=trusted)
    port = int(listener.sockets[0].getsockname()[1])
    reader, writer = await _open(port, pp.v2("192.0.2.9"))
    assert (await reader.readline()).startswith(b"220")
    half_open, half_writer = await _open(port, b"PROXY TCP4 ")  # still in its header
    await asyncio.sleep(0.05)
    assert server.session_count == 1
    await server.shutdown(2)
    assert (await reader.readline()).startswith(b"421 4.3.2")
    assert await half_open.read() == b""
    writer.close()
    half_writer.close()
