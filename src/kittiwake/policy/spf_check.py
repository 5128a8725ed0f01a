"""The ``spf`` policy check: RFC 7208 on the HELO and MAIL FROM identities, and what a
``fail`` leads to.

Owns ``Spf`` (hooks ``helo``, ``mail``, ``data``), ``FailPolicy`` and ``spf_domain``.
The evaluation itself is ``policy.spf`` (every mechanism, macros, the 10-lookup and
2-void-lookup limits of §4.6.4).

Identities (RFC 7208 §2.3, §2.4): the HELO name is checked at ``HELO``/``EHLO`` and
recorded as ``spf-helo`` (logged, readable by later checks); the MAIL FROM identity —
or, for the null sender, the HELO identity — is checked at ``MAIL`` and recorded as
``spf``, the one result DMARC (RFC 7489 §4.1) and our Authentication-Results use.

What a ``fail`` (or ``softfail``) does is the ``on_fail`` (``on_softfail``) option:

* ``"dmarc"`` — the default for ``fail`` (issue 5's choice): nothing is refused at
  ``MAIL``; at the end of DATA the message is refused (550 5.7.23, RFC 7372) unless DMARC
  decides instead, i.e. an enforcing ``dmarc`` check is configured and the From: domain
  (or its organizational domain) publishes a DMARC record. Then DMARC's verdict stands:
  a forward whose DKIM signature aligns passes although SPF failed (RFC 7489 §10.1
  warns that rejecting on SPF alone defeats this), and ``p=none`` means the domain
  asked for delivery. A DMARC DNS error does not refuse (fail open, as ``dmarc`` does).
* ``"reject"`` — 550 5.7.23 at ``MAIL`` (the strict line; forwards without SRS break).
* ``"record"`` — the default for ``softfail`` (RFC 7208 §8.5: not a reason to refuse):
  the result is only recorded.

Security: HIGH (decides whether a forged envelope sender is accepted).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

from kittiwake.envelope import Reply, SessionInfo
from kittiwake.net.dns import Resolver
from kittiwake.policy import dmarc, spf
from kittiwake.policy.message import MessageContext, header_section
from kittiwake.policy.networks import client_address
from kittiwake.policy.results import CheckResult, current_results
from kittiwake.policy.verdict import CONTINUE, Action, Verdict, found

__all__ = ["FAIL_POLICIES", "PENDING", "FailPolicy", "Spf", "spf_domain"]

FailPolicy = Literal["dmarc", "reject", "record"]
FAIL_POLICIES: tuple[FailPolicy, ...] = ("dmarc", "reject", "record")
PENDING = "spf-pending"  # the result a deferred refusal waits under until DATA


def spf_domain(result: CheckResult | None) -> str:
    """The domain SPF authenticated (MAIL FROM domain, or HELO), for DMARC."""
    if result is None:
        return ""
    mailfrom = result.property("smtp.mailfrom")
    if mailfrom:
        return mailfrom.rpartition("@")[2]
    return result.property("smtp.helo") or ""


def _refusal_text(result: spf.SpfResult) -> str:
    """The domain's exp= text, or ours, for 550 5.7.23 "SPF validation failed" (RFC 7372)."""
    return result.explanation or f"SPF {result.result} for {result.domain}: sender not permitted"


