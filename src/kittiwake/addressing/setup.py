"""Builds the mailbox table and the address directory from a ``Config`` (for ``app``).

Owns ``build_directory``. Not security sensitive by itself: it only wires the values that
``config_addressing`` validated into ``LocalMailboxes``, ``Srs`` and ``Directory``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from kittiwake.addressing.directory import Directory
from kittiwake.addressing.srs import Srs
from kittiwake.config import Config
from kittiwake.delivery.local import LocalMailboxes


def build_directory(
    config: Config,
    *,
    mailbox_exists: Callable[[str], bool] | None = None,
    has_users: Callable[[], bool] | None = None,
    clock: Callable[[], float] = time.time,
) -> tuple[LocalMailboxes, Directory]:
    """``(mailboxes, directory)``: the table the Maildir agent delivers with, and the
    directory the RCPT check and cleanup's expansion ask. ``mailbox_exists`` adds the
    mailboxes of a user store (``local@domain``, lower case → bool); with it, an empty
    ``local.users`` no longer means "every local part exists" — unless ``has_users`` is
    given too: then the catch-all holds while the store is empty (the default set-up)."""
    a = config.addressing
    mailboxes = LocalMailboxes(
        config.data_dir / "mail",
        config.local.domains,
        config.local.users,
        config.local.postmaster,
        virtual_domains=a.virtual_domains,
        virtual_mailboxes=a.virtual_mailboxes,
        recipient_delimiter=a.recipient_delimiter,
        mailbox_exists=mailbox_exists,
        has_users=has_users,
    )
    srs = None
    if a.srs.enabled:
        srs = Srs(
            (a.srs.secret, *a.srs.old_secrets),
            a.srs.domain_or(config.local.domains[0]),
            max_age_days=a.srs.max_age_days,
            clock=clock,
        )
    directory = Directory(
        mailboxes, a.aliases, srs=srs, own_addresses=[lc.host for lc in config.listeners]
    )
    return mailboxes, directory
