"""The configuration: frozen values and the TOML loader that builds them.

Owns ``Config`` and its sections, ``load_config`` and the rules tying values together
(``config_check`` reads single values). Any problem raises ``ConfigError(key, problem)``
naming the dotted TOML key: unknown keys and wrong types are errors (a typo must never be
silently ignored). Paths in a file resolve against the file's directory; every path in a
``Config`` is absolute.

No DNS here: the default hostname is ``socket.gethostname()`` (a syscall) and listener
hosts must be IP literals or ``localhost``. Moderately security sensitive: it decides
which addresses we listen on and which local parts are mailboxes. The MTA sections
(``[relay]``, ``[transport]``, ``[dns]``, ``[queue]``, ``[etrn]``) live in ``config_mta``.
The addressing sections (``[virtual]``, ``[aliases]``, ``[addressing]``, ``[srs]``) live in
``config_addressing``.
"""

from __future__ import annotations

import importlib.util
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Literal, cast

from kittiwake.config_addressing import FREE_TABLES as ADDRESSING_FREE_TABLES
from kittiwake.config_addressing import SECTION_KEYS as ADDRESSING_SECTION_KEYS
from kittiwake.config_addressing import AddressingConfig, build_addressing
from kittiwake.config_auth import SECTION_KEYS as AUTH_SECTION_KEYS
from kittiwake.config_auth import AuthConfig, build_auth
from kittiwake.config_check import (
    Table,
    domain_name,
    is_domain,
    is_local_part,
    listen_address,
    show,
)
from kittiwake.config_dkim import SECTION_KEYS as DKIM_SECTION_KEYS
from kittiwake.config_dkim import build_dkim
from kittiwake.config_edges import SECTION_KEYS as EDGES_SECTION_KEYS
from kittiwake.config_edges import ProxyConfig, RateLimitConfig, build_proxy, build_ratelimit
from kittiwake.config_mta import SECTION_KEYS as MTA_SECTION_KEYS
from kittiwake.config_mta import (
    DnsConfig,
    EtrnConfig,
    QueueConfig,
    RelayConfig,
    build_dns,
    build_etrn,
    build_queue,
    build_relay,
    build_transport,
)
from kittiwake.config_policy import SECTION_KEYS as POLICY_SECTION_KEYS
from kittiwake.config_policy import PolicyConfig, build_policy
from kittiwake.config_sendmail import SECTION_KEYS as SUBMISSION_SECTION_KEYS
from kittiwake.config_sendmail import SubmissionConfig, build_submission
from kittiwake.errors import ConfigError
from kittiwake.policy.dkim_sign import DkimKey
from kittiwake.proto.events import BareLinefeedPolicy, ProtoConfig

Role = Literal["mx", "submission", "smtps", "lmtp"]
LogLevel = Literal["debug", "info", "warning", "error"]
EventLoop = Literal["auto", "uvloop", "asyncio"]

ROLES: tuple[Role, ...] = ("mx", "submission", "smtps", "lmtp")
LOG_LEVELS: tuple[LogLevel, ...] = ("debug", "info", "warning", "error")
EVENT_LOOPS: tuple[EventLoop, ...] = ("auto", "uvloop", "asyncio")
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


def default_hostname() -> str:
    """``socket.gethostname()`` — a syscall, never DNS (no getfqdn); ``localhost`` if odd."""
    name = socket.gethostname().lower()
    return name if is_domain(name) else "localhost"


