"""``[transport]`` to LMTP through the daemon, into a scripted LMTP sink that counts its
connections and offers no 8BITMIME: messages queued one after another share one connection,
one the server cut while idle is replaced without any deferral, and an 8BITMIME submission
arrives converted to 7-bit MIME."""

from __future__ import annotations

import email
import functools
from collections.abc import Iterator

import pytest

from tests.support.mta import (
    FAST_QUEUE,
    Addresses,
    SinkHost,
    common_port,
    delivery_lines,
    submit,
    tag,
    wait_until,
)
from tests.support.server import MakeServer
from tests.support.sinks import DEFAULT_EXTENSIONS, Script, Sink
from tests.support.smtpclient import message

SEVEN_BIT = tuple(e for e in DEFAULT_EXTENSIONS if e != "8BITMIME")


@pytest.fixture
def lmtp_sink() -> Iterator[tuple[SinkHost, Sink]]:
    port = common_port()
    host = SinkHost()
    try:
        yield (
            host,
            host.start(Addresses(port).next(), port, Script(lmtp=True, extensions=SEVEN_BIT)),
        )
    finally:
        host.close()


def _arrived(sink: Sink, rcpt: str) -> bool:
    return any(rcpt in m.recipients for m in sink.messages)


def test_daemon_reuses_lmtp_connection_and_downgrades(
    make_server: MakeServer, lmtp_sink: tuple[SinkHost, Sink]
) -> None:
    sinks, sink = lmtp_sink
    server = make_server(
        {
            "local": {"domains": ["up.test"], "postmaster": "postmaster@up.test"},
            "transport": {"lmtp.test": f"lmtp:{sink.host}:{sink.port}"},
            "queue": dict(FAST_QUEUE),
        }
    )
    sender = f"s-{tag()}@up.test"
    for n in range(3):
        rcpt = f"u{n}-{tag()}@lmtp.test"
        submit(server, sender, [rcpt], message(f"reuse {n}", "body\r\n"))
        wait_until(functools.partial(_arrived, sink, rcpt), 10, f"{rcpt} not delivered")
    assert sink.connections == 1 and [m.connection for m in sink.messages] == [1, 1, 1]

    sinks.drop_all(sink)  # the server goes away while the connection is idle
    rcpt = f"after-drop-{tag()}@lmtp.test"
    qid = submit(server, sender, [rcpt], message("after the drop", "body\r\n"))
    wait_until(lambda: _arrived(sink, rcpt), 10, "not delivered after the drop")
    assert sink.connections == 2
    wait_until(lambda: delivery_lines(server, qid), 5, "no delivery log line")
    (line,) = delivery_lines(server, qid)
    assert "status=delivered" in line and "tries=1" in line, line

    rcpt = f"eight-{tag()}@lmtp.test"
    content = (
        b"Subject: 8-bit\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n"
    )
    submit(server, sender, [rcpt], content, mail_params=" BODY=8BITMIME")
    wait_until(lambda: _arrived(sink, rcpt), 10, "8-bit message not delivered")
    (msg,) = [m for m in sink.messages if rcpt in m.recipients]
    assert "BODY" not in msg.mail_params and msg.content.isascii() and msg.connection == 2
    parsed = email.message_from_bytes(msg.content)
    assert parsed["Content-Transfer-Encoding"] == "quoted-printable"
    assert parsed.get_payload(decode=True) == "Grüße\r\n".encode()
