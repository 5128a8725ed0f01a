"""Durability and lifecycle: a client that vanishes mid-DATA leaves nothing behind; a 250
survives kill -9 (start-up recovery delivers it); SIGTERM lets transactions finish, then
421 4.3.2 (RFC 5321 §3.8) and no new connections."""

from __future__ import annotations

import os
import signal
import socket
import struct
import time

import pytest

from tests.support.server import KittiwakeServer, MakeServer
from tests.support.smtpclient import RawSMTP, message, queue_id


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


@pytest.mark.parametrize("how", ["close", "reset"])
def test_disconnect_mid_data_leaves_nothing(make_server: MakeServer, how: str) -> None:
    srv = make_server()
    rcpt = "victim@example.test"
    c = RawSMTP(srv.mx)
    c.ehlo()
    c.cmd("MAIL FROM:<s@client.test>").check(250, "2.1.0")
    c.cmd(f"RCPT TO:<{rcpt}>").check(250, "2.1.5")
    c.cmd("DATA").check(354)
    c.send(message("half", b"z" * 998 + b"\r\n") + (b"y" * 998 + b"\r\n") * 200)
    # The body streams to disk (beyond 64 KiB it is in the spool): proof we look there.
    _wait(lambda: len(srv.spool_files()) == 1, 5, "no spool file while receiving")
    if how == "reset":
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    _wait(lambda: srv.spool_files() == [], 5, f"spool not cleaned: {srv.spool_files()}")
    time.sleep(0.3)
    assert srv.maildir(rcpt) == []
    assert srv.maildir_tmp_files() == []
    # And nothing is found at the next start either (no half message is "recovered").
    srv.restart()
    time.sleep(0.5)
    assert srv.maildir(rcpt) == []
    assert srv.spool_files() == []


def test_rset_mid_data_is_just_content(server: KittiwakeServer, mailbox: str) -> None:
    with RawSMTP(server.mx) as c:
        c.ehlo()
        c.send_mail("s@client.test", [mailbox], message("x", "RSET\r\nQUIT\r\n")).check(250)
        c.cmd("NOOP").check(250, "2.0.0")
    assert b"RSET\nQUIT\n" in server.wait_for_mail(mailbox)[0]


def test_kill9_right_after_250_then_restart(make_server: MakeServer) -> None:
    srv = make_server()
    rcpt = "durable@example.test"
    qids = []
    with RawSMTP(srv.mx) as c:
        c.ehlo()
        for i in range(4):
            body = message(f"durable {i}", f"number {i}\r\n" * (1 + 3000 * i))
            c.cmd("MAIL FROM:<s@client.test>").check(250, "2.1.0")
            c.cmd(f"RCPT TO:<{rcpt}>").check(250, "2.1.5")
            c.cmd("DATA").check(354)
            c.send(body + b".\r\n")
            reply = c.read_reply()
            if i == 3:
                srv.kill9()  # at once: no chance to deliver after the last 250
            reply.check(250, "2.0.0")
            qids.append(queue_id(reply))
    srv.start()
    srv.wait_for_mail(rcpt, 4, timeout=20)
    _wait(lambda: srv.spool_files() == [], 10, "delivered messages left in the spool")
    time.sleep(0.3)  # a duplicate from recovery would have been written by now
    msgs = srv.maildir(rcpt)
    copies = {qid: sum(f"id {qid}".encode() in m for m in msgs) for qid in qids}
    # Every acknowledged message survives (the 250 meant "durable") ...
    assert all(n >= 1 for n in copies.values()), f"lost after kill -9: {copies}"
    # ... and none is delivered twice (design practice 5: a crash never re-delivers to a
    # finished recipient; a kill between the Maildir rename and the outcome record must
    # not produce a second copy).
    assert all(n == 1 for n in copies.values()), f"delivered twice after kill -9: {copies}"


def test_kill9_between_maildir_delivery_and_its_record(make_server: MakeServer) -> None:
    # Kill the moment the file shows up in new/: the outcome is most likely not recorded
    # yet, so recovery delivers again — and must not make a second copy.
    srv = make_server()
    rcpt = "once@example.test"
    new = srv.mailbox_dir(rcpt) / "new"
    qids = []
    for i in range(3):
        with RawSMTP(srv.mx) as c:
            c.ehlo()
            reply = c.send_mail("s@client.test", [rcpt], message(f"once {i}")).check(250)
            qids.append(queue_id(reply))
        _wait(lambda: new.is_dir() and len(os.listdir(new)) > i, 10, "not delivered")  # noqa: B023
        srv.kill9()
        srv.start()
    time.sleep(0.5)  # recovery runs at start-up; a second copy would be written by now
    msgs = srv.maildir(rcpt)
    copies = {qid: sum(f"id {qid}".encode() in m for m in msgs) for qid in qids}
    assert all(n == 1 for n in copies.values()), f"copies after kill -9 + recovery: {copies}"


def test_sigterm_lets_a_transaction_finish(make_server: MakeServer) -> None:
    srv = make_server({"timeouts": {"shutdown_grace": 20}})
    rcpt = "late@example.test"
    busy = RawSMTP(srv.mx)
    idle = RawSMTP(srv.submission)
    try:
        busy.ehlo()
        idle.ehlo()
        busy.cmd("MAIL FROM:<s@client.test>").check(250, "2.1.0")
        busy.cmd(f"RCPT TO:<{rcpt}>").check(250, "2.1.5")
        busy.cmd("DATA").check(354)
        busy.send(message("in flight", "first half\r\n"))
        srv.signal(signal.SIGTERM)
        # The idle session is told at once and closed.
        idle.read_reply(timeout=5).check(421, "4.3.2")
        assert idle.expect_closed() == b""

        # New connections are refused while the transaction finishes.
        def refused() -> bool:
            try:
                with RawSMTP(srv.mx, read_greeting=False, timeout=2) as c:
                    return c.read_reply().code == 421
            except (ConnectionError, OSError):
                return True

        _wait(refused, 5, "still accepting new connections after SIGTERM")
        assert srv.running
        busy.send(b"second half\r\n.\r\n")
        busy.read_reply().check(250, "2.0.0")
        # Then the session ends: 421 now, or in reply to the next command.
        try:
            reply = busy.read_reply(timeout=2)
        except TimeoutError:
            reply = busy.cmd("NOOP")
        reply.check(421, "4.3.2")
        assert busy.expect_closed() == b""
    finally:
        busy.close()
        idle.close()
    assert srv.wait(20) == 0
    # The message was durable before the 250; it is delivered at the latest on next start.
    if len(srv.maildir(rcpt)) == 0:
        srv.start()
    [msg] = srv.wait_for_mail(rcpt, timeout=10)
    assert b"first half\nsecond half\n" in msg


def test_sigterm_exits_promptly_when_idle(make_server: MakeServer) -> None:
    srv = make_server()
    with RawSMTP(srv.mx) as c:
        c.ehlo()
        started = time.monotonic()
        srv.signal(signal.SIGTERM)
        c.read_reply(timeout=5).check(421, "4.3.2")
        assert srv.wait(10) == 0
        assert time.monotonic() - started < 5
