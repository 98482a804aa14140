"""flatten against the kernel: the squashed layer must equal the overlay's merged view.

Each stack is mounted read-only (lowerdirs only) in a private mount namespace
and copied with ``cp -a``; the flattened layer must match that copy path for
path: type, mode, owner, mtime, content, symlink target, rdev and xattrs.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.errors import InvalidArgument, LayerNotFound, StoreError
from sandbox.store import squash
from sandbox.store.squash import flatten
from sandbox.store.whiteouts import is_overlay_private_xattr, is_whiteout

from . import Info, build, build_stack, in_mount_ns, lowerdir, needs_root, scratch, snapshot

DEEP = "/".join(f"level{i}" for i in range(100))
NL = "new\nline"

Ops = list[tuple[Any, ...]]

# Stacks, top layer first. Every stack has 3 to 5 layers.
STACKS: dict[str, list[Ops]] = {
    "files, whiteouts, opaque dirs, metadata": [
        [
            ("file", "etc/conf", "conf v3\n", 0o600),
            ("owner", "etc/conf", 1000, 100),
            ("whiteout", "etc/gone"),
            ("opaque", "opt/app"),
            ("file", "opt/app/new", "new\n"),
            ("xattr", "opt/app/new", "user.note", b"top"),
            ("file", "bin/su", "setuid\n", 0o4755),
            (
                "xattr",
                "bin/su",
                "security.capability",
                bytes.fromhex("0100000200040000" + "00" * 12),
            ),
        ],
        [
            ("file", "etc/conf", "conf v2\n"),
            ("file", "etc/extra", "extra\n"),
            ("xattr", "etc/extra", "user.origin", b"L1"),
            ("xattr", "etc/extra", "trusted.note", b"kept"),
            ("fifo", "run/pipe"),
            ("chr", "dev/null2", 1, 3),
            ("link", "lib/conf", "../etc/conf"),
            ("link", "lib/dangling", "/nowhere"),
            ("dir", "srv", 0o750),
            ("owner", "srv", 33, 33),
        ],
        [
            ("file", "etc/conf", "conf v1\n"),
            ("file", "etc/gone", "bye\n"),
            ("file", "opt/app/old", "old\n"),
            ("file", "opt/app/sub/old", "old\n"),
            ("file", "srv/www/index.html", "<p>\n"),
            ("file", "bin/tool", "tool\n", 0o755),
            ("hardlink", "bin/tool-alias", "bin/tool"),
            ("mtime", "bin/tool", 1_000_000_123),
        ],
    ],
    "file replaced by a dir and back": [
        [("file", "x", "file again\n"), ("file", "y/child", "in dir y\n")],
        [("whiteout", "x"), ("opaque", "y"), ("file", "y/child", "replaced\n")],
        [("opaque", "x"), ("file", "x/inner", "x became a dir\n"), ("file", "y", "y is a file\n")],
        [("file", "x", "x was a file\n"), ("file", "y/old", "y was a dir\n")],
    ],
    "merges skip layers and stop at opaque": [
        [("file", "a/top", "0\n")],
        [("dir", "other")],
        [("opaque", "a"), ("file", "a/mid", "2\n"), ("whiteout", "a/gone-below")],
        [("file", "a/hidden", "3\n"), ("file", "a/gone-below", "3\n"), ("dir", "b")],
        [("file", "a/hidden2", "4\n"), ("file", "b/kept", "4\n"), ("whiteout", "b/nothing")],
    ],
    "deep paths and odd names": [
        [("file", f"deep/{DEEP}/top", "top\n"), ("file", f"names/{NL}", "nl\n")],
        [("whiteout", "names/with space"), ("file", "names/a\\b", "backslash\n")],
        [
            ("file", f"deep/{DEEP}/bottom", "bottom\n"),
            ("file", "names/with space", "space\n"),
            ("file", "names/.wh.literal", "a real file named .wh.literal\n"),
        ],
    ],
    "markers in the bottom layer vanish": [
        [("file", "a", "a\n")],
        [("file", "b", "b\n")],
        [("whiteout", "nothing"), ("opaque", "empty-opaque"), ("file", "empty-opaque/f", "f\n")],
    ],
}


@pytest.fixture
def ws() -> Iterator[Path]:
    with scratch() as path:
        yield path


def merged_copy(ws: Path, lowers: list[Path]) -> Path:
    """Mount `lowers` read-only as overlay and copy the merged view with cp -a.

    The kernel's readdir lists a whiteout in a directory that only one layer
    has, though it cannot be opened (see the test below), so cp may fail to
    stat such names; every other cp error fails the test.
    """
    merged, ref, errors = ws / "merged", ws / "ref", ws / "cp-errors"
    merged.mkdir()
    ref.mkdir()
    in_mount_ns(
        'mount -t overlay overlay -o "lowerdir=$LOWER,redirect_dir=off,metacopy=off" "$MERGED"\n'
        'cp -a "$MERGED/." "$REF/" 2>"$ERRORS" || true',
        LOWER=lowerdir(lowers),
        MERGED=str(merged),
        REF=str(ref),
        ERRORS=str(errors),
    )
    for line in errors.read_text().splitlines():
        match = re.fullmatch(r"cp: cannot stat '(.+)': No such file or directory", line)
        assert match, line
        rel = os.path.relpath(match[1], merged)
        assert any(_is_whiteout(layer / rel) for layer in lowers), line
    errors.unlink()
    return ref


def _is_whiteout(path: Path) -> bool:
    try:
        return is_whiteout(os.lstat(path))
    except OSError:
        return False


def assert_same_tree(got: dict[str, Info], want: dict[str, Info]) -> None:
    assert sorted(got) == sorted(want)
    for path, info in want.items():
        assert got[path] == info, path


def assert_clean(root: Path) -> None:
    """No whiteouts and no overlay xattrs anywhere in the layer `root`."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames, "."]:
            path = os.path.join(dirpath, name)
            assert not is_whiteout(os.lstat(path)), path
            names = os.listxattr(path, follow_symlinks=False)
            assert not [n for n in names if is_overlay_private_xattr(n)], path


