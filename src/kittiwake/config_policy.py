"""The ``[policy]`` section: which checks run, in which order, with which options.

Owns ``PolicyConfig`` and ``build_policy``. The order is the order of the
``[[policy.checks]]`` tables::

    [policy]
    timeout = 10                 # default per-check time budget, seconds

    [[policy.checks]]
    name = "spf"                 # a built-in or a ``kittiwake.plugins`` entry point
    stages = ["mail"]            # optional: a subset of the plugin's hooks
    timeout = 5                  # optional: this check's budget
    options = { reject_on = "fail" }   # given to the plugin's factory as a mapping

Every problem is a ``ConfigError`` naming the key (``policy.checks[1].name``); a name that
is neither built in nor installed, or whose plugin does not import, is one too
(``policy.plugins.check_name``). Security: the order decides what gets in.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from kittiwake.config_check import Table, show
from kittiwake.errors import ConfigError
from kittiwake.policy.chain import STAGES
from kittiwake.policy.plugins import DEFAULT_TIMEOUT, CheckSpec, check_name

__all__ = ["SECTION_KEYS", "PolicyConfig", "build_policy"]

SECTION_KEYS: dict[str, tuple[str, ...]] = {"policy": ("timeout", "checks")}
_CHECK_KEYS = ("name", "stages", "timeout", "options")


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """``checks`` in configured order; empty means the server's default chain only."""

    checks: tuple[CheckSpec, ...] = ()
    timeout: float = DEFAULT_TIMEOUT


def build_policy(t: Table) -> PolicyConfig:
    timeout = t.seconds("timeout", DEFAULT_TIMEOUT)
    raw = t.get("checks", [])
    if not isinstance(raw, list):
        raise ConfigError(t.key("checks"), f"must be an array of tables, got {show(raw)}")
    return PolicyConfig(
        checks=tuple(_check(item, i, timeout) for i, item in enumerate(raw)), timeout=timeout
    )


def _check(raw: object, index: int, default_timeout: float) -> CheckSpec:
    t = Table(raw, f"policy.checks[{index}]", _CHECK_KEYS)
    name = t.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(t.key("name"), f"must be a check name, got {show(name)}")
    check_name(t.key("name"), name)
    stages: frozenset[str] | None = None
    if t.get("stages") is not None:
        listed = t.strings("stages", ())
        for stage in listed:
            if stage not in STAGES:
                raise ConfigError(
                    t.key("stages"), f"{show(stage)} is not a stage ({', '.join(STAGES)})"
                )
        if not listed:
            raise ConfigError(t.key("stages"), "must name at least one stage")
        stages = frozenset(listed)
    options = t.get("options", {})
    if not isinstance(options, dict):
        raise ConfigError(t.key("options"), f"must be a table, got {show(options)}")
    return CheckSpec(
        name=name,
        index=index,
        stages=stages,
        timeout=t.seconds("timeout", default_timeout),
        options=MappingProxyType(options),
    )
