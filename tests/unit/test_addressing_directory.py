"""The address directory: aliases (nesting, loops, catch-all order), sub-addressing, virtual
domains, a user-store source, own address literals, SRS addresses, the forwarding sender."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from kittiwake.addressing import Directory, Srs, TargetKind
from kittiwake.addressing.directory import NO_SUCH_USER, SRS_REPLIES, TOO_DEEP, TOO_MANY
from kittiwake.delivery.local import LocalMailboxes

M, E, U = TargetKind.MAILBOX, TargetKind.EXTERNAL, TargetKind.UNKNOWN
SECRET = "0123456789abcdef-secret"


def mailboxes(
    users: Sequence[str] = ("alice", "bob", "carol"), delimiter: str = "+", **kw: object
) -> LocalMailboxes:
    return LocalMailboxes(
        Path("/nonexistent"),
        ["example.test", "example.org"],
        users,
        "postmaster@example.test",
        virtual_domains=["virtual.test"],
        virtual_mailboxes=["vic@virtual.test"],
        recipient_delimiter=delimiter,
        **kw,  # type: ignore[arg-type]
    )


def directory(
    aliases: Mapping[str, Sequence[str]] | None = None,
    mb: LocalMailboxes | None = None,
    **kw: object,
) -> Directory:
    srs = Srs([SECRET], "example.test")
    return Directory(mb or mailboxes(), aliases or {}, srs=srs, **kw)  # type: ignore[arg-type]


def targets(d: Directory, address: str) -> list[tuple[str, TargetKind, bool]]:
    res = d.resolve(address)
    return [(t.address, t.kind, t.forwarded) for t in res.targets]


def test_mailboxes_and_unknown() -> None:
    d = directory()
    assert targets(d, "alice@example.test") == [("alice@example.test", M, False)]
    assert targets(d, "Alice@EXAMPLE.org") == [("Alice@EXAMPLE.org", M, False)]
    assert d.check("alice@example.test") is None
    assert d.check("nobody@example.test") == NO_SUCH_USER
    assert targets(d, "x@elsewhere.example") == [("x@elsewhere.example", E, False)]
    assert d.check("postmaster@example.org") is None and d.check("postmaster") is None


def test_alias_to_several_local_and_external() -> None:
    d = directory({"info@example.test": ["alice@example.test", "carol@elsewhere.example"]})
    assert targets(d, "INFO@example.test") == [
        ("alice@example.test", M, True),
        ("carol@elsewhere.example", E, True),
    ]


def test_nested_aliases_and_duplicates() -> None:
    d = directory(
        {
            "team@example.test": ["dev@example.test", "ops@example.test", "alice@example.test"],
            "dev@example.test": ["alice@example.test", "bob@example.test"],
            "ops@example.test": ["BOB@example.test", "carol@example.test"],
        }
    )
    assert targets(d, "team@example.test") == [
        ("alice@example.test", M, True),
        ("bob@example.test", M, True),
        ("carol@example.test", M, True),
    ]


def test_alias_listing_itself_keeps_its_mailbox() -> None:
    d = directory({"alice@example.test": ["alice@example.test", "bob@example.test"]})
    assert targets(d, "alice@example.test") == [
        ("alice@example.test", M, True),
        ("bob@example.test", M, True),
    ]


def test_loops_terminate_and_unknown_leaves_are_refused() -> None:
    d = directory(
        {
            "a@example.test": ["b@example.test"],
            "b@example.test": ["a@example.test"],  # a -> b -> a, neither is a mailbox
            "c@example.test": ["alice@example.test"],
            "alice@example.test": ["c@example.test"],  # loops back to a real mailbox
        }
    )
    res = d.resolve("a@example.test")
    assert res.reply == NO_SUCH_USER and [t.kind for t in res.targets] == [U]
    assert targets(d, "c@example.test") == [("c@example.test", U, True)]  # no mailbox "c"
    assert d.check("c@example.test") == NO_SUCH_USER
    assert targets(d, "alice@example.test") == [("alice@example.test", M, True)]


def test_depth_limit() -> None:
    chain = {f"l{i}@example.test": [f"l{i + 1}@example.test"] for i in range(30)}
    chain["l30@example.test"] = ["alice@example.test"]
    assert directory(chain).check("l0@example.test") == TOO_DEEP
    assert directory(chain, max_depth=40).check("l0@example.test") is None
    assert directory(chain).check("l15@example.test") is None  # 15 levels: fine


def test_too_many_targets() -> None:
    many = {"all@example.test": [f"u{i}@elsewhere.example" for i in range(50)]}
    assert directory(many, max_targets=10).check("all@example.test") == TOO_MANY
    assert directory(many).check("all@example.test") is None


def test_catch_all_only_when_nothing_else_matches() -> None:
    d = directory(
        {
            "info@example.test": ["bob@example.test"],
            "@example.test": ["carol@example.test"],
        }
    )
    assert targets(d, "info@example.test") == [("bob@example.test", M, True)]  # alias first
    assert targets(d, "alice@example.test") == [("alice@example.test", M, False)]  # mailbox
    assert targets(d, "anything@example.test") == [("carol@example.test", M, True)]
    assert targets(d, "alice+tag@example.test") == [("alice+tag@example.test", M, False)]
    assert targets(d, "info+tag@example.test") == [("bob@example.test", M, True)]
    assert d.check("anything@example.org") == NO_SUCH_USER  # no catch-all there


def test_catch_all_to_a_missing_mailbox_is_refused_not_looped() -> None:
    d = directory({"@example.test": ["gone@example.test"]})
    assert d.check("x@example.test") == NO_SUCH_USER


def test_sub_addressing_alias_full_address_first_then_without_extension() -> None:
    d = directory(
        {
            "sales+vip@example.test": ["alice@example.test"],
            "sales@example.test": ["bob@example.test"],
        }
    )
    assert targets(d, "sales+vip@example.test") == [("alice@example.test", M, True)]
    assert targets(d, "sales+other@example.test") == [("bob@example.test", M, True)]
    assert targets(d, "bob+news+x@example.test") == [("bob+news+x@example.test", M, False)]
    assert d.lookup("bob+news@example.test") == "bob@example.test"


def test_delimiter_choices() -> None:
    off = directory(mb=mailboxes(delimiter=""))
    assert off.check("bob+news@example.test") == NO_SUCH_USER
    two = directory(mb=mailboxes(delimiter="+-"))
    assert two.check("bob-news@example.test") is None and two.check("bob+x@example.test") is None
    assert two.lookup("-x@example.test") is None  # nothing left before the delimiter


def test_open_catch_all_mailboxes_strip_the_extension() -> None:
    """No local.users: every local part is a mailbox, and user+tag is user's."""
    d = directory(mb=mailboxes(users=()))
    assert d.lookup("Zed+tag@example.test") == "zed@example.test"
    assert d.lookup("postmaster+x@example.org") == "postmaster@example.test"
    assert d.check("vic2@virtual.test") == NO_SUCH_USER  # never open in a virtual domain


