"""Resource limits hold for real containers run through the ``sandbox`` CLI.

Issue #2: a memory hog under --memory 64m is killed and reported as out of
memory (exit 137 plus a message naming the limit); a fork bomb under
--pids-limit 64 is stopped and the host is unharmed; a busy loop under
--cpus 0.5 gets about half a core. When the container ends, every process in
it is killed and the cgroup removed.

Nothing here is timed except the CPU share, which is a ratio of CPU time to
wall time, compared with the same loop run without a limit.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Background

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

CGROUP_ROOT = Path("/sys/fs/cgroup")
V1 = (CGROUP_ROOT / "pids").is_dir() and not (CGROUP_ROOT / "cgroup.controllers").exists()
Cli = Callable[..., subprocess.CompletedProcess[bytes]]
Names = Callable[[str], str]
DEADLINE = 60.0  # seconds a step may take before the test gives up (a hang guard only)


# -- helpers -----------------------------------------------------------------------


def cgroup_dir(controller: str, cid: str) -> Path:
    """The container's cgroup directory for ``controller`` (v1) or its unified one (v2)."""
    if V1:
        return CGROUP_ROOT / controller / "sandbox" / cid
    return CGROUP_ROOT / "sandbox" / cid


def every_cgroup_dir(cid: str) -> list[Path]:
    """Every place the container's cgroup could be, in every hierarchy."""
    return [p / cid for p in CGROUP_ROOT.glob("*/sandbox")] + [CGROUP_ROOT / "sandbox" / cid]


def inspect(cli: Cli, ref: str) -> dict[str, Any]:
    result = cli("inspect", ref)
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)[0]


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


def pids_of(cid: str) -> list[int]:
    procs = cgroup_dir("pids", cid) / "cgroup.procs"
    return [int(line) for line in procs.read_text().split()]


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def start_time(pid: int) -> int | None:
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return int(data[data.rindex(b")") + 2 :].split()[19])


# -- memory ------------------------------------------------------------------------


def test_memory_hog_is_killed_and_reported_as_out_of_memory(cli: Cli, names: Names) -> None:
    name = names("hog")
    hog = "a=$(head -c 300m /dev/zero | tr '\\0' a); echo survived"
    result = cli("run", "--name", name, "--memory", "64m", "base", "bash", "-c", hog)
    err = result.stderr.decode()
    assert result.returncode == 137, err
    assert b"survived" not in result.stdout
    assert "out of memory" in err and "64 MiB" in err and "--memory" in err
    state = inspect(cli, name)["State"]
    assert state["OOMKilled"] is True
    assert state["ExitCode"] == 137
    assert "out of memory" in state["Error"]


def test_a_container_under_its_memory_limit_is_not_reported_as_oom(cli: Cli, names: Names) -> None:
    name = names("small")
    result = cli("run", "--name", name, "--memory", "64m", "base",
                 "bash", "-c", "a=$(head -c 8m /dev/zero | tr '\\0' a); echo ${#a}")  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.split() == [str(8 * 1024 * 1024).encode()]
    assert b"out of memory" not in result.stderr
    assert inspect(cli, name)["State"]["OOMKilled"] is False


# -- processes ---------------------------------------------------------------------


def test_fork_bomb_is_stopped_at_the_pids_limit_and_the_host_is_unharmed(
    cli: Cli, background: Background, names: Names
) -> None:
    name = names("bomb")
    # `exec sleep` needs no fork, so the container stays up however full it is.
    run = background.start("run", "--name", name, "--pids-limit", "64", "base",
                           "bash", "-c", ":(){ :|:& };:; exec sleep 1000")  # fmt: skip
    cid = ""
    end = time.monotonic() + DEADLINE
    while not cid:  # until the engine has saved it as running
        assert time.monotonic() < end, "the container never started"
        assert run.poll() is None, run.communicate()
        result = cli("inspect", name)
        if result.returncode == 0 and json.loads(result.stdout)[0]["State"]["Running"]:
            cid = json.loads(result.stdout)[0]["Id"]
        else:
            time.sleep(0.05)
    pids = cgroup_dir("pids", cid)
    # Watch the bomb from the host until it has run into the limit: it never
    # gets past 64 processes.
    samples = []
    while True:
        assert time.monotonic() < end, f"the bomb never reached the limit: {samples[-5:]}"
        samples.append(int((pids / "pids.current").read_text()))
        hits = dict(line.split() for line in (pids / "pids.events").read_text().splitlines())
        if int(hits.get("max", 0)) > 0 and samples[-1] >= 60:
            break
        time.sleep(0.01)
    assert max(samples) <= 64, samples
    assert (pids / "pids.max").read_text().strip() == "64"

    # The host can still start processes while the bomb goes on.
    assert subprocess.run(["true"], check=False).returncode == 0
    assert cli("run", "--rm", "base", "echo", "fine").stdout == b"fine\n"

    inside = pids_of(cid)
    starts = {pid: start_time(pid) for pid in inside}
    killed = cli("kill", name)
    assert killed.returncode == 0, killed.stderr.decode()
    _, err = run.communicate(timeout=DEADLINE)
    assert run.returncode == 137
    last = err.decode().splitlines()[-1]
    assert last.startswith("sandbox: process limit reached"), err.decode()[-500:]
    assert "64 processes" in last and "--pids-limit" in last
    assert "process limit reached" in inspect(cli, name)["State"]["Error"]
    # Nothing of it is left: every process is gone, the cgroup removed.
    alive = [p for p, t in starts.items() if t is not None and start_time(p) == t]
    assert not alive, f"processes of the bomb outlived it: {alive}"
    assert not [d for d in every_cgroup_dir(cid) if d.exists()]


