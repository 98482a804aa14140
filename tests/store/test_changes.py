"""scan_changes against real overlayfs sessions, with a naive tree diff as the oracle.

Each scenario mounts a three-layer stack with an upper dir (in a private mount
namespace), copies the merged view with ``cp -a``, runs shell commands in it,
copies it again, and checks that the upper-dir scan reports exactly what a
Docker-style naive diff of the two copies reports.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sandbox.errors import InvalidArgument, LayerNotFound
from sandbox.store.changes import Change, layer_usage, scan_changes
from sandbox.store.whiteouts import (
    OPAQUE_XATTR,
    TarMarker,
    is_opaque,
    is_overlay_private_xattr,
    is_whiteout,
    make_whiteout,
    parse_tar_member,
    set_opaque,
    to_tar_opaque,
    to_tar_whiteout,
)

from . import OVERLAY_OPTS, Info, build, build_stack, in_mount_ns, lowerdir, needs_root, scratch
from . import snapshot as take_snapshot

DEEP = "/".join(f"d{i}" for i in range(60))
FILE_TYPES = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink"}

# Top (L0) first. L0 whites out /etc/hidden and has an opaque /data hiding L2's
# /data/y; /etc/conf is in L1 and L2 (L1's wins); /opt/app merges L1 and L2.
STACK = (
    [
        ("file", "etc/motd", "hello\n"),
        ("whiteout", "etc/hidden"),
        ("opaque", "data"),
        ("file", "data/x", "x\n"),
        ("dir", "tmp", 0o1777),
    ],
    [
        ("file", "etc/conf", "conf v2\n"),
        ("file", "var/log/app.log", "log\n"),
        ("file", "opt/app/extra", "extra\n"),
    ],
    [
        ("file", "etc/conf", "conf v1\n"),
        ("file", "etc/other", "other\n"),
        ("file", "etc/gone", "bye\n"),
        ("file", "etc/hidden", "hidden by L0\n"),
        ("file", "data/y", "hidden by L0's opaque dir\n"),
        ("file", "opt/app/kept", "kept\n"),
        ("file", "opt/app/dropped", "dropped\n"),
        ("file", "opt/app/sub/f", "f\n"),
        ("file", "opt/app/sub/g", "g\n"),
        ("file", "srv/data/a", "a\n"),
        ("file", "srv/data/b/c", "c\n"),
        ("file", "bin/tool", "#!/bin/sh\n", 0o755),
        ("file", f"usr/share/{DEEP}/deep.txt", "deep\n"),
        ("file", "home/user/with space", "space\n"),
        ("file", "home/user/new\nline", "newline\n"),
        ("link", "lib/link", "../etc/conf"),
        ("dir", "tmp", 0o1777),
    ],
)


@dataclass
class Scenario:
    """Commands run in the merged view, and what to check beyond the oracle."""

    id: str
    script: str
    layers: dict[str, int | None] = field(default_factory=dict)  # path → expected .layer
    whiteouts: list[str] = field(default_factory=list)  # expected in the upper dir
    opaque: list[str] = field(default_factory=list)
    expect: list[tuple[str, str]] | None = None  # the whole answer, when it matters


SCENARIOS = [
    Scenario(
        "create",
        "echo new > newfile; mkdir -p newdir/a/b; echo f > newdir/a/b/f; mkfifo newdir/fifo",
        layers={"/newfile": None, "/newdir/a/b/f": None},
    ),
    Scenario(
        "modify",
        "echo more >> etc/conf",
        layers={"/etc/conf": 1, "/etc": 0},
        expect=[("C", "/etc"), ("C", "/etc/conf")],
    ),
    Scenario("chmod", "chmod 600 etc/other", layers={"/etc/other": 2}),
    Scenario("chown", "chown 1000:1000 bin/tool", layers={"/bin/tool": 2, "/bin": 2}),
    Scenario(
        "delete",
        "rm etc/gone",
        layers={"/etc/gone": 2},
        whiteouts=["etc/gone"],
        expect=[("C", "/etc"), ("D", "/etc/gone")],
    ),
    Scenario(
        "rm -rf and recreate (opaque dir)",
        "rm -rf opt/app; mkdir opt/app; echo x > opt/app/kept; mkdir opt/app/sub;"
        " echo f2 > opt/app/sub/f",
        layers={
            "/opt/app": 1,
            "/opt/app/kept": 2,
            "/opt/app/dropped": 2,
            "/opt/app/extra": 1,
            "/opt/app/sub": 2,
            "/opt/app/sub/g": 2,
        },
        opaque=["opt/app"],
        expect=[
            ("C", "/opt"),
            ("C", "/opt/app"),
            ("D", "/opt/app/dropped"),
            ("D", "/opt/app/extra"),
            ("C", "/opt/app/kept"),
            ("C", "/opt/app/sub"),
            ("C", "/opt/app/sub/f"),
            ("D", "/opt/app/sub/g"),
        ],
    ),
    Scenario("rm -rf a lower dir", "rm -rf srv/data", layers={"/srv/data": 2}),
    Scenario(
        "rename a lower file",
        "mv etc/other etc/renamed",
        layers={"/etc/other": 2, "/etc/renamed": None},
        whiteouts=["etc/other"],
    ),
    Scenario(
        "rename a lower dir (copied up whole)",
        "mv srv/data srv/moved",
        layers={"/srv/data": 2, "/srv/moved/b/c": None},
        whiteouts=["srv/data"],
    ),
    Scenario(
        "create and delete in one session",
        "touch tmp/t; rm tmp/t; mkdir etc/x; rmdir etc/x; touch etc",
        expect=[],
    ),
    Scenario(
        "copy-ups that change nothing",
        "chmod 644 etc/conf; chown 0:0 etc/other; sh -c ': >> etc/gone'",
        expect=[],
    ),
    Scenario(
        "hard links",
        "ln etc/conf etc/conf.hard; echo n > new; ln new new.hard",
        layers={"/etc/conf.hard": None},
    ),
    Scenario(
        "symlinks",
        "ln -s /etc/conf abs-link; ln -sfn ../etc/other lib/link; ln -s nowhere dangling",
        layers={"/lib/link": 2},
    ),
    Scenario(
        "deep paths",
        f"echo more >> usr/share/{DEEP}/deep.txt; mkdir -p newtree/{DEEP}; touch newtree/{DEEP}/f",
        layers={f"/usr/share/{DEEP}/deep.txt": 2, f"/usr/share/{DEEP}": 2},
    ),
    Scenario(
        "names with spaces and newlines",
        "echo more >> 'home/user/with space'; rm \"home/user/$(printf 'new\\nline')\";"
        " touch \"home/user/$(printf 'a\\nb c')\"",
        layers={"/home/user/with space": 2, "/home/user/new\nline": 2},
    ),
    Scenario(
        "recreate a name a lower whiteout hides",
        "echo back > etc/hidden; echo y > data/y",
        layers={"/etc/hidden": None, "/data/y": None},
        expect=[("C", "/data"), ("A", "/data/y"), ("C", "/etc"), ("A", "/etc/hidden")],
    ),
    Scenario(
        "delete in a lower opaque dir",
        "rm data/x",
        layers={"/data/x": 0},
        expect=[("C", "/data"), ("D", "/data/x")],
    ),
    Scenario(
        "file replaced by a dir and dir by a file",
        "rm etc/motd; mkdir etc/motd; echo x > etc/motd/x; rm -rf var/log; echo l > var/log",
        layers={"/etc/motd": 0, "/etc/motd/x": None, "/var/log": 1},
    ),
]


@pytest.fixture
def ws() -> Iterator[Path]:
    with scratch() as path:
        yield path


def _session(ws: Path, lowers: list[Path], script: str) -> tuple[Path, Path, Path]:
    """Run `script` in an overlay of `lowers`; return (upper, before copy, after copy)."""
    dirs = {name: ws / name for name in ("upper", "work", "merged", "before", "after")}
    for path in dirs.values():
        path.mkdir()
    in_mount_ns(
        f"""
        mount -t overlay overlay -o "lowerdir=$LOWER,upperdir=$UPPER,workdir=$WORK,{OVERLAY_OPTS}" \
            "$MERGED"
        cp -a "$MERGED/." "$BEFORE/"
        cd "$MERGED"
        {script}
        cd /
        cp -a "$MERGED/." "$AFTER/"
        """,
        LOWER=lowerdir(lowers),
        **{name.upper(): str(path) for name, path in dirs.items()},
    )
    return dirs["upper"], dirs["before"], dirs["after"]


def naive_diff(before: dict[str, Info], after: dict[str, Info]) -> set[tuple[str, str, bool]]:
    """Docker's ChangesDirs on two snapshots: (kind, path, is_dir) triples."""
    isdir = stat.S_IFDIR
    changes: set[tuple[str, str, bool]] = set()
    for path, new in after.items():
        old = before.get(path)
        if path == "/":
            continue
        if old is None:
            changes.add(("A", path, new.type == isdir))
        elif (old.type, old.mode, old.uid, old.gid, old.rdev) != (
            new.type,
            new.mode,
            new.uid,
            new.gid,
            new.rdev,
        ) or (
            old.type != isdir
            and (old.size, old.mtime_ns, old.target) != (new.size, new.mtime_ns, new.target)
        ):
            changes.add(("C", path, new.type == isdir))
    for path, old in before.items():
        parent = posixpath.dirname(path)
        if (
            path not in after
            and parent in after
            and after[parent].type == isdir
            and before[parent].type == isdir
        ):
            changes.add(("D", path, old.type == isdir))
    for _kind, path, _is_dir in list(changes):
        parent = posixpath.dirname(path)
        while parent != "/" and parent in before:
            if ("A", parent, True) not in changes:
                changes.add(("C", parent, True))
            parent = posixpath.dirname(parent)
    return changes


