"""Where things live: the store root and the daemon's socket, from the environment.

One rule for every client and for the daemon: ``SANDBOX_HOST`` names the
daemon if set; otherwise a store's daemon listens at a place derived from the
store. The default store's daemon uses the well-known socket
(``/run/sandbox/sandboxd.sock`` as root); any other store (``SANDBOX_ROOT``,
``sandboxd --root``) has its daemon's socket inside it, so that a test or a
private store never talks to the system's daemon, and the daemon that a
client starts for a store is the one the next client finds.
"""

from __future__ import annotations

import os
from pathlib import Path

from sandbox.errors import InvalidArgument

SOCKET_NAME = "sandboxd.sock"
PID_NAME = "sandboxd.pid"  # the daemon's PID, while it serves the store
LOG_NAME = "sandboxd.log"  # the log of a daemon started by a client for the user


def default_root() -> Path:
    """/var/lib/sandbox as root, else $XDG_DATA_HOME/sandbox (``SANDBOX_ROOT`` ignored)."""
    if os.geteuid() == 0:
        return Path("/var/lib/sandbox")
    data = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(data) / "sandbox"


def store_root() -> Path:
    """``SANDBOX_ROOT``, else /var/lib/sandbox as root, else $XDG_DATA_HOME/sandbox."""
    if env := os.environ.get("SANDBOX_ROOT"):
        return Path(env)
    return default_root()


def default_socket(root: Path | None = None) -> Path:
    """The socket of the daemon that serves ``root`` (None: `store_root`).

    ``/run/sandbox/sandboxd.sock`` as root and
    ``$XDG_RUNTIME_DIR/sandbox/sandboxd.sock`` otherwise for the default
    store; ``<root>/sandboxd.sock`` for any other.
    """
    root = root if root is not None else store_root()
    if os.path.abspath(root) != os.path.abspath(default_root()):
        return Path(os.path.abspath(root)) / SOCKET_NAME
    if os.geteuid() == 0:
        return Path("/run/sandbox") / SOCKET_NAME
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/sandbox-{os.getuid()}"
    return Path(runtime) / "sandbox" / SOCKET_NAME


def socket_path(host: str | None, root: Path | None = None) -> Path:
    """The socket a ``unix:///path`` host names (None or empty: `default_socket`).

    Raises:
        InvalidArgument: not a unix socket URL with an absolute path.
    """
    if not host:
        return default_socket(root)
    path = host.removeprefix("unix://")
    if not path.startswith("/"):
        raise InvalidArgument(
            f"invalid daemon address {host!r}: use unix:///absolute/path.sock "
            "(sandboxd does not listen on TCP)"
        )
    return Path(path)


def daemon_host() -> str | None:
    """``SANDBOX_HOST`` if set (a daemon the user chose), else None."""
    return os.environ.get("SANDBOX_HOST") or None


def pid_file(root: Path) -> Path:
    """Where the daemon serving ``root`` writes its PID."""
    return root / PID_NAME


def log_file(root: Path) -> Path:
    """Where a daemon started by a client for ``root`` writes its log."""
    return root / LOG_NAME
