"""The ``[auth]`` section: SASL mechanisms, sender ownership, brute-force limits.

Owns ``AuthConfig`` and ``build_auth`` (``kittiwake.config`` puts it on ``Config.auth``).
Every problem is a ``ConfigError`` naming the dotted key. Users themselves are not
configured here: they live in ``<data_dir>/users.db`` (``kittiwake user ...``).
Security sensitive: ``sender_ownership = "off"`` lets any user send as anyone, and the
limits are what stands between a password guesser and the users.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast

from kittiwake.config_check import Table, show
from kittiwake.errors import ConfigError

SenderOwnership = Literal["strict", "off"]
SENDER_OWNERSHIP: tuple[SenderOwnership, ...] = ("strict", "off")
KNOWN_MECHANISMS = ("PLAIN", "LOGIN", "SCRAM-SHA-256")  # as smtpd.auth implements them

SECTION_KEYS: dict[str, tuple[str, ...]] = {
    "auth": (
        "mechanisms",
        "sender_ownership",
        "max_failures_per_ip",
        "max_failures_per_user",
        "failure_window",
        "lockout",
    ),
}


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """AUTH on the submission listeners (RFC 4954, RFC 6409 §4.3)."""

    mechanisms: tuple[str, ...] = KNOWN_MECHANISMS  # offered, in this order
    sender_ownership: SenderOwnership = "strict"  # MAIL FROM must be the user's own
    max_failures_per_ip: int = 10  # failed AUTH from one client within failure_window...
    max_failures_per_user: int = 20  # ...or against one user name...
    failure_window: float = 600.0  # seconds
    lockout: float = 900.0  # ...locks it out (454 4.7.0) for this many seconds


def build_auth(t: Table) -> AuthConfig:
    d = AuthConfig()
    names = t.strings("mechanisms", d.mechanisms)
    mechanisms = tuple(dict.fromkeys(m.upper() for m in names))
    for m in mechanisms:
        if m not in KNOWN_MECHANISMS:
            raise ConfigError(
                t.key("mechanisms"),
                f"unknown mechanism {show(m)} (known: {', '.join(KNOWN_MECHANISMS)})",
            )
    if not mechanisms:
        raise ConfigError(t.key("mechanisms"), "name at least one mechanism")
    return AuthConfig(
        mechanisms=mechanisms,
        sender_ownership=cast(
            SenderOwnership, t.choice("sender_ownership", SENDER_OWNERSHIP, d.sender_ownership)
        ),
        max_failures_per_ip=t.integer("max_failures_per_ip", d.max_failures_per_ip, 1),
        max_failures_per_user=t.integer("max_failures_per_user", d.max_failures_per_user, 1),
        failure_window=t.seconds("failure_window", d.failure_window),
        lockout=t.seconds("lockout", d.lockout),
    )
