"""Command-line options every ``kittiwake`` command shares (one definition, one behaviour)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def config_option(help: str) -> Callable[[F], F]:
    """``--config FILE`` / ``-c FILE`` / ``$KITTIWAKE_CONFIG`` into ``config_path``."""
    return click.option(
        "--config",
        "-c",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        envvar="KITTIWAKE_CONFIG",
        help=help,
    )
