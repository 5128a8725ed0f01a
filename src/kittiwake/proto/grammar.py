"""SMTP address and parameter grammar: RFC 5321 §4.1.2 / §4.1.3 ABNF as compiled regexes.

Owns: parsing a ``Path`` (reverse- or forward-path) into a mailbox string, address-literal
validation, esmtp-param splitting, xtext decoding (RFC 3461 §4), the HELO/EHLO argument
check and the RFC 5321 §4.5.3.1 size limits. Pure functions over ``str``; no state, no I/O.

Security: HIGH. Everything here parses attacker-controlled text. Every regex is anchored
(``fullmatch``) and written so that no sub-pattern can match the same text two ways
(no catastrophic backtracking); inputs are already bounded by the command line limit.

Non-ASCII: the regexes accept UTF-8 (RFC 6531 §3.3 extends ``atext``, ``qtextSMTP``,
``sub-domain`` and ``esmtp-value``); the caller decides whether SMTPUTF8 allows it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

# RFC 6531 §3.3: UTF8-non-ascii joins atext, qtextSMTP, sub-domain (U-label), esmtp-value.
_U = "\u0080-\U0010ffff"

# Let-dig = ALPHA / DIGIT ; Ldh-str = *( ALPHA / DIGIT / "-" ) Let-dig
# sub-domain = Let-dig [Ldh-str]   (=/ U-label, RFC 6531)
# Written as alnum+ *( 1*"-" alnum+ ): same language, one way to match it.
_LET_DIG = f"[A-Za-z0-9{_U}]"
_SUB_DOMAIN = f"{_LET_DIG}+(?:-+{_LET_DIG}+)*"
# Domain = sub-domain *("." sub-domain)
_DOMAIN = f"{_SUB_DOMAIN}(?:\\.{_SUB_DOMAIN})*"

# atext (RFC 5322 §3.2.3) =/ UTF8-non-ascii ; Atom = 1*atext
# Dot-string = Atom *("." Atom)
_ATEXT = f"[A-Za-z0-9!#$%&'*+\\-/=?^_`{{|}}~{_U}]"
_DOT_STRING = f"{_ATEXT}+(?:\\.{_ATEXT}+)*"
# Quoted-string = DQUOTE *QcontentSMTP DQUOTE ; QcontentSMTP = qtextSMTP / quoted-pairSMTP
# qtextSMTP = %d32-33 / %d35-91 / %d93-126 (=/ UTF8-non-ascii) ; quoted-pairSMTP = %d92 %d32-126
_QUOTED = f'"(?:[\\x20\\x21\\x23-\\x5b\\x5d-\\x7e{_U}]|\\\\[\\x20-\\x7e])*"'
# Local-part = Dot-string / Quoted-string
_LOCAL = f"(?:{_DOT_STRING}|{_QUOTED})"

# address-literal = "[" ( IPv4-address-literal / IPv6-address-literal /
#                         General-address-literal ) "]"
# dcontent = %d33-90 / %d94-126   ; the three forms are told apart in _literal_ok()
_LITERAL = "\\[[\\x21-\\x5a\\x5e-\\x7e]+\\]"
_LITERAL_RE = re.compile(_LITERAL)

# Path = "<" [ A-d-l ":" ] Mailbox ">" ; A-d-l = At-domain *( "," At-domain )
# At-domain = "@" Domain ; Mailbox = Local-part "@" ( Domain / address-literal )
# The source route is accepted and ignored (RFC 5321 §4.1.2, Appendix C).
PATH_RE = re.compile(
    f"<(?:@{_DOMAIN}(?:,@{_DOMAIN})*:)?(?P<local>{_LOCAL})@(?P<domain>{_DOMAIN}|{_LITERAL})>"
)

# MAIL FROM:<reverse-path> [SP Mail-parameters]; RCPT TO:<forward-path> [SP Rcpt-parameters].
# RFC 5321 §4.1.2 forbids spaces around the colon, but deployed clients send "FROM: <a@b>",
# so (like Postfix) we accept spaces after it. The path is matched by PATH_RE, not by ">"
# searching, because a quoted local part may itself contain ">" and spaces.
MAIL_PREFIX_RE = re.compile("FROM: *", re.IGNORECASE)
RCPT_PREFIX_RE = re.compile("TO: *", re.IGNORECASE)

# Snum = 1*3DIGIT ; IPv4-address-literal = Snum 3("." Snum)
_IPV4_RE = re.compile("[0-9]{1,3}(?:\\.[0-9]{1,3}){3}")
# General-address-literal = Standardized-tag ":" 1*dcontent ; Standardized-tag = Ldh-str
_GENERAL_RE = re.compile("[A-Za-z0-9-]*[A-Za-z0-9]:[\\x21-\\x5a\\x5e-\\x7e]+")

# esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
# esmtp-value = 1*(%d33-60 / %d62-126)  (=/ UTF8-non-ascii, RFC 6531 §3.3)
_PARAM_RE = re.compile(
    f"(?P<key>[A-Za-z0-9][A-Za-z0-9-]*)(?:=(?P<value>[\\x21-\\x3c\\x3e-\\x7e{_U}]+))?"
)

# xtext = *( xchar / hexchar ) ; xchar = %d33-126 except "+" and "="
# hexchar = "+" 2(%x30-39 / %x41-46)   (upper case hex only; RFC 3461 §4)
_XTEXT_RE = re.compile("(?:[\\x21-\\x2a\\x2c-\\x3c\\x3e-\\x7e]|\\+[0-9A-F]{2})*")
_HEXCHAR_RE = re.compile("\\+([0-9A-F]{2})")

# atom (RFC 5322 §3.2.3), used by ORCPT's addr-type (RFC 3461 §4.2)
ATOM_RE = re.compile("[A-Za-z0-9!#$%&'*+\\-/=?^_`{|}~]+")

# HELO/EHLO argument: a Domain or an address-literal (RFC 5321 §4.1.1.1). Leniency: "_" is
# allowed in labels (common in Windows host names) and a trailing dot is tolerated.
_HELO_LABEL = "[A-Za-z0-9_]+(?:-+[A-Za-z0-9_]+)*"
_HELO_DOMAIN_RE = re.compile(f"{_HELO_LABEL}(?:\\.{_HELO_LABEL})*\\.?")

# ETRN argument (RFC 1985 §5, §5.3): [ "@" ] node-name, or "#" queue-name. The node is an
# LDH domain (a trailing dot tolerated); a queue name's syntax is ours to choose (§5.3).
_LDH_LABEL = "[A-Za-z0-9]+(?:-+[A-Za-z0-9]+)*"  # sub-domain, ASCII only
_ETRN_RE = re.compile(f"@?{_LDH_LABEL}(?:\\.{_LDH_LABEL})*\\.?|#[A-Za-z0-9][A-Za-z0-9._-]{{0,63}}")

# RFC 5321 §4.5.3.1.1-3: local-part 64, domain 255, path 256 octets (path with "<" ">").
MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
MAX_PATH = 256


@dataclass(frozen=True, slots=True)
class PathError:
    """Why a path did not parse: ``syntax``, ``too_long`` or ``literal`` (bad address literal)."""

    kind: str


def literal_ok(literal: str) -> bool:
    """Validate an address literal including its brackets (RFC 5321 §4.1.3)."""
    inner = literal[1:-1]
    if _IPV4_RE.fullmatch(inner):
        return all(int(part) <= 255 for part in inner.split("."))
    if inner[:5].lower() == "ipv6:":
        addr = inner[5:]
        # ipaddress accepts "%scope" zone ids, which the RFC grammar does not.
        if "%" in addr:
            return False
        try:
            ipaddress.IPv6Address(addr)
        except ValueError:
            return False
        return True
    # A tag that is not "IPv6" is a General-address-literal; we cannot check its content.
    return _GENERAL_RE.fullmatch(inner) is not None


def parse_path(text: str, start: int = 0) -> tuple[str, int] | PathError:
    """Match ``Path`` at ``text[start:]``; return ``(mailbox, end)`` or a ``PathError``.

    The mailbox is ``local@domain`` exactly as written (a quoted local part stays quoted);
    the source route is dropped.
    """
    m = PATH_RE.match(text, start)
    if m is None:
        return PathError("syntax")
    local = m.group("local")
    domain = m.group("domain")
    if domain[0] == "[" and not literal_ok(domain):
        return PathError("literal")
    end = m.end()
    if (
        len(local.encode()) > MAX_LOCAL_PART
        or len(domain.encode()) > MAX_DOMAIN
        or len(text[start:end].encode()) > MAX_PATH
    ):
        return PathError("too_long")
    return f"{local}@{domain}", end


def split_params(text: str) -> list[tuple[str, str | None]] | None:
    """Split ``esmtp-param *(SP esmtp-param)`` into ``(KEYWORD, value)`` pairs, or None.

    Keywords are upper-cased; values are returned raw. Extra spaces between parameters are
    tolerated (Postfix does the same).
    """
    out: list[tuple[str, str | None]] = []
    for word in text.split(" "):
        if not word:
            continue
        m = _PARAM_RE.fullmatch(word)
        if m is None:
            return None
        out.append((m.group("key").upper(), m.group("value")))
    return out


def xtext_decode(text: str) -> str | None:
    """Decode RFC 3461 §4 xtext; None if ``text`` is not valid xtext."""
    if _XTEXT_RE.fullmatch(text) is None:
        return None
    if "+" not in text:
        return text
    return _HEXCHAR_RE.sub(lambda m: chr(int(m.group(1), 16)), text)


def etrn_ok(arg: str) -> bool:
    """An ETRN argument: ``domain``, ``@domain`` or ``#queue`` (RFC 1985 §5, §5.3), ASCII."""
    return len(arg) <= MAX_DOMAIN + 1 and _ETRN_RE.fullmatch(arg) is not None


def helo_ok(arg: str) -> bool:
    """Loose RFC 5321 §4.1.1.1 check of a HELO/EHLO argument (domain or address literal)."""
    if not arg.isascii() or len(arg) > MAX_DOMAIN + 2:
        return False
    if arg[:1] == "[":
        return _LITERAL_RE.fullmatch(arg) is not None and literal_ok(arg)
    return _HELO_DOMAIN_RE.fullmatch(arg) is not None
