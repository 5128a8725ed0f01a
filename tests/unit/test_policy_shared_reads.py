"""What the DATA checks share instead of redoing per check: the raw header section and a
small message's octets (``MessageContext``), ``trusted`` once per session object, empty
``Networks``, and DKIM/ARC verified without a worker thread for small messages in memory
— with the same results as the streamed, threaded path."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from kittiwake.envelope import Envelope, Recipient, SessionInfo
from kittiwake.policy import arc, dkim
from kittiwake.policy.builtin import Services, trusted
from kittiwake.policy.dkim_sign import algorithm_of, generate_key, public_record, sign, txt_record
from kittiwake.policy.message import (
    MAX_HEADER,
    BodySpool,
    MessageContext,
    header_section,
    read_header_section,
)
from kittiwake.policy.networks import Networks
from tests.support.dns import TestDNS

SESSION = SessionInfo("192.0.2.9", 40000, "127.0.0.1", 25, helo="client.test")
ENVELOPE = Envelope("alice@a.test", (Recipient("bob@b.test"),))
HEAD = b"From: Alice <alice@a.test>\r\nTo: bob@b.test\r\nSubject: hi\r\n"
MESSAGE = HEAD + b"\r\nHello Bob,\r\n\r\nhow are   you?\r\n"
KEY = generate_key("rsa", 2048)


@pytest.fixture
def dns() -> Iterator[TestDNS]:
    with TestDNS() as server:
        yield server


def spool_of(data: bytes, memory_limit: int = 256 * 1024) -> BodySpool:
    spool = BodySpool(memory_limit=memory_limit)
    for start in range(0, len(data), 1000):
        spool.write(data[start : start + 1000])
    return spool


@pytest.mark.parametrize("memory_limit", [256 * 1024, 10])  # in memory, in a file
def test_context_keeps_the_raw_header_section(memory_limit: int) -> None:
    with spool_of(MESSAGE, memory_limit) as spool:
        ctx = spool.context(SESSION, ENVELOPE)
        assert ctx.header_bytes == HEAD
        assert ctx.headers["Subject"] == "hi"
        with spool.open() as stream:
            assert read_header_section(stream).items() == ctx.headers.items()
        assert header_section(ctx) == HEAD
        assert header_section(ctx, 30) == HEAD[:28]  # whole lines within the limit
        bare = replace(ctx, header_bytes=None)  # made elsewhere: read from the body
        assert header_section(bare) == HEAD
        if memory_limit > len(MESSAGE):
            assert ctx.message_bytes == MESSAGE
        else:
            assert ctx.message_bytes is None


def test_context_header_section_is_capped() -> None:
    field = b"X-Long: " + b"a" * 1000 + b"\r\n"
    data = field * (MAX_HEADER // len(field) + 5) + b"\r\nbody\r\n"
    with spool_of(data, memory_limit=64 * 1024) as spool:
        ctx = spool.context(SESSION, ENVELOPE)
        assert ctx.header_bytes is not None and len(ctx.header_bytes) <= MAX_HEADER
        assert header_section(replace(ctx, header_bytes=None)) == ctx.header_bytes


def test_spool_readers_share_one_copy_and_writes_after_a_read_count() -> None:
    spool = spool_of(MESSAGE)
    first = spool.in_memory()
    assert first == MESSAGE and spool.in_memory() is first
    with spool.open() as a, spool.open() as b:
        assert a.read() == MESSAGE and b.read() == MESSAGE
    spool.write(b"more\r\n")
    with spool.open() as c:
        assert c.read() == MESSAGE + b"more\r\n"
    assert first == MESSAGE  # what a reader got does not change under it
    spool.close()
    with spool.open() as d:
        assert d.read() == b""


def test_trusted_asks_exempt_once_per_session_object() -> None:
    asked: list[SessionInfo] = []

    def exempt(session: SessionInfo) -> bool:
        asked.append(session)
        return session.client_ip == "192.0.2.9"

    services = Services(Any, "mx.test", Path("."), exempt)  # type: ignore[arg-type]
    assert all(trusted(services, SESSION) for _ in range(5))
    assert asked == [SESSION]
    other = replace(SESSION, client_ip="198.51.100.1")  # a new object: asked again
    assert not trusted(services, other) and not trusted(services, other)
    assert len(asked) == 2
    assert trusted(services, replace(other, auth_user="bob"))  # authenticated: ours
    assert len(asked) == 2
    assert not trusted(Services(Any, "mx.test", Path(".")), other)  # type: ignore[arg-type]


def test_trusted_memo_is_bounded() -> None:
    services = Services(Any, "mx.test", Path("."), lambda s: False)  # type: ignore[arg-type]
    for port in range(3000):
        assert not trusted(services, replace(SESSION, client_port=port))
    assert len(services.exempt_memo) <= 1024


@pytest.mark.parametrize(
    ("peer", "address"),
    [("192.0.2.1", True), ("::1", True), ("not an address", False), ("", False), (object(), False)],
)
def test_empty_networks_contain_nothing(peer: object, address: bool) -> None:
    assert peer not in Networks()
    assert (peer in Networks.parse(["0.0.0.0/0", "::/0"])) is address


# ------------------------------------------------------------- DKIM / ARC inline


def signed(message: bytes = MESSAGE) -> bytes:
    header = sign(
        message,
        domain="a.test",
        selector="sel",
        private_key_pem=KEY,
        algorithm=algorithm_of(KEY),
    )
    return header + message


def no_threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every ``asyncio.to_thread`` the verifiers make."""
    hops: list[str] = []
    real: Callable[..., Any] = asyncio.to_thread

    async def counted(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        hops.append(getattr(func, "__name__", "?"))
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", counted)
    return hops


async def test_small_message_is_verified_inline_with_the_same_result(
    dns: TestDNS, monkeypatch: pytest.MonkeyPatch
) -> None:
    dns.add(txt_record("a.test", "sel", public_record(KEY)))
    message = signed()
    hops = no_threads(monkeypatch)
    inline = await dkim.verify(message, resolver=dns.resolver())
    assert hops == []
    streamed = await dkim.verify(io.BytesIO(message), resolver=dns.resolver())
    assert hops == ["read_head", "_run_dkimpy"]
    assert inline == streamed and inline[0].result == "pass"
    tampered = message.replace(b"how are", b"who are")
    assert (await dkim.verify(tampered, resolver=dns.resolver()))[0].result == "fail"
    assert (await dkim.verify(MESSAGE, resolver=dns.resolver()))[0].result == "none"
    assert (await arc.verify_chain(MESSAGE, dns.resolver())).result == "none"
    assert len(hops) == 2


async def test_big_or_many_signatures_go_to_a_thread(
    dns: TestDNS, monkeypatch: pytest.MonkeyPatch
) -> None:
    dns.add(txt_record("a.test", "sel", public_record(KEY)))
    big = signed(MESSAGE + b"x" * 100 + b"\r\n" * 700 + b"y" * 70_000 + b"\r\n")
    many = signed(signed(signed(MESSAGE)))
    hops = no_threads(monkeypatch)
    assert (await dkim.verify(big, resolver=dns.resolver()))[0].result == "pass"
    assert hops == ["_run_dkimpy"]  # in memory: the header section without a thread
    results = await dkim.verify(many, resolver=dns.resolver())
    assert [r.result for r in results] == ["pass"] * 3
    assert hops == ["_run_dkimpy", "_run_dkimpy"]


async def test_sealed_small_message_is_validated_inline(
    dns: TestDNS, monkeypatch: pytest.MonkeyPatch
) -> None:
    dns.add(txt_record("fwd.test", "arc", public_record(KEY)))
    lines = arc.seal(
        MESSAGE,
        domain="fwd.test",
        selector="arc",
        key=KEY,
        authserv_id="mx.fwd.test",
        auth_results="Authentication-Results: mx.fwd.test; spf=pass smtp.mailfrom=a.test",
    )
    sealed = b"".join(lines) + MESSAGE
    hops = no_threads(monkeypatch)
    inline = await arc.verify_chain(sealed, dns.resolver())
    assert hops == []
    streamed = await arc.verify_chain(io.BytesIO(sealed), dns.resolver())
    assert hops == ["read_head", "_run_dkimpy"]
    assert inline == streamed and inline.result == "pass"


async def test_context_bytes_reach_the_builtin_checks(dns: TestDNS) -> None:
    from kittiwake.policy.builtin import ArcVerify, DkimVerify

    dns.add(txt_record("a.test", "sel", public_record(KEY)))
    services = Services(dns.resolver(), "mx.test", Path("."))
    for memory_limit in (256 * 1024, 10):
        with spool_of(signed(), memory_limit) as spool:
            ctx: MessageContext = spool.context(SESSION, ENVELOPE)
            verdict = await DkimVerify(services).data(ctx)
            assert [r.result for r in verdict.results] == ["pass"]
            verdict = await ArcVerify(services).data(ctx)
            assert [r.result for r in verdict.results] == ["none"]