@needs_root
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_scan_agrees_with_naive_diff(ws: Path, scenario: Scenario) -> None:
    lowers = build_stack(ws / "layers", *STACK)
    upper, before, after = _session(ws, lowers, scenario.script)
    for rel in scenario.whiteouts:
        assert is_whiteout(os.lstat(upper / rel)), f"expected a whiteout at {rel}"
    for rel in scenario.opaque:
        assert is_opaque(upper / rel), f"expected an opaque dir at {rel}"

    changes = scan_changes(upper, lowers)
    after_snap = take_snapshot(after)

    assert {(c.kind, c.path, c.is_dir) for c in changes} == naive_diff(
        take_snapshot(before), after_snap
    )
    assert [c.path for c in changes] == sorted(
        (c.path for c in changes), key=lambda p: p.split("/")
    )
    assert len({c.path for c in changes}) == len(changes)
    if scenario.expect is not None:
        assert [(c.kind, c.path) for c in changes] == scenario.expect
    by_path = {c.path: c for c in changes}
    for path, layer in scenario.layers.items():
        assert by_path[path].layer == layer, path
    before_snap = take_snapshot(before)
    for c in changes:
        assert (c.layer is None) == (c.kind == "A"), c
        expected_size = 0 if c.kind == "D" or c.is_dir else after_snap[c.path].size
        if c.kind != "D" and after_snap[c.path].type not in (stat.S_IFREG, stat.S_IFLNK):
            expected_size = 0
        assert c.size == expected_size, c
        snap = before_snap if c.kind == "D" else after_snap
        assert c.file_type == FILE_TYPES.get(snap[c.path].type, "other"), c
        assert c.opaque == (c.path.lstrip("/") in scenario.opaque), c


