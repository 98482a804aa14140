"""The cgroup v2 driver: one unified hierarchy.

A container's cgroup is ``<root>/sandbox/<name>``. The memory, cpu and pids
controllers (those the root offers) are enabled in ``cgroup.subtree_control``
of the root and of ``sandbox/`` the first time a container is created. The
no-internal-process rule forbids processes in a cgroup that has controllers
enabled for its children, so no process is ever put in ``sandbox/`` itself.

What is safe and why: every path is ``<root>/sandbox/<name>`` with the name
checked again (one path component). v2 has no ``devices.*`` files: device
access is checked by eBPF programs, which this driver does not attach
(``confines_devices`` is False), so the runtime must keep containers away
from device nodes by other means (no CAP_MKNOD, a ``nodev`` /dev).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time

from sandbox.errors import LimitUnsupported, SandboxError
from sandbox.runtime.cgroups.base import PARENT, Cgroup, CgroupDriver, CgroupStats, Limits
from sandbox.runtime.cgroups.v1 import (
    check_limits,
    check_name,
    read_file,
    read_int,
    read_ints,
    read_keys,
    read_limit,
    rmdir_retry,
    valid_name,
    write_file,
)

#: The controllers the driver enables for the containers, when available.
CONTROLLERS = ("memory", "cpu", "pids")

#: cpu.max period in microseconds (Docker's and the kernel's default).
CPU_PERIOD_US = 100_000


def cpu_weight(shares: int) -> int:
    """Map Docker's cpu shares (2..262144, default 1024) to cpu.weight (1..10000).

    runc's linear mapping (up to runc 1.3): 1024 shares is weight 39.
    """
    return max(1, min(10_000, 1 + ((shares - 2) * 9999) // 262142))


class CgroupV2(Cgroup):
    """One container's cgroup in the unified hierarchy."""

    def __init__(self, name: str, path: str) -> None:
        """Make a handle; no I/O.

        Args:
            name: the container's cgroup name.
            path: its directory, ``<root>/sandbox/<name>``.
        """
        self.name = name
        self.path = path
        # The highest memory.current seen, for kernels without memory.peak (< 5.19).
        self._peak = 0

    def join_files(self) -> list[str]:
        """The one ``cgroup.procs``; write ``0`` to it to join.

        The runtime only writes it on kernels without CLONE_INTO_CGROUP (see
        `clone_into`): moving a process through ``cgroup.procs`` takes the
        kernel's global threadgroup lock for writing, which after a quiet
        spell waits a whole RCU grace period (12-20 ms per container start).
        """
        return [f"{self.path}/cgroup.procs"]

    def clone_into(self) -> str:
        """The cgroup's directory: the runtime clones the container's processes into it."""
        return self.path

    def procs(self) -> list[int]:
        """PIDs in the cgroup."""
        return read_ints(f"{self.path}/cgroup.procs")

    def kill_all(self) -> None:
        """SIGKILL every process, then wait (at most ~2 s) until it is empty.

        ``cgroup.kill`` (Linux 5.14) kills the whole tree atomically, even a
        process that is forking; older kernels get rounds of kill(2).
        """
        try:
            write_file(f"{self.path}/cgroup.kill", "1")
        except OSError:
            if not os.path.isdir(self.path):
                return
            self._kill_each()
        self._wait_empty(2.0)

    def _kill_each(self) -> None:
        deadline = time.monotonic() + 2.0
        while (pids := self.procs()) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.005)

    def _wait_empty(self, timeout: float) -> None:
        """Wait for ``populated 0`` in cgroup.events (the kernel signals POLLPRI)."""
        try:
            fd = os.open(f"{self.path}/cgroup.events", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            poller = select.poll()
            poller.register(fd, select.POLLPRI)
            deadline = time.monotonic() + timeout
            while True:
                events = os.pread(fd, 4096, 0).decode().split()
                if events[events.index("populated") + 1] == "0":
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                # The 50 ms cap only bounds the wait if a notification is missed.
                poller.poll(min(left, 0.05) * 1000)
        finally:
            os.close(fd)

    def remove(self) -> None:
        """Kill what is left and remove the directory; idempotent.

        Raises:
            SandboxError: the directory is still busy after ~2 s of retries.
        """
        rmdir_retry(self.path, self.kill_all)

    def stats(self) -> CgroupStats:
        """Read the counters; a cgroup that is gone reads as zeros."""
        p = self.path
        st = CgroupStats()
        st.memory_usage = read_int(f"{p}/memory.current")
        try:
            peak = int(read_file(f"{p}/memory.peak"))
        except FileNotFoundError:
            peak = 0
        self._peak = max(self._peak, peak, st.memory_usage)
        st.memory_peak = peak or self._peak
        st.memory_limit = read_limit(f"{p}/memory.max")
        st.memory_stat = read_keys(f"{p}/memory.stat")
        st.memory_inactive_file = st.memory_stat.get("inactive_file", 0)
        cpu = read_keys(f"{p}/cpu.stat")
        st.cpu_usage_ns = cpu.get("usage_usec", 0) * 1000
        st.cpu_user_ns = cpu.get("user_usec", 0) * 1000
        st.cpu_system_ns = cpu.get("system_usec", 0) * 1000
        st.cpu_periods = cpu.get("nr_periods", 0)
        st.cpu_throttled_periods = cpu.get("nr_throttled", 0)
        st.cpu_throttled_ns = cpu.get("throttled_usec", 0) * 1000
        try:
            quota, period = read_file(f"{p}/cpu.max").split()
        except FileNotFoundError:
            quota, period = "max", "0"
        if quota != "max" and int(period) > 0:
            st.nano_cpus = int(quota) * 1_000_000_000 // int(period)
        st.pids_current = read_int(f"{p}/pids.current")
        st.pids_limit = read_limit(f"{p}/pids.max")
        st.oom_kills = read_keys(f"{p}/memory.events").get("oom_kill", 0)
        st.pids_limit_hits = read_keys(f"{p}/pids.events").get("max", 0)
        return st

    def oom_killed(self) -> bool:
        """True if the OOM killer killed a process here (reads one file)."""
        return read_keys(f"{self.path}/memory.events").get("oom_kill", 0) > 0

    def pids_limit_hit(self) -> bool:
        """True if a fork failed on the pids limit (reads one file)."""
        return read_keys(f"{self.path}/pids.events").get("max", 0) > 0


class CgroupV2Driver(CgroupDriver):
    """cgroup v2: ``<root>/sandbox/<name>``."""

    version = 2
    #: v2 confines devices with eBPF only, which this driver does not do.
    confines_devices = False

    def __init__(self, root: str = "/sys/fs/cgroup") -> None:
        """No I/O: the controllers are enabled by the first ``create``.

        Args:
            root: the cgroup2 mount (``/sys/fs/cgroup``, or ``.../unified`` on
                a hybrid host).
        """
        self.root = root
        self.parent = f"{root}/{PARENT}"
        # Controllers enabled for the children of sandbox/; None until the
        # first create (and again if sandbox/ disappears).
        self._enabled: frozenset[str] | None = None

    def open(self, name: str) -> CgroupV2:
        """A handle on ``sandbox/<name>``; no I/O, it may not exist."""
        check_name(name)
        return CgroupV2(name, f"{self.parent}/{name}")

    def list_names(self) -> list[str]:
        """Children of ``sandbox/`` (sorted)."""
        try:
            entries = [e.name for e in os.scandir(self.parent) if e.is_dir()]
        except FileNotFoundError:
            return []
        return sorted(filter(valid_name, entries))

    def create(self, name: str, limits: Limits) -> CgroupV2:
        """Create ``sandbox/<name>`` and apply ``limits``.

        A cgroup with no limits needs no controller, so it works on any
        cgroup2 mount. A directory that already exists (a leftover with the
        same name) is reused. On any failure the directory this call made is
        removed.

        Raises:
            InvalidArgument: a limit is malformed (memory_swap < memory...).
            LimitUnsupported: a limit's controller is not in the root's
                cgroup.controllers (nothing is created), or a file is missing.
            SandboxError: the kernel refused a write (the message has the path).
        """
        cg = self.open(name)
        writes = _plan(limits)
        needed = {ctrl: flag for ctrl, _, _, flag, _ in writes}
        enabled = self._enable(needed)
        try:
            created = _mkdir(cg.path)
        except FileNotFoundError:
            # sandbox/ was removed behind our back: make it again.
            self._enabled = None
            enabled = self._enable(needed)
            created = _mkdir(cg.path)
        try:
            for ctrl, file, value, flag, optional in writes:
                _set(f"{cg.path}/{file}", value, flag, ctrl, optional)
            if "memory" in enabled:
                # An OOM kills the whole container, not one random process
                # (missing before Linux 4.19).
                _set(f"{cg.path}/memory.oom.group", "1", "", "memory", True)
        except BaseException:
            if created:
                with contextlib.suppress(OSError):
                    os.rmdir(cg.path)
            raise
        return cg

    def _enable(self, needed: dict[str, str]) -> frozenset[str]:
        """Make ``sandbox/`` and enable the controllers for its children.

        Cached: after the first call this is a set comparison, no I/O.

        Args:
            needed: controller to the limit (flag) that needs it.

        Raises:
            LimitUnsupported: a needed controller is not available; checked
                before anything is created.
        """
        enabled = self._enabled
        if enabled is not None and needed.keys() <= enabled:
            return enabled
        checked = f"{self.root}/cgroup.controllers"
        try:
            available = set(read_file(checked).split())
        except FileNotFoundError:
            available = set()
        for ctrl, flag in needed.items():
            if ctrl not in available:
                raise LimitUnsupported(flag, ctrl, checked)
        want = [c for c in CONTROLLERS if c in available]
        _subtree_enable(self.root, want)
        with contextlib.suppress(FileExistsError):
            os.mkdir(self.parent)
        enabled = self._enabled = _subtree_enable(self.parent, want)
        for ctrl, flag in needed.items():
            if ctrl not in enabled:
                raise LimitUnsupported(flag, ctrl, f"{self.parent}/cgroup.subtree_control")
        return enabled


def _plan(limits: Limits) -> list[tuple[str, str, str, str, bool]]:
    """The writes for ``limits``: (controller, file, value, flag, optional).

    ``optional`` writes are defaults the user did not ask for (the swap of a
    memory limit), skipped where the host has no such file.
    """
    check_limits(limits)
    writes: list[tuple[str, str, str, str, bool]] = []
    memory, swap = limits.memory or 0, limits.memory_swap or 0
    if memory:
        writes.append(("memory", "memory.max", str(memory), "--memory", False))
        # v2 limits swap alone, where Docker's memory_swap is memory + swap.
        if swap == -1:
            writes.append(("memory", "memory.swap.max", "max", "", True))
        elif swap == 0:
            # Docker's rule: unset means as much swap as memory (2 x memory in all).
            writes.append(("memory", "memory.swap.max", str(memory), "", True))
        else:
            flag = "--memory-swap (needs swap accounting)"
            writes.append(("memory", "memory.swap.max", str(swap - memory), flag, False))
    if limits.nano_cpus:
        quota = limits.nano_cpus * CPU_PERIOD_US // 1_000_000_000
        writes.append(("cpu", "cpu.max", f"{quota} {CPU_PERIOD_US}", "--cpus", False))
    if limits.cpu_shares:
        weight = str(cpu_weight(limits.cpu_shares))
        writes.append(("cpu", "cpu.weight", weight, "--cpu-shares", False))
    if limits.pids is not None:
        value = str(limits.pids) if limits.pids > 0 else "max"
        writes.append(("pids", "pids.max", value, "--pids-limit", False))
    return writes


def _set(path: str, value: str, flag: str, ctrl: str, optional: bool) -> None:
    try:
        write_file(path, value)
    except FileNotFoundError as exc:
        if not optional:
            raise LimitUnsupported(flag, ctrl, path) from exc
    except OSError as exc:
        raise SandboxError(f"cannot write {value!r} to {path}: {exc.strerror}") from exc


def _mkdir(path: str) -> bool:
    """mkdir ``path``; False if it existed. FileNotFoundError if the parent is gone."""
    try:
        os.mkdir(path)
        return True
    except FileExistsError:
        return False


def _subtree_enable(path: str, controllers: list[str]) -> frozenset[str]:
    """Enable ``controllers`` for the children of ``path``; returns those enabled.

    All in one write first; if the kernel refuses (one controller busy or
    missing), one by one, keeping those it takes.
    """
    if not controllers:
        return frozenset()
    file = f"{path}/cgroup.subtree_control"
    try:
        write_file(file, " ".join(f"+{c}" for c in controllers))
        return frozenset(controllers)
    except OSError:
        pass
    enabled = []
    for ctrl in controllers:
        with contextlib.suppress(OSError):
            write_file(file, f"+{ctrl}")
            enabled.append(ctrl)
    return frozenset(enabled)


__all__ = ["CONTROLLERS", "CgroupV2", "CgroupV2Driver", "cpu_weight"]
