"""Network namespace set-up done inside a container's first process."""

from __future__ import annotations

import fcntl
import socket
import struct

SIOCSIFFLAGS = 0x8914
IFF_UP, IFF_LOOPBACK, IFF_RUNNING = 0x1, 0x8, 0x40
# struct ifreq { char ifr_name[16]; short ifr_flags; ... } padded to 40 bytes.
_LO_UP = struct.pack("16sH22x", b"lo", IFF_UP | IFF_LOOPBACK | IFF_RUNNING)


def loopback_up() -> None:
    """Bring up ``lo`` in the calling process's (new, empty) network namespace.

    One ioctl, not netlink: this runs in every container's start path, where
    importing a netlink library would cost more than the rest of the set-up.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, _LO_UP)
