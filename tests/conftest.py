"""Suite-wide fixtures: a private store, the CLI, and a check that nothing leaks.

Every test runs against its own SANDBOX_ROOT (never a user's), and the
``no_leaks`` fixture, used by every test, fails the test if it left behind a
mount, a cgroup under ``sandbox/``, a container process, a network namespace,
a host network link or a temp directory.

The CLI is a client of a daemon: the first ``sandbox`` command on a store
starts the store's own ``sandboxd`` (its socket inside the store, never the
system's). The store fixtures stop that daemon when they end, and check that
its log holds no traceback.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
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
    """Named namespaces (``ip netns``), and every network namespace a process is in or holds.

    The engine holds its networks' namespaces by file descriptor, never by a
    mount, so a bridge left up shows here as a ``net:[inode]`` that one of
    its fds refers to.
    """
    from sandbox.runtime import netns

    try:
        found = {f"/run/netns/{name}" for name in os.listdir("/run/netns")}
    except FileNotFoundError:
        found = set()
    return found | netns.in_use()


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


def daemon_pid(root: Path) -> int | None:
    """The PID of the sandboxd serving ``root``, or None if none does.

    A daemon holds ``<root>/sandboxd.lock`` for its whole life and writes its
    PID to ``<root>/sandboxd.pid`` once it holds it.
    """
    lock_path = root / "sandboxd.lock"
    if not lock_path.exists():
        return None
    with open(lock_path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return None  # nobody holds it
        except BlockingIOError:
            pass
    deadline = time.monotonic() + 10
    while True:  # a daemon that is starting writes its PID just after the lock
        try:
            return int((root / "sandboxd.pid").read_text())
        except (FileNotFoundError, ValueError):
            assert time.monotonic() < deadline, f"sandboxd of {root} holds its lock, no PID"
            time.sleep(0.02)


def stop_daemon(root: Path, timeout: float = 30) -> None:
    """Stop the sandboxd serving ``root`` (SIGTERM), wait for its end, check its log.

    It stops its containers first (they get SIGTERM, then SIGKILL), so after
    this nothing of the store runs any more.
    """
    pid = daemon_pid(root)
    if pid is not None:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            fd = None
        if fd is not None:
            try:
                signal.pidfd_send_signal(fd, signal.SIGTERM)
                ready, _, _ = select.select([fd], [], [], timeout)
                if not ready:
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
                    raise AssertionError(f"sandboxd ({pid}) of {root} ignored SIGTERM")
            finally:
                os.close(fd)
    log = root / "sandboxd.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    assert "Traceback" not in text, f"sandboxd of {root} logged a traceback:\n{text[-20000:]}"


@pytest.fixture(scope="session")
def session_root() -> Iterator[Path]:
    """A store shared by the session's tests, with the base image built once.

    Its daemon is started here, by a first ``sandbox`` command, so that no
    test sees the notice of the start; it is stopped at the end.
    """
    root = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX + "store-"))
    os.environ["SANDBOX_ROOT"] = str(root)
    try:
        from sandbox.engine import Engine

        Engine(root).ensure_base()
        first = sandbox_cmd("ps", root=root)
        assert first.returncode == 0, first.stderr.decode()
        yield root
    finally:
        try:
            stop_daemon(root)
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
        try:
            stop_daemon(path)  # the one its first `sandbox` command started
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


HANG_GUARD = 60.0  # seconds a background command may take to end (a hang guard only)


class Background:
    """``sandbox`` commands run in the background; killed and reaped at teardown."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, stdin: int | None = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
        env = {**os.environ, "SANDBOX_ROOT": str(self.root), "NO_COLOR": "1"}
        exe = Path(sys.executable).with_name("sandbox")
        proc = subprocess.Popen([str(exe), *args], env=env, stdin=stdin,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        killed = False
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()  # its foreground container is stopped with it
                killed = True
            proc.wait(timeout=HANG_GUARD)
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
        if killed:  # the next command settles what the killed ones left
            env = {**os.environ, "SANDBOX_ROOT": str(self.root)}
            exe = Path(sys.executable).with_name("sandbox")
            subprocess.run([str(exe), "ps", "-a"], env=env, capture_output=True, check=False)


@pytest.fixture
def background(root: Path) -> Iterator[Background]:
    """Start ``sandbox`` commands in the background; they are killed after the test."""
    bg = Background(root)
    try:
        yield bg
    finally:
        bg.close()


@pytest.fixture
def names(cli):  # type: ignore[no-untyped-def]
    """``names("web")`` gives a unique container name; those containers are removed after."""
    made: list[str] = []

    def make(prefix: str) -> str:
        made.append(f"{prefix}-{uuid.uuid4().hex[:8]}")
        return made[-1]

    yield make
    for name in made:
        cli("rm", "-f", name)
