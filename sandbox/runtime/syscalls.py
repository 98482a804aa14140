"""The Linux system calls the runtime needs, through cffi in ABI mode over libc.

ABI mode needs no C compiler at install time: cffi parses the declarations
below and calls libc (or the raw ``syscall(2)`` entry point where glibc has no
wrapper). Every wrapper raises ``OSError`` carrying the errno, the operation
and the path, the way bubblewrap's ``die_with_error`` and runc's
``os.PathError`` report failures.
"""

from __future__ import annotations

import os
import platform
from typing import Any

import cffi

_ffi = cffi.FFI()
_ffi.cdef(
    """
    int unshare(int flags);
    int setns(int fd, int nstype);
    int mount(const char *source, const char *target, const char *filesystemtype,
              unsigned long mountflags, const void *data);
    int umount2(const char *target, int flags);
    int sethostname(const char *name, size_t len);
    int prctl(int option, unsigned long arg2, unsigned long arg3,
              unsigned long arg4, unsigned long arg5);
    int mknod(const char *pathname, unsigned int mode, unsigned long dev);
    long syscall(long number, ...);

    struct cap_header { uint32_t version; int pid; };
    struct cap_data { uint32_t effective; uint32_t permitted; uint32_t inheritable; };
    struct clone_args {
        uint64_t flags; uint64_t pidfd; uint64_t child_tid; uint64_t parent_tid;
        uint64_t exit_signal; uint64_t stack; uint64_t stack_size; uint64_t tls;
        uint64_t set_tid; uint64_t set_tid_size; uint64_t cgroup;
    };
    """
)
_libc: Any = _ffi.dlopen(None)

# Namespace flags (linux/sched.h).
CLONE_NEWNS = 0x00020000
CLONE_PARENT = 0x00008000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_INTO_CGROUP = 0x200000000  # clone3(2) only, Linux 5.7+

# mount(2) flags (linux/mount.h).
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2

# prctl(2) options.
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

CLOSE_RANGE_CLOEXEC = 1 << 2

_SYSCALLS = {
    # name: (x86_64, aarch64)
    "clone": (56, 220),
    "clone3": (435, 435),
    "pivot_root": (155, 41),
    "capset": (126, 91),
    "capget": (125, 90),
    "close_range": (436, 436),
}
_ARCH_INDEX = {"x86_64": 0, "aarch64": 1, "arm64": 1}


def _nr(name: str) -> int:
    try:
        return _SYSCALLS[name][_ARCH_INDEX[platform.machine()]]
    except KeyError:  # [should never happen] on the supported machines
        raise OSError(0, f"{name}: unsupported architecture {platform.machine()}") from None


def _check(result: int, op: str, path: str | None = None) -> int:
    if result == -1:
        err = _ffi.errno
        message = f"{op}: {os.strerror(err)}"
        raise OSError(err, message, path) if path else OSError(err, message)
    return result


def _c(s: str | bytes | None) -> Any:
    if s is None:
        return _ffi.NULL
    return s.encode() if isinstance(s, str) else s


def unshare(flags: int) -> None:
    """Move the calling process into new namespaces (``unshare(2)``)."""
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    """Join the namespace that ``fd`` (an open /proc/PID/ns/* file) refers to."""
    _check(_libc.setns(fd, nstype), "setns")


def mount(
    source: str | None,
    target: str,
    fstype: str | None = None,
    flags: int = 0,
    data: str | None = None,
) -> None:
    """Mount ``source`` on ``target`` (``mount(2)``); errors name the target."""
    _check(
        _libc.mount(_c(source), _c(target), _c(fstype), flags, _c(data)),
        f"mount {fstype or source or ''} on {target}".replace("  ", " "),
        target,
    )


def umount2(target: str, flags: int = 0) -> None:
    """Unmount ``target`` (``umount2(2)``), e.g. with MNT_DETACH."""
    _check(_libc.umount2(_c(target), flags), f"umount {target}", target)


def pivot_root(new_root: str, put_old: str) -> None:
    """Make ``new_root`` the root of this mount namespace (``pivot_root(2)``)."""
    _check(
        _libc.syscall(_ffi.cast("long", _nr("pivot_root")), _ffi.new("char[]", _c(new_root)),
                      _ffi.new("char[]", _c(put_old))),
        f"pivot_root to {new_root}",
        new_root,
    )


def sethostname(name: str) -> None:
    """Set the hostname of this UTS namespace."""
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), f"sethostname {name!r}")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """Call ``prctl(2)``; returns its result."""
    return _check(_libc.prctl(option, arg2, arg3, arg4, arg5), f"prctl({option})")


def mknod(path: str, mode: int, major: int, minor: int) -> None:
    """Create a device node (``mknod(2)``)."""
    _check(_libc.mknod(_c(path), mode, os.makedev(major, minor)), f"mknod {path}", path)


