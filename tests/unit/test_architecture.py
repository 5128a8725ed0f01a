"""The layering rules of design.md, enforced: who may import whom."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "kittiwake"


def _imports(package: str) -> dict[str, set[str]]:
    """Module path → the kittiwake modules it imports (absolute names)."""
    found: dict[str, set[str]] = {}
    for path in sorted((SRC / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        found[str(path.relative_to(SRC))] = names
    return found


FORBIDDEN = {
    # package: prefixes it must never import
    "proto": (
        "asyncio",
        "socket",
        "ssl",
        "selectors",
        "kittiwake.smtpd",
        "kittiwake.queue",
        "kittiwake.net",
        "kittiwake.delivery",
        "kittiwake.cleanup",
        "kittiwake.policy",
    ),
    "delivery": ("kittiwake.queue", "kittiwake.smtpd", "kittiwake.cleanup", "kittiwake.app"),
    "queue": ("kittiwake.cleanup", "kittiwake.smtpd", "kittiwake.app"),
    "policy": ("kittiwake.smtpd", "kittiwake.queue", "kittiwake.cleanup", "kittiwake.app"),
    "net": ("kittiwake.smtpd", "kittiwake.proto", "kittiwake.queue", "kittiwake.app"),
    "cleanup": ("kittiwake.smtpd", "kittiwake.app"),
    "smtpd": ("kittiwake.app", "kittiwake.admin"),
}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layering(package: str) -> None:
    bad = [
        f"{module} imports {name}"
        for module, names in _imports(package).items()
        for name in names
        if any(name == p or name.startswith(p + ".") for p in FORBIDDEN[package])
    ]
    assert not bad, bad


def test_rule_table_catches_a_violation() -> None:
    """The checker itself works: ``app`` imports smtpd, which ``smtpd``'s rule would forbid."""
    app_imports = _imports("")["app.py"]
    assert any(name.startswith("kittiwake.smtpd") for name in app_imports)


def test_scheduler_sees_only_the_store_protocol() -> None:
    """The scheduler works on ``queue.api.QueueStore``, so a PostgreSQL backend can serve it."""
    backend = (
        "kittiwake.queue.sqlite",
        "kittiwake.queue.sqldb",
        "kittiwake.queue.sqladmin",
        "kittiwake.queue.sqlbatch",
        "sqlite3",
    )
    imports = _imports("queue")
    scheduler_modules = [m for m in imports if m.split("/")[-1].startswith(("sched", "scheduler"))]
    assert scheduler_modules
    bad = [
        f"{m} imports {name}" for m in scheduler_modules for name in imports[m] if name in backend
    ]
    assert not bad, bad
