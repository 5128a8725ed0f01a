"""What a peer gets of a message that it cannot take as it is: 8-bit content for a peer
without 8BITMIME (RFC 6152 §3), lines over 998 octets for any peer (RFC 5321 §4.5.3.1.6).

Owns ``Downgrade`` — for one delivery, decides per peer what to send:

* nothing special: a BINARYMIME message (it goes by BDAT to a peer with BINARYMIME, and
  binary has no line limit, RFC 3030 §3; ``plan_mail`` bounces it otherwise), or a message
  with no line over 998 octets that is not 8BITMIME, or is to a peer with 8BITMIME, or is
  all 7-bit (then MAIL goes without BODY=, as ``plan_mail`` does);
* a 554 5.6.3 bounce: 8-bit content for a peer without 8BITMIME that ``mime_downgrade``
  cannot convert (it says why);
* the changed body with its estimated size (for SIZE=, on the high side: RFC 1870 §4):
  for a peer without 8BITMIME, the 7-bit MIME form; for a peer with it, the leaves with
  long lines re-encoded (``mime_downgrade``); for a message beyond the MIME walker's
  limits, every long line broken (``line_limit``, Postfix's way).

Cost: pass 1 (``mime_downgrade.MimeScanner``) runs once per delivery, in a worker thread,
the first time a peer needs it — always for 8-bit content to a peer without 8BITMIME;
otherwise only when a cheap look found a line over 998 octets: none for a spool file of
at most 998 octets, the body already read (``BodySource.whole``) for one that fits in a
chunk (no I/O; about a microsecond per kilobyte), else one read of the file in a thread
(``line_limit.LineMeter``: one ``rfind`` per ~1000 octets, stopping at the first; about
30 ms for 50 MB), started by ``prefetch`` with the delivery so that it overlaps the
connection set-up.

The changed body is a ``smtp_transaction.BodySource`` like the spool file itself, over a
file-like object that runs pass 2 (``MimeDowngrader``) as it is read — in BodySource's
worker threads, chunk by chunk, one chunk ahead so that the last one is known. Its size is
not known before it is made, so it goes in chunks (BDAT when the peer offers CHUNKING;
else DATA, dot-stuffed by the core as ever): memory stays flat whatever the size, and each
transaction (each MX tried) converts again from the spool file.

Security: as ``mime_downgrade`` (untrusted content, bounded parsing).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import io
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO

from kittiwake.delivery.api import BodyOpener, QueuedMessage
from kittiwake.delivery.line_limit import LIMIT, LineBreaker, LineMeter, fold_growth, has_long_line
from kittiwake.delivery.mime_downgrade import DowngradePlan, MimeDowngrader, MimeScanner
from kittiwake.delivery.smtp_plan import size_problem
from kittiwake.delivery.smtp_transaction import CHUNK, BodySource
from kittiwake.envelope import BodyType, Reply
from kittiwake.proto.client_replies import Capabilities

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer


class Form(enum.Enum):
    """What a peer gets instead of the spool file."""

    SEVEN_BIT = "7bit"  # 7-bit MIME, long lines fixed (a peer without 8BITMIME)
    LONG_LINES = "long lines"  # long lines fixed (a peer with 8BITMIME, or a 7-bit message)
    BROKEN = "broken"  # long lines broken, MIME or not (the walk failed)


def scan(open_body: BodyOpener, chunk: int = CHUNK) -> DowngradePlan:
    """Pass 1 over the spool file (blocking: run it in a thread)."""
    scanner = MimeScanner()
    with open_body() as f:
        while data := f.read(chunk):
            scanner.scan(data)
    return scanner.plan()


def long_line_in(open_body: BodyOpener, chunk: int = CHUNK) -> bool:
    """The spool file has a line over 998 octets (blocking: run it in a thread)."""
    meter = LineMeter()
    with open_body() as f:
        while data := f.read(chunk):
            meter.feed(data)
            if meter.long_lines:
                return True
    meter.end()
    return meter.long_lines > 0


class Downgrade:
    """The changed forms of one message, for the peers of one delivery that need them.
    ``body``: the delivery's own BodySource of the spool file, whose first chunk tells a
    small message's line lengths without another read."""

    def __init__(
        self, message: QueuedMessage, open_body: BodyOpener, body: BodySource | None = None
    ) -> None:
        self._message = message
        self._open_body = open_body
        self._source = body
        self._long: bool | None = None  # the cheap look's answer
        self._look: asyncio.Future[bool] | None = None  # a large message's, in a thread
        self._plan: DowngradePlan | None = None
        self._bodies: dict[Form, BodySource] = {}

    async def for_peer(
        self, caps: Capabilities, peer: str
    ) -> Reply | tuple[BodySource, int] | None:
        """None: send the message as it is. A body and its estimated size: send that
        instead. A reply: bounce everyone with it."""
        body_type = self._message.envelope.body_type
        if body_type is BodyType.BINARYMIME:
            return None
        seven_bit = body_type is BodyType.EIGHTBITMIME and not caps.eightbitmime
        if not seven_bit and not await self._may_have_long_lines():
            return None
        if self._plan is None:
            self._plan = await asyncio.to_thread(scan, self._open_body)
        plan = self._plan
        if seven_bit and plan.eight_bit:
            if plan.problem is not None:
                return Reply(
                    554,
                    "5.6.3",
                    f"8-bit message, but host {peer} does not offer 8BITMIME, and the message "
                    f"cannot be converted to 7-bit MIME: {plan.problem}",
                )
            form, size = Form.SEVEN_BIT, plan.size
        elif plan.walk_failed:  # the plan knows nothing past where the walk stopped
            if not await self._may_have_long_lines():
                return None
            form, size = Form.BROKEN, self._message.size + fold_growth(self._message.size, 1)
        elif not plan.long_lines:
            return None
        elif seven_bit:
            form, size = Form.SEVEN_BIT, plan.size
        else:
            form, size = Form.LONG_LINES, plan.size_8bit
        problem = size_problem(size, caps, peer)
        if problem is not None:
            return problem
        body = self._bodies.get(form)
        if body is None:
            if form is Form.BROKEN:
                opener = broken_opener(self._open_body)
            else:
                opener = converted_opener(self._open_body, plan, seven_bit=seven_bit)
            body = self._bodies[form] = BodySource(opener)
        return body, size

    def prefetch(self) -> None:
        """Start the look at a message larger than a chunk now, in a thread, while the
        session is set up (a smaller one needs only the delivery's own first read)."""
        binary = self._message.envelope.body_type is BodyType.BINARYMIME
        if self._look is None and self._message.size >= CHUNK and not binary:
            loop = asyncio.get_running_loop()
            self._look = loop.run_in_executor(None, long_line_in, self._open_body)

    async def _may_have_long_lines(self) -> bool:
        if self._long is None:
            whole = None
            if self._message.size > LIMIT and self._source is not None and self._look is None:
                whole = await self._source.whole()
            if self._message.size <= LIMIT:
                self._long = False
            elif whole is not None:
                self._long = has_long_line(whole)
            elif self._look is not None:
                self._long = await self._look
            else:
                self._long = await asyncio.to_thread(long_line_in, self._open_body)
        return self._long

    async def aclose(self) -> None:
        if self._look is not None:
            with contextlib.suppress(Exception):  # never needed, or already reported
                await self._look
        for body in self._bodies.values():
            await body.aclose()


