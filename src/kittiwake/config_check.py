"""Typed readers for TOML configuration values, each error naming its dotted key.

Owns ``Table`` (one TOML table: unknown keys are errors, typed getters), ``show`` (a
value as the user wrote it, for messages) and the syntax checks for domain names, local
parts and listen addresses. No DNS: listen hosts are IP literals or ``localhost``.
Used by ``kittiwake.config``; imports only ``errors``. Security relevant only in that
local parts later name Maildir directories, so ``/`` and ``\\`` are refused here.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
from pathlib import Path
from typing import cast

from kittiwake.errors import ConfigError

# RFC 1035 §2.3.1 labels (LDH, 1-63 octets); IDNs must be given as A-labels (xn--).
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DOMAIN_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
# RFC 5322 §3.2.3 dot-atom with RFC 6531 §3.3 UTF-8; "/" and "\" are excluded on purpose:
# a local part becomes a Maildir directory name.
_ATOM = r"[a-z0-9!#$%&'*+=?^_`{|}~\-\u0080-\U0010ffff]+"
_LOCAL_RE = re.compile(rf"{_ATOM}(?:\.{_ATOM})*")


def show(value: object) -> str:
    """A value the way the user wrote it in TOML, for error messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return f"a {type(value).__name__} ({value})"


class Table:
    """One TOML table under validation: rejects unknown keys, offers typed getters."""

    def __init__(self, raw: object, name: str, allowed: tuple[str, ...]) -> None:
        if not isinstance(raw, dict):
            raise ConfigError(name, f"must be a table, got {show(raw)}")
        self.raw: dict[str, object] = raw
        self.name = name
        for key in raw:
            if key not in allowed:
                near = difflib.get_close_matches(key, allowed, n=1)
                hint = f"did you mean {near[0]!r}?" if near else f"known: {', '.join(allowed)}"
                raise ConfigError(self.key(key), f"unknown key ({hint})")

    def key(self, key: str) -> str:
        return f"{self.name}.{key}" if self.name else key

    def get(self, key: str, default: object = None) -> object:
        return self.raw.get(key, default)  # TOML has no null: None means "not given"

    def integer(self, key: str, default: int, minimum: int, why: str = "") -> int:
        value = self.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(
                self.key(key), f"must be an integer >= {minimum}{why}, got {show(value)}"
            )
        return value

    def seconds(self, key: str, default: float) -> float:
        value = self.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ConfigError(self.key(key), f"must be a number of seconds > 0, got {show(value)}")
        if value == float("inf"):
            raise ConfigError(self.key(key), "must be finite")
        return float(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(self.key(key), f"must be true or false, got {show(value)}")
        return value

    def string(self, key: str, default: str) -> str:
        value = self.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise ConfigError(self.key(key), f"must be a string, got {show(value)}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.string(key, default).lower()
        if value not in choices:
            raise ConfigError(
                self.key(key), f"must be one of {', '.join(choices)}, got {show(self.get(key))}"
            )
        return value

    def strings(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.get(key)
        if value is None:
            return default
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(self.key(key), f"must be an array of strings, got {show(value)}")
        return tuple(cast(list[str], value))

    def path(self, key: str, base_dir: Path) -> Path | None:
        value = self.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise ConfigError(self.key(key), f"must be a non-empty path string, got {show(value)}")
        return (base_dir / Path(value).expanduser()).resolve()


def domain_name(key: str, value: object) -> str:
    """A domain name, lower-cased, without a trailing dot."""
    if not isinstance(value, str):
        raise ConfigError(key, f"must be a string, got {show(value)}")
    name = value.lower().removesuffix(".")
    if not is_domain(name):
        raise ConfigError(
            key,
            f"must be a domain name (letters, digits, hyphens; IDNs as xn--), got {show(value)}",
        )
    return name


def listen_address(key: str, value: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` → (IP literal, port); ``localhost`` means 127.0.0.1."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or value.endswith("]"):
        raise ConfigError(key, f'must be "host:port" (IPv6 as "[::1]:port"), got {show(value)}')
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ":" not in host:
            raise ConfigError(key, f"brackets are only for IPv6 addresses, got {show(value)}")
    elif ":" in host:
        raise ConfigError(key, f'an IPv6 address needs brackets ("[::1]:2525"), got {show(value)}')
    if host.lower() == "localhost":
        host = "127.0.0.1"  # decided here, not by a resolver
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        raise ConfigError(
            key, f"host must be an IP address or localhost (no DNS), got {show(host)}"
        ) from None
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ConfigError(key, f"port must be a number from 1 to 65535, got {show(port_text)}")
    return host, int(port_text)


def is_domain(name: str) -> bool:
    """A lower-case LDH domain name (RFC 1035 §2.3.1), at most 253 octets."""
    return len(name) <= 253 and _DOMAIN_RE.fullmatch(name) is not None


def is_local_part(text: str) -> bool:
    """A lower-case dot-atom local part (RFC 5322 §3.2.3, UTF-8 per RFC 6531), no / or \\."""
    return _LOCAL_RE.fullmatch(text) is not None
