"""The cgroup v1 driver: one directory per controller hierarchy.

A container's cgroup is ``<root>/<controller>/sandbox/<name>`` in each of the
memory, cpu, cpuacct, pids and devices hierarchies (a co-mounted
``cpu,cpuacct`` hierarchy is used once). Hierarchies that are not mounted are
skipped; a limit that needs one of them raises ``LimitUnsupported``.

What is safe and why: every path is ``<hierarchy>/sandbox/<name>`` with a
``name`` checked again here (one path component, no ``..``), so a hostile
name cannot make the daemon write to another cgroup. The devices rules deny
everything but the harmless nodes a container needs, and allow ``mknod`` but
not the use of any other node: a student with CAP_MKNOD can make a node for
the host's disk, but cannot open it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import time
from collections.abc import Callable

from sandbox.errors import InvalidArgument, LimitUnsupported, SandboxError
from sandbox.runtime.cgroups.base import PARENT, Cgroup, CgroupDriver, CgroupStats, Limits

#: The hierarchies a container joins, in the order they are created.
CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "devices")

#: CFS period in microseconds (Docker's and the kernel's default).
CFS_PERIOD_US = 100_000

#: The devices a container may use (runc's default allow list): null, zero,
#: full, random, urandom, tty, console, ptmx, the pty slaves and tun; plus
#: mknod (but no use) of any other node.
DEVICE_RULES = (
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:1 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
    "c 10:200 rwm",
    "c *:* m",
    "b *:* m",
)

# memory.limit_in_bytes reads back as LONG_MAX rounded down to a page when
# unlimited; no host has 4 EiB, so anything above this means "no limit".
_UNLIMITED = 1 << 62
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


# Helpers shared with v2.py: checks, and small unbuffered reads and writes
# (one open, one read or write, one close: cgroup files are read whole).


def valid_name(name: str) -> bool:
    """True if ``name`` is one plain path component the drivers accept."""
    return _NAME.fullmatch(name) is not None


def check_name(name: str) -> None:
    """Refuse a cgroup name that is not one plain path component.

    Raises:
        InvalidArgument: the name is empty, too long, or has ``/`` or ``..``.
    """
    if not valid_name(name):
        raise InvalidArgument(
            f"invalid cgroup name {name!r}: use 1 to 128 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )


def check_limits(limits: Limits) -> None:
    """Refuse limits that make no sense on any host (Docker's checks).

    0 means "not set" for every field, as in Docker's API.

    Raises:
        InvalidArgument: a negative value, less than 0.01 CPU, or a
            memory_swap without a memory limit or below it.
    """
    memory, swap = limits.memory or 0, limits.memory_swap or 0
    if memory < 0:
        raise InvalidArgument(f"invalid memory limit {memory}: it must be positive")
    if swap and not memory:
        raise InvalidArgument(
            "memory_swap needs a memory limit too: it is the total of memory plus swap"
        )
    if 0 < swap < memory or swap < -1:
        raise InvalidArgument(
            f"memory_swap ({swap}) must not be less than memory ({memory}): it is "
            "memory plus swap; use -1 for unlimited swap"
        )
    if limits.nano_cpus and limits.nano_cpus < 10_000_000:
        raise InvalidArgument(
            f"invalid nano_cpus {limits.nano_cpus}: the minimum is 0.01 CPU (10000000)"
        )
    if limits.cpu_shares and limits.cpu_shares < 0:
        raise InvalidArgument(f"invalid cpu_shares {limits.cpu_shares}: it must be positive")


def write_file(path: str, data: str) -> None:
    """Write ``data`` in one write(2); the file must exist (no O_CREAT)."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, data.encode())
    finally:
        os.close(fd)


def read_file(path: str) -> str:
    """The whole file as text."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode()


def read_int(path: str) -> int:
    """The file as one integer; 0 if the file is gone."""
    try:
        return int(read_file(path))
    except FileNotFoundError:
        return 0


def read_keys(path: str) -> dict[str, int]:
    """Parse a ``key value`` per line file (memory.stat, pids.events...)."""
    try:
        text = read_file(path)
    except FileNotFoundError:
        return {}
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.lstrip("-").isdigit():
            out[key] = int(value)
    return out


def read_ints(path: str) -> list[int]:
    """Whitespace-separated integers (cgroup.procs...); [] if gone."""
    try:
        return [int(p) for p in read_file(path).split()]
    except FileNotFoundError:
        return []


def read_limit(path: str) -> int | None:
    """A limit file: None for ``max`` or a missing file."""
    try:
        text = read_file(path).strip()
    except FileNotFoundError:
        return None
    return None if text == "max" else int(text)


def rmdir_retry(path: str, kill: Callable[[], None]) -> None:
    """rmdir ``path``; on EBUSY call ``kill()`` and retry for ~2 s."""
    deadline = time.monotonic() + 2.0
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise SandboxError(f"cannot remove cgroup {path}: {exc.strerror}") from exc
            if time.monotonic() > deadline:
                raise SandboxError(
                    f"cannot remove cgroup {path}: processes are still in it after SIGKILL"
                ) from exc
        kill()
        time.sleep(0.01)


def mkdir_child(path: str) -> bool:
    """mkdir ``path``, and its ``sandbox`` parent if needed; False if it existed.

    The parent is made on demand (and again if someone removed it); EEXIST
    from a concurrent creator is fine.
    """
    try:
        os.mkdir(path)
        return True
    except FileExistsError:
        return False
    except FileNotFoundError:
        pass
    with contextlib.suppress(FileExistsError):
        os.mkdir(os.path.dirname(path))
    try:
        os.mkdir(path)
        return True
    except FileExistsError:
        return False


class CgroupV1(Cgroup):
    """One container's cgroup in every v1 hierarchy the driver uses."""

    def __init__(self, name: str, dirs: dict[str, str]) -> None:
        """Make a handle; no I/O.

        Args:
            name: the container's cgroup name.
            dirs: controller name to the container's directory in its hierarchy.
        """
        self.name = name
        self.dirs = dirs
        # A co-mounted cpu,cpuacct hierarchy appears twice in ``dirs``.
        self._unique = list(dict.fromkeys(dirs.values()))

    def join_files(self) -> list[str]:
        """``tasks`` of each hierarchy; the joining process writes ``0`` to each.

        Not ``cgroup.procs``: moving a whole process takes the kernel's global
        threadgroup lock for writing, and after a quiet spell that waits a full
        RCU grace period (12-20 ms measured here, per container). A thread
        that moves itself alone through ``tasks`` skips that lock (Linux 6.0+;
        older kernels just take it). The joiner is a freshly forked, so
        single-threaded, child: moving its one thread moves the process.
        """
        return [f"{d}/tasks" for d in self._unique]

    def procs(self) -> list[int]:
        """PIDs in any of the hierarchies (sorted, without duplicates)."""
        pids: set[int] = set()
        for d in self._unique:
            pids.update(read_ints(f"{d}/cgroup.procs"))
        return sorted(pids)

    def kill_all(self) -> None:
        """SIGKILL every process until the cgroup is empty (at most ~2 s).

        v1 has no ``cgroup.kill``: the PIDs are read and killed in rounds, so
        that children forked in the meantime are caught by the next round.
        """
        deadline = time.monotonic() + 2.0
        delay = 0.001
        while pids := self.procs():
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                return
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def remove(self) -> None:
        """Kill what is left and remove every directory; idempotent.

        Raises:
            SandboxError: a directory is still busy after ~2 s of retries.
        """
        for d in self._unique:
            rmdir_retry(d, self.kill_all)

    def stats(self) -> CgroupStats:
        """Read the counters; a cgroup that is gone reads as zeros."""
        mem = self.dirs.get("memory")
        acct = self.dirs.get("cpuacct")
        cpu = self.dirs.get("cpu")
        pids = self.dirs.get("pids")
        st = CgroupStats()
        if mem:
            st.memory_usage = read_int(f"{mem}/memory.usage_in_bytes")
            st.memory_peak = read_int(f"{mem}/memory.max_usage_in_bytes")
            limit = read_int(f"{mem}/memory.limit_in_bytes")
            st.memory_limit = limit if 0 < limit < _UNLIMITED else None
            st.memory_stat = read_keys(f"{mem}/memory.stat")
            st.memory_inactive_file = st.memory_stat.get("total_inactive_file", 0)
            st.oom_kills = read_keys(f"{mem}/memory.oom_control").get("oom_kill", 0)
        if acct:
            st.cpu_usage_ns = read_int(f"{acct}/cpuacct.usage")
            st.cpu_percpu_ns = read_ints(f"{acct}/cpuacct.usage_percpu")
            ticks = read_keys(f"{acct}/cpuacct.stat")
            st.cpu_user_ns = ticks.get("user", 0) * 1_000_000_000 // _CLK_TCK
            st.cpu_system_ns = ticks.get("system", 0) * 1_000_000_000 // _CLK_TCK
        if cpu:
            quota = read_int(f"{cpu}/cpu.cfs_quota_us")
            period = read_int(f"{cpu}/cpu.cfs_period_us")
            if quota > 0 and period > 0:
                st.nano_cpus = quota * 1_000_000_000 // period
            throttling = read_keys(f"{cpu}/cpu.stat")
            st.cpu_periods = throttling.get("nr_periods", 0)
            st.cpu_throttled_periods = throttling.get("nr_throttled", 0)
            st.cpu_throttled_ns = throttling.get("throttled_time", 0)
        if pids:
            st.pids_current = read_int(f"{pids}/pids.current")
            st.pids_limit = read_limit(f"{pids}/pids.max")
            st.pids_limit_hits = read_keys(f"{pids}/pids.events").get("max", 0)
        return st

    def oom_killed(self) -> bool:
        """True if the OOM killer killed a process here (reads one file)."""
        mem = self.dirs.get("memory")
        return bool(mem) and read_keys(f"{mem}/memory.oom_control").get("oom_kill", 0) > 0

    def pids_limit_hit(self) -> bool:
        """True if a fork failed on the pids limit (reads one file)."""
        pids = self.dirs.get("pids")
        return bool(pids) and read_keys(f"{pids}/pids.events").get("max", 0) > 0


class CgroupV1Driver(CgroupDriver):
    """cgroup v1: ``<root>/<controller>/sandbox/<name>``."""

    version = 1

    def __init__(self, root: str = "/sys/fs/cgroup") -> None:
        """Find the hierarchies under ``root`` (one stat each, done once).

        Args:
            root: where the v1 hierarchies are mounted, one per controller.
        """
        self.root = root
        #: controller name to its hierarchy (symlinks resolved, so a
        #: co-mounted cpu,cpuacct is one directory).
        self.hierarchies = {
            ctrl: os.path.realpath(f"{root}/{ctrl}")
            for ctrl in CONTROLLERS
            if os.path.isdir(f"{root}/{ctrl}")
        }
        #: False if the devices hierarchy is missing: device nodes are then
        #: not confined by cgroups and the runtime must drop CAP_MKNOD.
        self.confines_devices = "devices" in self.hierarchies
        self._parents = list(dict.fromkeys(f"{h}/{PARENT}" for h in self.hierarchies.values()))

    def open(self, name: str) -> CgroupV1:
        """A handle on ``sandbox/<name>``; no I/O, it may not exist."""
        check_name(name)
        return CgroupV1(name, {c: f"{h}/{PARENT}/{name}" for c, h in self.hierarchies.items()})

    def list_names(self) -> list[str]:
        """Children of ``sandbox/`` in any hierarchy (sorted)."""
        names: set[str] = set()
        for parent in self._parents:
            with contextlib.suppress(FileNotFoundError):
                names.update(e.name for e in os.scandir(parent) if e.is_dir())
        # Only names open() accepts: a stranger's odd directory is not ours.
        return sorted(filter(valid_name, names))

    def create(self, name: str, limits: Limits) -> CgroupV1:
        """Create ``sandbox/<name>`` in every hierarchy and apply ``limits``.

        A directory that already exists (a leftover with the same name) is
        reused. On any failure the directories this call made are removed.

        Raises:
            InvalidArgument: a limit is malformed (memory_swap < memory...).
            LimitUnsupported: a limit needs a hierarchy or file the host lacks.
            SandboxError: the kernel refused a write (the message has the path).
        """
        cg = self.open(name)
        writes = self._plan(limits)
        created: list[str] = []
        try:
            for d in cg._unique:
                if mkdir_child(d):
                    created.append(d)
            for ctrl, file, value, limit, optional in writes:
                path = f"{cg.dirs[ctrl]}/{file}"
                try:
                    write_file(path, value)
                except FileNotFoundError as exc:
                    if optional:
                        continue
                    raise LimitUnsupported(limit, ctrl, path) from exc
                except OSError as exc:
                    raise SandboxError(f"cannot write {value!r} to {path}: {exc.strerror}") from exc
            if "devices" in cg.dirs:
                _confine_devices(cg.dirs["devices"])
        except BaseException:
            for d in reversed(created):
                with contextlib.suppress(OSError):
                    os.rmdir(d)
            raise
        return cg

    def _plan(self, limits: Limits) -> list[tuple[str, str, str, str, bool]]:
        """The writes for ``limits``: (controller, file, value, flag, optional).

        ``optional`` writes are defaults the user did not ask for (the swap
        of a memory limit), skipped where the host has no such file.
        """
        check_limits(limits)
        writes: list[tuple[str, str, str, str, bool]] = []
        memory, swap = limits.memory or 0, limits.memory_swap or 0
        if memory:
            writes.append(("memory", "memory.limit_in_bytes", str(memory), "--memory", False))
            # memsw counts memory plus swap, so it must be set after (and be
            # at least) memory.limit_in_bytes.
            if swap == -1:
                writes.append(("memory", "memory.memsw.limit_in_bytes", "-1", "", True))
            elif swap == 0:
                # Docker's rule: unset means as much swap as memory.
                total = str(2 * memory)
                writes.append(("memory", "memory.memsw.limit_in_bytes", total, "", True))
            else:
                writes.append(
                    (
                        "memory",
                        "memory.memsw.limit_in_bytes",
                        str(swap),
                        "--memory-swap (needs swap accounting, swapaccount=1)",
                        False,
                    )
                )
        nano = limits.nano_cpus or 0
        if nano:
            quota = str(nano * CFS_PERIOD_US // 1_000_000_000)
            writes.append(("cpu", "cpu.cfs_period_us", str(CFS_PERIOD_US), "--cpus", False))
            writes.append(("cpu", "cpu.cfs_quota_us", quota, "--cpus", False))
        shares = limits.cpu_shares or 0
        if shares:
            writes.append(("cpu", "cpu.shares", str(shares), "--cpu-shares", False))
        if limits.pids is not None:
            value = str(limits.pids) if limits.pids > 0 else "max"
            writes.append(("pids", "pids.max", value, "--pids-limit", False))
        for ctrl, _, _, limit, _ in writes:
            if ctrl not in self.hierarchies:
                raise LimitUnsupported(limit, ctrl, f"{self.root}/{ctrl}")
        return writes


def _confine_devices(path: str) -> None:
    """Deny every device, then allow the harmless ones (one rule per write)."""
    try:
        write_file(f"{path}/devices.deny", "a")
        fd = os.open(f"{path}/devices.allow", os.O_WRONLY | os.O_CLOEXEC)
        try:
            for rule in DEVICE_RULES:
                os.write(fd, rule.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise SandboxError(f"cannot confine devices in {path}: {exc.strerror}") from exc


__all__ = [
    "CONTROLLERS",
    "DEVICE_RULES",
    "CgroupV1",
    "CgroupV1Driver",
    "check_limits",
    "check_name",
]
