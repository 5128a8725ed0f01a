"""The rewriter hooked into cleanup: submitted mail only; and the [submission] config."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from kittiwake.cleanup.rewrite import RewriteSettings, Submission, is_submission
from kittiwake.cleanup.writer import Cleanup
from kittiwake.config import Config, build_config
from kittiwake.envelope import Envelope, Recipient, SessionInfo
from kittiwake.errors import ConfigError
from kittiwake.queue.sqlite import SQLiteStore

NOW = datetime(2024, 11, 29, 14, 20, 5, tzinfo=timezone(timedelta(hours=1)))
ENVELOPE = Envelope("alice@example.test", (Recipient("bob@example.org"),))
MESSAGE = b"From: alice\r\nTo: bob@example.org\r\nSubject: hi\r\n\r\nbody\r\n"


def session(listener: str, auth_user: str | None) -> SessionInfo:
    return SessionInfo(
        "192.0.2.7", 40000, "127.0.0.1", 587, "client.test", True, auth_user=auth_user,
        listener=listener,
    )  # fmt: skip


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(tmp_path)
    await s.open()
    yield s
    await s.close()


async def through(cleanup: Cleanup, info: SessionInfo | None, *, chunk: int = 7) -> bytes:
    sink = cleanup.begin(info, ENVELOPE) if info else cleanup.begin_local(ENVELOPE)
    for i in range(0, len(MESSAGE), chunk):
        sink.write(MESSAGE[i : i + chunk])
    message = await sink.commit()
    with cleanup.store.open_body(message.queue_id) as f:
        data = f.read()
    assert isinstance(data, bytes)
    return without_trace(data)


def without_trace(data: bytes) -> bytes:
    """The message without our Received field (its first line and continuation lines)."""
    assert data.startswith(b"Received: ")
    lines = data.split(b"\r\n")
    i = 1
    while lines[i].startswith(b"\t"):
        i += 1
    return b"\r\n".join(lines[i:])


def rewriting(store: SQLiteStore) -> Cleanup:
    return Cleanup(store, "mx.test", clock=lambda: NOW, rewrite=RewriteSettings("example.test"))


@pytest.mark.parametrize(
    ("listener", "user", "rewritten"),
    [
        ("submission", "alice", True),
        ("smtps", "alice", True),
        ("submission", None, False),  # not authenticated: not a submission
        ("mx", "alice", False),  # relayed or inbound port-25 mail is never rewritten
        ("lmtp", None, False),
    ],
)
async def test_only_authenticated_submission_is_rewritten(
    store: SQLiteStore, listener: str, user: str | None, rewritten: bool
) -> None:
    info = session(listener, user)
    assert is_submission(info) is rewritten
    out = await through(rewriting(store), info)
    if rewritten:
        assert out.startswith(b"From: alice@example.test\r\nTo: bob@example.org\r\nSubject: hi\r\n")
        assert b"\r\nDate: Fri, 29 Nov 2024 14:20:05 +0100\r\nMessage-ID: <" in out
        assert out.endswith(b"\r\n\r\nbody\r\n")
    else:
        assert out == MESSAGE


async def test_no_rewrite_settings_means_no_rewriting(store: SQLiteStore) -> None:
    cleanup = Cleanup(store, "mx.test")
    assert await through(cleanup, session("submission", "alice")) == MESSAGE


async def test_local_mail_is_rewritten_only_as_a_submission(store: SQLiteStore) -> None:
    cleanup = rewriting(store)
    assert await through(cleanup, None) == MESSAGE  # notices: untouched
    sink = cleanup.begin_local(
        ENVELOPE, submission=Submission(remove_bcc=True, from_header="A <a@example.test>", uid=42)
    )
    sink.write(b"To: bob\r\nBcc: hidden@example.org\r\n\r\nhi\r\n")
    message = await sink.commit()
    with store.open_body(message.queue_id) as f:
        data = f.read()
    assert data.startswith(b"Received: by mx.test (Kittiwake, from userid 42) id ")
    head = data.split(b"\r\n\r\n")[0]
    assert b"\r\nTo: bob@example.test\r\nFrom: A <a@example.test>\r\nDate: " in head
    assert b"Bcc" not in data and b"hidden" not in data
    assert data.endswith(b"\r\n\r\nhi\r\n")


async def test_message_id_carries_the_queue_id(store: SQLiteStore) -> None:
    sink = rewriting(store).begin(session("submission", "alice"), ENVELOPE)
    sink.write(b"Subject: x\r\n\r\n")
    message = await sink.commit()
    with store.open_body(message.queue_id) as f:
        assert f"Message-ID: <{message.queue_id}.".encode() in f.read()


def test_submission_config_defaults_to_the_first_local_domain() -> None:
    assert Config().submission.rewrite_domain == "localhost"
    cfg = build_config({"local": {"domains": ["Example.TEST", "other.test"]}}, Path("/"))
    assert cfg.submission.rewrite_domain == "example.test"
    assert cfg.submission.add_missing_headers is True
    cfg = build_config(
        {"submission": {"rewrite_domain": "Mail.Example.org.", "add_missing_headers": False}},
        Path("/"),
    )
    assert cfg.submission.rewrite_domain == "mail.example.org"
    assert cfg.submission.add_missing_headers is False


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"rewrite_domain": "not a domain"}, "submission.rewrite_domain"),
        ({"rewrite_domain": 5}, "submission.rewrite_domain"),
        ({"add_missing_headers": "yes"}, "submission.add_missing_headers"),
        ({"rewrite_domian": "x.test"}, "submission.rewrite_domian"),
    ],
)
def test_submission_config_errors(section: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config({"submission": section}, Path("/"))
    assert info.value.key == key
