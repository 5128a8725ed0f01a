"""Durability helpers shared by every part that writes files it has promised to keep.

Imports nothing of ours, so ``queue`` and ``delivery`` can both use it.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make new (or removed) directory entries durable: fsync of a file alone is not enough."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
