"""Relay acceptance at RCPT: local mailboxes, relay domains, mynetworks, AUTH — never open.

Addresses reach the policy the way the protocol core hands them over: each test parses its
``RCPT TO:`` argument with the real grammar (``proto.params.parse_rcpt``), so source routes
are dropped and malformed paths never get this far, exactly as on the wire.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from kittiwake.delivery.local import LocalMailboxes
from kittiwake.envelope import Recipient, Reply, SessionInfo
from kittiwake.policy import Action, PolicyChain
from kittiwake.policy.networks import Networks
from kittiwake.policy.recipients import (
    NO_SUCH_USER,
    RELAY_DENIED,
    LocalRecipients,
    Recipients,
    error_reply,
)
from kittiwake.proto.events import RcptTo
from kittiwake.proto.params import parse_rcpt

STRANGER = SessionInfo("203.0.113.9", 40000, "192.0.2.1", 25)
NEIGHBOUR = SessionInfo("192.0.2.77", 40000, "192.0.2.1", 25)
MAPPED_NEIGHBOUR = SessionInfo("::ffff:192.0.2.77", 40000, "::", 25)
AUTHENTICATED = SessionInfo("203.0.113.9", 40000, "192.0.2.1", 587, auth_user="alice")


def rcpt(path: str) -> Recipient:
    """``TO:<...>`` through the real RCPT grammar (ESMTP, SMTPUTF8 allowed)."""
    result = parse_rcpt(f"TO:{path}", esmtp=True, smtputf8=True)
    assert isinstance(result, RcptTo), f"{path} did not parse: {result}"
    return result.recipient


@pytest.fixture
def mailboxes(tmp_path: Path) -> LocalMailboxes:
    return LocalMailboxes(tmp_path, ["example.org"], ["alice", "bob"], "postmaster")


@pytest.fixture
def policy(mailboxes: LocalMailboxes) -> Recipients:
    return Recipients(
        mailboxes,
        relay_domains={
            "relay.test": "smtp:[127.0.0.2]:2525",
            ".sub.test": "lmtp:127.0.0.1:24",
            "gone.test": "error:5.1.1 This domain no longer receives mail",
            "later.test": "error:4.3.2 Try again tomorrow",
            "void.test": "discard",
        },
        mynetworks=Networks.parse(["192.0.2.0/24", "2001:db8::/32"]),
    )


async def verdict(policy: Recipients, session: SessionInfo, path: str) -> Reply | None:
    """None for ACCEPT, else the reply (a CONTINUE would be a bug: this check decides)."""
    v = await policy.rcpt(session, "sender@example.net", rcpt(path))
    assert v.action in (Action.ACCEPT, Action.REJECT, Action.TEMPFAIL), v
    return None if v.action is Action.ACCEPT else v.reply


async def test_never_an_open_relay_by_default(mailboxes: LocalMailboxes) -> None:
    """The 0.1 construction (no relay domains, no mynetworks) relays for no one —
    not even loopback, and not an authenticated client when AUTH relaying is off."""
    default = LocalRecipients(mailboxes)
    for session in (
        STRANGER,
        NEIGHBOUR,
        SessionInfo("127.0.0.1", 1, "127.0.0.1", 25),
        SessionInfo("::1", 1, "::1", 25),
    ):
        for path in ("<x@example.net>", "<alice@example.org.evil.test>", "<x@[127.0.0.1]>"):
            assert await verdict(default, session, path) == RELAY_DENIED.reply
    no_auth = Recipients(mailboxes, relay_authenticated=False)
    assert await verdict(no_auth, AUTHENTICATED, "<x@example.net>") == RELAY_DENIED.reply
    assert await verdict(default, STRANGER, "<alice@example.org>") is None


async def test_local_mailboxes(policy: Recipients) -> None:
    assert await verdict(policy, STRANGER, "<alice@example.org>") is None
    assert await verdict(policy, STRANGER, "<Bob@EXAMPLE.ORG>") is None
    assert await verdict(policy, STRANGER, '<"alice"@example.org>') is None
    assert await verdict(policy, STRANGER, "<carol@example.org>") == NO_SUCH_USER.reply
    assert await verdict(policy, STRANGER, "<postmaster@example.org>") is None  # §4.5.1
    assert await verdict(policy, STRANGER, "<postmaster>") is None  # §4.1.1.3
    # Trusted clients get no special treatment for local mailboxes.
    assert await verdict(policy, NEIGHBOUR, "<carol@example.org>") == NO_SUCH_USER.reply


@pytest.mark.parametrize("session", [NEIGHBOUR, MAPPED_NEIGHBOUR, AUTHENTICATED])
async def test_trusted_clients_relay(policy: Recipients, session: SessionInfo) -> None:
    assert await verdict(policy, session, "<anyone@example.net>") is None
    assert await verdict(policy, session, "<x@[198.51.100.1]>") is None


async def test_strangers_do_not_relay(policy: Recipients) -> None:
    for path in ("<anyone@example.net>", "<x@relay.test.evil>", "<x@notrelay.test>"):
        assert await verdict(policy, STRANGER, path) == RELAY_DENIED.reply
    ipv6_stranger = SessionInfo("2001:db9::1", 1, "::1", 25)
    assert await verdict(policy, ipv6_stranger, "<anyone@example.net>") == RELAY_DENIED.reply
    ipv6_neighbour = replace(ipv6_stranger, client_ip="2001:db8::5")
    assert await verdict(policy, ipv6_neighbour, "<anyone@example.net>") is None


async def test_relay_domains_from_anyone(policy: Recipients) -> None:
    """We are the MX of [transport] domains: mail for them is accepted from the world."""
    assert await verdict(policy, STRANGER, "<anyone@relay.test>") is None
    assert await verdict(policy, STRANGER, "<anyone@RELAY.test>") is None
    assert await verdict(policy, STRANGER, "<x@a.sub.test>") is None  # .sub.test entry
    assert await verdict(policy, STRANGER, "<x@b.a.sub.test>") is None
    assert await verdict(policy, STRANGER, "<x@sub.test>") == RELAY_DENIED.reply  # not itself
    assert await verdict(policy, STRANGER, "<x@void.test>") is None  # discard: accepted
    assert await verdict(policy, STRANGER, "<x@xrelay.test>") == RELAY_DENIED.reply


async def test_error_transport_refuses_at_rcpt(policy: Recipients) -> None:
    assert await verdict(policy, STRANGER, "<x@gone.test>") == Reply(
        550, "5.1.1", "This domain no longer receives mail"
    )
    later = await verdict(policy, NEIGHBOUR, "<x@later.test>")
    assert later == Reply(450, "4.3.2", "Try again tomorrow")


@pytest.mark.parametrize(
    "path",
    [
        "<user%other.test@example.org>",  # the percent hack
        "<other.test!user@example.org>",  # a bang path
        '<"user@other.test"@example.org>',  # a quoted @
        '<"user%other.test"@example.org>',
        "<user%other.test@relay.test>",  # also for relay domains: the next hop might route it
    ],
)
async def test_routing_tricks_denied_to_strangers(policy: Recipients, path: str) -> None:
    assert await verdict(policy, STRANGER, path) == RELAY_DENIED.reply


async def test_routing_characters_from_trusted_clients(policy: Recipients) -> None:
    """A client that may relay anyway gains nothing from them: they are ordinary local
    parts (we never route on them), so the mailbox decides."""
    assert await verdict(policy, NEIGHBOUR, "<user%other.test@example.org>") == (NO_SUCH_USER.reply)
    assert await verdict(policy, NEIGHBOUR, "<user%other.test@relay.test>") is None


async def test_source_routes_are_ignored(policy: Recipients) -> None:
    """RFC 5321 §4.1.2 / Appendix C: the route is dropped; the mailbox is what counts."""
    assert rcpt("<@example.org:user@other.test>").address == "user@other.test"
    assert await verdict(policy, STRANGER, "<@example.org:user@other.test>") == (RELAY_DENIED.reply)
    assert await verdict(policy, STRANGER, "<@other.test,@x.test:alice@example.org>") is None


def test_double_at_never_parses() -> None:
    assert not isinstance(
        parse_rcpt("TO:<user@other.test@example.org>", esmtp=True, smtputf8=True), RcptTo
    )


async def test_through_the_chain_and_its_order(policy: Recipients) -> None:
    chain = PolicyChain([policy])
    assert chain.describe()[-1] == "rcpt: recipients"
    denied = await chain.rcpt(STRANGER, "", rcpt("<x@example.net>"))
    assert denied.reply == RELAY_DENIED.reply
    assert (await chain.rcpt(NEIGHBOUR, "", rcpt("<x@example.net>"))).action is Action.ACCEPT


def test_error_reply() -> None:
    assert error_reply("5.1.1 No such list") == Reply(550, "5.1.1", "No such list")
    assert error_reply("4.4.1  later ") == Reply(450, "4.4.1", "later")
    assert error_reply("") == Reply(550, "5.0.0", "Recipient address rejected")
    assert error_reply("go away") == Reply(550, "5.0.0", "go away")
    assert error_reply("5.7.1") == Reply(550, "5.7.1", "Recipient address rejected")
