"""Submission requires AUTH (RFC 6409 §4.3, §5): no mail transaction before it.

Owns ``RequireAuth``, a MAIL-stage check for the submission and implicit-TLS listeners:
an unauthenticated ``MAIL`` gets ``530 5.7.0 Authentication required`` (RFC 4954 §6).
Never put it on the MX listener: mail from the world arrives there unauthenticated.
Security: HIGH — without it the submission port is a second, unauthenticated MX.
"""

from __future__ import annotations

from kittiwake.envelope import SessionInfo
from kittiwake.policy.verdict import CONTINUE, Verdict, reject

__all__ = ["AUTH_REQUIRED", "RequireAuth"]

AUTH_REQUIRED = reject(530, "5.7.0", "Authentication required", reason="MAIL before AUTH")


class RequireAuth:
    name = "require-auth"

    async def mail(self, session: SessionInfo, sender: str) -> Verdict:
        return CONTINUE if session.auth_user is not None else AUTH_REQUIRED
