"""Prepare a container's root filesystem, in order, the way runc's prepareRootfs does.

Everything here runs in the container's first process, right after clone(2)
put it into new mount, PID, UTS, IPC and network namespaces, and before it
execs the init. Every mount is made inside the container's own mount
namespace with private propagation, so none of them is ever visible on the
host, and all of them vanish with the namespace when the container's last
process exits: a crash of the engine cannot leak a mount.

What is safe and why:

- The overlay, /proc, /dev and /sys are mounted under ``merged``, a directory
  the store made, never at a path taken from the image, so an image cannot
  redirect a mount with a symlink. Bind targets inside the image (/etc/hosts)
  are refused if they are symlinks.
- /sys is read-only and no cgroupfs is mounted, so ``release_agent`` and
  ``uevent_helper`` are out of reach; /proc/sys, /proc/sysrq-trigger and
  friends are read-only and the leaky /proc files are masked, as runc does.
- pivot_root (not chroot) then a lazy unmount of the old root, so nothing of
  the host's tree remains reachable through ``..`` or an open directory.
"""

from __future__ import annotations

import os
import stat

from sandbox.runtime import syscalls as sc
from sandbox.runtime.spec import RootfsSpec

# runc's defaults: masked paths (bind /dev/null over files, a read-only tmpfs
# over directories) and read-only paths (bind, then remount read-only).
MASKED_PATHS = (
    "/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys",
    "/proc/latency_stats", "/proc/sched_debug", "/proc/scsi", "/proc/timer_list",
    "/proc/timer_stats", "/sys/firmware", "/sys/devices/virtual/powercap",
)  # fmt: skip
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

# The only device nodes a container gets: name, major, minor (all mode 0666).
DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
           ("urandom", 1, 9), ("tty", 5, 0))  # fmt: skip
DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
             ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"),
             ("ptmx", "pts/ptmx"), ("core", "/proc/kcore"))  # fmt: skip

PROC_FLAGS = sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC
# redirect_dir and metacopy off: the upper dir alone tells what changed.
# volatile: no syncfs of the host disk at unmount (see engine's _fresh_workdir);
# the store never fsyncs, so durability is what it was.
OVERLAY_OPTIONS = "index=off,redirect_dir=off,metacopy=off,xino=off,volatile"


class StepFailed(Exception):
    """A named step of the rootfs recipe failed (carries the step and errno)."""

    def __init__(self, step: str, err: BaseException) -> None:
        super().__init__(f"{step}: {err}")
        self.step = step
        self.errno = getattr(err, "errno", 0) or 0
        self.detail = str(getattr(err, "strerror", None) or err)


def overlay_data(spec: RootfsSpec) -> str:
    """The overlay mount options: short relative lowerdirs, absolute upper/work."""
    return (
        f"lowerdir={':'.join(spec.lowers)},upperdir={spec.upper},"
        f"workdir={spec.work},{OVERLAY_OPTIONS}"
    )


def make_mounts_private() -> None:
    """Stop mount events propagating between the host and the container, both ways."""
    sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)


def mount_overlay(spec: RootfsSpec) -> None:
    """Mount the union: lowerdir names are resolved against ``layers_dir``.

    Relative names keep the option string under the one-page limit of mount(2)
    even for deep stacks (overlay2's ``l/`` links do the same).
    """
    os.chdir(spec.layers_dir)
    sc.mount("overlay", spec.merged, "overlay", sc.MS_NODEV, overlay_data(spec))


def mount_proc(root: str) -> None:
    """A /proc of the new PID namespace."""
    sc.mount("proc", root + "/proc", "proc", PROC_FLAGS)


def mount_dev(root: str, readonly: bool) -> None:
    """A tmpfs /dev with six device nodes, a private devpts, /dev/shm and mqueue."""
    dev = root + "/dev"
    sc.mount("tmpfs", dev, "tmpfs", sc.MS_NOSUID | sc.MS_STRICTATIME, "mode=755,size=65536k")
    umask = os.umask(0)  # mknod and mkdir honour the umask; the modes below are exact
    for name, major, minor in DEVICES:
        sc.mknod(f"{dev}/{name}", stat.S_IFCHR | 0o666, major, minor)
    for name, target in DEV_LINKS:
        os.symlink(target, f"{dev}/{name}")
    for name in ("pts", "shm", "mqueue"):
        os.mkdir(f"{dev}/{name}", 0o755)
    os.umask(umask)
    sc.mount("devpts", dev + "/pts", "devpts", sc.MS_NOSUID | sc.MS_NOEXEC,
             "newinstance,ptmxmode=0666,mode=0620,gid=5")  # fmt: skip
    sc.mount("shm", dev + "/shm", "tmpfs", PROC_FLAGS, "mode=1777,size=65536k")
    sc.mount("mqueue", dev + "/mqueue", "mqueue", PROC_FLAGS)
    if readonly:
        sc.mount(None, dev, None, sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_STRICTATIME)


