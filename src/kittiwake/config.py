"""The configuration: frozen values and the TOML loader that builds them.

Owns ``Config`` and its sections, ``load_config`` and the rules tying values together
(``config_check`` reads single values). Any problem raises ``ConfigError(key, problem)``
naming the dotted TOML key: unknown keys and wrong types are errors (a typo must never be
silently ignored). Paths in a file resolve against the file's directory; every path in a
``Config`` is absolute.

No DNS here: the default hostname is ``socket.gethostname()`` (a syscall) and listener
hosts must be IP literals or ``localhost``. Moderately security sensitive: it decides
which addresses we listen on and which local parts are mailboxes. The server's own
sections (``[listen]``, ``[tls]``, ``[limits]``, ``[timeouts]``, ``[smtp]``, ``[local]``)
live in ``config_server``. The MTA sections
(``[relay]``, ``[transport]``, ``[dns]``, ``[queue]``, ``[etrn]``) live in ``config_mta``.
The addressing sections (``[virtual]``, ``[aliases]``, ``[addressing]``, ``[srs]``) live in
``config_addressing``.
"""

from __future__ import annotations

import importlib.util
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal, cast

from kittiwake.config_addressing import FREE_TABLES as ADDRESSING_FREE_TABLES
from kittiwake.config_addressing import SECTION_KEYS as ADDRESSING_SECTION_KEYS
from kittiwake.config_addressing import AddressingConfig, build_addressing
from kittiwake.config_auth import SECTION_KEYS as AUTH_SECTION_KEYS
from kittiwake.config_auth import AuthConfig, build_auth
from kittiwake.config_check import Table, domain_name, is_domain
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
from kittiwake.config_server import (
    DEFAULT_LISTENERS,
    LimitsConfig,
    ListenerConfig,
    LocalConfig,
    Role,
    SmtpConfig,
    TimeoutsConfig,
    TLSConfig,
    build_limits,
    build_listeners,
    build_local,
    build_smtp,
    build_timeouts,
    build_tls,
)
from kittiwake.config_server import SECTION_KEYS as SERVER_SECTION_KEYS
from kittiwake.errors import ConfigError
from kittiwake.policy.dkim_sign import DkimKey
from kittiwake.proto.events import ProtoConfig

LogLevel = Literal["debug", "info", "warning", "error"]
EventLoop = Literal["auto", "uvloop", "asyncio"]

LOG_LEVELS: tuple[LogLevel, ...] = ("debug", "info", "warning", "error")
EVENT_LOOPS: tuple[EventLoop, ...] = ("auto", "uvloop", "asyncio")


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
    *("listen", "tls", "limits", "timeouts", "smtp", "local"),  # config_server
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
    local = build_local(sections["local"])
    listeners = build_listeners(sections["listen"])
    relay = build_relay(sections["relay"], base_dir)
    return Config(
        hostname=hostname,
        data_dir=top.path("data_dir", base_dir) or Path.cwd() / "kittiwake-data",
        log_level=cast(LogLevel, top.choice("log_level", LOG_LEVELS, "info")),
        event_loop=_event_loop(top),
        listeners=listeners,
        tls=build_tls(sections["tls"], base_dir),
        limits=build_limits(sections["limits"]),
        timeouts=build_timeouts(sections["timeouts"]),
        smtp=build_smtp(sections["smtp"]),
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
    **SERVER_SECTION_KEYS,
    **MTA_SECTION_KEYS,
    **EDGES_SECTION_KEYS,
    **ADDRESSING_SECTION_KEYS,
    **SUBMISSION_SECTION_KEYS,
    **AUTH_SECTION_KEYS,
    **POLICY_SECTION_KEYS,
    **DKIM_SECTION_KEYS,
}


def _event_loop(top: Table) -> EventLoop:
    loop = cast(EventLoop, top.choice("event_loop", EVENT_LOOPS, "auto"))
    if loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        raise ConfigError("event_loop", 'uvloop is not installed (use "auto" or "asyncio")')
    return loop