def test_virtual_domain_and_user_store() -> None:
    store = {"dora@virtual.test", "erin@example.test"}
    d = directory(
        {"sales@virtual.test": ["vic@virtual.test", "alice@example.test"]},
        mb=mailboxes(mailbox_exists=store.__contains__),
    )
    assert d.is_local_domain("VIRTUAL.test")
    assert targets(d, "vic+x@virtual.test") == [("vic+x@virtual.test", M, False)]
    assert d.lookup("vic@virtual.test") == "vic@virtual.test"
    assert d.check("Dora@virtual.test") is None and d.check("erin@example.test") is None
    assert d.check("alice@virtual.test") == NO_SUCH_USER  # bare users are local domains only
    assert d.check("postmaster@virtual.test") is None  # RFC 5321 §4.5.1
    assert [t.kind for t in d.resolve("sales@virtual.test").targets] == [M, M]


def test_user_store_closes_the_open_catch_all() -> None:
    d = directory(mb=mailboxes(users=(), mailbox_exists=lambda a: a == "fred@example.test"))
    assert d.check("fred@example.test") is None
    assert d.check("george@example.test") == NO_SUCH_USER


def test_own_address_literals() -> None:
    d = directory(own_addresses=["127.0.0.1", "::1", "0.0.0.0"])
    assert d.is_local_domain("[127.0.0.1]") and d.is_local_domain("[IPv6:::1]")
    assert not d.is_local_domain("[127.0.0.2]") and not d.is_local_domain("[0.0.0.0]")
    assert targets(d, "alice@[127.0.0.1]") == [("alice@example.test", M, False)]
    assert targets(d, "x@[127.0.0.2]") == [("x@[127.0.0.2]", E, False)]
    assert d.check("nobody@[127.0.0.1]") == NO_SUCH_USER


def test_srs_addresses_resolve_to_the_original() -> None:
    srs = Srs([SECRET], "example.test")
    d = directory({"fwd@example.test": ["alice@example.test"]})
    bounce = srs.forward("sender@elsewhere.example")
    assert d.is_srs(bounce) and not d.is_srs("alice@example.test")
    assert not d.is_srs(bounce.replace("@example.test", "@example.org"))  # not the SRS domain
    assert targets(d, bounce) == [("sender@elsewhere.example", E, True)]
    # A bounce back to one of our own users (we forwarded their mail): delivered here.
    assert targets(d, srs.rewrite("bob@example.org")) == [("bob@example.org", M, True)]
    assert targets(d, srs.rewrite("fwd@example.org")) == [("fwd@example.org", U, True)]


def test_forged_and_expired_srs_are_refused() -> None:
    now = [1_700_000_000.0]
    srs = Srs([SECRET], "example.test", clock=lambda: now[0])
    d = Directory(mailboxes(users=()), srs=srs)  # even with every local part a mailbox
    good = srs.forward("sender@elsewhere.example")
    assert d.check(good) is None
    assert d.check(good.replace("elsewhere", "victim")) == SRS_REPLIES["hash"]
    assert d.check("SRS0=zz@example.test") == SRS_REPLIES["syntax"]
    now[0] += 22 * 86400
    assert d.check(good) == SRS_REPLIES["expired"]
    reply = d.check(good)
    assert reply is not None and (reply.code, reply.enhanced) == (550, "5.1.1")


def test_without_srs_srs_looking_addresses_are_ordinary() -> None:
    d = Directory(mailboxes(users=()))
    assert not d.is_srs("SRS0=abcd=2W=x.example=u@example.test")
    assert d.check("SRS0=abcd=2W=x.example=u@example.test") is None  # the open catch-all


@pytest.mark.parametrize(
    ("sender", "rewritten"),
    [
        ("", False),  # <> is never rewritten
        ("alice@example.org", False),  # our own domain: its SPF names us already
        ("x@virtual.test", False),
        ("sender@elsewhere.example", True),
    ],
)
def test_forward_sender(sender: str, rewritten: bool) -> None:
    out = directory().forward_sender(sender)
    assert (out != sender) is rewritten
    if rewritten:
        assert out.startswith("SRS0=") and out.endswith("@example.test")
    assert Directory(mailboxes()).forward_sender(sender) == sender  # no SRS configured
