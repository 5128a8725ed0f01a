"""The Authentication-Results header field (RFC 8601): building ours, removing forgeries.

Owns ``build_header`` (our verdicts → one A-R field), ``authserv_id_of`` (the id an
A-R field claims), ``strip_forged`` (RFC 8601 §5: drop incoming A-R fields that claim our
authserv-id) and the small header-section splitter ``split_fields`` / ``fields`` that
DMARC uses to find From.

Security: sensitive. Downstream filters and MUAs trust A-R fields carrying our
authserv-id, so every such field from outside must go before we add ours, and values we
write (addresses, reasons from DNS text) are quoted so no input can inject a ``;`` result,
a line break or a second header field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TypeAlias, overload

from kittiwake.policy.results import CheckResult

HEADER = "Authentication-Results"
_FOLD_AT = 78  # RFC 5322 §2.1.1 SHOULD line length
# RFC 2045 §5.1 token: no tspecials, space or CTL.
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+\Z")
# RFC 8601 §2.2 pvalue may be [local-part "@"] domain-name without quoting.
_ADDR = re.compile(
    r"[!#$%&'*+\-/=?^_`{|}~0-9A-Za-z.]*@[A-Za-z0-9](?:[A-Za-z0-9.\-]*[A-Za-z0-9])?\Z"
)
_KEYWORD = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.\-]*[A-Za-z0-9])?\Z")
_CTL = re.compile(r"[\x00-\x1f\x7f]+")

Properties: TypeAlias = Mapping[str, str] | Sequence[tuple[str, str]]
Result: TypeAlias = tuple[str, str, str, Properties]  # (method, result, reason, properties)


def _quote(text: str) -> str:
    """A quoted-string (RFC 5322 §3.2.4) with controls (CR, LF...) flattened to a space."""
    flat = _CTL.sub(" ", text)
    return '"' + flat.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _value(text: str) -> str:
    return text if _TOKEN.match(text) or _ADDR.match(text) else _quote(text)


def _keyword(text: str, what: str) -> str:
    if not _KEYWORD.match(text):
        raise ValueError(f"bad {what} in Authentication-Results: {text!r}")
    return text.lower()


def _resinfo(method: str, result: str, reason: str, properties: Properties) -> str:
    parts = [f"{_keyword(method, 'method')}={_keyword(result, 'result')}"]
    if reason:
        parts.append(f"reason={_quote(reason)}")  # §2.2 reasonspec
    items = properties.items() if isinstance(properties, Mapping) else properties
    for name, value in items:
        ptype, dot, prop = name.partition(".")
        if not dot:
            raise ValueError(f"property must be ptype.property: {name!r}")
        parts.append(f"{_keyword(ptype, 'ptype')}.{_keyword(prop, 'property')}={_value(value)}")
    return " ".join(parts)


def build_header(authserv_id: str, results: Sequence[Result | CheckResult]) -> str:
    """One ``Authentication-Results:`` field (RFC 8601 §2.2), without a line ending.

    ``results`` are (method, result, reason, properties) tuples, e.g.
    ``("spf", "pass", "", {"smtp.mailfrom": "a@b.test"})``, or ``CheckResult``s; no
    results → ``none`` (§2.2 no-result). A field longer than 78 characters is folded
    before each resinfo.
    """
    head = f"{HEADER}: {_value(authserv_id)}"
    infos = [
        _resinfo(r.method, r.result, r.reason, r.properties)
        if isinstance(r, CheckResult)
        else _resinfo(*r)
        for r in results
    ] or ["none"]
    line = head + "".join(f"; {info}" for info in infos)
    if len(line) <= _FOLD_AT:
        return line
    return head + "".join(f";\r\n\t{info}" for info in infos)


# -- reading header sections --------------------------------------------------------------


def split_fields(header_section: str) -> list[str]:
    """Raw header fields, each with its folded continuation lines and line endings.

    Stops at the first empty line (the end of the header section); text before the
    first field name (e.g. an mbox "From " line) is kept as its own item.
    """
    out: list[str] = []
    # Only LF ends a line: str.splitlines() would also split on \x0c, \x85, U+2028...
    for line in re.findall(r"[^\n]*\n|[^\n]+", header_section):
        if line in ("\r\n", "\n"):
            break
        if line[:1] in (" ", "\t") and out:
            out[-1] += line
        else:
            out.append(line)
    return out


def _name_value(raw: str) -> tuple[str, str]:
    name, sep, value = raw.partition(":")
    if not sep or not name or name != name.rstrip() or " " in name:
        return "", raw
    return name, value.rstrip("\r\n")


def fields(header_section: bytes | str) -> list[tuple[str, str]]:
    """(name, value) for each field; values are raw (still folded), names as written."""
    text = (
        header_section.decode("utf-8", "surrogateescape")
        if isinstance(header_section, bytes)
        else header_section
    )
    return [nv for nv in map(_name_value, split_fields(text)) if nv[0]]


def _skip_cfws(text: str, pos: int) -> int:
    """Past whitespace and (nested) comments (RFC 5322 §3.2.2)."""
    depth = 0
    while pos < len(text):
        ch = text[pos]
        if ch == "\\" and depth:
            pos += 2
            continue
        if ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif not depth and ch not in " \t\r\n":
            break
        pos += 1
    return pos


def authserv_id_of(value: str) -> str:
    """The authserv-id an A-R field value claims (§2.2), lower case; "" if unparseable."""
    pos = _skip_cfws(value, 0)
    if value[pos : pos + 1] == '"':
        m = re.match(r'"((?:[^"\\]|\\.)*)"', value[pos:], re.DOTALL)
        return re.sub(r"\\(.)", r"\1", m.group(1)).lower() if m else ""
    m = re.match(r"[^\s;()\"]+", value[pos:])
    return m.group(0).lower() if m else ""


@overload
def strip_forged(header_section: bytes, authserv_id: str) -> bytes: ...
@overload
def strip_forged(header_section: str, authserv_id: str) -> str: ...
def strip_forged(header_section: bytes | str, authserv_id: str) -> bytes | str:
    """The header section without A-R fields claiming ``authserv_id`` (RFC 8601 §5).

    Names and ids compare case-insensitively; folded fields go whole. Everything else,
    including the blank line ending the section and any body after it, is kept
    byte-for-byte. Returns the same type it was given.
    """
    is_bytes = isinstance(header_section, bytes)
    text = (
        header_section.decode("utf-8", "surrogateescape")
        if isinstance(header_section, bytes)
        else header_section
    )
    ours = authserv_id.lower()
    raw = split_fields(text)
    head_len = sum(len(r) for r in raw)
    kept = []
    for item in raw:
        name, value = _name_value(item)
        if name.lower() == HEADER.lower() and authserv_id_of(value) == ours:
            continue
        kept.append(item)
    result = "".join(kept) + text[head_len:]
    return result.encode("utf-8", "surrogateescape") if is_bytes else result


__all__ = [
    "HEADER",
    "Properties",
    "Result",
    "authserv_id_of",
    "build_header",
    "fields",
    "split_fields",
    "strip_forged",
]
