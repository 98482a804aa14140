"""Which processes are blocked reading a pipe: "is the container waiting for input?"

A notebook shows an input box when a cell's command waits for its stdin
(bash's ``read name``, ``cat``, Python's ``input()``). Nothing tells a pipe's
writer that its reader waits, so the question is asked of each process:

- the processes are those of the container's cgroup (host PIDs), each of
  their threads looked at (``/proc/PID/task/TID``);
- a thread waits if its state is ``S`` (interruptible sleep, in
  ``/proc/.../stat``) and ``/proc/.../syscall`` names a blocking read whose
  first argument is a file descriptor: ``read`` or ``readv`` (the syscall
  numbers are the machine's: 0 and 19 on x86_64, 63 and 65 on aarch64);
- the descriptor (``/proc/PID/fd/N``) must be the pipe asked about: both ends
  of a pipe read back as the same ``pipe:[inode]``, so the engine names its
  write end of the container's stdin (`fd_name`) and compares.

Limits: it is a snapshot (a reader may wake a moment later); only blocking
``read``/``readv`` calls are seen, not a program that waits in ``poll``,
``select`` or ``epoll`` first (their descriptors are behind a pointer) nor a
32-bit program (other syscall numbers). Reading ``/proc/PID/syscall`` needs
the right to ptrace the process, which root (the daemon) has; a process that
cannot be read, or is gone, is skipped.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable
from dataclasses import dataclass

# Syscalls that block reading the descriptor in their first argument.
READ_SYSCALLS: dict[str, frozenset[int]] = {
    "x86_64": frozenset({0, 19}),  # read, readv
    "aarch64": frozenset({63, 65}),  # read, readv
}
READ_SYSCALLS["amd64"] = READ_SYSCALLS["x86_64"]
READ_SYSCALLS["arm64"] = READ_SYSCALLS["aarch64"]


@dataclass(frozen=True)
class Reader:
    """A process blocked reading the pipe: its host PID and its command name."""

    pid: int
    command: str


def fd_name(fd: int) -> str:
    """What ``/proc/*/fd/N`` reads for this process's ``fd`` (``pipe:[inode]`` for a pipe)."""
    return os.readlink(f"/proc/self/fd/{fd}")


def blocked_readers(pids: Iterable[int], target: str) -> list[Reader]:
    """The processes among ``pids`` blocked in a read of the file named ``target``.

    ``target`` is an `fd_name`, such as ``pipe:[1234]``. A process is listed
    once, whichever of its threads reads.
    """
    numbers = READ_SYSCALLS.get(platform.machine(), frozenset())
    found = []
    for pid in pids:
        for tid in _threads(pid):
            fd = _blocked_read(f"/proc/{pid}/task/{tid}", numbers)
            if fd is None:
                continue
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") != target:
                    continue
            except OSError:
                continue
            found.append(Reader(pid, _read(f"/proc/{pid}/comm").strip()))
            break
    return found


def _threads(pid: int) -> list[str]:
    try:
        return os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []


def _blocked_read(task: str, numbers: frozenset[int]) -> int | None:
    """The descriptor a sleeping thread reads, if it is in one of ``numbers``; else None."""
    # "pid (comm) S ...": the command may hold spaces and parentheses.
    state = _read(f"{task}/stat").rpartition(")")[2].split()[:1]
    if state != ["S"]:
        return None
    # "nr arg1 ... arg6 sp pc" in a syscall; "running" or "-1 sp pc" otherwise.
    fields = _read(f"{task}/syscall").split()
    if len(fields) < 2 or not fields[0].isdigit() or int(fields[0]) not in numbers:
        return None
    try:
        return int(fields[1], 16)
    except ValueError:
        return None


def _read(path: str) -> str:
    """A small /proc file's text; "" if it cannot be read (gone, not allowed)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        return os.read(fd, 4096).decode("utf-8", "replace")
    except OSError:
        return ""
    finally:
        os.close(fd)


__all__ = ["READ_SYSCALLS", "Reader", "blocked_readers", "fd_name"]
