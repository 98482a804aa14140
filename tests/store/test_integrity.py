"""The store stays whole: deep stacks, SIGKILL at any point, two processes at once.

What "whole" means is one function, `check_store`: every reference, image,
layer and container is complete and refers only to things that exist, and no
temporary file or directory of a dead process is left. It is checked after the
next `sandbox` command has run, since that command reconciles what a crashed
one left behind.

The CLI is a client: the process that writes the store is the daemon, so the
crash that matters is the daemon's. The SIGKILL tests kill ``sandboxd`` in the
middle of a commit, an ``rm`` or a base image build (the next ``sandbox``
command starts a new daemon, which reconciles the store first), and kill a
``sandbox run`` client to check that its container does not outlive it.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sandbox.engine import Engine
from sandbox.engine.core import MAX_DEPTH
from sandbox.runtime.rootfs import overlay_data
from sandbox.runtime.spec import RootfsSpec

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

SANDBOX = str(Path(sys.executable).with_name("sandbox"))
LEFTOVER = re.compile(r"^\.(tmp|new|rm|commit)-|\.flatten-")


def sandbox(root: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "SANDBOX_ROOT": str(root), "NO_COLOR": "1"}
    return subprocess.run([SANDBOX, *args], env=env, capture_output=True, timeout=timeout)


def ok(result: subprocess.CompletedProcess[bytes]) -> str:
    assert result.returncode == 0, (result.args, result.stdout, result.stderr)
    return result.stdout.decode()


def popen(root: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SANDBOX_ROOT": str(root), "NO_COLOR": "1"}
    return subprocess.Popen([SANDBOX, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip


def inspect(root: Path, ref: str) -> dict[str, Any]:
    return json.loads(ok(sandbox(root, "inspect", ref)))[0]


def sandbox_cgroups(cid: str) -> list[Path]:
    return [p for p in Path("/sys/fs/cgroup").glob(f"**/sandbox/{cid}") if p.is_dir()]


def check_store(root: Path) -> dict[str, Any]:
    """Assert that the store at `root` is whole; return refs, images and containers."""
    problems: list[str] = []
    layers_dir = root / "layers"
    layer_ids = {p.name[:-5] for p in layers_dir.glob("*.json")}
    for entry in layers_dir.iterdir():
        if entry.name.endswith(".json"):
            json.loads(entry.read_text())
            if not (layers_dir / entry.name[:-5]).is_dir():
                problems.append(f"layer metadata without a directory: {entry.name}")
        elif entry.name not in layer_ids:
            problems.append(f"layer directory without metadata: {entry.name}")

    def need_layer(owner: str, layer_id: str) -> None:
        if layer_id not in layer_ids:
            problems.append(f"{owner} refers to the missing layer {layer_id}")

    refs = json.loads((root / "refs.json").read_text()) if (root / "refs.json").exists() else {}
    images: dict[str, Any] = {}
    for path in (root / "images").iterdir():
        if LEFTOVER.search(path.name):
            continue  # reported below
        image = json.loads(path.read_text())
        images[path.name[:-5]] = image
        for layer_id in image["layers"]:
            need_layer(f"image {path.name[:12]}", layer_id)
        filled = [h for h in image["config"]["history"] if not h.get("empty_layer")]
        if len(filled) != len(image["layers"]):
            problems.append(f"image {path.name[:12]}: history does not match its layers")
    for ref, image_id in refs.items():
        if image_id not in images:
            problems.append(f"tag {ref} points to the missing image {image_id[:12]}")

    containers: dict[str, Any] = {}
    for path in (root / "containers").iterdir():
        if path.name.startswith("."):
            continue
        record = json.loads((path / "state.json").read_text())
        containers[path.name] = record
        for layer_id in record["layers"] + record["committed_layers"]:
            need_layer(f"container {path.name[:12]}", layer_id)
        if not (path / "upper").is_dir() or not (path / "work").is_dir():
            problems.append(f"container {path.name[:12]} lacks its upper or work dir")
        made = [h for h in record.get("committed_history", []) if not h.get("empty_layer")]
        if len(made) != len(record["committed_layers"]):
            problems.append(f"container {path.name[:12]}: commit history does not match")
        if record["state"] == "running":
            problems.append(f"container {path.name[:12]} is still marked running")
        if (root / "names" / record["name"]).is_symlink():
            if os.readlink(root / "names" / record["name"]) != path.name:
                problems.append(f"the name {record['name']} belongs to another container")
        else:
            problems.append(f"container {path.name[:12]} lost its name {record['name']}")
    for name in (root / "names").iterdir():
        if os.readlink(name) not in containers:
            problems.append(f"the name {name.name} points to no container")

    for parent in [root, layers_dir, root / "images", root / "containers", root / "running",
                   root / "names", *[root / "containers" / c for c in containers]]:  # fmt: skip
        problems += [f"leftover {p}" for p in parent.iterdir() if LEFTOVER.search(p.name)]
    problems += [f"leftover {p}" for p in (root / "tmp").iterdir()]
    problems += [f"leftover marker {p}" for p in (root / "running").iterdir()]
    for cid in containers:
        problems += [f"leftover cgroup {p}" for p in sandbox_cgroups(cid)]
    assert not problems, "\n".join(problems)
    return {"refs": refs, "images": images, "containers": containers}


# -- deep stacks -------------------------------------------------------------------

CHAIN = 300


def test_a_chain_of_300_commits_still_runs(fresh_root: Path) -> None:
    """Each container appends a line to /chain and creates /f<i>, then is committed.

    Early layers delete /usr/bin/rev and add /gone, a later one deletes /gone:
    the whiteouts must survive the squashes that keep the stack under MAX_DEPTH.
    """
    engine = Engine(fresh_root)
    engine.ensure_base()
    page = os.sysconf("SC_PAGE_SIZE")
    stats = {"depth": 0, "option": 0, "commit": 0.0, "slowest": 0.0}

    def script(i: int) -> str:
        extra = {3: "rm /usr/bin/rev", 5: "echo x > /gone", 150: "rm /gone"}.get(i, "true")
        return f"echo {i} >> /chain; touch /f{i}; {extra}"

    async def chain() -> str:
        image = "base"
        for i in range(CHAIN):
            record = engine.create(image, ["bash", "-c", script(i)])
            path = engine.store.containers.path(record.id)
            spec = RootfsSpec(layers_dir=str(engine.store.layers.dir),
                              lowers=list(reversed(record.layers)), upper=str(path / "upper"),
                              work=str(path / "work"), merged=str(path / "merged"))  # fmt: skip
            stats["depth"] = max(stats["depth"], len(record.layers))
            stats["option"] = max(stats["option"], len(overlay_data(spec)))
            status = await engine.start(record.id).exited
            assert status == 0, engine.store.containers.load(record.id).error
            t0 = time.perf_counter()
            committed = engine.commit(record.id, "chain:latest" if i == CHAIN - 1 else None)
            took = time.perf_counter() - t0
            stats["commit"] += took
            stats["slowest"] = max(stats["slowest"], took)
            engine.remove(record.id)
            # An untagged intermediate image goes once the next one exists (as a
            # notebook session keeps only its current image).
            if image != "base":
                engine.store.images.delete(engine.store.images.resolve(image).id)
            image = committed.id
            assert len(committed.layers) <= MAX_DEPTH
        return image

    started = time.perf_counter()
    final = asyncio.run(chain())
    elapsed = time.perf_counter() - started
    print(f"\n{CHAIN} run+commit cycles in {elapsed:.1f} s ({elapsed / CHAIN * 1000:.0f} ms "
          f"each); commit alone {stats['commit'] / CHAIN * 1000:.1f} ms on average, slowest "
          f"(a squash) {stats['slowest'] * 1000:.0f} ms; deepest stack {stats['depth']} "
          f"layers, longest overlay options {stats['option']} bytes")  # fmt: skip

    image = inspect(fresh_root, "chain:latest")
    assert image["Id"] == f"sha256:{final}"
    assert stats["depth"] == MAX_DEPTH  # it grew to the limit, then was squashed
    assert len(image["SandboxLayers"]) <= MAX_DEPTH
    assert stats["option"] < page
    assert len(image["History"]) >= CHAIN + 1
    rows = [line for line in ok(sandbox(fresh_root, "history", "chain:latest")).splitlines()[1:]
            if line.strip()]  # fmt: skip
    assert len(rows) == len(image["History"])
    assert "layers squashed" in ok(sandbox(fresh_root, "history", "--no-trunc", "chain:latest"))

    check = (
        "cat /chain; ls / | grep -c '^f[0-9]'; "
        "for i in $(seq 0 299); do test -e /f$i || echo missing /f$i; done; "
        "test -e /usr/bin/rev && echo rev; test -e /gone && echo gone; true"
    )
    out = ok(sandbox(fresh_root, "run", "--rm", "chain:latest", "bash", "-c", check))
    lines = out.splitlines()
    assert lines[:CHAIN] == [str(i) for i in range(CHAIN)]
    assert lines[CHAIN:] == [str(CHAIN)]
    check_store(fresh_root)


# -- SIGKILL -------------------------------------------------------------------------


def wait_running(root: Path, name: str, proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        result = sandbox(root, "inspect", name)
        if result.returncode == 0:
            info = json.loads(result.stdout)[0]
            if info["State"]["Running"]:
                return info
        time.sleep(0.05)
    raise AssertionError(f"container {name} did not start")


@pytest.mark.parametrize("auto_remove", [False, True], ids=["keep", "rm"])
def test_sigkill_of_sandbox_run_is_cleaned_up_by_the_next_command(
    root: Path, auto_remove: bool
) -> None:
    name = f"ti-killed-{'rm' if auto_remove else 'keep'}"
    opts = ["--rm"] if auto_remove else []
    proc = popen(root, "run", *opts, "--name", name, "base", "sleep", "30")
    try:
        info = wait_running(root, name, proc)
    finally:
        proc.kill()
        proc.communicate()
    cid = info["Id"]
    assert sandbox_cgroups(cid)  # (the check below would prove nothing otherwise)

    listed = ok(sandbox(root, "ps", "-a"))

    assert sandbox_cgroups(cid) == []
    assert not (root / "running" / cid).exists()
    if auto_remove:
        assert name not in listed
        assert not (root / "containers" / cid).exists()
        assert not (root / "names" / name).exists()
    else:
        state = inspect(root, name)["State"]
        assert state["Status"] == "exited" and not state["Running"]
        assert state["ExitCode"] == 137
        assert "killed" in state["Error"]
        assert "Exited (137)" in listed
        ok(sandbox(root, "rm", name))
    check_store(root)


def daemon_pid(root: Path) -> int:
    """The PID of the sandboxd serving ``root`` (the last command started or used it)."""
    return int((root / "sandboxd.pid").read_text())


def kill_daemon(pid: int) -> None:
    """SIGKILL the daemon and wait until it is gone (its store lock is free then)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        signal.pidfd_send_signal(fd, signal.SIGKILL)
        select.select([fd], [], [], 30)
    except ProcessLookupError:
        pass
    finally:
        os.close(fd)


