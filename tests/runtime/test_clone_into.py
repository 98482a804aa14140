"""On cgroup v2 a container's processes are born in its cgroup (clone3, CLONE_INTO_CGROUP).

Moving a process through ``cgroup.procs`` takes the kernel's global
threadgroup lock for writing, 12-20 ms after a quiet spell; a child born in
the cgroup never moves. These tests run real containers, through the engine,
on this host's cgroup2 (/sys/fs/cgroup, or /sys/fs/cgroup/unified on a hybrid
host, which has no controller enabled but takes processes), and read from the
host which cgroup each process is in.

Being born in the cgroup and joining it right after end in the same place, so
the tests make a fallback visible: `BornOnlyDriver`'s cgroups cannot be
joined by a write, and for exec the plain clone(2) refuses to run. The
fallback itself (a kernel without clone3) is forced by making clone3 fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from sandbox.engine import Engine
from sandbox.engine.running import Running
from sandbox.runtime import spawn
from sandbox.runtime import syscalls as sc
from sandbox.runtime.cgroups import PARENT, CgroupV2, CgroupV2Driver
from sandbox.runtime.exec import exec_into
from sandbox.runtime.spawn import Spawned
from sandbox.runtime.spec import DEFAULT_PATH, ProcessSpec

TEMP_PREFIX = "sandbox-test-"
T = TypeVar("T")


def _v2_root() -> str | None:
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        points = {line.split()[4] for line in f if " - cgroup2 " in line}
    return next((p for p in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified") if p in points), None)


V2_ROOT = _v2_root()

pytestmark = [
    pytest.mark.root,
    pytest.mark.cgroup_v2,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, cgroups)"),
    pytest.mark.skipif(V2_ROOT is None, reason="needs a cgroup2 mount"),
    pytest.mark.skipif(
        not os.path.exists("/proc/self/ns/cgroup"), reason="needs cgroup namespaces"
    ),
]


class BornOnlyDriver(CgroupV2Driver):
    """The v2 driver, but a process can get into its cgroups only by being born there.

    ``join_files`` names the read-only ``cgroup.events``: a child that fell
    back to joining by a write fails to start (EACCES), where the real
    driver's child would join through ``cgroup.procs`` and pass unnoticed.
    """

    def open(self, name: str) -> CgroupV2:
        cg = super().open(name)
        return _BornOnly(cg.name, cg.path)


class _BornOnly(CgroupV2):
    def join_files(self) -> list[str]:
        return [f"{self.path}/cgroup.events"]


@pytest.fixture(scope="module")
def store() -> Iterator[Path]:
    """A store of this module's own, with the base image (removed at the end)."""
    root = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX + "clone-into-"))
    try:
        Engine(root, reconcile_now=False).ensure_base()
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
        with contextlib.suppress(OSError):  # sandbox/ itself, if no one else uses it
            os.rmdir(f"{V2_ROOT}/{PARENT}")


