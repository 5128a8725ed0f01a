"""The built-in sender-authentication and anti-spam checks as policy plugins (issue 5).

Owns ``Services`` (what the server shares with its checks: resolver, hostname, data
directory, the store's greylisting state), ``bound_factories(services)`` (name → factory,
for ``plugins.build_checks(bound=...)``) and the plugin classes ``DkimVerify`` (DATA,
RFC 6376), ``ArcVerify`` (DATA, RFC 8617), ``Dmarc`` (DATA, RFC 7489) and ``AuthResults``
(DATA, RFC 8601), plus factories for ``Spf`` (HELO, MAIL and DATA: ``policy.spf_check``),
``Dnsbl`` (connect) and ``Greylist`` (RCPT). Their names are listed in
``plugins.SERVER_BOUND``: they exist only with the server's services, so no check ever
queries the system resolver.

Authenticated sessions and ``Services.exempt`` clients (mynetworks) skip SPF, DKIM
verification, DMARC and the A-R field: their mail is ours (and signed after the checks).
Policy choices (issue 5: "document the choice"): an SPF ``fail`` is refused (550 5.7.23)
at the end of DATA only when no DMARC policy decides (``spf_check``, option ``on_fail``);
DMARC ``p=reject`` → 550 5.7.1, ``quarantine`` → Junk folder, DNS trouble → recorded as
temperror and the mail goes on (fail open, RFC 7489 §6.6.3 leaves it open).
The A-R header is added above our Received line; forged A-R fields claiming our
authserv-id are removed by the session's DATA stage (``smtpd.datastage``).
Security: HIGH (these checks decide what is accepted as authentic).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, cast

from kittiwake.envelope import Reply, SessionInfo
from kittiwake.greylisting import GreylistState, Rules
from kittiwake.net.dns import Resolver
from kittiwake.policy import arc, dkim, dmarc
from kittiwake.policy.authres import build_header
from kittiwake.policy.dnsbl import Dnsbl, ZoneConfig, dnswl_listed
from kittiwake.policy.greylist import Greylist
from kittiwake.policy.message import MessageContext, header_section
from kittiwake.policy.results import CheckResult, Results, current_results
from kittiwake.policy.spf_check import Spf, fail_policy, spf_domain
from kittiwake.policy.verdict import CONTINUE, Action, Verdict, add_header, found, quarantine

log = logging.getLogger("kittiwake.policy")

__all__ = [
    "ArcVerify",
    "AuthResults",
    "DkimVerify",
    "Dmarc",
    "Services",
    "bound_factories",
]

AR_METHODS = ("spf", "dkim", "dmarc", "arc", "iprev", "auth")  # what goes into A-R


@dataclass(frozen=True, slots=True)
class Services:
    """Shared server state handed to the built-in checks."""

    resolver: Resolver
    hostname: str
    data_dir: Path
    exempt: Callable[[SessionInfo], bool] | None = None  # e.g. mynetworks (greylisting)
    greylist_state: Callable[[], GreylistState] | None = None  # the store's (greylisting)
    # Filled while the chain is built: is an enforcing ``dmarc`` check configured? (SPF's
    # on_fail = "dmarc" leaves the decision to DMARC only when one is.)
    enforcing: set[str] = field(default_factory=set)
    # ``trusted``'s answers per SessionInfo object (by identity; see there).
    exempt_memo: dict[int, tuple[SessionInfo, bool]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )


def _options(options: Mapping[str, object], known: tuple[str, ...]) -> None:
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)}")


def _bool(options: Mapping[str, object], key: str, default: bool) -> bool:
    value = options.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false")
    return value


def _number(options: Mapping[str, object], key: str, default: float) -> float:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} must be a number")
    return float(value)


_EXEMPT_MEMO = 1024  # sessions remembered by ``trusted`` (then the memo starts over)


def trusted(services: Services, session: SessionInfo) -> bool:
    """Our own users (authenticated) and ``mynetworks`` clients: their mail is not
    checked for SPF/DKIM/DMARC here (it is signed, if at all, after these checks).

    ``services.exempt`` is asked once per ``SessionInfo`` object, not once per check: a
    session's info is frozen and replaced (never changed) when HELO, STARTTLS or AUTH
    change it, so a new object is asked again. The memo holds the object itself, so an
    ``id`` is never reused while remembered; ``exempt`` must not depend on ``extra``.
    """
    if session.auth_user is not None:
        return True
    if services.exempt is None:
        return False
    memo = services.exempt_memo
    hit = memo.get(id(session))
    if hit is not None and hit[0] is session:
        return hit[1]
    answer = services.exempt(session)
    if len(memo) >= _EXEMPT_MEMO:
        memo.clear()
    memo[id(session)] = (session, answer)
    return answer


# ---------------------------------------------------------------------------- DKIM


class _MessageCheck:
    """A DATA-stage check over the whole message: skips our own mail, and reads the
    message from memory when it is there (small ones verify inline), else streams it."""

    name = ""

    def __init__(self, services: Services, *, max_size: int = dkim.DEFAULT_MAX_SIZE) -> None:
        self.services = services
        self.max_size = max_size

    async def data(self, ctx: MessageContext) -> Verdict:
        if trusted(self.services, ctx.session):
            return CONTINUE
        if ctx.message_bytes is not None:
            return await self.check(ctx.message_bytes)
        with ctx.open_body() as stream:
            return await self.check(stream)

    async def check(self, message: bytes | BinaryIO) -> Verdict:
        raise NotImplementedError


class DkimVerify(_MessageCheck):
    """DATA stage: verify every DKIM-Signature (RFC 6376 §6); one result per signature."""

    name = "dkim"

    async def check(self, message: bytes | BinaryIO) -> Verdict:
        resolver = self.services.resolver
        records = []
        for r in await dkim.verify(message, resolver=resolver, max_size=self.max_size):
            props = [("header.d", r.header_d or r.domain)] if (r.header_d or r.domain) else []
            if r.header_i:
                props.append(("header.i", r.header_i))
            if r.selector:
                props.append(("header.s", r.selector))
            if r.header_b:
                props.append(("header.b", r.header_b))
            records.append(CheckResult("dkim", r.result, r.reason, tuple(props)))
        return found(*records)


# ----------------------------------------------------------------------------- ARC


class ArcVerify(_MessageCheck):
    """DATA stage: validate the ARC chain (RFC 8617 §5.2); recorded (``arc=...``) for
    the A-R field and for local policy, never a refusal by itself (§7.2)."""

    name = "arc"

    async def check(self, message: bytes | BinaryIO) -> Verdict:
        resolver = self.services.resolver
        result = await arc.verify_chain(message, resolver, max_size=self.max_size)
        return found(result.check_result())


# --------------------------------------------------------------------------- DMARC


class Dmarc:
    """DATA stage: DMARC from the SPF and DKIM results already recorded (RFC 7489 §6.6)."""

    name = "dmarc"

    def __init__(self, services: Services, *, enforce: bool = True) -> None:
        self.services = services
        self.enforce = enforce

    async def data(self, ctx: MessageContext) -> Verdict:
        if trusted(self.services, ctx.session):
            return CONTINUE
        author = dmarc.from_domain(header_section(ctx))
        if author is None:  # §6.6.1: no single author domain; recorded, not refused
            return found(CheckResult("dmarc", "permerror", "no single RFC5322.From domain"))
        results = ctx.results
        spf_result = results.get("spf")
        outcome = await dmarc.evaluate(
            author,
            spf_result=spf_result.result if spf_result else "none",
            spf_domain=spf_domain(spf_result),
            dkim=[(r.result, r.property("header.d") or "") for r in results.all("dkim")],
            resolver=self.services.resolver,
        )
        record = outcome.check_result()
        if outcome.result != "fail" or not self.enforce:
            return found(record)
        if outcome.disposition == "reject":
            text = f"Rejected by DMARC policy for {outcome.from_domain}"
            return Verdict(Action.REJECT, Reply(550, "5.7.1", text), outcome.reason, (), (record,))
        if outcome.disposition == "quarantine":
            return quarantine(f"p=quarantine for {outcome.from_domain}", record)
        return found(record)


# --------------------------------------------------------- Authentication-Results


class AuthResults:
    """DATA stage: our Authentication-Results field (RFC 8601 §2.2); configure it after
    the checks whose results it reports."""

    name = "authres"

    def __init__(self, services: Services) -> None:
        self.services = services

    async def data(self, ctx: MessageContext) -> Verdict:
        if trusted(self.services, ctx.session):
            return CONTINUE
        return add_header(
            "Authentication-Results", authres_value(self.services.hostname, ctx.results)
        )


def authres_value(authserv_id: str, results: Results | None) -> str:
    """The A-R field value (unfolded; the writer folds) for the recorded results."""
    wanted = [r for r in (results or current_results() or Results()) if r.method in AR_METHODS]
    try:
        field = build_header(authserv_id, wanted)
    except ValueError:  # a plugin's malformed property: report the methods without them
        field = build_header(authserv_id, [CheckResult(r.method, r.result) for r in wanted])
    value = field.partition(":")[2].strip()
    return value.replace(";\r\n\t", "; ")


# ------------------------------------------------------------------------ factories


def _spf(options: Mapping[str, object], services: Services) -> Spf:
    _options(options, ("on_fail", "on_softfail", "check_helo", "time_limit"))
    return Spf(
        services.resolver,
        services.hostname,
        lambda session: trusted(services, session),
        dmarc_enforced=lambda: "dmarc" in services.enforcing,
        on_fail=fail_policy(options, "on_fail", "dmarc"),
        on_softfail=fail_policy(options, "on_softfail", "record"),
        check_helo=_bool(options, "check_helo", True),
        time_limit=_number(options, "time_limit", 8.0),
    )


def _dkim(options: Mapping[str, object], services: Services) -> DkimVerify:
    _options(options, ("max_size",))
    return DkimVerify(services, max_size=int(_number(options, "max_size", dkim.DEFAULT_MAX_SIZE)))


def _arc(options: Mapping[str, object], services: Services) -> ArcVerify:
    _options(options, ("max_size",))
    return ArcVerify(services, max_size=int(_number(options, "max_size", dkim.DEFAULT_MAX_SIZE)))


def _dmarc(options: Mapping[str, object], services: Services) -> Dmarc:
    _options(options, ("enforce",))
    enforce = _bool(options, "enforce", True)
    if enforce:
        services.enforcing.add("dmarc")
    return Dmarc(services, enforce=enforce)


def _authres(options: Mapping[str, object], services: Services) -> AuthResults:
    _options(options, ())
    return AuthResults(services)


def _zone(raw: object) -> ZoneConfig:
    if isinstance(raw, str):
        return ZoneConfig(raw)
    if not isinstance(raw, Mapping):
        raise ValueError("zones: each zone is a name or a table")
    table = cast(Mapping[str, object], raw)
    _options(table, ("zone", "kind", "codes", "weight"))
    codes = table.get("codes", {"127.0.0.2": "listed"})
    if not isinstance(codes, Mapping):
        raise ValueError("zones: codes must be a table")
    kind = table.get("kind", "block")
    if kind not in ("block", "allow"):
        raise ValueError("zones: kind must be 'block' or 'allow'")
    return ZoneConfig(
        str(table.get("zone", "")),
        kind,
        {str(k): str(v) for k, v in cast(Mapping[object, object], codes).items()},
        _number(table, "weight", 1.0),
    )


def _dnsbl(options: Mapping[str, object], services: Services) -> Dnsbl:
    _options(options, ("zones", "threshold", "cache_ttl"))
    zones = options.get("zones", [])
    if not isinstance(zones, list) or not zones:
        raise ValueError("zones: a non-empty list is required")
    return Dnsbl(
        [_zone(z) for z in zones],
        services.resolver,
        threshold=_number(options, "threshold", 1.0),
        cache_ttl=_number(options, "cache_ttl", 300.0),
    )


def _greylist(options: Mapping[str, object], services: Services) -> Greylist:
    keys = ("delay", "retry_window", "auto_whitelist_after", "whitelist_ttl")
    _options(options, keys)
    outside = services.exempt

    def exempt(session: SessionInfo) -> bool:
        return dnswl_listed(session) or (outside is not None and outside(session))

    rules = Rules(  # checked before the state is asked for
        delay=_number(options, "delay", 300.0),
        retry_window=_number(options, "retry_window", 4 * 3600.0),
        auto_whitelist_after=int(_number(options, "auto_whitelist_after", 5)),
        whitelist_ttl=_number(options, "whitelist_ttl", 35 * 86400.0),
    )
    if services.greylist_state is None:
        raise ValueError("greylisting keeps its state in the queue store, and none is open")
    return Greylist(services.greylist_state(), rules, exempt=exempt)


_FACTORIES: dict[str, Callable[[Mapping[str, object], Services], object]] = {
    "spf": _spf,
    "dkim": _dkim,
    "dmarc": _dmarc,
    "arc": _arc,
    "authres": _authres,
    "dnsbl": _dnsbl,
    "greylist": _greylist,
}


def bound_factories(services: Services) -> dict[str, Callable[[Mapping[str, object]], object]]:
    """``plugins.build_checks(bound=...)`` entries for every built-in of this module."""

    def bind(
        factory: Callable[[Mapping[str, object], Services], object],
    ) -> Callable[[Mapping[str, object]], object]:
        return lambda options: factory(options, services)

    return {name: bind(factory) for name, factory in _FACTORIES.items()}
