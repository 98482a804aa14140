"""diff, commit, history, images, tag and rmi through the real CLI and real containers.

Also: every mistake a user can make on the command line ends in one clear line
on stderr, a non-zero status, and a store that is byte for byte as it was.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.units import human_size

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]


# -- helpers -------------------------------------------------------------------


def ok(result: subprocess.CompletedProcess[bytes]) -> str:
    """The stdout of a command that must have succeeded."""
    assert result.returncode == 0, (result.args, result.stdout, result.stderr)
    return result.stdout.decode()


def inspect(cli, ref: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return json.loads(ok(cli("inspect", ref)))[0]


def table_rows(text: str) -> list[list[str]]:
    """The data rows of a rich table printed by the CLI (columns: 2+ spaces apart)."""
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    return [re.split(r"\s{2,}", line) for line in lines[1:]]


def images_by_tag(cli) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """``repo:tag`` -> short image ID, from ``sandbox images``."""
    return {f"{row[0]}:{row[1]}": row[2] for row in table_rows(ok(cli("images")))}


def layer_dir(root: Path, layer_id: str) -> Path:
    return root / "layers" / layer_id


def content_size(path: Path) -> int:
    """Bytes of the regular files and symlinks under ``path`` (hard links once)."""
    seen: set[int] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            st = os.lstat(os.path.join(dirpath, name))
            if st.st_ino not in seen:
                seen.add(st.st_ino)
                total += st.st_size
    return total


def assert_history_matches_layers(image: dict[str, Any]) -> None:
    """OCI: one history entry without ``empty_layer`` per layer, in order."""
    filled = [h for h in image["History"] if not h.get("empty_layer")]
    assert len(filled) == len(image["SandboxLayers"]), image["History"]


def container_dir(root: Path, cli, name: str) -> Path:  # type: ignore[no-untyped-def]
    return root / "containers" / inspect(cli, name)["Id"]


def wait_running(cli, name: str, timeout: float = 10) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = cli("inspect", name)
        if result.returncode == 0 and json.loads(result.stdout)[0]["State"]["Running"]:
            return
        time.sleep(0.05)
    raise AssertionError(f"container {name} did not start")


# The setup image has /etc/vim holding only `old`, so the test does not depend on
# the host having vim-tiny (whose vimrc.tiny the base image would carry).
SETUP = "rm -rf /etc/vim && mkdir /etc/vim && echo old > /etc/vim/old"
CHANGES = (
    "echo new > /added; echo '# changed' >> /etc/profile; chmod 700 /usr/bin/tac; "
    "rm /usr/bin/rev; rm -rf /etc/vim && mkdir /etc/vim && touch /etc/vim/new; "
    "mkdir /lab && touch '/lab/[red]x'"
)
EXPECTED_DIFF = [
    "A /added",
    "C /etc",
    "C /etc/profile",
    "C /etc/vim",  # removed and made again: an opaque directory in the upper dir
    "A /etc/vim/new",
    "D /etc/vim/old",  # hidden by the opaque directory
    "A /lab",
    "A /lab/[red]x",  # printed as is, not read as rich markup
    "C /usr",
    "C /usr/bin",
    "D /usr/bin/rev",  # a whiteout
    "C /usr/bin/tac",
]


# -- diff, commit, history ----------------------------------------------------------


def test_diff_commit_history_and_the_committed_image(cli, root: Path) -> None:  # type: ignore[no-untyped-def]
    ok(cli("run", "--name", "ti-setup", "base", "bash", "-c", SETUP))
    ok(cli("commit", "ti-setup", "ti-setup:1"))
    ok(cli("rm", "ti-setup"))
    ok(cli("run", "--name", "ti-diff", "ti-setup:1", "bash", "-c", CHANGES))
    try:
        assert ok(cli("diff", "ti-diff")).splitlines() == EXPECTED_DIFF

        # The commit renames the upper dir into the store: same inode, no copy.
        upper = container_dir(root, cli, "ti-diff") / "upper"
        before = os.stat(upper)
        image_id = ok(cli("commit", "-m", "cell 2", "ti-diff", "ti-diff:1")).strip()
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", image_id)
        image = inspect(cli, "ti-diff:1")
        assert image["Id"] == image_id
        parent = inspect(cli, "ti-setup:1")
        assert image["SandboxLayers"][:-1] == parent["SandboxLayers"]
        new_layer = image["SandboxLayers"][-1]
        after = os.stat(layer_dir(root, new_layer))
        assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)
        assert os.stat(upper).st_ino != before.st_ino  # a fresh, empty upper dir
        assert os.listdir(upper) == []
        assert_history_matches_layers(image)
        assert image["History"][-1]["created_by"] == shlex.join(["bash", "-c", CHANGES])
        assert image["History"][-1]["comment"] == "cell 2"
        assert "empty_layer" not in image["History"][-1]

        # A container of the new image sees the changes, and not the deleted file.
        seen = ok(cli("run", "--rm", "ti-diff:1", "bash", "-c",
                      "cat /added; tail -n1 /etc/profile; ls -A /etc/vim; "
                      "stat -c %a /usr/bin/tac; ls /lab; "
                      "test -e /usr/bin/rev || echo rev-gone"))  # fmt: skip
        assert seen.splitlines() == ["new", "# changed", "new", "700", "[red]x", "rev-gone"]

        # history: newest first, what made each layer and its size.
        meta = json.loads((root / "layers" / f"{new_layer}.json").read_text())
        assert meta["size"] == content_size(layer_dir(root, new_layer)) > 0
        rows = table_rows(ok(cli("history", "--no-trunc", "ti-diff:1")))
        assert len(rows) == len(image["History"]) == 3
        newest, middle, oldest = rows
        assert newest[0] == image["Id"].removeprefix("sha256:")[:12]
        assert newest[2].startswith("bash -c 'echo new > /added;")
        assert newest[3] == human_size(meta["size"])
        assert newest[4] == "cell 2"
        assert middle[0] == oldest[0] == "<missing>"
        assert middle[2] == f"bash -c '{SETUP}'"
        assert oldest[2].startswith("sandbox: base image from this host")
        base_layer = json.loads((root / "layers" / f"{image['SandboxLayers'][0]}.json")
                                .read_text())  # fmt: skip
        assert oldest[3] == human_size(base_layer["size"])
        # The truncated form fits a terminal.
        short = table_rows(ok(cli("history", "ti-diff:1")))
        assert len(short[0][2]) <= 45 and short[0][2].endswith("…")

        # The same container committed again: it changed nothing since, so the
        # image gets one empty_layer entry on top of everything committed before.
        ok(cli("commit", "ti-diff", "ti-diff:2"))
        again = inspect(cli, "ti-diff:2")
        assert again["SandboxLayers"] == image["SandboxLayers"]
        assert again["History"][:-1] == image["History"]
        assert again["History"][-1]["empty_layer"] is True
        assert_history_matches_layers(again)
    finally:
        cli("rm", "-f", "ti-diff")
        cli("rmi", "ti-diff:2", "ti-diff:1", "ti-setup:1")


def test_a_container_that_changed_nothing_commits_an_empty_layer(cli, root: Path) -> None:  # type: ignore[no-untyped-def]
    layers_before = sorted(os.listdir(root / "layers"))
    ok(cli("run", "--name", "ti-empty", "base", "bash", "-c", "cat /etc/profile >/dev/null"))
    try:
        assert ok(cli("diff", "ti-empty")) == ""
        ok(cli("commit", "ti-empty", "ti-empty:1"))
        base, image = inspect(cli, "base"), inspect(cli, "ti-empty:1")
        assert image["SandboxLayers"] == base["SandboxLayers"]
        assert image["History"][:-1] == base["History"]
        entry = image["History"][-1]
        assert entry["empty_layer"] is True
        assert entry["created_by"] == "bash -c 'cat /etc/profile >/dev/null'"
        assert sorted(os.listdir(root / "layers")) == layers_before  # no layer made
        newest = table_rows(ok(cli("history", "ti-empty:1")))[0]
        assert newest[3] == "0B"
        assert_history_matches_layers(image)
    finally:
        cli("rm", "-f", "ti-empty")
        cli("rmi", "ti-empty:1")


def test_committing_a_running_container_is_refused(cli, root: Path) -> None:  # type: ignore[no-untyped-def]
    env = {**os.environ, "SANDBOX_ROOT": str(root), "NO_COLOR": "1"}
    exe = str(Path(sys.executable).with_name("sandbox"))
    proc = subprocess.Popen([exe, "run", "--name", "ti-busy", "base", "bash", "-c",
                             "touch /x; sleep 30"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_running(cli, "ti-busy")
        layers_before = sorted(os.listdir(root / "layers"))
        result = cli("commit", "ti-busy", "ti-busy:1")
        assert result.returncode != 0
        lines = result.stderr.decode().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith("sandbox: You cannot commit the running container ti-busy")
        assert cli("inspect", "ti-busy:1").returncode != 0
        assert sorted(os.listdir(root / "layers")) == layers_before
    finally:
        cli("kill", "ti-busy")
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()  # the next command reconciles what it leaves
            proc.wait()
        ok(cli("rm", "-f", "ti-busy"))


# -- images, tag, rmi ----------------------------------------------------------------


def test_images_tag_and_rmi_untag_then_delete_and_collect_layers(cli, root: Path) -> None:  # type: ignore[no-untyped-def]
    def commit_image(name: str, script: str) -> dict[str, Any]:
        ok(cli("run", "--name", name, "base", "bash", "-c", script))
        ok(cli("commit", name, f"{name}:1"))
        ok(cli("rm", name))
        return inspect(cli, f"{name}:1")

    image = commit_image("ti-gc", "echo data > /data")
    image_id = image["Id"].removeprefix("sha256:")
    layer = image["SandboxLayers"][-1]
    assert layer_dir(root, layer).is_dir()

    listed = images_by_tag(cli)
    assert listed["ti-gc:1"] == image_id[:12]
    assert listed["base:latest"] == inspect(cli, "base")["Id"].removeprefix("sha256:")[:12]

    # tag: a second name for the same image, listed on its own row.
    ok(cli("tag", "ti-gc:1", "ti-gc-alias:v2"))
    listed = images_by_tag(cli)
    assert listed["ti-gc-alias:v2"] == listed["ti-gc:1"] == image_id[:12]
    assert sorted(inspect(cli, image_id[:12])["RepoTags"]) == ["ti-gc-alias:v2", "ti-gc:1"]
    refs = json.loads((root / "refs.json").read_text())
    assert refs["ti-gc-alias:v2"] == refs["ti-gc:1"] == image_id

    ok(cli("create", "--name", "ti-user", "ti-gc:1", "cat", "/data"))
    try:
        # Removing one of two tags deletes nothing, so the container does not mind.
        assert ok(cli("rmi", "ti-gc-alias:v2")).splitlines() == ["Untagged: ti-gc-alias:v2"]
        assert "ti-gc-alias:v2" not in images_by_tag(cli)
        # The last tag would delete the image: refused while a container uses it...
        before = sorted(os.listdir(root / "images")), (root / "refs.json").read_bytes()
        refused = cli("rmi", "ti-gc:1")
        assert refused.returncode != 0
        err = refused.stderr.decode().splitlines()
        assert len(err) == 1 and "ti-gc:1" in err[0] and "--force" in err[0], err
        assert (sorted(os.listdir(root / "images")), (root / "refs.json").read_bytes()) == before
        # ...unless --force; the container's layers stay, so it still runs.
        forced = ok(cli("rmi", "--force", "ti-gc:1")).splitlines()
        assert forced == ["Untagged: ti-gc:1", f"Deleted: sha256:{image_id}"]
        assert cli("inspect", image_id[:12]).returncode != 0
        assert layer_dir(root, layer).is_dir()
        assert ok(cli("start", "ti-user")) == "data\n"
    finally:
        ok(cli("rm", "ti-user"))

    # rmi of an image's last tag deletes it and collects every unused layer
    # (the forced one's too, now that its container is gone); base's stay.
    other = commit_image("ti-gc2", "echo more > /more")
    other_layer = other["SandboxLayers"][-1]
    out = ok(cli("rmi", "ti-gc2:1")).splitlines()
    assert out == ["Untagged: ti-gc2:1", f"Deleted: {other['Id']}"]
    assert "ti-gc2:1" not in images_by_tag(cli)
    for gone in (layer, other_layer):
        assert not layer_dir(root, gone).exists()
        assert not (root / "layers" / f"{gone}.json").exists()
    for kept in image["SandboxLayers"][:-1]:
        assert layer_dir(root, kept).is_dir()
    ok(cli("run", "--rm", "base", "true"))


# -- bad input -------------------------------------------------------------------


def store_listing(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under the store (nothing excluded): its mode, size and mtime."""
    listing: dict[str, tuple[int, int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames]:
            path = os.path.normpath(os.path.join(dirpath, name))
            st = os.lstat(path)
            listing[os.path.relpath(path, root)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return listing


@pytest.fixture(scope="module")
def changed_container(session_root: Path) -> Iterator[str]:
    """A stopped container with changes in its upper dir (a commit would move them)."""
    env = {**os.environ, "SANDBOX_ROOT": str(session_root)}
    exe = str(Path(sys.executable).with_name("sandbox"))
    subprocess.run([exe, "run", "--name", "ti-bad", "base", "bash", "-c", "echo x > /x"],
                   env=env, check=True, capture_output=True)  # fmt: skip
    yield "ti-bad"
    subprocess.run([exe, "rm", "-f", "ti-bad"], env=env, check=False, capture_output=True)


BAD_INPUT = {
    "unknown image": (["run", "--rm", "no-such-image:1", "true"], "No such image: no-such-image:1"),
    "malformed limit": (["run", "--rm", "--memory", "lots", "base", "true"], "--memory"),
    "a limit the host cannot enforce": (["run", "--rm", "--cpus", "64", "base", "true"], "--cpus"),
    "environment without a name": (["run", "--rm", "-e", "=x", "base", "true"], "'=x'"),
    "relative working directory": (["run", "--rm", "-w", "rel", "base", "true"], "absolute path"),
    "invalid image name for commit": (["commit", "ti-bad", "Bad:Name"], "Bad:Name"),
    "commit of an unknown container": (["commit", "no-such-ctr", "ok:1"], "no-such-ctr"),
    "tag with an invalid name": (["tag", "base", "Bad"], "'Bad'"),
    "rmi of an unknown image": (["rmi", "no-such-image"], "No such image: no-such-image"),
    "history of an unknown image": (["history", "no-such-image"], "no-such-image"),
    "rm of an unknown container": (["rm", "no-such-ctr"], "No such container: no-such-ctr"),
    "diff of an unknown container": (["diff", "no-such-ctr"], "No such container: no-such-ctr"),
    "logs of an unknown container": (["logs", "no-such-ctr"], "No such container: no-such-ctr"),
    "inspect of an unknown object": (["inspect", "no-such-ctr"], "no-such-ctr"),
}


@pytest.mark.parametrize("case", BAD_INPUT, ids=list(BAD_INPUT))
def test_bad_input_gives_one_clear_line_and_leaves_the_store_unchanged(
    cli, root: Path, changed_container: str, case: str
) -> None:  # type: ignore[no-untyped-def]
    args, needle = BAD_INPUT[case]
    before = store_listing(root)
    result = cli(*args)
    assert result.returncode != 0
    assert result.stdout == b""
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("sandbox: ") and needle in lines[0], lines
    assert store_listing(root) == before


def test_a_missing_image_argument_is_a_usage_error(cli, root: Path) -> None:  # type: ignore[no-untyped-def]
    before = store_listing(root)
    result = cli("run")
    assert result.returncode == 2
    assert result.stdout == b""
    assert "Missing argument 'IMAGE'" in result.stderr.decode().splitlines()[-1]
    assert store_listing(root) == before


def test_a_command_not_in_the_image_leaves_no_container(cli, root: Path) -> None:  # type: ignore[no-untyped-def]
    before = store_listing(root)
    result = cli("run", "--rm", "base", "no-such-command")
    assert result.returncode == 127
    assert result.stderr.decode().splitlines() == ["sandbox: no-such-command: command not found"]
    # The container was made and removed: the same paths, sizes and files remain
    # (the directories that held it have a new mtime).
    after = store_listing(root)
    assert after.keys() == before.keys()
    for path, (mode, size, mtime) in after.items():
        if not os.path.isdir(root / path):
            assert (mode, size, mtime) == before[path], path
