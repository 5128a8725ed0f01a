"""The [auth] section: defaults, values, errors that name the key; the auth package's layering."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from kittiwake.config import Config, build_config
from kittiwake.config_auth import AuthConfig
from kittiwake.errors import ConfigError

SRC = Path(__file__).resolve().parents[2] / "src" / "kittiwake"


def test_defaults() -> None:
    auth = Config().auth
    assert auth == AuthConfig()
    assert auth.mechanisms == ("PLAIN", "LOGIN", "SCRAM-SHA-256")
    assert auth.sender_ownership == "strict"
    assert (auth.max_failures_per_ip, auth.max_failures_per_user) == (10, 20)
    assert (auth.failure_window, auth.lockout) == (600, 900)


def test_values() -> None:
    raw: dict[str, object] = {
        "auth": {
            "mechanisms": ["scram-sha-256", "PLAIN", "plain"],
            "sender_ownership": "off",
            "max_failures_per_ip": 3,
            "max_failures_per_user": 4,
            "failure_window": 60,
            "lockout": 1.5,
        }
    }
    auth = build_config(raw, Path(".")).auth
    assert auth == AuthConfig(("SCRAM-SHA-256", "PLAIN"), "off", 3, 4, 60.0, 1.5)


@pytest.mark.parametrize(
    ("table", "key", "problem"),
    [
        ({"mechanisms": ["CRAM-MD5"]}, "auth.mechanisms", "unknown mechanism"),
        ({"mechanisms": []}, "auth.mechanisms", "at least one"),
        ({"mechanisms": "PLAIN"}, "auth.mechanisms", "array of strings"),
        ({"sender_ownership": "loose"}, "auth.sender_ownership", "strict, off"),
        ({"max_failures_per_ip": 0}, "auth.max_failures_per_ip", ">= 1"),
        ({"max_failures_per_user": True}, "auth.max_failures_per_user", ">= 1"),
        ({"failure_window": 0}, "auth.failure_window", "> 0"),
        ({"lockout": "15m"}, "auth.lockout", "> 0"),
        ({"lockuot": 5}, "auth.lockuot", "did you mean 'lockout'"),
    ],
)
def test_errors_name_the_key(table: dict[str, object], key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config({"auth": table}, Path("."))
    assert str(info.value).startswith(key + ":"), str(info.value)
    assert problem in str(info.value)


def test_auth_package_layering() -> None:
    """auth is a leaf below policy and smtpd: it must not import them (or the queue)."""
    forbidden = (
        "kittiwake.smtpd",
        "kittiwake.policy",
        "kittiwake.queue",
        "kittiwake.cleanup",
        "kittiwake.delivery",
        "kittiwake.app",
        "kittiwake.admin",
        "asyncio.subprocess",
    )
    bad = []
    for path in sorted((SRC / "auth").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            bad += [f"{path.name}: {n}" for n in names if n.startswith(forbidden)]
    assert not bad, bad
