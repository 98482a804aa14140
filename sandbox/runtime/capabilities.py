"""Linux capabilities: Docker's default set, and dropping everything else."""

from __future__ import annotations

from functools import cache

from sandbox.runtime import syscalls

# linux/capability.h numbers, the names Docker and `capsh` use.
CAPABILITIES: dict[str, int] = {
    "CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "FSETID": 4,
    "KILL": 5, "SETGID": 6, "SETUID": 7, "SETPCAP": 8, "LINUX_IMMUTABLE": 9,
    "NET_BIND_SERVICE": 10, "NET_BROADCAST": 11, "NET_ADMIN": 12, "NET_RAW": 13,
    "IPC_LOCK": 14, "IPC_OWNER": 15, "SYS_MODULE": 16, "SYS_RAWIO": 17, "SYS_CHROOT": 18,
    "SYS_PTRACE": 19, "SYS_PACCT": 20, "SYS_ADMIN": 21, "SYS_BOOT": 22, "SYS_NICE": 23,
    "SYS_RESOURCE": 24, "SYS_TIME": 25, "SYS_TTY_CONFIG": 26, "MKNOD": 27, "LEASE": 28,
    "AUDIT_WRITE": 29, "AUDIT_CONTROL": 30, "SETFCAP": 31, "MAC_OVERRIDE": 32,
    "MAC_ADMIN": 33, "SYSLOG": 34, "WAKE_ALARM": 35, "BLOCK_SUSPEND": 36, "AUDIT_READ": 37,
    "PERFMON": 38, "BPF": 39, "CHECKPOINT_RESTORE": 40,
}  # fmt: skip

# Docker's 14 default capabilities. Everything else (SYS_ADMIN, SYS_MODULE,
# SYS_PTRACE, DAC_READ_SEARCH "shocker", NET_ADMIN, SYS_TIME, SYS_BOOT, ...) is
# dropped from every set, the bounding set included, so no exec can regain it.
DEFAULT_CAPS: tuple[str, ...] = (
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
    "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
)  # fmt: skip


def mask(names: tuple[str, ...] | list[str]) -> int:
    """The 64-bit mask of the named capabilities."""
    bits = 0
    for name in names:
        bits |= 1 << CAPABILITIES[name]
    return bits


@cache
def last_cap() -> int:
    """The highest capability number this kernel knows."""
    with open("/proc/sys/kernel/cap_last_cap") as f:
        return int(f.read())


def names(bits: int) -> list[str]:
    """The names of the capabilities set in ``bits``."""
    return sorted(n for n, v in CAPABILITIES.items() if bits >> v & 1)


@cache
def to_drop(keep: int) -> tuple[int, ...]:
    """The capability numbers outside ``keep`` (computed once, in the engine)."""
    return tuple(cap for cap in range(last_cap() + 1) if not keep >> cap & 1)


def limit_to(keep: int, drop: tuple[int, ...]) -> None:
    """Drop every capability not in ``keep`` from the bounding, ambient,
    effective, permitted and inheritable sets of the calling thread.

    ``drop`` is ``to_drop(keep)``, computed before fork so the child does as
    little Python work as it can. The bounding set goes first: dropping from
    it needs CAP_SETPCAP, which capset below may take away.
    """
    for cap in drop:
        syscalls.prctl(syscalls.PR_CAPBSET_DROP, cap)
    syscalls.prctl(syscalls.PR_CAP_AMBIENT, syscalls.PR_CAP_AMBIENT_CLEAR_ALL)
    syscalls.capset(keep, keep, keep)
