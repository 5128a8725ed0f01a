"""The TOML loader: defaults, a full file, and an error naming the right key for each mistake."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from kittiwake.config import Config, load_config
from kittiwake.config_server import DEFAULT_LISTENERS, ListenerConfig, LocalConfig
from kittiwake.errors import ConfigError
from kittiwake.net.tls import ensure_self_signed
from kittiwake.proto.events import BareLinefeedPolicy


def write(tmp_path: Path, text: str, name: str = "kittiwake.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_need_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(None)
    assert config.hostname in (socket.gethostname().lower(), "localhost")
    assert config.data_dir == tmp_path / "kittiwake-data"
    assert config.log_level == "info"
    assert config.event_loop == "auto"
    assert [str(lc) for lc in config.listeners] == [
        "127.0.0.1:2525",
        "127.0.0.1:5870",
        "127.0.0.1:4650",
    ]
    assert config.tls.self_signed
    assert config.limits.max_recipients == 100
    assert config.limits.max_message_size == 50 * 1024 * 1024
    assert config.timeouts.command == 300.0
    assert config.smtp.bare_linefeed is BareLinefeedPolicy.NORMALIZE
    assert config.local == LocalConfig(("localhost",), (), "postmaster@localhost")


def test_empty_file_equals_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_config(write(tmp_path, "")) == load_config(None)


def test_full_file(tmp_path: Path) -> None:
    cert, key = ensure_self_signed(tmp_path / "certs", "mx.example.org")
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    path = write(
        conf_dir,
        f"""
hostname = "MX.Example.org."
data_dir = "spool"
log_level = "DEBUG"
event_loop = "asyncio"

[listen]
mx = "localhost:25"
submission = "[::1]:587"
smtps = ""

[tls]
cert = "{cert}"
key = "../certs/{key.name}"

[limits]
max_connections = 5000
max_connections_per_ip = 50
max_recipients = 1000
max_message_size = 0
max_commands = 500
max_bad_commands = 5

[timeouts]
command = 60
data = 120.5
shutdown_grace = 1

[smtp]
bare_linefeed = "reject"
vrfy = false
expn = true
banner = "ESMTP ready"

