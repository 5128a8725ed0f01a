"""CIDR lists: "is this client address in one of these networks?" (IPv4 and IPv6).

Owns ``Networks`` (an immutable list of ``ipaddress`` networks, parsed from strings such as
``"192.0.2.0/24"``, ``"2001:db8::/32"`` or a bare address) and ``client_address``, which
turns a peer address as the socket reports it into the address to match.

Security: HIGH. ``relay.mynetworks`` and ``etrn.allowed`` decide who may relay and who may
start queue runs, so the rules are strict and fail closed:

* an IPv4-mapped IPv6 peer (``::ffff:192.0.2.1``, what a dual-stack socket reports for an
  IPv4 client) is matched as the IPv4 address it is (RFC 4291 §2.5.5.2), so an IPv4 list
  works on a ``[::]`` listener — and ``::ffff:0:0/96`` in a list is refused, because it would
  silently mean "every IPv4 client";
* a peer address that does not parse (a Unix socket, a zone id we cannot read) matches
  nothing;
* a network written with host bits set (``10.0.0.1/8``) is an error, not a guess.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


@functools.lru_cache(maxsize=4096)
def client_address(text: str) -> IPAddress | None:
    """The address to match for a peer: IPv4-mapped IPv6 unwrapped, zone id dropped.

    ``None`` when ``text`` is not an IP address (then it matches no network). Memoised
    (a bounded LRU: the same peer is asked about several times per message; the
    answers are immutable).
    """
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.partition("%")[0]  # fe80::1%eth0: the scope is not part of the address
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_network(text: str) -> IPNetwork:
    """One CIDR (``"10.0.0.0/8"``, ``"::1/128"``) or bare address; ValueError says why."""
    value = text.strip()
    if not value:
        raise ValueError("empty network")
    if "%" in value:  # a zone id ("fe80::1%eth0") names an interface, not a network
        raise ValueError(f"{value!r} is not an IP network (no %zone ids)")
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError as e:
        if "has host bits set" in str(e):
            loose = ipaddress.ip_network(value, strict=False)
            raise ValueError(f"{value!r} has host bits set (did you mean {loose}?)") from None
        raise ValueError(f"{value!r} is not an IP network (like 192.0.2.0/24)") from None
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_MAPPED):
        raise ValueError(f"{value!r}: write IPv4-mapped networks as IPv4 (e.g. 192.0.2.0/24)")
    return network


@dataclass(frozen=True, slots=True)
class Networks:
    """An ordered, immutable set of networks; ``Networks()`` contains nothing."""

    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, values: Iterable[str]) -> Networks:
        """Parse each value with ``parse_network`` (duplicates dropped, order kept)."""
        return cls(tuple(dict.fromkeys(parse_network(v) for v in values)))

    def __contains__(self, peer: object) -> bool:
        """``"192.0.2.7" in nets``: a peer address string (or ip_address) in any network."""
        if not self.networks:  # nothing is in an empty list: no need to parse the peer
            return False
        if isinstance(peer, str):
            address = client_address(peer)
        elif isinstance(peer, ipaddress.IPv4Address | ipaddress.IPv6Address):
            address = client_address(str(peer))
        else:
            return False
        if address is None:
            return False
        return any(address in net for net in self.networks if net.version == address.version)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __iter__(self) -> Iterator[IPNetwork]:
        return iter(self.networks)

    def __len__(self) -> int:
        return len(self.networks)

    def __str__(self) -> str:
        return ", ".join(str(n) for n in self.networks) or "none"


NOBODY = Networks()
