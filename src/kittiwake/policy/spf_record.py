"""SPF record selection and parsing (RFC 7208 §4.5, §4.6, §5, §6).

Owns ``select_record`` (the one ``v=spf1`` TXT record among a name's TXT records),
``parse_record`` (record text → ``Record`` of ``Mechanism`` terms plus the ``redirect``
and ``exp`` modifiers) and ``Mechanism``.

Security: MEDIUM. Record text is attacker-controlled DNS data. The whole record is
validated before anything is evaluated (§4.6: any syntax error anywhere is a permerror),
so a malformed term can never cause a partial, order-dependent result.

Cost: the same few records are checked for message after message, so ``parse_record``
keeps parsed records (and syntax errors) keyed by their exact text in a bounded LRU
(``RECORD_CACHE_SIZE`` entries, records up to ``MAX_CACHED_RECORD`` characters; a longer
one is parsed every time, so attacker-published records cannot pin much memory). A
``Record`` is immutable; its macro-strings are token tuples, expanded per evaluation.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

from kittiwake.policy.record_cache import CachedParser
from kittiwake.policy.spf_macro import (
    MacroString,
    SpfSyntaxError,
    parse_domain_spec,
    parse_macro_string,
)

QUALIFIERS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}  # §4.6.2
MECHANISMS = ("all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists")
DNS_MECHANISMS = ("include", "a", "mx", "ptr", "exists")  # count toward §4.6.4's limit

_MODIFIER = re.compile(r"([a-z][a-z0-9_.-]*)=(.*)\Z", re.IGNORECASE | re.DOTALL)
_DIRECTIVE = re.compile(r"([+?~-]?)([a-z][a-z0-9]*)(.*)\Z", re.IGNORECASE | re.DOTALL)
_CIDR4 = r"(?:0|[1-9][0-9]?)"  # ip4-cidr-length: no leading zeros (§5.6)
_CIDR6 = r"(?:0|[1-9][0-9]{0,2})"
_TARGET = re.compile(
    rf"(?::(?P<domain>.*?))?(?:/(?P<c4>{_CIDR4}))?(?://(?P<c6>{_CIDR6}))?\Z", re.DOTALL
)
_VERSION = "v=spf1"
RECORD_CACHE_SIZE = 512  # parsed records kept (LRU)
MAX_CACHED_RECORD = 2048  # characters; typical records fit one 512-octet answer (§3.4)


@dataclass(frozen=True, slots=True)
class Mechanism:
    """One directive: qualifier, name, and the arguments that name takes (§5)."""

    text: str  # as written, for results and logs
    qualifier: str  # "+", "-", "~" or "?"
    name: str  # one of MECHANISMS, lower case
    domain: MacroString | None = None  # domain-spec; None = the current <domain>
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None  # ip4 / ip6
    cidr4: int = 32  # dual-cidr-length for a / mx (§5.6)
    cidr6: int = 128

    @property
    def result(self) -> str:
        return QUALIFIERS[self.qualifier]


@dataclass(frozen=True, slots=True)
class Record:
    mechanisms: tuple[Mechanism, ...]
    redirect: MacroString | None = None  # §6.1
    exp: MacroString | None = None  # §6.2


def is_spf(text: str) -> bool:
    """Does ``text`` start with the version section exactly "v=spf1" (§4.5)?"""
    return text[:6].lower() == _VERSION and (len(text) == 6 or text[6] == " ")


def select_record(texts: Sequence[str]) -> str | None:
    """The single SPF record among ``texts``; None if there is none (→ "none").

    Raises SpfSyntaxError if there is more than one (→ "permerror", §4.5).
    """
    records = [text for text in texts if is_spf(text)]
    if len(records) > 1:
        raise SpfSyntaxError(f"{len(records)} SPF records published")
    return records[0] if records else None


def _cidr(value: str | None, maximum: int, default: int) -> int:
    if value is None:
        return default
    length = int(value)
    if length > maximum:
        raise SpfSyntaxError(f"CIDR length /{length} out of range")
    return length


def _ip_network(name: str, arg: str, term: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if not arg.startswith(":"):
        raise SpfSyntaxError(f"{term!r}: {name} needs an address")
    address, slash, length = arg[1:].partition("/")
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address
        if name == "ip4":
            ip = ipaddress.IPv4Address(address)
            bits = _cidr(length if slash else None, 32, 32)
            if slash and not re.fullmatch(_CIDR4, length):
                raise SpfSyntaxError(f"{term!r}: bad CIDR length")
        else:
            ip = ipaddress.IPv6Address(address)
            bits = _cidr(length if slash else None, 128, 128)
            if slash and not re.fullmatch(_CIDR6, length):
                raise SpfSyntaxError(f"{term!r}: bad CIDR length")
    except ValueError as exc:  # also non-digit lengths: int() in _cidr
        if isinstance(exc, SpfSyntaxError):
            raise
        raise SpfSyntaxError(f"{term!r}: bad address ({exc})") from None
    # Host bits past the prefix are allowed in records (ip4:192.0.2.1/24): strict=False.
    return ipaddress.ip_network(f"{ip}/{bits}", strict=False)


def parse_mechanism(term: str) -> Mechanism:
    """One directive (§4.6.1, §5); raises SpfSyntaxError."""
    match = _DIRECTIVE.match(term)
    if match is None:
        raise SpfSyntaxError(f"unknown term {term!r}")
    qualifier, name, arg = match.group(1) or "+", match.group(2).lower(), match.group(3)
    if name not in MECHANISMS:
        raise SpfSyntaxError(f"unknown mechanism {match.group(2)!r}")
    if name == "all":
        if arg:
            raise SpfSyntaxError(f"{term!r}: 'all' takes no argument")
        return Mechanism(term, qualifier, name)
    if name in ("include", "exists"):
        if not arg.startswith(":"):
            raise SpfSyntaxError(f"{term!r}: {name} needs a domain")
        return Mechanism(term, qualifier, name, parse_domain_spec(arg[1:]))
    if name in ("ip4", "ip6"):
        return Mechanism(term, qualifier, name, network=_ip_network(name, arg, term))
    if name == "ptr":
        if arg and not arg.startswith(":"):
            raise SpfSyntaxError(f"bad term {term!r}")
        domain = parse_domain_spec(arg[1:]) if arg else None
        return Mechanism(term, qualifier, name, domain)
    # "a" / "mx": [ ":" domain-spec ] [ dual-cidr-length ]
    target = _TARGET.match(arg)
    if target is None or (arg and arg[0] not in ":/"):
        raise SpfSyntaxError(f"bad term {term!r}")
    spec = target.group("domain")
    return Mechanism(
        term,
        qualifier,
        name,
        parse_domain_spec(spec) if spec is not None else None,
        cidr4=_cidr(target.group("c4"), 32, 32),
        cidr6=_cidr(target.group("c6"), 128, 128),
    )


def parse_record(text: str) -> Record:
    """Parse a whole record (already selected: starts with "v=spf1"); raises SpfSyntaxError.

    Terms are separated by one or more spaces (§4.6.1). ``redirect`` and ``exp`` may each
    appear once (§6); unknown modifiers are checked for syntax and ignored.
    Memoised by exact text (see the module docstring); the result is shared, immutable.
    """
    return _parser(text)


def _parse(text: str) -> Record:
    if not is_spf(text):
        raise SpfSyntaxError("not an SPF record")
    mechanisms: list[Mechanism] = []
    modifiers: dict[str, MacroString] = {}
    for term in text[6:].split(" "):
        if not term:
            continue
        modifier = _MODIFIER.match(term)
        if modifier is not None:
            name, value = modifier.group(1).lower(), modifier.group(2)
            if name in ("redirect", "exp"):
                if name in modifiers:
                    raise SpfSyntaxError(f"{name}= given twice")
                modifiers[name] = parse_domain_spec(value)
            else:
                parse_macro_string(value)  # unknown-modifier = name "=" macro-string
            continue
        mechanisms.append(parse_mechanism(term))
    return Record(tuple(mechanisms), modifiers.get("redirect"), modifiers.get("exp"))


_parser = CachedParser(
    _parse,
    SpfSyntaxError,
    size=RECORD_CACHE_SIZE,
    max_text=MAX_CACHED_RECORD,
    caught=SpfSyntaxError,
)
_parse_cached = _parser.cached  # text → record or error message (bounded: cache_info())


__all__ = [
    "DNS_MECHANISMS",
    "MAX_CACHED_RECORD",
    "MECHANISMS",
    "QUALIFIERS",
    "RECORD_CACHE_SIZE",
    "Mechanism",
    "Record",
    "is_spf",
    "parse_mechanism",
    "parse_record",
    "select_record",
]
