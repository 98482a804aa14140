"""Restarts and crashes: the daemon's state lives in the store, and a restart finds it whole.

A daemon killed with SIGKILL takes its containers with it (their init has
PDEATHSIG), leaves its socket file and its running markers behind; the next
daemon on the store must start anyway, mark those containers exited with a
reason, drop the ``--rm`` ones, keep every image and layer, and leave no
process, cgroup or mount. A daemon stopped with SIGTERM stops its containers
gracefully first.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .helpers import (
    TEMP_PREFIX,
    Daemon,
    _cgroups_of,
    _processes_of,
    demux,
    joined,
    start_daemon,
    stop_daemon,
)

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def store_dir() -> Iterator[Path]:
    """A directory with a store holding the base image, for the module's daemons."""
    if os.geteuid() != 0:
        pytest.skip("needs root (the daemon runs containers)")
    tmp = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
    try:
        from sandbox.engine import Engine

        Engine(tmp / "root").ensure_base()
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def launch(store_dir: Path) -> Iterator[Callable[[], Daemon]]:
    """Start sandboxd on the module's store; whatever still runs at the end is stopped."""
    started: list[Daemon] = []

    def start() -> Daemon:
        daemon = start_daemon(store_dir, build_base=False)
        started.append(daemon)
        return daemon

    try:
        yield start
    finally:
        live = [d for d in started if d.proc.poll() is None]
        for daemon in live:
            stop_daemon(daemon)
        # The next test starts from an empty list of containers.
        if live:
            d = start()
            for c in d.request("GET", "/v1.44/containers/json?all=1").json():
                d.request("DELETE", f"/v1.44/containers/{c['Id']}?force=1")
            stop_daemon(d)


def run(d: Daemon, cmd: list[str], *, image: str = "base", **extra: Any) -> str:
    """Create, start and wait for a container that must succeed; returns its ID."""
    cid = d.create(cmd, **{"Image": image, **extra})
    assert d.request("POST", f"/v1.44/containers/{cid}/start").status == 204
    assert d.request("POST", f"/v1.44/containers/{cid}/wait").json()["StatusCode"] == 0
    return cid


def start(d: Daemon, cmd: list[str], **extra: Any) -> str:
    """Create and start a container that says ``up`` once it runs; returns its ID."""
    cid = d.create(["sh", "-c", f"echo up; {' '.join(cmd)}"], **extra)
    assert d.request("POST", f"/v1.44/containers/{cid}/start").status == 204
    d.wait_for_output(cid, b"up")
    return cid


def inspect(d: Daemon, ref: str) -> dict[str, Any]:
    reply = d.request("GET", f"/v1.44/containers/{ref}/json")
    assert reply.status == 200, reply.body
    return dict(reply.json())


def stdout_of(d: Daemon, cid: str) -> bytes:
    return joined(demux(d.request("GET", f"/v1.44/containers/{cid}/logs?stdout=1").body), 1)


def images_on_disk(root: Path) -> dict[str, dict[str, Any]]:
    """Every image of the store, with each of its layers' file listing (path, size, mode)."""
    found = {}
    for path in sorted((root / "images").glob("*.json")):
        record = json.loads(path.read_text())
        listing = {}
        for layer_id in record["layers"]:
            layer = root / "layers" / layer_id
            assert layer.is_dir(), f"layer {layer_id} of image {path.stem[:12]} is missing"
            files = []
            for dirpath, dirnames, filenames in os.walk(layer):
                for entry in sorted(dirnames + filenames):
                    st = os.lstat(os.path.join(dirpath, entry))
                    files.append((os.path.relpath(os.path.join(dirpath, entry), layer),
                                  st.st_size, st.st_mode))  # fmt: skip
            listing[layer_id] = sorted(files)
        found[path.stem] = {"layers": record["layers"], "files": listing}
    return found


