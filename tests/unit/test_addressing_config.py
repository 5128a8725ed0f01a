"""``[virtual]``, ``[aliases]``, ``[addressing]`` and ``[srs]``: parsed into
``Config.addressing``; every mistake is an error naming its key; the directory built from
a file behaves as the file says."""

from __future__ import annotations

from pathlib import Path

import pytest

from kittiwake.addressing.setup import build_directory
from kittiwake.config import Config, load_config
from kittiwake.config_addressing import AddressingConfig
from kittiwake.errors import ConfigError

SECRET = "s3cr3t-s3cr3t-s3cr3t"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "kittiwake.toml"
    path.write_text(text)
    return path


FULL = f"""
[local]
domains = ["example.test", "example.org"]
users = ["alice", "bob@example.test"]

[virtual]
domains = ["Virtual.Test"]
mailboxes = ["Vic@virtual.test"]

[addressing]
recipient_delimiter = "+-"

[aliases]
"Info@Example.Test" = ["alice", "carol@Elsewhere.Example"]
"@example.org" = "bob@example.test"
"sales@virtual.test" = "vic@virtual.test"

[srs]
secret = "{SECRET}"
old_secrets = ["an-older-secret-of-16"]
domain = "example.org"
max_age_days = 10
"""


def test_full_file(tmp_path: Path) -> None:
    a = load_config(write(tmp_path, FULL)).addressing
    assert a.virtual_domains == ("virtual.test",)
    assert a.virtual_mailboxes == ("vic@virtual.test",)
    assert a.recipient_delimiter == "+-"
    assert dict(a.aliases) == {
        "info@example.test": ("alice@example.test", "carol@elsewhere.example"),
        "@example.org": ("bob@example.test",),
        "sales@virtual.test": ("vic@virtual.test",),
    }
    assert (a.srs.domain, a.srs.max_age_days, a.srs.enabled) == ("example.org", 10, True)
    assert a.srs.old_secrets == ("an-older-secret-of-16",)
    assert SECRET not in repr(a)  # never in logs
    assert a.forwards(("example.test", "example.org")) == [
        ("info@example.test", "carol@elsewhere.example")
    ]


def test_defaults(tmp_path: Path) -> None:
    a = load_config(write(tmp_path, "")).addressing
    assert a == AddressingConfig() == Config().addressing
    assert a.recipient_delimiter == "+" and not a.srs.enabled and not a.aliases
    assert a.srs.domain_or("localhost") == "localhost"


def test_directory_from_the_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL + "[listen]\nmx = '127.0.0.9:2525'\n"))
    mailboxes, d = build_directory(config)
    assert d.srs is not None and d.srs.domain == "example.org"
    assert d.check("info-x@example.test") is None and d.check("vic@virtual.test") is None
    assert d.check("anyone@example.org") is None  # the catch-all
    assert d.check("nobody@example.test") is not None
    assert d.is_local_domain("[127.0.0.9]")
    assert mailboxes.lookup("bob+x@example.test") == "bob@example.test"
    assert d.forward_sender("x@sender.example").endswith("@example.org")
    no_srs = load_config(write(tmp_path, "[local]\ndomains = ['example.test']\n"))
    assert build_directory(no_srs)[1].srs is None


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ("[virtual]\ndomains = ['example.test']", "virtual.domains", "also in local.domains"),
        ("[virtual]\ndomains = ['bad_domain']", "virtual.domains", "domain name"),
        ("[virtual]\nmailboxes = ['x@elsewhere.test']", "virtual.mailboxes", "virtual.domains"),
        ("[virtual]\ndomains = ['v.test']\nmailboxes = ['a/b@v.test']", "virtual.mailboxes", ""),
        ("[virtual]\ncolour = 1", "virtual.colour", "unknown key"),
        ("[addressing]\nrecipient_delimiter = '%'", "addressing.recipient_delimiter", "off"),
        ("[addressing]\nrecipient_delimiter = 1", "addressing.recipient_delimiter", "string"),
        ('[aliases]\n"info" = "alice@example.test"', 'aliases."info"', "local@domain"),
        ('[aliases]\n"x@other.test" = "alice@example.test"', 'aliases."x@other.test"', "not in"),
        ('[aliases]\n"x@example.test" = []', 'aliases."x@example.test"', "non-empty"),
        ('[aliases]\n"x@example.test" = 3', 'aliases."x@example.test"', "address"),
        ('[aliases]\n"x@example.test" = "@example.test"', 'aliases."x@example.test"', "address"),
        ('[aliases]\n"x@example.test" = "a b@example.test"', 'aliases."x@example.test"', ""),
        ('[aliases]\n"x@example.test" = "a@bad_domain"', 'aliases."x@example.test"', "domain"),
        (
            '[aliases]\n"X@example.test" = "a"\n"x@EXAMPLE.test" = "b"',
            'aliases."x@EXAMPLE.test"',
            "twice",
        ),
        ('[aliases]\n"x@example.test" = "a@elsewhere.example"', "srs.secret", "aliases."),
        ('[aliases]\n"@example.test" = "a@elsewhere.example"', "srs.secret", "required"),
        ("[srs]\nsecret = 'short'", "srs.secret", "at least 16"),
        (f"[srs]\nsecret = '{SECRET}'\nold_secrets = ['tiny']", "srs.old_secrets", "16"),
        ("[srs]\nold_secrets = ['0123456789abcdefg']", "srs.old_secrets", "srs.secret"),
        (f"[srs]\nsecret = '{SECRET}'\ndomain = 'other.test'", "srs.domain", "local.domains"),
        (f"[srs]\nsecret = '{SECRET}'\nmax_age_days = 0", "srs.max_age_days", ">= 1"),
        (f"[srs]\nsecret = '{SECRET}'\nmax_age_days = 2000", "srs.max_age_days", "1024"),
        ("aliases = 1", "aliases", "table"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, key: str, fragment: str) -> None:
    local = "[local]\ndomains = ['example.test']\n"
    doc = local + text + "\n" if text.startswith("[") else text + "\n" + local
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, doc))
    assert info.value.key == key, info.value
    assert fragment in str(info.value)


def test_local_aliases_need_no_secret(tmp_path: Path) -> None:
    doc = "[local]\ndomains = ['example.test']\n[aliases]\n'a@example.test' = ['b', 'c']\n"
    a = load_config(write(tmp_path, doc)).addressing
    assert a.aliases["a@example.test"] == ("b@example.test", "c@example.test")
    assert not a.srs.enabled
