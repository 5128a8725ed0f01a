"""The maildrop format (cleanup.maildrop): round trip, validation, atomic and safe files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from kittiwake.cleanup.maildrop import (
    DIR_MODE,
    MAGIC,
    DropEnvelope,
    DropWriter,
    MaildropError,
    ensure_dir,
    is_drop_name,
    read_drop,
    ready_files,
    stale_temp_files,
    valid_mailbox,
)

ENV = DropEnvelope(
    sender="alice@example.test",
    recipients=("bob@example.test", "Carol.X+tag@example.org"),
    user="alice",
    uid=1000,
    time=1700000000.5,
    full_name="Alice Ä. Smith",
    remove_bcc=True,
    notify=("success", "failure"),
    ret="hdrs",
    envid="abc-1",
)
MESSAGE = b"Subject: hi\r\n\r\nbody\r\n"


def drop(directory: Path, envelope: DropEnvelope = ENV, message: bytes = MESSAGE) -> Path:
    ensure_dir(directory)
    writer = DropWriter(directory, envelope)
    writer.write(message)
    return writer.commit()


def test_round_trip(tmp_path: Path) -> None:
    path = drop(tmp_path / "maildrop")
    assert is_drop_name(path.name)
    envelope, body, st = read_drop(path)
    with body:
        assert envelope == ENV
        assert body.read() == MESSAGE
    assert st.st_uid == os.getuid()
    assert stat.S_IMODE(st.st_mode) == 0o644
    assert path.read_bytes().startswith(MAGIC)
    assert path.read_bytes().count(b"\n") == 1 + MESSAGE.count(b"\n")  # one envelope line


def test_null_sender_and_utf8_addresses_round_trip(tmp_path: Path) -> None:
    env = DropEnvelope(sender="", recipients=("jösé@exämple.test",))
    envelope, body, _ = read_drop(drop(tmp_path, env))
    body.close()
    assert envelope == env


def test_directory_mode_and_ready_files(tmp_path: Path) -> None:
    directory = tmp_path / "data" / "maildrop"
    first = drop(directory)
    second = drop(directory)
    (directory / ".tmp.0123456789abcdef").write_bytes(b"half")
    (directory / "README").write_bytes(b"not mail")
    assert stat.S_IMODE(directory.stat().st_mode) == DIR_MODE
    assert ready_files(directory) == sorted([first, second])
    assert ready_files(tmp_path / "missing") == []


def test_abort_leaves_nothing(tmp_path: Path) -> None:
    ensure_dir(tmp_path)
    writer = DropWriter(tmp_path, ENV)
    writer.write(b"partial")
    assert len(list(tmp_path.iterdir())) == 1  # a dot-name, invisible to pickup
    assert ready_files(tmp_path) == []
    writer.abort()
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_stale_temp_files(tmp_path: Path) -> None:
    old = tmp_path / ".tmp.aaaa"
    old.write_bytes(b"x")
    os.utime(old, (1000, 1000))
    (tmp_path / ".tmp.bbbb").write_bytes(b"y")
    assert stale_temp_files(tmp_path, 3600) == [old]


@pytest.mark.parametrize(
    ("doc", "why"),
    [
        (b"{}", "no recipients"),
        (b'{"sender": "a@b.test", "recipients": []}', "no recipients"),
        (b'{"sender": "a b@c.test", "recipients": ["x@y.test"]}', "invalid sender"),
        (b'{"sender": "", "recipients": ["x"]}', "invalid recipient"),
        (b'{"sender": "", "recipients": ["x@y.test\\r\\nRCPT TO:<z@w>"]}', "invalid recipient"),
        (b'{"sender": "", "recipients": [1]}', "invalid recipient"),
        (b'{"sender": 5, "recipients": ["x@y.test"]}', "sender is not a string"),
        (b'{"sender": "", "recipients": ["x@y.test"], "uid": "0"}', "uid"),
        (b'{"sender": "", "recipients": ["x@y.test"], "notify": ["often"]}', "notify"),
        (b'{"sender": "", "recipients": ["x@y.test"], "notify": ["never", "delay"]}', "never"),
        (b'{"sender": "", "recipients": ["x@y.test"], "ret": "all"}', "ret"),
        (b'{"sender": "", "recipients": ["x@y.test"], "envid": "a b"}', "envid"),
        (b'{"sender": "", "recipients": ["x@y.test"], "remove_bcc": 1}', "remove_bcc"),
        (b"[1]", "not a JSON object"),
        (b"{not json", "not JSON"),
    ],
)
def test_invalid_envelopes(doc: bytes, why: str) -> None:
    with pytest.raises(MaildropError, match=why):
        DropEnvelope.from_line(MAGIC + doc + b"\n")


def test_bad_magic_and_missing_line_end() -> None:
    with pytest.raises(MaildropError, match="not a maildrop"):
        DropEnvelope.from_line(b'{"sender": ""}\n')
    with pytest.raises(MaildropError, match="not a maildrop"):
        DropEnvelope.from_line(ENV.to_line()[:-1])


def test_too_many_recipients_is_refused_when_written() -> None:
    env = DropEnvelope(sender="", recipients=tuple(f"user{i}@example.test" for i in range(60_000)))
    with pytest.raises(MaildropError, match="too large"):
        env.to_line()


def test_read_drop_refuses_symlinks_fifos_and_hard_links(tmp_path: Path) -> None:
    real = drop(tmp_path / "md")
    link = tmp_path / "md" / "00000000000000aa.00000000000000aa"
    link.symlink_to(real)
    with pytest.raises(MaildropError, match="symbolic link"):
        read_drop(link)
    fifo = tmp_path / "md" / "00000000000000bb.00000000000000bb"
    os.mkfifo(fifo)
    with pytest.raises(MaildropError, match="not a regular file"):
        read_drop(fifo)  # O_NONBLOCK: never hangs on a FIFO without a writer
    hard = tmp_path / "md" / "00000000000000cc.00000000000000cc"
    os.link(real, hard)
    with pytest.raises(MaildropError, match="hard links"):
        read_drop(hard)


def test_read_drop_bounds_the_envelope_line(tmp_path: Path) -> None:
    path = tmp_path / "00000000000000dd.00000000000000dd"
    path.write_bytes(MAGIC + b"x" * (2 * 1024 * 1024))
    with pytest.raises(MaildropError):
        read_drop(path)


@pytest.mark.parametrize(
    ("address", "ok"),
    [
        ("a@b.test", True),
        ('"a b"@b.test', True),
        ("a@[192.0.2.1]", True),
        ("a", False),
        ("a@b@c.test", False),
        ("a b@c.test", False),
        ("<a@b.test>", False),
        ("@a.test:b@c.test", False),  # a source route is not a mailbox
        ("x" * 65 + "@b.test", False),
    ],
)
def test_valid_mailbox(address: str, ok: bool) -> None:
    assert valid_mailbox(address) is ok
