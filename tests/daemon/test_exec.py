"""``exec``: one more process in a running container, through the raw API, docker-py
and the docker CLI, and what that process can see of the host (nothing more
than the container's own processes can)."""

from __future__ import annotations

import gc
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from .helpers import Daemon, demux, joined

pytestmark = pytest.mark.root

DOCKER = shutil.which("docker") or "/usr/local/bin/docker"
DOCKER_CAPS = "00000000a80425fb"  # Docker's 14 default capabilities
NAMESPACES = ("mnt", "uts", "ipc", "net", "pid", "cgroup")


# -- helpers --------------------------------------------------------------------------


def run_container(daemon: Daemon, cmd: str, **extra: Any) -> str:
    """Create and start a container running ``sh -c cmd``; wait until it printed ready."""
    cid = daemon.create(["sh", "-c", f"{cmd}; echo ready; exec sleep 600"], **extra)
    assert daemon.request("POST", f"/v1.44/containers/{cid}/start").status == 204
    daemon.wait_for_output(cid, b"ready")
    return cid


def remove(daemon: Daemon, cid: str) -> None:
    reply = daemon.request("DELETE", f"/v1.44/containers/{cid}?force=1")
    assert reply.status in (204, 404), reply.body


def exec_create(daemon: Daemon, cid: str, cmd: list[str], **extra: Any) -> str:
    body = {"AttachStdout": True, "AttachStderr": True, "Cmd": cmd, **extra}
    reply = daemon.request("POST", f"/v1.44/containers/{cid}/exec", body)
    assert reply.status == 201, reply.body
    return str(reply.json()["Id"])


def exec_inspect(daemon: Daemon, eid: str) -> dict[str, Any]:
    reply = daemon.request("GET", f"/v1.44/exec/{eid}/json")
    assert reply.status == 200, reply.body
    result: dict[str, Any] = reply.json()
    return result


def upgrade(daemon: Daemon, path: str, body: dict[str, Any],
            timeout: float = 30) -> tuple[socket.socket, bytes]:  # fmt: skip
    """POST with ``Upgrade: tcp``; the socket, and what came up to the end of the head."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(daemon.socket))
        data = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
        )
        sock.sendall(head.encode() + data)
        received = b""
        while b"\r\n\r\n" not in received and (chunk := sock.recv(65536)):
            received += chunk
    except BaseException:
        sock.close()
        raise
    return sock, received


def hijacked(daemon: Daemon, path: str, body: dict[str, Any], *,
             stdin: bytes | None = None) -> tuple[str, bytes]:  # fmt: skip
    """POST with ``Upgrade: tcp``, send ``stdin`` (after the 101, as the clients
    do) and half-close; returns the head and the stream, to end-of-file."""
    sock, received = upgrade(daemon, path, body)
    try:
        if stdin is not None:
            sock.sendall(stdin)
            sock.shutdown(socket.SHUT_WR)
        while chunk := sock.recv(65536):
            received += chunk
    finally:
        sock.close()
    head, _, stream = received.partition(b"\r\n\r\n")
    return head.decode(), stream


def exec_run(daemon: Daemon, cid: str, cmd: list[str], **extra: Any) -> tuple[bytes, bytes, int]:
    """Create and start an exec (non-tty); returns its stdout, stderr and exit code."""
    eid = exec_create(daemon, cid, cmd, **extra)
    head, stream = hijacked(daemon, f"/v1.44/exec/{eid}/start", {"Detach": False, "Tty": False})
    assert head.startswith("HTTP/1.1 101 UPGRADED"), head
    frames = demux(stream)
    return joined(frames, 1), joined(frames, 2), exec_inspect(daemon, eid)["ExitCode"]


def wait_exec(daemon: Daemon, eid: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = exec_inspect(daemon, eid)
        if not info["Running"] and info["ExitCode"] is not None:
            return info
        time.sleep(0.05)
    raise AssertionError(f"exec {eid[:12]} did not finish in {timeout} s")


def init_pid(daemon: Daemon, cid: str) -> int:
    return int(daemon.request("GET", f"/v1.44/containers/{cid}/json").json()["State"]["Pid"])


def processes_in_cgroup(cid: str) -> list[int]:
    """Host PIDs of every process in the container's cgroup."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cgroup") as f:
                    if f"/sandbox/{cid}" in f.read():
                        found.append(int(pid))
            except OSError:
                continue
    return found