def mount_sys(root: str) -> None:
    """A read-only sysfs (the network namespace's own view of class/net)."""
    sc.mount("sysfs", root + "/sys", "sysfs", PROC_FLAGS | sc.MS_RDONLY)


def _masks() -> tuple[tuple[str, bool], ...]:
    """The masked paths this kernel has, and whether each is a directory.

    /proc and /sys show the same kernel's entries in every container, so this
    is worked out once in the engine, not in every container's first process.
    """
    found = []
    for path in MASKED_PATHS:
        try:
            found.append((path, stat.S_ISDIR(os.lstat(path).st_mode)))
        except OSError:
            continue
    return tuple(found)


MASKS = _masks()


def mask_paths(root: str) -> None:
    """Hide the /proc and /sys files that leak host data or hardware control."""
    for path, is_dir in MASKS:
        target = root + path
        try:
            if is_dir:
                sc.mount("tmpfs", target, "tmpfs", sc.MS_RDONLY | PROC_FLAGS, "size=0")
            else:
                sc.mount(root + "/dev/null", target, None, sc.MS_BIND)
        except FileNotFoundError:
            continue  # not in this namespace's view: nothing to hide


def readonly_paths(root: str) -> None:
    """Make /proc/sys, /proc/sysrq-trigger and friends read-only.

    A bind-remount must repeat the flags the kernel locked on the proc mount
    (nosuid, nodev, noexec), or it fails with EPERM.
    """
    for path in READONLY_PATHS:
        target = root + path
        if not os.path.lexists(target):
            continue
        sc.mount(target, target, None, sc.MS_BIND | sc.MS_REC)
        sc.mount(None, target, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | PROC_FLAGS)


def bind_files(root: str, binds: dict[str, str]) -> None:
    """Bind per-container files (/etc/hostname, /etc/hosts) over the image's.

    They live in the container's directory, not in the upper layer, so they
    never show up in a diff or a commit. A target that is a symlink is refused:
    a hostile image could point it anywhere.
    """
    for inside, host in binds.items():
        target = root + inside
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        sc.mount(host, target, None, sc.MS_BIND)


def pivot_into(root: str) -> None:
    """Make ``root`` the filesystem root and drop the host's tree entirely.

    pivot_root(".", ".") stacks the old root on top of the new one; the lazy
    unmount then detaches it, so no path and no open directory leads back.
    """
    os.chdir(root)
    sc.pivot_root(".", ".")
    sc.umount2(".", sc.MNT_DETACH)
    os.chdir("/")


def enter_workdir(cwd: str) -> None:
    """chdir into the working directory, creating it as Docker does."""
    os.makedirs(cwd, mode=0o755, exist_ok=True)
    os.chdir(cwd)
    # CVE-2024-21626: make sure the working directory really is inside the root.
    if not os.getcwd().startswith("/"):
        raise OSError(0, f"working directory {cwd} is outside the container")


def prepare(spec: RootfsSpec) -> None:
    """Run the recipe; raises StepFailed naming the step that failed."""
    root = spec.merged
    step = ""
    try:
        step = "make mounts private"
        make_mounts_private()
        step = "mount overlay"
        mount_overlay(spec)
        step = "mount /proc"
        mount_proc(root)
        step = "mount /dev"
        mount_dev(root, spec.readonly_dev)
        step = "mount /sys"
        mount_sys(root)
        # Masks and read-only paths need /proc, /sys and /dev/null in place.
        step = "mask paths"
        mask_paths(root)
        step = "read-only paths"
        readonly_paths(root)
        step = "bind files"
        bind_files(root, spec.binds)
        # Last: after pivot_root the host paths above no longer resolve.
        step = "pivot_root"
        pivot_into(root)
    except OSError as exc:
        raise StepFailed(step, exc) from exc