@needs_root
def test_all_scenarios_in_one_session(ws: Path) -> None:
    lowers = build_stack(ws / "layers", *STACK)
    script = "\n".join(s.script for s in SCENARIOS if not s.id.startswith(("rm -rf a", "rename a")))
    upper, before, after = _session(ws, lowers, script)
    changes = scan_changes(upper, lowers)
    assert {(c.kind, c.path, c.is_dir) for c in changes} == naive_diff(
        take_snapshot(before), take_snapshot(after)
    )


def test_docker_kind_and_fields() -> None:
    kinds = ("C", "A", "D")
    assert [Change("/a", k, False, 0, None, "file").docker_kind for k in kinds] == [0, 1, 2]
    assert Change("/a", "A", False, 0, None, "file").opaque is False
    with pytest.raises(AttributeError):
        Change("/a", "A", False, 0, None, "file").kind = "C"  # type: ignore[misc]


# --- hostile or odd upper dirs, built by hand --------------------------------

# (id, lowers top first, upper, expected (kind, path, layer) list)
HOSTILE = [
    (
        "whiteout of a name no lower has",
        [[("file", "etc/a", "a")]],
        [("dir", "etc"), ("whiteout", "etc/nothing"), ("whiteout", "nothing")],
        [],
    ),
    (
        "lower symlink etc -> /etc, upper dir with a whiteout under it",
        [[("link", "etc", "/etc")]],
        [("dir", "etc"), ("whiteout", "etc/passwd"), ("file", "etc/hosts", "x")],
        [("C", "/etc", 0), ("A", "/etc/hosts", None)],
    ),
    (
        "lower symlink to ../../.., upper file under it",
        [[("link", "up", "../../..")], [("file", "up/x", "below the symlink")]],
        [("opaque", "up"), ("file", "up/x", "new")],
        [("C", "/up", 0), ("A", "/up/x", None)],
    ),
    (
        "lower dir hidden by a higher symlink does not merge",
        [[("link", "d", "elsewhere")], [("file", "d/f", "f")]],
        [("dir", "d"), ("file", "d/f", "new")],
        [("C", "/d", 0), ("A", "/d/f", None)],
    ),
    (
        "whiteout in an upper opaque dir is not a second delete",
        [[("file", "d/f", "f")]],
        [("opaque", "d"), ("whiteout", "d/f")],
        [("C", "/d", 0), ("D", "/d/f", 0)],
    ),
    (
        "lower opaque dir stops the merge below it",
        [[("opaque", "d"), ("file", "d/top", "t")], [("file", "d/hidden", "h")]],
        [("opaque", "d")],
        [("C", "/d", 0), ("D", "/d/top", 0)],
    ),
    (
        "user.overlay.opaque is data on a trusted mount",
        [[("file", "d/f", "f")]],
        [("dir", "d"), ("xattr", "d", "user.overlay.opaque", b"y"), ("file", "d/g", "g")],
        [("C", "/d", 0), ("A", "/d/g", None)],
    ),
]


