"""``kittiwake policy show``: the policy checks in the order they run, per stage.

Owns the ``policy`` command group. It loads the configuration (which resolves every
plugin name, so an unknown or broken plugin is reported here exactly as ``serve`` would),
instantiates the checks with their options, and prints one line per stage. Checks that
need server state (``recipients``...) are shown by their known hooks without being built.
Not security sensitive: read-only.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import click

from kittiwake.admin.options import config_option
from kittiwake.config import load_config
from kittiwake.errors import ConfigError
from kittiwake.policy.chain import PolicyChain
from kittiwake.policy.plugins import (
    SERVER_BOUND,
    PluginFactory,
    available,
    build_checks,
    effective_specs,
)

EXIT_CONFIG = 1


class _Placeholder:
    """Stands in for a server-bound check: it has the hooks, never runs."""

    def __init__(self, hooks: tuple[str, ...]) -> None:
        for hook in hooks:
            setattr(self, hook, self._never)

    async def _never(self, *args: object) -> None:  # pragma: no cover - never called
        raise AssertionError("placeholder check called")


def _placeholder(hooks: tuple[str, ...]) -> PluginFactory:
    return lambda _options: _Placeholder(hooks)


def _placeholders() -> Mapping[str, PluginFactory]:
    return {name: _placeholder(hooks) for name, hooks in SERVER_BOUND.items()}


def show_lines(config_path: Path | None) -> list[str]:
    """The text of ``kittiwake policy show`` (``ConfigError`` on a bad configuration)."""
    policy = load_config(config_path).policy
    specs = effective_specs(policy.checks)
    checks = build_checks(specs, bound=_placeholders())
    origins = available()
    lines = ["checks, in order:"]
    for spec in specs:
        stages = ", ".join(sorted(spec.stages)) if spec.stages else "all its hooks"
        lines.append(
            f"  {spec.index + 1}. {spec.name} [{origins.get(spec.name, '?')}]"
            f" stages: {stages}; timeout {spec.timeout:g}s"
        )
    if not policy.checks:
        lines.append("  (no [[policy.checks]] configured: the default chain)")
    lines.append("per stage:")
    lines += [f"  {line}" for line in PolicyChain(checks).describe()]
    return lines


@click.group()
def policy() -> None:
    """Inspect the policy checks (order, stages, plugins)."""


@policy.command("show")
@config_option("TOML configuration file (default: built-in settings).")
def show(config_path: Path | None) -> None:
    """Print, per SMTP stage, the checks in the order they run."""
    try:
        lines = show_lines(config_path)
    except ConfigError as e:
        origin = str(config_path) if config_path else "built-in defaults"
        click.echo(f"kittiwake: {origin}: {e}", err=True)
        sys.exit(EXIT_CONFIG)
    for line in lines:
        click.echo(line)
