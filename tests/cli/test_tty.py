"""``sandbox run -it`` gives a real pty shell: job control works, the window size follows.

The test plays the terminal: it makes a pseudo-terminal, sets its size,
starts ``sandbox run -it --rm base bash`` with the slave as its controlling
terminal, and types into the master. Every read waits for a marker that only
the shell's output can contain (``<<$((N))>>`` echoes as ``<<N>>``), with a
deadline so that a broken pty fails the test instead of hanging the suite.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

Cli = Callable[..., subprocess.CompletedProcess[bytes]]
DEADLINE = 30.0  # seconds a step may take before the test gives up (a hang guard only)


def set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _make_controlling_terminal() -> None:  # runs in the child, after setsid
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """The user's terminal around ``sandbox run -it``: a pty the test types into."""

    def __init__(self, root: Path, args: list[str], rows: int = 30, cols: int = 100) -> None:
        self.master, slave = os.openpty()
        set_size(self.master, rows, cols)  # before the start, as a real terminal has one
        env = {**os.environ, "SANDBOX_ROOT": str(root), "NO_COLOR": "1", "TERM": "xterm"}
        exe = Path(sys.executable).with_name("sandbox")
        try:
            self.proc = subprocess.Popen([str(exe), *args], env=env, stdin=slave, stdout=slave,
                                         stderr=slave, start_new_session=True,
                                         preexec_fn=_make_controlling_terminal)  # fmt: skip
        finally:
            os.close(slave)
        self.buffer = b""  # read from the terminal, not consumed yet
        self.seen = b""  # everything consumed so far
        self.markers = 0
        self.container_pid = 0  # the host PID of the container's init, once it runs

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def read_until(self, pattern: bytes, deadline: float = DEADLINE) -> bytes:
        """Read until ``pattern`` (a regex) matches; returns (and consumes) up to its end."""
        end = time.monotonic() + deadline
        while True:
            match = re.search(pattern, self.buffer)
            if match:
                consumed, self.buffer = self.buffer[: match.end()], self.buffer[match.end() :]
                self.seen += consumed
                return consumed
            left = end - time.monotonic()
            assert left > 0, f"{pattern!r} never came; got {self.buffer!r}"
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # EIO: the other side is closed
                    chunk = b""
                assert chunk, f"the terminal closed before {pattern!r}; got {self.buffer!r}"
                self.buffer += chunk

    def command(self, line: str) -> str:
        """Type ``line``, wait until it has run; returns its output (plain text, LF)."""
        self.markers += 1
        typed = f'echo "<<$(({self.markers}))>>"'
        joint = " " if line.endswith("&") else "; "
        self.send(f"{line}{joint}{typed}\r".encode())
        # The typed line is echoed (twice if typed ahead: by the terminal, then
        # by readline), then comes the output, then the marker.
        output = self.read_until(rb"<<%d>>\r\n" % self.markers)
        echo = typed.encode() + b"\r\n"
        assert echo in output, output
        output = output[output.rindex(echo) + len(echo) :]
        text = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]|\r", b"", output).decode()
        return text.removesuffix(f"<<{self.markers}>>\n")

    def wait(self) -> int:
        end = time.monotonic() + DEADLINE
        while self.proc.poll() is None:
            assert time.monotonic() < end, "sandbox run -it did not end"
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:  # keep the pty drained so the process can finish writing
                with contextlib.suppress(OSError):
                    os.read(self.master, 65536)
        return self.proc.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=DEADLINE)
        os.close(self.master)


@pytest.fixture
def shell(root: Path, cli: Cli) -> Iterator[tuple[Terminal, str]]:
    """A ``sandbox run -it --rm base bash`` at its first prompt, and its container name."""
    name = f"tty-{uuid.uuid4().hex[:8]}"
    term = Terminal(root, ["run", "-it", "--rm", "--name", name, "base", "bash"])
    try:
        term.read_until(rb"# ")  # the first prompt
        # The daemon runs the container, so its processes descend from the
        # container's init, not from `sandbox run`.
        term.container_pid = json.loads(cli("inspect", name).stdout)[0]["State"]["Pid"]
        # A plain prompt makes the output easy to read; it changes nothing else.
        term.command("PS1='$ '; bind 'set enable-bracketed-paste off'")
        yield term, name
    finally:
        if term.proc.poll() is None:  # leave as a user would, so the normal clean-up runs
            with contextlib.suppress(OSError, AssertionError):
                term.send(b"exit\r")
                term.wait()
        killed = term.proc.poll() is None
        term.close()
        if killed:  # the engine died with it: the next one reconciles
            cli("rm", "-f", name)


