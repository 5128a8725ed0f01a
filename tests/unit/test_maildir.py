"""Maildir delivery on a real directory tree, and the local mailbox map behind it."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kittiwake.delivery.api import QueuedMessage, QueuedRecipient, RecipientStatus
from kittiwake.delivery.local import LocalMailboxes, escape_component, unescape_component
from kittiwake.delivery.maildir import CHUNK, MaildirAgent, copy_binary_body, copy_crlf_to_lf
from kittiwake.envelope import BodyType, Envelope, Recipient
from kittiwake.errors import ConfigError


def mailboxes(root: Path, users: list[str] | None = None) -> LocalMailboxes:
    return LocalMailboxes(root, ["Example.ORG", "example.net."], users or [], "postmaster")


def message(
    *rcpts: str, sender: str = "alice@example.com", qid: str = "1K1DCH56844T7W"
) -> QueuedMessage:
    env = Envelope(sender, tuple(Recipient(r) for r in rcpts))
    qr = tuple(QueuedRecipient(i, r, RecipientStatus.PENDING) for i, r in enumerate(rcpts))
    return QueuedMessage(qid, env, 1732890000.25, 0, qr)


def opener(data: bytes):  # a real BinaryIO over the body
    return lambda: io.BytesIO(data)


# -- LocalMailboxes ---------------------------------------------------------------------------


def test_local_domains_are_case_insensitive(tmp_path: Path) -> None:
    mb = mailboxes(tmp_path)
    assert mb.is_local_domain("EXAMPLE.org") and mb.is_local_domain("example.net.")
    assert not mb.is_local_domain("example.com")
    assert mb.lookup("x@example.com") is None


def test_catch_all_when_no_users(tmp_path: Path) -> None:
    mb = mailboxes(tmp_path)
    assert mb.lookup("Bob@EXAMPLE.org") == "bob@example.org"
    assert mb.lookup('"bob"@example.org') == "bob@example.org"
    assert mb.lookup("@example.org") is None
    assert mb.lookup("x" * 65 + "@example.org") is None  # RFC 5321 §4.5.3.1.1


def test_configured_users(tmp_path: Path) -> None:
    mb = mailboxes(tmp_path, ["Alice", "bob@example.net"])
    assert mb.lookup("alice@example.org") == "Alice@example.org"
    assert mb.lookup("ALICE@example.net") == "Alice@example.org"  # one mailbox, all domains
    assert mb.lookup("bob@EXAMPLE.NET") == "bob@example.net"
    assert mb.lookup("bob@example.org") is None
    assert mb.lookup("mallory@example.org") is None


def test_postmaster_always_resolves(tmp_path: Path) -> None:
    mb = LocalMailboxes(tmp_path, ["example.org", "example.net"], ["root"], "root@example.org")
    for addr in ("postmaster", "PostMaster", "postmaster@example.net", "POSTMASTER@Example.Org"):
        assert mb.lookup(addr) == "root@example.org"
    assert mb.lookup("postmaster@example.com") is None
    assert mb.lookup("alice") is None
    with pytest.raises(ConfigError):
        LocalMailboxes(tmp_path, ["example.org"], [], "pm@elsewhere.example")
    with pytest.raises(ConfigError):
        LocalMailboxes(tmp_path, [], [], "postmaster")


@pytest.mark.parametrize(
    "local", ["../../etc", "..", ".", ".hidden", "a/b", "a\\b", "%2E", "nul\x00", "ü", "con"]
)
def test_paths_stay_inside_root(tmp_path: Path, local: str) -> None:
    mb = mailboxes(tmp_path)
    path = mb.path_for(f"{local}@example.org")
    assert path.parent == tmp_path / "example.org"
    name = path.name
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert not name.startswith(".")
    assert name.isascii()
    assert unescape_component(name) == local
    assert path.resolve().is_relative_to(tmp_path.resolve())


@given(st.text(min_size=1, max_size=64).filter(lambda t: len(t.encode()) <= 64))
def test_escaping_is_reversible_and_safe(text: str) -> None:
    # Up to 64 octets: what lookup() lets through (RFC 5321 §4.5.3.1.1).
    name = escape_component(text)
    assert unescape_component(name) == text
    assert name.isascii() and "/" not in name and not name.startswith(".")
    assert name not in (".", "..")


def test_overlong_components_are_refused() -> None:
    with pytest.raises(ValueError):
        escape_component("ü" * 60)  # 120 octets, 360 characters escaped
    with pytest.raises(ValueError):
        escape_component("")


# -- CRLF conversion --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"a\r\nb\r\n", b"a\nb\n"),
        (b"lone\rcr\r\n", b"lone\rcr\n"),
        (b"end\r", b"end\r"),
        (b"x" * (CHUNK - 1) + b"\r\n" + b"y\r\n", b"x" * (CHUNK - 1) + b"\ny\n"),
        (b"x" * (CHUNK - 1) + b"\r" + b"y", b"x" * (CHUNK - 1) + b"\ry"),
        (b"", b""),
    ],
)
def test_crlf_to_lf_across_chunks(data: bytes, expected: bytes) -> None:
    out = io.BytesIO()
    assert copy_crlf_to_lf(io.BytesIO(data), out.write) == len(expected)
    assert out.getvalue() == expected


def test_binary_body_is_kept_octet_for_octet() -> None:
    body = bytes(range(256)) * 300 + b"\r\n.\r\n\x00\r\rEND"
    out = io.BytesIO()
    n = copy_binary_body(io.BytesIO(b"A: 1\r\nB: 2\r\n\r\n" + body), out.write)
    assert out.getvalue() == b"A: 1\nB: 2\n\n" + body and n == len(out.getvalue())


async def test_binarymime_message_delivered_intact(tmp_path: Path) -> None:
    agent = MaildirAgent(mailboxes(tmp_path), "h")
    m = message("bob@example.org")
    m = QueuedMessage(
        m.queue_id,
        Envelope("a@b.example", m.envelope.recipients, BodyType.BINARYMIME),
        0.0,
        0,
        m.recipients,
    )
    payload = b"\x00\r\n\r\r\n" * 10_000
    (o,) = await agent.deliver(m, m.recipients, opener(b"Subject: x\r\n\r\n" + payload))
    assert o.status is RecipientStatus.DELIVERED
    (name,) = os.listdir(tmp_path / "example.org" / "bob" / "new")
    content = (tmp_path / "example.org" / "bob" / "new" / name).read_bytes()
    assert content.endswith(b"Subject: x\n\n" + payload)


# -- MaildirAgent -----------------------------------------------------------------------------


async def test_delivers_into_new_with_trace_fields(tmp_path: Path) -> None:
    agent = MaildirAgent(mailboxes(tmp_path), "mx.example.org")
    body = b"Received: from x\r\nSubject: hi\r\n\r\nline one\r\nline two\r\n"
    m = message("Bob@example.org", "carol@example.net")
    outcomes = await agent.deliver(m, m.recipients, opener(body))
    assert [o.status for o in outcomes] == [RecipientStatus.DELIVERED] * 2
    assert str(outcomes[0].reply) == "250 2.0.0 delivered to maildir"
    maildir = tmp_path / "example.org" / "bob"
    assert sorted(os.listdir(maildir)) == ["cur", "new", "tmp"]
    assert os.listdir(maildir / "tmp") == []
    (name,) = os.listdir(maildir / "new")
    content = (maildir / "new" / name).read_bytes()
    assert content == (
        b"Return-Path: <alice@example.com>\nDelivered-To: Bob@example.org\n"
        b"Received: from x\nSubject: hi\n\nline one\nline two\n"
    )
    assert b"\r" not in content
    assert name.endswith(f",S={len(content)}") and ".mx.example.org," in name
    assert len(os.listdir(tmp_path / "example.net" / "carol" / "new")) == 1


async def test_null_sender_and_header_injection(tmp_path: Path) -> None:
    agent = MaildirAgent(mailboxes(tmp_path), "mx/odd:host")
    m = message("bob@example.org", sender="")
    await agent.deliver(m, m.recipients, opener(b"x\r\n"))
    new = tmp_path / "example.org" / "bob" / "new"
    (name,) = os.listdir(new)
    assert "mx\\057odd\\072host" in name
    assert (new / name).read_bytes().startswith(b"Return-Path: <>\n")

    evil = message("bob@example.org", sender="a@b>\r\nX-Evil: 1", qid="1K1DCH56844T7X")
    await agent.deliver(evil, evil.recipients, opener(b"x\r\n"))
    for n in os.listdir(new):
        assert b"\nX-Evil" not in (new / n).read_bytes()


async def test_large_message_is_streamed(tmp_path: Path) -> None:
    agent = MaildirAgent(mailboxes(tmp_path), "h")
    body = (b"y" * 998 + b"\r\n") * 5000  # ~5 MB
    m = message("big@example.org")
    (o,) = await agent.deliver(m, m.recipients, opener(body))
    assert o.status is RecipientStatus.DELIVERED
    new = tmp_path / "example.org" / "big" / "new"
    (name,) = os.listdir(new)
    assert (new / name).stat().st_size == len(body) - 5000 + len(
        b"Return-Path: <alice@example.com>\nDelivered-To: big@example.org\n"
    )


async def test_unknown_mailbox_bounces_and_os_error_defers(tmp_path: Path) -> None:
    agent = MaildirAgent(mailboxes(tmp_path, ["alice", "bob"]), "h")
    (tmp_path / "example.org").mkdir()
    (tmp_path / "example.org" / "bob").write_bytes(b"not a directory")
    m = message("nobody@example.org", "bob@example.org", "alice@example.org")
    outcomes = await agent.deliver(m, m.recipients, opener(b"x\r\n"))
    bounced, deferred, delivered = outcomes
    assert (bounced.status, bounced.reply.enhanced) == (RecipientStatus.BOUNCED, "5.1.1")
    assert (deferred.status, deferred.reply.code) == (RecipientStatus.DEFERRED, 451)
    assert deferred.reply.enhanced == "4.3.0"
    assert delivered.status is RecipientStatus.DELIVERED
    assert [o.index for o in outcomes] == [0, 1, 2]


async def test_unreadable_body_defers(tmp_path: Path) -> None:
    agent = MaildirAgent(mailboxes(tmp_path), "h")

    def gone() -> io.BytesIO:
        raise FileNotFoundError(2, "No such file or directory")

    m = message("bob@example.org")
    (o,) = await agent.deliver(m, m.recipients, gone)
    assert o.status is RecipientStatus.DEFERRED
    assert os.listdir(tmp_path / "example.org" / "bob" / "tmp") == []


async def test_redelivery_after_a_crash_is_idempotent(tmp_path: Path) -> None:
    agent = MaildirAgent(mailboxes(tmp_path), "h")
    m = message("bob@example.org", "BOB@example.org")  # two recipients, one mailbox
    first = await agent.deliver(m, m.recipients, opener(b"x\r\n"))
    # The outcome was never recorded (crash): the runner tries again after restart.
    again = await agent.deliver(m, m.recipients[:1], opener(b"x\r\n"))
    assert [o.status for o in first + again] == [RecipientStatus.DELIVERED] * 3
    maildir = tmp_path / "example.org" / "bob"
    names = sorted(os.listdir(maildir / "new"))
    assert len(names) == 2  # one per recipient, not one per attempt
    assert names[0].startswith("1732890000.M250000K1K1DCH56844T7W_0.h,S=")
    assert os.listdir(maildir / "tmp") == []


async def test_planted_symlink_in_tmp_is_not_followed(tmp_path: Path) -> None:
    agent = MaildirAgent(mailboxes(tmp_path / "mail"), "h")
    warmup = message("bob@example.org", qid="1K1DCH56844T70")
    await agent.deliver(warmup, warmup.recipients, opener(b"x\r\n"))
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    m = message("bob@example.org")
    maildir = tmp_path / "mail" / "example.org" / "bob"
    os.symlink(victim, maildir / "tmp" / agent.unique_name(m, m.recipients[0]))
    (o,) = await agent.deliver(m, m.recipients, opener(b"evil\r\n"))
    assert o.status is RecipientStatus.DELIVERED
    assert victim.read_bytes() == b"precious"
    assert len(os.listdir(maildir / "new")) == 2
