"""Policy plugins: how a check named in the configuration becomes an object in the chain.

Owns the plugin contract (a *factory* ``(options: Mapping[str, object]) -> plugin``; the
plugin has any of the ``chain.StageCheck`` hooks), the built-in registry (``BUILTINS``:
name → ``"module:attr"``, imported lazily, so a built-in costs nothing unless configured),
third-party discovery through the ``kittiwake.plugins`` entry-point group
(``importlib.metadata``), ``CheckSpec`` (one ``[[policy.checks]]`` table) and
``build_checks``, which turns specs into ``ConfiguredCheck`` objects for ``PolicyChain``.
Every failure — unknown name, import error, factory raising, a hook-less plugin, a stage
the plugin does not implement — is a ``ConfigError`` naming the key
(``policy.checks[2].name``), raised at start, never at the first message.
Security: HIGH in effect (plugins run in-process with the server's privileges; only
installed packages are loaded, never paths from the config).
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from kittiwake.errors import ConfigError
from kittiwake.policy.chain import STAGES
from kittiwake.policy.submission import RequireAuth

__all__ = [
    "BUILTINS",
    "ENTRY_POINT_GROUP",
    "SERVER_BOUND",
    "CheckSpec",
    "ConfiguredCheck",
    "PluginFactory",
    "available",
    "build_checks",
    "effective_specs",
    "find_factory",
]

ENTRY_POINT_GROUP = "kittiwake.plugins"
PluginFactory = Callable[[Mapping[str, object]], object]
DEFAULT_TIMEOUT = 10.0

# Built-in checks: name -> "module:factory". A later module registers by adding a row;
# its factory takes the check's options like any third-party plugin.
BUILTINS: dict[str, str] = {
    "require-auth": "kittiwake.policy.plugins:require_auth",
}
# Built-ins that need server state (the address directory, the user store, the
# ``[ratelimit]`` section): the server passes their factories to ``build_checks(bound=...)``.
# Values: their hooks (for ``kittiwake policy show`` without a running server).
SERVER_BOUND: dict[str, tuple[str, ...]] = {
    "ratelimit": ("mail",),
    "sender-ownership": ("mail",),
    "recipients": ("rcpt",),
    # issue 5: they share the server's resolver/hostname/data_dir (policy.builtin)
    "spf": ("mail",),
    "dkim": ("data",),
    "dmarc": ("data",),
    "arc": ("data",),
    "authres": ("data",),
    "dnsbl": ("connect",),
    "greylist": ("rcpt",),
}


@dataclass(frozen=True, slots=True)
class CheckSpec:
    """One ``[[policy.checks]]`` entry; ``index`` is its position (for error keys)."""

    name: str
    index: int = 0
    stages: frozenset[str] | None = None  # None: every hook the plugin has
    timeout: float = DEFAULT_TIMEOUT
    options: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))

    def key(self, sub: str) -> str:
        return f"policy.checks[{self.index}].{sub}"


@dataclass(frozen=True, slots=True)
class ConfiguredCheck:
    """A plugin with its configured name, stages and timeout (``PolicyChain`` unwraps it)."""

    name: str
    plugin: object
    stages: frozenset[str] | None = None
    timeout: float | None = None


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def available() -> dict[str, str]:
    """Every check name that can be configured → where it comes from."""
    found = {name: f"built-in ({target})" for name, target in BUILTINS.items()}
    found.update({name: "built-in (server)" for name in SERVER_BOUND})
    for name, ep in _entry_points().items():
        if name not in found:
            dist = ep.dist.name if ep.dist is not None else "?"
            found[name] = f"plugin {ep.value} (from {dist})"
    return found


def find_factory(name: str) -> PluginFactory:
    """The factory for ``name``: built-ins first, then the entry points.
    Raises ``LookupError`` for an unknown name, anything the import raises otherwise."""
    target = BUILTINS.get(name)
    if target is not None:
        module, _, attr = target.partition(":")
        factory: object = getattr(importlib.import_module(module), attr)
    else:
        ep = _entry_points().get(name)
        if ep is None:
            raise LookupError(name)
        factory = ep.load()
    if not callable(factory):
        raise TypeError(f"{name}: the entry point is not callable")
    return factory


def check_name(key: str, name: str) -> None:
    """Config-time check that ``name`` exists and imports (``ConfigError`` naming ``key``)."""
    if name in SERVER_BOUND:
        return
    try:
        find_factory(name)
    except LookupError:
        known = ", ".join(sorted(available()))
        raise ConfigError(key, f"no check or plugin named {name!r} (known: {known})") from None
    except Exception as exc:
        raise ConfigError(key, f"plugin {name!r} cannot be loaded: {exc!r}") from None


def effective_specs(specs: tuple[CheckSpec, ...]) -> tuple[CheckSpec, ...]:
    """What runs: nothing configured means ``ratelimit`` then ``recipients`` (0.3's chain);
    a list without ``recipients`` gets it appended, so relay control can never be left out
    by accident (a recipient needs some check's ACCEPT: never an open relay)."""
    if not specs:
        return (CheckSpec("ratelimit", index=0), CheckSpec("recipients", index=1))
    if any(s.name == "recipients" for s in specs):
        return specs
    return (*specs, CheckSpec("recipients", index=len(specs)))


def build_checks(
    specs: tuple[CheckSpec, ...] | list[CheckSpec],
    bound: Mapping[str, PluginFactory] = MappingProxyType({}),
) -> list[ConfiguredCheck]:
    """Instantiate the configured checks in order (``ConfigError`` names the bad key)."""
    built: list[ConfiguredCheck] = []
    for spec in specs:
        factory = bound.get(spec.name)
        if factory is None:
            if spec.name in SERVER_BOUND:
                raise ConfigError(spec.key("name"), f"{spec.name!r} is not available here")
            check_name(spec.key("name"), spec.name)
            factory = find_factory(spec.name)
        try:
            plugin = factory(spec.options)
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(spec.key("options"), f"{spec.name}: {exc}") from None
        hooks = frozenset(s for s in STAGES if callable(getattr(plugin, s, None)))
        if not hooks:
            raise ConfigError(spec.key("name"), f"{spec.name!r} implements no stage hook")
        if spec.stages is not None and not spec.stages <= hooks:
            missing = ", ".join(sorted(spec.stages - hooks))
            raise ConfigError(spec.key("stages"), f"{spec.name!r} has no hook for {missing}")
        built.append(ConfiguredCheck(spec.name, plugin, spec.stages, spec.timeout))
    return built


# ------------------------------------------------------------------ built-in factories


def _no_options(options: Mapping[str, object], known: tuple[str, ...]) -> None:
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)}")


def require_auth(options: Mapping[str, object]) -> RequireAuth:
    """``require-auth``: no MAIL before AUTH (submission listeners)."""
    _no_options(options, ())
    return RequireAuth()
