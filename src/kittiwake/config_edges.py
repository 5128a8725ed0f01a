"""The edge sections of the configuration (0.3): ``[proxy]`` and ``[ratelimit]``.

Owns ``ProxyConfig`` and ``RateLimitConfig`` and their builders (``kittiwake.config`` puts
them on ``Config``). Every problem is a ``ConfigError`` naming the dotted key.

``[proxy]``: the PROXY protocol (HAProxy's v1/v2) is off unless a listener role is named in
``listeners``; those listeners then take connections only from ``trusted`` CIDRs and only
with a header. ``[ratelimit]``: connections per client address per minute and messages per
authenticated user per hour, with ``exempt`` clients (default: ``relay.mynetworks`` and
loopback, as Postfix exempts ``$mynetworks``). Security sensitive: ``proxy.trusted``
decides who may claim any client address.
"""

from __future__ import annotations

from dataclasses import dataclass

from kittiwake.config_check import Table, show
from kittiwake.config_mta import networks
from kittiwake.errors import ConfigError
from kittiwake.policy.networks import NOBODY, Networks

LOOPBACK = Networks.parse(("127.0.0.0/8", "::1/128"))


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """PROXY protocol: ``listeners`` are role names (``mx``, ``submission``, ...)."""

    trusted: Networks = NOBODY
    listeners: tuple[str, ...] = ()
    timeout: float = 5.0  # seconds to wait for the header (the spec: at least 3)

    def enabled_for(self, role: str) -> bool:
        return role in self.listeners


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    """0 turns a limit off. ``exempt`` clients are never limited."""

    connections_per_ip_per_minute: int = 60
    messages_per_user_per_hour: int = 1000
    exempt: Networks = LOOPBACK


SECTION_KEYS: dict[str, tuple[str, ...]] = {
    "proxy": ("trusted", "listeners", "timeout"),
    "ratelimit": ("connections_per_ip_per_minute", "messages_per_user_per_hour", "exempt"),
}


def build_proxy(t: Table, roles: tuple[str, ...]) -> ProxyConfig:
    """``roles`` are the listener roles that are enabled (``listen.*``)."""
    chosen: list[str] = []
    for role in t.strings("listeners", ()):
        if role not in roles:
            known = ", ".join(roles)
            raise ConfigError(
                t.key("listeners"), f"{show(role)} is not an enabled listener ({known})"
            )
        chosen.append(role)
    trusted = networks(t, "trusted")
    if chosen and not trusted:
        raise ConfigError(
            t.key("trusted"),
            "proxy.listeners needs the proxies' addresses here (CIDRs); "
            "without them every connection would be refused",
        )
    return ProxyConfig(
        trusted=trusted,
        listeners=tuple(dict.fromkeys(chosen)),
        timeout=t.seconds("timeout", ProxyConfig().timeout),
    )


def build_ratelimit(t: Table, mynetworks: Networks) -> RateLimitConfig:
    """Without ``exempt``, ``relay.mynetworks`` plus loopback are exempt."""
    d = RateLimitConfig()
    if t.get("exempt") is None:
        exempt = Networks(tuple(dict.fromkeys((*mynetworks, *LOOPBACK))))
    else:
        exempt = networks(t, "exempt")
    return RateLimitConfig(
        connections_per_ip_per_minute=t.integer(
            "connections_per_ip_per_minute", d.connections_per_ip_per_minute, 0, " (0 = off)"
        ),
        messages_per_user_per_hour=t.integer(
            "messages_per_user_per_hour", d.messages_per_user_per_hour, 0, " (0 = off)"
        ),
        exempt=exempt,
    )