@pytest.fixture
def no_clone3(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """clone3 fails with ENOSYS, as on Linux < 5.3; returns the list of its calls' flags.

    This stands in for an old kernel (or a seccomp filter that refuses
    clone3): the runtime must fall back to clone(2) and a cgroup.procs write.
    """
    calls: list[int] = []

    def clone3(flags: int, exit_signal: int, **_: object) -> int:
        calls.append(flags)
        raise OSError(errno.ENOSYS, "clone3: Function not implemented (test)")

    monkeypatch.setattr(sc, "clone3", clone3)
    monkeypatch.setattr(spawn, "_clone3_missing", False)  # restored: later tests use clone3
    return calls


def _cgroup_of(pid: int) -> str:
    """The v2 line of ``/proc/PID/cgroup``, as the host sees it (``0::/sandbox/<id>``)."""
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    return next(line for line in lines if line.startswith("0::"))


def _expected(running: Running) -> str:
    return f"0::/{PARENT}/{running.record.id}"


def _run(store: Path, driver: CgroupV2Driver, body: Callable[[Running], T], *,
         zygote: bool = False) -> T:  # fmt: skip
    """Start a `sleep` container on ``driver``, run ``body(running)``, kill the container."""

    async def main() -> T:
        engine = Engine(store, driver=driver, reconcile_now=False, zygote=zygote)
        running = None
        try:
            record = engine.create("base", ["sleep", "60"], auto_remove=True)
            running = await engine.start_async(record.id)
            return body(running)
        finally:
            if running is not None:
                with contextlib.suppress(Exception):
                    engine.kill(running.record.id)
                await running.exited
            engine.close()

    return asyncio.run(main())


def _exec_sleep(running: Running) -> Spawned:
    cg = running.cgroup
    assert cg is not None
    proc = ProcessSpec(argv=["sleep", "60"], env=[f"PATH={DEFAULT_PATH}"])
    return exec_into(running.spawned.pidfd, proc, join_files=cg.join_files(),
                     clone_into=cg.clone_into())  # fmt: skip


def _stop(spawned: Spawned) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(spawned.pid, signal.SIGKILL)
    os.waitpid(spawned.pid, 0)
    spawned.close()


# --- the container's init -------------------------------------------------------------------


@pytest.mark.parametrize("zygote", [False, True], ids=["direct", "zygote"])
def test_the_init_is_born_in_the_containers_cgroup(store: Path, zygote: bool) -> None:
    """Also through the zygote, whose clone3 has CLONE_PARENT (and so no exit signal)."""
    assert V2_ROOT is not None

    def check(running: Running) -> None:
        assert running.cgroup is not None
        assert _cgroup_of(running.spawned.pid) == _expected(running)
        assert running.spawned.pid in running.cgroup.procs()  # with the command, tini's child

    _run(store, BornOnlyDriver(V2_ROOT), check, zygote=zygote)


@pytest.mark.parametrize("missing", [errno.ENOSYS, errno.E2BIG], ids=["ENOSYS", "E2BIG"])
def test_without_clone3_the_init_joins_through_cgroup_procs(
    store: Path, monkeypatch: pytest.MonkeyPatch, missing: int
) -> None:
    """ENOSYS: no clone3 (< 5.3); E2BIG: clone3 without the cgroup field (5.3-5.6)."""
    assert V2_ROOT is not None
    calls: list[int] = []

    def clone3(flags: int, exit_signal: int, **_: object) -> int:
        calls.append(flags)
        raise OSError(missing, f"clone3: {os.strerror(missing)} (test)")

    # Stands in for an old kernel: the runtime must clone(2), then write cgroup.procs.
    monkeypatch.setattr(sc, "clone3", clone3)
    monkeypatch.setattr(spawn, "_clone3_missing", False)

    def check(running: Running) -> None:
        assert _cgroup_of(running.spawned.pid) == _expected(running)

    _run(store, CgroupV2Driver(V2_ROOT), check)
    _run(store, CgroupV2Driver(V2_ROOT), check)
    assert len(calls) == 1, "a kernel without clone3 is remembered, not asked again"


def test_a_refused_clone3_is_an_error_not_a_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """EINVAL is a bad call, not an old kernel: falling back would hide it (15 ms per start)."""

    def clone3(flags: int, exit_signal: int, **_: object) -> int:
        raise OSError(errno.EINVAL, "clone3: Invalid argument (test)")

    monkeypatch.setattr(sc, "clone3", clone3)
    monkeypatch.setattr(sc, "clone", lambda flags: pytest.fail("fell back to clone(2)"))
    monkeypatch.setattr(spawn, "_clone3_missing", False)
    with pytest.raises(OSError) as exc:
        spawn.clone_in_cgroup(0, 0, "/sys/fs/cgroup/x")
    assert exc.value.errno == errno.EINVAL
    assert not spawn._clone3_missing


# --- exec ------------------------------------------------------------------------------------


def test_exec_is_born_in_the_containers_cgroup_and_enters_its_namespace(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert V2_ROOT is not None
    plain_clone = sc.clone

    def clone(flags: int) -> int:
        # The middle process is a plain clone; the inner one (CLONE_PARENT) must not be.
        if flags & sc.CLONE_PARENT:
            raise OSError(errno.EPERM, "the inner process fell back to clone(2) (test)")
        return plain_clone(flags)

    monkeypatch.setattr(sc, "clone", clone)

    def check(running: Running) -> None:
        spawned = _exec_sleep(running)
        try:
            assert _cgroup_of(spawned.pid) == _expected(running)
            init_ns = os.readlink(f"/proc/{running.spawned.pid}/ns/cgroup")
            assert os.readlink(f"/proc/{spawned.pid}/ns/cgroup") == init_ns
        finally:
            _stop(spawned)

    _run(store, CgroupV2Driver(V2_ROOT), check)


def test_exec_without_clone3_joins_from_inside_the_mount_namespace(
    store: Path, no_clone3: list[int]
) -> None:
    """The inner process joins by an fd the engine opened: the host path is out of its reach."""
    assert V2_ROOT is not None

    def check(running: Running) -> None:
        # The start fell back and remembered it; forget, so that the exec's
        # inner process tries clone3 and falls back on its own.
        spawn._clone3_missing = False
        spawned = _exec_sleep(running)
        try:
            assert _cgroup_of(spawned.pid) == _expected(running)
            init_ns = os.readlink(f"/proc/{running.spawned.pid}/ns/cgroup")
            assert os.readlink(f"/proc/{spawned.pid}/ns/cgroup") == init_ns
        finally:
            _stop(spawned)

    _run(store, CgroupV2Driver(V2_ROOT), check)
    assert no_clone3, "clone3 was not tried"
