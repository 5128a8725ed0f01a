"""Sender ownership: an authenticated user may use only its own addresses as MAIL FROM.

Owns ``SenderOwnership``, a MAIL-stage check: for an authenticated session, a sender the
user does not own (exactly, or as ``user+tag@`` of an owned address — ``auth.ownership``)
gets ``553 5.7.1 Sender address rejected: not owned by user X``. The null sender ``<>`` is
allowed (a client may send a bounce or a read receipt), and unauthenticated sessions are
not this check's business (``RequireAuth`` or the MX rules decide). With
``auth.sender_ownership = "off"`` (``Ownership(strict=False)``) everything passes.
Security: HIGH — without it any user can forge any other user's address.
"""

from __future__ import annotations

from kittiwake.auth.ownership import Ownership
from kittiwake.envelope import SessionInfo
from kittiwake.policy.verdict import CONTINUE, Verdict, reject

__all__ = ["SenderOwnership"]


class SenderOwnership:
    name = "sender-ownership"

    def __init__(self, ownership: Ownership) -> None:
        self.ownership = ownership

    async def mail(self, session: SessionInfo, sender: str) -> Verdict:
        user = session.auth_user
        if user is None or sender == "" or self.ownership.owns(user, sender):
            return CONTINUE
        return reject(
            553,
            "5.7.1",
            f"Sender address rejected: not owned by user {user}",
            reason=f"{sender} is not owned by {user}",
        )
