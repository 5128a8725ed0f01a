"""Address lists in header fields: find bare local parts and qualify them with a domain.

Owns ``qualify_address_list`` (RFC 6409 §8.8 header rewriting, limited to what §8 allows:
only an address that is nothing but a local part gets ``@domain``) and ``is_local_part``.

It works on a field value decoded as Latin-1 (one character per octet, so any 8-bit or
UTF-8 content survives the round trip unchanged) and only *inserts* ``@domain`` after a
local part: folding, comments, display names, quoting and RFC 2047 encoded-words are left
exactly as they were. The RFC 5322 §3.4 grammar is followed loosely but safely: anything it
cannot read with confidence (an unclosed quote, comment or angle bracket, a phrase of
several words without ``<>``, an encoded-word standing alone) is left untouched, so a
mistake costs a missing qualification, never a damaged header. Mildly security sensitive:
the input is the client's; it is scanned in linear time, with no regular expression that
can backtrack badly (the callers bound the header size).
"""

from __future__ import annotations

import re

_WS = " \t\r\n"
_STOP = frozenset(_WS + '()<>,;:"[]\\')
# RFC 5322 §3.2.3 atext, plus octets >= 0x80 (RFC 6532 §3.2 UTF-8, here as Latin-1 chars).
_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\x80-\xff"
_DOT_ATOM_RE = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*")
_QUOTED_RE = re.compile(r'"(?:[^"\\\r\n]|\\.)*"', re.DOTALL)
# RFC 2047 §2 encoded-word: =?charset?encoding?encoded-text?=
_ENCODED_WORD_RE = re.compile(r"=\?[^?\s]+\?[A-Za-z]\?[^?\s]*\?=")

Token = tuple[str, int, int]  # kind ("word", "angle", "comment", ",", ";", ":"), start, end


def is_local_part(text: str) -> bool:
    """A dot-atom or a quoted string (RFC 5322 §3.4.1 local-part, no obsolete forms)."""
    return _DOT_ATOM_RE.fullmatch(text) is not None or _QUOTED_RE.fullmatch(text) is not None


def qualify_address_list(value: str, domain: str) -> str:
    """``value`` (an address-list field body) with ``@domain`` after every bare local part.

    ``alice`` → ``alice@domain``; ``Alice <alice>`` → ``Alice <alice@domain>``; groups,
    comments and folding are kept; qualified addresses, ``<>`` and anything unreadable stay.
    """
    tokens = _tokenize(value)
    if tokens is None:
        return value
    inserts: list[int] = []
    element: list[Token] = []
    for token in [*tokens, (",", len(value), len(value))]:
        kind = token[0]
        if kind == ":":  # what came before was a group's display name
            element = []
        elif kind in ",;":
            where = _insertion_point(value, element)
            if where is not None:
                inserts.append(where)
            element = []
        elif kind != "comment":
            element.append(token)
    if not inserts:
        return value
    out: list[str] = []
    last = 0
    for where in inserts:
        out += [value[last:where], "@", domain]
        last = where
    out.append(value[last:])
    return "".join(out)


def _insertion_point(value: str, element: list[Token]) -> int | None:
    """Where ``@domain`` goes in one mailbox, or None (qualified, empty, or unreadable)."""
    angles = [t for t in element if t[0] == "angle"]
    if angles:
        if len(angles) != 1 or element[-1] is not angles[0]:
            return None  # "a <b> c" or "<a> <b>": not a mailbox we understand
        _, start, end = angles[0]
        inner = value[start + 1 : end - 1]
        addr = inner.strip(_WS)
        if not addr or "(" in inner or not is_local_part(addr):
            return None  # <>, a route or a qualified address, or a comment inside
        return start + 1 + len(inner.rstrip(_WS))
    if len(element) != 1:
        return None  # empty, or a phrase of several words: not an address
    _, start, end = element[0]
    word = value[start:end]
    if _ENCODED_WORD_RE.fullmatch(word) or not is_local_part(word):
        return None
    return end


def _tokenize(value: str) -> list[Token] | None:
    """Top-level tokens with their spans; None when a quote, comment or bracket is unclosed
    or a closing bracket stands alone. Adjacent words merge (``"a b"@x`` is one word)."""
    tokens: list[Token] = []
    i, n = 0, len(value)
    while i < n:
        c = value[i]
        if c in _WS:
            i += 1
            continue
        if c == "(":
            end = _comment_end(value, i)
            kind = "comment"
        elif c == '"':
            end = _quoted_end(value, i)
            kind = "word"
        elif c == "<":
            end = _angle_end(value, i)
            kind = "angle"
        elif c == "[":
            close = value.find("]", i)
            end = close + 1 if close >= 0 else -1
            kind = "word"
        elif c in ",;:":
            end, kind = i + 1, c
        elif c in ">])\\":
            return None
        else:
            end = i
            while end < n and value[end] not in _STOP:
                end += 1
            kind = "word"
        if end < 0:
            return None
        if kind == "word" and tokens and tokens[-1][0] == "word" and tokens[-1][2] == i:
            tokens[-1] = ("word", tokens[-1][1], end)
        else:
            tokens.append((kind, i, end))
        i = end
    return tokens


def _quoted_end(value: str, i: int) -> int:
    """Index after the quoted string starting at ``value[i] == '"'``, or -1."""
    j = i + 1
    while j < len(value):
        c = value[j]
        if c == "\\":
            j += 2
            continue
        if c == '"':
            return j + 1
        j += 1
    return -1


def _comment_end(value: str, i: int) -> int:
    """Index after the (nested, RFC 5322 §3.2.2) comment starting at ``value[i]``, or -1."""
    depth, j = 0, i
    while j < len(value):
        c = value[j]
        if c == "\\":
            j += 2
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    return -1


def _angle_end(value: str, i: int) -> int:
    """Index after the ``>`` closing the angle-addr at ``value[i]`` (quotes respected)."""
    j = i + 1
    while j < len(value):
        c = value[j]
        if c == '"':
            j = _quoted_end(value, j)
            if j < 0:
                return -1
            continue
        if c == ">":
            return j + 1
        if c == "<":
            return -1
        j += 1
    return -1
