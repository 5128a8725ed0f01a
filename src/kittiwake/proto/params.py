"""MAIL and RCPT argument parsing: paths plus ESMTP parameters, to events or refusals.

Owns the meaning of each parameter the server advertises: SIZE (RFC 1870 §4), BODY
(RFC 6152 §2, RFC 3030 §3), SMTPUTF8 (RFC 6531 §3.4), RET/ENVID (RFC 3461 §4.3-4.4),
AUTH (RFC 4954 §5) on MAIL; NOTIFY/ORCPT (RFC 3461 §4.1-4.2) on RCPT. Unknown keywords get
555 5.5.4, repeated ones 501 5.5.4, bad values 501 5.5.4 (RFC 5321 §4.1.1.11, RFC 3461 §4.5).

Security: HIGH (parses attacker text) — but all matching is delegated to ``grammar``'s
anchored regexes; this module only interprets the pieces.
"""

from __future__ import annotations

from kittiwake.envelope import BodyType, Notify, Recipient, Reply, Ret
from kittiwake.proto import grammar, replies
from kittiwake.proto.events import MailFrom, RcptTo

_BODY = {b.value: b for b in BodyType}  # 7BIT, 8BITMIME, BINARYMIME
_RET = {"FULL": Ret.FULL, "HDRS": Ret.HDRS}
_NOTIFY = {"SUCCESS": Notify.SUCCESS, "FAILURE": Notify.FAILURE, "DELAY": Notify.DELAY}
MAX_ENVID = 100  # RFC 3461 §4.4
MAX_ORCPT = 500  # RFC 3461 §4.2


def _printable_ascii(text: str) -> bool:
    # RFC 3461 §4.2, §4.4: the decoded value is printable US-ASCII (graphic and white space).
    return text.isascii() and text.isprintable()


def _decode_params(rest: str, esmtp: bool) -> list[tuple[str, str | None]] | Reply:
    if not rest or rest.isspace():
        return []
    if rest[0] != " ":
        return replies.PARAM_SYNTAX
    if not esmtp:
        return replies.PARAM_NEED_EHLO
    pairs = grammar.split_params(rest)
    if pairs is None:
        return replies.PARAM_SYNTAX
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            return replies.PARAM_DUPLICATE
        seen.add(key)
    return pairs


def parse_mail(arg: str, *, esmtp: bool, max_size: int) -> MailFrom | Reply:
    """``arg`` is everything after ``MAIL ``: ``FROM:<reverse-path> [SP Mail-parameters]``."""
    m = grammar.MAIL_PREFIX_RE.match(arg)
    if m is None:
        return replies.MAIL_SYNTAX
    pos = m.end()
    if arg.startswith("<>", pos):  # Reverse-path = Path / "<>"
        sender, end = "", pos + 2
    else:
        parsed = grammar.parse_path(arg, pos)
        if isinstance(parsed, grammar.PathError):
            return replies.SENDER_TOO_LONG if parsed.kind == "too_long" else replies.BAD_SENDER
        sender, end = parsed
    pairs = _decode_params(arg[end:], esmtp)
    if isinstance(pairs, Reply):
        return pairs
    size: int | None = None
    body = BodyType.SEVENBIT
    smtputf8 = False
    ret: Ret | None = None
    envid: str | None = None
    auth: str | None = None
    for key, value in pairs:
        if key == "SIZE":
            # size-value = 1*20DIGIT (RFC 1870 §3)
            if value is None or not (value.isascii() and value.isdigit()) or len(value) > 20:
                return replies.PARAM_BAD
            size = int(value)
            if max_size and size > max_size:
                return replies.TOO_BIG
        elif key == "BODY":
            if value is None or (found := _BODY.get(value.upper())) is None:
                return replies.PARAM_BAD
            body = found
        elif key == "SMTPUTF8":
            if value is not None:  # RFC 6531 §3.4: "it MUST not accept a value"
                return replies.PARAM_BAD
            smtputf8 = True
        elif key == "RET":
            if value is None or (r := _RET.get(value.upper())) is None:
                return replies.PARAM_BAD
            ret = r
        elif key == "ENVID":
            if value is None or len(value) > MAX_ENVID:
                return replies.PARAM_BAD
            envid = grammar.xtext_decode(value)
            if envid is None or not _printable_ascii(envid):
                return replies.PARAM_BAD
        elif key == "AUTH":
            # RFC 4954 §5: AUTH=<> or AUTH=xtext(addr-spec); "<>" is valid xtext too.
            auth = grammar.xtext_decode(value) if value is not None else None
            if auth is None:
                return replies.PARAM_BAD
        else:
            return replies.PARAM_UNKNOWN
    if not smtputf8 and not sender.isascii():
        return replies.NEED_SMTPUTF8  # RFC 6531 §3.3
    return MailFrom(sender, size, body, smtputf8, ret, envid, auth)


def parse_rcpt(arg: str, *, esmtp: bool, smtputf8: bool) -> RcptTo | Reply:
    """``arg`` is everything after ``RCPT ``: ``TO:<forward-path> [SP Rcpt-parameters]``.

    ``<Postmaster>`` without a domain (RFC 5321 §4.1.1.3) gives the address ``postmaster``.
    """
    m = grammar.RCPT_PREFIX_RE.match(arg)
    if m is None:
        return replies.RCPT_SYNTAX
    pos = m.end()
    if arg[pos : pos + 12].lower() == "<postmaster>":
        address, end = "postmaster", pos + 12
    else:
        parsed = grammar.parse_path(arg, pos)
        if isinstance(parsed, grammar.PathError):
            too_long = parsed.kind == "too_long"
            return replies.RECIPIENT_TOO_LONG if too_long else replies.BAD_RECIPIENT
        address, end = parsed
    pairs = _decode_params(arg[end:], esmtp)
    if isinstance(pairs, Reply):
        return pairs
    notify: Notify | None = None
    orcpt: str | None = None
    for key, value in pairs:
        if key == "NOTIFY":
            if value is None:
                return replies.PARAM_BAD
            notify = _parse_notify(value)
            if notify is None:
                return replies.PARAM_BAD
        elif key == "ORCPT":
            # original-recipient-address = addr-type ";" xtext ; addr-type = atom
            if value is None or len(value) > MAX_ORCPT:
                return replies.PARAM_BAD
            addr_type, sep, xtext = value.partition(";")
            decoded = grammar.xtext_decode(xtext)
            if (
                not sep
                or grammar.ATOM_RE.fullmatch(addr_type) is None
                or decoded is None
                or not decoded
                or not _printable_ascii(decoded)
            ):
                return replies.PARAM_BAD
            orcpt = f"{addr_type};{decoded}"
        else:
            return replies.PARAM_UNKNOWN
    if not smtputf8 and not address.isascii():
        return replies.NEED_SMTPUTF8  # RFC 6531 §3.3: only in an SMTPUTF8 transaction
    return RcptTo(Recipient(address, notify, orcpt))


def _parse_notify(value: str) -> Notify | None:
    """RFC 3461 §4.1: ``NEVER`` alone, or a comma list of SUCCESS, FAILURE, DELAY."""
    words = value.upper().split(",")
    if words == ["NEVER"]:
        return Notify.NEVER
    flags = Notify.NEVER
    for word in words:
        flag = _NOTIFY.get(word)
        if flag is None or flag & flags:
            return None
        flags |= flag
    return flags
