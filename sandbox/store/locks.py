"""File locks that guard the store against two processes writing at once.

flock(2) locks are released by the kernel when their holder dies, even by
SIGKILL, so a crashed ``sandbox`` never leaves the store locked.

The locks are reentrant within one thread: a commit holds the store lock while
it adds a layer and tags an image, which take the same lock. (Two flocks on
two descriptors of one file conflict even in one process, so without this the
nested call would wait for itself forever.)
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_held = threading.local()


@contextmanager
def locked(path: Path, *, shared: bool = False) -> Iterator[None]:
    """Hold an flock on ``path`` (created if missing) for the ``with`` block.

    A thread that already holds the lock on ``path`` enters at once (an
    exclusive lock covers a nested shared request; a shared lock does not
    become exclusive, so that nesting raises RuntimeError).
    """
    held: dict[str, bool] = _held.__dict__.setdefault("paths", {})
    key = os.path.abspath(path)
    if key in held:
        if held[key] and not shared:
            raise RuntimeError(f"cannot take an exclusive lock on {path} inside a shared one")
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        held[key] = shared
        try:
            yield
        finally:
            del held[key]
    finally:
        os.close(fd)  # closing the last fd releases the lock
