"""The ``sandbox`` CLI as a client of ``sandboxd``: one daemon per store, started for the user.

What is checked here is what the daemon changes for a user: the first command
starts a daemon and says so once; ``-d`` containers outlive the command and a
foreground one does not; ``attach``, ``stop``, ``restart``, ``logs -f``,
``exec`` and ``stats`` reach a container started by another command; and a
daemon that cannot be reached is one clear line.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import pytest

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

Cli = Callable[..., subprocess.CompletedProcess[bytes]]
Names = Callable[[str], str]
DEADLINE = 60.0  # seconds a step may take before the test gives up (a hang guard only)
SANDBOX = str(Path(sys.executable).with_name("sandbox"))
SANDBOXD = str(Path(sys.executable).with_name("sandboxd"))


def env_for(root: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "SANDBOX_ROOT": str(root), "NO_COLOR": "1", **extra}
    if "SANDBOX_HOST" not in extra:
        env.pop("SANDBOX_HOST", None)
    return env


def sandbox(root: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([SANDBOX, *args], env=env_for(root, **extra), capture_output=True,
                          timeout=DEADLINE)  # fmt: skip


def popen(
    root: Path, *args: str, stdin: int | None = subprocess.DEVNULL
) -> subprocess.Popen[bytes]:
    return subprocess.Popen([SANDBOX, *args], env=env_for(root), stdin=stdin,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def one_line(result: subprocess.CompletedProcess[bytes]) -> str:
    """The single ``sandbox: ...`` line a failure prints (asserts there is just one)."""
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sandbox: "), lines
    return lines[0]


def daemon_pid(root: Path) -> int:
    return int((root / "sandboxd.pid").read_text())


def sandboxd_processes(root: Path) -> list[int]:
    """sandboxd processes serving ``root`` (by their command line)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(b"sandboxd") for a in argv[:2]) and str(root).encode() in argv:
            found.append(int(pid))
    return found


def inspect(cli: Cli, ref: str) -> dict[str, Any]:
    result = cli("inspect", ref)
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)[0]


def wait_state(cli: Cli, name: str, running: bool) -> dict[str, Any]:
    end = time.monotonic() + DEADLINE
    while True:
        info = inspect(cli, name)
        if info["State"]["Running"] == running:
            return info
        assert time.monotonic() < end, f"{name} never became {'running' if running else 'stopped'}"
        time.sleep(0.05)


def read_until(stream: IO[bytes], marker: bytes) -> bytes:
    """Read a pipe until ``marker`` appears (fails, never hangs, if it does not)."""
    fd, data = stream.fileno(), b""
    end = time.monotonic() + DEADLINE
    while marker not in data:
        left = end - time.monotonic()
        assert left > 0, f"{marker!r} never came; got {data!r}"
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 65536)
            assert chunk, f"end of output before {marker!r}; got {data!r}"
            data += chunk
    return data


# -- the daemon started for the user -----------------------------------------------------


def test_the_first_command_starts_a_daemon_and_says_so_once(fresh_root: Path) -> None:
    first = sandbox(fresh_root, "ps")
    assert first.returncode == 0, first.stderr
    log = fresh_root / "sandboxd.log"
    assert first.stderr.decode() == f"sandbox: started the sandbox daemon for you (log: {log})\n"
    assert first.stdout.decode().split() == ["CONTAINER", "ID", "IMAGE", "COMMAND", "CREATED",
                                             "STATUS", "PORTS", "NAMES"]  # fmt: skip
    pid = daemon_pid(fresh_root)
    assert (fresh_root / "sandboxd.sock").is_socket()  # the store's own socket
    assert "listening on unix://" in log.read_text()

    second = sandbox(fresh_root, "images")
    assert second.returncode == 0 and second.stderr == b""  # said once, reused after
    assert daemon_pid(fresh_root) == pid
    assert sandboxd_processes(fresh_root) == [pid]


def test_clients_racing_on_a_new_store_start_one_daemon(fresh_root: Path) -> None:
    procs = [popen(fresh_root, "ps", "-a") for _ in range(5)]
    results = [(p.communicate(timeout=DEADLINE), p.returncode) for p in procs]
    assert [code for _, code in results] == [0] * 5, results
    notices = [err for (_, err), _ in results if b"started the sandbox daemon" in err]
    assert len(notices) == 1, results  # the others waited for it and used it
    assert all(err in (b"", notices[0]) for (_, err), _ in results)
    assert sandboxd_processes(fresh_root) == [daemon_pid(fresh_root)]


