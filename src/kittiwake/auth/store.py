"""The user store contract: users, their credentials, the addresses they own.

Owns the values (``User``), the protocols (``UserDirectory`` — the synchronous, in-memory
read side the SMTP hot path uses; ``UserStore`` — a directory with a lifecycle, what the
server holds; ``UserAdmin`` — the writes the ``kittiwake user`` commands make;
``CredentialUpdates`` — the server's one write, upgrading a hash after a login), the errors,
and the normal forms of names and addresses every backend must use:

* a user name is SASLprep'd (RFC 4013, as RFC 4954 §4 asks) and lower-cased, so ``Alice``
  logs in as ``alice``; 1-255 characters, no spaces or control characters;
* an address is ``local@domain`` lower-cased, the domain in A-labels without a final dot,
  a quoted local part unquoted (``"bob"@x`` is ``bob@x``) — local parts compare without
  case, as ``delivery.local`` matches mailboxes.

The SQLite backend is ``auth.sqlite``; a PostgreSQL twin implements the same protocols.
Security sensitive: these answers decide who may send as whom.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from kittiwake.auth.hashing import Credentials
from kittiwake.auth.saslprep import SaslPrepError, saslprep
from kittiwake.net.dns import to_ascii

__all__ = [
    "AddressTaken",
    "CredentialUpdates",
    "NoSuchUser",
    "User",
    "UserAdmin",
    "UserDirectory",
    "UserError",
    "UserExists",
    "UserStore",
    "normalize_address",
    "normalize_name",
]

MAX_NAME = 255
MAX_ADDRESS = 254  # RFC 5321 §4.5.3.1.3, minus the brackets
_QUOTED_PAIR = re.compile(r"\\(.)")


class UserError(Exception):
    """A user-store operation that cannot be done; ``str()`` says why, for the operator."""


class NoSuchUser(UserError):
    pass


class UserExists(UserError):
    pass


class AddressTaken(UserError):
    pass


@dataclass(frozen=True, slots=True)
class User:
    name: str  # normalized (see the module docstring)
    credentials: Credentials = field(repr=False)
    disabled: bool = False
    created: float = 0.0  # Unix time
    addresses: tuple[str, ...] = ()  # normalized, sorted


def normalize_name(name: str) -> str:
    """A user name in its stored form; ValueError when it is not a usable name."""
    try:
        prepared = saslprep(name.strip(), allow_unassigned=True).lower()
    except SaslPrepError as exc:
        raise ValueError(f"invalid user name: {exc}") from None
    if not prepared or len(prepared) > MAX_NAME:
        raise ValueError(f"a user name has 1 to {MAX_NAME} characters")
    if any(c.isspace() or not c.isprintable() for c in prepared):
        raise ValueError("a user name has no spaces or control characters")
    return prepared


def normalize_address(address: str) -> str:
    """An address in its stored form; ValueError when it is not ``local@domain``."""
    local, at, domain = address.strip().rpartition("@")
    if len(local) >= 2 and local[0] == local[-1] == '"':
        local = _QUOTED_PAIR.sub(r"\1", local[1:-1])
    if not at or not local or not domain:
        raise ValueError(f"not an address (local@domain): {address!r}")
    if any(c.isspace() or not c.isprintable() for c in local):
        raise ValueError(f"spaces or control characters in the local part: {address!r}")
    # An address literal is compared as written; to_ascii raises ValueError for a bad domain.
    literal = domain.startswith("[") and domain.endswith("]")
    domain = domain.lower() if literal else to_ascii(domain)
    result = f"{local.lower()}@{domain}"
    if len(result) > MAX_ADDRESS:
        raise ValueError(f"address longer than {MAX_ADDRESS} octets: {address!r}")
    return result


class UserDirectory(Protocol):
    """The read side. Synchronous and cheap: answered from memory, safe on the event loop."""

    def has_users(self) -> bool:
        """True once any user exists (then unknown local parts are not mailboxes)."""
        ...

    def get(self, name: str) -> User | None:
        """The user called ``name`` (any case), or None."""
        ...

    def owner_of(self, address: str) -> str | None:
        """The name of the user owning exactly ``address`` (any case), or None."""
        ...

    def addresses_of(self, name: str) -> tuple[str, ...]: ...

    def exists(self, address: str) -> bool:
        """True when some user owns ``address``."""
        ...

    def fake_salt(self, name: str) -> bytes:
        """A stable salt for a user that does not exist (SCRAM answers without telling)."""
        ...


class UserStore(UserDirectory, Protocol):
    """What the server holds: a directory that follows changes made by the CLI."""

    async def start(self) -> None:
        """Load the users and start following changes (at most ~1 s behind)."""
        ...

    async def refresh(self) -> bool:
        """Reload now if the store changed (off the event loop); True if it did."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class CredentialUpdates(Protocol):
    """A store the server may write one thing to: stronger credentials after a login."""

    async def update_credentials(self, name: str, verified: Credentials, new: Credentials) -> bool:
        """Store ``new`` for ``name`` only if its stored credentials are still ``verified``
        (compare-and-swap: a concurrent ``kittiwake user passwd`` wins). Off the event loop;
        True when written, and the snapshot shows it at once."""
        ...


class UserAdmin(Protocol):
    """The writes of ``kittiwake user``; they work whether or not the server runs."""

    def add_user(self, name: str, credentials: Credentials, addresses: Sequence[str]) -> User: ...
    def set_credentials(self, name: str, credentials: Credentials) -> None: ...
    def delete_user(self, name: str) -> None: ...
    def set_disabled(self, name: str, disabled: bool) -> None: ...
    def add_address(self, name: str, address: str) -> None: ...
    def remove_address(self, name: str, address: str) -> None: ...
    def users(self) -> list[User]: ...