def mutating_syscalls(trace: str) -> list[tuple[str, int]]:
    """(syscall, invocation number) of each call in an strace log that changes the store."""
    counts: dict[str, int] = {}
    points = []
    for line in trace.splitlines():
        match = re.match(r"^([a-z0-9_]+)\(", line)
        if not match:
            continue
        name = match.group(1)
        counts[name] = counts.get(name, 0) + 1
        # Not the daemon's log lines (its stdout and stderr are its log).
        if "EEXIST" not in line and not line.startswith(("write(1,", "write(2,")):
            points.append((name, counts[name]))
    return points


# The calls that change the store. Not openat: how many files Python opens
# before the store is touched varies from run to run, so its invocation
# numbers are not stable; killing before an open(O_CREAT) leaves the same
# store as killing before the write that follows it, minus an empty file.
TRACED = "rename,renameat,renameat2,mkdir,mkdirat,unlink,unlinkat,rmdir,link,linkat,symlink,write"


def traced(root: Path, args: list[str], inject: str | None, log: Path) -> int:
    """Run `sandbox *args` with the daemon under strace, SIGKILLed at one syscall if `inject`.

    strace attaches to the running daemon just before the command and counts
    from there: the daemon is idle until the command's request comes, so the
    counts are those of the request. Returns the command's status.
    """
    ok(sandbox(root, "ps"))  # a daemon runs (a new one after a kill)
    pid = daemon_pid(root)
    cmd = ["strace", "-qq", "-o", str(log), "-e", f"trace={TRACED}", "-p", str(pid)]
    if inject:
        cmd += ["-e", f"inject={inject}"]
    tracer = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while "TracerPid:\t0\n" in Path(f"/proc/{pid}/status").read_text():
            assert tracer.poll() is None, tracer.communicate()
            assert time.monotonic() < deadline, "strace did not attach to sandboxd"
            time.sleep(0.01)
        result = sandbox(root, *args)
    finally:
        if tracer.poll() is None:
            tracer.send_signal(signal.SIGINT)  # detach: the daemon goes on
        tracer.communicate(timeout=30)
    if inject:
        kill_daemon(pid)  # (if the injection did not: the next command starts afresh)
    return result.returncode