def test_sandboxd_runs_in_the_foreground_with_its_log_on_stderr(fresh_root: Path) -> None:
    daemon = subprocess.Popen([SANDBOXD, "--root", str(fresh_root)], env=env_for(fresh_root),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        assert daemon.stderr is not None
        logged = read_until(daemon.stderr, b", API ").decode()
        assert f"listening on unix://{fresh_root}/sandboxd.sock" in logged  # where clients look
        used = sandbox(fresh_root, "ps")
        assert used.returncode == 0 and used.stderr == b""  # found it: nothing started
        assert daemon_pid(fresh_root) == daemon.pid
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=DEADLINE)
    assert daemon.returncode == 0, err
    assert b"stopped" in err and not (fresh_root / "sandboxd.sock").exists()


# -- errors ------------------------------------------------------------------------------


UNKNOWN = [
    ["stop", "nosuch-ctr"],
    ["attach", "nosuch-ctr"],
    ["exec", "nosuch-ctr", "true"],
    ["restart", "nosuch-ctr"],
    ["logs", "-f", "nosuch-ctr"],
    ["stats", "nosuch-ctr"],
]


@pytest.mark.parametrize("args", UNKNOWN, ids=[a[0] for a in UNKNOWN])
def test_an_unknown_container_is_one_line_and_status_125(cli: Cli, args: list[str]) -> None:
    result = cli(*args)
    assert result.returncode == 125
    assert result.stdout == b""
    assert one_line(result) == "sandbox: No such container: nosuch-ctr (see `sandbox ps -a`)"


def test_a_daemon_named_by_sandbox_host_that_is_not_there_is_one_clear_line(
    fresh_root: Path,
) -> None:
    sock = fresh_root / "nobody.sock"
    result = sandbox(fresh_root, "ps", SANDBOX_HOST=f"unix://{sock}")
    assert result.returncode == 125 and result.stdout == b""
    line = one_line(result)
    assert f"cannot reach the sandbox daemon at unix://{sock}" in line
    assert "SANDBOX_HOST" in line
    assert not (fresh_root / "sandboxd.pid").exists()  # none was started behind the user's back


def test_a_daemon_that_cannot_be_started_is_one_clear_line(fresh_root: Path) -> None:
    (fresh_root / "file").write_text("not a directory\n")
    root = fresh_root / "file" / "store"
    result = sandbox(root, "ps")
    assert result.returncode == 125 and result.stdout == b""
    line = one_line(result)
    assert f"cannot reach the sandbox daemon at unix://{root}/sandboxd.sock" in line
    assert "cannot start one" in line and str(root) in line


# -- detached and foreground containers ------------------------------------------------------


def test_run_d_prints_the_id_and_the_container_outlives_the_command(cli: Cli, names: Names) -> None:
    name = names("detached")
    started = time.monotonic()
    result = cli("run", "-d", "--name", name, "base", "bash", "-c",
                 "echo started; exec sleep 1000")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 20  # it did not wait for the container
    cid = result.stdout.decode().strip()
    assert re.fullmatch(r"[0-9a-f]{64}", cid)
    info = wait_state(cli, name, running=True)
    assert info["Id"] == cid and info["Config"]["Labels"] == {}  # not a foreground one
    time.sleep(0.5)
    assert inspect(cli, name)["State"]["Running"]  # still, with its command gone
    assert cli("logs", name).stdout == b"started\n"
    stopped = cli("stop", "-t", "1", name)
    assert (stopped.returncode, stopped.stdout) == (0, f"{name}\n".encode())
    state = inspect(cli, name)["State"]
    assert not state["Running"] and state["ExitCode"] == 143  # SIGTERM ended the sleep


