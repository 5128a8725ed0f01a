"""The ``[dkim]`` section: which domains submitted mail is signed for, with which keys.

Owns ``build_dkim``::

    [[dkim.keys]]
    domain = "a.test"
    selector = "sel"
    key_file = "dkim/a.test.sel.pem"   # relative to the config file
    algorithm = "ed25519-sha256"       # optional: from the key's type

Keys are read and checked by ``policy.dkim_sign.DkimSigner`` when the server starts
(``signer_for``), so a missing or unusable key stops the start, never a message.
Security: the key files are secrets; their mode is the operator's business
(``kittiwake dkim keygen`` writes them 0600).
"""

from __future__ import annotations

from pathlib import Path

from kittiwake.config_check import Table, domain_name, show
from kittiwake.errors import ConfigError
from kittiwake.policy.dkim_sign import ALGORITHMS, DkimKey, DkimSigner

__all__ = ["SECTION_KEYS", "build_dkim", "signer_for"]

SECTION_KEYS: dict[str, tuple[str, ...]] = {"dkim": ("keys",)}
_KEY_KEYS = ("domain", "selector", "key_file", "algorithm")


def build_dkim(t: Table, base_dir: Path) -> tuple[DkimKey, ...]:
    raw = t.get("keys", [])
    if not isinstance(raw, list):
        raise ConfigError(t.key("keys"), f"must be an array of tables, got {show(raw)}")
    return tuple(_key(item, i, base_dir) for i, item in enumerate(raw))


def _key(raw: object, index: int, base_dir: Path) -> DkimKey:
    t = Table(raw, f"dkim.keys[{index}]", _KEY_KEYS)
    selector = t.string("selector", "")
    if not selector:
        raise ConfigError(t.key("selector"), "a selector is required")
    key_file = t.path("key_file", base_dir)
    if key_file is None:
        raise ConfigError(t.key("key_file"), "a key file is required")
    algorithm = t.string("algorithm", "")
    if algorithm and algorithm not in ALGORITHMS:
        raise ConfigError(t.key("algorithm"), f"must be one of {', '.join(ALGORITHMS)}")
    return DkimKey(domain_name(t.key("domain"), t.get("domain")), selector, key_file, algorithm)


def signer_for(keys: tuple[DkimKey, ...]) -> DkimSigner | None:
    """The signer (None without keys); ``ConfigError`` for an unreadable or bad key."""
    if not keys:
        return None
    try:
        return DkimSigner(keys)
    except (OSError, ValueError) as exc:
        raise ConfigError("dkim.keys", str(exc)) from None
