"""The [proxy] and [ratelimit] configuration sections (kittiwake.config_edges)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kittiwake.config import load_config
from kittiwake.config_edges import LOOPBACK, ProxyConfig, RateLimitConfig
from kittiwake.errors import ConfigError
from kittiwake.policy.networks import Networks


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "kittiwake.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_proxy_off_rate_limits_on_loopback_exempt() -> None:
    config = load_config(None)
    assert config.proxy == ProxyConfig()
    assert not any(config.proxy.enabled_for(lc.role) for lc in config.listeners)
    assert config.ratelimit == RateLimitConfig(60, 1000, LOOPBACK)
    assert "127.0.0.5" in config.ratelimit.exempt and "::1" in config.ratelimit.exempt
    assert "192.0.2.1" not in config.ratelimit.exempt


def test_full_file(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """
[relay]
mynetworks = ["192.0.2.0/24"]

[proxy]
trusted = ["10.0.0.0/8", "2001:db8::/32"]
listeners = ["mx", "smtps", "mx"]
timeout = 3

[ratelimit]
connections_per_ip_per_minute = 0
messages_per_user_per_hour = 50
exempt = ["198.51.100.0/24"]
""",
        )
    )
    assert config.proxy == ProxyConfig(
        Networks.parse(["10.0.0.0/8", "2001:db8::/32"]), ("mx", "smtps"), 3.0
    )
    assert config.proxy.enabled_for("smtps") and not config.proxy.enabled_for("submission")
    assert config.ratelimit == RateLimitConfig(0, 50, Networks.parse(["198.51.100.0/24"]))
    assert "192.0.2.1" not in config.ratelimit.exempt  # an explicit list replaces the default


def test_exempt_defaults_to_mynetworks_and_loopback(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[relay]\nmynetworks = ["192.0.2.0/24", "::1"]\n'))
    assert list(config.ratelimit.exempt) == list(
        Networks.parse(["192.0.2.0/24", "::1", "127.0.0.0/8"])
    )
    config = load_config(write(tmp_path, "[ratelimit]\nexempt = []\n"))
    assert not config.ratelimit.exempt  # nobody exempt, not even loopback


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ('[proxy]\nlisteners = ["mx"]\n', "proxy.trusted", "needs the proxies' addresses"),
        ('[proxy]\ntrusted = ["10.0.0.1/8"]\n', "proxy.trusted", "host bits set"),
        ('[proxy]\ntrusted = ["lb.example"]\n', "proxy.trusted", "not an IP network"),
        (
            '[proxy]\ntrusted = ["10.0.0.0/8"]\nlisteners = ["imap"]\n',
            "proxy.listeners",
            '"imap" is not an enabled listener',
        ),
        (
            '[listen]\nsmtps = ""\n[proxy]\ntrusted = ["10.0.0.0/8"]\nlisteners = ["smtps"]\n',
            "proxy.listeners",
            '"smtps" is not an enabled listener',
        ),
        ('[proxy]\nlisteners = "mx"\n', "proxy.listeners", "array of strings"),
        ("[proxy]\ntimeout = 0\n", "proxy.timeout", "> 0"),
        ("[proxy]\ntrusted_networks = []\n", "proxy.trusted_networks", "did you mean 'trusted'"),
        (
            "[ratelimit]\nconnections_per_ip_per_minute = -1\n",
            "ratelimit.connections_per_ip_per_minute",
            ">= 0 (0 = off)",
        ),
        (
            "[ratelimit]\nmessages_per_user_per_hour = 1.5\n",
            "ratelimit.messages_per_user_per_hour",
            "integer",
        ),
        ("[ratelimit]\nexempt = [1]\n", "ratelimit.exempt", "array of strings"),
        (
            "[ratelimit]\nrecipients_per_message = 5\n",
            "ratelimit.recipients_per_message",
            "unknown",
        ),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    assert caught.value.key == key
    assert problem in caught.value.problem
