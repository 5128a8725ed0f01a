"""Outbound TLS policy: how hard the SMTP client insists on STARTTLS, per destination.

Owns ``TlsPolicy`` (the levels), ``TlsPolicyTable`` (a default plus per-domain entries, as
in Postfix's ``smtp_tls_policy_maps``) and the client ``SSLContext`` for each level.

Levels (RFC 3207 for STARTTLS, RFC 7435 for opportunistic security):

* ``NONE`` — never STARTTLS.
* ``OPPORTUNISTIC`` (the default) — STARTTLS when offered, any certificate accepted; if the
  handshake fails the same host is retried in plaintext (Postfix's ``may``).
* ``REQUIRED`` — STARTTLS or nothing, any certificate (Postfix's ``encrypt``); a peer
  without it, or a failed handshake, fails that MX with a 4.7.x and the next is tried.
* ``VERIFY`` — as REQUIRED, and the certificate must chain to a trusted CA and name the MX
  host (Postfix's ``secure`` with ``match = nexthop``-free host matching).

Room for later: MTA-STS (RFC 8461) and DANE (RFC 7672) are VERIFY-like levels with other
name sets or trust anchors, found per destination at delivery time; REQUIRETLS (RFC 8689)
is a per-message demand that raises the level. ``TlsPolicy.verifies``/``mandatory`` are
what the client asks, so a new level only has to say how it answers them.

Security: HIGH — a mistake here sends mail in plaintext, or trusts the wrong server.
"""

from __future__ import annotations

import enum
import ssl
from collections.abc import Iterable, Mapping
from pathlib import Path

from kittiwake.errors import ConfigError
from kittiwake.net.tls import client_context_insecure


class TlsPolicy(enum.Enum):
    NONE = "none"
    OPPORTUNISTIC = "opportunistic"
    REQUIRED = "required"
    VERIFY = "verify"

    @property
    def attempts(self) -> bool:
        """STARTTLS is tried when offered."""
        return self is not TlsPolicy.NONE

    @property
    def mandatory(self) -> bool:
        """No TLS, no delivery."""
        return self in (TlsPolicy.REQUIRED, TlsPolicy.VERIFY)

    @property
    def verifies(self) -> bool:
        """The certificate chain and the host name are checked."""
        return self is TlsPolicy.VERIFY

    @property
    def strength(self) -> int:
        return _STRENGTH[self]

    @classmethod
    def parse(cls, text: str, key: str = "relay.tls_policy") -> TlsPolicy:
        try:
            return cls(text.strip().lower())
        except ValueError:
            names = ", ".join(p.value for p in cls)
            raise ConfigError(key, f"unknown TLS policy {text!r} (one of {names})") from None


_STRENGTH = {
    TlsPolicy.NONE: 0,
    TlsPolicy.OPPORTUNISTIC: 1,
    TlsPolicy.REQUIRED: 2,
    TlsPolicy.VERIFY: 3,
}


def _domain_of(nexthop: str) -> str:
    """``[host]:port`` → ``host``; ``domain`` → ``domain`` (lower case, no trailing dot)."""
    host = nexthop.strip()
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".").lower()


class TlsPolicyTable:
    """The configured levels: ``per_domain`` entries win over ``default``.

    A key ``example.org`` matches that domain only; ``.example.org`` matches its
    subdomains (Postfix's convention). ``lookup`` tries the next hop first (so a smart host
    ``[relay.example]:587`` can have its own entry), then each recipient domain, and keeps
    the strictest match among the recipient domains.
    """

    def __init__(
        self,
        default: TlsPolicy = TlsPolicy.OPPORTUNISTIC,
        per_domain: Mapping[str, TlsPolicy] | None = None,
        ca_file: Path | None = None,
    ) -> None:
        self.default = default
        self.per_domain = {k.strip().rstrip(".").lower(): v for k, v in (per_domain or {}).items()}
        self.ca_file = ca_file
        self._contexts: dict[bool, ssl.SSLContext] = {}

    def _match(self, domain: str) -> TlsPolicy | None:
        domain = domain.rstrip(".").lower()
        found = self.per_domain.get(domain)
        if found is not None:
            return found
        parts = domain.split(".")
        for i in range(1, len(parts)):
            found = self.per_domain.get("." + ".".join(parts[i:]))
            if found is not None:
                return found
        return None

    def lookup(self, nexthop: str, domains: Iterable[str] = ()) -> TlsPolicy:
        """The level for one delivery to ``nexthop`` carrying mail for ``domains``."""
        if self.per_domain:
            found = self._match(_domain_of(nexthop))
            if found is not None:
                return found
            matches = [m for d in domains if (m := self._match(d)) is not None]
            if matches:
                return max(matches, key=lambda p: p.strength)
        return self.default

    def context(self, policy: TlsPolicy) -> ssl.SSLContext:
        """The client context for ``policy`` (made once, then shared)."""
        verify = policy.verifies
        ctx = self._contexts.get(verify)
        if ctx is None:
            ctx = self._verifying_context() if verify else client_context_insecure()
            self._contexts[verify] = ctx
        return ctx

    def _verifying_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED + check_hostname
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.options |= ssl.OP_NO_COMPRESSION
        if self.ca_file is not None:
            ctx.load_verify_locations(cafile=str(self.ca_file))
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
        return ctx