def provider(lowers: list[Path], rel: str) -> Path:
    """The topmost layer that has `rel` (the stacks here have no symlinked dirs)."""
    return next(layer / rel for layer in lowers if os.path.lexists(layer / rel))


@needs_root
@pytest.mark.parametrize("name", list(STACKS))
def test_flatten_equals_merged_view(ws: Path, name: str) -> None:
    lowers = build_stack(ws / "layers", *STACKS[name])
    before = {str(layer): snapshot(layer) for layer in lowers}
    dest = ws / "flat"

    flatten(lowers, dest)

    assert_same_tree(snapshot(dest), snapshot(merged_copy(ws, lowers)))
    assert_clean(dest)
    assert [p.name for p in ws.iterdir() if p.name.startswith(".")] == []
    # Regular files are the layers' own inodes; the layers did not change.
    for dirpath, _dirs, files in os.walk(dest):
        for file in files:
            st = os.lstat(os.path.join(dirpath, file))
            if stat.S_ISREG(st.st_mode):
                rel = os.path.relpath(os.path.join(dirpath, file), dest)
                src = os.lstat(provider(lowers, rel))
                assert (st.st_dev, st.st_ino) == (src.st_dev, src.st_ino), rel
    assert {str(layer): snapshot(layer) for layer in lowers} == before


@needs_root
def test_flatten_keeps_hard_links_within_a_layer(ws: Path) -> None:
    lowers = build_stack(ws / "layers", *STACKS["files, whiteouts, opaque dirs, metadata"])
    flatten(lowers, ws / "flat")
    assert os.path.samefile(ws / "flat/bin/tool", ws / "flat/bin/tool-alias")


@needs_root
def test_flatten_copies_across_file_systems(ws: Path) -> None:
    if not os.path.isdir("/dev/shm") or os.stat("/dev/shm").st_dev == os.stat(ws).st_dev:
        pytest.skip("needs /dev/shm on another file system than the temp dir")
    lowers = build_stack(ws / "layers", *STACKS["files, whiteouts, opaque dirs, metadata"])
    with scratch("/dev/shm") as shm:
        dest = shm / "flat"
        flatten(lowers, dest)
        assert_same_tree(snapshot(dest), snapshot(merged_copy(ws, lowers)))
        conf = os.lstat(dest / "etc/conf")
        assert conf.st_ino != os.lstat(lowers[0] / "etc/conf").st_ino
        assert conf.st_nlink == 1


@needs_root
def test_flatten_drops_a_whiteout_the_kernel_lists_but_hides(ws: Path) -> None:
    # In a directory that only one layer has, the kernel's readdir shows a
    # whiteout (`ls` prints c?????????) while lookup says ENOENT.
    lowers = build_stack(
        ws / "layers", [("file", "a", "a")], [("file", "d/f", "f"), ("whiteout", "d/w")]
    )
    flatten(lowers, ws / "flat")
    assert os.listdir(ws / "flat/d") == ["f"]
    (ws / "merged").mkdir()
    in_mount_ns(
        'mount -t overlay overlay -o "lowerdir=$LOWER" "$MERGED"\n'
        'ls "$MERGED/d" | grep -qx w\n'
        '! stat "$MERGED/d/w" 2>/dev/null',
        LOWER=lowerdir(lowers),
        MERGED=str(ws / "merged"),
    )


# --- hostile layers ------------------------------------------------------------

