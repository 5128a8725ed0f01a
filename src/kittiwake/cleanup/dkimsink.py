"""DKIM signing of submitted mail on its way into the queue (RFC 6376 §5, RFC 8463).

Owns ``SigningIntake`` (an ``smtpd.intake.Intake`` wrapping ``Cleanup``) and
``SigningSink``, which it returns instead of a plain sink for a submission
(``rewrite.is_submission``); other mail goes to ``Cleanup.begin`` unchanged. A signature
covers the header fields as they leave us, so it is made *after* the submission rewrite
(qualified addresses, added Date / Message-ID — both over-signed, §8.15) and before the
message enters the queue: the sink tees the body into a ``policy.message.BodySpool``
(memory up to 256 KiB, then a temporary file), and at ``commit`` rewrites it, signs it
for the RFC5322.From domain when that domain has a key, and streams it into an ordinary
``CleanupSink`` with the ``DKIM-Signature`` field(s) above our Received line. The spool
is streamed twice, never held whole: once to sign (header section, then the body hash in
one pass, in a worker thread: ``policy.dkim_sign``), once to copy. A From without a
configured key, or a header section over ``dkim_io.HEAD_LIMIT``: no signature, nothing
refused. Security: HIGH (our signature vouches for the content).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import IO, TYPE_CHECKING

from kittiwake.cleanup.rewrite import is_submission
from kittiwake.envelope import Envelope, SessionInfo
from kittiwake.policy.dkim_io import read_head
from kittiwake.policy.dkim_sign import DkimSigner
from kittiwake.policy.dmarc import from_domain
from kittiwake.policy.message import BodySpool
from kittiwake.queue.api import QueuedMessage
from kittiwake.queue.ids import new_queue_id

if TYPE_CHECKING:
    from kittiwake.cleanup.rewrite import HeaderRewriter
    from kittiwake.cleanup.writer import Cleanup, CleanupSink

__all__ = ["SigningIntake", "SigningSink", "signature_for"]

COPY_SIZE = 256 * 1024


def signature_for(signer: DkimSigner, message: bytes | IO[bytes]) -> bytes:
    """The DKIM-Signature field(s) for ``message`` (b"" when its From has no key).

    ``message``: bytes or a binary file at its start, streamed (this blocks)."""
    split = read_head(message)
    if not split.complete:
        return b""
    domain = from_domain(split.head)
    if domain is None or domain not in signer.domains():
        return b""
    return signer.sign(split, domain)


class SigningSink:
    """A ``CleanupSink`` look-alike that signs at commit (see the module docstring).

    ``open_sink(prepend)`` opens the real sink (no rewriting: done here);
    ``rewriter(queue_id)`` the submission rewriter (None: none configured).
    """

    def __init__(
        self,
        signer: DkimSigner,
        session: SessionInfo,
        envelope: Envelope,
        prepend: bytes,
        open_sink: Callable[[bytes], CleanupSink],
        rewriter: Callable[[str], HeaderRewriter | None],
    ) -> None:
        self._signer = signer
        self._session = session
        self._envelope = envelope
        self._prepend = prepend
        self._open_sink = open_sink
        self._rewriter = rewriter(new_queue_id())  # its id only makes the Message-ID
        self._spool = BodySpool()
        self._inner: CleanupSink | None = None

    @property
    def queue_id(self) -> str:
        return self._inner.queue_id if self._inner is not None else ""

    def write(self, data: bytes) -> None:
        if self._rewriter is not None:
            data = self._rewriter.feed(data)
        if data:
            self._spool.write(data)

    async def commit(self, envelope: Envelope | None = None) -> QueuedMessage:
        try:
            if self._rewriter is not None and not self._rewriter.done:
                self._spool.write(self._rewriter.finish())
            with self._spool.open() as stream:
                signature = await asyncio.to_thread(signature_for, self._signer, stream)
                self._inner = self._open_sink(self._prepend + signature)
                stream.seek(0)
                while chunk := await asyncio.to_thread(stream.read, COPY_SIZE):
                    self._inner.write(chunk)
            return await self._inner.commit(envelope or self._envelope)
        finally:
            self._spool.close()

    def abort(self) -> None:
        self._spool.close()
        if self._inner is not None:
            self._inner.abort()


class SigningIntake:
    """``Cleanup`` with DKIM signing of submitted mail (what ``app`` hands the listeners).

    ``internal(session)``: other clients whose mail is signed too, unrewritten (the
    ``[relay] mynetworks`` hosts, like OpenDKIM's InternalHosts)."""

    def __init__(
        self,
        cleanup: Cleanup,
        signer: DkimSigner,
        internal: Callable[[SessionInfo], bool] | None = None,
    ) -> None:
        self.cleanup = cleanup
        self.signer = signer
        self.internal = internal

    def begin(
        self, session: SessionInfo, envelope: Envelope, *, prepend: bytes = b""
    ) -> CleanupSink | SigningSink:
        cleanup = self.cleanup
        submitted = is_submission(session)
        if not submitted and not (self.internal is not None and self.internal(session)):
            return cleanup.begin(session, envelope, prepend=prepend)
        return SigningSink(
            self.signer,
            session,
            envelope,
            prepend,
            lambda head: cleanup.begin(session, envelope, prepend=head, rewrite=False),
            cleanup.rewriter if submitted else lambda _queue_id: None,
        )
