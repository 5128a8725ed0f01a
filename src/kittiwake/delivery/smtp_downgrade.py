"""Sending an 8BITMIME message to a peer without 8BITMIME: its 7-bit MIME form (RFC 6152 §3).

Owns ``Downgrade`` — for one delivery, decides per peer what to send: nothing special (the
peer has 8BITMIME, the message is not 8BITMIME, or it is but all 7-bit: then MAIL goes
without BODY=, as ``plan_mail`` does), a 554 5.6.3 bounce (``mime_downgrade`` says why the
message cannot be converted), or the converted body with its estimated size (for SIZE=,
on the high side: RFC 1870 §4). Pass 1 (``mime_downgrade.MimeScanner``) runs once per
delivery, in a worker thread, the first time a peer needs it.

The converted body is a ``smtp_transaction.BodySource`` like the spool file itself, over a
file-like object that runs pass 2 (``MimeDowngrader``) as it is read — in BodySource's
worker threads, chunk by chunk, one chunk ahead so that the last one is known. The
converted size is not known before it is made, so it goes in chunks (BDAT when the peer
offers CHUNKING; else DATA, dot-stuffed by the core as ever): memory stays flat whatever
the size, and each transaction (each MX tried) converts again from the spool file.

Security: as ``mime_downgrade`` (untrusted content, bounded parsing).
"""

from __future__ import annotations

import asyncio
import io
from typing import TYPE_CHECKING, BinaryIO

from kittiwake.delivery.api import BodyOpener, QueuedMessage
from kittiwake.delivery.mime_downgrade import DowngradePlan, MimeDowngrader, MimeScanner
from kittiwake.delivery.smtp_plan import size_problem
from kittiwake.delivery.smtp_transaction import CHUNK, BodySource
from kittiwake.envelope import BodyType, Reply
from kittiwake.proto.client_replies import Capabilities

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer


def scan(open_body: BodyOpener, chunk: int = CHUNK) -> DowngradePlan:
    """Pass 1 over the spool file (blocking: run it in a thread)."""
    scanner = MimeScanner()
    with open_body() as f:
        while data := f.read(chunk):
            scanner.scan(data)
    return scanner.plan()


class Downgrade:
    """The 7-bit form of one message, for the peers of one delivery that need it."""

    def __init__(self, message: QueuedMessage, open_body: BodyOpener) -> None:
        self._message = message
        self._open_body = open_body
        self._plan: DowngradePlan | None = None
        self._body: BodySource | None = None

    async def for_peer(
        self, caps: Capabilities, peer: str
    ) -> Reply | tuple[BodySource, int] | None:
        """None: send the message as it is. A body and its estimated size: send that
        instead. A reply: bounce everyone with it."""
        if self._message.envelope.body_type is not BodyType.EIGHTBITMIME or caps.eightbitmime:
            return None
        if self._plan is None:
            self._plan = await asyncio.to_thread(scan, self._open_body)
        plan = self._plan
        if not plan.eight_bit:
            return None
        if plan.problem is not None:
            return Reply(
                554,
                "5.6.3",
                f"8-bit message, but host {peer} does not offer 8BITMIME, and the message "
                f"cannot be converted to 7-bit MIME: {plan.problem}",
            )
        problem = size_problem(plan.size, caps, peer)
        if problem is not None:
            return problem
        if self._body is None:
            self._body = BodySource(converted_opener(self._open_body, plan))
        return self._body, plan.size

    async def aclose(self) -> None:
        if self._body is not None:
            await self._body.aclose()


def converted_opener(open_body: BodyOpener, plan: DowngradePlan) -> BodyOpener:
    """Opens the spool file as its 7-bit form: ``read(n)`` gives n octets until the end."""

    def open_converted() -> BinaryIO:
        return io.BufferedReader(_Converted(open_body(), plan), CHUNK)

    return open_converted


class _Converted(io.RawIOBase):
    """The spool file through ``MimeDowngrader``: at most one chunk's conversion held."""

    def __init__(self, f: BinaryIO, plan: DowngradePlan) -> None:
        super().__init__()
        self._file = f
        self._converter = MimeDowngrader(plan)
        self._pending = bytearray()
        self._ended = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        while not self._pending and not self._ended:
            data = self._file.read(CHUNK)
            if data:
                self._pending += self._converter.convert(data)
            else:
                self._pending += self._converter.finish()
                self._ended = True
        view = memoryview(buffer).cast("B")
        n = min(len(view), len(self._pending))
        view[:n] = self._pending[:n]
        del self._pending[:n]
        return n

    def close(self) -> None:
        self._file.close()
        super().close()
