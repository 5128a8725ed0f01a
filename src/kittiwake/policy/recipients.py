"""Recipient placement: local mailboxes, postmaster, and the relay refusal.

Security sensitive: the last word on relaying in 0.1. A recipient in a local domain is
accepted when the mailbox exists (550 5.1.1 otherwise); postmaster is always accepted
(RFC 5321 §4.5.1); any other domain is refused with 554 5.7.1 — never an open relay.
"""

from __future__ import annotations

from typing import Protocol

from kittiwake.envelope import Recipient, SessionInfo
from kittiwake.policy.verdict import ACCEPT, Verdict, reject

NO_SUCH_USER = reject(550, "5.1.1", "Recipient address rejected: no such user here")
RELAY_DENIED = reject(554, "5.7.1", "Relay access denied")


class Mailboxes(Protocol):
    def is_local_domain(self, domain: str) -> bool: ...
    def lookup(self, address: str) -> str | None: ...


class LocalRecipients:
    name = "local_recipients"

    def __init__(self, mailboxes: Mailboxes) -> None:
        self.mailboxes = mailboxes

    async def rcpt(self, session: SessionInfo, sender: str, recipient: Recipient) -> Verdict:
        address = recipient.address
        if "@" not in address:  # <postmaster> without a domain (RFC 5321 §4.1.1.3)
            return ACCEPT if address.lower() == "postmaster" else NO_SUCH_USER
        if not self.mailboxes.is_local_domain(recipient.domain):
            return RELAY_DENIED
        return ACCEPT if self.mailboxes.lookup(address) is not None else NO_SUCH_USER
