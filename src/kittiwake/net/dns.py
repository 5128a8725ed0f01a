"""DNS lookups for delivery and policy: MX, A/AAAA, TXT and PTR on configured nameservers.

Owns ``Resolver``, a thin typed layer over dnspython's async stub resolver, the result
values it returns, and ``to_ascii`` (domain names to their A-label query form). It only
ever asks the nameservers it was given; ``/etc/resolv.conf`` is read only with
``use_system=True`` (production with ``[dns] nameservers = []``), never as a fallback.
Every DNS outcome is a value (``ok`` / ``nodata`` / ``nxdomain`` / ``tempfail``), never
an exception, because callers must map each to a different SMTP consequence
(RFC 5321 §5.1: NXDOMAIN is an error, a temporary error queues the message).

Cost: every check of every message asks for names, most of them answered from the cache,
so the per-lookup work is kept small. Name conversion is memoised (bounded LRU; names
already written in ASCII letters, digits, ``-`` and ``_`` skip the IDNA codec and
dnspython's text parser, with the same result). Identical lookups in flight at the same
time are coalesced ("single flight"): the second asker of (name, type) awaits the first
one's outcome instead of sending the same query again (one table entry per distinct
lookup on the wire, removed when it ends, however it ends).

Security: every answer is attacker-controlled text (whoever owns a domain writes its MX
and TXT records); callers treat names and strings as untrusted. Names we query are
validated first (letters, digits, ``-``, ``_`` per label after IDNA), so a crafted
recipient domain cannot smuggle escapes or wildcards into a query.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
import dns.reversename

# IDNA2008 (RFC 5890) needs the third-party ``idna`` package; without it dnspython falls
# back to IDNA2003, which differs only for a handful of code points (e.g. "ß").
_IDNA = dns.name.IDNA_2008_Practical if dns.name.have_idna_2008 else dns.name.IDNA_2003_Practical
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?\Z")
_ATTEMPT_TIMEOUT = 2.0  # one UDP/TCP try; ``timeout`` bounds the whole lookup
NAME_CACHE_SIZE = 4096  # converted names kept (LRU); each at most 253 octets of text
_MAX_NAME = 253  # RFC 1035 §2.3.4: 255 octets on the wire = 253 characters of text


class Status(enum.StrEnum):
    """How a lookup ended. A ``StrEnum``: ``result.kind == "ok"`` works too."""

    OK = "ok"  # records found
    NODATA = "nodata"  # the name exists, no record of this type (RFC 2308 §2.2)
    NXDOMAIN = "nxdomain"  # the name does not exist (or cannot be a domain name at all)
    TEMPFAIL = "tempfail"  # SERVFAIL, REFUSED, timeout, network error: try again later


@dataclass(frozen=True, slots=True)
class MxResult:
    kind: Status
    records: tuple[tuple[int, str], ...] = ()  # (preference, host); host "." = null MX
    error: str = ""  # why, for a reply text, when not OK


@dataclass(frozen=True, slots=True)
class AddressResult:
    kind: Status
    ipv4: tuple[str, ...] = ()
    ipv6: tuple[str, ...] = ()
    error: str = ""

    @property
    def ips(self) -> tuple[str, ...]:
        return self.ipv4 + self.ipv6


@dataclass(frozen=True, slots=True)
class TxtResult:
    kind: Status
    texts: tuple[str, ...] = ()  # one per record, its strings joined (RFC 7208 §3.3)
    error: str = ""


@dataclass(frozen=True, slots=True)
class PtrResult:
    kind: Status
    names: tuple[str, ...] = ()
    error: str = ""


def to_ascii(domain: str) -> str:
    """``domain`` in query form: A-labels (RFC 5890), lower case, no trailing dot.

    Accepts U-labels (SMTPUTF8 domains, RFC 6531 §3.2) and a single trailing dot.
    Raises ValueError for anything that is not a plausible domain name.
    Memoised (``NAME_CACHE_SIZE`` names, LRU); errors are not cached.
    """
    return _to_ascii_cached(domain)


def _plain_ascii(text: str) -> str | None:
    """Lower-cased ``text`` if it is already a valid query name in ASCII, else None.

    Exactly the names for which the IDNA path gives ``text.lower()`` unchanged: ASCII
    only (``str.lower`` maps some non-ASCII letters to ASCII ones, e.g. U+212A → "k"),
    every label LDH/underscore of 1-63 characters, 253 characters at most in all.
    """
    if not text.isascii() or len(text) > _MAX_NAME:
        return None
    lowered = text.lower()
    for label in lowered.split("."):
        if len(label) > 63 or not _LABEL.match(label):
            return None
    return lowered


def _convert(domain: str) -> str:
    text = domain[:-1] if domain.endswith(".") else domain
    if not text or text.startswith(".") or ".." in text or "\\" in text:
        raise ValueError(f"not a domain name: {domain!r}")
    plain = _plain_ascii(text)
    return plain if plain is not None else _idna_to_ascii(domain, text)


def _idna_to_ascii(domain: str, text: str) -> str:
    """The general path: dnspython's parser and IDNA codec, then our label check."""
    try:
        name = dns.name.from_text(text, origin=dns.name.root, idna_codec=_IDNA)
        ascii_name = name.to_text(omit_final_dot=True).lower()
    except (dns.exception.DNSException, UnicodeError) as exc:
        raise ValueError(f"not a domain name: {domain!r} ({exc})") from None
    for label in ascii_name.split("."):
        if not _LABEL.match(label):
            raise ValueError(f"not a domain name: {domain!r}")
    return ascii_name