[local]
domains = ["example.org", "Example.NET"]
users = ["Alice", "bob@example.net", "postmaster"]
postmaster = "hostmaster"
""",
    )
    config = load_config(path)
    assert config.hostname == "mx.example.org"
    assert config.data_dir == conf_dir / "spool"  # relative to the file, not the cwd
    assert config.log_level == "debug"
    assert config.event_loop == "asyncio"
    assert config.listeners == (
        ListenerConfig("mx", "127.0.0.1", 25),
        ListenerConfig("submission", "::1", 587),
    )
    assert config.listener("smtps") is None
    assert str(config.listeners[1]) == "[::1]:587"
    assert config.tls.cert_file == cert
    assert config.tls.key_file == key
    assert config.limits.max_recipients == 1000
    assert config.limits.max_message_size == 0
    assert config.timeouts.data == 120.5
    assert config.timeouts.shutdown_grace == 1.0
    assert config.smtp.bare_linefeed is BareLinefeedPolicy.REJECT
    assert (config.smtp.vrfy, config.smtp.expn, config.smtp.banner) == (False, True, "ESMTP ready")
    assert config.local.domains == ("example.org", "example.net")
    assert config.local.users == ("alice", "bob@example.net", "postmaster")
    assert config.local.postmaster == "hostmaster@example.org"


def test_partial_listen_keeps_other_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[listen]\nmx = "127.0.0.2:2526"\n'))
    assert config.listeners == (ListenerConfig("mx", "127.0.0.2", 2526), *DEFAULT_LISTENERS[1:])


BAD: list[tuple[str, str, str]] = [
    # (file text, the key the error must name, a fragment of the problem)
    ('hostnme = "x"\n', "hostnme", "unknown key (did you mean 'hostname'?)"),
    ("[lmits]\nmax_recipients = 100\n", "lmits", "did you mean 'limits'"),
    ("[limits]\nmax_recipient = 100\n", "limits.max_recipient", "unknown key"),
    ("[smtp]\nfoo = 1\n", "smtp.foo", "known: bare_linefeed, vrfy, expn, banner"),
    ('[limits]\nmax_recipients = "x"\n', "limits.max_recipients", "integer >= 100"),
    ("[limits]\nmax_recipients = 99\n", "limits.max_recipients", "RFC 5321 §4.5.3.1.8"),
    ("[limits]\nmax_connections = true\n", "limits.max_connections", "got true"),
    ("[limits]\nmax_message_size = -1\n", "limits.max_message_size", "0 = unlimited"),
    ("[limits]\nmax_commands = 1.5\n", "limits.max_commands", "got 1.5"),
    ('[listen]\nmx = "127.0.0.1:70000"\n', "listen.mx", "port must be a number from 1 to 65535"),
    ('[listen]\nsmtps = "127.0.0.1:0"\n', "listen.smtps", "from 1 to 65535"),
    ('[listen]\nmx = "127.0.0.1"\n', "listen.mx", '"host:port"'),
    ('[listen]\nmx = "mail.example.org:25"\n', "listen.mx", "no DNS"),
    ('[listen]\nmx = "::1:25"\n', "listen.mx", "needs brackets"),
    ('[listen]\nmx = "[::1]"\n', "listen.mx", '"host:port"'),
    ('[listen]\nmx = "[127.0.0.1]:25"\n', "listen.mx", "only for IPv6"),
    ("[listen]\nmx = 2525\n", "listen.mx", "must be a string, got 2525"),
    ('[listen]\nsubmission = "127.0.0.1:2525"\n', "listen.submission", "same address as listen.mx"),
    ('[listen]\nmx = ""\nsubmission = ""\nsmtps = ""\n', "listen", "every role is disabled"),
    ('listen = "127.0.0.1:25"\n', "listen", "must be a table"),
    ('[smtp]\nbare_linefeed = "strip"\n', "smtp.bare_linefeed", "normalize"),
    ('[smtp]\nvrfy = "yes"\n', "smtp.vrfy", 'true or false, got "yes"'),
    ('[smtp]\nbanner = "a\\r\\nb"\n', "smtp.banner", "printable ASCII"),
    ("[timeouts]\ncommand = 0\n", "timeouts.command", "> 0"),
    ("[timeouts]\ndata = -5.0\n", "timeouts.data", "> 0"),
    ("[timeouts]\nshutdown_grace = inf\n", "timeouts.shutdown_grace", "finite"),
    ('log_level = "verbose"\n', "log_level", "debug, info, warning, error"),
    ('event_loop = "trio"\n', "event_loop", "auto, uvloop, asyncio"),
    ('hostname = "bad host"\n', "hostname", "domain name"),
    ("data_dir = 3\n", "data_dir", "path"),
    ('[tls]\ncert = "cert.pem"\n', "tls.key", "given together"),
    ('[tls]\nkey = "key.pem"\n', "tls.cert", "given together"),
    ('[tls]\ncert = "nope.pem"\nkey = "nope-key.pem"\n', "tls.cert", "cannot read"),
    ('[local]\ndomains = ["exa mple.org"]\n', "local.domains", "domain name"),
    ("[local]\ndomains = []\n", "local.domains", "at least one"),
    ('[local]\ndomains = "example.org"\n', "local.domains", "array of strings"),
    ('[local]\nusers = ["../etc"]\n', "local.users", "plain local part"),
    ('[local]\nusers = ["a/b"]\n', "local.users", "plain local part"),
    ('[local]\nusers = ["bob@elsewhere.org"]\n', "local.users", "not in local.domains"),
    ('[local]\npostmaster = "root@elsewhere.org"\n', "local.postmaster", "local.domains"),
]


@pytest.mark.parametrize(("text", "key", "fragment"), BAD, ids=[b[1] for b in BAD])
def test_error_names_the_key(tmp_path: Path, text: str, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert info.value.key == key
    assert fragment in info.value.problem
    assert str(info.value).startswith(f"{key}: ")


def test_wrong_type_message_is_readable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, '[limits]\nmax_recipients = "x"\n'))
    assert str(info.value) == (
        "limits.max_recipients: must be an integer >= 100 "
        '(RFC 5321 §4.5.3.1.8 requires accepting at least 100 recipients), got "x"'
    )


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, 'hostname = "a"\n\n[limits\nmax_recipients = 100\n'))
    assert info.value.key == ""
    assert "invalid TOML" in str(info.value)
    assert "line 3" in str(info.value)


def test_missing_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'hostname = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(bad)


def test_tls_key_must_match_cert(tmp_path: Path) -> None:
    cert, _ = ensure_self_signed(tmp_path / "a", "localhost")
    _, other_key = ensure_self_signed(tmp_path / "b", "localhost")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, f'[tls]\ncert = "{cert}"\nkey = "{other_key}"\n'))
    assert info.value.key == "tls.key"
    assert "does not match" in info.value.problem


def test_tls_cert_must_be_pem(tmp_path: Path) -> None:
    _, key = ensure_self_signed(tmp_path / "a", "localhost")
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, f'[tls]\ncert = "junk.pem"\nkey = "{key}"\n'))
    assert info.value.key == "tls.cert"


def test_mailboxes() -> None:
    catch_all = LocalConfig(domains=("example.org",))
    assert catch_all.has_mailbox("anyone@Example.ORG")
    assert not catch_all.has_mailbox("anyone@example.net")
    assert not catch_all.has_mailbox("example.org")
    listed = LocalConfig(domains=("a.test", "b.test"), users=("alice", "bob@b.test"))
    assert listed.has_mailbox("Alice@a.test") and listed.has_mailbox("alice@b.test")
    assert listed.has_mailbox("bob@b.test") and not listed.has_mailbox("bob@a.test")
    assert listed.has_mailbox("PostMaster@a.test")  # RFC 5321 §4.5.1
    assert not listed.has_mailbox("carol@a.test")
    assert listed.is_local_domain("B.TEST") and not listed.is_local_domain("c.test")


def test_proto_config_carries_the_settings() -> None:
    config = Config(hostname="mx.test")
    proto = config.proto_config(starttls_available=True, auth_mechanisms=("PLAIN",))
    assert proto.hostname == "mx.test"
    assert proto.max_recipients == config.limits.max_recipients
    assert proto.max_message_size == config.limits.max_message_size
    assert proto.bare_linefeed is config.smtp.bare_linefeed
    assert proto.starttls_available and proto.auth_mechanisms == ("PLAIN",)
    assert proto.greeting_text == "ESMTP Kittiwake"
    assert proto.vrfy_enabled and not proto.expn_enabled


def test_readme_example_loads(tmp_path: Path) -> None:
    """The configuration example in README.md must stay valid."""
    readme = Path(__file__).resolve().parents[2] / "README.md"
    text = readme.read_text(encoding="utf-8")
    start = text.index("```toml\n", text.index("## Configuration")) + len("```toml\n")
    example = text[start : text.index("```", start)]
    config = load_config(write(tmp_path, example))
    assert config.listeners  # the example is more than comments
