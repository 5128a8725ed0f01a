"""The sendmail command end to end in-process: stdin → maildrop file, and its exit codes."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from kittiwake.admin.sendmail import header_recipients, read_message, run, whoami
from kittiwake.admin.sendmail_args import (
    EX_CONFIG,
    EX_DATAERR,
    EX_NOUSER,
    EX_OK,
    EX_TEMPFAIL,
    EX_USAGE,
)
from kittiwake.cleanup.maildrop import DropEnvelope, read_drop, ready_files


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "k.toml"
    path.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        '[local]\ndomains = ["example.test"]\n'
        "[limits]\nmax_message_size = 100000\n"
    )
    return path


def sendmail(config: Path, argv: list[str], stdin: bytes) -> tuple[int, str]:
    err = io.StringIO()
    code = run(["--config", str(config), *argv], io.BytesIO(stdin), io.BytesIO(), err)
    return code, err.getvalue()


def dropped(config: Path) -> list[tuple[DropEnvelope, bytes]]:
    found = []
    for path in ready_files(config.parent / "data" / "maildrop"):
        envelope, body, _ = read_drop(path)
        with body:
            found.append((envelope, body.read()))
    return found


def test_recipients_on_the_command_line(config: Path) -> None:
    code, err = sendmail(
        config,
        ["-oi", "-f", "sender@example.org", "bob", "Carol <c@x.test>"],
        b"Subject: hi\n\nbody\n",
    )
    assert (code, err) == (EX_OK, "")
    [(envelope, message)] = dropped(config)
    assert envelope.sender == "sender@example.org"
    assert envelope.recipients == ("bob@example.test", "c@x.test")
    assert envelope.user == whoami()[0] and envelope.uid == os.getuid()
    assert not envelope.remove_bcc
    assert message == b"Subject: hi\r\n\r\nbody\r\n"


def test_default_sender_is_the_unix_user_at_the_rewrite_domain(config: Path) -> None:
    assert sendmail(config, ["-F", "Ann  Other", "bob"], b"x\n")[0] == EX_OK
    [(envelope, _)] = dropped(config)
    assert envelope.sender == f"{whoami()[0]}@example.test"
    assert envelope.full_name == "Ann Other"


def test_t_takes_to_cc_bcc_and_asks_for_bcc_removal(config: Path) -> None:
    msg = (
        b"To: alice, Bob <bob@x.test>\nCc: carol@x.test,\n dave\nBcc: eve@x.test\n"
        b"Subject: s\n\nTo: not@x.test\n"
    )
    assert sendmail(config, ["-t", "-i", "extra@x.test"], msg)[0] == EX_OK
    [(envelope, message)] = dropped(config)
    assert envelope.recipients == (
        "extra@x.test", "alice@example.test", "bob@x.test", "carol@x.test", "dave@example.test",
        "eve@x.test",
    )  # fmt: skip
    assert envelope.remove_bcc
    assert b"Bcc: eve@x.test\r\n" in message  # removed by the server's cleanup, not here


def test_t_uses_resent_fields_when_present() -> None:
    header = b"To: old@x.test\r\nResent-To: new@x.test\r\nResent-Bcc: b\r\n"
    assert header_recipients(header, "d.test") == ["new@x.test", "b@d.test"]


def test_dot_ends_input_unless_i(config: Path) -> None:
    assert sendmail(config, ["bob"], b"a\n.\nafter\n")[0] == EX_OK
    assert sendmail(config, ["-i", "bob"], b"a\n.\nafter\n")[0] == EX_OK
    messages = sorted(m for _, m in dropped(config))
    assert messages == [b"a\r\n", b"a\r\n.\r\nafter\r\n"]


@pytest.mark.parametrize(
    ("data", "ignore_dots", "expected"),
    [
        (b"a\r\nb\nc", False, b"a\r\nb\r\nc\r\n"),
        (b"From sender Mon Jan 1\nSubject: s\n\nx\n", False, b"Subject: s\r\n\r\nx\r\n"),
        (b"x\nFrom here\n", False, b"x\r\nFrom here\r\n"),  # only a first line is mbox's
        (b"a\n.", False, b"a\r\n"),
        (b"a\n.\r\nb\n", False, b"a\r\n"),
        (b"a\n..\nb\n", False, b"a\r\n..\r\nb\r\n"),  # no dot-unstuffing here
        (b"a\n.", True, b"a\r\n.\r\n"),
        (b"", False, b""),
        (b"bare\rcr\n", False, b"bare\rcr\r\n"),
    ],
)
def test_read_message(data: bytes, ignore_dots: bool, expected: bytes) -> None:
    assert b"".join(read_message(io.BytesIO(data), ignore_dots=ignore_dots)) == expected


def test_long_lines_across_chunks() -> None:
    data = b"x" * 300_000 + b"\n" + b"y" * 10 + b"\r\n"
    out = b"".join(read_message(io.BytesIO(data), ignore_dots=False))
    assert out == b"x" * 300_000 + b"\r\n" + b"y" * 10 + b"\r\n"


@pytest.mark.parametrize(
    ("argv", "stdin", "code"),
    [
        ([], b"x\n", EX_USAGE),  # no recipients
        (["-t"], b"Subject: none\n\nx\n", EX_USAGE),  # -t and none in the header
        (["-Q", "bob"], b"x\n", EX_USAGE),
        (["-bp"], b"", EX_USAGE),
        (["-f", "a b c", "bob"], b"x\n", EX_USAGE),
        (["alice bob"], b"x\n", EX_NOUSER),
        (["bob@@x.test"], b"x\n", EX_NOUSER),
        (["-t"], b"To: x@y@z\n\nx\n", EX_NOUSER),
        (["bob"], b"x" * 100_001, EX_DATAERR),  # over limits.max_message_size
    ],
)
def test_exit_codes(config: Path, argv: list[str], stdin: bytes, code: int) -> None:
    got, err = sendmail(config, argv, stdin)
    assert got == code, err
    assert err.startswith("sendmail: ")
    assert dropped(config) == []
    maildrop = config.parent / "data" / "maildrop"
    assert not maildrop.exists() or list(maildrop.iterdir()) == []  # no temporary file left


def test_t_with_a_huge_header_section_is_refused(config: Path) -> None:
    msg = b"To: a@x.test\n" + b"X-Pad: " + b"p" * (1024 * 1024 + 10) + b"\n\nbody\n"
    assert sendmail(config, ["-t"], msg)[0] == EX_DATAERR
    big = config.parent / "big.toml"
    big.write_text(config.read_text().replace("100000", "0"))
    assert sendmail(big, ["bob"], msg)[0] == EX_OK  # without -t it is just a message


def test_unwritable_maildrop_is_a_temporary_failure(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    config = tmp_path / "k.toml"
    config.write_text(f'data_dir = "{tmp_path / "file"}"\n')
    code, err = sendmail(config, ["bob"], b"x\n")
    assert code == EX_TEMPFAIL and "maildrop" in err


def test_bad_config_and_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("nonsense = 1\n")
    assert sendmail(bad, ["bob"], b"x\n")[0] == EX_CONFIG
    good = tmp_path / "good.toml"
    good.write_text(f'data_dir = "{tmp_path / "envdata"}"\n')
    monkeypatch.setenv("KITTIWAKE_CONFIG", str(good))
    assert run(["bob"], io.BytesIO(b"x\n"), io.BytesIO(), io.StringIO()) == EX_OK
    assert len(ready_files(tmp_path / "envdata" / "maildrop")) == 1


def test_help_and_version(config: Path) -> None:
    out = io.BytesIO()
    assert run(["--help"], io.BytesIO(), out, io.StringIO()) == EX_OK
    assert out.getvalue().startswith(b"usage: sendmail")
