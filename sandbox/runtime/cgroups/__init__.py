"""Containers' cgroups: one interface (``base``), a v1 and a v2 driver.

``detect_driver()`` picks the driver for this host once and caches it::

    driver = detect_driver()
    cg = driver.create(container_id, Limits(memory=64 << 20, pids=64))
    # clone straight into cg.clone_into() (v2), or, in the child right
    # after clone, write "0" to each of cg.join_files()
    ...
    cg.remove()
"""

from __future__ import annotations

import os
import re

from sandbox.errors import SandboxError
from sandbox.runtime.cgroups.base import PARENT, Cgroup, CgroupDriver, CgroupStats, Limits
from sandbox.runtime.cgroups.v1 import CgroupV1, CgroupV1Driver
from sandbox.runtime.cgroups.v2 import CgroupV2, CgroupV2Driver

#: Environment variable that forces the driver: ``v1`` or ``v2``.
ENV_FORCE = "SANDBOX_CGROUP"

_drivers: dict[tuple[str, str], CgroupDriver] = {}


def detect_driver(root: str = "/sys/fs/cgroup") -> CgroupDriver:
    """The cgroup driver for this host (cached; cheap after the first call).

    ``SANDBOX_CGROUP=v1|v2`` forces the driver. Otherwise, read from
    /proc/self/mountinfo: v2 if ``root`` is a cgroup2 mount, v1 if
    ``root/memory`` is a cgroup v1 mount with the memory controller. On a
    hybrid host (v1 hierarchies and a cgroup2 at ``root/unified``) that is v1;
    forcing v2 there uses ``root/unified``.

    Args:
        root: where the cgroup filesystems are mounted.

    Raises:
        SandboxError: SANDBOX_CGROUP has another value, or neither layout
            is mounted under ``root``.
    """
    forced = os.environ.get(ENV_FORCE, "")
    key = (root, forced)
    driver = _drivers.get(key)
    if driver is None:
        driver = _drivers[key] = _detect(root, forced)
    return driver


def _detect(root: str, forced: str) -> CgroupDriver:
    mounts = _cgroup_mounts()

    def mount(path: str) -> tuple[str, str]:
        return mounts.get(os.path.realpath(path), ("", ""))

    if forced == "v1":
        return CgroupV1Driver(root)
    if forced == "v2":
        if mount(root)[0] != "cgroup2" and mount(f"{root}/unified")[0] == "cgroup2":
            return CgroupV2Driver(f"{root}/unified")
        return CgroupV2Driver(root)
    if forced:
        raise SandboxError(f"invalid {ENV_FORCE}={forced!r}: use v1 or v2, or unset it")
    if mount(root)[0] == "cgroup2":
        return CgroupV2Driver(root)
    fstype, options = mount(f"{root}/memory")
    if fstype == "cgroup" and "memory" in options.split(","):
        return CgroupV1Driver(root)
    raise SandboxError(
        f"no cgroup hierarchy under {root}: it is not a cgroup2 mount and {root}/memory is "
        f"not a cgroup v1 memory mount (see /proc/self/mountinfo); mount the cgroup "
        f"filesystems, or set {ENV_FORCE}=v1|v2"
    )


def _cgroup_mounts() -> dict[str, tuple[str, str]]:
    """Mount point to (fstype, super options) of every cgroup mount."""
    mounts = {}
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            # "<id> <parent> <dev> <root> <mount point> <opts> [opt...] - <fstype> <src> <super>"
            head, _, tail = line.partition(" - ")
            fstype, _, rest = tail.partition(" ")
            if fstype in ("cgroup", "cgroup2"):
                point = _unescape(head.split(" ")[4])
                mounts[point] = (fstype, rest.split(" ")[-1].strip())
    return mounts


def _unescape(field: str) -> str:
    r"""Undo mountinfo's octal escapes (``\040`` is a space)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


__all__ = [
    "ENV_FORCE",
    "PARENT",
    "Cgroup",
    "CgroupDriver",
    "CgroupStats",
    "CgroupV1",
    "CgroupV1Driver",
    "CgroupV2",
    "CgroupV2Driver",
    "Limits",
    "detect_driver",
]
