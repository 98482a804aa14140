"""Network namespaces the engine makes, enters for a moment, and hands to containers.

A network namespace is per thread: ``unshare(CLONE_NEWNET)`` or ``setns`` in
one thread moves that thread alone, and a socket stays in the namespace it
was made in for its whole life. So the engine never runs a helper process to
work inside a namespace: it steps its own thread in, makes a socket (a
netlink socket to configure the namespace, a TCP socket to reach a server in
it), and steps straight back out, with no ``await`` in between.

A namespace lives as long as something refers to it: a process in it, or an
open file descriptor such as those these functions return. The engine holds
the fds of its networks' namespaces, and never bind-mounts them anywhere, so a
killed engine leaves no namespace behind: they go with its last fd, and the
bridges and veth pairs in them with them.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator

from sandbox.errors import RuntimeFailure
from sandbox.runtime import network
from sandbox.runtime import syscalls as sc

_SELF = "/proc/thread-self/ns/net"
# The namespace this process started in (the host's, for a daemon), read at
# import, before any thread has moved: nothing here ever configures it.
_HOME = os.stat(_SELF).st_ino


def current() -> int:
    """An fd of the calling thread's network namespace (close it when done)."""
    return os.open(_SELF, os.O_RDONLY | os.O_CLOEXEC)


@contextlib.contextmanager
def entered(ns_fd: int) -> Iterator[None]:
    """Run the block in the namespace ``ns_fd``, in this thread only.

    The block must not await or yield to other code of the same thread: an
    event loop's other tasks would run in the wrong namespace.

    Raises:
        RuntimeFailure: ``ns_fd`` is the engine's own (the host's) namespace.
    """
    check_foreign(ns_fd)
    home = current()
    try:
        sc.setns(ns_fd, sc.CLONE_NEWNET)
        try:
            yield
        finally:
            sc.setns(home, sc.CLONE_NEWNET)
    finally:
        os.close(home)


def create(sysctls: dict[str, str] | None = None) -> int:
    """A new network namespace with loopback up; returns an fd that keeps it alive.

    Args:
        sysctls: ``net.*`` settings for it, by name below /proc/sys/net
            (``{"ipv4/ping_group_range": "0 2147483647"}``).
    """
    home = current()
    try:
        sc.unshare(sc.CLONE_NEWNET)
        try:
            fd = current()
            try:
                network.loopback_up()
                _write_sysctls(sysctls or {})
            except BaseException:
                os.close(fd)
                raise
        finally:
            sc.setns(home, sc.CLONE_NEWNET)
    finally:
        os.close(home)
    return fd


def check_foreign(ns_fd: int) -> None:
    """Refuse ``ns_fd`` if it is the engine's own namespace (the host's).

    Every namespace the engine configures is one it made, or a container's:
    getting its own here means an fd was closed and its number reused, or a
    PID was, and the next step would add an interface, an address or a
    route to the host. Better to fail the one request.

    Raises:
        RuntimeFailure: it is.
    """
    if os.fstat(ns_fd).st_ino == _HOME:
        raise RuntimeFailure(
            "refusing to configure the engine's own network namespace (a container's "
            "was expected, and it has probably just exited): try again",
            step="network",
        )


def set_sysctls(ns_fd: int, sysctls: dict[str, str]) -> None:
    """Apply ``net.*`` settings (see `create`) to the namespace ``ns_fd``."""
    with entered(ns_fd):
        _write_sysctls(sysctls)


def _write_sysctls(sysctls: dict[str, str]) -> None:
    # /proc/sys/net shows the namespace of the thread that opens the file.
    for name, value in sysctls.items():
        with open(f"/proc/sys/net/{name}", "w") as f:
            f.write(value)


def socket_in(ns_fd: int, family: int, kind: int, proto: int = 0) -> socket.socket:
    """A socket made inside the namespace ``ns_fd`` (it stays there)."""
    with entered(ns_fd):
        return socket.socket(family, kind | socket.SOCK_CLOEXEC, proto)


def inode(ns_fd: int) -> int:
    """The namespace's inode number (what ``/proc/PID/ns/net`` links name)."""
    return os.fstat(ns_fd).st_ino


def in_use() -> set[str]:
    """Every network namespace a process of this host is in or holds an fd of.

    As ``net:[inode]``, what /proc's links name: for checks that nothing was
    left behind (the engine holds its networks' namespaces by fd only).
    """
    found = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        with contextlib.suppress(OSError):
            found.add(os.readlink(f"/proc/{pid}/ns/net"))
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("net:"):
                        found.add(target)
    return found
