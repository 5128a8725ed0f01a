"""The 0.2 configuration: listen.lmtp, [relay], [transport], [dns], [queue], [etrn]."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from click.testing import CliRunner

from kittiwake.admin.cli import main
from kittiwake.config import Config, load_config
from kittiwake.config_mta import DnsConfig, EtrnConfig, QueueConfig, RelayConfig
from kittiwake.config_server import ListenerConfig
from kittiwake.errors import ConfigError
from kittiwake.net.tls import ensure_self_signed
from kittiwake.policy.networks import Networks


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "kittiwake.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_never_relay_and_never_look_anything_up() -> None:
    config = load_config(None)
    assert config.relay == RelayConfig()
    assert not config.relay.mynetworks and "127.0.0.1" not in config.relay.mynetworks
    assert config.relay.smarthost == "" and config.relay.smarthost_credentials is None
    assert config.relay.tls_policy == "opportunistic" and config.relay.tls_ca_file is None
    assert dict(config.relay.tls_policies) == {} and dict(config.transport) == {}
    assert config.dns == DnsConfig((), 53, 5.0)
    assert config.queue == QueueConfig(300.0, 3600.0, 432000.0, 14400.0, 20, 1000)
    assert config.etrn == EtrnConfig() and not config.etrn.enabled
    assert config.listener("lmtp") is None


def test_full_mta_file(tmp_path: Path) -> None:
    cert, _ = ensure_self_signed(tmp_path / "ca", "ca.test")
    path = write(
        tmp_path,
        f"""
[listen]
lmtp = "127.0.0.1:2424"

[local]
domains = ["example.org", "lists.example.org"]

[relay]
mynetworks = ["192.0.2.0/24", "2001:db8::/32", "127.0.0.1"]
smarthost = "[Relay.Example.NET]:587"
smarthost_username = "kw"
smarthost_password = "s3cret"
tls_policy = "Required"
tls_ca_file = "ca/{cert.name}"

[relay.tls_policies]
"Example.COM" = "verify"
"legacy.test" = "none"

[transport]
"example.net" = "smtp:[127.0.0.2]:2525"
"lists.example.org" = "lmtp:127.0.0.1:24"
".sub.example" = "smtp:mx.sub.example"
"example.org" = "local"
"gone.test" = "error:5.1.1 Gone"
"void.test" = "discard"

[dns]
nameservers = ["127.0.0.53", "::1"]
port = 5353
timeout = 1.5

[queue]
retry_first = 60
retry_max = 600
max_lifetime = 86400
delay_warning = 3600
destination_concurrency = 5
active_limit = 50

