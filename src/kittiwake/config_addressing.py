"""The addressing sections of the configuration (issue 4): virtual domains, aliases,
sub-addressing and SRS.

Owns the frozen values ``AddressingConfig`` and ``SrsConfig`` and ``build_addressing``, which
validates the ``[virtual]``, ``[aliases]``, ``[addressing]`` and ``[srs]`` tables
(``kittiwake.config`` puts the result on ``Config.addressing``). Every problem is a
``ConfigError`` naming the dotted key; alias keys are addresses, written quoted
(``aliases."info@example.org"``) as TOML needs them.

Security sensitive: aliases decide where mail for our addresses goes (an alias to an outside
address makes us forward), and ``srs.secret`` keys the hashes that stop anyone from using
our SRS addresses as an open relay — so a forwarding alias without a secret is an error, and
a secret must be long enough to resist guessing (16 characters or more).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from kittiwake.config_check import Table, domain_name, is_local_part, show
from kittiwake.errors import ConfigError

SECTION_KEYS: dict[str, tuple[str, ...]] = {
    "virtual": ("domains", "mailboxes"),
    "addressing": ("recipient_delimiter",),
    "srs": ("secret", "old_secrets", "domain", "max_age_days"),
}
FREE_TABLES = ("aliases",)  # keyed by addresses, checked by build_addressing

DELIMITER_CHARS = "+-_=#~&"  # never "%", "!", "@" (routing) nor "." (first.last names)
MIN_SECRET = 16
MAX_AGE_LIMIT = 1000  # the two-character day stamp wraps after 1024 days (libsrs2)
# RFC 5322 §3.2.3 atext dot-atom, any case, with RFC 6531 UTF-8: a target's local part.
_ATOM = r"[A-Za-z0-9!#$%&'*+=?^_`{|}~\-\u0080-\U0010ffff]+"
_TARGET_LOCAL_RE = re.compile(rf"{_ATOM}(?:\.{_ATOM})*")


@dataclass(frozen=True, slots=True)
class SrsConfig:
    """The Sender Rewriting Scheme key and domain. ``secret`` signs new addresses; it and
    ``old_secrets`` (a key rotation's predecessors) validate returning ones. ``domain`` is
    where SRS addresses live ("" = the first local domain)."""

    secret: str = field(default="", repr=False)  # never in logs or reprs
    old_secrets: tuple[str, ...] = field(default=(), repr=False)
    domain: str = ""
    max_age_days: int = 21  # libsrs2's and postsrsd's default

    @property
    def enabled(self) -> bool:
        return bool(self.secret)

    def domain_or(self, first_local_domain: str) -> str:
        """The SRS domain: ``domain``, or by default the first local domain."""
        return self.domain or first_local_domain


@dataclass(frozen=True, slots=True)
class AddressingConfig:
    """Virtual domains with their mailboxes, the alias table, sub-addressing and SRS.

    ``aliases`` maps a lower-cased ``local@domain`` (or ``@domain``: the catch-all of a
    domain) to its targets, each a full address (a bare local part in the file is qualified
    with the key's domain). ``recipient_delimiter``: any of its characters starts an
    extension (``user+tag``); ``""`` turns sub-addressing off.
    """

    virtual_domains: tuple[str, ...] = ()
    virtual_mailboxes: tuple[str, ...] = ()
    aliases: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    recipient_delimiter: str = "+"
    srs: SrsConfig = field(default_factory=SrsConfig)

    def forwards(self, local_domains: tuple[str, ...]) -> list[tuple[str, str]]:
        """``(alias, target)`` pairs whose target is outside our domains (forwarding)."""
        ours = set(local_domains) | set(self.virtual_domains)
        return [
            (key, target)
            for key, targets in self.aliases.items()
            for target in targets
            if target.rpartition("@")[2] not in ours
        ]


def build_addressing(
    sections: Mapping[str, Table], raw_aliases: object, local_domains: tuple[str, ...]
) -> AddressingConfig:
    """Validate ``[virtual]``, ``[aliases]``, ``[addressing]`` and ``[srs]``; ``sections``
    holds the three fixed tables (``virtual``, ``addressing``, ``srs``)."""
    virtual = sections["virtual"]
    vdomains = tuple(
        dict.fromkeys(
            domain_name(virtual.key("domains"), d) for d in virtual.strings("domains", ())
        )
    )
    for d in vdomains:
        if d in local_domains:
            raise ConfigError(virtual.key("domains"), f"{show(d)} is also in local.domains")
    ours = (*local_domains, *vdomains)
    mailboxes = tuple(dict.fromkeys(_vmailbox(virtual, m, vdomains) for m in _mbx(virtual)))
    aliases = _aliases(raw_aliases, ours)
    config = AddressingConfig(
        virtual_domains=vdomains,
        virtual_mailboxes=mailboxes,
        aliases=aliases,
        recipient_delimiter=_delimiter(sections["addressing"]),
        srs=_srs(sections["srs"], ours),
    )
    forwards = config.forwards(local_domains)
    if forwards and not config.srs.enabled:
        key, target = forwards[0]
        raise ConfigError(
            "srs.secret",
            f'required: aliases."{key}" forwards to {target}, outside our domains '
            f"(mail forwarded there gets an SRS sender, RFC 7208 §1.2.3 / libsrs2); give at "
            f"least {MIN_SECRET} random characters, e.g. the output of `openssl rand -base64 24`",
        )
    return config


def _mbx(t: Table) -> tuple[str, ...]:
    return t.strings("mailboxes", ())


def _vmailbox(t: Table, value: str, vdomains: tuple[str, ...]) -> str:
    local, at, domain = value.lower().rpartition("@")
    if not at or not is_local_part(local) or domain.rstrip(".") not in vdomains:
        raise ConfigError(
            t.key("mailboxes"),
            f"{show(value)} must be local@domain with the domain in virtual.domains "
            "(a plain local part: dot-atom, no / or \\)",
        )
    return f"{local}@{domain.rstrip('.')}"


def _aliases(raw: object, ours: tuple[str, ...]) -> Mapping[str, tuple[str, ...]]:
    if not isinstance(raw, dict):
        raise ConfigError("aliases", f'must be a table of "address" = targets, got {show(raw)}')
    out: dict[str, tuple[str, ...]] = {}
    for name, value in raw.items():
        key = f'aliases."{name}"'
        local, at, dom = name.lower().rpartition("@")
        if not at:
            raise ConfigError(key, 'must be an address "local@domain" or a catch-all "@domain"')
        domain = domain_name(key, dom)
        if domain not in ours:
            raise ConfigError(key, f"{show(domain)} is not in local.domains or virtual.domains")
        if local and not is_local_part(local):
            raise ConfigError(key, "the local part must be a dot-atom (no quotes, / or \\)")
        alias = f"{local}@{domain}"
        if alias in out:
            raise ConfigError(key, "the same address is given twice (keys are case-blind)")
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items) or not items:
            raise ConfigError(
                key, f"must be an address or a non-empty array of addresses, got {show(value)}"
            )
        out[alias] = tuple(dict.fromkeys(_target(key, str(v), domain) for v in items))
    return MappingProxyType(out)


def _target(key: str, value: str, key_domain: str) -> str:
    text = value.strip()
    local, at, dom = text.rpartition("@") if "@" in text else (text, "@", key_domain)
    if not local or not _TARGET_LOCAL_RE.fullmatch(local) or len(local.encode()) > 64:
        raise ConfigError(
            key,
            f"{show(value)} is not an address: want local@domain (a dot-atom local part of at "
            "most 64 octets) or a bare local part in the alias's own domain",
        )
    return f"{local}{at}{domain_name(key, dom)}"


def _delimiter(t: Table) -> str:
    value = t.string("recipient_delimiter", "+")
    if len(value) > len(DELIMITER_CHARS) or any(c not in DELIMITER_CHARS for c in value):
        raise ConfigError(
            t.key("recipient_delimiter"),
            f'must be "" (off) or characters from {show(DELIMITER_CHARS)}, got {show(value)}',
        )
    return "".join(dict.fromkeys(value))


def _srs(t: Table, ours: tuple[str, ...]) -> SrsConfig:
    secret = t.string("secret", "")
    old = t.strings("old_secrets", ())
    for name, values in (("secret", (secret,) if secret else ()), ("old_secrets", old)):
        for v in values:
            if len(v) < MIN_SECRET:
                raise ConfigError(
                    t.key(name), f"must be at least {MIN_SECRET} characters (it keys HMAC-SHA1)"
                )
    if old and not secret:
        raise ConfigError(t.key("old_secrets"), "needs srs.secret (the current key)")
    given = t.get("domain")
    domain = "" if given is None else domain_name(t.key("domain"), given)  # "": ours[0]
    if domain and domain not in ours:
        raise ConfigError(
            t.key("domain"), f"{show(domain)} must be in local.domains or virtual.domains"
        )
    age = t.integer("max_age_days", SrsConfig().max_age_days, 1)
    if age > MAX_AGE_LIMIT:
        raise ConfigError(
            t.key("max_age_days"),
            f"must be at most {MAX_AGE_LIMIT} (the day stamp wraps at 1024), got {age}",
        )
    return SrsConfig(secret=secret, old_secrets=old, domain=domain, max_age_days=age)