def converted_opener(
    open_body: BodyOpener, plan: DowngradePlan, *, seven_bit: bool = True
) -> BodyOpener:
    """Opens the spool file as its changed form (``MimeDowngrader``, for a peer without
    8BITMIME when ``seven_bit``): ``read(n)`` gives n octets until the end."""

    def open_converted() -> BinaryIO:
        converter = MimeDowngrader(plan, seven_bit=seven_bit)
        raw = _Converted(open_body(), converter.convert, converter.finish)
        return io.BufferedReader(raw, CHUNK)

    return open_converted


def broken_opener(open_body: BodyOpener) -> BodyOpener:
    """Opens the spool file with every line over 998 octets broken (``LineBreaker``)."""

    def open_broken() -> BinaryIO:
        breaker = LineBreaker()
        return io.BufferedReader(_Converted(open_body(), breaker.write, breaker.close), CHUNK)

    return open_broken


class _Converted(io.RawIOBase):
    """The spool file through a converter: at most one chunk's conversion held."""

    def __init__(
        self, f: BinaryIO, convert: Callable[[bytes], bytes], finish: Callable[[], bytes]
    ) -> None:
        super().__init__()
        self._file = f
        self._convert = convert
        self._finish = finish
        self._pending = bytearray()
        self._ended = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        while not self._pending and not self._ended:
            data = self._file.read(CHUNK)
            if data:
                self._pending += self._convert(data)
            else:
                self._pending += self._finish()
                self._ended = True
        view = memoryview(buffer).cast("B")
        n = min(len(view), len(self._pending))
        view[:n] = self._pending[:n]
        del self._pending[:n]
        return n

    def close(self) -> None:
        self._file.close()
        super().close()