def make_changed_container(root: Path, name: str) -> None:
    ok(sandbox(root, "run", "--name", name, "base", "bash", "-c",
               "echo kept > /kept; rm /usr/bin/rev"))  # fmt: skip


def assert_changes_kept(root: Path, image: str) -> None:
    out = ok(sandbox(root, "run", "--rm", image, "bash", "-c",
                     "cat /kept; test -e /usr/bin/rev || echo rev-gone"))  # fmt: skip
    assert out.split() == ["kept", "rev-gone"]


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (syscall injection)")
def test_sigkill_of_the_daemon_at_every_store_write_of_a_commit_loses_nothing(
    fresh_root: Path,
) -> None:
    """SIGKILL sandboxd just before each write of a commit, one run per write.

    Afterwards (once the next command has started a new daemon) the store is
    whole, and committing the container again gives an image with every
    change: the killed commit either happened or did not.
    """
    ok(sandbox(fresh_root, "image", "build-base"))
    make_changed_container(fresh_root, "dry")
    log = fresh_root.parent / f"{fresh_root.name}.strace"
    try:
        assert traced(fresh_root, ["commit", "dry", "dry:1"], None, log) == 0
        points = mutating_syscalls(log.read_text())
        ok(sandbox(fresh_root, "rm", "dry"))
        ok(sandbox(fresh_root, "rmi", "dry:1"))
        assert len([p for p in points if p[0] == "rename"]) >= 4  # state, upper, layer, image
        for n, (syscall, when) in enumerate(points):
            name = f"k{n}"
            make_changed_container(fresh_root, name)
            status = traced(fresh_root, ["commit", name, f"{name}:1"],
                            f"{syscall}:signal=KILL:when={when}", log)  # fmt: skip
            assert status != 0, f"not killed at {syscall} #{when}"
            ok(sandbox(fresh_root, "ps", "-a"))
            check_store(fresh_root)
            ok(sandbox(fresh_root, "commit", name, f"{name}:2"))
            assert_changes_kept(fresh_root, f"{name}:2")
            ok(sandbox(fresh_root, "rm", name))
            for ref in (f"{name}:1", f"{name}:2"):
                sandbox(fresh_root, "rmi", ref)
            check_store(fresh_root)
    finally:
        log.unlink(missing_ok=True)