def test_a_foreground_run_whose_command_is_killed_takes_its_container_along(
    root: Path, cli: Cli, names: Names
) -> None:
    name = names("orphan")
    run = popen(root, "run", "--name", name, "base", "bash", "-c", "echo ready; exec sleep 1000")
    try:
        assert run.stdout is not None
        read_until(run.stdout, b"ready\n")
        info = inspect(cli, name)
        assert info["Config"]["Labels"] == {"sandbox.foreground": "1"}
    finally:
        run.kill()
        run.communicate(timeout=DEADLINE)
    state = wait_state(cli, name, running=False)["State"]
    assert state["ExitCode"] == 137
    assert "the sandbox client that ran it in the foreground went away" in state["Error"]


# -- attach, stop, restart, logs -f ------------------------------------------------------------


def test_attach_forwards_stdin_and_returns_the_exit_status(root: Path, cli: Cli,
                                                           names: Names) -> None:  # fmt: skip
    name = names("attach")
    script = "echo before; read line; echo got $line; echo bye >&2; exit 5"
    assert cli("run", "-d", "-i", "--name", name, "base", "bash", "-c", script).returncode == 0
    _wait_log(cli, name, b"before\n")  # printed before anyone attached
    attach = popen(root, "attach", name, stdin=subprocess.PIPE)
    out, err = attach.communicate(b"hello\n", timeout=DEADLINE)
    assert attach.returncode == 5, err
    assert out == b"got hello\n" and err == b"bye\n"  # "before" came before the attach
    assert cli("logs", name).stdout == b"before\ngot hello\n"


def test_attach_to_a_stopped_container_is_refused(cli: Cli, names: Names) -> None:
    name = names("stopped")
    assert cli("create", "--name", name, "base", "true").returncode == 0
    result = cli("attach", name)
    assert result.returncode == 125
    assert "cannot attach to the stopped container" in one_line(result)


def test_stop_and_restart(cli: Cli, names: Names) -> None:
    name = names("restart")
    script = 'trap "echo term; exit 3" TERM; echo up; while :; do sleep 0.1; done'
    assert cli("run", "-d", "--name", name, "base", "bash", "-c", script).returncode == 0
    first = wait_state(cli, name, running=True)["State"]
    _wait_log(cli, name, b"up\n")  # the trap is set
    assert cli("stop", name).stdout == f"{name}\n".encode()
    state = inspect(cli, name)["State"]
    assert (state["Running"], state["ExitCode"]) == (False, 3)  # it trapped SIGTERM

    restarted = cli("restart", "-t", "5", name)
    assert (restarted.returncode, restarted.stdout) == (0, f"{name}\n".encode())
    again = wait_state(cli, name, running=True)["State"]
    assert again["StartedAt"] != first["StartedAt"] and again["Pid"] != first["Pid"]
    _wait_log(cli, name, b"up\nterm\nup\n")
    assert cli("restart", "-t", "5", name).returncode == 0  # a running one: stop, then start
    _wait_log(cli, name, b"up\nterm\nup\nterm\nup\n")
    assert cli("stop", "nosuch-" + name).returncode == 125


def _wait_log(cli: Cli, name: str, expected: bytes) -> None:
    end = time.monotonic() + DEADLINE
    while (out := cli("logs", name).stdout) != expected:
        assert time.monotonic() < end, out
        time.sleep(0.05)


def test_logs_f_of_a_detached_container_follows_it_to_its_end(root: Path, cli: Cli,
                                                              names: Names) -> None:  # fmt: skip
    name = names("follow")
    script = "echo one; read x; echo two >&2; read y; echo three"
    assert cli("run", "-d", "-i", "--name", name, "base", "bash", "-c", script).returncode == 0
    wait_state(cli, name, running=True)
    follow = popen(root, "logs", "-f", name)
    assert follow.stdout is not None and follow.stderr is not None
    assert read_until(follow.stdout, b"one\n") == b"one\n"
    attach = popen(root, "attach", name, stdin=subprocess.PIPE)
    assert attach.stdin is not None
    attach.stdin.write(b"a\n")
    attach.stdin.flush()
    assert read_until(follow.stderr, b"two\n") == b"two\n"
    assert follow.poll() is None  # still following: it still runs
    attach.stdin.write(b"b\n")
    attach.stdin.close()
    attach.stdin = None  # written and closed: communicate must not flush it
    out, err = follow.communicate(timeout=DEADLINE)
    assert (follow.returncode, out, err) == (0, b"three\n", b"")
    out, err = attach.communicate(timeout=DEADLINE)
    assert (attach.returncode, out, err) == (0, b"three\n", b"two\n")