@dataclass(frozen=True, slots=True)
class Config:
    hostname: str = field(default_factory=default_hostname)
    data_dir: Path = field(default_factory=lambda: Path.cwd() / "kittiwake-data")
    log_level: LogLevel = "info"
    event_loop: EventLoop = "auto"
    listeners: tuple[ListenerConfig, ...] = DEFAULT_LISTENERS
    tls: TLSConfig = field(default_factory=TLSConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    timeouts: TimeoutsConfig = field(default_factory=TimeoutsConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    local: LocalConfig = field(default_factory=LocalConfig)
    relay: RelayConfig = field(default_factory=RelayConfig)
    transport: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    dns: DnsConfig = field(default_factory=DnsConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    etrn: EtrnConfig = field(default_factory=EtrnConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)  # config_edges
    ratelimit: RateLimitConfig = field(default_factory=RateLimitConfig)  # config_edges
    addressing: AddressingConfig = field(default_factory=AddressingConfig)  # config_addressing
    submission: SubmissionConfig = field(default_factory=SubmissionConfig)  # config_sendmail
    auth: AuthConfig = field(default_factory=AuthConfig)  # config_auth
    policy: PolicyConfig = field(default_factory=PolicyConfig)  # config_policy
    dkim_keys: tuple[DkimKey, ...] = ()  # config_dkim: [[dkim.keys]]

    def listener(self, role: Role) -> ListenerConfig | None:
        return next((lc for lc in self.listeners if lc.role == role), None)

    def proto_config(
        self,
        *,
        starttls_available: bool,
        auth_mechanisms: tuple[str, ...] = (),
        lmtp: bool = False,
        etrn: bool = False,
    ) -> ProtoConfig:
        """The sans-I/O core's settings for one listener (the runtime decides TLS/AUTH)."""
        return ProtoConfig(
            hostname=self.hostname,
            max_message_size=self.limits.max_message_size,
            max_recipients=self.limits.max_recipients,
            max_commands=self.limits.max_commands,
            max_bad_commands=self.limits.max_bad_commands,
            bare_linefeed=self.smtp.bare_linefeed,
            starttls_available=starttls_available,
            auth_mechanisms=auth_mechanisms,
            vrfy_enabled=self.smtp.vrfy,
            expn_enabled=self.smtp.expn,
            lmtp=lmtp,
            etrn_enabled=etrn,
            greeting_text=self.smtp.banner,
        )

    def listener_proto(
        self,
        listener: ListenerConfig,
        *,
        tls_available: bool,
        auth_mechanisms: tuple[str, ...] = (),
    ) -> ProtoConfig:
        """The core's settings for ``listener``: LMTP (RFC 2033) without STARTTLS or AUTH;
        STARTTLS offered unless the listener is implicit TLS; ETRN (RFC 1985) on ``mx`` only,
        and only when ``etrn.allowed`` names someone."""
        if listener.lmtp:
            return self.proto_config(starttls_available=False, lmtp=True)
        return self.proto_config(
            starttls_available=tls_available and not listener.implicit_tls,
            auth_mechanisms=auth_mechanisms,
            etrn=listener.role == "mx" and self.etrn.enabled,
        )


# ------------------------------------------------------------------------------ the loader

_TOP_KEYS = ("hostname", "data_dir", "log_level", "event_loop")
_SECTIONS = (
    *("listen", "tls", "limits", "timeouts", "smtp", "local"),
    *("relay", "dns", "queue", "etrn"),  # config_mta
    *("proxy", "ratelimit"),  # config_edges
    *("virtual", "addressing", "srs"),  # config_addressing
    "submission",  # config_sendmail
    "auth",  # config_auth
    "policy",  # config_policy
    "dkim",  # config_dkim
)
_FREE_TABLES = ("transport", *ADDRESSING_FREE_TABLES)  # keyed by names, checked by builders


def load_config(path: Path | None) -> Config:
    """Read and validate a TOML file; ``None`` gives the built-in defaults (no file read)."""
    if path is None:
        return Config()
    try:
        with path.open("rb") as f:
            raw = tomllib.load(f)
    except OSError as e:
        raise ConfigError("", f"cannot read {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("", f"invalid TOML: {e}") from None  # the message has the line
    except UnicodeDecodeError as e:
        raise ConfigError("", f"not UTF-8 text (byte {e.start})") from None
    return build_config(raw, base_dir=path.resolve().parent)


def build_config(raw: dict[str, object], base_dir: Path) -> Config:
    """Validate an already parsed TOML document; relative paths resolve against base_dir."""
    top = Table(raw, "", _TOP_KEYS + _SECTIONS + _FREE_TABLES)
    sections = {name: Table(top.get(name, {}), name, _SECTION_KEYS[name]) for name in _SECTIONS}
    given = top.get("hostname")
    hostname = default_hostname() if given is None else domain_name("hostname", given)
    local = _local(sections["local"])
    listeners = _listeners(sections["listen"])
    relay = build_relay(sections["relay"], base_dir)
    return Config(
        hostname=hostname,
        data_dir=top.path("data_dir", base_dir) or Path.cwd() / "kittiwake-data",
        log_level=cast(LogLevel, top.choice("log_level", LOG_LEVELS, "info")),
        event_loop=_event_loop(top),
        listeners=listeners,
        tls=_tls(sections["tls"], base_dir),
        limits=_limits(sections["limits"]),
        timeouts=_timeouts(sections["timeouts"]),
        smtp=_smtp(sections["smtp"]),
        local=local,
        relay=relay,
        transport=build_transport(top.get("transport", {}), local.domains),
        dns=build_dns(sections["dns"]),
        queue=build_queue(sections["queue"]),
        etrn=build_etrn(sections["etrn"]),
        proxy=build_proxy(sections["proxy"], tuple(lc.role for lc in listeners)),
        ratelimit=build_ratelimit(sections["ratelimit"], relay.mynetworks),
        addressing=build_addressing(sections, top.get("aliases", {}), local.domains),
        submission=build_submission(sections["submission"], local.domains),
        auth=build_auth(sections["auth"]),
        policy=build_policy(sections["policy"]),
        dkim_keys=build_dkim(sections["dkim"], base_dir),
    )


_SECTION_KEYS: dict[str, tuple[str, ...]] = {
    "listen": ROLES,
    "tls": ("cert", "key"),
    "limits": tuple(f.name for f in fields(LimitsConfig)),
    "timeouts": tuple(f.name for f in fields(TimeoutsConfig)),
    "smtp": tuple(f.name for f in fields(SmtpConfig)),
    "local": tuple(f.name for f in fields(LocalConfig)),
    **MTA_SECTION_KEYS,
    **EDGES_SECTION_KEYS,
    **ADDRESSING_SECTION_KEYS,
    **SUBMISSION_SECTION_KEYS,
    **AUTH_SECTION_KEYS,
    **POLICY_SECTION_KEYS,
    **DKIM_SECTION_KEYS,
}
_DEFAULT_ADDRESS: dict[Role, str] = {lc.role: str(lc) for lc in DEFAULT_LISTENERS}


def _event_loop(top: Table) -> EventLoop:
    loop = cast(EventLoop, top.choice("event_loop", EVENT_LOOPS, "auto"))
    if loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        raise ConfigError("event_loop", 'uvloop is not installed (use "auto" or "asyncio")')
    return loop


def _listeners(table: Table) -> tuple[ListenerConfig, ...]:
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


def _tls(table: Table, base_dir: Path) -> TLSConfig:
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


def _limits(t: Table) -> LimitsConfig:
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


def _timeouts(t: Table) -> TimeoutsConfig:
    d = TimeoutsConfig()
    return TimeoutsConfig(
        command=t.seconds("command", d.command),
        data=t.seconds("data", d.data),
        shutdown_grace=t.seconds("shutdown_grace", d.shutdown_grace),
    )


def _smtp(t: Table) -> SmtpConfig:
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


def _local(t: Table) -> LocalConfig:
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
