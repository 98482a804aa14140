"""Atomic file writes: write a temporary sibling, then rename over the target.

A reader sees the old content or the new, never a half-written file, and a
writer killed at any point leaves at most a ``.tmp-*`` file that the
reconciler removes. (Durability across power loss would need fsync, which
costs milliseconds per cell on ext4; the store trades it away on purpose.)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

TMP_PREFIX = ".tmp-"


def write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically."""
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    """Replace ``path`` with ``obj`` as JSON, atomically."""
    write_bytes(path, json.dumps(obj, indent=1, sort_keys=True).encode())


def read_json(path: Path) -> Any:
    """Read a JSON file written by ``write_json``."""
    with open(path, "rb") as f:
        return json.loads(f.read())
