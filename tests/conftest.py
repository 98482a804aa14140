"""Suite-wide fixtures: a private store, the CLI, and a check that nothing leaks.

Every test runs against its own SANDBOX_ROOT (never a user's), and the
``no_leaks`` fixture, used by every test, fails the test if it left behind a
mount, a cgroup under ``sandbox/``, a container process, a network namespace,
a host network link or a temp directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, mounts)")
TEMP_PREFIX = "sandbox-test-"


def _mounts() -> set[str]:
    with open("/proc/self/mountinfo") as f:
        return {
            line.split()[4]
            for line in f
            if " overlay " in line or "sandbox" in line or TEMP_PREFIX in line
        }


def _cgroups() -> set[str]:
    found: set[str] = set()
    for parent in Path("/sys/fs/cgroup").glob("*/sandbox"):
        found.update(str(p) for p in parent.iterdir() if p.is_dir())
    unified = Path("/sys/fs/cgroup/sandbox")
    if unified.is_dir():
        found.update(str(p) for p in unified.iterdir() if p.is_dir())
    return found


def _container_processes() -> set[str]:
    """Processes whose executable is the sealed init of a container."""
    found = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            continue
        if exe.startswith("/memfd:tini"):
            found.add(pid)
    return found


def _netns() -> set[str]:
    try:
        return set(os.listdir("/run/netns"))
    except FileNotFoundError:
        return set()


def _links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def _temp_dirs() -> set[str]:
    return {p for p in os.listdir(tempfile.gettempdir()) if p.startswith(TEMP_PREFIX)}


def snapshot() -> dict[str, set[str]]:
    """What exists now of everything a container or test could leak."""
    return {
        "mounts": _mounts(),
        "cgroups": _cgroups(),
        "container processes": _container_processes(),
        "network namespaces": _netns(),
        "host links": _links(),
        "temp dirs": _temp_dirs(),
    }


def leaked(before: dict[str, set[str]], *, wait: float = 3.0) -> dict[str, set[str]]:
    """What appeared since ``before`` and is still there after up to ``wait`` s."""
    deadline = time.monotonic() + wait
    while True:
        after = snapshot()
        extra = {k: after[k] - before[k] for k in after if after[k] - before[k]}
        if not extra or time.monotonic() > deadline:
            return extra
        time.sleep(0.05)


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail the test if it leaves a mount, cgroup, process, netns, link or temp dir."""
    before = snapshot()
    yield
    extra = leaked(before)
    assert not extra, f"the test leaked: {extra}"


@pytest.fixture(scope="session")
def session_root() -> Iterator[Path]:
    """A store shared by the session's tests, with the base image built once."""
    root = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX + "store-"))
    os.environ["SANDBOX_ROOT"] = str(root)
    try:
        from sandbox.engine import Engine

        Engine(root).ensure_base()
        yield root
    finally:
        os.environ.pop("SANDBOX_ROOT", None)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def root(session_root: Path) -> Path:
    """The session store (SANDBOX_ROOT is set to it)."""
    return session_root


@pytest.fixture
def fresh_root() -> Iterator[Path]:
    """An empty store of the test's own (removed afterwards)."""
    path = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX + "fresh-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def engine(root: Path) -> Iterator[object]:
    from sandbox.engine import Engine

    eng = Engine(root)
    yield eng


def sandbox_cmd(*args: str, root: Path, input: bytes | None = None, timeout: float = 60,
                check: bool = False) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
    """Run the real ``sandbox`` console script against ``root``."""
    env = {**os.environ, "SANDBOX_ROOT": str(root), "NO_COLOR": "1"}
    exe = Path(sys.executable).with_name("sandbox")
    return subprocess.run([str(exe), *args], env=env, input=input, capture_output=True,
                          timeout=timeout, check=check)  # fmt: skip


@pytest.fixture
def cli(root: Path):  # type: ignore[no-untyped-def]
    """``cli("run", "--rm", "base", "true")`` runs the sandbox CLI on the session store."""

    def run(*args: str, **kw: object) -> subprocess.CompletedProcess[bytes]:
        return sandbox_cmd(*args, root=root, **kw)  # type: ignore[arg-type]

    return run
