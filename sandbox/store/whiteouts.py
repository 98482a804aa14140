"""Whiteouts and opaque directories: how a layer records that something is gone.

The trap this module exists for: a layer is only the difference from the layers
below it, so a deletion cannot remove anything below; it is written down as a
marker instead, and every reader of a layer must apply the marker, never copy it
as data. The same two markers have two spellings, and mixing them up fails
silently:

- overlayfs, which is what our layers on disk hold (the kernel writes them into
  the upper dir): a deleted name is a character device 0:0 under that name, and a
  directory whose lower contents are hidden carries the xattr
  ``trusted.overlay.opaque=y`` (``user.overlay.opaque`` on a ``userxattr`` mount).
- OCI/AUFS tar, which is what image archives carry: a deleted name is an empty
  file ``.wh.<name>`` beside it, and an opaque directory contains an empty file
  ``.wh..wh..opq``.

A 0:0 device copied into a squashed layer shows up as a device node instead of
hiding anything. A ``.wh.`` file unpacked as is deletes nothing. A
``trusted.overlay.*`` xattr copied into another layer is worse: these xattrs are
the kernel's private bookkeeping for one mount (``opaque``, ``redirect``,
``origin``, ``uuid``...), and moved elsewhere they make the kernel hide or
redirect directories. So they are never copied (`is_overlay_private_xattr`).

Two more traps. The kernel shares one whiteout inode between many whiteouts
(hard links, nlink > 1), so "nlink > 1" does not mean "a hard link to export".
And ``user.overlay.opaque`` means "opaque" only on a ``userxattr`` mount: on our
root mounts any container process may set it through the merged view, so
honouring it there would let a cell hide files from our tools but not from the
kernel. It is only read when the caller says the mount uses ``userxattr``.

Linux 6.7 added "xwhiteouts" (regular files with ``trusted.overlay.whiteout`` in
a directory whose opaque xattr is ``x``) for composefs; our mounts never write
them, and they are not recognised here.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from typing import Literal, NamedTuple

from sandbox.errors import InvalidArgument

WHITEOUT_PREFIX = ".wh."
"""Tar form of a deleted name: ``.wh.<name>`` in the same directory."""

AUFS_META_PREFIX = ".wh..wh."
"""AUFS bookkeeping names (``.wh..wh.plnk``, ``.wh..wh.aufs``); never data."""

OPAQUE_MARKER = ".wh..wh..opq"
"""Tar form of an opaque directory: an empty file of this name inside it."""

OPAQUE_XATTR = "trusted.overlay.opaque"
"""Overlay form of an opaque directory (value ``y``) on a normal mount."""

USER_OPAQUE_XATTR = "user.overlay.opaque"
"""The same on a ``userxattr`` (rootless) mount."""

OVERLAY_PRIVATE_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.")
"""Xattrs that belong to an overlay mount and must never be copied into a layer.

``user.overlay.*`` is included even though our mounts use ``trusted.*``: a layer
carrying it would change meaning if the store were ever mounted with ``userxattr``.
"""


def is_whiteout(st: os.stat_result) -> bool:
    """Tell whether an lstat result is an overlay whiteout (a char device 0:0)."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(path: str | os.PathLike[str], *, userxattr: bool = False) -> bool:
    """Tell whether the directory `path` is marked opaque for overlayfs.

    Reads ``trusted.overlay.opaque`` (``user.overlay.opaque`` if `userxattr`) on
    `path` itself, never through a symlink. Only the value ``y`` means opaque
    (``x`` is the 6.7 "may contain xwhiteouts" flag). A missing xattr, or a file
    system without xattrs, means not opaque; other errors raise OSError.
    """
    name = USER_OPAQUE_XATTR if userxattr else OPAQUE_XATTR
    try:
        return os.getxattr(path, name, follow_symlinks=False) == b"y"
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP):
            return False
        raise