# -- exec and stats ----------------------------------------------------------------------


@pytest.fixture
def sleeper(cli: Cli, names: Names) -> str:
    """A running detached container."""
    name = names("lab")
    assert cli("run", "-d", "--name", name, "base", "sleep", "1000").returncode == 0
    wait_state(cli, name, running=True)
    return name


def test_exec_runs_in_the_container_and_passes_its_status(cli: Cli, sleeper: str) -> None:
    script = "hostname; echo err >&2; ps -eo args= | grep -c '^sleep 1000'; exit 4"
    result = cli("exec", sleeper, "bash", "-c", script)
    assert result.returncode == 4
    hostname, count = result.stdout.decode().split()
    assert hostname == inspect(cli, sleeper)["Config"]["Hostname"]
    assert count == "1"  # it sees the container's processes
    assert result.stderr == b"err\n"
    env = cli("exec", "-e", "A=1", "-w", "/tmp", sleeper, "sh", "-c", 'echo "$A $(pwd)"')
    assert (env.returncode, env.stdout) == (0, b"1 /tmp\n")
    piped = cli("exec", "-i", sleeper, "tr", "a-z", "A-Z", input=b"quiet\n")
    assert (piped.returncode, piped.stdout) == (0, b"QUIET\n")
    assert cli("exec", sleeper, "nosuch").returncode == 127


def test_exec_d_returns_at_once_and_the_command_runs_on(cli: Cli, sleeper: str) -> None:
    result = cli("exec", "-d", sleeper, "sh", "-c", "sleep 0.5; touch /done")
    assert (result.returncode, result.stdout) == (0, b"")
    end = time.monotonic() + DEADLINE
    while cli("exec", sleeper, "test", "-e", "/done").returncode != 0:
        assert time.monotonic() < end, "the detached exec never ran"
        time.sleep(0.1)


def test_stats_no_stream_prints_one_row_per_container(cli: Cli, sleeper: str) -> None:
    result = cli("stats", "--no-stream", sleeper)
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.decode().splitlines()
    assert header.split()[:4] == ["CONTAINER", "ID", "NAME", "CPU"]
    assert len(rows) == 1
    cells = re.split(r"\s{2,}", rows[0].strip())
    assert cells[0] == inspect(cli, sleeper)["Id"][:12] and cells[1] == sleeper
    assert re.fullmatch(r"\d+\.\d\d%", cells[2])
    assert re.fullmatch(r"[\d.]+\w*B / [\d.]+\w*B", cells[3])
    assert int(cells[-1]) >= 2  # the init and sleep


def test_stats_follows_until_the_container_stops(root: Path, cli: Cli, names: Names) -> None:
    name = names("short")
    assert cli("run", "-d", "--name", name, "base", "sleep", "2").returncode == 0
    wait_state(cli, name, running=True)
    result = sandbox(root, "stats", name)
    assert result.returncode == 0, result.stderr
    tables = result.stdout.decode().split("CONTAINER ID")[1:]
    assert len(tables) >= 2  # redrawn while it ran
    assert "%" in tables[0] and tables[-1].split()[-1] == "--"  # then shown stopped


# -- messages the daemon sends back -------------------------------------------------------


def test_run_rm_still_says_why_a_container_was_killed(cli: Cli, names: Names) -> None:
    name = names("hog")
    hog = "a=$(head -c 300m /dev/zero | tr '\\0' a); echo survived"
    result = cli("run", "--rm", "--name", name, "--memory", "64m", "base", "bash", "-c", hog)
    assert result.returncode == 137
    assert result.stderr.decode().splitlines()[-1].startswith("sandbox: out of memory")
    assert cli("inspect", name).returncode == 125  # removed: the message came with the exit


def test_the_async_client_pings_and_reads_the_version(root: Path) -> None:
    import asyncio

    from sandbox.client import AsyncClient

    async def ask() -> tuple[bool, str]:
        async with AsyncClient() as client:
            return await client.ping(), (await client.version())["ApiVersion"]

    pinged, api = asyncio.run(ask())
    assert pinged is True and api.count(".") == 1
