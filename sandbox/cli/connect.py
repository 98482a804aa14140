"""The CLI's one way to the daemon: a `Client`, and the notice when one was started."""

from __future__ import annotations

import sys
from pathlib import Path

from sandbox.client import Client


def _started(log: Path) -> None:
    sys.stderr.write(f"sandbox: started the sandbox daemon for you (log: {log})\n")
    sys.stderr.flush()


def connect() -> Client:
    """A client of the daemon (started for the user, who is told so, if none answers)."""
    return Client(on_start=_started)
