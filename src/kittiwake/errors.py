"""The error tree, drawn once here so that every layer raises something on it.

    KittiwakeError
    ├── ConfigError            a configuration value is wrong (names the key)
    ├── ProtocolError          the SMTP dialogue went wrong
    │   ├── LocalProtocolError     we tried to do something the protocol forbids (a bug)
    │   └── RemoteProtocolError    the peer did; carries the reply to send (``reply``)
    ├── StoreError             the queue could not persist or read (disk, database)
    └── DeliveryError          a delivery attempt failed; carries scope and permanence

Imports only ``envelope``.
"""

from __future__ import annotations

import enum

from kittiwake.envelope import Reply


class KittiwakeError(Exception):
    """Base of every error Kittiwake raises on purpose."""


class ConfigError(KittiwakeError):
    """A bad configuration value. ``key`` is the dotted TOML key, e.g. ``limits.max_recipients``."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key = key
        self.problem = problem


class ProtocolError(KittiwakeError):
    """Something went wrong in the SMTP dialogue."""


class LocalProtocolError(ProtocolError):
    """Our side tried to break the protocol (calling the core in the wrong state): a bug."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol; ``reply`` is what a server should answer."""

    def __init__(self, message: str, reply: Reply | None = None) -> None:
        super().__init__(message)
        self.reply = reply


class StoreError(KittiwakeError):
    """The queue could not persist or read something."""


class FailureScope(enum.Enum):
    """Who a delivery failure applies to (Postfix smtp_trouble.c: sess/site/mesg/rcpt)."""

    SESSION = "session"
    SITE = "site"
    MESSAGE = "message"
    RECIPIENT = "recipient"


class DeliveryError(KittiwakeError):
    """A delivery attempt failed."""

    def __init__(self, reply: Reply, scope: FailureScope, *, permanent: bool) -> None:
        super().__init__(str(reply))
        self.reply = reply
        self.scope = scope
        self.permanent = permanent