@needs_root
@pytest.mark.parametrize(
    ("lowers_ops", "upper_ops", "expected"),
    [case[1:] for case in HOSTILE],
    ids=[case[0] for case in HOSTILE],
)
def test_scan_hostile(
    ws: Path,
    lowers_ops: list[list[tuple[object, ...]]],
    upper_ops: list[tuple[object, ...]],
    expected: list[tuple[str, str, int | None]],
) -> None:
    lowers = build_stack(ws / "layers", *lowers_ops)
    upper = build(ws / "upper", *upper_ops)
    etc = os.lstat("/etc/passwd")
    assert [(c.kind, c.path, c.layer) for c in scan_changes(upper, lowers)] == expected
    assert os.lstat("/etc/passwd") == etc


@needs_root
def test_scan_userxattr_opaque(ws: Path) -> None:
    lowers = build_stack(ws / "layers", [("file", "d/f", "f")])
    upper = build(ws / "upper", ("dir", "d"), ("xattr", "d", "user.overlay.opaque", b"y"))
    assert [(c.kind, c.path) for c in scan_changes(upper, lowers, userxattr=True)] == [
        ("C", "/d"),
        ("D", "/d/f"),
    ]


@needs_root
def test_scan_without_lowers_lists_everything_added(ws: Path) -> None:
    upper = build(ws / "upper", ("file", "a/b", "b"), ("whiteout", "c"))
    assert [(c.kind, c.path) for c in scan_changes(upper, [])] == [("A", "/a"), ("A", "/a/b")]


