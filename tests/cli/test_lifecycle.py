"""A container's life through the real ``sandbox`` CLI: exit status, signals, logs, states.

Every test runs real containers on the session store and checks what a user
sees: exit statuses, what reaches stdout and stderr, the one-line messages,
and what ``ps``, ``inspect`` and ``logs`` show. Containers that must run while
the test acts on them are started in the background (``Background``), and
reads from them wait for a marker, never for a fixed time.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import select
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Background

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

Cli = Callable[..., subprocess.CompletedProcess[bytes]]
Names = Callable[[str], str]
DEADLINE = 60.0  # seconds a step may take before the test gives up (a hang guard only)


# -- helpers -----------------------------------------------------------------------


def read_until(stream: IO[bytes], marker: bytes, deadline: float = DEADLINE) -> bytes:
    """Read a pipe until ``marker`` appears (fails, never hangs, if it does not)."""
    fd = stream.fileno()
    data = b""
    end = time.monotonic() + deadline
    while marker not in data:
        left = end - time.monotonic()
        assert left > 0, f"{marker!r} never came; got {data!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            assert chunk, f"end of output before {marker!r}; got {data!r}"
            data += chunk
    return data


def inspect(cli: Cli, ref: str) -> dict[str, Any]:
    result = cli("inspect", ref)
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)[0]


def ps_rows(cli: Cli, *opts: str) -> dict[str, str]:
    """``sandbox ps`` as {name: whole row}."""
    result = cli("ps", *opts)
    assert result.returncode == 0, result.stderr.decode()
    return {line.split()[-1]: line for line in result.stdout.decode().splitlines()[1:]}


def one_line(stderr: bytes) -> str:
    """The single ``sandbox: ...`` line a failure prints (asserts there is just one)."""
    lines = stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sandbox: "), lines
    return lines[0]


def wait_running(cli: Cli, name: str, proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    """Poll ``inspect`` until the container runs (it is started by ``proc``)."""
    end = time.monotonic() + DEADLINE
    while True:
        assert proc.poll() is None, proc.communicate()
        result = cli("inspect", name)
        if result.returncode == 0:
            info = json.loads(result.stdout)[0]
            if info["State"]["Running"]:
                return info
        assert time.monotonic() < end, f"{name} never started"
        time.sleep(0.05)


# -- exit status -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "status"),
    [("true", 0), ("exit 3", 3), ("exit 255", 255), ("kill -9 $$", 137), ("kill -TERM $$", 143)],
)
def test_the_exit_status_of_the_command_passes_through(cli: Cli, script: str, status: int) -> None:
    result = cli("run", "--rm", "base", "bash", "-c", script)
    assert result.returncode == status
    assert result.stderr == b""


def test_an_unknown_command_exits_127_with_one_clear_line(cli: Cli, names: Names) -> None:
    name = names("nosuch")
    result = cli("run", "--rm", "--name", name, "base", "nosuch")
    assert result.returncode == 127
    assert result.stdout == b""
    assert result.stderr == b"sandbox: nosuch: command not found\n"
    assert name not in ps_rows(cli, "-a")  # --rm: nothing is left of it


def test_a_command_not_found_by_the_shell_is_127_too(cli: Cli) -> None:
    result = cli("run", "--rm", "base", "bash", "-c", "nosuch")
    assert result.returncode == 127
    assert b"nosuch: command not found" in result.stderr


def test_sandbox_kill_ends_run_and_wait_with_137(cli: Cli, background: Background,
                                                 names: Names) -> None:  # fmt: skip
    name = names("killed")
    run = background.start("run", "--name", name, "base", "bash", "-c",
                           "echo ready; exec sleep 1000")  # fmt: skip
    read_until(run.stdout, b"ready\n")
    waiting = background.start("wait", name)  # another process waits for the exit
    killed = cli("kill", name)
    assert killed.returncode == 0 and killed.stdout == f"{name}\n".encode()
    run.communicate(timeout=DEADLINE)
    assert run.returncode == 137
    out, err = waiting.communicate(timeout=DEADLINE)
    assert (out, err, waiting.returncode) == (b"137\n", b"", 0)
    assert inspect(cli, name)["State"]["ExitCode"] == 137
    assert cli("wait", name).stdout == b"137\n"  # and after the fact


def test_kill_of_a_container_that_is_not_running_is_refused(cli: Cli, names: Names) -> None:
    name = names("stopped")
    assert cli("run", "--name", name, "base", "true").returncode == 0
    result = cli("kill", name)
    assert result.returncode == 125
    assert one_line(result.stderr) == f"sandbox: Container {name} is not running"


def test_kill_with_a_bad_signal_name_says_so(cli: Cli, names: Names) -> None:
    result = cli("kill", "-s", "NOSUCH", names("any"))
    assert result.returncode == 125
    assert "invalid signal 'NOSUCH'" in one_line(result.stderr)


# -- PID 1 -------------------------------------------------------------------------


def test_init_reaps_orphaned_zombies(cli: Cli) -> None:
    # The orphan blocks on a fifo until released, so it is certainly
    # re-parented to PID 1 first; once released it exits, and only PID 1 can
    # reap it. The loop waits until it is gone (a zombie stays forever).
    script = """
        mkfifo /tmp/go
        (sh -c 'read x < /tmp/go' & echo $! > /tmp/orphan)
        p=$(cat /tmp/orphan)
        echo "parent $(ps -o ppid= -p $p | tr -d ' ')"
        echo go > /tmp/go
        for i in $(seq 200); do [ -e /proc/$p ] || break; sleep 0.05; done
        echo "states $(ps -eo stat= | tr -d ' \\n' | fold -w1 | sort -u | tr -d '\\n')"
        [ -e /proc/$p ] && echo "orphan $(ps -o stat= -p $p)" || echo "orphan reaped"
    """
    result = cli("run", "--rm", "base", "bash", "-c", script)
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stdout.decode().splitlines()
    assert lines[0] == "parent 1"
    assert "Z" not in lines[1], lines
    assert lines[2] == "orphan reaped"


def test_sandbox_kill_sends_a_signal_the_command_can_trap(cli: Cli, background: Background,
                                                          names: Names) -> None:  # fmt: skip
    name = names("trap")
    script = 'trap "echo got TERM; exit 7" TERM; echo ready; while :; do sleep 0.1; done'
    run = background.start("run", "--name", name, "base", "bash", "-c", script)
    read_until(run.stdout, b"ready\n")
    assert cli("kill", "-s", "TERM", name).returncode == 0
    out, _ = run.communicate(timeout=DEADLINE)
    assert run.returncode == 7
    assert out == b"got TERM\n"  # after "ready", which read_until took
    assert cli("wait", name).stdout == b"7\n"


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 8), (signal.SIGTERM, 9)])
def test_signals_to_sandbox_run_are_forwarded_to_the_container(
    cli: Cli, background: Background, names: Names, sig: signal.Signals, status: int
) -> None:
    # As docker's sig-proxy: ^C or a kill aimed at `sandbox run` (no tty)
    # reaches the command, which decides what to do with it.
    name = names("proxy")
    script = ('trap "echo got INT; exit 8" INT; trap "echo got TERM; exit 9" TERM; '
              "echo ready; while :; do sleep 0.1; done")  # fmt: skip
    run = background.start("run", "--name", name, "base", "bash", "-c", script)
    read_until(run.stdout, b"ready\n")
    run.send_signal(sig)
    out, _ = run.communicate(timeout=DEADLINE)
    assert run.returncode == status
    assert out == f"got {sig.name[3:]}\n".encode()


# -- output and logs ---------------------------------------------------------------

TWO_STREAMS = "echo out1; echo err1 >&2; echo out2; echo err2 >&2"


def test_stdout_and_stderr_stay_apart_in_run_and_in_logs(cli: Cli, names: Names) -> None:
    name = names("streams")
    result = cli("run", "--name", name, "base", "bash", "-c", TWO_STREAMS)
    assert result.returncode == 0
    assert result.stdout == b"out1\nout2\n"
    assert result.stderr == b"err1\nerr2\n"
    logs = cli("logs", name)
    assert logs.returncode == 0
    assert logs.stdout == b"out1\nout2\n"
    assert logs.stderr == b"err1\nerr2\n"


def test_the_log_file_is_json_lines_with_log_stream_and_time(cli: Cli, names: Names) -> None:
    name = names("jsonlog")
    assert cli("run", "--name", name, "base", "bash", "-c", TWO_STREAMS).returncode == 0
    info = inspect(cli, name)
    assert info["HostConfig"]["LogConfig"]["Type"] == "json-file"
    lines = Path(info["LogPath"]).read_bytes().splitlines()
    assert lines
    text = {"stdout": "", "stderr": ""}
    for line in lines:
        entry = json.loads(line)
        assert set(entry) == {"log", "stream", "time"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", entry["time"])
        text[entry["stream"]] += entry["log"]
    assert text == {"stdout": "out1\nout2\n", "stderr": "err1\nerr2\n"}


def test_logs_follow_streams_lines_as_they_come_and_ends_at_exit(
    cli: Cli, background: Background, names: Names
) -> None:
    # Each line after the first waits for a line on stdin, so `logs -f` can
    # only show it if it streams: the test sends the input after seeing the
    # line before.
    name = names("follow")
    run = background.start("run", "-i", "--name", name, "base", "bash", "-c",
                           "echo one; read x; echo two >&2; read y; echo three",
                           stdin=subprocess.PIPE)  # fmt: skip
    assert run.stdin is not None
    read_until(run.stdout, b"one\n")
    follow = background.start("logs", "-f", name)
    assert read_until(follow.stdout, b"one\n") == b"one\n"
    run.stdin.write(b"a\n")
    run.stdin.flush()
    assert read_until(follow.stderr, b"two\n") == b"two\n"
    assert follow.poll() is None  # still following: the container still runs
    run.stdin.write(b"b\n")
    run.stdin.close()
    out, err = follow.communicate(timeout=DEADLINE)  # ends by itself once it exits
    assert follow.returncode == 0
    assert (out, err) == (b"three\n", b"")
    run.wait(timeout=DEADLINE)
    assert run.returncode == 0


def test_a_reader_that_goes_away_ends_the_command_as_in_a_shell_pipeline(
    cli: Cli, background: Background, names: Names
) -> None:
    # `sandbox run base yes | head -1`: once head has gone, yes gets SIGPIPE.
    name = names("pipe")
    run = background.start("run", "--rm", "--name", name, "base", "yes")
    assert run.stdout is not None and run.stderr is not None
    read_until(run.stdout, b"y\n")
    run.stdout.close()
    assert run.wait(timeout=DEADLINE) == 128 + signal.SIGPIPE
    assert run.stderr.read() == b""  # no traceback, no "Exception ignored"
    assert name not in ps_rows(cli, "-a")


ALL_BYTES = bytes(range(256))  # NUL, controls, and 128 bytes that are not UTF-8


def test_binary_output_round_trips_byte_exact_through_run_and_logs(cli: Cli, names: Names) -> None:
    name = names("binary")
    script = "printf \"$(printf '\\\\%03o' $(seq 0 255))\"; printf '\\xff\\xfe\\x80' >&2"
    result = cli("run", "--name", name, "base", "bash", "-c", script)
    assert result.returncode == 0
    assert result.stdout == ALL_BYTES
    assert result.stderr == b"\xff\xfe\x80"
    logs = cli("logs", name)
    assert logs.stdout == ALL_BYTES
    assert logs.stderr == b"\xff\xfe\x80"


def test_random_bytes_round_trip_through_run_and_logs(cli: Cli, names: Names) -> None:
    name = names("random")
    script = "head -c 256 /dev/urandom > /tmp/r; sha256sum < /tmp/r >&2; cat /tmp/r"
    result = cli("run", "--name", name, "base", "bash", "-c", script)
    assert result.returncode == 0
    digest = result.stderr.split()[0].decode()
    assert len(result.stdout) == 256
    assert hashlib.sha256(result.stdout).hexdigest() == digest
    assert cli("logs", name).stdout == result.stdout


# -- lifecycle ---------------------------------------------------------------------


def test_create_start_ps_wait_rm(cli: Cli, background: Background, names: Names) -> None:
    name = names("life")
    created = cli("create", "-i", "--name", name, "base", "bash", "-c", "read x; exit 4")
    assert created.returncode == 0
    cid = created.stdout.decode().strip()
    assert re.fullmatch(r"[0-9a-f]{64}", cid)
    assert "Created" in ps_rows(cli, "-a")[name]
    assert name not in ps_rows(cli)
    assert inspect(cli, name)["State"]["Status"] == "created"

    start = background.start("start", "-i", name, stdin=subprocess.PIPE)
    assert start.stdin is not None
    info = wait_running(cli, name, start)
    assert info["Id"] == cid and info["State"]["Pid"] > 0
    row = ps_rows(cli)[name]  # `ps` in another process sees it running
    assert row.startswith(cid[:12]) and " Up " in row
    waiting = background.start("wait", name)
    start.stdin.write(b"\n")
    start.stdin.close()
    assert waiting.communicate(timeout=DEADLINE)[0] == b"4\n"
    start.wait(timeout=DEADLINE)
    assert start.returncode == 4

    assert name not in ps_rows(cli)
    assert "Exited (4)" in ps_rows(cli, "-a")[name]
    removed = cli("rm", name)
    assert removed.returncode == 0 and removed.stdout == f"{name}\n".encode()
    assert name not in ps_rows(cli, "-a")
    assert cli("inspect", name).returncode != 0


def test_ps_hides_exited_containers_and_ps_a_shows_their_status(cli: Cli, names: Names) -> None:
    name = names("exited")
    assert cli("run", "--name", name, "base", "bash", "-c", "exit 6").returncode == 6
    assert name not in ps_rows(cli)
    assert re.search(r"Exited \(6\) .* ago", ps_rows(cli, "-a")[name])
    quiet = cli("ps", "-a", "-q").stdout.decode().split()
    assert inspect(cli, name)["Id"][:12] in quiet


def test_rm_of_a_running_container_is_refused_and_rm_f_removes_it(
    cli: Cli, background: Background, names: Names
) -> None:
    name = names("busy")
    run = background.start("run", "--name", name, "base", "bash", "-c",
                           "echo ready; exec sleep 1000")  # fmt: skip
    read_until(run.stdout, b"ready\n")
    refused = cli("rm", name)
    assert refused.returncode == 125
    line = one_line(refused.stderr)
    assert f"cannot remove the running container {name}" in line and "--force" in line
    assert " Up " in ps_rows(cli)[name]  # untouched

    forced = cli("rm", "-f", name)
    assert forced.returncode == 0, forced.stderr.decode()
    # Gone as soon as rm -f returns, as with Docker.
    assert name not in ps_rows(cli, "-a")
    assert cli("inspect", name).returncode != 0
    run.communicate(timeout=DEADLINE)
    assert run.returncode == 137
    assert name not in ps_rows(cli, "-a")  # the process that ran it did not save it back


@pytest.mark.parametrize("script", ["true", "exit 3", "kill -9 $$"])
def test_run_rm_leaves_no_container_behind(cli: Cli, root: Path, names: Names,
                                           script: str) -> None:  # fmt: skip
    before = sorted(os.listdir(root / "containers"))
    name = names("gone")
    cli("run", "--rm", "--name", name, "base", "bash", "-c", script)
    assert name not in ps_rows(cli, "-a")
    assert sorted(os.listdir(root / "containers")) == before
    assert not (root / "names" / name).exists()


def test_run_rm_that_cannot_start_leaves_no_container_behind(cli: Cli, root: Path,
                                                             names: Names) -> None:  # fmt: skip
    before = sorted(os.listdir(root / "containers"))
    name = names("nostart")
    # Valid for the CLI, refused by the kernel when the cgroup is made.
    result = cli("run", "--rm", "--name", name, "--pids-limit", "99999999999999999999",
                 "base", "true")  # fmt: skip
    assert result.returncode == 125
    assert "pids.max" in one_line(result.stderr)
    assert sorted(os.listdir(root / "containers")) == before
    assert not (root / "names" / name).exists()


@pytest.mark.parametrize("command", ["create", "run"])
def test_a_duplicate_name_is_refused_and_the_store_is_unchanged(
    cli: Cli, root: Path, names: Names, command: str
) -> None:
    name = names("dup")
    first = cli("create", "--name", name, "base", "true")
    assert first.returncode == 0
    before = (sorted(os.listdir(root / "containers")), sorted(os.listdir(root / "names")),
              cli("ps", "-a", "-q").stdout)  # fmt: skip
    again = cli(command, "--name", name, "base", "echo", "second")
    assert again.returncode == 125
    assert again.stdout == b""
    line = one_line(again.stderr)
    assert f'the container name "{name}" is already in use' in line
    assert first.stdout.decode()[:12] in line
    after = (sorted(os.listdir(root / "containers")), sorted(os.listdir(root / "names")),
             cli("ps", "-a", "-q").stdout)  # fmt: skip
    assert after == before
    assert inspect(cli, name)["Config"]["Cmd"] == ["true"]


def test_inspect_a_container_gives_the_fields_docker_clients_read(cli: Cli, names: Names) -> None:
    name = names("fields")
    assert cli("run", "--name", name, "-e", "A=1", "-w", "/tmp", "base",
               "bash", "-c", "echo x > /f; exit 2").returncode == 2  # fmt: skip
    info = inspect(cli, name)
    assert re.fullmatch(r"[0-9a-f]{64}", info["Id"])
    assert info["Name"] == f"/{name}"
    assert info["Path"] == "bash" and info["Args"] == ["-c", "echo x > /f; exit 2"]
    assert info["Image"].startswith("sha256:")
    state = info["State"]
    assert state["Status"] == "exited" and state["Running"] is False
    assert state["ExitCode"] == 2 and state["OOMKilled"] is False and state["Pid"] == 0
    for stamp in (state["StartedAt"], state["FinishedAt"], info["Created"]):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", stamp)
    config = info["Config"]
    assert config["Cmd"] == ["bash", "-c", "echo x > /f; exit 2"]
    assert config["Image"] == "base" and config["WorkingDir"] == "/tmp"
    assert "A=1" in config["Env"] and config["Tty"] is False
    data = info["GraphDriver"]["Data"]
    assert info["GraphDriver"]["Name"] == "overlay2"
    assert (Path(data["UpperDir"]) / "f").read_text() == "x\n"  # the container's own layer
    assert all(Path(p).is_dir() for p in data["LowerDir"].split(":"))
    assert {"MergedDir", "WorkDir"} <= set(data)
    host = info["HostConfig"]
    assert host["AutoRemove"] is False and host["Memory"] == 0


def test_inspect_an_image_gives_the_fields_docker_clients_read(cli: Cli) -> None:
    [info] = json.loads(cli("inspect", "base").stdout)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", info["Id"])
    assert "base:latest" in info["RepoTags"]
    assert info["Config"]["Cmd"] == ["bash"]
    assert any(e.startswith("PATH=") for e in info["Config"]["Env"])
    assert info["Os"] == "linux" and info["Architecture"]
    assert info["RootFS"]["Type"] == "layers"
    assert info["Size"] > 0 and info["History"]


def test_inspect_of_something_that_does_not_exist_says_so(cli: Cli) -> None:
    result = cli("inspect", "no-such-thing-anywhere")
    assert result.returncode == 125
    assert "No such object: no-such-thing-anywhere" in one_line(result.stderr)
