"""LmtpAgent against a scripted LMTP sink (TCP and unix socket) and a real Dovecot LMTP.

Dovecot runs as a private instance (own base_dir, state dir, passwd-file, Maildirs under a
temporary directory) on 127.0.0.5, started and stopped by PID here; the tests skip when
``dovecot-lmtpd`` is not installed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kittiwake.delivery.api import Outcome, RecipientStatus, Route
from kittiwake.delivery.lmtp import LmtpAgent, parse_lmtp_nexthop
from kittiwake.delivery.smtp_session import SmtpClientTimeouts
from kittiwake.envelope import BodyType
from tests.support.sinks import DEFAULT_EXTENSIONS, Script, Sink, queued, unused_port

D = RecipientStatus.DELIVERED
F = RecipientStatus.DEFERRED
B = RecipientStatus.BOUNCED
FAST = SmtpClientTimeouts(**dict.fromkeys(SmtpClientTimeouts.__dataclass_fields__, 3.0))
CONTENT = b"Subject: lmtp\r\n\r\n.dot line\r\nbody\r\n"


async def lmtp(nexthop: str, content: bytes, rcpts: list[str], **env: Any) -> list[Outcome]:
    agent = LmtpAgent("client.test", timeouts=FAST, connect_timeout=3.0)
    message, qrcpts, opener = queued(content, rcpts, **env)
    try:
        return await agent.deliver(message, qrcpts, opener, Route("lmtp", nexthop))
    finally:
        await agent.close()  # QUIT the connection kept for reuse


def statuses(outcomes: list[Outcome]) -> list[RecipientStatus]:
    return [o.status for o in outcomes]


def per_rcpt(address: str) -> str:
    if address.startswith("full"):
        return "452 4.2.2 mailbox full"
    if address.startswith("broken"):
        return "554 5.3.0 cannot store"
    return f"250 2.0.0 <{address}> saved"


async def test_one_reply_per_recipient() -> None:
    script = Script(lmtp=True, end=per_rcpt, rcpt={"nobody@x.test": "550 5.1.1 no such user"})
    rcpts = ["a@x.test", "nobody@x.test", "full@x.test", "broken@x.test", "b@x.test"]
    async with Sink("127.0.0.2", script) as sink:
        out = await lmtp(f"127.0.0.2:{sink.port}", CONTENT, rcpts)
    assert statuses(out) == [D, B, F, B, D]
    assert not any(o.relayed for o in out) and out[0].remote_mta == "127.0.0.2"
    assert out[0].reply.text == "<a@x.test> saved" and out[2].reply.enhanced == "4.2.2"
    (msg,) = sink.messages
    assert msg.content == CONTENT and msg.via == "DATA"
    assert "LHLO client.test" in sink.commands


async def test_unix_socket_and_bdat(tmp_path: Path) -> None:
    path = str(tmp_path / "lmtp.sock")
    script = Script(lmtp=True, end=per_rcpt, extensions=(*DEFAULT_EXTENSIONS, "CHUNKING"))
    content = (b"x" * 76 + b"\r\n") * 2000  # ~156 KB: several BDAT chunks
    async with Sink(path=path, script=script) as sink:
        out = await lmtp(f"unix:{path}", content, ["a@x.test", "full@x.test"])
    assert statuses(out) == [D, F] and out[0].remote_mta is None
    assert sink.messages[0].via == "BDAT" and sink.messages[0].content == content


async def test_no_accepted_recipient_no_data() -> None:
    script = Script(lmtp=True, rcpt="550 5.1.1 no")
    async with Sink("127.0.0.2", script) as sink:
        out = await lmtp(f"[127.0.0.2]:{sink.port}", CONTENT, ["a@x.test", "b@x.test"])
    assert statuses(out) == [B, B] and not sink.messages  # a pipelined DATA is refused


async def test_failures_defer_everyone() -> None:
    out = await lmtp(f"127.0.0.2:{unused_port('127.0.0.2')}", CONTENT, ["a@x.test", "b@x.test"])
    assert statuses(out) == [F, F] and out[0].reply.enhanced == "4.4.1"
    async with Sink("127.0.0.2", Script(lmtp=True, ehlo="421 4.3.2 shutting down")) as sink:
        out = await lmtp(f"127.0.0.2:{sink.port}", CONTENT, ["a@x.test"])
    assert statuses(out) == [F]
    out = await lmtp("127.0.0.2:notaport", CONTENT, ["a@x.test"])
    assert statuses(out) == [F] and out[0].reply.enhanced == "4.3.5"
    async with Sink("127.0.0.2", Script(lmtp=True, drop="data")) as sink:
        out = await lmtp(f"127.0.0.2:{sink.port}", CONTENT, ["a@x.test"])
    assert statuses(out) == [F] and out[0].reply.enhanced == "4.4.2"


def test_parse_nexthop() -> None:
    assert parse_lmtp_nexthop("unix:/run/dovecot/lmtp")[1] == "/run/dovecot/lmtp"
    dest, path = parse_lmtp_nexthop("127.0.0.1:2424")
    assert (dest.ip, dest.port, path) == ("127.0.0.1", 2424, None)
    assert parse_lmtp_nexthop("[::1]:24")[0].ip == "::1"
    assert parse_lmtp_nexthop("lmtp.local")[0].port == 24
    for bad in ("", "unix:", "host:0", "[::1]x", "a:b:c"):
        with pytest.raises(ValueError):
            parse_lmtp_nexthop(bad)


# ----------------------------------------------------------------------- real Dovecot


@dataclass
class Dovecot:
    root: Path
    port: int
    process: subprocess.Popen[bytes]

    def maildir(self, user: str) -> list[bytes]:
        new = self.root / "mail" / user / "Maildir" / "new"
        return [p.read_bytes() for p in sorted(new.iterdir())] if new.is_dir() else []


_CONF = """\
base_dir = {root}/run
state_dir = {root}/state
instance_name = kittiwake-test-{port}
protocols = lmtp
listen = 127.0.0.5
hostname = dovecot.test
postmaster_address = postmaster@example.test
log_path = {root}/dovecot.log
ssl = no
mail_location = maildir:~/Maildir
first_valid_uid = 1
passdb {{
  driver = passwd-file
  args = {root}/passwd
}}
userdb {{
  driver = passwd-file
  args = {root}/passwd
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.5
    port = {port}
  }}
}}
"""


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    if shutil.which("dovecot") is None or not Path("/usr/lib/dovecot/lmtp").exists():
        pytest.skip("Dovecot LMTP not installed (apt-get install dovecot-lmtpd)")
    if os.geteuid() != 0:
        pytest.skip("a private Dovecot instance needs root here (it switches to the mail uid)")
    # Outside pytest's 0700 tmp tree: Dovecot delivers as nobody, who must reach the Maildirs.
    root = Path(tempfile.mkdtemp(prefix="kittiwake-dovecot-", dir="/tmp"))
    root.chmod(0o755)
    for sub in ("run", "state", "mail"):
        (root / sub).mkdir()
    os.chown(root / "mail", 65534, 65534)
    users = ["alice@example.test", "bob@example.test", "carol@example.test"]
    (root / "passwd").write_text(
        "".join(f"{u}:{{PLAIN}}pw:65534:65534::{root}/mail/{u}::\n" for u in users)
    )
    port = unused_port("127.0.0.5")
    conf = root / "dovecot.conf"
    conf.write_text(_CONF.format(root=root, port=port))
    process = subprocess.Popen(
        ["dovecot", "-F", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.5", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    err = process.stderr.read().decode() if process.stderr else ""
                    pytest.fail(f"dovecot did not start: {err}")
                time.sleep(0.05)
        yield Dovecot(root, port, process)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
        shutil.rmtree(root, ignore_errors=True)


async def test_dovecot_lmtp(dovecot: Dovecot) -> None:
    content = "Subject: to dovecot\r\n\r\n.leading dot\r\nçé 8-bit\r\n.\r\nend\r\n".encode()
    rcpts = ["alice@example.test", "nobody@example.test", "bob@example.test"]
    out = await lmtp(f"127.0.0.5:{dovecot.port}", content, rcpts, body_type=BodyType.EIGHTBITMIME)
    assert statuses(out) == [D, B, D], out
    assert out[1].reply.enhanced == "5.1.1" and "Saved" in str(out[0].reply)
    for user in ("alice@example.test", "bob@example.test"):
        (stored,) = dovecot.maildir(user)
        assert stored.startswith(b"Return-Path: <sender@src.test>")
        assert stored.endswith(content.replace(b"\r\n", b"\n"))  # Dovecot stores LF


async def test_dovecot_lmtp_large_message_bdat(dovecot: Dovecot) -> None:
    line = b"0123456789" * 7 + b"\r\n"
    content = b"Subject: big\r\n\r\n" + line * 3000  # ~216 KB: several BDAT chunks
    out = await lmtp(f"127.0.0.5:{dovecot.port}", content, ["carol@example.test"])
    assert statuses(out) == [D]
    (stored,) = dovecot.maildir("carol@example.test")
    assert stored.endswith(content.replace(b"\r\n", b"\n"))
