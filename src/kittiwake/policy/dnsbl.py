"""DNS blocklists and allowlists (DNSBL / DNSWL, RFC 5782), checked once per connection.

Owns ``ZoneConfig`` (one list: its zone, "block" or "allow", the return codes that count),
``Dnsbl`` (a connect-stage policy check with a per-IP cache), ``DnsblResult`` / ``Listing``
(the outcome, for the log and later checks) and ``dnswl_listed`` (the session mark that
lets greylisting skip allowlisted clients).

How a client is looked up (RFC 5782 §2.1, §2.4): IPv4 as its octets reversed, IPv6 as 32
reversed nibbles, then ``.<zone>``; an A record under that name means "listed", its TXT
record says why. Only the return codes configured for a zone count: a listing with any
other address (Spamhaus's 127.255.255.x "you are querying through a public resolver"
errors, a code the operator did not ask for) is ignored, like Postfix's
``reject_rbl_client zone=127.0.0.[2..11]``. A code key is either an address
(``"127.0.0.2"``) or a bitmask on the last octet (``"&4"``, ``"&0.0.0.4"`` — for lists such
as SURBL's multi zone), the latter only for answers within 127.0.0.0/24.

Decision: an "allow" zone listing wins (CONTINUE, and the session is marked so that
greylisting can skip it); otherwise block listings add their weights and reach
``threshold`` (default 1, so any one listing) → ``554 5.7.1 Service unavailable; client
[ip] blocked using <zone>; <text>``.

DNS errors fail OPEN (CONTINUE, logged as a warning, result "temperror"): a list that is
down must not stop all mail, which is what Postfix, Exim and rspamd do too. Errors are not
cached, so the next connection asks again.

Security: MEDIUM. A wrong answer blocks legitimate mail or lets spam in, never more. The
TXT text is written by the list operator and echoed to the client: it is reduced to
printable ASCII and cut short before it goes into a reply.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from kittiwake.envelope import Reply, SessionInfo
from kittiwake.net.dns import Resolver, Status, to_ascii
from kittiwake.policy.networks import client_address
from kittiwake.policy.results import CheckResult, current_results
from kittiwake.policy.verdict import Action, Verdict, found

log = logging.getLogger("kittiwake.policy.dnsbl")

Clock = Callable[[], float]
DNSWL_MARK = "dnswl"  # SessionInfo.extra key: the allow zone that listed the client
DNSBL_MARK = "dnsbl"  # SessionInfo.extra key: the DnsblResult.result of the connection
MAX_TEXT = 200  # octets of list TXT echoed in a reply
MAX_CACHE = 50_000


def _parse_code(key: str) -> tuple[str, int]:
    """``("eq", addr)`` or ``("mask", bits)`` for a code key; ValueError when bad."""
    text = key.strip()
    if text.startswith("&"):
        mask_text = text[1:]
        if "." in mask_text:
            bits = int(ipaddress.IPv4Address(mask_text)) & 0xFF
            if int(ipaddress.IPv4Address(mask_text)) > 0xFF:
                raise ValueError(f"bitmask {key!r}: only the last octet may be set")
        else:
            bits = int(mask_text, 0)
        if not 0 < bits <= 0xFF:
            raise ValueError(f"bitmask {key!r} must be 1..255")
        return "mask", bits
    address = ipaddress.IPv4Address(text)
    if not address.is_loopback:  # RFC 5782 §2.3: answers are in 127.0.0.0/8
        raise ValueError(f"return code {key!r} is not in 127.0.0.0/8")
    return "eq", int(address)


@dataclass(frozen=True, slots=True)
class ZoneConfig:
    """One list. ``codes`` maps a return code (``"127.0.0.2"`` or ``"&4"``) to its meaning."""

    zone: str
    kind: Literal["block", "allow"] = "block"
    codes: Mapping[str, str] = field(default_factory=lambda: {"127.0.0.2": "listed"})
    weight: float = 1.0  # block zones: added up and compared with Dnsbl's threshold

    def __post_init__(self) -> None:
        object.__setattr__(self, "zone", to_ascii(self.zone))  # ValueError when not a name
        if self.kind not in ("block", "allow"):
            raise ValueError(f"zone {self.zone}: kind must be 'block' or 'allow'")
        if not self.codes:
            raise ValueError(f"zone {self.zone}: no return codes configured")
        for key in self.codes:
            _parse_code(key)

    def meaning(self, answer: str) -> str | None:
        """What ``answer`` (an A record) means for this zone; None when it does not count."""
        try:
            value = int(ipaddress.IPv4Address(answer))
        except ValueError:
            return None
        for key, meaning in self.codes.items():
            how, arg = _parse_code(key)
            if how == "eq" and value == arg:
                return meaning
            if how == "mask" and value >> 8 == 0x7F0000 and value & arg:
                return meaning
        return None


@dataclass(frozen=True, slots=True)
class Listing:
    zone: str
    kind: Literal["block", "allow"]
    code: str  # the A record answered, e.g. "127.0.0.2"
    meaning: str  # from ZoneConfig.codes
    text: str  # the list's TXT (sanitised), "" when it has none
    weight: float


@dataclass(frozen=True, slots=True)
class DnsblResult:
    """The outcome for one client address; ``result`` in RFC 8601 §2.7 vocabulary.

    "fail": blocked (score over the threshold); "pass": listed by an allow zone;
    "none": not (decisively) listed; "temperror": a zone failed and nothing decided.
    ``reason`` is the deciding zone (or the failed zones for temperror).
    """

    client_ip: str
    result: Literal["pass", "fail", "none", "temperror"]
    reason: str = ""
    listings: tuple[Listing, ...] = ()
    errors: tuple[str, ...] = ()  # zones whose lookup failed
    method: str = "dnsbl"

    @property
    def blocked(self) -> bool:
        return self.result == "fail"

    def check_result(self) -> CheckResult:
        """As a ``policy.results.CheckResult`` (method "dnsbl", reason the zone)."""
        props = tuple(("policy.listed", f"{x.zone}={x.code}") for x in self.listings)
        return CheckResult(self.method, self.result, self.reason, props)


def query_name(ip: str, zone: str) -> str | None:
    """The name to look up for ``ip`` in ``zone`` (RFC 5782 §2.1, §2.4); None if not an IP."""
    address = client_address(ip)
    if address is None:
        return None
    if address.version == 4:
        return ".".join(reversed(str(address).split("."))) + "." + zone
    nibbles = address.exploded.replace(":", "")
    return ".".join(reversed(nibbles)) + "." + zone


def _clean(text: str) -> str:
    printable = "".join(c if " " <= c <= "~" else " " for c in text)
    return " ".join(printable.split())[:MAX_TEXT]


def dnswl_listed(session: SessionInfo) -> bool:
    """True when a ``Dnsbl`` check found the client on an allow list (for ``exempt``).

    Reads the session mark ``Dnsbl.connect`` sets, or the chain's recorded results.
    """
    if session.extra.get(DNSWL_MARK):
        return True
    results = current_results()
    recorded = results.get("dnsbl") if results is not None else None
    return recorded is not None and recorded.result == "pass"


class Dnsbl:
    """The connect-stage check: look the client up in every zone, concurrently, once.

    Results are cached per address for ``cache_ttl`` seconds of ``clock`` (at most
    ``max_cache`` addresses, least recently used dropped); lookups that hit a DNS error
    are not cached. Concurrent connections from one address share one lookup.
    """

    name = "dnsbl"

    def __init__(
        self,
        zones: Sequence[ZoneConfig],
        resolver: Resolver,
        *,
        cache_ttl: float = 300.0,
        threshold: float = 1.0,
        clock: Clock = time.monotonic,
        max_cache: int = MAX_CACHE,
    ) -> None:
        if threshold <= 0:
            raise ValueError("threshold must be > 0")
        self.zones = tuple(zones)
        self.resolver = resolver
        self.cache_ttl = cache_ttl
        self.threshold = threshold
        self.clock = clock
        self.max_cache = max_cache
        self._cache: OrderedDict[str, tuple[float, DnsblResult]] = OrderedDict()
        self._inflight: dict[str, asyncio.Task[DnsblResult]] = {}

    async def connect(self, session: SessionInfo) -> Verdict:
        result = await self.lookup(session.client_ip)
        session.extra[DNSBL_MARK] = result.result
        if result.result == "pass":
            session.extra[DNSWL_MARK] = result.reason
        if not result.blocked:
            return found(result.check_result())
        first = next(x for x in result.listings if x.zone == result.reason)
        text = f"Service unavailable; client [{result.client_ip}] blocked using {first.zone}"
        if first.text:
            text += f"; {first.text}"
        reason = f"dnsbl {first.zone} lists {result.client_ip} ({first.code} {first.meaning})"
        return Verdict(
            Action.REJECT, Reply(554, "5.7.1", text), reason, results=(result.check_result(),)
        )

    async def lookup(self, ip: str) -> DnsblResult:
        """The (cached) result for ``ip``."""
        address = client_address(ip)
        if address is None or not self.zones:
            return DnsblResult(ip, "none")
        key = str(address)
        now = self.clock()
        cached = self._cache.get(key)
        if cached is not None:
            if cached[0] > now:
                self._cache.move_to_end(key)
                return cached[1]
            del self._cache[key]
        task = self._inflight.get(key)
        if task is None:
            # One lookup per address at a time; a caller that is cancelled (its client
            # hung up) must not cancel the lookup others wait for, hence the shield.
            task = asyncio.create_task(self._evaluate(key), name=f"dnsbl {key}")
            self._inflight[key] = task
            task.add_done_callback(lambda t: self._finished(key, t))
        return await asyncio.shield(task)

    def _finished(self, key: str, task: asyncio.Task[DnsblResult]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if task.cancelled() or task.exception() is not None:
            return
        result = task.result()
        if not result.errors and self.cache_ttl > 0:
            self._cache[key] = (self.clock() + self.cache_ttl, result)
            self._cache.move_to_end(key)
            while len(self._cache) > self.max_cache:
                self._cache.popitem(last=False)

    async def _evaluate(self, ip: str) -> DnsblResult:
        answers = await asyncio.gather(*(self._query(ip, z) for z in self.zones))
        listings = tuple(x for hits, _ in answers for x in hits)
        errors = tuple(
            zone.zone for zone, (_, failed) in zip(self.zones, answers, strict=True) if failed
        )
        for listing in listings:
            if listing.kind == "allow":
                return DnsblResult(ip, "pass", listing.zone, listings, errors)
        blocks = [x for x in listings if x.kind == "block"]
        if blocks and sum(x.weight for x in blocks) >= self.threshold:
            return DnsblResult(ip, "fail", blocks[0].zone, listings, errors)
        if errors:
            return DnsblResult(ip, "temperror", ",".join(errors), listings, errors)
        return DnsblResult(ip, "none", "", listings, errors)

    async def _query(self, ip: str, zone: ZoneConfig) -> tuple[list[Listing], bool]:
        """The listings of ``ip`` in ``zone`` and whether the lookup failed."""
        name = query_name(ip, zone.zone)
        assert name is not None  # lookup() passed a parsed address
        # A only is wanted; Resolver.addresses asks AAAA alongside, which lists leave empty.
        answer = await self.resolver.addresses(name)
        if answer.kind == Status.TEMPFAIL:
            log.warning(
                "dnsbl %s: lookup of %s failed, ignoring the list: %s", zone.zone, ip, answer.error
            )
            return [], True
        counted = [(a, m) for a in answer.ipv4 if (m := zone.meaning(a)) is not None]
        if answer.ipv4 and not counted:
            log.info(
                "dnsbl %s: %s answered %s, no configured code: ignored",
                zone.zone,
                ip,
                ",".join(answer.ipv4),
            )
        if not counted:
            return [], False
        text = ""
        if zone.kind == "block":  # the text is only ever shown in a rejection
            txt = await self.resolver.txt(name)
            if txt.kind == Status.OK and txt.texts:
                text = _clean(txt.texts[0])
        return [Listing(zone.zone, zone.kind, a, m, text, zone.weight) for a, m in counted], False

    def clear_cache(self) -> None:
        self._cache.clear()


__all__ = [
    "DNSBL_MARK",
    "DNSWL_MARK",
    "Dnsbl",
    "DnsblResult",
    "Listing",
    "ZoneConfig",
    "dnswl_listed",
    "query_name",
]