def test_it_gives_a_real_pty_with_the_terminals_size(shell: tuple[Terminal, str]) -> None:
    term, _ = shell
    assert term.command("tty") == "/dev/pts/0\n"
    assert term.command("stty size") == "30 100\n"
    assert term.command("echo $TERM; [ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo all-tty") == (
        "xterm\nall-tty\n"
    )


def test_the_window_size_follows_the_terminal(shell: tuple[Terminal, str]) -> None:
    term, _ = shell
    assert term.command("stty size") == "30 100\n"
    set_size(term.master, 40, 120)
    os.kill(term.proc.pid, signal.SIGWINCH)
    sizes = [term.command("stty size")]
    while sizes[-1] != "40 120\n" and len(sizes) < 20:  # the resize is asynchronous
        sizes.append(term.command("stty size"))
    assert sizes[-1] == "40 120\n", sizes
    assert term.command("echo $COLUMNS $LINES") == "120 40\n"  # bash saw SIGWINCH too


def test_job_control_works(shell: tuple[Terminal, str]) -> None:
    term, _ = shell
    assert term.command("set -o | grep -w monitor").split() == ["monitor", "on"]
    term.command("sleep 30 &")
    assert re.fullmatch(r"\[1\]\+\s+Running\s+sleep 30 &\n", term.command("jobs"))
    # ^Z stops the foreground job (the terminal sends SIGTSTP to its group).
    term.send(b"sleep 31\r")
    term.read_until(rb"sleep 31\r\n")
    wait_for_process(term, "sleep 31")
    term.send(b"\x1a")
    term.read_until(rb"Stopped\s+sleep 31")
    jobs = term.command("jobs")
    assert re.search(r"\[1\]-\s+Running\s+sleep 30 &", jobs), jobs
    assert re.search(r"\[2\]\+\s+Stopped\s+sleep 31", jobs), jobs
    term.command("kill %1 %2")
    reports = [term.command("jobs")]
    while reports[-1] and len(reports) < 50:  # until both have ended (the stopped one too)
        reports.append(term.command("sleep 0.1; jobs"))
    assert reports[-1] == "", reports
    assert term.seen.count(b"Terminated") == 2, term.seen


def wait_for_process(term: Terminal, cmdline: str) -> None:
    """Wait until a process with this command line runs inside the shell's container."""
    wanted = cmdline.replace(" ", "\0").encode() + b"\0"
    assert term.container_pid > 0
    end = time.monotonic() + DEADLINE
    while True:
        for pid in os.listdir("/proc"):
            if pid.isdigit() and _in_container(int(pid), term.container_pid):
                try:
                    if Path(f"/proc/{pid}/cmdline").read_bytes() == wanted:
                        return
                except OSError:
                    continue
        assert time.monotonic() < end, f"{cmdline} never started"
        time.sleep(0.01)


def _in_container(pid: int, init_pid: int) -> bool:
    """True if ``pid`` descends from the container's init (every process in it does)."""
    for _ in range(10):
        try:
            stat = Path(f"/proc/{pid}/stat").read_bytes()
        except OSError:
            return False
        pid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        if pid == init_pid:
            return True
        if pid <= 1:
            return False
    return False


def test_ctrl_c_interrupts_the_foreground_command_and_the_shell_stays(
    shell: tuple[Terminal, str],
) -> None:
    term, _ = shell
    term.send(b"sleep 100\r")
    term.read_until(rb"sleep 100\r\n")
    wait_for_process(term, "sleep 100")
    term.send(b"\x03")
    term.read_until(rb"\^C")
    # Back at the prompt long before the sleep could have ended by itself.
    assert term.command("echo $?") == "130\n"
    assert term.command("echo still here") == "still here\n"


def test_exit_status_of_the_shell_is_the_status_of_run(shell: tuple[Terminal, str],
                                                       cli: Cli) -> None:  # fmt: skip
    term, name = shell
    assert json.loads(cli("inspect", name).stdout)[0]["Config"]["Tty"] is True
    term.send(b"exit 5\r")
    assert term.wait() == 5
    assert cli("inspect", name).returncode != 0  # --rm removed it
