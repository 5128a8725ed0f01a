"""Alias expansion at enqueue time: the recipients the queue stores, and the forwarded copy.

Owns ``Expander`` (``expand(envelope) -> Expansion``) and ``Fork`` (the forwarded copy of a
message being received), which ``cleanup.writer`` uses; the resolution rules themselves are
``addressing.Directory``'s.
For each envelope recipient (design.md: cleanup "expands aliases, resolves each recipient
to a route"):

- an address that resolves to itself (a mailbox, a relayed outside address) is kept as the
  client sent it, NOTIFY and ORCPT untouched;
- an address that expands (alias, catch-all, SRS address) is replaced by its targets: new
  ``Recipient`` values carrying the original's NOTIFY, and its ORCPT — or, when the client
  gave none, ``rfc822;<original>`` (RFC 3461 §4.2: the original recipient, so a DSN can name
  what the sender wrote; §5.2.7.2 asks for the parameters to be propagated). For a
  multiple-recipient alias NOTIFY is propagated as it is, SUCCESS included: the sender gets
  one notice per target rather than RFC 3461 §5.2.7.3(c)'s single "expanded" notice;
- an address refused by the directory (only possible for mail that skipped RCPT: notices,
  local injection) is kept as it is; delivery reports it;
- duplicates are dropped (case-blind), first one wins.

**Forwarding and SRS.** An outside target reached through an alias or SRS address needs an
envelope sender that the next hop's SPF check accepts: ``Directory.forward_sender``
(``SRS0=…@<srs.domain>``; ``<>`` stays ``<>``). Those recipients go into a second queued
message — the same body, that sender — the way Postfix's local(8) re-injects forwarded
mail; everything else stays in the message the client is told about (the 250 names its
queue id). When every recipient is forwarded there is only the one message, under the SRS
sender. ``cleanup.writer`` writes the body into both spool files as it streams and commits
the forwarded copy FIRST: a crash between the two commits leaves the copy queued and the
client without a 250, so the client retries and the forward target may get the message
twice — a duplicate, never a loss.

**ARC.** With a ``sealer`` (``cleanup.arcseal``: a ``[[dkim.keys]]`` key for the SRS
domain) the forwarded copy gets an ARC set on top (RFC 8617 §5.1): the copy's octets are
teed into a ``BodySpool`` (memory up to 256 KiB, then a temporary file) instead of straight
into its spool file, and at commit the ARC set is computed over the whole copy and written
first, then the copy. The tee is streamed twice, never held whole (as ``cleanup.dkimsink``
does for DKIM): once to seal (header section, then the body hash in one pass, in a worker
thread), once to copy in ``COPY_SIZE`` chunks. A spool file can
only be appended to, so a sealed forward always goes through the copy, even when every
recipient is forwarded: the copy is then the one message (its id is the client's) and the
first spool is dropped.

Security: decides which copies leave the machine and under which sender.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Protocol

from kittiwake.addressing.directory import Directory, TargetKind, address_key
from kittiwake.envelope import Envelope, Recipient
from kittiwake.errors import StoreError
from kittiwake.policy.message import BodySpool
from kittiwake.queue.api import QueuedMessage, SpoolWriter, Store

log = logging.getLogger("kittiwake.cleanup")

COPY_SIZE = 256 * 1024


@dataclass(frozen=True, slots=True)
class Expansion:
    """``envelope``: the message under the original sender (None: nothing stays in it);
    ``forward``: the copy under the SRS sender (None: no copy)."""

    envelope: Envelope | None
    forward: Envelope | None

    @property
    def copy_needed(self) -> bool:
        """Two messages: the forwarded copy needs a spool file of its own."""
        return self.envelope is not None and self.forward is not None


def original_recipient(address: str) -> str | None:
    """ORCPT for ``address`` (RFC 3461 §4.2 ``rfc822;addr``); None for a non-ASCII address
    (its ``utf-8`` form, RFC 6533 §3, is not something our ORCPT parser takes back)."""
    if not address.isascii() or any(c < "!" or c == "\x7f" for c in address):
        return None
    return f"rfc822;{address}"


class Sealer(Protocol):
    def seal(self, message: IO[bytes]) -> bytes:
        """The ARC set (CRLF lines) to write above ``message`` (a binary file at its start,
        streamed; this blocks: called in a worker thread); b"" for none."""


class Expander:
    """``Expander(directory).expand(envelope)``; see the module docstring. ``sealer``
    (None: none) ARC-seals forwarded copies (``cleanup.arcseal``)."""

    def __init__(self, directory: Directory, sealer: Sealer | None = None) -> None:
        self.directory = directory
        self.sealer = sealer

    def expand(self, envelope: Envelope) -> Expansion:
        directory = self.directory
        srs_sender = directory.forward_sender(envelope.sender)
        kept: list[Recipient] = []
        forwarded: list[Recipient] = []
        seen: set[str] = set()

        def add(into: list[Recipient], rcpt: Recipient) -> None:
            key = address_key(rcpt.address)
            if key not in seen:
                seen.add(key)
                into.append(rcpt)

        for rcpt in envelope.recipients:
            resolution = directory.resolve(rcpt.address)
            targets = resolution.targets if resolution.accepted else ()
            if not targets or (
                len(targets) == 1
                and not targets[0].forwarded
                and targets[0].address == rcpt.address
            ):
                add(kept, rcpt)
                continue
            orcpt = rcpt.orcpt or original_recipient(rcpt.address)
            for target in targets:
                new = Recipient(target.address, notify=rcpt.notify, orcpt=orcpt)
                outside = target.kind is TargetKind.EXTERNAL and target.forwarded
                add(forwarded if outside and srs_sender != envelope.sender else kept, new)
        main = dataclasses.replace(envelope, recipients=tuple(kept)) if kept else None
        copy = (
            dataclasses.replace(envelope, sender=srs_sender, recipients=tuple(forwarded))
            if forwarded
            else None
        )
        if main is None and copy is None:  # no recipients at all: leave it to the store
            main = envelope
        return Expansion(main, copy)


class Fork:
    """One message's expansion while it is received: the spool file of the forwarded copy
    (when there is one) gets every octet the message's own spool gets, and ``commit``
    commits the copy first, then the message (module docstring). ``header(queue_id)`` is
    the copy's own trace field; ``on_forward`` receives the committed copy (the
    scheduler's ``submit``)."""

    def __init__(
        self,
        expander: Expander,
        store: Store,
        envelope: Envelope,
        header: Callable[[str], bytes],
        on_forward: Callable[[QueuedMessage], None] | None,
    ) -> None:
        self._expander = expander
        self._sealer = expander.sealer
        self._on_forward = on_forward
        self._committed = False
        self._copy: SpoolWriter | None = None
        self._tee: BodySpool | None = None  # the copy's octets, while a seal is pending
        if self._needs_copy(expander.expand(envelope)):
            copy = store.new_message()
            try:
                if self._sealer is not None:
                    self._tee = BodySpool()
                    self._tee.write(header(copy.queue_id))
                else:
                    copy.write(header(copy.queue_id))
            except BaseException:
                copy.abort()
                raise
            self._copy = copy

    def _needs_copy(self, expansion: Expansion) -> bool:
        if self._sealer is not None:
            return expansion.forward is not None  # sealing prepends: always via the copy
        return expansion.copy_needed

    def write(self, data: bytes) -> None:
        if self._tee is not None:
            self._tee.write(data)
        elif self._copy is not None:
            self._copy.write(data)

    def abort(self) -> None:
        """Drop the copy's spool unless it is committed (then it is queued mail)."""
        if self._tee is not None:
            self._tee.close()
        if self._copy is not None and not self._committed:
            self._copy.abort()

    def _drop_copy(self) -> None:
        if self._tee is not None:
            self._tee.close()
            self._tee = None
        if self._copy is not None:
            self._copy.abort()
            self._copy = None

    async def _seal(self) -> None:
        """The ARC set, then the teed copy, into the copy's spool file: the tee is read
        once to seal, then again from its start in ``COPY_SIZE`` chunks (module docstring);
        reading happens in worker threads."""
        copy, tee, sealer = self._copy, self._tee, self._sealer
        assert copy is not None and tee is not None and sealer is not None
        try:
            with tee.open() as stream:
                arc = await asyncio.to_thread(sealer.seal, stream)
                copy.write(arc)
                stream.seek(0)
                while chunk := await asyncio.to_thread(stream.read, COPY_SIZE):
                    copy.write(chunk)
        finally:
            tee.close()
            self._tee = None

    async def commit(self, store: Store, writer: SpoolWriter, envelope: Envelope) -> QueuedMessage:
        expansion = self._expander.expand(envelope)
        needed = self._needs_copy(expansion)
        if needed and self._copy is None:
            raise StoreError(f"{writer.queue_id}: recipients changed after begin (no copy spool)")
        if not needed and self._copy is not None:
            self._drop_copy()
        if self._copy is not None and self._tee is not None:
            await self._seal()
        if self._copy is not None and expansion.forward and not expansion.envelope:
            # Sealed, every recipient forwarded: the sealed copy is the one message.
            copy = await store.commit(self._copy, expansion.forward)
            self._committed = True
            writer.abort()
            _log(writer.queue_id, copy.queue_id, expansion.forward)
            return copy
        if self._copy is not None and expansion.envelope and expansion.forward:
            copy = await store.commit(self._copy, expansion.forward)
            self._committed = True
            _log(writer.queue_id, copy.queue_id, expansion.forward)
            if self._on_forward is not None:
                self._on_forward(copy)
            return await store.commit(writer, expansion.envelope)
        final = expansion.envelope or expansion.forward
        assert final is not None  # expand() always leaves one of them
        if expansion.forward is not None:
            _log(writer.queue_id, writer.queue_id, expansion.forward)
        return await store.commit(writer, final)


def _log(queue_id: str, copy_id: str, forward: Envelope) -> None:
    log.info(
        "%s: forwarded as %s to %d recipient(s), from=<%s>",
        queue_id,
        copy_id,
        len(forward.recipients),
        forward.sender,
    )
