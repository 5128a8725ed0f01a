"""``ProxyListener`` over real loopback sockets, on asyncio's loop and on uvloop.

Component tests of kittiwake.net.proxy_listen: who may send a header, what happens
without one, and that the octets right after the header (early SMTP data, a TLS
ClientHello in the same segment) reach the stream or the TLS layer intact.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop

from kittiwake.net.proxy import Endpoint
from kittiwake.net.proxy_listen import PEEK_SIZE, ProxyListener, ProxySettings
from kittiwake.net.tls import client_context_insecure, ensure_self_signed, server_context
from kittiwake.policy.networks import Networks
from tests.support import proxyproto as pp

TRUSTED = Networks.parse(["127.0.0.1/32"])
Scenario = Callable[[], Coroutine[Any, Any, None]]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Scenario], None]:
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def go(scenario: Scenario) -> None:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(asyncio.wait_for(scenario(), 20))

    return go


class Echo:
    """The ``on_connection`` of the tests: greets with the client it was given, then
    echoes one line back."""

    def __init__(self) -> None:
        self.clients: list[Endpoint] = []
        self.tls: list[bool] = []

    async def __call__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: Endpoint
    ) -> None:
        self.clients.append(client)
        self.tls.append(writer.get_extra_info("ssl_object") is not None)
        writer.write(f"hello [{client[0]}]:{client[1]}\r\n".encode())
        line = await reader.readline()
        writer.write(b"echo " + line)
        await writer.drain()
        writer.close()


async def _listener(
    echo: Echo, timeout: float = 5.0, ssl_context: ssl.SSLContext | None = None
) -> tuple[ProxyListener, int]:
    listener = await ProxyListener.start(
        "127.0.0.1",
        0,
        ProxySettings(TRUSTED, timeout),
        echo,
        ssl_context=ssl_context,
        handshake_timeout=5.0 if ssl_context else None,
    )
    return listener, int(listener.sockets[0].getsockname()[1])


async def _connect(
    port: int, source: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.read()
    except ConnectionResetError:
        return b""


async def _shut(listener: ProxyListener, writer: asyncio.StreamWriter | None = None) -> None:
    if writer is not None:
        writer.close()
    listener.close()
    await listener.wait_closed()


@pytest.mark.parametrize(
    ("header", "client"),
    [
        (pp.v1("192.0.2.10", sport=1234), "[192.0.2.10]:1234"),
        (pp.v1("2001:db8::9", "::1", 4321), "[2001:db8::9]:4321"),
        (pp.v2("198.51.100.7", sport=99), "[198.51.100.7]:99"),
        (pp.v2("2001:db8::5", "2001:db8::1", 7), "[2001:db8::5]:7"),
        (pp.v2("192.0.2.1", sport=5, tlvs=pp.tlv(4, b"\0" * (2 * PEEK_SIZE))), "[192.0.2.1]:5"),
    ],
)
def test_the_header_gives_the_client_and_early_data_is_kept(
    run: Callable[[Scenario], None], header: bytes, client: str
) -> None:
    echo = Echo()

    async def scenario() -> None:
        listener, port = await _listener(echo)
        reader, writer = await _connect(port)
        writer.write(header + b"early data\r\n")  # one segment: header and what follows
        assert await reader.readline() == f"hello {client}\r\n".encode()
        assert await reader.readline() == b"echo early data\r\n"
        await _shut(listener, writer)

    run(scenario)


@pytest.mark.parametrize("header", [pp.v1_unknown(), pp.v2_local(), pp.v2_local(b"\0" * 12)])
def test_local_and_unknown_use_the_real_peer(
    run: Callable[[Scenario], None], header: bytes
) -> None:
    echo = Echo()

    async def scenario() -> None:
        listener, port = await _listener(echo)
        reader, writer = await _connect(port)
        real = writer.get_extra_info("sockname")
        writer.write(header)
        assert await reader.readline() == f"hello [{real[0]}]:{real[1]}\r\n".encode()
        await _shut(listener, writer)

    run(scenario)


def test_a_header_in_pieces(run: Callable[[Scenario], None]) -> None:
    echo = Echo()
    header = pp.v1("192.0.2.10", sport=1234)

    async def scenario() -> None:
        listener, port = await _listener(echo)
        reader, writer = await _connect(port)
        for piece in (header[:3], header[3:20], header[20:-1], header[-1:] + b"x\r\n"):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.05)
        assert await reader.readline() == b"hello [192.0.2.10]:1234\r\n"
        assert await reader.readline() == b"echo x\r\n"
        await _shut(listener, writer)

    run(scenario)


@pytest.mark.parametrize(
    ("source", "send", "eof"),
    [
        ("127.0.0.2", pp.v1("192.0.2.10"), False),  # untrusted peer, valid header
        ("127.0.0.1", b"EHLO client.test\r\n", False),  # trusted peer, no header
        ("127.0.0.1", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", False),  # malformed
        ("127.0.0.1", pp.SIGNATURE + b"\x11\x11\x00\x0c" + b"\0" * 12, False),  # v2 says v1
        ("127.0.0.1", pp.v1("192.0.2.10")[:10], True),  # EOF inside the header
    ],
)
def test_refused_without_a_word(
    run: Callable[[Scenario], None], source: str, send: bytes, eof: bool
) -> None:
    echo = Echo()

    async def scenario() -> None:
        listener, port = await _listener(echo)
        reader, writer = await _connect(port, source)
        writer.write(send)
        if eof:
            writer.write_eof()
        started = time.monotonic()
        assert await _read_all(reader) == b""
        assert time.monotonic() - started < 2  # at once, not after the header timeout
        assert echo.clients == []
        await _shut(listener, writer)

    run(scenario)


def test_a_silent_trusted_peer_is_dropped_after_the_timeout(
    run: Callable[[Scenario], None],
) -> None:
    echo = Echo()

    async def scenario() -> None:
        listener, port = await _listener(echo, timeout=0.3)
        reader, writer = await _connect(port)
        started = time.monotonic()
        assert await _read_all(reader) == b""
        assert 0.25 < time.monotonic() - started < 3
        assert echo.clients == []
        await _shut(listener, writer)

    run(scenario)


def _client_hello(ctx: ssl.SSLContext) -> tuple[ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="mx.test")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return tls, incoming, outgoing


async def _pump(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    incoming: ssl.MemoryBIO,
    outgoing: ssl.MemoryBIO,
    step: Callable[[], bytes],
) -> bytes:
    """Drive ``step`` (an SSLObject call) over the stream until it stops wanting to read."""
    while True:
        try:
            result = step()
        except ssl.SSLWantReadError:
            writer.write(outgoing.read())
            data = await reader.read(65536)
            assert data, "server closed during TLS"
            incoming.write(data)
            continue
        writer.write(outgoing.read())
        return result


def test_implicit_tls_after_the_header_in_the_same_segment(
    run: Callable[[Scenario], None], tmp_path: Path
) -> None:
    """The ClientHello travels with the header: the handshake must still see all of it."""
    echo = Echo()
    server_ctx = server_context(*ensure_self_signed(tmp_path, "mx.test"))

    async def scenario() -> None:
        listener, port = await _listener(echo, ssl_context=server_ctx)
        reader, writer = await _connect(port)
        tls, incoming, outgoing = _client_hello(client_context_insecure())
        writer.write(pp.v2("203.0.113.5", sport=465) + outgoing.read())

        def handshake() -> bytes:
            tls.do_handshake()
            return b""

        await _pump(reader, writer, incoming, outgoing, handshake)
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        greeting = await _pump(reader, writer, incoming, outgoing, lambda: tls.read(100))
        assert greeting == b"hello [203.0.113.5]:465\r\n"
        tls.write(b"over tls\r\n")
        echoed = await _pump(reader, writer, incoming, outgoing, lambda: tls.read(100))
        assert echoed == b"echo over tls\r\n"
        assert echo.tls == [True]
        await _shut(listener, writer)

    run(scenario)


def test_close_drops_connections_still_waiting_for_their_header(
    run: Callable[[Scenario], None],
) -> None:
    echo = Echo()

    async def scenario() -> None:
        listener, port = await _listener(echo, timeout=30)
        reader, writer = await _connect(port)
        writer.write(b"PROXY TCP4 ")
        await asyncio.sleep(0.1)
        listener.close()
        await asyncio.wait_for(listener.wait_closed(), 5)
        assert await _read_all(reader) == b""
        assert listener.sockets == ()
        with pytest.raises(OSError):
            await _connect(port)
        writer.close()

    run(scenario)
