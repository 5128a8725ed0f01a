"""SPF evaluation: RFC 7208 check_host() over our async Resolver.

Owns ``check_host`` (is this client IP allowed to send mail for this domain?),
``check_helo`` (the same for the HELO identity, RFC 7208 §2.3) and ``SpfResult``.
Record syntax lives in ``spf_record``, macros in ``spf_macro``.

Every DNS query goes through the given ``kittiwake.net.dns.Resolver`` (never the system
resolver). DNS outcomes map as the RFC says: a temporary failure is ``temperror``
(§4.4), a syntax error anywhere in a record, a second record, too many DNS-querying
terms (§4.6.4, default 10, shared across include/redirect) or too many void lookups
(default 2) is ``permerror``.

Security: HIGH. The result feeds accept/reject and DMARC decisions, and every input is
attacker-controlled (client IP aside). Fail-closed rules: errors never become ``pass``;
the lookup limits bound the DNS work any record (or chain of includes/redirects, which
also cannot loop forever) can cause; ``timeout`` bounds wall time (§4.6.4: ≥ 20 s).

Known approximation: ``Resolver.addresses()`` asks A and AAAA together and reports a
temporary failure only when neither has records, so an ``a``/``mx`` check whose own
address family failed temporarily while the other answered counts as "no match".
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass

from kittiwake.net.dns import AddressResult, Resolver, Status, to_ascii
from kittiwake.policy.spf_macro import (
    IPAddress,
    MacroString,
    MacroValues,
    SpfSyntaxError,
    expand,
    expand_domain,
    parse_macro_string,
)
from kittiwake.policy.spf_record import DNS_MECHANISMS, Mechanism, Record, parse_record
from kittiwake.policy.spf_record import select_record as _select

RESULTS = ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror")  # §2.6
MX_HOST_LIMIT = 10  # §4.6.4: address lookups per mx mechanism
PTR_NAME_LIMIT = 10  # §4.6.4: names validated per ptr mechanism / %{p}
DEFAULT_TIMEOUT = 20.0  # §4.6.4: "SHOULD allow at least 20 seconds"


@dataclass(frozen=True, slots=True)
class SpfResult:
    """The outcome of check_host() (RFC 7208 §2.6).

    ``explanation``: the expanded ``exp=`` text, only for ``fail`` (§6.2), else "".
    ``mechanism``: the directive that decided (e.g. ``"-all"``), "" for a default result.
    ``domain``: the domain checked (the identity's domain, not a redirect target).
    ``lookups``: DNS-querying terms evaluated (§4.6.4). ``reason``: why, for logs and
    Received-SPF comments (never remote text other than names).
    """

    result: str
    explanation: str = ""
    mechanism: str = ""
    domain: str = ""
    lookups: int = 0
    reason: str = ""


class _SpfError(Exception):
    def __init__(self, result: str, reason: str) -> None:
        super().__init__(reason)
        self.result = result
        self.reason = reason


@dataclass(frozen=True, slots=True)
class _Outcome:
    result: str
    mechanism: str = ""
    explanation: str = ""
    reason: str = ""


def _client_ip(ip: str) -> IPAddress:
    """The address to check: IPv4-mapped IPv6 is the IPv4 it maps (§5.6, RFC 4291)."""
    address = ipaddress.ip_address(ip.split("%", 1)[0])  # ValueError: caller bug
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _norm_domain(domain: str) -> str | None:
    """Query form of ``domain``, or None if malformed / single-label (§4.3 → none)."""
    try:
        name = to_ascii(domain)
    except ValueError:
        return None
    return name if "." in name else None


class _Evaluation:
    """One top-level check_host() run: the shared counters and the macro context."""

    def __init__(
        self,
        resolver: Resolver,
        ip: IPAddress,
        sender: str,
        helo: str,
        receiver: str,
        lookup_limit: int,
        void_limit: int,
    ) -> None:
        self.resolver = resolver
        self.ip = ip
        self.sender = sender
        self.helo = helo
        self.receiver = receiver
        self.lookup_limit = lookup_limit
        self.void_limit = void_limit
        self.lookups = 0
        self.voids = 0
        self._ptr_names: list[str] | None = None

    # -- limits (§4.6.4) ---------------------------------------------------------------

    def count(self, what: str) -> None:
        self.lookups += 1
        if self.lookups > self.lookup_limit:
            raise _SpfError("permerror", f"more than {self.lookup_limit} DNS lookups ({what})")

    def void(self, name: str) -> None:
        self.voids += 1
        if self.voids > self.void_limit:
            raise _SpfError("permerror", f"more than {self.void_limit} void lookups ({name})")

    # -- helpers -----------------------------------------------------------------------

    def values(self, domain: str) -> MacroValues:
        return MacroValues(self.ip, self.sender, domain, self.helo, self.receiver)

    async def target(self, spec: MacroString | None, domain: str) -> str:
        if spec is None:
            return domain
        return await expand_domain(spec, self.values(domain), self.ptr_name_for(domain))

    def ptr_name_for(self, domain: str) -> _PtrName:
        return _PtrName(self, domain)

    async def addresses(self, host: str) -> AddressResult:
        return await self.resolver.addresses(host)

    def in_net(self, addresses: AddressResult, cidr4: int, cidr6: int) -> bool:
        ips = addresses.ipv4 if self.ip.version == 4 else addresses.ipv6
        bits = cidr4 if self.ip.version == 4 else cidr6
        return any(self.ip in ipaddress.ip_network(f"{ip}/{bits}", strict=False) for ip in ips)

    async def validated_names(self) -> list[str]:
        """PTR names of the client that resolve back to it (§5.5); [] on any PTR error."""
        if self._ptr_names is not None:
            return self._ptr_names
        ptr = await self.resolver.ptr(str(self.ip))
        if ptr.kind in (Status.NXDOMAIN, Status.NODATA):
            self.void(f"PTR {self.ip}")
        names = list(ptr.names[:PTR_NAME_LIMIT]) if ptr.kind == Status.OK else []
        found = await asyncio.gather(*(self.addresses(name) for name in names))
        self._ptr_names = [
            name for name, res in zip(names, found, strict=True) if self.in_net(res, 32, 128)
        ]
        return self._ptr_names

    # -- evaluation (§4) ---------------------------------------------------------------

    async def check(self, domain: str) -> _Outcome:
        name = _norm_domain(domain)
        if name is None:
            return _Outcome("none", reason=f"{domain!r} is not a domain name")
        txt = await self.resolver.txt(name)
        if txt.kind == Status.TEMPFAIL:
            raise _SpfError("temperror", txt.error or f"TXT lookup of {name} failed")
        try:
            text = _select(txt.texts) if txt.kind == Status.OK else None
            if text is None:
                return _Outcome("none", reason=f"no SPF record at {name}")
            record = parse_record(text)
        except SpfSyntaxError as exc:
            raise _SpfError("permerror", f"{name}: {exc}") from None
        return await self.evaluate(record, name)

    async def evaluate(self, record: Record, domain: str) -> _Outcome:
        for mechanism in record.mechanisms:
            if await self.matches(mechanism, domain):
                explanation = ""
                if mechanism.result == "fail" and record.exp is not None:
                    explanation = await self.explain(record.exp, domain)
                return _Outcome(
                    mechanism.result, mechanism.text, explanation, f"{domain}: {mechanism.text}"
                )
        if record.redirect is not None:  # §6.1
            self.count("redirect")
            target = await self.target(record.redirect, domain)
            outcome = await self.check(target)
            if outcome.result == "none":
                raise _SpfError("permerror", f"redirect to {target}: {outcome.reason}")
            return outcome
        return _Outcome("neutral", reason=f"{domain}: no mechanism matched")  # §4.7

    async def matches(self, mech: Mechanism, domain: str) -> bool:
        if mech.name in DNS_MECHANISMS:
            self.count(mech.text)
        if mech.name == "all":
            return True
        if mech.name in ("ip4", "ip6"):
            return mech.network is not None and self.ip in mech.network
        target = await self.target(mech.domain, domain)
        if mech.name == "include":  # §5.2
            outcome = await self.check(target)
            if outcome.result == "none":
                raise _SpfError("permerror", f"include:{target}: {outcome.reason}")
            return outcome.result == "pass"
        if mech.name == "a":  # §5.3
            found = await self.addresses(target)
            self.checked(found, target)
            return self.in_net(found, mech.cidr4, mech.cidr6)
        if mech.name == "mx":  # §5.4
            return await self.match_mx(mech, target)
        if mech.name == "ptr":  # §5.5
            return any(
                n == target or n.endswith("." + target) for n in await self.validated_names()
            )
        found = await self.addresses(target)  # "exists", §5.7: any A record
        self.checked(found, target)
        return bool(found.ipv4)

    def checked(self, found: AddressResult, target: str) -> None:
        """temperror on a DNS failure; count a void lookup when nothing came back."""
        if found.kind == Status.TEMPFAIL:
            raise _SpfError("temperror", found.error or f"lookup of {target} failed")
        if found.kind != Status.OK:
            self.void(target)

    async def match_mx(self, mech: Mechanism, target: str) -> bool:
        mx = await self.resolver.mx(target)
        if mx.kind == Status.TEMPFAIL:
            raise _SpfError("temperror", mx.error or f"MX lookup of {target} failed")
        if mx.kind != Status.OK:
            self.void(target)
            return False
        if len(mx.records) > MX_HOST_LIMIT:
            raise _SpfError("permerror", f"{target} has more than {MX_HOST_LIMIT} MX records")
        hosts = [host for _, host in mx.records if host != "."]  # "." = null MX
        found = await asyncio.gather(*(self.addresses(host) for host in hosts))
        if any(self.in_net(res, mech.cidr4, mech.cidr6) for res in found):
            return True
        if any(res.kind == Status.TEMPFAIL for res in found):
            raise _SpfError("temperror", f"address lookup of an MX host of {target} failed")
        return False

    async def explain(self, spec: MacroString, domain: str) -> str:
        """The ``exp=`` explanation (§6.2); "" whenever anything about it goes wrong."""
        try:
            name = await self.target(spec, domain)
            txt = await self.resolver.txt(name)
            if txt.kind != Status.OK or len(txt.texts) != 1:
                return ""
            tokens = parse_macro_string(txt.texts[0], explain=True)
            return await expand(tokens, self.values(domain), self.ptr_name_for(domain))
        except (_SpfError, SpfSyntaxError):
            return ""


class _PtrName:
    """``%{p}`` for one <domain>: the validated client name to show (§7.3)."""

    def __init__(self, evaluation: _Evaluation, domain: str) -> None:
        self._evaluation = evaluation
        self._domain = domain

    async def __call__(self) -> str:
        try:
            names = await self._evaluation.validated_names()
        except _SpfError:
            return "unknown"
        domain = self._domain
        for name in names:
            if name == domain:
                return name
        for name in names:
            if name.endswith("." + domain):
                return name
        return names[0] if names else "unknown"


async def check_host(
    ip: str,
    domain: str,
    sender: str,
    *,
    resolver: Resolver,
    helo: str = "",
    receiver: str = "",
    lookup_limit: int = 10,
    void_limit: int = 2,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> SpfResult:
    """RFC 7208 §4 check_host(): may ``ip`` send mail for ``domain`` as ``sender``?

    ``sender`` is the MAIL FROM address (or ``postmaster@helo``); a missing local-part
    becomes "postmaster" (§4.3). ``helo`` and ``receiver`` feed the ``%{h}`` / ``%{r}``
    macros. Never raises for anything DNS or record related; raises ValueError if ``ip``
    is not an IP address (a caller bug). ``timeout`` (seconds) → temperror.
    """
    address = _client_ip(ip)
    local, at, sender_domain = sender.rpartition("@")
    if not at:
        local, sender_domain = "", sender
    full_sender = f"{local or 'postmaster'}@{sender_domain or domain}"
    shown = _norm_domain(domain) or domain.lower()
    evaluation = _Evaluation(
        resolver, address, full_sender, helo, receiver, lookup_limit, void_limit
    )
    try:
        async with asyncio.timeout(timeout):
            outcome = await evaluation.check(domain)
    except _SpfError as exc:
        return SpfResult(exc.result, domain=shown, lookups=evaluation.lookups, reason=exc.reason)
    except TimeoutError:
        return SpfResult(
            "temperror", domain=shown, lookups=evaluation.lookups, reason="SPF check timed out"
        )
    return SpfResult(
        outcome.result,
        outcome.explanation,
        outcome.mechanism,
        shown,
        evaluation.lookups,
        outcome.reason,
    )


async def check_helo(
    ip: str,
    helo: str,
    resolver: Resolver,
    *,
    receiver: str = "",
    lookup_limit: int = 10,
    void_limit: int = 2,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> SpfResult:
    """SPF for the HELO identity (RFC 7208 §2.3): sender ``postmaster@helo``.

    An address literal or a single-label name cannot have SPF: "none" without any lookup.
    """
    if helo.startswith("[") or _norm_domain(helo) is None:
        return SpfResult("none", domain=helo.lower(), reason="HELO is not a domain name")
    return await check_host(
        ip,
        helo,
        f"postmaster@{helo}",
        resolver=resolver,
        helo=helo,
        receiver=receiver,
        lookup_limit=lookup_limit,
        void_limit=void_limit,
        timeout=timeout,
    )


__all__ = ["RESULTS", "SpfResult", "check_helo", "check_host"]
