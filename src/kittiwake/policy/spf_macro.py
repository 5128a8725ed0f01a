"""SPF macros (RFC 7208 §7): parsing macro-strings and domain-specs, and expanding them.

Owns ``Macro`` (one ``%{...}`` expansion), ``parse_macro_string`` / ``parse_domain_spec``
(syntax checks: a bad macro makes the whole record a permerror, RFC 7208 §4.6),
``MacroValues`` (what the letters stand for during one evaluation) and ``expand`` /
``expand_domain``.

Security: MEDIUM. Every input is attacker-controlled: the record text comes from the
sender's DNS and the sender address / HELO from the SMTP client. Expansion is pure string
work (no evaluation); the result only ever becomes a DNS query name, which
``kittiwake.net.dns`` validates before sending, or an explanation text, which is checked
to be printable ASCII. The ``p`` macro's DNS work is done by the caller-supplied coroutine.
"""

from __future__ import annotations

import ipaddress
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_LETTERS = "slodiphcrtv"
_EXPLAIN_ONLY = "crt"  # RFC 7208 §7.2: only in "exp" explanation strings
_DELIMITERS = ".-+,/_="
_MACRO = re.compile(r"%\{([a-zA-Z])([0-9]*)(r?)([.\-+,/_=]*)\}", re.IGNORECASE)
_LITERAL = re.compile(r"[\x21-\x24\x26-\x7e]+")
# domain-end = "." toplabel [ "." ]  (RFC 7208 §7.1)
_DOMAIN_END = re.compile(
    r"\.(?:[a-z0-9]*[a-z][a-z0-9]*|[a-z0-9]+-[a-z0-9-]*[a-z0-9])\.?\Z", re.IGNORECASE
)
MAX_DOMAIN = 253  # RFC 7208 §7.3: longer expansions lose labels on the left


class SpfSyntaxError(ValueError):
    """A record, term or macro that breaks the RFC 7208 ABNF (→ permerror)."""


@dataclass(frozen=True, slots=True)
class Macro:
    """``%{letter digits r delimiters}``: ``upper`` letters are URL-escaped (§7.3)."""

    letter: str  # lower case
    digits: int | None = None
    reverse: bool = False
    delimiters: str = ""
    upper: bool = False


Token = str | Macro
MacroString = tuple[Token, ...]


def parse_macro_string(text: str, *, explain: bool = False) -> MacroString:
    """Tokens of a macro-string, or of an explain-string (spaces and c/r/t) if ``explain``.

    Raises SpfSyntaxError: a ``%`` not followed by ``{``, ``%``, ``_`` or ``-``, an unknown
    letter, a zero digit transformer, a character outside %x21-7E (RFC 7208 §7.1).
    """
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        char = text[pos]
        if char == "%":
            nxt = text[pos + 1 : pos + 2]
            if nxt in ("%", "_", "-"):
                tokens.append({"%": "%", "_": " ", "-": "%20"}[nxt])
                pos += 2
                continue
            match = _MACRO.match(text, pos)
            if match is None:
                raise SpfSyntaxError(f"bad macro at {text[pos : pos + 12]!r}")
            letter, digits, reverse, delims = match.groups()
            low = letter.lower()
            if low not in _LETTERS or (low in _EXPLAIN_ONLY and not explain):
                raise SpfSyntaxError(f"macro letter {letter!r} not allowed here")
            if digits and int(digits) == 0:
                raise SpfSyntaxError("macro digit transformer must be nonzero")
            tokens.append(
                Macro(
                    low,
                    int(digits) if digits else None,
                    bool(reverse),
                    delims,
                    letter.isupper(),
                )
            )
            pos = match.end()
            continue
        if char == " " and explain:
            tokens.append(" ")
            pos += 1
            continue
        literal = _LITERAL.match(text, pos)
        if literal is None:
            raise SpfSyntaxError(f"character {char!r} not allowed in a macro-string")
        tokens.append(literal.group())
        pos = literal.end()
    return tuple(tokens)


