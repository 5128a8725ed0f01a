"""The MTA sections of the configuration (0.2): relay, transport, dns, queue, etrn.

Owns the frozen values ``RelayConfig``, ``DnsConfig``, ``QueueConfig``, ``EtrnConfig`` and
the builders that validate their TOML tables (``kittiwake.config`` puts them on ``Config``).
Every problem is a ``ConfigError`` naming the dotted key; keys that are domain names are
written quoted (``transport."example.net"``), as TOML needs them.

Defaults never relay (``relay.mynetworks`` and ``etrn.allowed`` are empty) and nothing here
queries DNS: host names are only checked for syntax. Security sensitive: ``mynetworks``
decides who may relay, ``etrn.allowed`` who may start queue runs, and ``[transport]`` which
domains we accept mail for from anyone (we are their MX).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal, cast

from kittiwake.config_check import Table, domain_name, show
from kittiwake.delivery.api import Route
from kittiwake.errors import ConfigError
from kittiwake.policy.networks import NOBODY, Networks

TlsPolicyName = Literal["none", "opportunistic", "required", "verify"]
TLS_POLICIES: tuple[TlsPolicyName, ...] = ("none", "opportunistic", "required", "verify")


@dataclass(frozen=True, slots=True)
class RelayConfig:
    """Who may relay through us, and how we send mail on (smarthost, outbound TLS).

    ``smarthost`` is a next hop (``queue.routing`` syntax): ``""`` (deliver by DNS),
    ``domain[:port]`` (its MX hosts) or ``[host][:port]`` (that host, no MX lookup).
    """

    mynetworks: Networks = NOBODY
    smarthost: str = ""  # a next hop: "" = deliver by DNS
    smarthost_username: str = ""
    smarthost_password: str = field(default="", repr=False)  # never in logs or reprs
    tls_policy: TlsPolicyName = "opportunistic"
    tls_ca_file: Path | None = None  # None: the system's trust store
    tls_policies: Mapping[str, TlsPolicyName] = field(default_factory=lambda: MappingProxyType({}))
    smtp_port: int = 25  # the port MX hosts are reached on (RFC 5321 §4.5.4.2); tests change it

    @property
    def smarthost_credentials(self) -> tuple[str, str] | None:
        """``(username, password)`` for AUTH to the smarthost, or None."""
        if not self.smarthost_username:
            return None
        return self.smarthost_username, self.smarthost_password


@dataclass(frozen=True, slots=True)
class DnsConfig:
    """The resolver: ``nameservers`` are IP literals; empty means the system's resolv.conf."""

    nameservers: tuple[str, ...] = ()
    port: int = 53
    timeout: float = 5.0  # seconds per query (all tries)


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """Scheduler settings; the names match ``queue.scheduler.SchedulerSettings``. Seconds."""

    retry_first: float = 300.0  # first retry after ~5 min (like Postfix)
    retry_max: float = 3600.0  # backoff cap
    max_lifetime: float = 5 * 86400.0  # then bounce
    delay_warning: float = 4 * 3600.0  # then a delay DSN (NOTIFY=DELAY or no NOTIFY); 0 = never
    destination_concurrency: int = 20  # deliveries at once per destination
    active_limit: int = 1000  # messages in memory at once
    local_concurrency: int = 4  # deliveries at once into local Maildirs (they share our disk)


@dataclass(frozen=True, slots=True)
class EtrnConfig:
    """ETRN (RFC 1985): the clients allowed to start queue runs; empty disables ETRN."""

    allowed: Networks = NOBODY

    @property
    def enabled(self) -> bool:
        return bool(self.allowed)


SECTION_KEYS: dict[str, tuple[str, ...]] = {
    "relay": (
        "mynetworks",
        "smarthost",
        "smarthost_username",
        "smarthost_password",
        "tls_policy",
        "tls_ca_file",
        "tls_policies",
        "smtp_port",
    ),
    "dns": ("nameservers", "port", "timeout"),
    "queue": (
        "retry_first",
        "retry_max",
        "max_lifetime",
        "delay_warning",
        "destination_concurrency",
        "local_concurrency",
        "active_limit",
    ),
    "etrn": ("allowed",),
}


def quoted_key(table: str, key: str) -> str:
    """``transport."example.net"``: a dotted key whose last part is a domain name."""
    return f'{table}."{key}"'


def networks(t: Table, key: str) -> Networks:
    try:
        return Networks.parse(t.strings(key, ()))
    except ValueError as e:
        raise ConfigError(t.key(key), f"{e}") from None


def domain_table(value: object, key: str, subdomains: bool = False) -> dict[str, object]:
    """A table keyed by domain names (``[transport]``, ``[relay.tls_policies]``), lower-cased;
    with ``subdomains``, ``.example.org`` (every subdomain of it) is a key too."""
    if not isinstance(value, dict):
        raise ConfigError(key, f"must be a table of domain = value, got {show(value)}")
    out: dict[str, object] = {}
    for name, item in value.items():
        dot = "." if subdomains and name.startswith(".") else ""
        domain = dot + domain_name(quoted_key(key, name), name.removeprefix(dot))
        if domain in out:
            raise ConfigError(quoted_key(key, name), "the same domain is given twice")
        out[domain] = item
    return out


