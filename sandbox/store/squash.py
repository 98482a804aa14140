"""Squash a stack of layers into one, so that deep stacks stay under overlayfs' limits.

A notebook makes one layer per cell, and a mount takes at most a page of
lowerdir options (about 125 layers with Docker's short links), so the store
replaces the oldest layers of a stack by one equivalent layer.

The traps: the result must hold the merged view, not the layers' contents, so
whiteouts and opaque directories are applied and never copied (a 0:0 device
copied into the bottom layer becomes a device node in the container); and a
layer is untrusted data, so a symlink in it (``etc -> /etc``) is recreated as a
symlink and never descended into, even when a higher layer has a directory or
whiteout under that name. Every path is built from directory entries that
lstat said are real directories, and files are only created inside the new
layer's own directories.

Regular files are hard links to the layer that provides them (layers are
immutable, so sharing their inodes is safe and makes a squash cheap); this
makes their link count grow, which ``ls -l`` shows in the container.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path

from sandbox.errors import InvalidArgument, LayerNotFound, StoreError
from sandbox.store.whiteouts import is_opaque, is_overlay_private_xattr, is_whiteout

_PARTIAL = ".flatten-"
"""Infix of the temporary sibling a squash builds in: ``.<dest name>.flatten-XXXX``."""

# Hard-linking fails across file systems (EXDEV), past the link limit (EMLINK,
# 65000 on ext4) and for immutable or append-only files (EPERM): copy instead.
_COPY_ERRNOS = (errno.EXDEV, errno.EMLINK, errno.EPERM)


class _Entry:
    """One name of the merged view: the topmost layer's entry, and for a
    directory the layer directories whose children merge into it."""

    __slots__ = ("dirs", "open", "path", "st")

    def __init__(self, path: str, st: os.stat_result, is_open: bool) -> None:
        self.path = path
        self.st = st
        self.dirs = [path] if stat.S_ISDIR(st.st_mode) else []
        self.open = is_open  # lower layers may still add to this directory


def flatten(lowers: Sequence[Path], dest: Path, *, userxattr: bool = False) -> None:
    """Write into the new directory `dest` one layer equal to the stack `lowers`.

    The result is what an overlay mount of `lowers` shows: the union with
    whiteouts and opaque directories applied, holding no whiteout and no
    overlay xattr. Regular files are hard links into `lowers` (copies where
    linking fails, e.g. across file systems); directories, symlinks, fifos,
    sockets and device nodes are recreated with their mode, owner, ns
    timestamps and xattrs (overlay-private ones dropped).

    Atomic: it builds in a hidden sibling of `dest` and renames it to `dest`
    at the end, so `dest` never holds half a layer. After an error the sibling
    is removed; a crash leaves it behind as ``.<name>.flatten-*`` next to
    `dest`, for the store's cleanup. Nothing is synced to disk. The caller must
    hold the store lock (so that nothing else creates `dest`), and `lowers`
    must not change during the call.

    Args:
        lowers: Layer directories, top (nearest) first.
        dest: The new layer's directory; it must not exist, its parent must.
        userxattr: Opaque directories are marked in ``user.*`` xattrs.

    Raises:
        InvalidArgument: `lowers` is empty.
        LayerNotFound: a layer is not a directory.
        StoreError: `dest` exists, or a layer could not be read or the
            result written.
    """
    if not lowers:
        raise InvalidArgument("cannot flatten an empty stack of layers")
    for layer in lowers:
        if not os.path.isdir(layer):
            raise LayerNotFound(f"layer directory {layer} does not exist")
    dest = Path(dest)
    if os.path.lexists(dest):
        raise StoreError(f"cannot flatten into {dest}: it already exists")
    try:
        tmp = tempfile.mkdtemp(prefix=f".{dest.name}{_PARTIAL}", dir=dest.parent)
    except OSError as exc:
        raise StoreError(f"cannot flatten into {dest}: {exc}") from exc
    try:
        # Roots may be symlinks in the store (Docker's l/ short links); the
        # root of the view is the top layer's root, whatever its xattrs say.
        roots = [os.path.realpath(layer) for layer in lowers]
        _build(roots, tmp, userxattr)
        if os.path.lexists(dest):
            raise StoreError(f"cannot flatten into {dest}: it was created meanwhile")
        os.rename(tmp, dest)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise StoreError(f"cannot flatten {len(lowers)} layers into {dest}: {exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _build(roots: list[str], out: str, userxattr: bool) -> None:
    """Fill `out` with the merged view of `roots`, walking without recursion."""
    finish = [(roots[0], os.stat(roots[0]), out)]
    stack = [(roots, out)]
    while stack:
        dirs, dst_dir = stack.pop()
        for name, entry in _merge(dirs, userxattr).items():
            dst = os.path.join(dst_dir, name)
            mode = entry.st.st_mode
            if stat.S_ISDIR(mode):
                os.mkdir(dst, 0o700)
                finish.append((entry.path, entry.st, dst))
                stack.append((entry.dirs, dst))
            elif stat.S_ISREG(mode):
                _link_or_copy(entry.path, entry.st, dst)
            else:
                _make_special(entry.path, entry.st, dst)
                _copy_metadata(entry.path, entry.st, dst)
    # Children first: creating entries would change a finished directory's mtime.
    for src, st, dst in reversed(finish):
        _copy_metadata(src, st, dst)


def _merge(dirs: list[str], userxattr: bool) -> dict[str, _Entry]:
    """List one directory of the merged view, as overlayfs' lookup does.

    The topmost layer that has a name wins; a whiteout hides it from the layers
    below; a directory merges with the directories below it until one is
    opaque, or a layer has a non-directory or whiteout there.
    """
    seen: dict[str, _Entry | None] = {}  # None: whited out
    for parent in dirs:
        with os.scandir(parent) as items:
            for item in items:
                if item.name not in seen:
                    st = item.stat(follow_symlinks=False)
                    if is_whiteout(st):
                        seen[item.name] = None
                    else:
                        is_dir = stat.S_ISDIR(st.st_mode)
                        is_open = is_dir and not is_opaque(item.path, userxattr=userxattr)
                        seen[item.name] = _Entry(item.path, st, is_open)
                    continue
                entry = seen[item.name]
                if entry is None or not entry.open:
                    continue
                if item.is_dir(follow_symlinks=False):
                    entry.dirs.append(item.path)
                    entry.open = not is_opaque(item.path, userxattr=userxattr)
                else:
                    entry.open = False
    return {name: entry for name, entry in seen.items() if entry is not None}


def _link_or_copy(src: str, st: os.stat_result, dst: str) -> None:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in _COPY_ERRNOS:
            raise
        shutil.copyfile(src, dst, follow_symlinks=False)
        _copy_metadata(src, st, dst)


def _make_special(src: str, st: os.stat_result, dst: str) -> None:
    """Recreate a symlink, fifo, socket or device node (never a whiteout here)."""
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        os.symlink(os.readlink(src), dst)
    elif stat.S_ISFIFO(mode):
        os.mkfifo(dst, 0o600)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISSOCK(mode):
        os.mknod(dst, stat.S_IFMT(mode) | 0o600, st.st_rdev)
    else:  # [should never happen]: every file type is listed above
        raise StoreError(f"cannot flatten {src}: unknown file type {stat.S_IFMT(mode):o}")


def _copy_metadata(src: str, st: os.stat_result, dst: str) -> None:
    """Give `dst` the owner, mode, xattrs and times of `src` (in the order that keeps them).

    chown clears set-id bits and file capabilities, so it comes before chmod
    and the xattrs; the times come last, after everything that could touch them.
    """
    os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    is_link = stat.S_ISLNK(st.st_mode)
    if not is_link:
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    for name in _listxattr(src):
        if not is_overlay_private_xattr(name):
            value = os.getxattr(src, name, follow_symlinks=False)
            os.setxattr(dst, name, value, follow_symlinks=False)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _listxattr(path: str) -> list[str]:
    try:
        return os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno == errno.ENOTSUP:
            return []
        raise


__all__ = ["flatten"]
