"""The end-of-DATA policy stage of one message: tee, check, then into the queue.

Owns ``DataStage``. When the policy chain has ``data`` checks, the session does not open
the queue's spool file at DATA: the body goes into a ``policy.message.BodySpool`` (memory,
or an unlinked temporary file beyond 256 KiB), the checks run on it at end of data, and
only an accepted message is copied into the cleanup sink, with the header fields the
checks asked for (``Authentication-Results``...) written *above* our ``Received:`` line
(RFC 8601 §5: A-R goes on top, like a trace field), and A-R fields from outside that
claim our hostname as authserv-id are dropped on the way (RFC 8601 §5). The copy
costs one extra sequential read of the body; a refused message never touches the
queue. ``header_block`` formats fields (validated by ``policy.results.valid_header``) as
CRLF lines, folded at ``"; "`` when longer than 78 characters (RFC 5322 §2.1.1, §2.2.3).
Security: moderate; every octet is the client's, the added fields are ours.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from kittiwake.envelope import Envelope, SessionInfo
from kittiwake.policy import PolicyChain, Verdict
from kittiwake.policy.authres import strip_forged
from kittiwake.policy.message import MAX_HEADER, BodySpool, MessageContext
from kittiwake.policy.results import Results, valid_header
from kittiwake.smtpd.intake import IntakeSink

__all__ = ["QUARANTINE_HEADER", "DataStage", "header_block"]

COPY_SIZE = 256 * 1024
QUARANTINE_HEADER = "X-Kittiwake-Quarantine"  # above our Received line: ours, not forged
_FOLD_AT = 78


def header_block(fields: Sequence[tuple[str, str]]) -> bytes:
    """``Name: value`` CRLF lines; long values folded before the parts after ``"; "``."""
    lines: list[str] = []
    for name, value in fields:
        if not valid_header(name, value):
            raise ValueError(f"invalid header field {name!r}")
        line = f"{name}: {value}"
        if len(line) > _FOLD_AT:
            line = line.replace("; ", ";\r\n\t")
        lines.append(line + "\r\n")
    return "".join(lines).encode("utf-8")


class DataStage:
    """One message's tee and DATA checks (see the module docstring)."""

    def __init__(self, directory: Path | None = None) -> None:
        self.spool = BodySpool(directory)
        self.context: MessageContext | None = None

    def write(self, data: bytes) -> None:
        self.spool.write(data)

    async def check(
        self, policy: PolicyChain, session: SessionInfo, envelope: Envelope, results: Results
    ) -> Verdict:
        """Run the chain's data stage; ``prepend()`` then has the fields to add."""
        self.context = self.spool.context(session, envelope, results)
        return await policy.data(self.context)

    def prepend(self) -> bytes:
        """The fields to write above our Received line (checks' headers, quarantine mark)."""
        if self.context is None:
            return b""
        results = self.context.results
        fields = list(results.headers)
        if results.quarantine is not None:
            reason = "".join(c if " " <= c < "\x7f" else "?" for c in results.quarantine)
            fields.insert(0, (QUARANTINE_HEADER, reason[:200]))
        return header_block(fields)

    def replay(self, sink: IntakeSink, authserv_id: str = "") -> None:
        """Copy the spooled message into the queue's sink, without the
        Authentication-Results fields that claim ``authserv_id`` (RFC 8601 §5: only we
        may write those; checked in the first ``MAX_HEADER`` octets)."""
        with self.spool.open() as stream:
            if authserv_id:
                head = stream.read(MAX_HEADER)
                end = -1 if head.startswith(b"\r\n") else head.find(b"\r\n\r\n")
                if end >= 0:
                    head = strip_forged(head[: end + 2], authserv_id) + head[end + 2 :]
                sink.write(head)
            while chunk := stream.read(COPY_SIZE):
                sink.write(chunk)

    def close(self) -> None:
        self.spool.close()
