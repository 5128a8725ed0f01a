"""The ``[submission]`` section: how submitted mail is rewritten (RFC 6409 §8).

Owns ``SubmissionConfig`` and ``build_submission``. ``kittiwake.config`` puts it on
``Config.submission``; ``app`` turns it into ``cleanup.rewrite.RewriteSettings`` and the
``kittiwake sendmail`` command reads the domain for unqualified addresses from it.
Not security sensitive: it only names a domain and a switch.
"""

from __future__ import annotations

from dataclasses import dataclass

from kittiwake.config_check import Table, domain_name

SECTION_KEYS: dict[str, tuple[str, ...]] = {
    "submission": ("rewrite_domain", "add_missing_headers"),
}


@dataclass(frozen=True, slots=True)
class SubmissionConfig:
    """``rewrite_domain`` qualifies bare local parts (``alice`` → ``alice@<domain>``) in the
    headers of submitted mail and in ``sendmail``'s addresses, and is the domain of
    ``sendmail``'s default sender; default: the first of ``local.domains``.
    ``add_missing_headers`` adds ``Date`` (RFC 6409 §8.2) and ``Message-ID`` (§8.3) when
    a submitted message lacks them (and ``From`` for ``sendmail``)."""

    rewrite_domain: str = "localhost"  # matches LocalConfig's default domains
    add_missing_headers: bool = True


def build_submission(table: Table, local_domains: tuple[str, ...]) -> SubmissionConfig:
    given = table.get("rewrite_domain")
    if given is None:
        domain = local_domains[0] if local_domains else SubmissionConfig().rewrite_domain
    else:
        domain = domain_name(table.key("rewrite_domain"), given)
    return SubmissionConfig(
        rewrite_domain=domain,
        add_missing_headers=table.boolean("add_missing_headers", True),
    )
