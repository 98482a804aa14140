"""What a container changed: a scan of its upper dir, with `docker diff` semantics.

The trap: the upper dir is not the list of changes. It holds copy-ups that
changed nothing (a file opened for writing, a directory copied up because a file
was created and removed in it), its whiteouts can hide a name that no lower
layer has, and an opaque directory changes the meaning of every name under it,
including names that are absent from the upper dir. Docker gave up on scanning
the upper dir for this reason (moby commit ac5d363e67) and compares the two
merged trees instead, which reads the whole image after every command.

This scan gives the same answer as that naive tree diff while reading only the
upper dir plus one lstat per lower layer for each of its entries. It is correct
only for mounts with ``redirect_dir=off`` and ``metacopy=off`` (the runtime's
mount options), where the upper dir holds every changed file whole; the lower
layers are walked only under an opaque directory (or a directory that replaced
a file), whose old contents must be listed as deleted.

"Before" is the lowers' merged view, "after" the container's; a path is:

- ``A`` if it is in after only (and every entry under an added directory);
- ``D`` if it is in before only (only the top of a deleted tree is listed);
- ``C`` if both have it and its type, mode, owner, rdev or file capabilities
  differ, or, for a non-directory, its size or mtime; a directory is also ``C``
  when anything under it changed. ``/`` is never listed.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

from sandbox.errors import LayerNotFound, StoreError
from sandbox.store.whiteouts import is_opaque, is_whiteout

ChangeKind = Literal["A", "C", "D"]
FileType = Literal["file", "dir", "symlink", "other"]

_DOCKER_KINDS: dict[str, int] = {"C": 0, "A": 1, "D": 2}
_CAPABILITY_XATTR = "security.capability"


@dataclass(frozen=True, slots=True)
class Change:
    """One changed path, as `docker diff` prints it.

    Attributes:
        path: Absolute path in the container (``/etc/hosts``). Bytes that are
            not UTF-8 are kept as surrogate escapes (`os.fsencode` restores them).
        kind: ``A`` added, ``C`` changed, ``D`` deleted.
        is_dir: The new entry is a directory (for ``D``: the deleted one was).
        size: Bytes of the new file or symlink; 0 for directories, devices and ``D``.
        layer: Index into the ``lowers`` given to `scan_changes` of the topmost
            layer that held the previous version ("copied up from layer N", "a
            whiteout hiding layer N's copy"); None for ``A``.
        file_type: What the new entry is (for ``D``: what the deleted one was):
            ``file`` (regular), ``dir``, ``symlink`` or ``other`` (device,
            fifo, socket).
        opaque: A directory made opaque in the upper dir that hides a lower
            directory's contents (``rm -rf d; mkdir d``): nothing of the old
            ``d`` shows through, and what it held is listed as ``D``.
    """

    path: str
    kind: ChangeKind
    is_dir: bool
    size: int
    layer: int | None
    file_type: FileType
    opaque: bool = False

    @property
    def docker_kind(self) -> int:
        """The Docker API's ``Kind``: 0 changed, 1 added, 2 deleted."""
        return _DOCKER_KINDS[self.kind]


class _Old(NamedTuple):
    """A path as the lowers' merged view has it."""

    st: os.stat_result
    path: str  # on disk, in the topmost layer that has it
    layer: int
    merge: tuple[tuple[int, str], ...]  # (layer, dir) pairs whose children merge here


_Lowers = tuple[tuple[int, str], ...]


def scan_changes(upper: Path, lowers: Sequence[Path], *, userxattr: bool = False) -> list[Change]:
    """List what the container whose upper dir is `upper` changed on top of `lowers`.

    Reads only (nothing on disk changes, whatever happens); never follows a
    symlink found in a layer.

    Args:
        upper: The container's upper dir. It must not change during the scan
            (the container has exited or is frozen).
        lowers: The image's layer dirs, top (nearest) first.
        userxattr: The mount used ``userxattr`` (opaque xattr in ``user.*``).

    Returns:
        The changes, sorted by path component by component, so that a
        directory's entries directly follow it.

    Raises:
        LayerNotFound: `upper` or a lower layer is not a directory.
        StoreError: a layer could not be read.
    """
    _check_dirs([upper, *lowers])
    try:
        return _scan(os.fspath(upper), tuple(enumerate(map(os.fspath, lowers))), userxattr)
    except OSError as exc:
        raise StoreError(f"cannot scan the changes in {upper}: {exc}") from exc


def layer_usage(path: Path) -> tuple[int, int]:
    """Measure the layer dir `path` as ``docker history`` does (reads only).

    Returns:
        ``(bytes, entries)``: the apparent size of its non-directories (a file
        with several names counted once, symlinks not followed) and the number
        of non-directory entries (whiteouts included, as entries of size 0).

    Raises:
        LayerNotFound: `path` is not a directory.
        StoreError: it could not be read.
    """
    _check_dirs([path])
    size = count = 0
    seen: set[tuple[int, int]] = set()
    stack = [os.fspath(path)]
    try:
        while stack:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                        continue
                    count += 1
                    st = entry.stat(follow_symlinks=False)
                    if st.st_nlink > 1:
                        if (st.st_dev, st.st_ino) in seen:
                            continue
                        seen.add((st.st_dev, st.st_ino))
                    size += st.st_size
    except OSError as exc:
        raise StoreError(f"cannot measure the layer {path}: {exc}") from exc
    return size, count


def _check_dirs(paths: Sequence[Path]) -> None:
    for path in paths:
        if not os.path.isdir(path):
            raise LayerNotFound(f"layer directory {path} does not exist")


def _scan(upper: str, lowers: _Lowers, userxattr: bool) -> list[Change]:
    """Walk `upper` without recursion (paths may be ~2000 levels deep)."""
    changes: dict[str, Change] = {}
    # Upper dirs that exist below with the same metadata: "C" only if something
    # under them changes, like Docker's parents of changes.
    quiet: dict[str, tuple[int, bool]] = {}  # path → (layer, opaque)
    # (container path, upper dir, its old merge list, whether the new view still
    # shows its lower entries: false under an opaque dir). The root merges all
    # lowers whatever their xattrs say, as the kernel's root does.
    stack: list[tuple[str, str, _Lowers, bool]] = [("/", upper, lowers, True)]
    while stack:
        cpath, udir, merge, merged = stack.pop()
        present: set[str] = set()
        with os.scandir(udir) as entries:
            for entry in entries:
                path = posixpath.join(cpath, entry.name)
                st = entry.stat(follow_symlinks=False)
                if is_whiteout(st):
                    # A whiteout of a name no lower has (the kernel does not
                    # leave those, but a layer is data) changes nothing.
                    old = _lookup(merge, entry.name, userxattr) if merged else None
                    if old is not None:
                        changes[path] = Change(path, "D", _isdir(old.st), 0, old.layer,
                                               _file_type(old.st))  # fmt: skip
                    continue
                present.add(entry.name)
                old = _lookup(merge, entry.name, userxattr) if merge else None
                is_dir = stat.S_ISDIR(st.st_mode)
                size = 0 if is_dir or not _has_size(st) else st.st_size
                # Lower dirs this one would merge with, and whether it hides them.
                below = old.merge if is_dir and old is not None else ()
                opaque = bool(below) and is_opaque(entry.path, userxattr=userxattr)
                if old is None:
                    changes[path] = Change(path, "A", is_dir, size, None, _file_type(st))
                elif _differs(old, st, entry.path):
                    changes[path] = Change(path, "C", is_dir, size, old.layer, _file_type(st),
                                           opaque)  # fmt: skip
                elif is_dir:
                    quiet[path] = (old.layer, opaque)
                if is_dir:
                    stack.append((path, entry.path, below, merged and bool(below) and not opaque))
        if not merged and merge:
            # Opaque (or replaced a file): every old entry not in upper is gone.
            for name, (layer, was) in _old_entries(merge).items():
                if name not in present:
                    path = posixpath.join(cpath, name)
                    changes[path] = Change(path, "D", was == "dir", 0, layer, was)
    for path in list(changes):
        parent = posixpath.dirname(path)
        while parent in quiet:
            layer, opaque = quiet.pop(parent)
            changes[parent] = Change(parent, "C", True, 0, layer, "dir", opaque)
            parent = posixpath.dirname(parent)
    return sorted(changes.values(), key=lambda change: change.path.split("/"))


def _lookup(merge: _Lowers, name: str, userxattr: bool) -> _Old | None:
    """Find `name` in the old merged view of a directory, as overlayfs' lookup does.

    The topmost layer that has the name wins; a whiteout hides it; a directory
    merges with the directories below it until an opaque one, a non-directory or
    a whiteout. Only real directories are ever joined onto, so a symlink in a
    lower layer is never followed.
    """
    found: _Old | None = None
    dirs: list[tuple[int, str]] = []
    for layer, parent in merge:
        path = os.path.join(parent, name)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if is_whiteout(st):
            break
        if found is None:
            found = _Old(st, path, layer, ())
        if not stat.S_ISDIR(st.st_mode):
            break
        dirs.append((layer, path))
        if is_opaque(path, userxattr=userxattr):
            break
    return found._replace(merge=tuple(dirs)) if found is not None else None


def _old_entries(merge: _Lowers) -> dict[str, tuple[int, FileType]]:
    """List a directory of the old merged view: name → (layer, file type).

    Lower opaque dirs need no check here: `_lookup` stopped `merge` at them.
    """
    seen: dict[str, tuple[int, FileType] | None] = {}
    for layer, parent in merge:
        with os.scandir(parent) as entries:
            for entry in entries:
                if entry.name in seen:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    seen[entry.name] = (layer, "dir")
                    continue
                st = entry.stat(follow_symlinks=False)
                seen[entry.name] = None if is_whiteout(st) else (layer, _file_type(st))
    return {name: info for name, info in seen.items() if info is not None}


def _differs(old: _Old, st: os.stat_result, path: str) -> bool:
    """Apply Docker's test for "changed" (moby pkg/archive/changes.go)."""
    o = old.st
    if (o.st_mode, o.st_uid, o.st_gid, o.st_rdev) != (st.st_mode, st.st_uid, st.st_gid, st.st_rdev):
        return True
    # Directory sizes and mtimes are noise (moby#9874): creating and removing
    # a file in a directory changes them.
    if not stat.S_ISDIR(o.st_mode) and (
        o.st_size != st.st_size or not _same_time(o.st_mtime_ns, st.st_mtime_ns)
    ):
        return True
    return _capability(old.path) != _capability(path)


def _same_time(a: int, b: int) -> bool:
    # Docker: a time with no nanoseconds (from a tar) equals one in the same second.
    if a == b:
        return True
    return a // 10**9 == b // 10**9 and (a % 10**9 == 0 or b % 10**9 == 0)


def _capability(path: str) -> bytes | None:
    try:
        return os.getxattr(path, _CAPABILITY_XATTR, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.EPERM):
            return None
        raise


def _isdir(st: os.stat_result) -> bool:
    return stat.S_ISDIR(st.st_mode)


def _has_size(st: os.stat_result) -> bool:
    return stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)


def _file_type(st: os.stat_result) -> FileType:
    if stat.S_ISREG(st.st_mode):
        return "file"
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    if stat.S_ISLNK(st.st_mode):
        return "symlink"
    return "other"


__all__ = ["Change", "ChangeKind", "FileType", "layer_usage", "scan_changes"]