def is_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def test_sigkill_mid_run_then_restart_loses_nothing_and_leaks_nothing(
    launch: Callable[[], Daemon],
) -> None:
    d = launch()
    # Two committed layers, one on the other, before the crash.
    first = run(d, ["sh", "-c", "mkdir /data && echo one > /data/1"])
    assert d.request("POST", f"/v1.44/commit?container={first}&repo=kept&tag=1").status == 201
    second = run(d, ["sh", "-c", "echo two > /data/2"], image="kept:1")
    assert d.request("POST", f"/v1.44/commit?container={second}&repo=kept&tag=2").status == 201
    tags = {t: i["Id"] for i in d.request("GET", "/v1.44/images/json").json()
            for t in i["RepoTags"]}  # fmt: skip
    assert set(tags) == {"base:latest", "kept:1", "kept:2"}
    before = images_on_disk(d.root)
    # Containers in every state at the moment of the crash.
    running = start(d, ["exec sleep 300"], name="running")
    doomed = start(d, ["exec sleep 300"], name="doomed", HostConfig={"AutoRemove": True})
    with_tty = start(d, ["exec sleep 300"], name="with-tty", Tty=True, OpenStdin=True)
    created = d.create(["true"], name="created")
    failed = d.create(["sh", "-c", "exit 3"], name="failed")
    assert d.request("POST", f"/v1.44/containers/{failed}/start").status == 204
    assert d.request("POST", f"/v1.44/containers/{failed}/wait").json()["StatusCode"] == 3
    pids = [inspect(d, c)["State"]["Pid"] for c in (running, doomed, with_tty)]
    assert all(is_alive(p) for p in pids)
    # A client following the logs while the daemon dies is let go, not left hanging.
    follower = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    follower.settimeout(30)
    follower.connect(str(d.socket))
    follower.sendall(f"GET /v1.44/containers/{running}/logs?stdout=1&follow=1 HTTP/1.1\r\n"
                     "Host: x\r\n\r\n".encode())  # fmt: skip
    assert b"200 OK" in follower.recv(65536)

    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while any(is_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(is_alive(p) for p in pids), "containers outlived their daemon"
    while follower.recv(65536):
        pass
    follower.close()
    assert d.socket.is_socket(), "the killed daemon should have left its socket file"
    assert os.listdir(d.root / "running"), "the killed daemon should have left its markers"

    again = launch()  # over the stale socket file
    assert images_on_disk(again.root) == before
    tags_after = {t: i["Id"] for i in again.request("GET", "/v1.44/images/json").json()
                  for t in i["RepoTags"]}  # fmt: skip
    assert tags_after == tags
    listed = {c["Names"][0].lstrip("/"): c
              for c in again.request("GET", "/v1.44/containers/json?all=1").json()}  # fmt: skip
    assert set(listed) >= {"running", "with-tty", "created", "failed"}
    assert "doomed" not in listed  # --rm: removed when its end was found
    assert again.request("GET", f"/v1.44/containers/{doomed}/json").status == 404
    for cid in (running, with_tty):
        state = inspect(again, cid)["State"]
        assert state["Status"] == "exited" and not state["Running"], state
        assert state["ExitCode"] == 137
        assert "was killed" in state["Error"], state
        assert state["FinishedAt"] > state["StartedAt"]
    assert listed["running"]["Status"].startswith("Exited (137)")
    assert inspect(again, created)["State"]["Status"] == "created"
    failed_state = inspect(again, failed)["State"]
    assert (failed_state["Status"], failed_state["ExitCode"], failed_state["Error"]) == (
        "exited",
        3,
        "",
    )
    assert stdout_of(again, running) == b"up\n"  # its log survived
    assert not os.listdir(again.root / "running")
    assert not _cgroups_of(again.root) and not _processes_of(again.root)
    # Everything works as before: the committed layers, and a restart of the victim.
    out = run(again, ["cat", "/data/1", "/data/2"], image="kept:2")
    assert stdout_of(again, out) == b"one\ntwo\n"
    assert again.request("POST", f"/v1.44/containers/{running}/start").status == 204
    deadline = time.monotonic() + 30
    while stdout_of(again, running) != b"up\nup\n" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stdout_of(again, running) == b"up\nup\n"
    assert inspect(again, running)["State"]["Running"] is True
    assert again.request("POST", f"/v1.44/containers/{running}/stop?t=0").status == 204
    for cid in (running, with_tty, created, failed, first, second, out):
        assert again.request("DELETE", f"/v1.44/containers/{cid}").status == 204
    for tag in ("kept:2", "kept:1"):
        assert again.request("DELETE", f"/v1.44/images/{tag}").status == 200
    stop_daemon(again)


def test_sigterm_stops_containers_gracefully_and_the_restart_shows_how(
    launch: Callable[[], Daemon],
) -> None:
    d = launch()
    trap = 'trap "echo got TERM; exit 0" TERM; while :; do sleep 0.1; done'
    graceful = start(d, [trap], name="graceful")
    doomed = start(d, ["exec sleep 300"], HostConfig={"AutoRemove": True})
    stop_daemon(d)  # SIGTERM: exits 0, no socket, no process, no cgroup left
    assert "stopping 2 container(s)" in d.log_text()

    again = launch()
    state = inspect(again, graceful)["State"]
    assert (state["Status"], state["ExitCode"], state["Error"]) == ("exited", 0, "")
    assert stdout_of(again, graceful) == b"up\ngot TERM\n"
    assert again.request("GET", f"/v1.44/containers/{doomed}/json").status == 404
    assert again.request("DELETE", f"/v1.44/containers/{graceful}").status == 204
    stop_daemon(again)


def test_restart_of_an_idle_daemon_keeps_every_container(launch: Callable[[], Daemon]) -> None:
    d = launch()
    done = run(d, ["echo", "kept"])
    created = d.create(["true"])
    stop_daemon(d)
    again = launch()
    assert inspect(again, done)["State"]["Status"] == "exited"
    assert inspect(again, created)["State"]["Status"] == "created"
    assert stdout_of(again, done) == b"kept\n"
    # A created container still runs, with a new daemon, as if nothing happened.
    assert again.request("POST", f"/v1.44/containers/{created}/start").status == 204
    assert again.request("POST", f"/v1.44/containers/{created}/wait").json()["StatusCode"] == 0
    for cid in (done, created):
        assert again.request("DELETE", f"/v1.44/containers/{cid}").status == 204
    stop_daemon(again)