def parse_domain_spec(text: str) -> MacroString:
    """A domain-spec: a macro-string ending in a macro or in ``.toplabel`` (§7.1)."""
    if not text:
        raise SpfSyntaxError("empty domain-spec")
    tokens = parse_macro_string(text)
    last = tokens[-1]
    if isinstance(last, Macro):
        return tokens
    # The trailing literal run may span several tokens ("%%" escapes are literal text).
    tail = ""
    for token in reversed(tokens):
        if isinstance(token, Macro):
            break
        tail = token + tail
    if not _DOMAIN_END.search(tail):
        raise SpfSyntaxError(f"domain-spec {text!r} does not end in a top label")
    return tokens


@dataclass(frozen=True, slots=True)
class MacroValues:
    """What the macro letters expand to in one check_host() evaluation (§7.3)."""

    ip: IPAddress
    sender: str  # local@domain, local-part defaulted to "postmaster" (§4.3)
    domain: str  # the current <domain>, changes across include / redirect
    helo: str = ""
    receiver: str = ""

    @property
    def local(self) -> str:
        return self.sender.rpartition("@")[0]

    @property
    def sender_domain(self) -> str:
        return self.sender.rpartition("@")[2]


def ip_dotted(ip: IPAddress) -> str:
    """``%{i}``: dotted quad, or IPv6 as 32 dotted nibbles (§7.3)."""
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ip)
    return ".".join(ip.exploded.replace(":", ""))


def _value(macro: Macro, values: MacroValues, ptr_name: str) -> str:
    letter = macro.letter
    if letter == "s":
        return values.sender
    if letter == "l":
        return values.local
    if letter == "o":
        return values.sender_domain
    if letter == "d":
        return values.domain
    if letter == "i":
        return ip_dotted(values.ip)
    if letter == "p":
        return ptr_name
    if letter == "v":
        return "in-addr" if values.ip.version == 4 else "ip6"
    if letter == "h":
        return values.helo
    if letter == "c":
        return str(values.ip)
    if letter == "r":
        return values.receiver or "unknown"
    return str(int(time.time()))  # "t"


def _transform(macro: Macro, value: str) -> str:
    if macro.digits is None and not macro.reverse and not macro.delimiters:
        return value
    delims = macro.delimiters or "."
    parts = re.split("[" + re.escape(delims) + "]", value)
    if macro.reverse:
        parts.reverse()
    if macro.digits is not None and macro.digits < len(parts):
        parts = parts[-macro.digits :]
    return ".".join(parts)


async def expand(
    tokens: MacroString,
    values: MacroValues,
    ptr_name: Callable[[], Awaitable[str]] | None = None,
) -> str:
    """Expand ``tokens``; ``ptr_name`` supplies ``%{p}`` (called only if used, §7.3)."""
    out: list[str] = []
    for token in tokens:
        if isinstance(token, str):
            out.append(token)
            continue
        name = ""
        if token.letter == "p":
            name = await ptr_name() if ptr_name is not None else "unknown"
        text = _transform(token, _value(token, values, name))
        out.append(urllib.parse.quote(text, safe="") if token.upper else text)
    return "".join(out)


def truncate_domain(name: str) -> str:
    """Drop labels on the left until ``name`` fits in 253 characters (§7.3)."""
    while len(name) > MAX_DOMAIN and "." in name:
        name = name.split(".", 1)[1]
    return name


async def expand_domain(
    tokens: MacroString,
    values: MacroValues,
    ptr_name: Callable[[], Awaitable[str]] | None = None,
) -> str:
    """A domain-spec expanded into a query name (trailing dot dropped, length fitted)."""
    name = await expand(tokens, values, ptr_name)
    return truncate_domain(name[:-1] if name.endswith(".") else name)


__all__ = [
    "Macro",
    "MacroString",
    "MacroValues",
    "SpfSyntaxError",
    "expand",
    "expand_domain",
    "ip_dotted",
    "parse_domain_spec",
    "parse_macro_string",
    "truncate_domain",
]
