"""Processes started in running containers (``docker exec``), kept in memory.

Docker keeps exec instances in the daemon's memory, not in the store, and so
does the engine: one `ExecRecord` per ``exec create``, started at most once,
its exit status kept for ``exec inspect`` until the container exits, when
every exec instance of the container is dropped. An exec'd process is killed
with its container (it is in the container's PID namespace and cgroup), and
its output goes only to whoever started it, never to the container's log.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import shlex
import struct
import termios
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sandbox.engine import reconcile
from sandbox.engine.running import OutputListener, Running
from sandbox.errors import (
    CommandNotFound,
    Conflict,
    ContainerNotRunning,
    ExecNotFound,
    InvalidArgument,
    RuntimeFailure,
)
from sandbox.runtime.cgroups import Cgroup
from sandbox.runtime.exec import exec_into
from sandbox.runtime.spawn import Spawned
from sandbox.runtime.spec import ProcessSpec
from sandbox.store.containers import RUNNING, ContainerRecord

if TYPE_CHECKING:
    from sandbox.engine.core import Engine

#: Seconds an exited exec's output streams get to reach end-of-file before
#: they are closed (a background child may hold them open), as moby waits.
STREAM_GRACE = 2.0
ROOT_USERS = ("", "root", "0", "root:root", "0:0")


@dataclass
class ExecRecord:
    """One exec instance (Docker's ExecConfig).

    Attributes:
        id: 64 hex digits.
        container_id: the container it runs in.
        cmd: the command and its arguments.
        env: the whole environment (the container's, then the exec's).
        workdir: the working directory inside the container.
        tty: give the process a terminal from the container's devpts.
        attach_stdin, attach_stdout, attach_stderr: the streams a client
            that starts it gets.
        owner: the uid that created it.
        running: the process runs.
        exit_code: its exit status (128 + N for signal N); None until it has
            exited (126/127 if it could not start).
        pid: its host PID once started.
    """

    id: str
    container_id: str
    cmd: list[str]
    env: list[str]
    workdir: str
    tty: bool = False
    attach_stdin: bool = False
    attach_stdout: bool = True
    attach_stderr: bool = True
    owner: int = 0
    running: bool = False
    exit_code: int | None = None
    pid: int = 0
    started: bool = False
    process: Running | None = field(default=None, repr=False)
    console_size: tuple[int, int] | None = None

    def inspect(self) -> dict[str, Any]:
        """``GET /exec/{id}/json``, in Docker's shape."""
        return {
            "ID": self.id,
            "Running": self.running,
            "ExitCode": self.exit_code,
            "ProcessConfig": {
                "tty": self.tty,
                "entrypoint": self.cmd[0],
                "arguments": self.cmd[1:],
                "privileged": False,
                "user": "",
            },
            "OpenStdin": self.attach_stdin,
            "OpenStderr": self.attach_stderr,
            "OpenStdout": self.attach_stdout,
            "CanRemove": False,
            "ContainerID": self.container_id,
            "DetachKeys": "",
            "Pid": self.pid,
        }


class ExecProcess(Running):
    """An exec'd process's pumps: like a container's, with no log.

    Its exit does not end the streams, since a background child may hold
    them: they get `STREAM_GRACE` seconds, then are closed.
    """

    def __init__(self, spawned: Spawned, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(spawned, None, loop)

    def _reap(self) -> None:
        super()._reap()
        if self._open_streams and not self.exited.done():
            self.loop.call_later(STREAM_GRACE, self._cut_streams)

    def _cut_streams(self) -> None:
        for fd in list(self._open_streams):
            self._close_stream(fd)


class Execs:
    """The engine's exec instances, by ID."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.records: dict[str, ExecRecord] = {}
        self._watched: dict[str, Running] = {}  # container ID -> the run we drop with

    def create(
        self,
        ref: str,
        cmd: list[str],
        *,
        env: list[str] | None = None,
        workdir: str | None = None,
        tty: bool = False,
        attach_stdin: bool = False,
        attach_stdout: bool = True,
        attach_stderr: bool = True,
        user: str = "",
        owner: int = 0,
    ) -> ExecRecord:
        """Make an exec instance for a running container (nothing runs yet).

        Raises:
            ContainerNotFound: no such container.
            ContainerNotRunning: it is not running.
            InvalidArgument: no command, a malformed variable or directory,
                or another user than root.
        """
        container = self.engine.store.containers.find(ref)
        if not cmd:
            raise InvalidArgument("No exec command specified: give the command to run")
        for item in env or []:
            if "=" not in item or item.startswith("="):
                raise InvalidArgument(f"invalid environment variable {item!r}: use KEY=VALUE")
        if workdir and not workdir.startswith("/"):
            raise InvalidArgument(f"invalid working directory {workdir!r}: use an absolute path")
        if user.strip() not in ROOT_USERS:
            raise InvalidArgument(
                f"cannot exec as user {user!r}: commands in a sandbox container run as root; "
                "use `su` or `setpriv` inside the container to drop to another user"
            )
        self._check_running(container)
        self._prune()
        record = ExecRecord(
            id=os.urandom(32).hex(),
            container_id=container.id,
            cmd=list(cmd),
            env=_merge_env(container.env, env or [], tty),
            workdir=workdir or container.workdir or "/",
            tty=tty,
            attach_stdin=attach_stdin,
            attach_stdout=attach_stdout,
            attach_stderr=attach_stderr,
            owner=owner,
        )
        self.records[record.id] = record
        self._drop_with(container.id)
        self.engine.events.container(f"exec_create: {shlex.join(cmd)}", container,
                                     execID=record.id)  # fmt: skip
        return record

    def get(self, exec_id: str) -> ExecRecord:
        """The exec instance with this ID (the full ID, as Docker).

        Raises:
            ExecNotFound: no such exec, or its container has exited since.
        """
        record = self.records.get(exec_id.strip())
        if record is None:
            raise ExecNotFound(exec_id)
        return record

    def start(
        self,
        exec_id: str,
        *,
        listener: OutputListener | None = None,
        attach: bool = True,
    ) -> Running:
        """Start an exec instance; returns the pumps of its output and exit.

        Must be called from within a running event loop. Its ``exited``
        resolves with the exit status, which `ExecRecord.exit_code` holds by
        then.

        Args:
            listener: gets ``(stream, bytes)`` for every chunk of output.
            attach: a client is attached (False: ``Detach``, no stdin).

        Raises:
            ExecNotFound: no such exec.
            Conflict: it runs or has run already.
            ContainerNotRunning: its container is not running (any more).
            CommandNotFound: the command is not in the container (exit code 127).
            RuntimeFailure: it could not start (exit code 126).
        """
        record = self.get(exec_id)
        if record.running:
            raise Conflict(f"exec {record.id} is already running")
        if record.started:
            raise Conflict(f"exec {record.id} has already run: create another one")
        container = self.engine.store.containers.find(record.container_id)
        pidfd, owned, cgroup = self._target(container)
        proc = ProcessSpec(argv=record.cmd, env=record.env, cwd=record.workdir, tty=record.tty)
        record.started = True
        try:
            spawned = exec_into(pidfd, proc, join_files=cgroup.join_files(),
                                clone_into=cgroup.clone_into(),
                                open_stdin=record.attach_stdin and attach)  # fmt: skip
        except CommandNotFound:
            record.exit_code = 127
            raise
        except RuntimeFailure as exc:
            record.exit_code = 126
            if exc.errno == errno.ESRCH:  # the init exited meanwhile
                raise ContainerNotRunning(container.name) from exc
            raise
        finally:
            if owned:
                os.close(pidfd)
        process = ExecProcess(spawned, asyncio.get_running_loop())
        process.record = record
        if listener is not None:
            process.listeners.append(listener)
        record.process, record.pid, record.running = process, spawned.pid, True
        if record.console_size is not None and spawned.pty is not None:
            set_terminal_size(spawned.pty, *record.console_size)
        process.on_exit(lambda status: self._exited(record, container, status))
        self.engine.events.container(f"exec_start: {shlex.join(record.cmd)}", container,
                                     execID=record.id)  # fmt: skip
        return process

    def resize(self, exec_id: str, height: int, width: int) -> None:
        """Set the exec's terminal size now (if it runs) or at its start.

        Raises:
            ExecNotFound: no such exec.
            InvalidArgument: a size that is not positive.
        """
        if not (0 < height < 65536 and 0 < width < 65536):
            raise InvalidArgument(f"invalid terminal size {height}x{width}: use positive h and w")
        record = self.get(exec_id)
        record.console_size = (height, width)
        if record.process is not None and record.process.spawned.pty is not None:
            set_terminal_size(record.process.spawned.pty, height, width)

    # -- the container's side --------------------------------------------------------

    def _alive(self, container: ContainerRecord) -> bool:
        if container.id in self.engine.running:
            return True
        return container.state == RUNNING and reconcile.same_process(
            container.pid, container.pid_start
        )

    def _check_running(self, container: ContainerRecord) -> None:
        if not self._alive(container):
            raise ContainerNotRunning(container.name)

    def _target(self, container: ContainerRecord) -> tuple[int, bool, Cgroup]:
        """A pidfd of the container's init, whether we must close it, its cgroup.

        Raises:
            ContainerNotRunning: it is not running.
        """
        running = self.engine.running.get(container.id)
        if running is not None:
            cgroup = running.cgroup or self.engine.driver.open(container.id)
            return running.spawned.pidfd, False, cgroup
        # Run by another process (a CLI that ran it itself): the init by PID,
        # checked to be the same process that started the container.
        self._check_running(container)
        try:
            pidfd = os.pidfd_open(container.pid)
        except ProcessLookupError:
            raise ContainerNotRunning(container.name) from None
        return pidfd, True, self.engine.driver.open(container.id)

    def _drop_with(self, cid: str) -> None:
        """Forget the container's execs when the run it is in now ends."""
        running = self.engine.running.get(cid)
        if running is None or self._watched.get(cid) is running:
            return
        self._watched[cid] = running
        running.on_exit(lambda status: self._forget(cid, running))

    def _forget(self, cid: str, running: Running) -> None:
        if self._watched.get(cid) is running:
            del self._watched[cid]
        for exec_id in [i for i, r in self.records.items() if r.container_id == cid]:
            del self.records[exec_id]

    def _prune(self) -> None:
        """Forget the execs of containers run elsewhere that have stopped since."""
        for record in list(self.records.values()):
            cid = record.container_id
            if record.running or cid in self.engine.running:
                continue
            with contextlib.suppress(Exception):
                if self._alive(self.engine.store.containers.load(cid)):
                    continue
            self.records.pop(record.id, None)

    def _exited(self, record: ExecRecord, container: ContainerRecord, status: int) -> None:
        record.running, record.exit_code, record.process = False, status, None
        self.engine.events.container("exec_die", container, execID=record.id,
                                     exitCode=str(status))  # fmt: skip


def _merge_env(container_env: list[str], extra: list[str], tty: bool) -> list[str]:
    """The container's environment, ``TERM`` for a terminal, then the exec's own."""
    env = dict(item.partition("=")[::2] for item in container_env)
    if tty:
        env.setdefault("TERM", "xterm")
    env.update(item.partition("=")[::2] for item in extra)
    return [f"{k}={v}" for k, v in env.items()]


def set_terminal_size(pty: int, height: int, width: int) -> None:
    """TIOCSWINSZ on a terminal's master (ignored if it has gone away)."""
    with contextlib.suppress(OSError):
        fcntl.ioctl(pty, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


__all__ = ["STREAM_GRACE", "ExecProcess", "ExecRecord", "Execs", "set_terminal_size"]