_to_ascii_cached = functools.lru_cache(maxsize=NAME_CACHE_SIZE)(_convert)


@functools.lru_cache(maxsize=NAME_CACHE_SIZE)
def _query_name(domain: str) -> tuple[dns.name.Name, str]:
    """The absolute dnspython Name to ask for, and its text (memoised; Names are immutable)."""
    text = to_ascii(domain) + "."
    return dns.name.from_text(text), text


def _host_text(name: dns.name.Name) -> str:
    return "." if name == dns.name.root else name.to_text(omit_final_dot=True).lower()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, dns.exception.Timeout):
        return "DNS lookup timed out"
    if isinstance(exc, dns.resolver.NoNameservers):
        return "no nameserver gave an answer (SERVFAIL or refused)"
    return f"DNS lookup failed ({type(exc).__name__})"


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


_Outcome = tuple[Status, dns.resolver.Answer | None, str]
_Key = tuple[str, dns.rdatatype.RdataType]  # (absolute query name, type)


class _LeaderGone(Exception):
    """Given to the waiters of a lookup whose asker was cancelled: they ask again."""


class Resolver:
    """Typed async lookups against ``nameservers`` (IP addresses) on ``port``.

    ``timeout`` bounds one whole lookup (all retries, UDP then TCP on truncation).
    ``cache_size`` > 0 keeps a bounded LRU cache that honours each answer's TTL.
    Concurrent identical lookups (same name and type) send one query and share its
    outcome; an asker that is cancelled leaves the others waiting on a fresh query.
    """

    def __init__(
        self,
        nameservers: Sequence[str],
        port: int = 53,
        timeout: float = 5.0,
        *,
        use_system: bool = False,
        cache_size: int = 1024,
    ) -> None:
        for ns in nameservers:
            if not _is_ip(ns):
                raise ValueError(f"nameserver must be an IP address: {ns!r}")
        if not nameservers and not use_system:
            raise ValueError("no nameservers given (pass use_system=True for resolv.conf)")
        if not 0 < port < 65536:
            raise ValueError(f"bad DNS port: {port}")
        if timeout <= 0:
            raise ValueError(f"bad DNS timeout: {timeout}")
        # configure=False: dnspython must not read /etc/resolv.conf behind our back.
        self._resolver = dns.asyncresolver.Resolver(configure=use_system)
        if nameservers:
            self._resolver.nameservers = list(nameservers)
        self._resolver.port = port
        self._resolver.timeout = min(timeout, _ATTEMPT_TIMEOUT)
        self._resolver.lifetime = timeout
        self._resolver.search = []
        self._resolver.use_search_by_default = False
        # No EDNS: answers over 512 octets come back truncated and are retried over TCP
        # (RFC 1035 §4.2.1, RFC 7766), which dnspython does on its own.
        self._resolver.use_edns(-1)
        if cache_size > 0:
            self._resolver.cache = dns.resolver.LRUCache(cache_size)
        # Single flight: (name, type) → the outcome its first asker will publish.
        self._in_flight: dict[_Key, asyncio.Future[_Outcome]] = {}

    @property
    def nameservers(self) -> tuple[str, ...]:
        """The addresses actually queried (never silently the system's)."""
        return tuple(str(ns) for ns in self._resolver.nameservers)

    @property
    def port(self) -> int:
        return self._resolver.port

    @property
    def in_flight(self) -> int:
        """Lookups currently on the wire (coalesced ones count once)."""
        return len(self._in_flight)

    async def _lookup(self, name: str | dns.name.Name, rdtype: dns.rdatatype.RdataType) -> _Outcome:
        try:
            if isinstance(name, dns.name.Name):
                qname, text = name, name.to_text()
            else:
                qname, text = _query_name(name)
        except ValueError as exc:
            return Status.NXDOMAIN, None, str(exc)
        key = (text, rdtype)  # text, not the Name: Name.__hash__ is a Python loop per octet
        loop = asyncio.get_running_loop()
        while (shared := self._in_flight.get(key)) is not None and shared.get_loop() is loop:
            try:
                # shield: a waiter that is cancelled must not cancel the shared lookup.
                return await asyncio.shield(shared)
            except _LeaderGone:
                continue  # the asker it waited for was cancelled: ask (or join) anew
        if shared is not None:  # another event loop's lookup: not ours to share
            return await self._resolve(qname, rdtype)
        future: asyncio.Future[_Outcome] = loop.create_future()
        self._in_flight[key] = future
        try:
            outcome = await self._resolve(qname, rdtype)
        except BaseException as exc:
            # An error reaches every waiter; a cancelled (or closed) asker hands over.
            error = exc if isinstance(exc, Exception) else _LeaderGone()
            with contextlib.suppress(RuntimeError):  # the loop may be closing
                future.set_exception(error)
            if future.done():
                future.exception()  # retrieved: no "never retrieved" log without waiters
            raise
        finally:
            if self._in_flight.get(key) is future:
                del self._in_flight[key]
        future.set_result(outcome)
        return outcome

    async def _resolve(self, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> _Outcome:
        try:
            answer = await self._resolver.resolve(qname, rdtype, search=False)
        except dns.resolver.NXDOMAIN:
            return Status.NXDOMAIN, None, f"{qname} does not exist"
        except dns.resolver.NoAnswer:
            return Status.NODATA, None, f"{qname} has no {rdtype.name} record"
        except (dns.exception.DNSException, OSError) as exc:
            return Status.TEMPFAIL, None, f"{qname} {rdtype.name}: {_describe(exc)}"
        return Status.OK, answer, ""

    async def mx(self, domain: str) -> MxResult:
        """MX records of ``domain`` (RFC 5321 §5.1), unsorted; host ``"."`` is a null MX."""
        kind, answer, error = await self._lookup(domain, dns.rdatatype.MX)
        if answer is None:
            return MxResult(kind, error=error)
        records = tuple((int(r.preference), _host_text(r.exchange)) for r in answer)
        return MxResult(Status.OK, records)

    async def addresses(self, host: str) -> AddressResult:
        """A and AAAA of ``host``, queried concurrently. An IP literal is returned as is.

        OK if either type has records; otherwise TEMPFAIL if either failed temporarily,
        then NXDOMAIN, then NODATA.
        """
        if _is_ip(host):
            ip = ipaddress.ip_address(host)
            if ip.version == 4:
                return AddressResult(Status.OK, ipv4=(str(ip),))
            return AddressResult(Status.OK, ipv6=(str(ip),))
        (k4, a4, e4), (k6, a6, e6) = await asyncio.gather(
            self._lookup(host, dns.rdatatype.A), self._lookup(host, dns.rdatatype.AAAA)
        )
        v4 = tuple(r.address for r in a4) if a4 is not None else ()
        v6 = tuple(r.address for r in a6) if a6 is not None else ()
        if v4 or v6:
            return AddressResult(Status.OK, v4, v6)
        for kind in (Status.TEMPFAIL, Status.NXDOMAIN, Status.NODATA):
            if kind in (k4, k6):
                return AddressResult(kind, error=e4 if k4 == kind else e6)
        return AddressResult(Status.NODATA, error=f"{host} has no address record")

    async def txt(self, name: str) -> TxtResult:
        """TXT records of ``name``; each record's character-strings concatenated."""
        kind, answer, error = await self._lookup(name, dns.rdatatype.TXT)
        if answer is None:
            return TxtResult(kind, error=error)
        texts = tuple(b"".join(r.strings).decode("utf-8", "replace") for r in answer)
        return TxtResult(Status.OK, texts)

    async def ptr(self, ip: str) -> PtrResult:
        """PTR names of ``ip`` (in-addr.arpa / ip6.arpa). A non-IP is NXDOMAIN."""
        try:
            rname = dns.reversename.from_address(ip)
        except (ValueError, dns.exception.DNSException):
            return PtrResult(Status.NXDOMAIN, error=f"not an IP address: {ip!r}")
        kind, answer, error = await self._lookup(rname, dns.rdatatype.PTR)
        if answer is None:
            return PtrResult(kind, error=error)
        return PtrResult(Status.OK, tuple(_host_text(r.target) for r in answer))