def build_relay(t: Table, base_dir: Path) -> RelayConfig:
    d = RelayConfig()
    hop = smarthost(t.key("smarthost"), t.string("smarthost", ""))
    user = t.string("smarthost_username", "")
    password = t.string("smarthost_password", "")
    if bool(user) != bool(password):
        missing = "smarthost_password" if user else "smarthost_username"
        raise ConfigError(t.key(missing), "smarthost_username and _password go together")
    if user and not hop:
        raise ConfigError(t.key("smarthost_username"), "credentials need relay.smarthost")
    policies: dict[str, TlsPolicyName] = {}
    for domain, value in domain_table(t.get("tls_policies", {}), t.key("tls_policies")).items():
        key = quoted_key(t.key("tls_policies"), domain)
        if not isinstance(value, str) or value.lower() not in TLS_POLICIES:
            raise ConfigError(key, f"must be one of {', '.join(TLS_POLICIES)}, got {show(value)}")
        policies[domain] = cast(TlsPolicyName, value.lower())
    return RelayConfig(
        mynetworks=networks(t, "mynetworks"),
        smarthost=hop,
        smarthost_username=user,
        smarthost_password=password,
        tls_policy=cast(TlsPolicyName, t.choice("tls_policy", TLS_POLICIES, d.tls_policy)),
        tls_ca_file=ca_file(t, base_dir),
        tls_policies=MappingProxyType(policies),
        smtp_port=port_number(t, "smtp_port", d.smtp_port),
    )


def port_number(t: Table, key: str, default: int) -> int:
    value = t.integer(key, default, 1)
    if value > 65535:
        raise ConfigError(t.key(key), f"must be a port number from 1 to 65535, got {value}")
    return value


def smarthost(key: str, value: str) -> str:
    """``""``, or a next hop in the router's syntax, canonical: ``domain[:port]`` (MX
    lookup) or ``[host][:port]`` (that host); a bare IP address becomes ``[ip]``. No DNS."""
    if not value.strip():
        return ""
    try:
        route = parse_transport("smtp:" + value.strip())
    except ValueError as e:
        raise ConfigError(
            key, f'must be "[host]:port", "[host]" or a domain (MX lookup), got {show(value)}: {e}'
        ) from None
    return route.nexthop


def ca_file(t: Table, base_dir: Path) -> Path | None:
    path = t.path("tls_ca_file", base_dir)
    if path is None:
        return None
    import ssl  # only when a CA file is configured

    try:
        ssl.create_default_context(cafile=str(path))
    except ssl.SSLError:  # (an OSError too: catch it first)
        raise ConfigError(t.key("tls_ca_file"), f"{path} holds no PEM certificates") from None
    except OSError as e:
        raise ConfigError(t.key("tls_ca_file"), f"cannot read {path}: {e.strerror}") from None
    return path


def parse_transport(value: str) -> Route:
    """The router's own parser (lazy: ``queue.routing`` loads only for a [transport] table)."""
    from kittiwake.queue.routing import parse_transport as parse

    return parse(value)


def build_transport(
    raw: object, local_domains: tuple[str, ...], parse: Callable[[str], Route] = parse_transport
) -> Mapping[str, str]:
    """``[transport]`` domain = "transport:nexthop", each value checked by ``parse``
    (``kittiwake.queue.routing.parse_transport``, which raises ValueError). A key
    ``.example.org`` routes every subdomain of example.org (not example.org itself)."""
    out: dict[str, str] = {}
    for domain, value in domain_table(raw, "transport", subdomains=True).items():
        key = quoted_key("transport", domain)
        if not isinstance(value, str):
            raise ConfigError(key, f'must be a string like "smtp:[host]:port", got {show(value)}')
        try:
            route = parse(value.strip())
        except ValueError as e:
            raise ConfigError(key, f"{e}") from None
        if route.transport == "local" and domain not in local_domains:
            raise ConfigError(key, "the local transport needs the domain in local.domains")
        out[domain] = value.strip()
    return MappingProxyType(out)


def build_dns(t: Table) -> DnsConfig:
    d = DnsConfig()
    servers: list[str] = []
    for value in t.strings("nameservers", ()):
        try:
            servers.append(str(ipaddress.ip_address(value)))
        except ValueError:
            raise ConfigError(
                t.key("nameservers"), f"must be IP addresses (no names: no DNS), got {show(value)}"
            ) from None
    port = port_number(t, "port", d.port)
    return DnsConfig(tuple(dict.fromkeys(servers)), port, t.seconds("timeout", d.timeout))


def build_queue(t: Table) -> QueueConfig:
    d = QueueConfig()
    q = QueueConfig(
        retry_first=t.seconds("retry_first", d.retry_first),
        retry_max=t.seconds("retry_max", d.retry_max),
        max_lifetime=t.seconds("max_lifetime", d.max_lifetime),
        delay_warning=0.0
        if _zero(t.get("delay_warning"))
        else t.seconds("delay_warning", d.delay_warning),
        destination_concurrency=t.integer("destination_concurrency", d.destination_concurrency, 1),
        local_concurrency=t.integer("local_concurrency", d.local_concurrency, 1),
        active_limit=t.integer("active_limit", d.active_limit, 1),
    )
    if q.retry_first > q.retry_max:
        raise ConfigError(
            t.key("retry_first"),
            f"must be <= queue.retry_max ({show(q.retry_max)}), got {show(q.retry_first)}",
        )
    if q.retry_first > q.max_lifetime:
        raise ConfigError(
            t.key("max_lifetime"),
            f"must be >= queue.retry_first ({show(q.retry_first)}), got {show(q.max_lifetime)}",
        )
    return q


def _zero(value: object) -> bool:
    """A literal 0 (not ``false``): ``queue.delay_warning = 0`` turns delay notices off."""
    return type(value) in (int, float) and value == 0


def build_etrn(t: Table) -> EtrnConfig:
    return EtrnConfig(allowed=networks(t, "allowed"))
