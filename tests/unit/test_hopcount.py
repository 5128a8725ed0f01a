"""The hop-count loop check (RFC 5321 §6.3): Received fields counted as the message streams
into cleanup; over the limit, commit is refused with 554 5.4.6 (with a real SQLite store)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kittiwake.cleanup.writer import (
    MAX_HOPS,
    TOO_MANY_HOPS,
    Cleanup,
    HopCounter,
    MessageRefused,
)
from kittiwake.envelope import Envelope, Recipient, Reply, SessionInfo
from kittiwake.errors import KittiwakeError
from kittiwake.queue.sqlite import SQLiteStore

SESSION = SessionInfo("192.0.2.7", 40000, "127.0.0.1", 25, helo="client.example.org", esmtp=True)
ENV = Envelope("alice@example.org", (Recipient("bob@example.net"),))


def received(n: int) -> bytes:
    return b"".join(
        b"Received: from relay%d.example.org ([192.0.2.%d])\r\n"
        b"\tby relay%d.example.net with ESMTP id X%d;\r\n"
        b"\tFri, 29 Nov 2024 14:20:05 +0100\r\n" % (i, i % 250, i + 1, i)
        for i in range(n)
    )


def message(hops: int, body_received: int = 0) -> bytes:
    return (
        received(hops)
        + b"From: alice@example.org\r\nSubject: loop?\r\n\r\n"
        + b"Forwarded message follows:\r\n"
        + received(body_received)
        + b"\r\nbody\r\n"
    )


def count(data: bytes, *splits: int) -> int:
    counter = HopCounter()
    last = 0
    for at in sorted(splits):
        counter.feed(data[last:at])
        last = at
    counter.feed(data[last:])
    return counter.count


def reference(data: bytes) -> int:
    """The obvious line-by-line count, to check the streaming one against."""
    n = 0
    for line in data.split(b"\n"):
        if line in (b"", b"\r"):
            break
        name, colon, _ = line.partition(b":")
        if colon and name.rstrip(b" \t").lower() == b"received":
            n += 1
    return n


def test_counts_only_the_header_section() -> None:
    assert count(message(50)) == 50
    assert count(message(3, body_received=80)) == 3
    assert count(message(0, body_received=80)) == 0


def test_field_name_variants() -> None:
    data = (
        b"received: a\r\n"
        b"RECEIVED: b\r\n"
        b"Received : obsolete blank before the colon\r\n"
        b"Received\t: tab\r\n"
        b"X-Received: not a trace field\r\n"
        b"Received-SPF: pass\r\n"
        b"Subject: Received: in a value\r\n"
        b"\tReceived: a folded continuation line\r\n"
        b"\r\n"
    )
    assert count(data) == 4 == reference(data)


def test_bare_lf_and_a_message_without_headers() -> None:
    assert count(b"Received: a\nReceived: b\n\nReceived: c\n") == 2
    assert count(b"\r\nReceived: in the body\r\n") == 0
    assert count(b"Received: no end of headers, no body") == 1
    assert count(b"") == 0


def test_every_split_position() -> None:
    data = message(3, body_received=2)
    for at in range(len(data) + 1):
        assert count(data, at) == 3, at
    for a in range(0, 200, 3):
        for b in range(a, 260, 7):
            assert count(data, a, b) == 3, (a, b)


def test_byte_by_byte() -> None:
    data = message(51, body_received=5)
    counter = HopCounter()
    for i in range(len(data)):
        counter.feed(data[i : i + 1])
    assert counter.count == 51 and counter.done


def test_long_header_line_split_inside_its_name_area() -> None:
    long_value = b"Received: " + b"x" * 5000 + b"\r\n"
    data = long_value + b"Subject: Received: no\r\n" + long_value + b"\r\nReceived: body\r\n"
    for at in (3, 9, 10, 31, 32, 33, 40, 5000, 5011, 5013, 5020, 5040):
        assert count(data, at) == 2, at


lines = st.sampled_from(
    [
        b"Received: x",
        b"received : y",
        b"Subject: z",
        b"\tReceived: folded",
        b" continuation",
        b"Rec",
        b"eived: partial",
        b"X-Received: a",
        b"",
    ]
)


@given(
    st.lists(lines, max_size=30),
    st.sampled_from([b"\r\n", b"\n"]),
    st.lists(st.integers(min_value=0, max_value=600), max_size=6),
)
def test_streaming_count_matches_the_reference(
    parts: list[bytes], eol: bytes, splits: list[int]
) -> None:
    data = b"".join(p + eol for p in parts) + b"tail"
    assert count(data, *[min(s, len(data)) for s in splits]) == reference(data)


def test_a_megabyte_of_tiny_header_lines_is_cheap() -> None:
    data = b"a:\r\n" * 250_000 + b"Received: x\r\n\r\n"
    started = time.perf_counter()
    assert count(data, *range(0, len(data), 65536)) == 1
    assert time.perf_counter() - started < 0.5


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(tmp_path)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def stream(cleanup: Cleanup, data: bytes, chunk: int = 1000) -> tuple[object, int]:
    sink = cleanup.begin(SESSION, ENV)
    for i in range(0, len(data), chunk):
        sink.write(data[i : i + chunk])
    try:
        queued = await sink.commit(ENV)
    except MessageRefused as exc:
        sink.abort()  # what the session does; idempotent
        assert await cleanup.store.get(sink.queue_id) is None
        assert exc.queue_id == sink.queue_id
        return exc.reply, sink.hops
    return queued, sink.hops


async def test_fifty_hops_pass_fifty_one_are_refused(store: SQLiteStore) -> None:
    assert MAX_HOPS == 50
    cleanup = Cleanup(store, "mx.example.net")
    queued, hops = await stream(cleanup, message(50, body_received=100))
    assert not isinstance(queued, Reply) and hops == 50  # our own Received is not counted

    reply, hops = await stream(cleanup, message(51), chunk=7)
    assert reply == TOO_MANY_HOPS == Reply(554, "5.4.6", "Too many hops")
    assert hops == 51
    assert list(store.spool_dir.iterdir()) == []
    assert isinstance(MessageRefused("x", TOO_MANY_HOPS), KittiwakeError)


async def test_hop_limit_is_configurable(store: SQLiteStore) -> None:
    reply, _ = await stream(Cleanup(store, "mx.example.net", max_hops=3), message(4))
    assert reply == TOO_MANY_HOPS
    queued, hops = await stream(Cleanup(store, "mx.example.net", max_hops=None), message(500))
    assert not isinstance(queued, Reply) and hops == 0


async def test_large_refused_message_leaves_no_spool_file(store: SQLiteStore) -> None:
    cleanup = Cleanup(store, "mx.example.net")
    data = message(60) + b"x" * 200_000 + b"\r\n"
    reply, _ = await stream(cleanup, data, chunk=65536)
    assert reply == TOO_MANY_HOPS
    assert list(store.spool_dir.iterdir()) == []


async def test_local_sink_counts_but_does_not_refuse(store: SQLiteStore) -> None:
    cleanup = Cleanup(store, "mx.example.net")
    sink = cleanup.begin_local(ENV)
    sink.write(message(51))
    assert sink.hops_exceeded
    queued = await sink.commit()
    assert await store.get(queued.queue_id) is not None
