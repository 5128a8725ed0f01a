"""DMARC evaluation (RFC 7489): record discovery, identifier alignment, policy and sampling.

Owns ``evaluate`` (SPF and DKIM results in, a ``DmarcResult`` out), ``parse_record``,
``organizational_domain`` (Public Suffix List, offline, via ``publicsuffixlist``) and
``from_domain`` (the RFC5322.From author domain of a header section).

Security: moderately sensitive. The record is attacker-controlled DNS text and is parsed
defensively (unknown tags ignored, bad optional tags fall back to defaults, RFC 7489
§6.3); the From domain decides whose policy applies, so ``from_domain`` refuses to guess
when a message has no single author domain. The verdict only *advises* a disposition;
the caller acts on it (reject / Junk folder / deliver).

Cost: ``parse_record`` (by exact text, records up to ``MAX_CACHED_RECORD`` characters)
and ``organizational_domain`` (by name, default PSL only) are memoised in bounded LRUs;
both results are immutable, so sharing them changes nothing.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from email.utils import getaddresses

from publicsuffixlist import PublicSuffixList

from kittiwake.net.dns import Resolver, Status, to_ascii
from kittiwake.policy.authres import fields
from kittiwake.policy.record_cache import CachedParser
from kittiwake.policy.results import CheckResult

POLICIES = ("none", "quarantine", "reject")
RECORD_CACHE_SIZE = 256  # parsed records kept (LRU)
MAX_CACHED_RECORD = 2048  # characters; a longer record is parsed every time
ORG_CACHE_SIZE = 4096  # organizational domains kept (LRU), names of ≤ 253 characters


@dataclass(frozen=True, slots=True)
class DmarcRecord:
    """A parsed ``v=DMARC1`` record (RFC 7489 §6.3); defaults filled in."""

    p: str  # none | quarantine | reject
    sp: str | None = None  # subdomain policy; None = same as p
    adkim: str = "r"  # r (relaxed) | s (strict), §3.1.1
    aspf: str = "r"  # §3.1.2
    pct: int = 100
    rua: tuple[str, ...] = ()
    text: str = ""


@dataclass(frozen=True, slots=True)
class DmarcResult:
    """The DMARC verdict. ``result`` uses the RFC 8601 / RFC 7489 §11.2 vocabulary."""

    result: str  # pass | fail | none | temperror | permerror
    policy: str = "none"  # the requested policy that applies (p, or sp for a subdomain)
    disposition: str = "none"  # what to do after pct sampling: none | quarantine | reject
    from_domain: str = ""
    org_domain: str = ""
    record_domain: str = ""  # where the record was found ("" if none)
    spf_aligned: bool = False
    dkim_aligned: bool = False
    dkim_domain: str = ""  # the aligned, passing DKIM d= (first one)
    pct: int = 100
    pct_applied: bool = True  # False: sampling chose not to enact the policy (§6.6.4)
    record: DmarcRecord | None = None
    reason: str = ""

    def check_result(self) -> CheckResult:
        """As an RFC 8601 result: ``dmarc=pass header.from=...`` (RFC 7489 §11.2).

        ``policy.dmarc`` carries the disposition applied (a common, unregistered
        extension read by filters; harmless to other readers).
        """
        props = [("header.from", self.from_domain)] if self.from_domain else []
        if self.result == "fail":
            props.append(("policy.dmarc", self.disposition))
        return CheckResult("dmarc", self.result, self.reason, tuple(props))


class RecordError(ValueError):
    """A record that is not a usable DMARC record (no valid ``v`` or ``p``)."""


@functools.cache
def default_psl() -> PublicSuffixList:
    """The PSL shipped with ``publicsuffixlist`` (offline; parsed once, ~0.1 s)."""
    return PublicSuffixList()


def organizational_domain(domain: str, psl: PublicSuffixList | None = None) -> str:
    """The Organizational Domain (RFC 7489 §3.2): public suffix plus one label.

    Unknown TLDs count as public suffixes (so ``mail.b.test`` → ``b.test``); a name that
    is itself a public suffix is its own organizational domain. Memoised for the default
    PSL (``ORG_CACHE_SIZE`` names, LRU); a given ``psl`` is asked every time.
    """
    name = domain.lower().rstrip(".")
    if psl is None:
        return _default_org(name)
    return _org(name, psl)


def _org(name: str, psl: PublicSuffixList) -> str:
    private = psl.privatesuffix(name)
    return private if isinstance(private, str) else name


@functools.lru_cache(maxsize=ORG_CACHE_SIZE)
def _default_org(name: str) -> str:
    return _org(name, default_psl())


def _tags(text: str) -> list[tuple[str, str]]:
    out = []
    for part in text.split(";"):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep:
            raise RecordError(f"not a tag=value pair: {part.strip()!r}")
        out.append((key.strip().lower(), value.strip()))
    return out


def is_dmarc(text: str) -> bool:
    """Does the TXT record start with ``v=DMARC1`` (§6.6.3 steps 2 and 4)?"""
    key, sep, value = text.partition(";")[0].partition("=")
    return bool(sep) and key.strip() == "v" and value.strip() == "DMARC1"


def parse_record(text: str) -> DmarcRecord:
    """Parse a DMARC record (RFC 7489 §6.3, grammar §6.4).

    Raises RecordError without a valid ``v`` and ``p`` (unless ``rua`` is present, then
    ``p=none`` is assumed, §6.6.3 step 6). Bad optional tags take their defaults.
    Memoised by exact text (see the module docstring); the result is shared, immutable.
    """
    return _parser(text)


def _parse(text: str) -> DmarcRecord:
    if not is_dmarc(text):
        raise RecordError("record does not start with v=DMARC1")
    tags = dict(reversed(_tags(text)))  # the first occurrence of a tag wins
    rua = tuple(u.strip() for u in tags.get("rua", "").split(",") if ":" in u)
    p = tags.get("p", "").lower()
    sp: str | None = tags.get("sp", "").lower() or None
    if p not in POLICIES or (sp is not None and sp not in POLICIES):
        if not rua:
            raise RecordError(f"invalid p={tags.get('p')!r} or sp={tags.get('sp')!r}")
        p, sp = "none", None
    adkim = tags.get("adkim", "r").lower()
    aspf = tags.get("aspf", "r").lower()
    try:
        pct = int(tags.get("pct", "100"))
    except ValueError:
        pct = 100
    return DmarcRecord(
        p=p,
        sp=sp,
        adkim=adkim if adkim in ("r", "s") else "r",
        aspf=aspf if aspf in ("r", "s") else "r",
        pct=pct if 0 <= pct <= 100 else 100,
        rua=rua,
        text=text,
    )


def aligned(identifier: str, author: str, mode: str, psl: PublicSuffixList | None = None) -> bool:
    """Identifier alignment (RFC 7489 §3.1): strict = same name, relaxed = same org domain."""
    a, b = identifier.lower().rstrip("."), author.lower().rstrip(".")
    if not a or not b:
        return False
    if mode == "s":
        return a == b
    return organizational_domain(a, psl) == organizational_domain(b, psl)


async def _discover(resolver: Resolver, domain: str) -> tuple[str, list[str], str]:
    """(status, DMARC records at ``_dmarc.domain``, error)."""
    answer = await resolver.txt("_dmarc." + domain)
    if answer.kind == Status.TEMPFAIL:
        return "temperror", [], answer.error
    return "ok", [t for t in answer.texts if is_dmarc(t)], ""


async def published(
    from_domain: str, resolver: Resolver, psl: PublicSuffixList | None = None
) -> str:
    """Does a usable DMARC policy cover ``from_domain`` (§6.6.3 discovery, with the
    organizational-domain fallback)? ``"record"``, ``"none"`` (no record, several, or a
    broken one) or ``"temperror"``."""
    try:
        author = to_ascii(from_domain)
    except ValueError:
        return "none"
    status, records, _ = await _discover(resolver, author)
    org = organizational_domain(author, psl)
    if status == "ok" and not records and org != author:
        status, records, _ = await _discover(resolver, org)
    if status == "temperror":
        return status
    if len(records) != 1:
        return "none"
    try:
        parse_record(records[0])
    except RecordError:
        return "none"
    return "record"


async def evaluate(
    from_domain: str,
    *,
    spf_result: str,
    spf_domain: str,
    dkim: Sequence[tuple[str, str]],
    resolver: Resolver,
    psl: PublicSuffixList | None = None,
    rng: Callable[[], float] = random.random,
) -> DmarcResult:
    """Evaluate DMARC for a message whose RFC5322.From domain is ``from_domain``.

    ``spf_result``/``spf_domain``: SPF's result and the domain it authenticated (the
    MAIL FROM domain, or HELO when MAIL FROM is empty). ``dkim``: (result, d=) for each
    signature. ``rng`` returns [0, 1) for pct sampling (§6.6.4); injectable for tests.
    DNS trouble → ``temperror`` (the caller chooses fail-open or 4yz, §6.6.3).
    """
    try:
        author = to_ascii(from_domain)
    except ValueError:
        return DmarcResult("permerror", reason=f"bad From domain {from_domain!r}")
    org = organizational_domain(author, psl)
    base = DmarcResult("none", from_domain=author, org_domain=org)
    status, records, error = await _discover(resolver, author)
    record_domain = author
    if status == "ok" and not records and org != author:
        record_domain = org  # §6.6.3 step 3: fall back to the organizational domain
        status, records, error = await _discover(resolver, org)
    if status == "temperror":
        return replace(base, result="temperror", reason=error)
    if len(records) != 1:
        why = "no DMARC record" if not records else "multiple DMARC records"
        return replace(base, reason=why)
    try:
        record = parse_record(records[0])
    except RecordError as exc:
        return replace(base, result="permerror", record_domain=record_domain, reason=str(exc))

    spf_ok = spf_result.lower() == "pass" and aligned(spf_domain, author, record.aspf, psl)
    dkim_domain = next(
        (d for res, d in dkim if res.lower() == "pass" and aligned(d, author, record.adkim, psl)),
        "",
    )
    subdomain = record_domain != author  # sp applies to subdomains via the org record
    policy = (record.sp or record.p) if subdomain else record.p
    common = replace(
        base,
        record_domain=record_domain,
        spf_aligned=spf_ok,
        dkim_aligned=bool(dkim_domain),
        dkim_domain=dkim_domain,
        pct=record.pct,
        record=record,
        policy=policy,
    )
    if spf_ok or dkim_domain:
        return replace(
            common, result="pass", reason="aligned " + ("dkim" if dkim_domain else "spf")
        )
    applied = rng() * 100 < record.pct
    disposition = policy
    if not applied:  # §6.6.4: one step down, reject → quarantine → none
        disposition = {"reject": "quarantine"}.get(policy, "none")
    return replace(
        common,
        result="fail",
        disposition=disposition,
        pct_applied=applied,
        reason="no aligned SPF or DKIM pass",
    )


def from_domain(header_section: bytes | str) -> str | None:
    """The RFC5322.From domain, or None when there is no single author domain.

    Policy (RFC 7489 §6.6.1 lets receivers choose): exactly one From field holding exactly
    one address with a valid domain is required. Zero or several From fields, a From with
    several addresses (or a group), or an unparseable address give None; the caller should
    treat that as a DMARC permerror and reject (550 5.7.1), because any domain it picked
    could be the one that was not authenticated.
    """
    values = [value for name, value in fields(header_section) if name.lower() == "from"]
    if len(values) != 1:
        return None
    unfolded = values[0].replace("\r", "").replace("\n", "")
    addresses = [addr for _, addr in getaddresses([unfolded]) if addr]
    # A group ("name: a@x, b@y;") is never a single author: look for ":" outside quotes
    # and angle brackets.
    bare = re.sub(r"<[^>]*>", "", re.sub(r'"(?:[^"\\]|\\.)*"', "", unfolded))
    if len(addresses) != 1 or ":" in bare:
        return None
    local, at, domain = addresses[0].rpartition("@")
    if not at or not local or not domain:
        return None
    try:
        return to_ascii(domain.strip())
    except ValueError:
        return None


_parser = CachedParser(
    _parse, RecordError, size=RECORD_CACHE_SIZE, max_text=MAX_CACHED_RECORD, caught=RecordError
)
_parse_cached = _parser.cached  # text → record or error message (bounded: cache_info())


__all__ = [
    "DmarcRecord",
    "DmarcResult",
    "RecordError",
    "aligned",
    "default_psl",
    "evaluate",
    "from_domain",
    "is_dmarc",
    "organizational_domain",
    "parse_record",
    "published",
]
