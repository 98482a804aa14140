"""The cgroup interface every driver (v1, v2) implements.

A container's cgroup lives at ``<hierarchy>/sandbox/<container id>`` so that
everything the project made is easy to find and to clean up.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

PARENT = "sandbox"


@dataclass(frozen=True)
class Limits:
    """Resource limits of one container. ``None`` means "no limit".

    Attributes:
        memory: bytes of memory (``--memory``).
        memory_swap: bytes of memory plus swap (``--memory-swap``); -1 means
            unlimited swap; None with a memory limit means twice the memory,
            as Docker does.
        nano_cpus: CPU quota in billionths of a CPU (``--cpus 0.5`` = 5e8).
        cpu_shares: relative CPU weight, Docker's scale (default 1024).
        pids: maximum number of processes and threads (``--pids-limit``);
            0 or less means unlimited.
    """

    memory: int | None = None
    memory_swap: int | None = None
    nano_cpus: int | None = None
    cpu_shares: int | None = None
    pids: int | None = None

    def to_json(self) -> dict[str, int | None]:
        return {
            "memory": self.memory,
            "memory_swap": self.memory_swap,
            "nano_cpus": self.nano_cpus,
            "cpu_shares": self.cpu_shares,
            "pids": self.pids,
        }

    @classmethod
    def from_json(cls, data: dict[str, int | None]) -> Limits:
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})


@dataclass
class CgroupStats:
    """One sample of a container's cgroup counters (bytes, nanoseconds).

    ``memory_stat`` is the whole ``memory.stat`` file (v1 keys such as
    ``total_inactive_file``, v2 keys such as ``inactive_file``), which Docker's
    stats pass through as ``memory_stats.stats``. The ``cpu_*periods`` and
    ``cpu_throttled_ns`` fields are the CFS quota's bookkeeping (``cpu.stat``).
    """

    memory_usage: int = 0
    memory_peak: int = 0
    memory_limit: int | None = None
    memory_inactive_file: int = 0
    cpu_usage_ns: int = 0
    cpu_percpu_ns: list[int] = field(default_factory=list)
    cpu_user_ns: int = 0
    cpu_system_ns: int = 0
    nano_cpus: int | None = None
    pids_current: int = 0
    pids_limit: int | None = None
    oom_kills: int = 0
    pids_limit_hits: int = 0
    memory_stat: dict[str, int] = field(default_factory=dict)
    cpu_periods: int = 0
    cpu_throttled_periods: int = 0
    cpu_throttled_ns: int = 0


class Cgroup(abc.ABC):
    """One container's cgroup (in every hierarchy the driver uses)."""

    name: str

    @abc.abstractmethod
    def join_files(self) -> list[str]:
        """Files a process writes ``0`` into to move itself into this cgroup."""

    def clone_into(self) -> str | None:
        """The directory to clone a process straight into, or None to join by `join_files`.

        A cgroup v2 directory: ``clone3(2)`` with CLONE_INTO_CGROUP (Linux
        5.7+) starts the child there, so it never moves. None for v1, whose
        hierarchies a child can only inherit or join. Where the kernel has no
        such clone the runtime falls back to `join_files`, which stay valid.
        """
        return None

    @abc.abstractmethod
    def procs(self) -> list[int]:
        """PIDs (host view) of every process in the cgroup."""

    @abc.abstractmethod
    def kill_all(self) -> None:
        """SIGKILL every process in the cgroup and wait until it is empty."""

    @abc.abstractmethod
    def remove(self) -> None:
        """Remove the cgroup directories; kills what is left first. Idempotent."""

    @abc.abstractmethod
    def stats(self) -> CgroupStats:
        """Read the current counters."""

    def oom_killed(self) -> bool:
        """True if the kernel's OOM killer killed a process of this cgroup."""
        return self.stats().oom_kills > 0

    def pids_limit_hit(self) -> bool:
        """True if a fork failed because the pids limit was reached."""
        return self.stats().pids_limit_hits > 0


class CgroupDriver(abc.ABC):
    """Creates, finds and cleans the containers' cgroups on one host layout."""

    version: int
    confines_devices: bool = False  # can it stop a container using a device node?

    @abc.abstractmethod
    def create(self, name: str, limits: Limits) -> Cgroup:
        """Create ``sandbox/<name>`` and apply the limits.

        Raises:
            LimitUnsupported: a limit was asked for that the host cannot
                enforce; nothing is left behind.
        """

    @abc.abstractmethod
    def open(self, name: str) -> Cgroup:
        """The existing cgroup ``sandbox/<name>`` (it may be gone already)."""

    @abc.abstractmethod
    def list_names(self) -> list[str]:
        """Names of every cgroup under ``sandbox/`` (to reconcile leftovers)."""
