"""Recipient placement and relay control: who may send mail to which recipient through us.

Security: HIGH — this is the last word on relaying. The default configuration is never an
open relay: with no ``relay.mynetworks``, no ``[transport]`` table and nobody
authenticated, only local mailboxes are accepted. Rules for ``RCPT TO:<address>``, in order:

1. the bare ``<postmaster>`` is always accepted (RFC 5321 §4.1.1.3);
1a. with an address directory (``AddressBook``, i.e. ``addressing.Directory``), an SRS
   address in our SRS domain is decided by its hash and age alone, from anyone: a valid one
   is accepted although it will be relayed outside (it is a bounce coming back to the
   sender we forwarded for — SRS exists for exactly that), an invalid or expired one is
   refused ``550 5.1.1``;
2. a recipient whose local part carries routing — ``%`` (the percent hack), ``!`` (a bang
   path) or ``@`` (``"user@other"@here``) after unquoting — in a domain we accept mail for
   is refused ``554 5.7.1`` unless the client may relay anyway (rule 5). We never route on
   them, but a later hop might (RFC 5321 §3.6.1 warns; Postfix's percent hack, old
   sendmails' bang paths), so an outsider gets no way in. A source route
   (``<@here:user@other>``) never gets this far: the grammar drops it (RFC 5321 §4.1.2,
   Appendix C) and the mailbox ``user@other`` is judged as what it is;
3. a domain in the ``[transport]`` table (exactly, or under a ``.parent`` entry — the
   router's own rule, ``queue.routing.Router``) is one we are the MX for (a relay domain):
   accepted from anyone, except that an ``error:`` transport refuses at once with its own
   reply (better than accepting and bouncing: no backscatter), and a ``local`` one goes on
   to the mailbox check;
4. a local domain (with a directory also a virtual domain, or an address literal of one
   of our own IP addresses): accepted when the mailbox exists — with a directory, also an
   alias, a sub-address or a catch-all (``addressing.directory`` says how) — else
   ``550 5.1.1``; postmaster is always a mailbox (RFC 5321 §4.5.1);
5. any other domain is relayed only for a client in ``relay.mynetworks`` or an
   authenticated session (RFC 6409 §5, RFC 5321 §3.6.2: relaying is a local decision);
6. else ``554 5.7.1 Relay access denied``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Protocol, runtime_checkable

from kittiwake.envelope import Recipient, Reply, SessionInfo
from kittiwake.net.dns import to_ascii
from kittiwake.policy.networks import NOBODY, Networks
from kittiwake.policy.verdict import ACCEPT, Action, Verdict, reject

NO_SUCH_USER = reject(550, "5.1.1", "Recipient address rejected: no such user here")
RELAY_DENIED = reject(554, "5.7.1", "Relay access denied")
ROUTING_DENIED = reject(
    554, "5.7.1", "Relay access denied", reason="routing characters in the local part"
)

_ROUTING_CHARS = frozenset("%!@")
# "error:" nexthop: an optional enhanced status code (RFC 3463), then the text.
_ERROR_RE = re.compile(r"(?:(?P<enhanced>[45]\.\d{1,3}\.\d{1,3})(?: |$))?(?P<text>.*)", re.S)


class Mailboxes(Protocol):
    def is_local_domain(self, domain: str) -> bool: ...
    def lookup(self, address: str) -> str | None: ...


@runtime_checkable
class AddressBook(Protocol):
    """Mailboxes with aliases and SRS (``addressing.Directory``): pass one as ``mailboxes``
    and rules 1a and 4 use it."""

    def is_local_domain(self, domain: str) -> bool: ...
    def lookup(self, address: str) -> str | None: ...
    def is_srs(self, address: str) -> bool: ...
    def check(self, address: str) -> Reply | None: ...


def unquote_local(local: str) -> str:
    """RFC 5321 §4.1.2 Quoted-string → its content (quoted-pairs resolved)."""
    if len(local) >= 2 and local[0] == local[-1] == '"':
        return re.sub(r"\\(.)", r"\1", local[1:-1])
    return local


def _normalize(domain: str) -> str:
    """A-labels, lower case, no final dot (as the config and the router keep domains)."""
    try:
        return to_ascii(domain)
    except ValueError:  # an address literal, or not a domain at all: compare as written
        return domain.lower().rstrip(".")


def error_reply(nexthop: str) -> Reply:
    """The reply of an ``error:`` transport (``"5.1.1 No such list"``): 550 for 5.x.x,
    450 for 4.x.x; without a code, ``550 5.0.0``."""
    m = _ERROR_RE.fullmatch(nexthop.strip())
    assert m is not None  # the pattern matches any text
    enhanced = m["enhanced"] or "5.0.0"
    text = " ".join(m["text"].split()) or "Recipient address rejected"
    return Reply(450 if enhanced[0] == "4" else 550, enhanced, text)


class Recipients:
    """The RCPT check described in the module docstring.

    ``relay_domains`` maps a domain to its transport (``Config.transport``: the domains we
    accept for and pass on); ``mynetworks`` are the clients that may relay without AUTH
    (``Config.relay.mynetworks``); ``relay_authenticated`` lets any authenticated session
    relay (issue 4 may narrow this per user).
    """

    name = "recipients"

    def __init__(
        self,
        mailboxes: Mailboxes,
        *,
        relay_domains: Mapping[str, str] = MappingProxyType({}),
        mynetworks: Networks = NOBODY,
        relay_authenticated: bool = True,
    ) -> None:
        self.mailboxes = mailboxes
        self.book = mailboxes if isinstance(mailboxes, AddressBook) else None
        self.relay_domains = {d.lower().rstrip("."): t for d, t in relay_domains.items()}
        self.relay_domains.pop("", None)
        self.mynetworks = mynetworks
        self.relay_authenticated = relay_authenticated

    def transport_for(self, domain: str) -> str | None:
        """The ``[transport]`` value for ``domain``: its own entry, else the nearest
        ``.parent`` entry (``a.b.example`` → ``.b.example`` → ``.example``), else None."""
        table = self.relay_domains
        found = table.get(domain)
        labels = domain.split(".")
        for i in range(1, len(labels)):
            if found is not None:
                break
            found = table.get("." + ".".join(labels[i:]))
        return found

    def may_relay(self, session: SessionInfo) -> bool:
        """True for a client allowed to send to any domain (mynetworks or authenticated)."""
        if self.relay_authenticated and session.auth_user is not None:
            return True
        return session.client_ip in self.mynetworks

    async def rcpt(self, session: SessionInfo, sender: str, recipient: Recipient) -> Verdict:
        address = recipient.address
        if "@" not in address:  # <postmaster> without a domain (RFC 5321 §4.1.1.3)
            return ACCEPT if address.lower() == "postmaster" else NO_SUCH_USER
        if self.book is not None and self.book.is_srs(address):
            return _answer(self.book.check(address), "srs")
        domain = _normalize(recipient.domain)
        transport = self.transport_for(domain)
        local_domain = self.mailboxes.is_local_domain(domain)
        if transport is None and not local_domain:
            return ACCEPT if self.may_relay(session) else RELAY_DENIED
        routing = _ROUTING_CHARS.intersection(unquote_local(recipient.local_part))
        if routing and not self.may_relay(session):
            return ROUTING_DENIED
        if transport is not None:
            kind, _, nexthop = transport.partition(":")
            if kind.strip().lower() == "error":
                return Verdict(Action.REJECT, error_reply(nexthop), "error transport")
            if kind.strip().lower() != "local":
                return ACCEPT  # a relay domain: the next hop decides about mailboxes
        if self.book is not None:
            return _answer(self.book.check(address), "directory")
        return ACCEPT if self.mailboxes.lookup(address) is not None else NO_SUCH_USER


def _answer(reply: Reply | None, reason: str) -> Verdict:
    if reply is None:
        return ACCEPT
    return Verdict(Action.REJECT if reply.is_permanent else Action.TEMPFAIL, reply, reason)


# The 0.1 name: ``LocalRecipients(mailboxes)`` is the local-only check (no relaying at all).
LocalRecipients = Recipients
