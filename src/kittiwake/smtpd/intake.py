"""What the session needs from the way into the queue (``cleanup``), as protocols.

The session streams the body into an ``IntakeSink`` and commits it; the sink owns the
trace header and the spool file. ``app`` wires the real ``cleanup`` implementation in.
"""

from __future__ import annotations

from typing import Protocol

from kittiwake.delivery.api import QueuedMessage
from kittiwake.envelope import Envelope, SessionInfo

QueuedNotice = QueuedMessage


class IntakeSink(Protocol):
    @property
    def queue_id(self) -> str: ...

    def write(self, data: bytes) -> None: ...

    def abort(self) -> None: ...

    async def commit(self, envelope: Envelope) -> QueuedMessage: ...


class Intake(Protocol):
    def begin(
        self, session: SessionInfo, envelope: Envelope, *, prepend: bytes = b""
    ) -> IntakeSink:
        """``prepend``: header lines to write above the trace field (DATA checks)."""