# (id, stack top first, paths the result must have: path → "dir"/"file"/"link")
# "$OUT" in a link target is replaced by a directory outside the layers that
# holds one file, "passwd", which must stay as it is.
HOSTILE: list[tuple[str, list[Ops], dict[str, str]]] = [
    (
        "etc -> /etc below a real etc with passwd",
        [[("file", "etc/passwd", "evil\n")], [("link", "etc", "/etc")]],
        {"etc": "dir", "etc/passwd": "file"},
    ),
    (
        "etc -> /etc above files under etc",
        [[("link", "etc", "/etc")], [("file", "etc/passwd", "evil\n"), ("whiteout", "etc/x")]],
        {"etc": "link"},
    ),
    (
        "etc -> /etc below a whiteout of etc/passwd",
        [[("dir", "etc"), ("whiteout", "etc/passwd")], [("link", "etc", "/etc")], [("dir", "x")]],
        {"etc": "dir"},
    ),
    (
        "etc -> /etc below an opaque etc",
        [[("opaque", "etc"), ("file", "etc/shadow", "evil\n")], [("link", "etc", "/etc")]],
        {"etc": "dir", "etc/shadow": "file"},
    ),
    (
        "up -> ../../.. below files under up",
        [
            [("file", "up/escape", "evil\n")],
            [("file", "up/also", "evil\n")],
            [("link", "up", "../../..")],
        ],
        {"up": "dir", "up/escape": "file", "up/also": "file"},
    ),
    (
        "out -> an outside dir, between layers that write under it",
        [
            [("file", "out/passwd", "evil\n"), ("whiteout", "out/other")],
            [("link", "out", "$OUT")],
            [("file", "out/below", "below\n")],
        ],
        {"out": "dir", "out/passwd": "file"},
    ),
    (
        "out -> an outside dir on top, whiteouts and files below",
        [[("link", "out", "$OUT")], [("whiteout", "out/passwd")], [("file", "out/passwd", "x")]],
        {"out": "link"},
    ),
    (
        "an opaque xattr on a symlink is not copied",
        [[("link", "l", "$OUT"), ("xattr", "l", "trusted.overlay.opaque", b"y")], [("dir", "l")]],
        {"l": "link"},
    ),
]

_KINDS = {"dir": stat.S_IFDIR, "file": stat.S_IFREG, "link": stat.S_IFLNK}


def _host_etc() -> dict[str, tuple[int, ...]]:
    result = {}
    for path in ("/etc", "/etc/passwd", "/etc/shadow", "/etc/x"):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            result[path] = ()
            continue
        result[path] = (st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    return result


@needs_root
@pytest.mark.parametrize(
    ("stack", "expected"), [case[1:] for case in HOSTILE], ids=[case[0] for case in HOSTILE]
)
def test_flatten_hostile(ws: Path, stack: list[Ops], expected: dict[str, str]) -> None:
    outside = build(ws / "outside", ("file", "passwd", "outside\n"))
    stack = [[tuple(str(outside) if a == "$OUT" else a for a in op) for op in ops] for ops in stack]
    lowers = build_stack(ws / "layers", *stack)
    watched = {p: snapshot(p) for p in (outside, *lowers)}
    etc = _host_etc()

    flatten(lowers, ws / "flat")

    assert _host_etc() == etc
    assert {p: snapshot(p) for p in watched} == watched
    assert sorted(os.listdir(ws)) == ["flat", "layers", "outside"]
    got = snapshot(ws / "flat")
    for rel, kind in expected.items():
        assert got["/" + rel].type == _KINDS[kind], rel
    assert_clean(ws / "flat")
    assert_same_tree(got, snapshot(merged_copy(ws, lowers)))


# --- errors ----------------------------------------------------------------------


@needs_root
def test_flatten_refuses_existing_dest(ws: Path) -> None:
    lowers = build_stack(ws / "layers", [("file", "a", "a")])
    (ws / "flat").mkdir()
    with pytest.raises(StoreError, match="already exists"):
        flatten(lowers, ws / "flat")
    assert os.listdir(ws / "flat") == []


@needs_root
def test_flatten_bad_arguments(ws: Path) -> None:
    with pytest.raises(InvalidArgument):
        flatten([], ws / "flat")
    with pytest.raises(LayerNotFound):
        flatten([ws / "missing"], ws / "flat")
    with pytest.raises(StoreError):
        flatten([ws], ws / "no-parent" / "flat")
    assert sorted(os.listdir(ws)) == []


@needs_root
def test_flatten_failure_leaves_nothing(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lowers = build_stack(ws / "layers", [("file", "a", "a"), ("fifo", "z/pipe")])

    def no_space(*_args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(squash, "_make_special", no_space)
    with pytest.raises(StoreError, match="No space left"):
        flatten(lowers, ws / "flat")
    assert sorted(os.listdir(ws)) == ["layers"]