def children(parent: int) -> list[int]:
    """Host PIDs of the processes whose parent is ``parent``."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent:
                found.append(int(pid))
    return found


@pytest.fixture(scope="module")
def box(daemon: Daemon) -> Iterator[str]:
    """A running container, shared by the tests that do not stop it."""
    cid = run_container(daemon, "echo written-by-the-container > /tmp/mark", Hostname="exechost",
                        name="exec-box")  # fmt: skip
    yield cid
    remove(daemon, cid)


# -- the raw API ------------------------------------------------------------------------


def test_create_start_and_inspect(daemon: Daemon, box: str) -> None:
    eid = exec_create(daemon, box, ["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert len(eid) == 64 and all(c in "0123456789abcdef" for c in eid)
    before = exec_inspect(daemon, eid)
    assert before["ID"] == eid and before["ContainerID"] == box
    assert (before["Running"], before["ExitCode"], before["Pid"]) == (False, None, 0)
    assert before["ProcessConfig"]["entrypoint"] == "sh"
    assert before["ProcessConfig"]["arguments"] == ["-c", "echo out; echo err >&2; exit 3"]
    assert before["ProcessConfig"]["tty"] is False
    assert (before["OpenStdin"], before["OpenStdout"], before["OpenStderr"]) == (False, True, True)
    assert before["CanRemove"] is False

    head, stream = hijacked(daemon, f"/v1.44/exec/{eid}/start", {"Detach": False, "Tty": False})
    assert head.startswith("HTTP/1.1 101 UPGRADED")
    assert "application/vnd.docker.multiplexed-stream" in head
    frames = demux(stream)
    assert (joined(frames, 1), joined(frames, 2)) == (b"out\n", b"err\n")
    after = exec_inspect(daemon, eid)
    assert (after["Running"], after["ExitCode"]) == (False, 3)
    assert after["Pid"] > 0

    again = daemon.request("POST", f"/v1.44/exec/{eid}/start", {"Detach": True})
    assert again.status == 409
    assert "has already run" in again.json()["message"]


def test_output_stays_out_of_the_container_log(daemon: Daemon, box: str) -> None:
    assert exec_run(daemon, box, ["echo", "only-for-the-exec-client"])[0] == (
        b"only-for-the-exec-client\n"
    )
    logs = daemon.request("GET", f"/v1.44/containers/{box}/logs?stdout=1&stderr=1")
    assert b"only-for-the-exec-client" not in logs.body
    assert b"ready" in logs.body


def test_detached_start(daemon: Daemon, box: str) -> None:
    eid = exec_create(daemon, box, ["sh", "-c", "echo detached > /tmp/detached"])
    reply = daemon.request("POST", f"/v1.44/exec/{eid}/start", {"Detach": True, "Tty": False})
    assert reply.status == 200, reply.body
    assert wait_exec(daemon, eid)["ExitCode"] == 0
    assert exec_run(daemon, box, ["cat", "/tmp/detached"])[0] == b"detached\n"


def test_stdin_is_forwarded_and_closed(daemon: Daemon, box: str) -> None:
    eid = exec_create(daemon, box, ["sh", "-c", "tr a-z A-Z; echo end"], AttachStdin=True)
    assert exec_inspect(daemon, eid)["OpenStdin"] is True
    head, stream = hijacked(daemon, f"/v1.44/exec/{eid}/start", {"Detach": False},
                            stdin=b"hello\nworld\n")  # fmt: skip
    assert head.startswith("HTTP/1.1 101")
    assert joined(demux(stream), 1) == b"HELLO\nWORLD\nend\n"
    # Without AttachStdin the process reads /dev/null: cat ends at once.
    assert exec_run(daemon, box, ["cat"]) == (b"", b"", 0)


def test_tty_with_console_size_and_resize(daemon: Daemon, box: str) -> None:
    eid = exec_create(daemon, box, ["sh", "-c", "tty; stty size"], Tty=True)
    head, stream = hijacked(daemon, f"/v1.44/exec/{eid}/start",
                            {"Detach": False, "Tty": True, "ConsoleSize": [30, 100]})  # fmt: skip
    assert "application/vnd.docker.raw-stream" in head
    lines = stream.decode().splitlines()
    assert lines[0].startswith("/dev/pts/"), lines
    assert lines[1] == "30 100"

    # A resize while it runs: the process reads a line, then prints its size.
    eid = exec_create(daemon, box, ["sh", "-c", "read line; stty size"], Tty=True,
                      AttachStdin=True)  # fmt: skip
    sock, received = upgrade(daemon, f"/v1.44/exec/{eid}/start", {"Detach": False, "Tty": True})
    try:
        resized = daemon.request("POST", f"/v1.44/exec/{eid}/resize?h=40&w=120")
        assert resized.status == 200, resized.body
        sock.sendall(b"go\r")
        while chunk := sock.recv(4096):
            received += chunk
    finally:
        sock.close()
    assert b"40 120" in received
    assert exec_inspect(daemon, eid)["ExitCode"] == 0


def test_env_and_working_directory(daemon: Daemon, box: str) -> None:
    out, _, code = exec_run(daemon, box, ["sh", "-c", "echo $FOO; pwd"], Env=["FOO=bar"],
                            WorkingDir="/tmp")  # fmt: skip
    assert (out, code) == (b"bar\n/tmp\n", 0)
    out, err, code = exec_run(daemon, box, ["pwd"], WorkingDir="/no/such/dir")
    assert code == 126
    assert b"working directory /no/such/dir" in err and b"No such file" in err


def test_a_background_child_does_not_hold_the_exec_open(daemon: Daemon, box: str) -> None:
    """The streams get a grace period after the exit, then close (as moby's 2 s)."""
    began = time.monotonic()
    out, _, code = exec_run(daemon, box, ["sh", "-c", "sleep 30 & echo started"])
    assert (out, code) == (b"started\n", 0)
    assert time.monotonic() - began < 10
    exec_run(daemon, box, ["pkill", "-f", "^sleep 30$"])


def test_missing_command_exits_127_with_a_message(daemon: Daemon, box: str) -> None:
    out, err, code = exec_run(daemon, box, ["no-such-command", "x"])
    assert (out, code) == (b"", 127)
    assert b"no-such-command: command not found" in err
    _, err, code = exec_run(daemon, box, ["/etc/hostname"])
    assert code == 126 and b"permission denied" in err


def test_bad_requests_are_400(daemon: Daemon, box: str) -> None:
    for body, words in [
        ({"Cmd": []}, "No exec command specified"),
        ({"Cmd": ["id"], "User": "nobody"}, "run as root"),
        ({"Cmd": ["id"], "Privileged": True}, "privileged exec is not supported"),
        ({"Cmd": ["id"], "WorkingDir": "tmp"}, "absolute path"),
        ({"Cmd": ["id"], "Env": ["novalue"]}, "KEY=VALUE"),
        ({"Cmd": "id", "Tty": "yes"}, "Tty"),
    ]:
        reply = daemon.request("POST", f"/v1.44/containers/{box}/exec", body)
        assert reply.status == 400, (body, reply.body)
        assert words in reply.json()["message"], reply.body


def test_unknown_exec_is_404(daemon: Daemon) -> None:
    for method, path in [("GET", "json"), ("POST", "start"), ("POST", "resize?h=1&w=1")]:
        reply = daemon.request(method, f"/v1.44/exec/{'0' * 64}/{path}")
        assert reply.status == 404
        assert reply.json()["message"] == f"No such exec instance: {'0' * 64}"


def test_exec_into_a_stopped_container_is_a_conflict(daemon: Daemon) -> None:
    cid = daemon.create(["true"])
    try:
        reply = daemon.request("POST", f"/v1.44/containers/{cid}/exec", {"Cmd": ["id"]})
        assert reply.status == 409
        assert "is not running" in reply.json()["message"], reply.body
        assert daemon.request("POST", f"/v1.44/containers/{cid}/start").status == 204
        daemon.request("POST", f"/v1.44/containers/{cid}/wait")
        reply = daemon.request("POST", f"/v1.44/containers/{cid}/exec", {"Cmd": ["id"]})
        assert reply.status == 409 and "is not running" in reply.json()["message"]
    finally:
        remove(daemon, cid)


# -- what the exec'd process is ------------------------------------------------------------


def test_same_namespaces_files_and_cgroup_as_the_container(daemon: Daemon, box: str) -> None:
    cmdline = exec_run(daemon, box, ["sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline"])[0]
    assert cmdline.startswith(b"tini -g -- sh -c ")  # PID 1 is the container's init
    ps = exec_run(daemon, box, ["ps", "-o", "pid=,args="])[0].decode()
    assert "tini -g --" in ps and "sleep 600" in ps and "ps -o" in ps
    assert exec_run(daemon, box, ["hostname"])[0] == b"exechost\n"
    assert exec_run(daemon, box, ["cat", "/tmp/mark"])[0] == b"written-by-the-container\n"
    # The container's cgroup namespace: every hierarchy is "/" for it and for PID 1.
    own, _, _ = exec_run(daemon, box, ["cat", "/proc/self/cgroup"])
    assert own == exec_run(daemon, box, ["cat", "/proc/1/cgroup"])[0]
    assert all(line.endswith(b":/") for line in own.splitlines()), own

    # From the host: a detached exec shares every namespace of the init and its cgroup.
    eid = exec_create(daemon, box, ["sleep", "60"])
    assert daemon.request("POST", f"/v1.44/exec/{eid}/start", {"Detach": True}).status == 200
    pid, init = exec_inspect(daemon, eid)["Pid"], init_pid(daemon, box)
    try:
        for ns in NAMESPACES:
            assert os.readlink(f"/proc/{pid}/ns/{ns}") == os.readlink(f"/proc/{init}/ns/{ns}"), ns
        with open(f"/proc/{pid}/cgroup") as f:
            cgroups = f.read()
        assert f"memory:/sandbox/{box}" in cgroups and f"pids:/sandbox/{box}" in cgroups
        assert pid in processes_in_cgroup(box)
    finally:
        os.kill(pid, signal.SIGKILL)


def test_no_host_python_is_left_in_the_container(daemon: Daemon, box: str) -> None:
    """Every process in the container's cgroup runs a file of the container or its init."""
    python = os.stat(sys.executable)
    eid = exec_create(daemon, box, ["sleep", "30"])
    assert daemon.request("POST", f"/v1.44/exec/{eid}/start", {"Detach": True}).status == 200
    pid = exec_inspect(daemon, eid)["Pid"]
    root_dev = os.stat(f"/proc/{init_pid(daemon, box)}/root/bin/sh").st_dev
    pids = processes_in_cgroup(box)
    assert pid in pids and len(pids) >= 3  # tini, its sleep, the exec'd sleep
    try:
        for pid in pids:
            exe = os.readlink(f"/proc/{pid}/exe")
            st = os.stat(f"/proc/{pid}/exe")
            assert (st.st_dev, st.st_ino) != (python.st_dev, python.st_ino), (pid, exe)
            assert exe.startswith("/memfd:tini") or st.st_dev == root_dev, (pid, exe)
        # Nor does one wait outside: the daemon's only Python child is its zygote.
        for child in children(daemon.proc.pid):
            st = os.stat(f"/proc/{child}/exe")
            if (st.st_dev, st.st_ino) == (python.st_dev, python.st_ino):
                with open(f"/proc/{child}/cmdline", "rb") as f:
                    assert b"sandbox.runtime.zygote" in f.read(), child
    finally:
        os.kill(pid, signal.SIGKILL)


def test_capabilities_no_new_privs_fds_and_exe(daemon: Daemon, box: str) -> None:
    status = exec_run(daemon, box, ["cat", "/proc/self/status"])[0].decode()
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    for name in ("CapEff", "CapPrm", "CapBnd", "CapInh"):
        assert fields[name].strip() == DOCKER_CAPS, (name, fields[name])
    assert fields["CapAmb"].strip() == "0000000000000000"
    assert fields["NoNewPrivs"].strip() == "1"
    # No signal ignored or blocked because the daemon (Python) had it so.
    assert fields["SigIgn"].strip() == fields["SigBlk"].strip() == "0000000000000000"
    # 0-2, and 3: the directory ls itself opened. No fd of the daemon.
    assert exec_run(daemon, box, ["ls", "/proc/self/fd"])[0] == b"0\n1\n2\n3\n"
    assert exec_run(daemon, box, ["readlink", "/proc/self/exe"])[0] == b"/usr/bin/readlink\n"


def test_a_script_whose_interpreter_is_proc_self_exe_does_not_run_host_python(
    daemon: Daemon, box: str
) -> None:
    """CVE-2019-5736: the exec'ing process's /proc/self/exe is a sealed memfd, not Python."""
    setup = "printf '#!/proc/self/exe\\nprint(\"host python\")\\n' > /tmp/evil; chmod +x /tmp/evil"
    assert exec_run(daemon, box, ["sh", "-c", setup])[2] == 0
    out, err, code = exec_run(daemon, box, ["/tmp/evil"])
    assert code == 126
    assert b"host python" not in out + err
    assert b"sandbox: cannot execute the command" in err


def test_memory_limit_applies_to_the_exec(daemon: Daemon) -> None:
    mib = 1024**2
    cid = run_container(daemon, "true", HostConfig={"Memory": 64 * mib, "MemorySwap": 64 * mib})
    try:
        # tail -n 1 keeps the whole (newline-free) input: 300 MB, far over the limit.
        out, _, code = exec_run(daemon, cid, [
            "sh", "-c", "head -c 300000000 /dev/zero | tail -n 1 > /dev/null; echo status $?"
        ])  # fmt: skip
        assert (out, code) == (b"status 137\n", 0)
        assert daemon.request("GET", f"/v1.44/containers/{cid}/json").json()["State"]["Running"]
    finally:
        remove(daemon, cid)


def test_exec_dies_with_its_container(daemon: Daemon) -> None:
    cid = run_container(daemon, "true")
    try:
        eid = exec_create(daemon, cid, ["sleep", "300"])
        assert daemon.request("POST", f"/v1.44/exec/{eid}/start", {"Detach": True}).status == 200
        pid = exec_inspect(daemon, eid)["Pid"]
        assert os.path.exists(f"/proc/{pid}")
        waiting = exec_create(daemon, cid, ["true"])
        assert daemon.request("POST", f"/v1.44/containers/{cid}/kill").status == 204
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not os.path.exists(f"/proc/{pid}")
        # Exec instances go with the container's run, and none starts in a stopped one.
        assert daemon.request("GET", f"/v1.44/exec/{eid}/json").status == 404
        assert daemon.request("POST", f"/v1.44/exec/{waiting}/start", {}).status == 404
    finally:
        remove(daemon, cid)


# -- real clients -----------------------------------------------------------------------------


def test_docker_py_exec_run(daemon: Daemon, box: str) -> None:
    docker = pytest.importorskip("docker", reason="docker-py is not installed")
    client = docker.DockerClient(base_url=daemon.url, timeout=60)
    try:
        container = client.containers.get(box)
        result = container.exec_run("sh -c 'echo out; echo err >&2; exit 3'")
        assert (result.exit_code, result.output) == (3, b"out\nerr\n")
        result = container.exec_run("sh -c 'echo out; echo err >&2; exit 3'", demux=True)
        assert (result.exit_code, result.output) == (3, (b"out\n", b"err\n"))
        # docker-py never closes the socket of a streamed exec (its generator
        # holds it): let it go here, where the warning is expected.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            streamed = container.exec_run("sh -c 'echo 1; sleep 0.2; echo 2'", stream=True)
            assert list(streamed.output) == [b"1\n", b"2\n"]
            del streamed
            gc.collect()
        result = container.exec_run("tty", tty=True)
        assert result.exit_code == 0 and result.output.startswith(b"/dev/pts/")
        result = container.exec_run("pwd", workdir="/tmp", environment={"A": "b"})
        assert result.output == b"/tmp\n"
    finally:
        client.close()


@pytest.mark.skipif(not os.path.exists(DOCKER), reason="the docker CLI is not installed")
def test_docker_cli_exec(daemon: Daemon, box: str) -> None:
    config = daemon.dir / "docker-config"
    config.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env.update(DOCKER_CONFIG=str(config), DOCKER_CLI_HINTS="false", NO_COLOR="1")

    def docker(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([DOCKER, "-H", daemon.url, *args], input=input, env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    result = docker("exec", "exec-box", "cat", "/etc/hostname")
    assert (result.returncode, result.stdout) == (0, "exechost\n"), result.stderr
    assert docker("exec", "exec-box", "sh", "-c", "exit 4").returncode == 4
    result = docker("exec", "exec-box", "sh", "-c", "echo out; echo err >&2")
    assert (result.stdout, result.stderr) == ("out\n", "err\n")
    result = docker("exec", "-i", "exec-box", "sh", "-c", "tr a-z A-Z", input="piped in\n")
    assert (result.returncode, result.stdout) == (0, "PIPED IN\n"), result.stderr
    result = docker("exec", "exec-box", "no-such-command")
    assert result.returncode == 127
    assert "no-such-command: command not found" in result.stderr
    assert docker("exec", "-d", "exec-box", "touch", "/tmp/by-cli").returncode == 0
    deadline = time.monotonic() + 10
    while docker("exec", "exec-box", "test", "-e", "/tmp/by-cli").returncode and (
        time.monotonic() < deadline
    ):
        time.sleep(0.05)
    assert docker("exec", "exec-box", "test", "-e", "/tmp/by-cli").returncode == 0
