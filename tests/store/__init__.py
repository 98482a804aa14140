"""Helpers for the store tests: scratch dirs, layer builders, real overlay mounts.

Every overlay mount happens inside ``unshare --mount --propagation private``, so
it exists only as long as that one shell and can never leak to the host; the
scratch dir still checks /proc/self/mounts on the way out.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import pytest

from sandbox.store.whiteouts import make_whiteout, set_opaque

_ROOT_MARKS = (
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod, trusted xattrs, mounts)"),
    pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)"),
)

_F = TypeVar("_F", bound=Callable[..., Any])


def needs_root(test: _F) -> _F:
    """Mark `test` as needing root (whiteouts, trusted xattrs, overlay mounts)."""
    for mark in _ROOT_MARKS:
        test = mark(test)
    return test


OVERLAY_OPTS = "index=off,redirect_dir=off,metacopy=off"


@contextmanager
def scratch(parent: str | None = None) -> Iterator[Path]:
    """A temp dir removed afterwards, even when the test failed.

    Fails the test if a mount under it is still visible (which would mean a
    mount escaped its namespace).
    """
    path = Path(tempfile.mkdtemp(prefix="sandbox-test-store-", dir=parent))
    try:
        yield path
    finally:
        with open("/proc/self/mounts") as mounts:
            leaked = [line for line in mounts if str(path) in line]
        for line in reversed(leaked):
            subprocess.run(["umount", "-l", line.split()[1]], check=False)
        shutil.rmtree(path)
        assert not leaked, f"mounts left behind: {leaked}"


def in_mount_ns(script: str, **env: str) -> None:
    """Run the sh `script` (``set -eu``) in a private mount namespace."""
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-euc", script],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        raise AssertionError(f"script failed ({proc.returncode}): {proc.stderr}\n{script}")


def lowerdir(lowers: Sequence[Path]) -> str:
    """The lowerdir option for `lowers` (top first)."""
    for layer in lowers:
        assert not set(str(layer)) & set(":,\\"), layer
    return ":".join(map(str, lowers))


# --- building layers ---------------------------------------------------------


def build(root: Path, *ops: tuple[Any, ...]) -> Path:
    """Create the layer dir `root` from a list of operations (in order).

    ``("file", path, text[, mode])``, ``("dir", path[, mode])``,
    ``("link", path, target)``, ``("hardlink", path, existing)``,
    ``("whiteout", path)``, ``("opaque", path)`` (a dir marked opaque),
    ``("fifo", path)``, ``("chr", path, major, minor)``,
    ``("xattr", path, name, value)``, ``("owner", path, uid, gid)``,
    ``("mtime", path, ns)``.
    """
    root.mkdir(parents=True, exist_ok=True)
    for op, rel, *args in ops:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if op == "file":
            path.write_bytes(args[0].encode() if isinstance(args[0], str) else args[0])
            os.chmod(path, args[1] if len(args) > 1 else 0o644)
        elif op == "dir":
            path.mkdir(exist_ok=True)
            os.chmod(path, args[0] if args else 0o755)
        elif op == "link":
            os.symlink(args[0], path)
        elif op == "hardlink":
            os.link(root / args[0], path)
        elif op == "whiteout":
            make_whiteout(path)
        elif op == "opaque":
            path.mkdir(exist_ok=True)
            set_opaque(path)
        elif op == "fifo":
            os.mkfifo(path)
        elif op == "chr":
            os.mknod(path, stat.S_IFCHR | 0o640, os.makedev(args[0], args[1]))
        elif op == "xattr":
            os.setxattr(path, args[0], args[1], follow_symlinks=False)
        elif op == "owner":
            os.chown(path, args[0], args[1], follow_symlinks=False)
        elif op == "mtime":
            os.utime(path, ns=(args[0], args[0]), follow_symlinks=False)
        else:
            raise ValueError(op)
    return root


def build_stack(base: Path, *layers: Sequence[tuple[Any, ...]]) -> list[Path]:
    """Build ``base/L0``, ``base/L1``... from `layers` (top first); return their paths."""
    return [build(base / f"L{i}", *ops) for i, ops in enumerate(layers)]


# --- looking at trees --------------------------------------------------------


class Info(NamedTuple):
    """What a tree comparison looks at for one path."""

    type: int
    mode: int
    uid: int
    gid: int
    rdev: int
    size: int  # 0 for directories
    mtime_ns: int
    target: str | None  # symlinks
    digest: str | None  # regular files
    xattrs: tuple[tuple[str, bytes], ...]


def snapshot(root: Path) -> dict[str, Info]:
    """Every path under `root` ("/a/b"; root itself is "/") with its lstat facts."""
    result: dict[str, Info] = {"/": _info(str(root))}
    stack = [(str(root), "/")]
    while stack:
        disk, cpath = stack.pop()
        with os.scandir(disk) as entries:
            for entry in entries:
                path = os.path.join(cpath, entry.name)
                result[path] = _info(entry.path)
                if entry.is_dir(follow_symlinks=False):
                    stack.append((entry.path, path))
    return result


def _info(path: str) -> Info:
    st = os.lstat(path)
    kind = stat.S_IFMT(st.st_mode)
    digest = None
    if kind == stat.S_IFREG:
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
    xattrs = tuple(
        sorted(
            (name, os.getxattr(path, name, follow_symlinks=False))
            for name in os.listxattr(path, follow_symlinks=False)
        )
    )
    return Info(
        type=kind,
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        rdev=st.st_rdev,
        size=0 if kind == stat.S_IFDIR else st.st_size,
        mtime_ns=st.st_mtime_ns,
        target=os.readlink(path) if kind == stat.S_IFLNK else None,
        digest=digest,
        xattrs=xattrs,
    )