def test_sigkill_of_the_daemon_at_random_moments_leaves_a_whole_store(fresh_root: Path) -> None:
    """Kill sandboxd during `image build-base`, `commit` and `rm` at random moments, 21 times."""
    rng = random.Random(int(os.environ.get("SANDBOX_TEST_SEED", "2")))
    started = time.monotonic()
    ok(sandbox(fresh_root, "image", "build-base"))
    # What a command costs before its request reaches the daemon (and after the
    # reply): the moments to aim at come after it.
    t0 = time.monotonic()
    ok(sandbox(fresh_root, "ps"))
    overhead = time.monotonic() - t0
    durations = {"image": time.monotonic() - started}
    killed = 0
    for i in range(21):
        op = ("image", "commit", "rm")[i % 3]
        name = f"r{i}"
        if op == "image":
            args = ["image", "build-base"]
        else:
            make_changed_container(fresh_root, name)
            args = ["commit", name, f"{name}:1"] if op == "commit" else ["rm", name]
        pid = daemon_pid(fresh_root)
        work = max(durations.get(op, 0.4) - overhead, 0.05)
        delay = overhead * 0.8 + rng.uniform(0, 1.2 * work)
        t0 = time.monotonic()
        proc = popen(fresh_root, *args)
        try:
            proc.wait(timeout=delay)
            durations[op] = time.monotonic() - t0  # it finished: aim inside it next time
        except subprocess.TimeoutExpired:
            kill_daemon(pid)
            killed += 1
        proc.communicate()

        ok(sandbox(fresh_root, "ps", "-a"))
        state = check_store(fresh_root)
        for image_id in state["images"]:
            ok(sandbox(fresh_root, "history", image_id))
        listed = ok(sandbox(fresh_root, "images"))
        assert "base" in listed or op == "image"
        if op == "commit":
            ok(sandbox(fresh_root, "commit", name, f"{name}:2"))
            assert_changes_kept(fresh_root, f"{name}:2")
        if op != "image":
            sandbox(fresh_root, "rm", name)
            for ref in (f"{name}:1", f"{name}:2"):
                sandbox(fresh_root, "rmi", ref)
        check_store(fresh_root)
    assert killed >= 10  # most runs were killed, not finished
    ok(sandbox(fresh_root, "run", "--rm", "base", "true"))


