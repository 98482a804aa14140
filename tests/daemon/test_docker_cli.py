"""The real docker CLI (``docker -H unix://...``) against sandboxd; no dockerd runs."""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable

import pytest

from .helpers import Daemon

DOCKER = shutil.which("docker") or "/usr/local/bin/docker"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not os.path.exists(DOCKER), reason="the docker CLI is not installed"),
]

Docker = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def docker(daemon: Daemon) -> Docker:
    """``docker(*args)`` runs the CLI against the daemon, with a config dir of its own."""
    config = daemon.dir / "docker-config"
    config.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env.update(DOCKER_CONFIG=str(config), DOCKER_CLI_HINTS="false", NO_COLOR="1")

    def run(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([DOCKER, "-H", daemon.url, *args], input=input, env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    return run


def test_run_prints_the_output(docker: Docker) -> None:
    result = docker("run", "--rm", "base", "echo", "hi")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hi\n"
    assert docker("ps", "-aq").stdout == ""  # --rm: the daemon removed it


def test_run_passes_the_exit_status_through(docker: Docker) -> None:
    assert docker("run", "--rm", "base", "sh", "-c", "exit 3").returncode == 3


def test_run_keeps_stdout_and_stderr_apart(docker: Docker) -> None:
    result = docker("run", "--rm", "base", "sh", "-c", "echo out; echo err >&2")
    assert (result.stdout, result.stderr) == ("out\n", "err\n")


def test_run_with_stdin(docker: Docker) -> None:
    result = docker("run", "-i", "--rm", "base", "sh", "-c", "tr a-z A-Z; echo end",
                    input="hello\nworld\n")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == "HELLO\nWORLD\nend\n"


def test_run_of_a_missing_command_is_127(docker: Docker) -> None:
    result = docker("run", "--rm", "base", "nosuchcommand")
    assert result.returncode == 127
    assert "nosuchcommand" in result.stderr
    assert "{" not in result.stderr  # the message, not the raw JSON body


def test_run_of_a_missing_image_fails_clearly(docker: Docker) -> None:
    result = docker("run", "--rm", "nosuchimage", "true")
    assert result.returncode == 125
    assert "Unable to find image 'nosuchimage:latest' locally" in result.stderr
    assert "cannot pull" in result.stderr


def test_ps_logs_diff_commit_history_inspect_images(docker: Docker) -> None:
    script = "echo out; echo err >&2; echo x > /tmp/f"
    result = docker("run", "--name", "cli-one", "base", "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    try:
        ps = docker("ps", "-a").stdout
        assert "cli-one" in ps and "Exited (0)" in ps
        assert "cli-one" not in docker("ps").stdout  # running ones only

        logs = docker("logs", "cli-one")
        assert (logs.stdout, logs.stderr) == ("out\n", "err\n")
        stamped = docker("logs", "-t", "--tail", "1", "cli-one")
        line = stamped.stdout + stamped.stderr  # the last line of either stream
        assert line.endswith((" out\n", " err\n")) and line.count("\n") == 1
        assert line.split()[0].endswith("Z") and "T" in line.split()[0]

        assert docker("diff", "cli-one").stdout.splitlines() == ["C /tmp", "A /tmp/f"]

        commit = docker("commit", "-m", "from the cli", "cli-one", "cli-image:1")
        assert commit.returncode == 0, commit.stderr
        assert commit.stdout.startswith("sha256:")
        history = docker("history", "cli-image:1")
        assert history.returncode == 0, history.stderr
        assert "from the cli" in history.stdout.splitlines()[1]
        images = docker("images").stdout
        assert "cli-image" in images and "base" in images

        inspected = json.loads(docker("inspect", "cli-one").stdout)
        assert inspected[0]["Name"] == "/cli-one"
        assert inspected[0]["State"]["Status"] == "exited"
        image = json.loads(docker("inspect", "cli-image:1").stdout)
        assert image[0]["RepoTags"] == ["cli-image:1"]

        run = docker("run", "--rm", "cli-image:1", "cat", "/tmp/f")
        assert run.stdout == "x\n"
        assert docker("tag", "cli-image:1", "cli-image:2").returncode == 0
        assert docker("rmi", "cli-image:2").stdout == "Untagged: cli-image:2\n"
        removed = docker("rmi", "cli-image:1").stdout.splitlines()
        assert removed[0] == "Untagged: cli-image:1" and removed[1].startswith("Deleted: sha256:")
    finally:
        docker("rm", "-f", "cli-one")


def test_detached_run_stop_and_rm(docker: Docker) -> None:
    started = docker("run", "-d", "--name", "cli-sleeper", "base", "sh", "-c",
                     "echo ready; exec sleep 30")  # fmt: skip
    assert started.returncode == 0, started.stderr
    try:
        # Signals sent before the init has set up its handlers are lost (as with tini).
        deadline = time.monotonic() + 30
        while docker("logs", "cli-sleeper").stdout != "ready\n" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(started.stdout.strip()) == 64
        assert "cli-sleeper" in docker("ps").stdout
        refused = docker("rm", "cli-sleeper")
        assert refused.returncode == 1
        assert "running" in refused.stderr
        assert docker("stop", "-t", "5", "cli-sleeper").returncode == 0
        assert docker("wait", "cli-sleeper").stdout == "143\n"
    finally:
        assert docker("rm", "-f", "cli-sleeper").returncode == 0
    assert "No such object: cli-sleeper" in docker("inspect", "cli-sleeper").stderr


def test_large_output_arrives_whole(docker: Docker) -> None:
    result = docker("run", "--rm", "base", "seq", "1", "200000")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "".join(f"{i}\n" for i in range(1, 200001))


def test_concurrent_runs(docker: Docker) -> None:
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: docker("run", "--rm", "base", "sh", "-c",
                                                 f"echo run {i}; exit {i}"), range(8)))  # fmt: skip
    for i, result in enumerate(results):
        assert (result.returncode, result.stdout) == (i, f"run {i}\n"), result.stderr


def test_version_shows_the_negotiated_api(docker: Docker) -> None:
    result = docker("version")
    assert result.returncode == 0, result.stderr
    assert "1.44" in result.stdout


def test_network_create_ls_inspect_rm(docker: Docker) -> None:
    created = docker("network", "create", "--subnet", "10.203.1.0/24", "--label", "k=v",
                     "cli-net")  # fmt: skip
    try:
        assert created.returncode == 0, created.stderr
        nid = created.stdout.strip()
        assert len(nid) == 64
        listed = docker("network", "ls").stdout.splitlines()
        assert listed[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
        assert [nid[:12], "cli-net", "bridge", "local"] in [line.split() for line in listed]
        assert docker("network", "ls", "-q", "--filter", "label=k=v").stdout == nid[:12] + "\n"
        inspected = json.loads(docker("network", "inspect", "cli-net").stdout)
        assert inspected[0]["Id"] == nid and inspected[0]["Labels"] == {"k": "v"}
        subnet = docker("network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}}{{end}}",
                        "cli-net")  # fmt: skip
        assert subnet.stdout == "10.203.1.0/24\n"
        again = docker("network", "create", "cli-net")
        assert again.returncode == 1 and "network with name cli-net already exists" in again.stderr
        builtin = docker("network", "rm", "lab")
        assert builtin.returncode == 1
        assert "lab is a pre-defined network and cannot be removed" in builtin.stderr
    finally:
        removed = docker("network", "rm", "cli-net")
    assert removed.returncode == 0 and removed.stdout == "cli-net\n", removed.stderr
    assert "cli-net" not in docker("network", "ls").stdout


def test_run_with_network_and_alias(docker: Docker) -> None:
    assert docker("network", "create", "cli-talk").returncode == 0
    try:
        started = docker("run", "-d", "--name", "cli-server", "--network", "cli-talk",
                         "--network-alias", "srv", "base", "sleep", "600")  # fmt: skip
        assert started.returncode == 0, started.stderr
        pinged = docker("run", "--rm", "--network", "cli-talk", "base", "ping", "-c1", "-W5", "srv")
        assert pinged.returncode == 0, pinged.stdout + pinged.stderr
        networks = json.loads(docker("inspect", "cli-server").stdout)[0]["NetworkSettings"]
        assert networks["Networks"]["cli-talk"]["Aliases"] == ["srv"]
        joined = docker("network", "connect", "--alias", "extra", "lab", "cli-server")
        assert joined.returncode == 0, joined.stderr
        assert "eth1" in docker("exec", "cli-server", "ip", "-br", "addr").stdout
        left = docker("network", "disconnect", "lab", "cli-server")
        assert left.returncode == 0, left.stderr
        assert "eth1" not in docker("exec", "cli-server", "ip", "-br", "addr").stdout
        busy = docker("network", "rm", "cli-talk")
        assert busy.returncode == 1 and "has active endpoints (cli-server)" in busy.stderr
    finally:
        docker("rm", "-f", "cli-server")
        removed = docker("network", "rm", "cli-talk")
    assert removed.returncode == 0, removed.stderr
