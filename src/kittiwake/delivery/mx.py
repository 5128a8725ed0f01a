"""From an SMTP next hop to the addresses to try: MX lookup and the rules around it.

Owns ``MxFinder`` (the ``DestinationFinder`` the SMTP agent calls) and ``parse_nexthop``
(the next-hop syntax shared with ``queue.routing``). RFC 5321 §5.1: MX records sorted by
preference, equal preferences shuffled, implicit MX when there is none, never relay to
ourselves; RFC 7505 null MX. Decisions follow Postfix's smtp_addr.c where the RFCs leave
room (documented at each reply below).

Security: this is where a hostile DNS answer decides where mail goes. The loop check is
what keeps an MX record pointing at us from making us relay mail to ourselves forever.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import random
from collections.abc import Iterable, Set
from dataclasses import dataclass

from kittiwake.delivery.api import Destination
from kittiwake.envelope import Reply
from kittiwake.net.dns import AddressResult, Resolver, Status, to_ascii

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Nexthop:
    """A parsed SMTP next hop: ``domain[:port]`` (MX lookup) or ``[host][:port]`` (none)."""

    host: str  # A-label domain or host name, or a canonical IP address (no brackets)
    port: int | None
    mx: bool  # look up MX records (False for [host] and IP addresses)

    @property
    def is_ip(self) -> bool:
        return _ip(self.host) is not None

    def __str__(self) -> str:
        text = self.host if self.mx else f"[{self.host}]"
        return text if self.port is None else f"{text}:{self.port}"


def _ip(text: str) -> IPAddress | None:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # ::ffff:a.b.c.d is the IPv4 host a.b.c.d
    return ip


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"bad port: {text!r}")
    return int(text)


def parse_nexthop(text: str) -> Nexthop:
    """Parse ``domain``, ``domain:port``, ``[host]``, ``[host]:port`` or a bare IP address.

    Inside brackets: a host name, an IPv4 address, or an IPv6 address with or without the
    RFC 5321 §4.1.3 ``IPv6:`` tag. Raises ValueError with the reason.
    """
    text = text.strip()
    if text.startswith("["):
        inner, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"bad next hop: {text!r}")
        port = _port(rest[1:]) if rest else None
        if inner[:5].lower() == "ipv6:":
            ip = _ip(inner[5:])
            if not isinstance(ip, ipaddress.IPv6Address):
                raise ValueError(f"bad IPv6 address literal: {text!r}")
            return Nexthop(str(ip), port, mx=False)
        ip = _ip(inner)
        return Nexthop(str(ip) if ip else to_ascii(inner), port, mx=False)
    ip = _ip(text)
    if ip is not None:
        return Nexthop(str(ip), None, mx=False)
    name, sep, port_text = text.partition(":")
    return Nexthop(to_ascii(name), _port(port_text) if sep else None, mx=True)


def _tempfail(text: str) -> Reply:
    return Reply(451, "4.4.3", text)


class MxFinder:
    """``DestinationFinder`` over DNS: ``await finder("example.com")``.

    Loop detection (RFC 5321 §5.1): an MX host is "us" if its name is in ``own_names``,
    or one of its addresses is in ``own_addresses`` (any port: the addresses we receive
    mail on, like Postfix's inet_interfaces + proxy_interfaces), or ``(ip, port)`` is in
    ``own_endpoints`` (our listening sockets; ``0.0.0.0`` / ``::`` there match loopback
    and ``own_addresses`` on that port). ``[host]:port`` routes are checked against
    ``own_endpoints`` only: a content filter on our own host, other port, is legitimate.
    ``rng`` orders equal-preference MX hosts (inject a seeded one in tests).
    """

    def __init__(
        self,
        resolver: Resolver,
        own_addresses: Set[str] = frozenset(),
        own_names: Set[str] = frozenset(),
        *,
        own_endpoints: Iterable[tuple[str, int]] = (),
        default_port: int = 25,
        prefer_ipv4: bool = True,
        max_hosts: int = 20,
        rng: random.Random | None = None,
    ) -> None:
        self._resolver = resolver
        self._own_ips = {ip for ip in map(_ip, own_addresses) if ip is not None}
        self._own_names = {n.lower().rstrip(".") for n in own_names}
        self._own_endpoints: set[tuple[IPAddress, int]] = set()
        self._wild_ports: set[tuple[int, int]] = set()  # (IP version, port) of 0.0.0.0 / ::
        for host, port in own_endpoints:
            ip = _ip(host)
            if ip is None:
                raise ValueError(f"own endpoint must be an IP address: {host!r}")
            if ip.is_unspecified:
                self._wild_ports.add((ip.version, port))
            else:
                self._own_endpoints.add((ip, port))
        self._default_port = default_port
        self._prefer_ipv4 = prefer_ipv4
        self._max_hosts = max_hosts
        self._rng = rng or random.Random()

    # -- is it us? ------------------------------------------------------------------

    def _is_own_endpoint(self, ip_text: str, port: int) -> bool:
        ip = _ip(ip_text)
        if ip is None:
            return False
        if (ip, port) in self._own_endpoints:
            return True
        return (ip.version, port) in self._wild_ports and (ip.is_loopback or ip in self._own_ips)

    def _is_self(self, host: str, ips: Iterable[str], port: int) -> bool:
        if host in self._own_names:
            return True
        return any(_ip(ip) in self._own_ips or self._is_own_endpoint(ip, port) for ip in ips)

    # -- ordering -------------------------------------------------------------------

    def _ordered_ips(self, result: AddressResult) -> tuple[str, ...]:
        return result.ipv4 + result.ipv6 if self._prefer_ipv4 else result.ipv6 + result.ipv4

    def _sorted(self, records: Iterable[tuple[int, str]]) -> list[tuple[int, str]]:
        """By preference; hosts of equal preference in random order (RFC 5321 §5.1)."""
        out: list[tuple[int, str]] = []
        for _, group in itertools.groupby(sorted(records), key=lambda r: r[0]):
            same = list(group)
            self._rng.shuffle(same)
            out.extend(same)
        return out

    # -- the finder -----------------------------------------------------------------

    async def __call__(self, nexthop: str) -> list[Destination] | Reply:
        try:
            hop = parse_nexthop(nexthop)
        except ValueError as exc:
            return Reply(550, "5.1.2", f"bad destination {nexthop!r}: {exc}")
        port = hop.port or self._default_port
        if not hop.mx:
            return await self._literal(hop, port)
        mx = await self._resolver.mx(hop.host)
        if mx.kind is Status.TEMPFAIL:
            return _tempfail(f"MX lookup for {hop.host} failed: {mx.error}")
        if mx.kind is Status.NXDOMAIN:
            return Reply(550, "5.1.2", f"Host or domain name not found: {hop.host} (NXDOMAIN)")
        if mx.kind is Status.NODATA:  # RFC 5321 §5.1: implicit MX, preference 0
            return await self._from_mx(hop.host, [(0, hop.host)], port, implicit=True)
        real = [(pref, host) for pref, host in mx.records if host != "."]
        if not real:  # RFC 7505 §3-4: "0 ." means this domain takes no mail at all
            return Reply(556, "5.1.10", f"Domain {hop.host} does not accept mail (null MX)")
        # A "." among real MX breaks RFC 7505 §3; like Postfix, use the real ones.
        return await self._from_mx(hop.host, real, port, implicit=False)

    async def _literal(self, hop: Nexthop, port: int) -> list[Destination] | Reply:
        """``[host]:port``: no MX lookup (RFC 5321 §5.1 does not apply), only A/AAAA."""
        result = await self._resolver.addresses(hop.host)
        if result.kind is Status.TEMPFAIL:
            return _tempfail(f"Host name lookup for {hop.host} failed: {result.error}")
        if result.kind is not Status.OK:  # Postfix: 5.4.4 "Host or domain name not found"
            return Reply(550, "5.4.4", f"Host or domain name not found: {hop.host}")
        found = [
            Destination(hop.host, ip, port, 0)
            for ip in self._ordered_ips(result)
            if not self._is_own_endpoint(ip, port)
        ]
        return found or Reply(554, "5.4.6", f"mail for {hop} loops back to myself")

    async def _from_mx(
        self, domain: str, records: list[tuple[int, str]], port: int, *, implicit: bool
    ) -> list[Destination] | Reply:
        ordered = self._sorted(records)[: self._max_hosts]
        hosts = list(dict.fromkeys(host for _, host in ordered))
        looked_up = await asyncio.gather(*(self._mx_host_addresses(h) for h in hosts))
        addresses = dict(zip(hosts, looked_up, strict=True))

        # RFC 5321 §5.1: drop our own preference level and every worse one.
        self_pref: int | None = None
        for pref, host in ordered:
            if self._is_self(host, addresses[host].ips, port):
                self_pref = pref
                break
        kept = [(p, h) for p, h in ordered if self_pref is None or p < self_pref]

        found: list[Destination] = []
        seen: set[str] = set()
        for pref, host in kept:
            for ip in self._ordered_ips(addresses[host]):
                if ip not in seen:
                    seen.add(ip)
                    found.append(Destination(host, ip, port, pref))
        if found:
            return found
        if self_pref is not None:
            if any(p < self_pref for p, _ in ordered):
                # A better MX exists but does not resolve: it may be the real relay
                # (Postfix: 4.4.4 "unable to find primary relay").
                return Reply(451, "4.4.4", f"unable to find primary relay for {domain}")
            return Reply(554, "5.4.6", f"mail for {domain} loops back to myself")
        failed = [addresses[h] for h in hosts]
        for result in failed:
            if result.kind is Status.TEMPFAIL:
                return _tempfail(f"Host name lookup for {domain} failed: {result.error}")
        if implicit and failed[0].kind is Status.NXDOMAIN:
            return Reply(550, "5.1.2", f"Host or domain name not found: {domain} (NXDOMAIN)")
        # RFC 5321 §5.1: "none of them are usable" is an error. Postfix: 5.4.4.
        what = "has no MX and no address records" if implicit else "has no usable MX host"
        return Reply(550, "5.4.4", f"Host or domain name not found: {domain} {what}")

    async def _mx_host_addresses(self, host: str) -> AddressResult:
        # RFC 5321 §5.1: the MX data field MUST be a domain name, not an address.
        if _ip(host) is not None:
            return AddressResult(Status.NODATA, error=f"MX host {host} is an IP address")
        return await self._resolver.addresses(host)
