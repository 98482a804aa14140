"""Where things live: the store root and the daemon's socket, from the environment."""

from __future__ import annotations

import os
from pathlib import Path


def store_root() -> Path:
    """``SANDBOX_ROOT``, else /var/lib/sandbox as root, else $XDG_DATA_HOME/sandbox."""
    if env := os.environ.get("SANDBOX_ROOT"):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/sandbox")
    data = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(data) / "sandbox"