def test_when_the_container_ends_every_process_is_killed_and_the_cgroup_removed(
    cli: Cli, background: Background, names: Names
) -> None:
    name = names("ends")
    # Children that try to escape: a background job, a new session, a
    # double-forked daemon. The shell then waits for a line on stdin.
    script = ("sleep 1000 & setsid sleep 1001 & (sleep 1002 &); "
              "echo ready; read line; echo bye")  # fmt: skip
    run = background.start("run", "-i", "--name", name, "base", "bash", "-c", script,
                           stdin=subprocess.PIPE)  # fmt: skip
    read_until(run.stdout, b"ready\n")
    cid = inspect(cli, name)["Id"]
    dirs = [d for d in every_cgroup_dir(cid) if d.exists()]
    assert dirs, "the container has no cgroup"
    end = time.monotonic() + DEADLINE
    while True:  # until the three have exec'd sleep
        inside = pids_of(cid)
        cmdlines = [cmdline(p) for p in inside]
        if sum(c.startswith(b"sleep\0") for c in cmdlines) == 3:
            break
        assert time.monotonic() < end, cmdlines
        time.sleep(0.01)
    starts = {pid: start_time(pid) for pid in inside}

    out, _ = run.communicate(b"go\n", timeout=DEADLINE)  # the shell ends, its children remain
    assert run.returncode == 0
    assert out.endswith(b"bye\n")
    alive = [p for p, t in starts.items() if t is not None and start_time(p) == t]
    assert not alive, f"processes outlived their container: {alive}"
    assert not [d for d in dirs if d.exists()], "the cgroup was not removed"


# -- CPU ---------------------------------------------------------------------------

BUSY = "timeout 2 bash -c 'while :; do :; done'; times"
WALL = 2.0


def cpu_share(cli: Cli, *opts: str) -> float:
    """CPU time a 2 s busy loop got, per second of wall time (1.0 = one whole core)."""
    result = cli("run", "--rm", *opts, "base", "bash", "-c", BUSY)
    assert result.returncode == 0, result.stderr.decode()
    # `times` prints the shell's user and system time, then its children's.
    children = result.stdout.decode().splitlines()[1]
    used = sum(int(m) * 60 + float(s) for m, s in re.findall(r"(\d+)m([\d.]+)s", children))
    return used / WALL


@pytest.mark.slow
def test_cpus_half_gives_about_half_a_core_and_no_limit_gives_a_whole_one(cli: Cli) -> None:
    # The quota is a hard ceiling, so every run stays under it; the floors
    # depend on the host having a core free, so they get a few tries on a
    # busy host (other processes there take their fair share).
    limited = []
    for _ in range(3):
        limited.append(cpu_share(cli, "--cpus", "0.5"))
        assert limited[-1] < 0.7, f"--cpus 0.5 got {limited[-1]:.2f} of a core"
        if limited[-1] > 0.3:
            break
    assert 0.3 < max(limited) < 0.7, f"--cpus 0.5 got {limited} of a core"
    free = []
    for _ in range(5):
        free.append(cpu_share(cli))
        if free[-1] > 0.8:
            break
    assert max(free) > 0.8, f"without a limit the loop got only {free} of a core"


def test_cpu_shares_and_memory_swap_are_accepted_and_shown_by_inspect(
    cli: Cli, background: Background, names: Names
) -> None:
    name = names("shares")
    run = background.start("run", "-i", "--name", name, "--cpu-shares", "512", "--memory", "64m",
                           "--memory-swap", "128m", "--cpus", "1.5", "--pids-limit", "100",
                           "base", "bash", "-c", "echo ready; read line",
                           stdin=subprocess.PIPE)  # fmt: skip
    read_until(run.stdout, b"ready\n")
    info = inspect(cli, name)
    host = info["HostConfig"]
    assert host["CpuShares"] == 512
    assert host["Memory"] == 64 * 1024 * 1024
    assert host["MemorySwap"] == 128 * 1024 * 1024
    assert host["NanoCpus"] == 1_500_000_000
    assert host["PidsLimit"] == 100
    if V1:  # and the kernel enforces them
        cid = info["Id"]
        assert (cgroup_dir("cpu", cid) / "cpu.shares").read_text().strip() == "512"
        assert (cgroup_dir("cpu", cid) / "cpu.cfs_quota_us").read_text().strip() == "150000"
        memsw = cgroup_dir("memory", cid) / "memory.memsw.limit_in_bytes"
        if memsw.exists():
            assert memsw.read_text().strip() == str(128 * 1024 * 1024)
    run.communicate(b"\n", timeout=DEADLINE)
    assert run.returncode == 0


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        (["--memory", "64x"], "--memory"),
        (["--memory", "1m"], "too small"),
        (["--memory-swap", "128m"], "--memory-swap needs --memory"),
        (["--memory", "64m", "--memory-swap", "32m"], "less than --memory 64m"),
        (["--cpus", "1000"], f"only {os.cpu_count()} CPUs"),
        (["--cpus", "0.001"], "use 0.01 to"),
        (["--cpu-shares", "1"], "--cpu-shares"),
    ],
)
def test_a_bad_limit_is_refused_with_one_line_and_nothing_is_created(
    cli: Cli, names: Names, opts: list[str], message: str
) -> None:
    name = names("bad")
    result = cli("run", "--rm", "--name", name, *opts, "base", "true")
    assert result.returncode == 125
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sandbox: ") and message in lines[0], lines
    assert cli("inspect", name).returncode != 0  # no container was made
