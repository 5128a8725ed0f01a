"""A scripted remote MX (or LMTP server) for delivery tests: answers as told, records all.

Owns ``Sink`` (an asyncio server on a loopback address), ``Script`` (what it answers) and
``Received`` (one message as it arrived). Written by hand rather than on aiosmtpd so that it
can speak BDAT and LMTP, observe TCP segments (pipelining), stall and drop at any stage.
Its parsing is deliberately independent of ``kittiwake.proto``: a client bug cannot hide
behind the same bug in our server core. Never resolves names; binds only 127.0.0.0/8.

    async with Sink("127.0.0.2", Script(rcpt={"bad@x.test": "550 5.1.1 no"})) as mx:
        ...deliver to Destination("mx.x.test", "127.0.0.2", mx.port)...
        assert mx.messages[0].content == b"..."

Script fields take reply lines (``"250 2.0.0 OK"``; a 421 also closes the connection) or
callables; ``stall`` names a stage at which the sink stops answering (``greeting``,
``ehlo``, ``mail``, ``rcpt``, ``data-command`` (the reply to DATA), ``data`` (a non-LAST
BDAT chunk), ``end``); ``drop`` one at which it closes (``data`` = once the first content
octets arrived). ``segments`` keeps every raw read per connection (pipelining checks).
Not security sensitive (test code).
"""

from __future__ import annotations

import asyncio
import base64
import io
import re
import socket
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, BinaryIO

from kittiwake.delivery.api import Destination, QueuedMessage, QueuedRecipient, RecipientStatus
from kittiwake.envelope import Envelope, Recipient, Reply

Answer = str | Callable[[str], str]

DEFAULT_EXTENSIONS = (
    "PIPELINING",
    "8BITMIME",
    "SIZE 10485760",
    "DSN",
    "SMTPUTF8",
    "ENHANCEDSTATUSCODES",
)
_PATH_RE = re.compile(r"(?i)(?:FROM|TO):<([^>]*)>(.*)")


@dataclass
class Script:
    greeting: str = "220 {host} ESMTP sink"
    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS
    ehlo: str | None = None  # e.g. "502 5.5.1 no EHLO here" (then HELO is answered)
    helo: str = "250 {host}"
    tls: ssl.SSLContext | None = None  # offer STARTTLS with this context
    auth: tuple[str, str] | None = None  # offer AUTH PLAIN LOGIN, accept these credentials
    mail: Answer = "250 2.1.0 sender ok"
    rcpt: Answer | Mapping[str, str] = "250 2.1.5 recipient ok"
    data: str = "354 go ahead"
    end: Answer = "250 2.0.0 queued as SINK"  # LMTP: called once per accepted recipient
    lmtp: bool = False
    stall: str | None = None
    drop: str | None = None
    rset: str = "250 2.0.0 ok"


@dataclass
class Received:
    sender: str
    mail_params: dict[str, str | None]
    recipients: list[str]
    rcpt_params: list[dict[str, str | None]]
    content: bytes
    via: str  # "DATA" or "BDAT"
    tls: bool
    helo: str
    connection: int  # 1-based number of the connection that carried it


