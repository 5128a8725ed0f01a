"""One mail transaction on a client session: MAIL, RCPT..., DATA or BDAT, the reply(ies).

Owns ``BodySource`` (the spool body read in a worker thread, chunk by chunk, never whole
unless it fits in one chunk; ``smtp_downgrade`` gives it a converted file to read),
``TxRecipient``/``TxResult`` and ``transact()``, shared by the SMTP and LMTP agents.
``transact`` fills a ``TxResult`` as replies arrive, so that when the connection fails
half-way the caller still knows which recipients were answered.

Pipelining (RFC 2920 §3.1), when the server offers it: MAIL, every RCPT and DATA go out in
one write and the replies are read in order; with CHUNKING a body that fits in one chunk
rides in the same write as ``BDAT n LAST`` — one round trip per message. Without
PIPELINING each command waits for its reply. LMTP never pipelines BDAT past the RCPT
replies: the number of replies to ``BDAT LAST`` depends on them (RFC 2033 §4.3).

Not security sensitive beyond what ``proto.client`` checks; content is streamed as is
(BDAT) or dot-stuffed by the core (DATA).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from kittiwake.delivery.api import BodyOpener
from kittiwake.delivery.smtp_session import ClientSession, local_failure
from kittiwake.envelope import BodyType, Notify, Reply, Ret
from kittiwake.proto.client import Verb

CHUNK = 64 * 1024


class BodySource:
    """The message content for one or more passes (one per destination tried).

    A body shorter than one chunk is kept after the first read (it is smaller than the
    socket buffers anyway); a longer one is re-opened for each pass and read chunk by chunk
    in a worker thread, one chunk ahead so that the last one is known (for ``BDAT LAST``).
    """

    def __init__(self, open_body: BodyOpener, chunk: int = CHUNK) -> None:
        self._open_body = open_body
        self._chunk = chunk
        self._small: bytes | None = None  # the whole body, when it fits in one chunk
        self._first: asyncio.Future[tuple[BinaryIO | None, bytes]] | None = None
        self._opened = False  # the first open has been started
        self._in_pass = False
        self._file: BinaryIO | None = None
        self._ahead: bytes | None = None

    def _open_and_read(self) -> tuple[BinaryIO | None, bytes]:
        f = self._open_body()
        try:
            data = f.read(self._chunk)
        except BaseException:
            f.close()
            raise
        if len(data) < self._chunk:
            f.close()
            return None, data
        return f, data

    def prefetch(self) -> None:
        """Start reading the first chunk now (in a thread), while the session is set up."""
        if not self._opened:
            self._opened = True
            loop = asyncio.get_running_loop()
            self._first = loop.run_in_executor(None, self._open_and_read)

    async def whole(self) -> bytes | None:
        """The whole body if it fits in one chunk, else None — without starting a pass
        (what ``prefetch`` reads anyway: a look at a small message costs no I/O)."""
        self.prefetch()
        if self._small is None and self._first is not None:
            f, data = await self._first
            if f is None:
                self._small, self._first = data, None
        return self._small

    async def _begin_pass(self) -> None:
        self._in_pass = True
        if self._small is not None:
            return
        self.prefetch()
        first, self._first = self._first, None
        if first is not None:
            f, data = await first
            if f is None:
                self._small = data
            else:
                self._file, self._ahead = f, data
            return
        loop = asyncio.get_running_loop()  # a second pass over a large body
        self._file = await loop.run_in_executor(None, self._open_body)
        self._ahead = None

    async def _read(self) -> bytes:
        f = self._file
        assert f is not None
        return await asyncio.get_running_loop().run_in_executor(None, f.read, self._chunk)

    async def first(self) -> tuple[bytes, bool] | None:
        """The whole body if it fits in one chunk (``(data, True)``), else None."""
        if self._small is None and not self._in_pass:
            await self._begin_pass()
        return (self._small, True) if self._small is not None else None

    async def next(self) -> tuple[bytes, bool]:
        """The next chunk of this pass and whether it is the last one."""
        if not self._in_pass:
            await self._begin_pass()
        if self._small is not None:
            self._in_pass = False
            return self._small, True
        current = self._ahead if self._ahead is not None else await self._read()
        self._ahead = None
        if len(current) == self._chunk:
            following = await self._read()
            if following:
                self._ahead = following
                return current, False
        self.rewind()
        return current, True

    def rewind(self) -> None:
        """Start a new pass (the next destination)."""
        self._in_pass = False
        self._ahead = None
        f, self._file = self._file, None
        if f is not None:
            f.close()

    async def aclose(self) -> None:
        first, self._first = self._first, None
        if first is not None:
            try:
                f, _ = await first
            except Exception:
                f = None
            if f is not None:
                f.close()
        self.rewind()


def unreadable_body(log: logging.Logger, qid: str, exc: Exception) -> Reply:
    """Logs that the spool body could not be read; the 4.3.0 that defers the recipients."""
    log.error("%s: cannot read the message body: %s", qid, exc)
    return local_failure("4.3.0", f"cannot read the message body: {exc}")


@dataclass(frozen=True, slots=True)
class TxRecipient:
    index: int
    address: str
    notify: Notify | None = None
    orcpt: str | None = None


@dataclass(frozen=True, slots=True)
class TxMail:
    """What MAIL FROM says (parameters the peer does not support are already dropped)."""

    sender: str
    size: int | None = None
    body: BodyType | None = None
    smtputf8: bool = False
    ret: Ret | None = None
    envid: str | None = None


@dataclass(slots=True)
class TxResult:
    """Replies as they came. ``data``: a refusal of DATA/BDAT that applies to every accepted
    recipient. ``end``: the final reply (SMTP) or one per accepted recipient (LMTP)."""

    mail: Reply | None = None
    rcpt: dict[int, Reply] = field(default_factory=dict)
    accepted: list[int] = field(default_factory=list)  # recipient indexes, in RCPT order
    data: Reply | None = None
    end: list[Reply] = field(default_factory=list)
    complete: bool = False  # the server saw the end of a transaction (no RSET needed)


async def transact(
    sess: ClientSession,
    mail: TxMail,
    rcpts: Sequence[TxRecipient],
    body: BodySource,
    result: TxResult,
) -> None:
    """Run one transaction, filling ``result`` (the content goes by BDAT when the server
    offers CHUNKING, else by DATA); raises ``SessionError`` if the connection fails
    (``result`` then holds what was answered before)."""
    conn, t = sess.conn, sess.timeouts
    bdat = conn.capabilities.chunking
    sess.transactions += 1
    mail_line = conn.mail(
        mail.sender,
        size=mail.size,
        body=mail.body,
        smtputf8=mail.smtputf8,
        ret=mail.ret,
        envid=mail.envid,
    )
    if not conn.capabilities.pipelining:
        result.mail = await sess.command(mail_line, t.mail, Verb.MAIL)
        if not result.mail.is_positive:
            return
        for r in rcpts:
            line = conn.rcpt(r.address, notify=r.notify, orcpt=r.orcpt)
            _record_rcpt(result, r, await sess.command(line, t.rcpt, Verb.RCPT))
        if result.accepted:
            await (_send_bdat(sess, body, result) if bdat else _send_data(sess, body, result))
        return

    parts = [mail_line]
    parts.extend(conn.rcpt(r.address, notify=r.notify, orcpt=r.orcpt) for r in rcpts)
    whole = None
    if bdat and not conn.lmtp:
        whole = await body.first()
        if whole is not None:
            parts.append(conn.bdat(whole[0], last=True))
    elif not bdat:
        parts.append(conn.data())
    sess.write(b"".join(parts))
    result.mail = (await sess.response(t.mail, Verb.MAIL)).reply
    for r in rcpts:
        _record_rcpt(result, r, (await sess.response(t.rcpt, Verb.RCPT)).reply)
    mail_ok = result.mail.is_positive
    if whole is not None:  # BDAT LAST went with the group: its one reply (SMTP)
        reply = (await sess.response(t.data_end, Verb.END)).reply
        result.complete = True
        if mail_ok and result.accepted:
            result.end.append(reply)
        return
    if bdat:
        if mail_ok and result.accepted:
            await _send_bdat(sess, body, result)
        return
    reply = (await sess.response(t.data_init, Verb.DATA)).reply
    if reply.code != 354:
        if mail_ok and result.accepted:
            result.data = reply
        return
    if not (mail_ok and result.accepted):
        # RFC 2920 §3.1: a 354 despite no valid recipient — send an empty message, ignore
        # its reply (the server should never take responsibility for it).
        sess.write(conn.end_data())
        await sess.response(t.data_end, Verb.END)
        result.complete = True
        return
    await _stream_data(sess, body, result)


def _record_rcpt(result: TxResult, r: TxRecipient, reply: Reply) -> None:
    result.rcpt[r.index] = reply
    if reply.is_positive and result.mail is not None and result.mail.is_positive:
        result.accepted.append(r.index)


async def _send_data(sess: ClientSession, body: BodySource, result: TxResult) -> None:
    reply = await sess.command(sess.conn.data(), sess.timeouts.data_init, Verb.DATA)
    if reply.code != 354:
        result.data = reply
        return
    await _stream_data(sess, body, result)


async def _stream_data(sess: ClientSession, body: BodySource, result: TxResult) -> None:
    conn, t = sess.conn, sess.timeouts
    while True:
        chunk, last = await body.next()
        if last:
            sess.write(conn.body(chunk) + conn.end_data())
            break
        sess.write(conn.body(chunk))
        await sess.drain(t.data_block)
    await sess.drain(t.data_block)
    await _final_replies(sess, result)


async def _send_bdat(sess: ClientSession, body: BodySource, result: TxResult) -> None:
    """BDAT chunks (RFC 3030 §2); pipelined when offered (SMTP only), else one by one."""
    conn, t = sess.conn, sess.timeouts
    pipelined = conn.capabilities.pipelining and not conn.lmtp
    outstanding = 0
    while True:
        chunk, last = await body.next()
        sess.write(conn.bdat(chunk, last=last))
        await sess.drain(t.data_block)
        if last:
            break
        if pipelined:
            outstanding += 1
            continue
        reply = (await sess.response(t.data_block, Verb.BDAT)).reply
        if not reply.is_positive:  # RFC 3030 §2: no more chunks after a failed one
            result.data = reply
            return
    for _ in range(outstanding):
        reply = (await sess.response(t.data_block, Verb.BDAT)).reply
        if not reply.is_positive and result.data is None:
            result.data = reply
    await _final_replies(sess, result)
    if result.data is not None:  # a failed chunk: the LAST reply is a refusal too
        result.end.clear()


async def _final_replies(sess: ClientSession, result: TxResult) -> None:
    """One reply (SMTP), or one per accepted recipient (LMTP, RFC 2033 §4.2)."""
    count = len(result.accepted) if sess.conn.lmtp else 1
    for _ in range(count):
        result.end.append((await sess.response(sess.timeouts.data_end, Verb.END)).reply)
    result.complete = True
