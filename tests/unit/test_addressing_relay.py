"""The RCPT check with the address directory: aliases, catch-all, virtual domains, own
address literals and SRS bounces are accepted; the open-relay tricks stay refused even
with a catch-all in the domain (addresses go through the real RCPT grammar first)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kittiwake.addressing import Directory, Srs
from kittiwake.delivery.local import LocalMailboxes
from kittiwake.envelope import Reply, SessionInfo
from kittiwake.policy import Action
from kittiwake.policy.networks import Networks
from kittiwake.policy.recipients import (
    RELAY_DENIED,
    ROUTING_DENIED,
    AddressBook,
    Recipients,
)
from kittiwake.proto.events import RcptTo
from kittiwake.proto.params import parse_rcpt

SECRET = "0123456789abcdef-secret"
STRANGER = SessionInfo("203.0.113.9", 40000, "192.0.2.1", 25)
NEIGHBOUR = SessionInfo("192.0.2.77", 40000, "192.0.2.1", 25)
AUTHENTICATED = SessionInfo("203.0.113.9", 40000, "192.0.2.1", 587, auth_user="alice")
NOW = [1_700_000_000.0]
SRS = Srs([SECRET], "example.org", clock=lambda: NOW[0])


@pytest.fixture
def policy(tmp_path: Path) -> Recipients:
    mb = LocalMailboxes(
        tmp_path,
        ["example.org"],
        ["alice", "bob"],
        "postmaster",
        virtual_domains=["virtual.test"],
        virtual_mailboxes=["vic@virtual.test"],
        recipient_delimiter="+",
    )
    directory = Directory(
        mb,
        {
            "info@example.org": ["alice@example.org", "carol@elsewhere.example"],
            "@example.org": ["bob@example.org"],  # a catch-all must not open any trick
            "sales@virtual.test": ["vic@virtual.test"],
        },
        srs=SRS,
        own_addresses=["192.0.2.1", "2001:db8::25"],
    )
    return Recipients(
        directory,
        relay_domains={"relay.test": "smtp:[127.0.0.2]:2525"},
        mynetworks=Networks.parse(["192.0.2.0/24"]),
    )


async def answer(policy: Recipients, session: SessionInfo, path: str) -> Reply | None:
    """None for ACCEPT; else the reply — from the policy, or from the RCPT grammar itself
    when the path does not even parse."""
    parsed = parse_rcpt(f"TO:{path}", esmtp=True, smtputf8=True)
    if not isinstance(parsed, RcptTo):
        assert parsed.code >= 500, parsed
        return parsed
    v = await policy.rcpt(session, "", parsed.recipient)
    assert v.action in (Action.ACCEPT, Action.REJECT), v
    return None if v.action is Action.ACCEPT else v.reply


def test_the_directory_is_an_address_book(policy: Recipients) -> None:
    assert isinstance(policy.mailboxes, AddressBook) and policy.book is policy.mailboxes


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("<user%other.example@example.org>", ROUTING_DENIED.reply),
        ('<"user@other.example"@example.org>', ROUTING_DENIED.reply),
        ("<other.example!user@example.org>", ROUTING_DENIED.reply),
        ("<@example.org:user@other.example>", RELAY_DENIED.reply),  # the route is dropped
        ("<@example.org,@virtual.test:user@other.example>", RELAY_DENIED.reply),
        ("<user@other.example@example.org>", None),  # not even a path: the grammar refuses
        ("<user@[192.0.2.99]>", RELAY_DENIED.reply),  # a literal that is not ours
        ("<user@[IPv6:2001:db8::99]>", RELAY_DENIED.reply),
        ("<user%other.example@[192.0.2.1]>", ROUTING_DENIED.reply),
        ("<user@example.org.other.example>", RELAY_DENIED.reply),
        ("<SRS0=abcd=2W=other.example=user@example.org>", None),  # forged SRS: 5.1.1
    ],
)
async def test_open_relay_tricks_refused_for_strangers(
    policy: Recipients, path: str, expected: Reply | None
) -> None:
    reply = await answer(policy, STRANGER, path)
    assert reply is not None and reply.is_permanent, path
    if expected is not None:
        assert reply == expected, path


@pytest.mark.parametrize(
    "path",
    [
        "<user%other.example@example.org>",
        "<user@[192.0.2.99]>",
        "<anyone@other.example>",
    ],
)
async def test_relay_clients_may(policy: Recipients, path: str) -> None:
    assert await answer(policy, NEIGHBOUR, path) is None
    assert await answer(policy, AUTHENTICATED, path) is None


@pytest.mark.parametrize(
    "path",
    [
        "<info@example.org>",  # an alias (one target outside)
        "<INFO+lists@Example.Org>",  # alias without the extension
        "<alice+tag@example.org>",  # sub-address of a mailbox
        "<nobody@example.org>",  # the catch-all
        "<vic@virtual.test>",
        "<sales@virtual.test>",
        "<postmaster@virtual.test>",
        "<alice@[192.0.2.1]>",  # our own address literal
        "<alice@[IPv6:2001:db8::25]>",
        "<x@relay.test>",
    ],
)
async def test_our_addresses_accepted_from_anyone(policy: Recipients, path: str) -> None:
    assert await answer(policy, STRANGER, path) is None


async def test_unknown_in_a_virtual_domain(policy: Recipients) -> None:
    reply = await answer(policy, STRANGER, "<nobody@virtual.test>")
    assert reply is not None and (reply.code, reply.enhanced) == (550, "5.1.1")


async def test_srs_bounce_from_anyone_then_expired(policy: Recipients) -> None:
    address = SRS.forward("orig@sender.example")
    assert await answer(policy, STRANGER, f"<{address}>") is None
    forged = address.replace("sender.example", "victim.example")
    reply = await answer(policy, STRANGER, f"<{forged}>")
    assert reply is not None and (reply.code, reply.enhanced) == (550, "5.1.1")
    NOW[0] += 30 * 86400
    try:
        reply = await answer(policy, NEIGHBOUR, f"<{address}>")  # even from mynetworks
        assert reply is not None and "expired" in str(reply)
    finally:
        NOW[0] -= 30 * 86400
