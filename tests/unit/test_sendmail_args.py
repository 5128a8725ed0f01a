"""The classic sendmail command line (admin.sendmail_args): tolerant, Postfix-compatible."""

from __future__ import annotations

from pathlib import Path

import pytest

from kittiwake.admin.sendmail_args import (
    AddressError,
    UsageError,
    parse_args,
    parse_recipients,
    parse_sender,
)


def test_defaults_and_plain_recipients() -> None:
    opts = parse_args(["alice@example.org", "bob"])
    assert opts.recipients == ["alice@example.org", "bob"]
    assert (opts.extract, opts.ignore_dots, opts.sender, opts.mode) == (False, False, None, "m")


@pytest.mark.parametrize(
    "argv",
    [
        ["-fuser@example.org", "x"],
        ["-f", "user@example.org", "x"],
        ["-ruser@example.org", "x"],
        ["-r", "user@example.org", "x"],
    ],
)
def test_sender_attached_or_separate(argv: list[str]) -> None:
    opts = parse_args(argv)
    assert opts.sender == "user@example.org"
    assert opts.recipients == ["x"]


@pytest.mark.parametrize("flag", [["-i"], ["-oi"], ["-o", "i"], ["-ti"], ["-it"]])
def test_ignore_dots(flag: list[str]) -> None:
    assert parse_args([*flag, "bob"]).ignore_dots


def test_cron_and_mutt_and_php_lines() -> None:
    cron = parse_args(["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"])
    assert (cron.full_name, cron.ignore_dots, cron.recipients) == ("CronDaemon", True, ["root"])
    mutt = parse_args(["-oem", "-oi", "--", "bob@example.org", "carol@example.org"])
    assert mutt.ignore_dots and mutt.recipients == ["bob@example.org", "carol@example.org"]
    php = parse_args(["-t", "-i"])
    assert php.extract and php.ignore_dots and php.recipients == []


def test_ignored_options_take_their_argument() -> None:
    opts = parse_args(["-odb", "-X", "/tmp/log", "-L", "label", "-h", "5", "-O", "a=b", "-v", "x"])
    assert opts.recipients == ["x"] and opts.verbose
    assert parse_args(
        ["-odi", "-oQ/tmp", "-Am", "-em", "-n", "-U", "-G", "-m", "y"]
    ).recipients == ["y"]


def test_full_name_and_modes_and_config() -> None:
    opts = parse_args(["-F", "Alice Smith", "-bm", "--config", "k.toml", "bob"])
    assert opts.full_name == "Alice Smith" and opts.mode == "m" and opts.config == Path("k.toml")
    assert parse_args(["-bs"]).mode == "s"
    assert parse_args(["--config=x.toml"]).config == Path("x.toml")
    assert parse_args(["-C", "y.toml"]).config == Path("y.toml")
    assert parse_args(["--help"]).help and parse_args(["--version"]).version


def test_options_end_at_first_recipient_or_double_dash() -> None:
    assert parse_args(["bob", "-t"]).recipients == ["bob", "-t"]
    opts = parse_args(["-t", "--", "-odd@example.org"])
    assert opts.extract and opts.recipients == ["-odd@example.org"]


def test_dsn_options() -> None:
    opts = parse_args(["-N", "success,DELAY", "-Rhdrs", "-V", "env-1", "x"])
    assert opts.notify == ("success", "delay") and opts.ret == "hdrs" and opts.envid == "env-1"
    assert parse_args(["-Nnever", "x"]).notify == ("never",)


@pytest.mark.parametrize(
    "argv",
    [
        ["-Z", "x"],  # unknown letter
        ["-f"],  # missing argument
        ["-bp"],  # mailq mode
        ["-bd"],  # daemon mode
        ["-q"],
        ["-I"],
        ["--frobnicate"],
        ["-N", "sometimes", "x"],
        ["-N", "never,success", "x"],
        ["-R", "body", "x"],
        ["-V", "", "x"],
        ["--config"],
    ],
)
def test_usage_errors(argv: list[str]) -> None:
    with pytest.raises(UsageError):
        parse_args(argv)


def test_recipient_forms() -> None:
    got = parse_recipients(
        ["alice", "Bob <bob@example.org>", "carol@example.org, dave", '"Eve E." <eve>'],
        "example.test",
    )
    assert got == [
        "alice@example.test",
        "bob@example.org",
        "carol@example.org",
        "dave@example.test",
        "eve@example.test",
    ]


def test_recipients_are_deduplicated() -> None:
    assert parse_recipients(["a@x.test", "a@x.test, b@x.test"], "d.test") == [
        "a@x.test",
        "b@x.test",
    ]


@pytest.mark.parametrize(
    "value", ["alice bob", "x@y@z", "<>", "foo <", "a@", "@example.org", "a b <c d@e>", "a@b c"]
)
def test_unparsable_recipients(value: str) -> None:
    with pytest.raises(AddressError):
        parse_recipients([value], "example.test")


def test_sender_forms() -> None:
    assert parse_sender("alice", "example.test") == "alice@example.test"
    assert parse_sender("<bob@example.org>", "example.test") == "bob@example.org"
    assert parse_sender("<>", "example.test") == ""
    assert parse_sender("", "example.test") == ""
    with pytest.raises(UsageError):
        parse_sender("not an address", "example.test")
