"""``kittiwake.proto`` is sans-I/O: none of its modules imports an I/O or event-loop module."""

from __future__ import annotations

import ast
from pathlib import Path

import kittiwake.proto

FORBIDDEN = {"asyncio", "socket", "ssl", "selectors", "select", "trio", "anyio", "uvloop"}
PROTO_DIR = Path(kittiwake.proto.__file__).parent


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "__import__":
            names.add("<dynamic __import__>")
    return names


def test_proto_imports_no_io_modules() -> None:
    files = sorted(PROTO_DIR.glob("*.py"))
    assert len(files) >= 8
    for path in files:
        for name in imported_modules(path):
            top = name.split(".")[0]
            assert top not in FORBIDDEN, f"{path.name} imports {name}"
            assert name != "<dynamic __import__>", path.name
            if top == "kittiwake":  # only envelope, errors and proto itself
                assert name in {"kittiwake.envelope", "kittiwake.errors"} or name.startswith(
                    "kittiwake.proto"
                ), f"{path.name} imports {name}"


def test_proto_files_stay_small() -> None:
    for path in PROTO_DIR.glob("*.py"):
        assert len(path.read_text(encoding="utf-8").splitlines()) <= 420, path.name
