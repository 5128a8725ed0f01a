"""Where each recipient goes: the transport table, local domains, the smart host, DNS.

Owns ``parse_transport`` (the ``[transport]`` table's value syntax, Postfix transport(5)),
``error_reply`` (what an ``error:`` route answers) and ``Router``, which maps a recipient
address to a ``Route`` in Postfix's order: transport table (exact domain, then parent
``.domain`` entries), local domains, smart host, else ``smtp:<domain>`` (MX lookup,
RFC 5321 §5.1). Pure: no I/O, no DNS.

Security: the router decides whether mail leaves the machine; ``relay_domains()`` is what
the policy layer may accept from anyone, so it names exactly the table's domains.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from kittiwake.delivery.api import LOCAL_ROUTE, Route
from kittiwake.delivery.mx import parse_nexthop
from kittiwake.envelope import Reply
from kittiwake.net.dns import to_ascii

TRANSPORTS = ("local", "smtp", "lmtp", "discard", "error")
LMTP_PORT = 24  # RFC 2033 §5 leaves it open; 24 is the IANA "any private mail system" port
DEFAULT_ERROR_TEXT = "delivery to this destination is refused by the transport table"
_ENHANCED = re.compile(r"[45]\.\d{1,3}\.\d{1,3}\Z")  # RFC 3463 §2, failure classes only


def _lmtp_nexthop(text: str) -> str:
    """``host:port``, ``[host]:port``, ``inet:host:port``, ``unix:/path`` → canonical form."""
    if text.startswith("unix:"):
        path = text[5:]
        if not path.startswith("/"):
            raise ValueError(f"lmtp unix socket path must be absolute: {text!r}")
        return f"unix:{path}"
    if text.startswith("inet:"):
        text = text[5:]
    if not text:
        raise ValueError("lmtp needs a next hop: lmtp:host:port or lmtp:unix:/path")
    if text.startswith("["):
        hop = parse_nexthop(text)
    elif text.count(":") > 1:
        raise ValueError(f"write an IPv6 lmtp address in brackets: lmtp:[{text}]")
    else:  # LMTP never looks up MX: "host:port" means "[host]:port"
        host, sep, port_text = text.partition(":")
        hop = parse_nexthop(f"[{host}]:{port_text}" if sep else f"[{host}]")
    port = hop.port or LMTP_PORT
    host = f"[{hop.host}]" if ":" in hop.host else hop.host
    return f"{host}:{port}"


def _error_nexthop(text: str) -> str:
    code, _, message = text.strip().partition(" ")
    if not _ENHANCED.match(code):
        if code and code[0].isdigit():
            raise ValueError(f"bad enhanced status code {code!r} (want 4.x.y or 5.x.y)")
        code, message = "5.0.0", text.strip()
    return f"{code} {message.strip() or DEFAULT_ERROR_TEXT}"


def parse_transport(text: str) -> Route:
    """Parse a transport table value into a Route. Raises ValueError saying what is wrong.

    ``local``, ``discard``, ``smtp:`` (empty: the recipient's domain), ``smtp:domain``,
    ``smtp:domain:port``, ``smtp:[host]``, ``smtp:[host]:port``, ``lmtp:host:port``
    (port defaults to 24), ``lmtp:unix:/path``, ``error:5.1.1 text`` (code and text both
    optional; 5.0.0 and a stock text by default).
    """
    value = text.strip()
    transport, _, nexthop = value.partition(":")
    transport = transport.lower()
    if transport not in TRANSPORTS:
        raise ValueError(f"unknown transport {transport!r} in {text!r}; one of {TRANSPORTS}")
    if transport in ("local", "discard"):
        if nexthop.strip():
            raise ValueError(f"{transport} takes no next hop: {text!r}")
        return Route(transport)
    if transport == "error":
        return Route("error", _error_nexthop(nexthop))
    if transport == "lmtp":
        return Route("lmtp", _lmtp_nexthop(nexthop.strip()))
    if not nexthop.strip():
        return Route("smtp")
    try:
        return Route("smtp", str(parse_nexthop(nexthop)))
    except ValueError as exc:
        raise ValueError(f"bad smtp next hop in {text!r}: {exc}") from None


def error_reply(nexthop: str) -> Reply:
    """The reply an ``error`` route gives: 550 for 5.x.y, 450 for 4.x.y (then deferred)."""
    code, _, message = _error_nexthop(nexthop).partition(" ")
    return Reply(550 if code.startswith("5") else 450, code, message)


def normalize_domain(domain: str) -> str:
    """Lower case A-label form for matching; address literals canonicalised; else as is."""
    text = domain.strip().lower().rstrip(".")
    try:
        return str(parse_nexthop(text)) if text.startswith("[") else to_ascii(text)
    except ValueError:
        return text


ROUTE_CACHE_SIZE = 10_000  # domains; routing runs for every recipient of every attempt


class Router:
    """``router.route("user@example.com") -> Route``; also callable like that.

    ``transport_table`` keys are domains (exact) or ``.domain`` (every subdomain of it);
    values are transport strings (see ``parse_transport``) or Routes. ``smarthost`` is
    ``[host]:port``, ``[host]``, ``host`` or ``host:port`` (``host`` means MX lookup).
    """

    def __init__(
        self,
        transport_table: Mapping[str, str | Route],
        local_domains: Iterable[str],
        *,
        smarthost: str | None = None,
    ) -> None:
        self._table: dict[str, Route] = {}
        for key, value in transport_table.items():
            name = key.strip()
            sub = name.startswith(".")
            try:
                domain = to_ascii(name[1:] if sub else name)
                route = value if isinstance(value, Route) else parse_transport(value)
            except ValueError as exc:
                raise ValueError(f"transport table entry {key!r}: {exc}") from None
            if route.transport not in TRANSPORTS:
                raise ValueError(f"transport table entry {key!r}: unknown {route.transport!r}")
            self._table[("." if sub else "") + domain] = route
        self._local = {normalize_domain(d) for d in local_domains}
        self._smarthost: Route | None = None
        self._cache: dict[str, Route] = {}  # raw domain → its route
        if smarthost:
            text = smarthost.strip()
            route = parse_transport(text if text.lower().startswith("smtp:") else "smtp:" + text)
            if not route.nexthop:
                raise ValueError(f"bad smarthost {smarthost!r}")
            self._smarthost = route

    def _from_table(self, domain: str) -> Route | None:
        route = self._table.get(domain)
        labels = domain.split(".")
        for i in range(1, len(labels)):  # nearest parent first: a.b.c → .b.c → .c
            if route is not None:
                break
            route = self._table.get("." + ".".join(labels[i:]))
        if route is not None and route.transport == "smtp" and not route.nexthop:
            return Route("smtp", domain)  # "smtp:" with no next hop: the recipient's domain
        return route

    def route(self, address: str) -> Route:
        _, at, raw_domain = address.rpartition("@")
        if not at or not raw_domain:
            return LOCAL_ROUTE  # "postmaster" and other bare local parts (RFC 5321 §4.5.1)
        cached = self._cache.get(raw_domain)
        if cached is None:
            if len(self._cache) >= ROUTE_CACHE_SIZE:
                self._cache.clear()  # the table is fixed: a crude bound is enough
            cached = self._cache[raw_domain] = self._route_domain(raw_domain)
        return cached

    def _route_domain(self, raw_domain: str) -> Route:
        domain = normalize_domain(raw_domain)
        if not domain.startswith("["):
            route = self._from_table(domain)
            if route is not None:
                return route
        if domain in self._local:
            return LOCAL_ROUTE
        if self._smarthost is not None:
            return self._smarthost
        return Route("smtp", domain)

    __call__ = route

    def relay_domains(self) -> frozenset[str]:
        """The domains the transport table names (``.domain`` entries keep their dot)."""
        return frozenset(self._table)

    def is_relay_domain(self, domain: str) -> bool:
        """True if ``domain`` (or a parent, for ``.domain`` entries) is in the table."""
        return self._from_table(normalize_domain(domain)) is not None
