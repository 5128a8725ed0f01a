"""Server-side SASL mechanisms as sans-I/O state machines: PLAIN, LOGIN (SCRAM in ``scram``).

Owns the step vocabulary every mechanism answers in and the two password mechanisms:
PLAIN (RFC 4616 §2: ``[authzid] NUL authcid NUL passwd``) and LOGIN
(draft-murchison-sasl-login: ``Username:``/``Password:`` challenges; an initial response
is taken as the user name, as every client that sends one means it). Neither checks the
password itself: they return ``CheckPassword`` and the authenticator verifies it off the
event loop. Proxy authorization is not offered: an authzid other than the user fails.

Security: HIGH — parses attacker input; never log a password.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from kittiwake.auth.store import normalize_name

__all__ = [
    "BadCredentials",
    "Challenge",
    "CheckPassword",
    "LoginMechanism",
    "Malformed",
    "Mechanism",
    "PlainMechanism",
    "Step",
    "Verified",
    "utf8",
]


@dataclass(frozen=True, slots=True)
class Challenge:
    """Send ``334 base64(data)`` and wait for the client's answer."""

    data: bytes


@dataclass(frozen=True, slots=True)
class CheckPassword:
    """The exchange is over: verify this password (slow: in a worker thread)."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Verified:
    """The mechanism proved the identity itself (SCRAM): 235."""

    username: str


@dataclass(frozen=True, slots=True)
class BadCredentials:
    """Authentication failed: 535 5.7.8 (and a failure for the brute-force limiter)."""

    username: str | None
    reason: str  # for the log


@dataclass(frozen=True, slots=True)
class Malformed:
    """The client broke the mechanism's syntax: 501 5.5.2."""

    reason: str


Step = Challenge | CheckPassword | Verified | BadCredentials | Malformed


class Mechanism(Protocol):
    """One running exchange. ``username`` is set as soon as the client has named itself."""

    name: str
    username: str | None

    def start(self, initial: bytes | None) -> Step:
        """The AUTH command, with its initial response (None: none given; ``b""``: ``=``)."""
        ...

    def step(self, response: bytes) -> Step:
        """The client's answer to our last challenge (base64-decoded)."""
        ...


def utf8(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _name(text: str) -> str | None:
    try:
        return normalize_name(text)
    except ValueError:
        return None


class PlainMechanism:
    name = "PLAIN"

    def __init__(self) -> None:
        self.username: str | None = None

    def start(self, initial: bytes | None) -> Step:
        # RFC 4954 §4: no initial response → an empty challenge ("334 ").
        return Challenge(b"") if initial is None else self.step(initial)

    def step(self, response: bytes) -> Step:
        parts = response.split(b"\0")
        if len(parts) != 3:
            return Malformed("PLAIN needs authzid NUL authcid NUL passwd")
        authzid, authcid, password = (utf8(p) for p in parts)
        if authzid is None or authcid is None or password is None:
            return Malformed("PLAIN message is not UTF-8")
        user = _name(authcid)
        if user is None:
            return BadCredentials(None, "unusable user name")
        self.username = user
        if authzid and _name(authzid) != user:
            return BadCredentials(user, "authorization identity differs (no proxy AUTH)")
        return CheckPassword(user, password)


class LoginMechanism:
    name = "LOGIN"

    def __init__(self) -> None:
        self.username: str | None = None
        self._raw_user: str | None = None

    def start(self, initial: bytes | None) -> Step:
        if initial is None:
            return Challenge(b"Username:")
        return self.step(initial)

    def step(self, response: bytes) -> Step:
        text = utf8(response)
        if text is None:
            return Malformed("LOGIN response is not UTF-8")
        if self._raw_user is None:
            self._raw_user = text
            self.username = _name(text)
            return Challenge(b"Password:")
        if self.username is None:
            return BadCredentials(None, "unusable user name")
        return CheckPassword(self.username, text)