[etrn]
allowed = ["192.0.2.0/24"]
""",
    )
    config = load_config(path)
    assert config.listener("lmtp") == ListenerConfig("lmtp", "127.0.0.1", 2424)
    relay = config.relay
    assert relay.mynetworks == Networks.parse(["192.0.2.0/24", "2001:db8::/32", "127.0.0.1"])
    assert "192.0.2.200" in relay.mynetworks and "::ffff:127.0.0.1" in relay.mynetworks
    assert relay.smarthost == "[relay.example.net]:587"
    assert relay.smarthost_credentials == ("kw", "s3cret")
    assert "s3cret" not in repr(config)  # the password never shows up in a log line
    assert relay.tls_policy == "required"
    assert relay.tls_ca_file == cert
    assert dict(relay.tls_policies) == {"example.com": "verify", "legacy.test": "none"}
    assert dict(config.transport) == {
        "example.net": "smtp:[127.0.0.2]:2525",
        "lists.example.org": "lmtp:127.0.0.1:24",
        ".sub.example": "smtp:mx.sub.example",
        "example.org": "local",
        "gone.test": "error:5.1.1 Gone",
        "void.test": "discard",
    }
    assert config.dns == DnsConfig(("127.0.0.53", "::1"), 5353, 1.5)
    assert config.queue == QueueConfig(60.0, 600.0, 86400.0, 3600.0, 5, 50)
    assert config.etrn.enabled and ipaddress.ip_address("192.0.2.1") in config.etrn.allowed


@pytest.mark.parametrize(
    ("value", "nexthop"),
    [
        ("mail.example.net", "mail.example.net"),  # MX lookup
        ("Mail.Example.NET.", "mail.example.net"),
        ("[192.0.2.25]", "[192.0.2.25]"),
        ("[192.0.2.25]:2525", "[192.0.2.25]:2525"),
        ("192.0.2.25", "[192.0.2.25]"),
        ("[::1]:25", "[::1]:25"),
        ("mail.example.net:2525", "mail.example.net:2525"),
    ],
)
def test_smarthost_forms(tmp_path: Path, value: str, nexthop: str) -> None:
    config = load_config(write(tmp_path, f'[relay]\nsmarthost = "{value}"\n'))
    assert config.relay.smarthost == nexthop


def test_delay_warning_zero_turns_it_off(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "[queue]\ndelay_warning = 0\n")).queue.delay_warning == 0
    with pytest.raises(ConfigError, match=r"queue\.delay_warning"):
        load_config(write(tmp_path, "[queue]\ndelay_warning = false\n"))


def test_lmtp_listener_settings(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, '[listen]\nmx = ""\nsubmission = ""\nsmtps = ""\nlmtp = "[::1]:24"\n')
    )
    (lmtp,) = config.listeners
    assert lmtp == ListenerConfig("lmtp", "::1", 24) and lmtp.lmtp and not lmtp.implicit_tls
    proto = config.listener_proto(lmtp, tls_available=True, auth_mechanisms=("PLAIN",))
    assert proto.lmtp and not proto.starttls_available and proto.auth_mechanisms == ()
    assert not proto.etrn_enabled


def test_listener_protos_and_etrn(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[etrn]\nallowed = ["127.0.0.0/8"]\n'))
    mx, submission, smtps = config.listeners
    mx_proto = config.listener_proto(mx, tls_available=True)
    assert mx_proto.etrn_enabled and mx_proto.starttls_available and not mx_proto.lmtp
    sub = config.listener_proto(submission, tls_available=True, auth_mechanisms=("PLAIN",))
    assert not sub.etrn_enabled and sub.auth_mechanisms == ("PLAIN",) and sub.starttls_available
    assert not config.listener_proto(smtps, tls_available=True).starttls_available
    assert not config.listener_proto(mx, tls_available=False).starttls_available
    assert not Config().listener_proto(mx, tls_available=True).etrn_enabled  # off by default


BAD: list[tuple[str, str, str]] = [
    ('[listen]\nlmtp = "127.0.0.1:2525"\n', "listen.lmtp", "same address as listen.mx"),
    ('[listen]\nlmtp = "mail:24"\n', "listen.lmtp", "no DNS"),
    ('[relay]\nmynetworks = ["10.0.0.1/8"]\n', "relay.mynetworks", "did you mean 10.0.0.0/8"),
    ('[relay]\nmynetworks = ["everyone"]\n', "relay.mynetworks", "not an IP network"),
    ('[relay]\nmynetworks = "10.0.0.0/8"\n', "relay.mynetworks", "array of strings"),
    ('[relay]\nmynetworks = ["::ffff:0:0/96"]\n', "relay.mynetworks", "IPv4-mapped"),
    ('[relay]\nsmarthost = "bad host"\n', "relay.smarthost", '"[host]:port"'),
    ('[relay]\nsmarthost = "[192.0.2.1]:0"\n', "relay.smarthost", "bad port"),
    ('[relay]\nsmarthost = "[192.0.2.1"\n', "relay.smarthost", "bad next hop"),
    (
        '[relay]\nsmarthost = "[192.0.2.1]"\nsmarthost_username = "u"\n',
        "relay.smarthost_password",
        "go together",
    ),
    ('[relay]\nsmarthost_password = "p"\n', "relay.smarthost_username", "go together"),
    (
        '[relay]\nsmarthost_username = "u"\nsmarthost_password = "p"\n',
        "relay.smarthost_username",
        "need relay.smarthost",
    ),
    ('[relay]\ntls_policy = "dane"\n', "relay.tls_policy", "none, opportunistic, required"),
    ('[relay]\ntls_ca_file = "nope.pem"\n', "relay.tls_ca_file", "cannot read"),
    ('[relay]\ntls_policies = "verify"\n', "relay.tls_policies", "table of domain = value"),
    (
        '[relay.tls_policies]\n"example.org" = "strict"\n',
        'relay.tls_policies."example.org"',
        "one of none, opportunistic",
    ),
    (
        '[relay.tls_policies]\n"bad domain" = "verify"\n',
        'relay.tls_policies."bad domain"',
        "domain",
    ),
    (
        '[relay.tls_policies]\n"a.test" = "none"\n"A.TEST" = "verify"\n',
        'relay.tls_policies."A.TEST"',
        "given twice",
    ),
    ("[relay]\nsmarthst = 1\n", "relay.smarthst", "did you mean 'smarthost'"),
    ('[transport]\n"example.net" = "smtp:[127.0.0.2]:99999"\n', 'transport."example.net"', "port"),
    ('[transport]\n"example.net" = "uucp:x"\n', 'transport."example.net"', "unknown transport"),
    ('[transport]\n"example.net" = 25\n', 'transport."example.net"', "must be a string"),
    ('[transport]\n"example.net" = "local"\n', 'transport."example.net"', "local.domains"),
    ('[transport]\n".localhost" = "local"\n', 'transport.".localhost"', "local.domains"),
    ('[transport]\n"exa mple.net" = "discard"\n', 'transport."exa mple.net"', "domain name"),
    ('[transport]\n"..x" = "discard"\n', 'transport."..x"', "domain name"),
    ('transport = "smtp:x"\n', "transport", "table of domain = value"),
    ('[transport]\n"x.test" = "error:5.1 nope"\n', 'transport."x.test"', "enhanced status"),
    ('[dns]\nnameservers = ["dns.google"]\n', "dns.nameservers", "IP addresses"),
    ("[dns]\nport = 0\n", "dns.port", "integer >= 1"),
    ("[dns]\nport = 65536\n", "dns.port", "1 to 65535"),
    ("[dns]\ntimeout = 0\n", "dns.timeout", "> 0"),
    ("[queue]\nretry_first = 7200\n", "queue.retry_first", "<= queue.retry_max (3600.0)"),
    ("[queue]\nmax_lifetime = 60\n", "queue.max_lifetime", ">= queue.retry_first"),
    ("[queue]\nactive_limit = 0\n", "queue.active_limit", "integer >= 1"),
    ("[queue]\ndestination_concurrency = 2.5\n", "queue.destination_concurrency", "integer"),
    ('[queue]\ndelay_warning = "4h"\n', "queue.delay_warning", "seconds"),
    ("[queue]\nretry_max = -1\n", "queue.retry_max", "> 0"),
    ('[etrn]\nallowed = ["10.0.0.0/40"]\n', "etrn.allowed", "not an IP network"),
    ("[etrn]\nenabled = true\n", "etrn.enabled", "unknown key"),
]


@pytest.mark.parametrize(
    ("text", "key", "fragment"), BAD, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD)]
)
def test_error_names_the_key(tmp_path: Path, text: str, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert info.value.key == key
    assert fragment in info.value.problem


def test_tls_ca_file_must_hold_certificates(tmp_path: Path) -> None:
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, '[relay]\ntls_ca_file = "junk.pem"\n'))
    assert info.value.key == "relay.tls_ca_file"
    assert "no PEM certificates" in info.value.problem


def test_check_config_shows_the_mta_settings(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[listen]\nlmtp = "127.0.0.1:2424"\n'
        '[relay]\nmynetworks = ["192.0.2.0/24"]\nsmarthost = "[192.0.2.9]:587"\n'
        'smarthost_username = "kw"\nsmarthost_password = "s3cret"\n'
        '[transport]\n"example.net" = "discard"\n'
        '[dns]\nnameservers = ["127.0.0.1"]\nport = 5353\n'
        '[etrn]\nallowed = ["127.0.0.0/8"]\n',
    )
    result = CliRunner().invoke(main, ["check-config", str(path)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "lmtp        127.0.0.1:2424 (LMTP, no TLS)" in out
    assert "mynetworks  192.0.2.0/24 (relay without AUTH)" in out
    assert "smarthost   [192.0.2.9]:587, AUTH as kw" in out
    assert "s3cret" not in out
    assert "transport   example.net -> discard" in out
    assert "dns         127.0.0.1 (port 5353, timeout 5 s)" in out
    assert "queue       retry 5m..1h, lifetime 5d, delay warning 4h" in out
    assert "etrn        allowed from 127.0.0.0/8" in out
