"""Which addresses an authenticated user may use as its own.

Owns ``Ownership.owns(user, address)``: true when the user owns the address exactly (any
case: local parts compare without case, domains in A-labels), or owns it without its
sub-address tag — ``alice+lists@example.org`` belongs to the owner of
``alice@example.org`` (``recipient_delimiter``: each character is a delimiter, as in
Postfix; ``""`` turns sub-addressing off). With ``strict=False`` every user may use every
address (``auth.sender_ownership = "off"``).

Used by the MAIL FROM check (``policy.sender``) and for the ``AUTH=`` value we record
(RFC 4954 §5). Security: HIGH — this is what stops one user from sending as another.
"""

from __future__ import annotations

from typing import Protocol

from kittiwake.auth.store import normalize_address

__all__ = ["OwnerLookup", "Ownership", "base_address"]


class OwnerLookup(Protocol):
    def owner_of(self, address: str) -> str | None: ...


def base_address(address: str, delimiter: str) -> str | None:
    """``user+tag@domain`` → ``user@domain`` (first delimiter character found); None when
    the local part has no delimiter or nothing before it."""
    local, at, domain = address.rpartition("@")
    if not at or not delimiter:
        return None
    cut = min((i for i in (local.find(d) for d in delimiter) if i >= 0), default=-1)
    if cut <= 0:
        return None
    return f"{local[:cut]}@{domain}"


class Ownership:
    def __init__(self, users: OwnerLookup, *, delimiter: str = "+", strict: bool = True) -> None:
        self.users = users
        self.delimiter = delimiter
        self.strict = strict

    def owns(self, user: str, address: str) -> bool:
        if not self.strict:
            return True
        try:
            address = normalize_address(address)
        except ValueError:
            return False
        exact = self.users.owner_of(address)
        if exact is not None:  # an address owned as such is never someone's sub-address
            return exact == user
        base = base_address(address, self.delimiter)
        return base is not None and self.users.owner_of(base) == user
