"""The only way into the queue: trace header, body, hop count, commit.

Owns ``HopCounter`` (the RFC 5321 §6.3 loop check) and ``Cleanup`` / ``CleanupSink``,
which the SMTP session driver uses like this (it matches ``smtpd.intake.Intake``)::

    sink = cleanup.begin(session_info, envelope)  # at DATA/BDAT: Received written first
    sink.write(chunk)                             # body octets as received (CRLF, unstuffed)
    message = await sink.commit(envelope)         # durable: now "250 ... queued as <id>"
    sink.abort()                                  # on failure; idempotent, no-op after commit

``commit`` raises ``MessageRefused`` (carrying ``554 5.4.6 Too many hops``) when the
message's own header section holds more than ``max_hops`` Received fields: the session
answers that reply at end of data, so the loop is the *sending* MTA's to report (no bounce
from us, no backscatter). Mail generated here (``Cleanup.begin_local``: notices, local
injection) has no SMTP client to refuse: its sink never raises, it exposes
``hops_exceeded`` and the injector bounces the message with 5.4.6 instead
(``cleanup.notices.NoticeSender.bounce_now``).

The ``Received:`` field itself is built by ``cleanup.trace``. Security sensitive: the
body and most of the trace header come from the client; the trace pieces are sanitised in
``cleanup.trace``, and the hop count is what stops a mail loop.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import datetime

from kittiwake.cleanup.expand import Expander, Fork
from kittiwake.cleanup.rewrite import HeaderRewriter, RewriteSettings, Submission, is_submission
from kittiwake.cleanup.trace import local_received_header, received_header
from kittiwake.envelope import Envelope, Reply, SessionInfo
from kittiwake.errors import KittiwakeError, StoreError
from kittiwake.queue.api import QueuedMessage, SpoolWriter, Store

MAX_HOPS = 50  # the issue and Postfix (hopcount_limit); RFC 5321 §6.3 says "normally at least 100"
TOO_MANY_HOPS = Reply(554, "5.4.6", "Too many hops")  # RFC 3463 §3.5: routing loop detected


class MessageRefused(KittiwakeError):
    """The content of a message is refused at commit time; ``reply`` is what to answer."""

    def __init__(self, queue_id: str, reply: Reply) -> None:
        super().__init__(f"{queue_id}: {reply}")
        self.queue_id = queue_id
        self.reply = reply


class HopCounter:
    """Counts ``Received:`` fields in a message's header section as it streams by.

    RFC 5321 §6.3: a loop is detected by counting Received fields. Only the header section
    counts (a Received line in the body, e.g. a forwarded message, does not); scanning stops
    at the blank line, so the cost is bounded by the header size, and each chunk is scanned
    with regular expressions, not line by line in Python. A line split across chunks is
    handled: the start of an unfinished line is carried over (at most ``_KEEP`` octets,
    enough to classify it). The name may be followed by blanks before the colon
    (RFC 5322 §4.5.3 obsolete syntax); case does not matter (RFC 5322 §1.2.2).
    """

    __slots__ = ("_partial", "count", "done")
    _KEEP = 32

    def __init__(self) -> None:
        self.count = 0
        self.done = False  # the header section has ended
        # The start of the current, unfinished line; None: the line is classified already
        # (only its end is awaited).
        self._partial: bytes | None = b""

    def feed(self, data: bytes) -> None:
        if self.done:
            return
        if self._partial is None:
            nl = data.find(b"\n")
            if nl < 0:
                return
            data, self._partial = data[nl + 1 :], b""
        buf = self._partial + data
        end = _HEADERS_END_RE.search(buf)
        if end is not None:  # only the complete lines before the blank line count
            self.count += len(_RECEIVED_RE.findall(buf, 0, end.start() + 1))
            self.done = True
            return
        last = buf.rfind(b"\n") + 1
        self.count += len(_RECEIVED_RE.findall(buf, 0, last))
        tail = buf[last:]
        if len(tail) < self._KEEP:
            self._partial = tail
        else:  # long enough to decide now; then wait for its end
            self.count += _RECEIVED_RE.match(tail) is not None
            self._partial = None


# A Received field name at a line start; the blank line that ends the header section.
_RECEIVED_RE = re.compile(rb"(?:^|(?<=\n))received[ \t]*:", re.IGNORECASE)
_HEADERS_END_RE = re.compile(rb"(?:^|\n)\r?\n")


class CleanupSink:
    """One message on its way into the queue (see the module docstring for the protocol).

    ``max_hops`` (None: no check) counts the Received fields of what is written; with
    ``refuse_loops`` a message over the limit makes ``commit`` raise ``MessageRefused``.
    A ``rewriter`` (submitted mail, RFC 6409 §8) fixes the header section on the way.
    A ``fork`` (``cleanup.expand``: alias expansion) decides the recipients committed and
    receives the same octets for a forwarded copy.
    """

    def __init__(
        self,
        store: Store,
        writer: SpoolWriter,
        envelope: Envelope,
        *,
        max_hops: int | None = None,
        refuse_loops: bool = True,
        rewriter: HeaderRewriter | None = None,
        fork: Fork | None = None,
    ) -> None:
        self._store = store
        self._fork = fork
        self._rewriter = rewriter
        self._writer = writer
        self._envelope = envelope
        self._committed = False
        self._max_hops = max_hops
        self._refuse = refuse_loops
        self._hops = HopCounter() if max_hops is not None else None

    @property
    def hops(self) -> int:
        """Received fields counted so far in the header section written (ours excluded)."""
        return self._hops.count if self._hops is not None else 0

    @property
    def hops_exceeded(self) -> bool:
        """More than ``max_hops`` Received fields: a mail loop (RFC 5321 §6.3)."""
        return self._max_hops is not None and self.hops > self._max_hops

    @property
    def queue_id(self) -> str:
        return self._writer.queue_id

    @property
    def size(self) -> int:
        """Octets in the spool so far, trace header included."""
        return self._writer.size

    def write(self, data: bytes) -> None:
        if self._rewriter is not None:
            data = self._rewriter.feed(data)
            if not data:
                return
        if self._hops is not None and not self._hops.done:
            self._hops.feed(data)
        self._writer.write(data)
        if self._fork is not None:
            self._fork.write(data)

    async def commit(self, envelope: Envelope | None = None) -> QueuedMessage:
        """Make the message durable; returns only after the store's fsyncs. ``envelope``
        defaults to the one given to ``begin``. Raises ``MessageRefused`` (the spool is
        dropped) for a mail loop when this sink refuses loops."""
        if self._committed:
            raise StoreError(f"{self.queue_id}: committed twice")
        if self._rewriter is not None and not self._rewriter.done:
            self.write(self._rewriter.finish())
        if self._refuse and self.hops_exceeded:
            self.abort()
            raise MessageRefused(self.queue_id, TOO_MANY_HOPS)
        env = envelope or self._envelope
        if self._fork is not None:  # alias expansion; a forwarded copy is committed first
            message = await self._fork.commit(self._store, self._writer, env)
        else:
            message = await self._store.commit(self._writer, env)
        self._committed = True
        return message

    def abort(self) -> None:
        """Forget the message; idempotent, and a no-op once ``commit`` has succeeded."""
        if not self._committed:
            self._writer.abort()
            if self._fork is not None:
                self._fork.abort()


class Cleanup:
    """Opens a spool writer per message and puts our ``Received:`` field first.

    ``clock`` returns the time stamp for the trace header (default: local now).
    ``max_hops`` is the Received count above which a message is a loop (None: no check).
    ``rewrite`` (None: never) fixes the headers of submitted mail (``cleanup.rewrite``).
    ``expander`` (None: none) expands aliases at commit (``cleanup.expand``); a forwarded
    copy it commits goes to ``on_forward`` (the scheduler's ``submit``).
    """

    def __init__(
        self,
        store: Store,
        hostname: str,
        *,
        clock: Callable[[], datetime] | None = None,
        max_hops: int | None = MAX_HOPS,
        rewrite: RewriteSettings | None = None,
        expander: Expander | None = None,
        on_forward: Callable[[QueuedMessage], None] | None = None,
    ) -> None:
        self.store = store
        self.expander = expander
        self.on_forward = on_forward
        self.rewrite = rewrite
        self.hostname = hostname
        self._clock = clock
        self.max_hops = max_hops

    def begin(
        self,
        session: SessionInfo,
        envelope: Envelope,
        *,
        prepend: bytes = b"",
        rewrite: bool = True,
    ) -> CleanupSink:
        """At the start of the body: ``envelope`` must hold every accepted recipient.
        ``prepend``: complete CRLF-ended header lines written above our Received field
        (the DATA checks' Authentication-Results; the caller validated them).
        ``rewrite=False``: the submission rewrite was done already (``cleanup.dkimsink``)."""
        writer = self.store.new_message()

        def header(queue_id: str) -> bytes:
            return prepend + received_header(
                session,
                envelope.recipients,
                queue_id,
                self.hostname,
                self._now(),
                smtputf8=envelope.smtputf8,
            )

        try:
            writer.write(header(writer.queue_id))
            fork = self._fork(envelope, header)  # alias expansion (a forwarded copy's spool)
        except BaseException:
            writer.abort()
            raise
        rewriter = self.rewriter(writer.queue_id) if rewrite and is_submission(session) else None
        return CleanupSink(
            self.store, writer, envelope, max_hops=self.max_hops, rewriter=rewriter, fork=fork
        )

    def begin_local(
        self, envelope: Envelope, *, submission: Submission | None = None
    ) -> CleanupSink:
        """For mail generated here, with no SMTP session (notices, local injection): the
        trace field is ``Received: by <hostname> (Kittiwake) id <qid>; <date>`` (RFC 5321
        §4.4 allows the from clause to be absent). Loops are counted, never refused: see
        ``CleanupSink.hops_exceeded``. A ``submission`` (``sendmail`` via pickup) is
        rewritten like submitted mail, and its uid named in the trace field."""
        writer = self.store.new_message()
        uid = submission.uid if submission is not None else None
        try:
            header = functools.partial(
                local_received_header, hostname=self.hostname, now=self._now(), uid=uid
            )
            writer.write(header(writer.queue_id))
            fork = self._fork(envelope, header)
        except BaseException:
            writer.abort()
            raise
        rewriter = None if submission is None else self.rewriter(writer.queue_id, submission)
        return CleanupSink(
            self.store,
            writer,
            envelope,
            max_hops=self.max_hops,
            refuse_loops=False,
            rewriter=rewriter,
            fork=fork,
        )

    def _fork(self, envelope: Envelope, header: Callable[[str], bytes]) -> Fork | None:
        if self.expander is None:
            return None
        return Fork(self.expander, self.store, envelope, header, self.on_forward)

    def rewriter(
        self, queue_id: str, submission: Submission | None = None
    ) -> HeaderRewriter | None:
        """The header rewriter for submitted mail (None: no rewriting configured)."""
        if self.rewrite is None:
            return None
        return HeaderRewriter(
            self.rewrite,
            queue_id=queue_id,
            hostname=self.hostname,
            now=self._now(),
            submission=submission,
        )

    def _now(self) -> datetime | None:
        return self._clock() if self._clock else None