def _params(text: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for word in text.split():
        key, eq, value = word.partition("=")
        out[key.upper()] = value if eq else None
    return out


def unused_port(host: str) -> int:
    """A port on ``host`` with nothing listening (connect → refused)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class _Closed(Exception):
    pass


class _Session:
    def __init__(self, sink: Sink, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.sink, self.reader, self.writer = sink, reader, writer
        self.script = sink.script
        self.buf = bytearray()
        self.number = sink.connections
        self.segments: list[bytes] = []
        sink.segments.append(self.segments)
        self.tls = False
        self.helo = ""
        self._reset()

    def _reset(self) -> None:
        self.sender: str | None = None
        self.mail_params: dict[str, str | None] = {}
        self.rcpts: list[str] = []
        self.rcpt_params: list[dict[str, str | None]] = []
        self.accepted: list[str] = []
        self.chunks = bytearray()

    async def _fill(self) -> None:
        data = await self.reader.read(65536)
        if not data:
            raise _Closed
        self.segments.append(data)
        self.buf += data

    async def line(self) -> str:
        while (i := self.buf.find(b"\r\n")) < 0:
            await self._fill()
        raw = bytes(self.buf[:i])
        del self.buf[: i + 2]
        text = raw.decode("utf-8", "replace")
        self.sink.commands.append(text)
        return text

    async def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            await self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    async def say(self, reply: str, stage: str = "") -> None:
        if stage and self.script.drop == stage:
            raise _Closed
        if stage and self.script.stall == stage:  # answer nothing until the client leaves
            while await self.reader.read(65536):
                pass
            raise _Closed
        host = self.sink.hostname
        self.writer.write(reply.format(host=host).encode() + b"\r\n")
        await self.writer.drain()
        if reply.startswith("421"):
            raise _Closed

    def _answer(self, answer: Answer | Mapping[str, str], arg: str) -> str:
        if isinstance(answer, str):
            return answer
        if callable(answer):
            return answer(arg)
        return answer.get(arg, "250 2.1.5 recipient ok")

    async def run(self) -> None:
        s = self.script
        await self.say(s.greeting, "greeting")
        while True:
            text = await self.line()
            verb, _, arg = text.partition(" ")
            verb = verb.upper()
            if verb in ("EHLO", "LHLO"):
                await self._ehlo(arg)
            elif verb == "HELO":
                self.helo = arg
                await self.say(s.helo, "ehlo")
            elif verb == "STARTTLS" and s.tls is not None and not self.tls:
                await self.say("220 2.0.0 ready for TLS")
                self.buf.clear()
                await self.writer.start_tls(s.tls)
                self.tls = True
                self.helo = ""
            elif verb == "AUTH":
                await self._auth(arg)
            elif verb == "MAIL":
                await self._mail(arg)
            elif verb == "RCPT":
                await self._rcpt(arg)
            elif verb == "DATA":
                await self._data()
            elif verb == "BDAT":
                await self._bdat(arg)
            elif verb == "RSET":
                self._reset()
                await self.say(s.rset)
            elif verb == "NOOP":
                await self.say("250 2.0.0 ok")
            elif verb == "QUIT":
                await self.say("221 2.0.0 bye")
                return
            else:
                await self.say("502 5.5.1 unknown command")

    async def _ehlo(self, arg: str) -> None:
        s = self.script
        if s.ehlo is not None:
            await self.say(s.ehlo, "ehlo")
            return
        self.helo = arg
        ext = list(s.extensions)
        if s.tls is not None and not self.tls:
            ext.append("STARTTLS")
        if s.auth is not None:
            ext.append("AUTH PLAIN LOGIN")
        lines = [f"{self.sink.hostname} hello {arg}", *ext]
        reply = "\r\n".join(f"250-{ln}" for ln in lines[:-1])
        await self.say((reply + "\r\n" if reply else "") + f"250 {lines[-1]}", "ehlo")

    async def _auth(self, arg: str) -> None:
        mech, _, initial = arg.partition(" ")
        expected = self.script.auth
        if mech.upper() == "PLAIN":
            if not initial:
                await self.say("334 ")
                initial = await self.line()
            given = base64.b64decode(initial).split(b"\0")[1:]
        else:
            await self.say("334 VXNlcm5hbWU6")
            user = base64.b64decode(await self.line())
            await self.say("334 UGFzc3dvcmQ6")
            given = [user, base64.b64decode(await self.line())]
        ok = expected is not None and given == [x.encode() for x in expected]
        self.sink.auth_attempts.append((given[0].decode() if given else "", self.tls))
        await self.say("235 2.7.0 ok" if ok else "535 5.7.8 bad credentials")

    async def _mail(self, arg: str) -> None:
        m = _PATH_RE.fullmatch(arg)
        assert m is not None, arg
        reply = self._answer(self.script.mail, m[1])
        if reply.startswith("2"):
            self._reset()
            self.sender, self.mail_params = m[1], _params(m[2])
        await self.say(reply, "mail")

    async def _rcpt(self, arg: str) -> None:
        m = _PATH_RE.fullmatch(arg)
        assert m is not None, arg
        if self.sender is None:
            await self.say("503 5.5.1 need MAIL", "rcpt")
            return
        reply = self._answer(self.script.rcpt, m[1])
        self.rcpts.append(m[1])
        self.rcpt_params.append(_params(m[2]))
        if reply.startswith("2"):
            self.accepted.append(m[1])
        await self.say(reply, "rcpt")

    async def _data(self) -> None:
        if not self.accepted:
            await self.say("554 5.5.1 no valid recipients")
            return
        await self.say(self.script.data, "data-command")
        if not self.script.data.startswith("354"):
            return
        if self.script.drop == "data":  # as soon as some content has arrived
            while not self.buf:
                await self._fill()
            raise _Closed
        content = bytearray()
        while True:
            while (i := self.buf.find(b"\r\n")) < 0:
                await self._fill()
            line = bytes(self.buf[: i + 2])
            del self.buf[: i + 2]
            if line == b".\r\n":
                break
            content += line[1:] if line.startswith(b".") else line
        await self._finish(bytes(content), "DATA")

    async def _bdat(self, arg: str) -> None:
        size_text, _, last = arg.partition(" ")
        chunk = await self.exactly(int(size_text))
        if self.script.drop == "data":
            raise _Closed
        if not self.accepted:
            if not (self.script.lmtp and last.upper() == "LAST"):
                await self.say("503 5.5.1 no valid recipients")
            return
        self.chunks += chunk
        if last.upper() != "LAST":
            await self.say(f"250 2.0.0 {len(chunk)} octets", "data")
            return
        await self._finish(bytes(self.chunks), "BDAT")

    async def _finish(self, content: bytes, via: str) -> None:
        assert self.sender is not None
        message = Received(
            self.sender,
            self.mail_params,
            list(self.accepted),
            [p for r, p in zip(self.rcpts, self.rcpt_params, strict=True) if r in self.accepted],
            content,
            via,
            self.tls,
            self.helo,
            self.number,
        )
        answers = self.accepted if self.script.lmtp else [self.sender]
        replies = [self._answer(self.script.end, a) for a in answers]
        if any(r.startswith("2") for r in replies):
            self.sink.messages.append(message)
        self._reset()
        for i, reply in enumerate(replies):
            await self.say(reply, "end" if i == 0 else "")


@dataclass
class Sink:
    """``async with Sink(host, script) as sink`` — listening on ``sink.port`` (or on the
    unix socket ``path`` when given)."""

    host: str = "127.0.0.2"
    script: Script = field(default_factory=Script)
    hostname: str = "sink.test"
    port: int = 0
    path: str | None = None
    messages: list[Received] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    segments: list[list[bytes]] = field(default_factory=list)  # per connection, raw reads
    auth_attempts: list[tuple[str, bool]] = field(default_factory=list)
    connections: int = 0

    async def __aenter__(self) -> Sink:
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        if self.path is not None:
            self._server = await asyncio.start_unix_server(self._serve, self.path)
        else:
            self._server = await asyncio.start_server(self._serve, self.host, self.port)
            self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        self._writers.add(writer)
        try:
            await _Session(self, reader, writer).run()
        except (_Closed, ConnectionError, ssl.SSLError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.transport.abort()

    def drop_all(self) -> None:
        """Cut every open connection (a server restart, as the client sees it)."""
        for writer in list(self._writers):
            writer.transport.abort()

    @property
    def open_connections(self) -> int:
        return len(self._tasks)

    async def wait_connections_closed(self, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while self._tasks:
                await asyncio.sleep(0.01)


class FixedFinder:
    """A ``DestinationFinder`` that always answers the same (and counts the calls)."""

    def __init__(self, answer: list[Destination] | Reply) -> None:
        self.answer = answer
        self.calls: list[str] = []

    async def __call__(self, nexthop: str) -> list[Destination] | Reply:
        self.calls.append(nexthop)
        return self.answer


def queued(
    content: bytes,
    recipients: Sequence[str | Recipient],
    *,
    sender: str = "sender@src.test",
    queue_id: str = "QTEST0001",
    size: int | None = None,
    **envelope: Any,
) -> tuple[QueuedMessage, list[QueuedRecipient], Callable[[], BinaryIO]]:
    """A queued message, its recipients (all pending) and a body opener, for agent tests."""
    rcpts = tuple(r if isinstance(r, Recipient) else Recipient(r) for r in recipients)
    env = Envelope(sender=sender, recipients=rcpts, **envelope)
    queued_rcpts = [
        QueuedRecipient(i, r.address, RecipientStatus.PENDING) for i, r in enumerate(rcpts)
    ]
    message = QueuedMessage(
        queue_id, env, time.time(), len(content) if size is None else size, tuple(queued_rcpts)
    )
    return message, queued_rcpts, lambda: io.BytesIO(content)
