"""SASL mechanisms on the server side: the exchange, not the credential store.

Owns PLAIN (RFC 4616) and LOGIN (draft-murchison-sasl-login) exchanges over the core's
``AuthStart``/``AuthResponse`` events. Credentials are checked by an injected
``Authenticator``; until users exist (a later issue) the default refuses everyone.
Security sensitive: never log secrets.
"""

from __future__ import annotations

from typing import Protocol

MECHANISMS = ("PLAIN", "LOGIN")


class Authenticator(Protocol):
    async def check(self, username: str, password: str) -> bool: ...


class NoUsers:
    """No credential store configured: every attempt fails with 535 5.7.8."""

    async def check(self, username: str, password: str) -> bool:
        return False


class SaslExchange:
    """One running AUTH exchange. ``step`` returns a challenge, or the final credentials."""

    def __init__(self, mechanism: str) -> None:
        self.mechanism = mechanism
        self._username: str | None = None

    def start(self, initial: bytes | None) -> bytes | tuple[str, str] | None:
        """Return a challenge (bytes), credentials ``(user, password)``, or None if malformed."""
        if self.mechanism == "PLAIN":
            return b"" if initial is None else _plain(initial)
        if initial is None:
            return b"Username:"
        return self.step(initial)

    def step(self, response: bytes) -> bytes | tuple[str, str] | None:
        if self.mechanism == "PLAIN":
            return _plain(response)
        text = _utf8(response)
        if text is None:
            return None
        if self._username is None:
            self._username = text
            return b"Password:"
        return (self._username, text)


def _utf8(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _plain(data: bytes) -> tuple[str, str] | None:
    """RFC 4616 §2: ``[authzid] NUL authcid NUL passwd``."""
    parts = data.split(b"\0")
    if len(parts) != 3 or not parts[1]:
        return None
    authzid, authcid, password = (_utf8(p) for p in parts)
    if authcid is None or password is None or authzid is None:
        return None
    if authzid and authzid != authcid:  # no proxy authorization
        return None
    return (authcid, password)
