"""A real sandboxd per test module, on its own socket and store (see helpers.py)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import TEMP_PREFIX, Daemon, start_daemon, stop_daemon


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    """A sandboxd for the module's tests, on its own socket and store."""
    if os.geteuid() != 0:
        pytest.skip("needs root (the daemon runs containers)")
    tmp = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
    try:
        d = start_daemon(tmp)
        try:
            yield d
        finally:
            stop_daemon(d)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