class Spf:
    """The check; ``trusted(session)`` (authenticated, mynetworks) sessions are skipped."""

    name = "spf"

    def __init__(
        self,
        resolver: Resolver,
        receiver: str,
        trusted: Callable[[SessionInfo], bool],
        *,
        dmarc_enforced: Callable[[], bool] = lambda: True,
        on_fail: FailPolicy = "dmarc",
        on_softfail: FailPolicy = "record",
        check_helo: bool = True,
        time_limit: float = 8.0,
    ) -> None:
        self.resolver = resolver
        self.receiver = receiver  # our name, for the %{r} macro
        self._trusted = trusted
        self._dmarc_enforced = dmarc_enforced  # is a (rejecting) dmarc check configured?
        self.on_fail = on_fail
        self.on_softfail = on_softfail
        self.check_helo = check_helo
        self.time_limit = time_limit  # under the chain's 10 s: slow DNS → spf=temperror

    def _skip(self, session: SessionInfo) -> bool:
        # Ours (authenticated, mynetworks), or a local socket: nothing to check.
        return self._trusted(session) or client_address(session.client_ip) is None

    async def _helo_result(self, session: SessionInfo) -> spf.SpfResult:
        return await spf.check_helo(
            session.client_ip,
            session.helo,
            self.resolver,
            receiver=self.receiver,
            timeout=self.time_limit,
        )

    async def helo(self, session: SessionInfo) -> Verdict:
        """RFC 7208 §2.3: the HELO identity, recorded (once per name) as ``spf-helo``."""
        if not self.check_helo or self._skip(session):
            return CONTINUE
        earlier = current_results()
        if earlier is not None and any(
            r.property("smtp.helo") == session.helo for r in earlier.all("spf-helo")
        ):
            return CONTINUE  # EHLO again after STARTTLS: same name, same answer
        result = await self._helo_result(session)
        props = (("smtp.helo", session.helo),)
        return found(CheckResult("spf-helo", result.result, result.reason, props))

    async def mail(self, session: SessionInfo, sender: str) -> Verdict:
        if self._skip(session):
            return CONTINUE
        if sender:
            result = await spf.check_host(
                session.client_ip,
                sender.rpartition("@")[2],
                sender,
                resolver=self.resolver,
                helo=session.helo,
                receiver=self.receiver,
                timeout=self.time_limit,
            )
            prop = ("smtp.mailfrom", sender)
        else:  # §2.4: the null sender is checked as postmaster@HELO
            result = await self._helo_result(session)
            prop = ("smtp.helo", session.helo)
        record = CheckResult("spf", result.result, result.reason, (prop,))
        policy = {"fail": self.on_fail, "softfail": self.on_softfail}.get(result.result, "record")
        if policy == "reject":
            reply = Reply(550, "5.7.23", _refusal_text(result))
            return Verdict(Action.REJECT, reply, str(record), (), (record,))
        if policy == "dmarc":
            pending = CheckResult(PENDING, result.result, _refusal_text(result))
            return found(record, pending)
        return found(record)

    async def data(self, ctx: MessageContext) -> Verdict:
        """Refuse a pending SPF failure unless DMARC decides (see the module doc)."""
        pending = ctx.results.get(PENDING)
        if pending is None:
            return CONTINUE
        decider = await self._dmarc_decides(ctx)
        if decider:
            return found(CheckResult(PENDING, "none", f"DMARC decides: {decider}"))
        text = pending.reason or "SPF validation failed"
        refused = CheckResult(PENDING, "policy", "refused: no DMARC policy decides")
        return Verdict(Action.REJECT, Reply(550, "5.7.23", text), str(refused), (), (refused,))

    async def _dmarc_decides(self, ctx: MessageContext) -> str:
        """Why DMARC decides this message, "" when it does not: the ``dmarc`` check ran
        and found a policy, or it runs later and the From: domain has a record."""
        if not self._dmarc_enforced():
            return ""  # nobody here enforces DMARC: SPF's word stands
        verdict = ctx.results.get("dmarc")
        if verdict is not None:  # the dmarc check ran first
            usable = verdict.result in ("pass", "fail", "temperror")
            return f"dmarc={verdict.result}" if usable else ""
        author = dmarc.from_domain(header_section(ctx))
        if author is None:
            return ""
        status = await dmarc.published(author, self.resolver)
        return "" if status == "none" else f"DMARC record of {author}: {status}"


def fail_policy(options: Mapping[str, object], key: str, default: FailPolicy) -> FailPolicy:
    """The ``on_fail``/``on_softfail`` option (ValueError names the choices)."""
    value = options.get(key, default)
    for choice in FAIL_POLICIES:
        if value == choice:
            return choice
    raise ValueError(f"{key} must be one of {', '.join(FAIL_POLICIES)}")
