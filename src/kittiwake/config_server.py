"""The server's own sections of the configuration (0.1): listen, tls, limits, timeouts,
smtp, local.

Owns the frozen values ``ListenerConfig``, ``TLSConfig``, ``LimitsConfig``,
``TimeoutsConfig``, ``SmtpConfig``, ``LocalConfig`` and the builders that validate their
TOML tables (``kittiwake.config`` puts them on ``Config``). Every problem is a
``ConfigError`` naming the dotted key.

No DNS here: listener hosts must be IP literals or ``localhost``; a TLS pair is checked by
loading it (``net.tls.check_pair``). Moderately security sensitive: it decides which
addresses we listen on, the per-session limits (RFC 5321 §4.5.3.1) and which local parts
are mailboxes.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

from kittiwake.config_check import Table, domain_name, is_local_part, listen_address, show
from kittiwake.errors import ConfigError
from kittiwake.proto.events import BareLinefeedPolicy

Role = Literal["mx", "submission", "smtps", "lmtp"]

ROLES: tuple[Role, ...] = ("mx", "submission", "smtps", "lmtp")
MIN_RECIPIENTS = 100  # RFC 5321 §4.5.3.1.8: a server MUST accept at least 100 recipients


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    """One listening socket. ``smtps`` speaks implicit TLS (RFC 8314 §3.3); ``lmtp`` is
    Kittiwake as an LMTP server (RFC 2033, the MDA role: no STARTTLS, no AUTH)."""

    role: Role
    host: str  # an IP literal, IPv6 without brackets
    port: int

    @property
    def implicit_tls(self) -> bool:
        return self.role == "smtps"

    @property
    def lmtp(self) -> bool:
        return self.role == "lmtp"

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


DEFAULT_LISTENERS: tuple[ListenerConfig, ...] = (
    ListenerConfig("mx", "127.0.0.1", 2525),
    ListenerConfig("submission", "127.0.0.1", 5870),
    ListenerConfig("smtps", "127.0.0.1", 4650),
)  # listen.lmtp is off unless configured


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """Certificate and key files; both None means a self-signed pair in ``data_dir/tls``."""

    cert_file: Path | None = None
    key_file: Path | None = None

    @property
    def self_signed(self) -> bool:
        return self.cert_file is None


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_connections: int = 1000
    max_connections_per_ip: int = 100
    max_recipients: int = 100  # >= 100, RFC 5321 §4.5.3.1.8
    max_message_size: int = 50 * 1024 * 1024  # octets; 0 = unlimited (RFC 1870 SIZE 0)
    max_commands: int = 10_000  # per session
    max_bad_commands: int = 20  # per session


@dataclass(frozen=True, slots=True)
class TimeoutsConfig:
    """Seconds. RFC 5321 §4.5.3.2.7: a server SHOULD wait at least 5 minutes for a command."""

    command: float = 300.0
    data: float = 600.0  # the whole DATA/BDAT content phase
    shutdown_grace: float = 30.0  # how long sessions may finish on shutdown


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    bare_linefeed: BareLinefeedPolicy = BareLinefeedPolicy.NORMALIZE
    vrfy: bool = True
    expn: bool = False
    banner: str = "ESMTP Kittiwake"


@dataclass(frozen=True, slots=True)
class LocalConfig:
    """Local delivery: the domains we are final destination for, and their mailboxes.

    ``users`` holds lower-cased local parts (a mailbox in every local domain) or full
    addresses (that domain only); empty means every local part is a mailbox (catch-all).
    Postmaster is always a mailbox (RFC 5321 §4.5.1).
    """

    domains: tuple[str, ...] = ("localhost",)
    users: tuple[str, ...] = ()
    postmaster: str = "postmaster@localhost"

    def is_local_domain(self, domain: str) -> bool:
        return domain.lower() in self.domains

    def has_mailbox(self, address: str) -> bool:
        """True if ``local@domain`` is a mailbox here (local parts compared case-blind)."""
        local, _, domain = address.rpartition("@")
        local, domain = local.lower(), domain.lower()
        if not local or domain not in self.domains:
            return False
        return (
            not self.users
            or local == "postmaster"
            or local in self.users
            or f"{local}@{domain}" in self.users
        )


SECTION_KEYS: dict[str, tuple[str, ...]] = {
    "listen": ROLES,
    "tls": ("cert", "key"),
    "limits": tuple(f.name for f in fields(LimitsConfig)),
    "timeouts": tuple(f.name for f in fields(TimeoutsConfig)),
    "smtp": tuple(f.name for f in fields(SmtpConfig)),
    "local": tuple(f.name for f in fields(LocalConfig)),
}
_DEFAULT_ADDRESS: dict[Role, str] = {lc.role: str(lc) for lc in DEFAULT_LISTENERS}


def build_listeners(table: Table) -> tuple[ListenerConfig, ...]:
    found: list[ListenerConfig] = []
    for role in ROLES:
        value = table.string(role, _DEFAULT_ADDRESS.get(role, ""))
        if value == "":
            continue  # the role is disabled
        host, port = listen_address(table.key(role), value)
        for other in found:
            if (other.host, other.port) == (host, port):
                raise ConfigError(table.key(role), f"same address as listen.{other.role} ({value})")
        found.append(ListenerConfig(role, host, port))
    if not found:
        raise ConfigError("listen", "every role is disabled; enable at least one")
    return tuple(found)


def build_tls(table: Table, base_dir: Path) -> TLSConfig:
    cert, key = table.path("cert", base_dir), table.path("key", base_dir)
    if (cert is None) != (key is None):
        missing = "tls.key" if key is None else "tls.cert"
        raise ConfigError(missing, "tls.cert and tls.key must be given together")
    if cert is None or key is None:
        return TLSConfig()
    from kittiwake.net.tls import TLSFileError, check_pair  # cryptography only when needed

    try:
        check_pair(cert, key)
    except TLSFileError as e:
        raise ConfigError(f"tls.{e.which}", e.problem) from None
    return TLSConfig(cert_file=cert, key_file=key)


def build_limits(t: Table) -> LimitsConfig:
    d = LimitsConfig()
    rfc = " (RFC 5321 §4.5.3.1.8 requires accepting at least 100 recipients)"
    return LimitsConfig(
        max_connections=t.integer("max_connections", d.max_connections, 1),
        max_connections_per_ip=t.integer("max_connections_per_ip", d.max_connections_per_ip, 1),
        max_recipients=t.integer("max_recipients", d.max_recipients, MIN_RECIPIENTS, rfc),
        max_message_size=t.integer("max_message_size", d.max_message_size, 0, " (0 = unlimited)"),
        max_commands=t.integer("max_commands", d.max_commands, 1),
        max_bad_commands=t.integer("max_bad_commands", d.max_bad_commands, 1),
    )


def build_timeouts(t: Table) -> TimeoutsConfig:
    d = TimeoutsConfig()
    return TimeoutsConfig(
        command=t.seconds("command", d.command),
        data=t.seconds("data", d.data),
        shutdown_grace=t.seconds("shutdown_grace", d.shutdown_grace),
    )


def build_smtp(t: Table) -> SmtpConfig:
    d = SmtpConfig()
    policies = tuple(p.value for p in BareLinefeedPolicy)
    banner = t.string("banner", d.banner)
    # The banner follows "220 hostname " in the greeting: printable ASCII, one line.
    if not all(" " <= c <= "~" for c in banner) or len(banner) > 200:
        raise ConfigError(
            "smtp.banner", f"must be printable ASCII, at most 200 characters, got {show(banner)}"
        )
    return SmtpConfig(
        bare_linefeed=BareLinefeedPolicy(t.choice("bare_linefeed", policies, "normalize")),
        vrfy=t.boolean("vrfy", d.vrfy),
        expn=t.boolean("expn", d.expn),
        banner=banner,
    )


def build_local(t: Table) -> LocalConfig:
    domain_list = t.strings("domains", LocalConfig().domains)
    if not domain_list:
        raise ConfigError("local.domains", "must name at least one domain")
    domains = tuple(dict.fromkeys(domain_name("local.domains", d) for d in domain_list))
    users = tuple(dict.fromkeys(_user(u, domains) for u in t.strings("users", ())))
    postmaster = t.string("postmaster", "postmaster")
    if "@" not in postmaster:
        postmaster = f"{postmaster}@{domains[0]}"
    pm_local, _, pm_domain = postmaster.rpartition("@")
    if not is_local_part(pm_local.lower()) or pm_domain.lower() not in domains:
        raise ConfigError(
            "local.postmaster",
            f"must be a local part or an address in local.domains, got {show(postmaster)}",
        )
    return LocalConfig(domains=domains, users=users, postmaster=postmaster.lower())


def _user(value: str, domains: tuple[str, ...]) -> str:
    local, at, domain = value.lower().rpartition("@") if "@" in value else (value.lower(), "", "")
    if not is_local_part(local):
        raise ConfigError(
            "local.users",
            f"{show(value)} is not a plain local part (dot-atom, no / or \\) or local@domain",
        )
    if at and domain not in domains:
        raise ConfigError("local.users", f"{show(value)} is not in local.domains")
    return f"{local}{at}{domain}"