def make_whiteout(path: str | os.PathLike[str]) -> None:
    """Create the overlay whiteout `path` (a char device 0:0, mode 0, as the kernel does).

    Needs CAP_MKNOD. Raises OSError (EEXIST if `path` exists); nothing is left
    behind after an error.
    """
    os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))


def set_opaque(path: str | os.PathLike[str], *, userxattr: bool = False) -> None:
    """Mark the directory `path` opaque (hide every lower entry below it).

    Needs CAP_SYS_ADMIN for the ``trusted.*`` xattr. One setxattr(2): the
    directory is marked or left as it was. Raises OSError.
    """
    name = USER_OPAQUE_XATTR if userxattr else OPAQUE_XATTR
    os.setxattr(path, name, b"y", follow_symlinks=False)


def is_overlay_private_xattr(name: str) -> bool:
    """Tell whether the xattr `name` is overlay bookkeeping that must not be copied."""
    return name.startswith(OVERLAY_PRIVATE_XATTR_PREFIXES)


# --- the tar form ------------------------------------------------------------


class TarMarker(NamedTuple):
    """What a tar member that is not data stands for.

    ``kind`` is ``"whiteout"`` (``path`` is the deleted path), ``"opaque"``
    (``path`` is the opaque directory, ``""`` for the root) or ``"meta"`` (an
    AUFS bookkeeping entry, ``path`` is the member itself: skip it).
    """

    kind: Literal["whiteout", "opaque", "meta"]
    path: str


def _check_name(name: str, what: str) -> None:
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        raise InvalidArgument(f"invalid {what} {name!r}: it must be one file name")


def to_tar_whiteout(path: str) -> str:
    """Spell the deletion of `path` the tar way: ``etc/passwd`` → ``etc/.wh.passwd``.

    Raises InvalidArgument if the last component is empty, ``.`` or ``..``, or
    itself starts with ``.wh.`` (the result would read back as a marker).
    """
    parent, name = posixpath.split(path.rstrip("/"))
    _check_name(name, "whiteout target")
    if name.startswith(WHITEOUT_PREFIX):
        raise InvalidArgument(
            f"cannot write a whiteout for {path!r}: names starting with {WHITEOUT_PREFIX!r} "
            "have no tar form"
        )
    return posixpath.join(parent, WHITEOUT_PREFIX + name)


def to_tar_opaque(dirpath: str) -> str:
    """Spell "`dirpath` is opaque" the tar way: ``etc`` → ``etc/.wh..wh..opq``."""
    return posixpath.join(dirpath, OPAQUE_MARKER)


def parse_tar_member(path: str) -> TarMarker | None:
    """Classify the tar member `path`: a whiteout, an opaque marker, AUFS meta, or data.

    Returns None for an ordinary member. The directory part is returned as
    given (normalising and confining it is the unpacker's job).

    Raises:
        InvalidArgument: a whiteout of nothing or of ``.``/``..`` (``.wh.``,
            ``.wh..``, ``.wh...``), which a hostile archive would use to reach
            a parent directory.
    """
    parent, name = posixpath.split(path.rstrip("/"))
    if not name.startswith(WHITEOUT_PREFIX):
        return None
    if name == OPAQUE_MARKER:
        return TarMarker("opaque", parent)
    if name.startswith(AUFS_META_PREFIX):
        return TarMarker("meta", path)
    target = name[len(WHITEOUT_PREFIX) :]
    _check_name(target, f"whiteout {path!r} of")
    return TarMarker("whiteout", posixpath.join(parent, target))


__all__ = [
    "AUFS_META_PREFIX",
    "OPAQUE_MARKER",
    "OPAQUE_XATTR",
    "OVERLAY_PRIVATE_XATTR_PREFIXES",
    "USER_OPAQUE_XATTR",
    "WHITEOUT_PREFIX",
    "TarMarker",
    "is_opaque",
    "is_overlay_private_xattr",
    "is_whiteout",
    "make_whiteout",
    "parse_tar_member",
    "set_opaque",
    "to_tar_opaque",
    "to_tar_whiteout",
]