def clone(flags: int) -> int:
    """Fork this process into new namespaces at once (raw ``clone(2)``, no new stack).

    Like ``fork()`` but with namespace flags, so the child is PID 1 of a new PID
    namespace without a second fork. Returns 0 in the child, the child's PID in
    the parent. The caller must be single-threaded: glibc's and CPython's
    at-fork handlers do not run, which is only safe with one thread.
    """
    zero = _ffi.cast("long", 0)
    return _check(
        _libc.syscall(_ffi.cast("long", _nr("clone")), _ffi.cast("long", flags),
                      zero, zero, zero, zero),
        "clone",
    )


def clone3(
    flags: int, exit_signal: int, *, cgroup_fd: int | None = None, cgroup_path: str | None = None
) -> int:
    """``clone`` through ``clone3(2)`` (Linux 5.3+), optionally born in a cgroup v2.

    Same contract as `clone` (no new stack: ``stack`` and ``stack_size`` 0
    make the child return here, on a copy of the caller's stack, as fork
    does; single-threaded callers only), but the exit signal is an argument
    of its own, not the low byte of ``flags``. With ``cgroup_fd`` (an
    ``O_PATH | O_DIRECTORY`` fd of a cgroup v2 directory) the child starts
    in that cgroup (CLONE_INTO_CGROUP, Linux 5.7+): no later move through
    ``cgroup.procs``, which waits on the kernel's global threadgroup lock.

    Args:
        flags: CLONE_* flags, without a signal in the low byte.
        exit_signal: the signal the parent gets when the child exits; 0
            with CLONE_PARENT (the kernel refuses any other, and the child
            gets the caller's own exit signal).
        cgroup_fd: the cgroup to start the child in; None: the caller's.
        cgroup_path: that cgroup's path, for error messages only.

    Raises:
        OSError: ENOSYS (no clone3: Linux < 5.3, or a seccomp filter),
            E2BIG (a kernel whose clone_args has no cgroup field, 5.3-5.6),
            EINVAL (a flag or field it does not take), EBADF (not a cgroup v2
            directory), EBUSY or EOPNOTSUPP (a cgroup that cannot take
            processes), EAGAIN (also its pids limit).
    """
    args = _ffi.new("struct clone_args *")
    args.exit_signal = exit_signal
    if cgroup_fd is not None:
        flags |= CLONE_INTO_CGROUP
        args.cgroup = cgroup_fd
    args.flags = flags
    size = _ffi.sizeof("struct clone_args")
    return _check(
        _libc.syscall(_ffi.cast("long", _nr("clone3")), args, _ffi.cast("long", size)),
        "clone3 into cgroup" if cgroup_fd is not None else "clone3",
        cgroup_path,
    )


def close_range_cloexec(first: int = 3) -> None:
    """Mark every fd from ``first`` up as close-on-exec (``close_range(2)``)."""
    _check(
        _libc.syscall(_ffi.cast("long", _nr("close_range")), _ffi.cast("unsigned int", first),
                      _ffi.cast("unsigned int", 0xFFFFFFFF),
                      _ffi.cast("unsigned int", CLOSE_RANGE_CLOEXEC)),
        "close_range",
    )


_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set this thread's capability sets (``capset(2)``, 64-bit masks)."""
    header = _ffi.new("struct cap_header *", {"version": _LINUX_CAPABILITY_VERSION_3, "pid": 0})
    data = _ffi.new("struct cap_data[2]")
    for i in range(2):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    _check(_libc.syscall(_ffi.cast("long", _nr("capset")), header, data), "capset")


def capget(pid: int = 0) -> tuple[int, int, int]:
    """Read a thread's (effective, permitted, inheritable) capability masks."""
    header = _ffi.new("struct cap_header *", {"version": _LINUX_CAPABILITY_VERSION_3, "pid": pid})
    data = _ffi.new("struct cap_data[2]")
    _check(_libc.syscall(_ffi.cast("long", _nr("capget")), header, data), "capget")
    eff = data[0].effective | (data[1].effective << 32)
    perm = data[0].permitted | (data[1].permitted << 32)
    inh = data[0].inheritable | (data[1].inheritable << 32)
    return eff, perm, inh


def _warm_up() -> None:
    """Resolve every libc symbol and C type now, in the engine process.

    cffi's ABI mode looks symbols up and builds call wrappers lazily, on first
    use. Doing that in a freshly cloned child costs a millisecond of
    copy-on-write faults per container; done once here, children inherit it.
    """
    for name in ("unshare", "setns", "mount", "umount2", "sethostname", "prctl", "mknod",
                 "syscall"):  # fmt: skip
        getattr(_libc, name)
    for ctype in ("struct cap_header *", "struct cap_data[2]", "char[]", "long",
                  "unsigned int", "char *", "struct clone_args *"):  # fmt: skip
        _ffi.typeof(ctype)
    capget()
    prctl(PR_CAPBSET_READ, 0)


_warm_up()
