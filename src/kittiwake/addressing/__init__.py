"""Addressing: which addresses exist here and where their mail goes — local and virtual
mailboxes, aliases with catch-alls, sub-addressing, and the Sender Rewriting Scheme for mail
forwarded outside (``srs``). ``Directory`` answers for the RCPT check and for cleanup's
expansion at enqueue time. Security: HIGH (see each module)."""

from kittiwake.addressing.directory import Directory, Resolution, Target, TargetKind
from kittiwake.addressing.srs import Srs, SrsError

__all__ = ["Directory", "Resolution", "Srs", "SrsError", "Target", "TargetKind"]