# -- two processes at once --------------------------------------------------------------


def test_concurrent_runs_commits_tags_and_rmis(root: Path) -> None:
    """8 `run --rm`, 4 `commit`, 4 `tag` and 2 `rmi` at once: all succeed, refs hold all."""
    for i in range(4):
        ok(sandbox(root, "run", "--name", f"ti-conc-{i}", "base", "bash", "-c",
                   f"echo {i} > /conc"))  # fmt: skip
    for i in range(2):
        ok(sandbox(root, "tag", "base", f"ti-conc-old:{i}"))
    ok(sandbox(root, "run", "--name", "ti-conc-gc", "base", "bash", "-c", "echo gc > /gc"))
    ok(sandbox(root, "commit", "ti-conc-gc", "ti-conc-gc:1"))
    ok(sandbox(root, "rm", "ti-conc-gc"))
    gc_layer = inspect(root, "ti-conc-gc:1")["SandboxLayers"][-1]

    jobs = [popen(root, "run", "--rm", "base", "true") for _ in range(8)]
    jobs += [popen(root, "commit", f"ti-conc-{i}", f"ti-conc:{i}") for i in range(4)]
    jobs += [popen(root, "tag", "base", f"ti-conc-tag:{i}") for i in range(4)]
    jobs += [popen(root, "rmi", "ti-conc-old:0"), popen(root, "rmi", "ti-conc-gc:1")]
    try:
        for job in jobs:
            out, err = job.communicate(timeout=60)
            assert job.returncode == 0, (job.args, out, err)
    finally:
        for job in jobs:
            if job.poll() is None:
                job.kill()
                job.communicate()

    state = check_store(root)
    refs = state["refs"]
    for i in range(4):
        assert refs[f"ti-conc-tag:{i}"] == refs["base:latest"]
        ok(sandbox(root, "rm", f"ti-conc-{i}"))
        assert ok(sandbox(root, "run", "--rm", f"ti-conc:{i}", "cat", "/conc")) == f"{i}\n"
    assert "ti-conc-old:0" not in refs and refs["ti-conc-old:1"] == refs["base:latest"]
    assert "ti-conc-gc:1" not in refs
    assert not (root / "layers" / gc_layer).exists()
    tags = [f"ti-conc:{i}" for i in range(4)] + [f"ti-conc-tag:{i}" for i in range(4)]
    ok(sandbox(root, "rmi", *tags, "ti-conc-old:1"))
    check_store(root)