@needs_root
def test_scan_missing_dirs(ws: Path) -> None:
    with pytest.raises(LayerNotFound):
        scan_changes(ws / "nope", [])
    with pytest.raises(LayerNotFound):
        scan_changes(ws, [ws / "nope"])


@needs_root
def test_layer_usage(ws: Path) -> None:
    layer = build(
        ws / "layer",
        ("file", "a", "12345"),
        ("hardlink", "a2", "a"),
        ("file", "d/b", "123"),
        ("link", "d/l", "target"),  # 6 bytes
        ("whiteout", "gone"),
        ("fifo", "p"),
        ("dir", "empty"),
    )
    assert layer_usage(layer) == (5 + 3 + 6, 6)
    with pytest.raises(LayerNotFound):
        layer_usage(ws / "nope")


# --- whiteouts ---------------------------------------------------------------


@needs_root
def test_whiteout_and_opaque_markers(ws: Path) -> None:
    make_whiteout(ws / "wh")
    assert is_whiteout(os.lstat(ws / "wh"))
    os.mknod(ws / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    assert not is_whiteout(os.lstat(ws / "null"))
    assert not is_whiteout(os.lstat(ws))
    (ws / "d").mkdir()
    assert not is_opaque(ws / "d")
    set_opaque(ws / "d")
    assert is_opaque(ws / "d") and not is_opaque(ws / "d", userxattr=True)
    os.setxattr(ws / "d", OPAQUE_XATTR, b"x")  # Linux 6.7: "has xwhiteouts", not opaque
    assert not is_opaque(ws / "d")
    (ws / "u").mkdir()
    set_opaque(ws / "u", userxattr=True)
    assert is_opaque(ws / "u", userxattr=True) and not is_opaque(ws / "u")
    os.symlink(ws / "d", ws / "link")
    assert not is_opaque(ws / "link")


@pytest.mark.parametrize(
    ("name", "private"),
    [
        ("trusted.overlay.opaque", True),
        ("trusted.overlay.redirect", True),
        ("trusted.overlay.origin", True),
        ("user.overlay.opaque", True),
        ("trusted.overlayfoo", False),
        ("user.mime_type", False),
        ("security.capability", False),
    ],
)
def test_overlay_private_xattrs(name: str, private: bool) -> None:
    assert is_overlay_private_xattr(name) is private


@pytest.mark.parametrize(
    ("member", "marker"),
    [
        ("etc/passwd", None),
        ("etc/.wh.passwd", TarMarker("whiteout", "etc/passwd")),
        ("./etc/.wh.passwd", TarMarker("whiteout", "./etc/passwd")),
        (".wh.top", TarMarker("whiteout", "top")),
        ("etc/.wh..wh..opq", TarMarker("opaque", "etc")),
        (".wh..wh..opq", TarMarker("opaque", "")),
        ("etc/.wh..wh.plnk", TarMarker("meta", "etc/.wh..wh.plnk")),
        ("etc/.wh.with space", TarMarker("whiteout", "etc/with space")),
        ("etc/.wh.dir/", TarMarker("whiteout", "etc/dir")),
        ("etc/x.wh.y", None),
    ],
)
def test_parse_tar_member(member: str, marker: TarMarker | None) -> None:
    assert parse_tar_member(member) == marker


@pytest.mark.parametrize("member", [".wh.", "etc/.wh.", "etc/.wh..", "etc/.wh...", "a/.wh.\0"])
def test_parse_tar_member_hostile(member: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_tar_member(member)


def test_tar_spelling() -> None:
    assert to_tar_whiteout("etc/passwd") == "etc/.wh.passwd"
    assert to_tar_whiteout("top") == ".wh.top"
    assert to_tar_opaque("etc") == "etc/.wh..wh..opq"
    assert to_tar_opaque("") == ".wh..wh..opq"
    for path in ("", "etc/..", "etc/.", "etc/.wh.x"):
        with pytest.raises(InvalidArgument):
            to_tar_whiteout(path)
    for path in ("etc/passwd", "a b/c\nd"):
        assert parse_tar_member(to_tar_whiteout(path)) == TarMarker("whiteout", path)
