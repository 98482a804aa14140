"""Start a container's first process: clone into new namespaces, set up, exec the init.

The engine process is warm: it clones itself (no new Python interpreter), and
the child runs the rootfs recipe in Python, then execs a static init (tini,
which Docker also uses for ``--init``) from a sealed in-memory copy. After that
exec no host Python and no host binary path remains inside the container:
``/proc/1/exe`` is a sealed memfd, so writing to it (CVE-2019-5736) fails.
tini runs the command in a process group of its own and, without a
terminal, forwards the signals it gets (``kill``, ``stop``) to that whole
group (``tini -g``); with one, the terminal signals the foreground job.

Parent and child talk over two pipes:

- the error pipe (close-on-exec): the child writes one JSON object naming the
  failed step and exits; end-of-file with no data means the exec succeeded;
- for ``tty`` containers, a socket pair on which the child sends the master
  side of a pseudo-terminal it opened from the container's own devpts, so
  ``tty`` and ``ps`` inside show a real /dev/pts/N (runc's console socket).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno as errno_mod
import fcntl
import json
import os
import signal
import socket
import threading
import traceback
from dataclasses import asdict, dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from sandbox.errors import CommandNotFound, RuntimeFailure
from sandbox.runtime import capabilities, network, rootfs
from sandbox.runtime import syscalls as sc
from sandbox.runtime.spec import DEFAULT_PATH, ProcessSpec, RootfsSpec

if TYPE_CHECKING:
    from sandbox.runtime.zygote import Zygote

NAMESPACES = sc.CLONE_NEWNS | sc.CLONE_NEWUTS | sc.CLONE_NEWIPC | sc.CLONE_NEWNET | sc.CLONE_NEWPID
INIT_CANDIDATES = ("/usr/bin/tini-static", "/usr/local/bin/tini-static", "/sbin/tini-static")
TIOCGPTPEER = 0x5441
TIOCSCTTY = 0x540E
TIOCSPTLCK = 0x40045431
EXIT_SETUP_FAILED = 125


@dataclass
class Spawned:
    """A started container process, as the parent sees it.

    Attributes:
        pid: host PID of the container's PID 1 (the init).
        pidfd: a pidfd for it (poll it to learn when it exits).
        stdin: write end of its stdin, when stdin was asked for (non-tty).
        stdout: read end of its stdout (non-tty).
        stderr: read end of its stderr (non-tty).
        pty: the master side of its terminal (tty containers).
    """

    pid: int
    pidfd: int
    stdin: int | None = None
    stdout: int | None = None
    stderr: int | None = None
    pty: int | None = None

    def close(self) -> None:
        """Close every fd the parent holds (idempotent)."""
        for name in ("stdin", "stdout", "stderr", "pty", "pidfd"):
            fd = getattr(self, name)
            if fd is not None and fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, None if name != "pidfd" else -1)


@cache
def init_memfd() -> int:
    """A sealed in-memory copy of the static init, made once per process.

    Raises:
        RuntimeFailure: no static tini on this host.
    """
    override = os.environ.get("SANDBOX_INIT")
    candidates = (override,) if override else INIT_CANDIDATES
    for path in candidates:
        if path and os.path.isfile(path):
            break
    else:
        raise RuntimeFailure(
            "the container init `tini-static` was not found: install it with "
            "`apt-get install tini`, or run the README's set-up command",
            step="find init",
        )
    fd = os.memfd_create("tini", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    with open(path, "rb") as src:
        data = src.read()
    os.write(fd, data)
    fcntl.fcntl(
        fd,
        fcntl.F_ADD_SEALS,
        fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE,
    )
    return fd


@dataclass
class ChildPlan:
    """Everything the cloned child needs, computed before the clone.

    It crosses to the zygote as JSON, so it holds only plain data.
    """

    root: RootfsSpec
    proc: ProcessSpec
    join_files: list[str]
    keep_caps: int
    drop_caps: list[int]
    clone_into: str | None = None

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ChildPlan:
        return cls(RootfsSpec(**data["root"]), ProcessSpec(**data["proc"]), data["join_files"],
                   data["keep_caps"], data["drop_caps"], data.get("clone_into"))  # fmt: skip


def stdio_ends(
    tty: bool, open_stdin: bool
) -> tuple[dict[str, int], list[int], tuple[socket.socket, socket.socket] | None]:
    """The pipes (or console socket pair) between the engine and a new process.

    Returns the engine's ends by name (stdin, stdout, stderr), the child's
    ends in fd order (stdin, stdout, stderr; empty for a tty), and, for a tty,
    the socket pair the child sends its pty master on. All are close-on-exec.
    """
    parent_ends: dict[str, int] = {}
    child_ends: list[int] = []
    if tty:
        return parent_ends, child_ends, socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    if open_stdin:
        r, w = os.pipe2(os.O_CLOEXEC)
        parent_ends["stdin"], stdin = w, r
    else:
        stdin = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    child_ends.append(stdin)
    for name in ("stdout", "stderr"):
        r, w = os.pipe2(os.O_CLOEXEC)
        parent_ends[name] = r
        child_ends.append(w)
    return parent_ends, child_ends, None


# clone3's answers that mean "no CLONE_INTO_CGROUP on this kernel", not "not
# into this cgroup": ENOSYS where there is no clone3 at all (Linux < 5.3, or a
# seccomp filter: Docker's default profile answers ENOSYS to clone3 precisely
# so that callers fall back to clone), E2BIG where the kernel's clone_args is
# shorter than ours (5.3-5.6: it reads no cgroup field, and refuses a non-zero
# byte past its end). Either is remembered for the life of the process.
# Not EINVAL: an old kernel never gets that far with our 88 bytes, so EINVAL
# is a bad call (a signal in the flags, an exit signal with CLONE_PARENT),
# and falling back would hide it behind a 15 ms slower start.
_CLONE3_MISSING = frozenset({errno_mod.ENOSYS, errno_mod.E2BIG})
_clone3_missing = False


def clone_in_cgroup(flags: int, cgroup_fd: int | None,
                    cgroup_path: str | None = None) -> tuple[int, bool]:  # fmt: skip
    """Raw clone whose child starts in the cgroup v2 ``cgroup_fd``, where the kernel can.

    Being born in the cgroup (clone3 with CLONE_INTO_CGROUP, Linux 5.7+)
    spares the child the move through ``cgroup.procs``, which takes the
    kernel's global threadgroup lock for writing: after a quiet spell that
    waits a whole RCU grace period, 12-20 ms. The fork side takes the same
    lock only for reading, which is cheap (per-CPU). crun does the same.

    Same contract as `syscalls.clone`: 0 in the child, which continues on a
    copy of the caller's stack; the caller must be single-threaded.

    Args:
        flags: CLONE_* flags, without an exit signal: the child's is SIGCHLD
            (with CLONE_PARENT, the caller's own: the kernel's rule).
        cgroup_fd: an ``O_PATH | O_DIRECTORY`` fd of the cgroup; None: the
            caller's cgroups, to be joined by the child.
        cgroup_path: its path, for error messages.

    Returns:
        ``(pid, born_in)`` in both processes: born_in is False when the child
        is still in the caller's cgroup (no ``cgroup_fd``, or a kernel without
        CLONE_INTO_CGROUP) and must join by writing `Cgroup.join_files`.

    Raises:
        OSError: the clone failed (EAGAIN: also the cgroup's pids limit;
            EBUSY, EOPNOTSUPP: a cgroup that cannot take processes).
    """
    global _clone3_missing
    if cgroup_fd is not None and not _clone3_missing:
        # clone3 refuses an exit signal with CLONE_PARENT (EINVAL): the child
        # then gets the caller's, SIGCHLD here, as clone(2) silently does.
        exit_signal = 0 if flags & sc.CLONE_PARENT else signal.SIGCHLD
        try:
            return sc.clone3(flags, exit_signal, cgroup_fd=cgroup_fd,
                             cgroup_path=cgroup_path), True  # fmt: skip
        except OSError as exc:
            if exc.errno not in _CLONE3_MISSING:
                raise
            # An old kernel or a seccomp filter: the plain clone below, and
            # the child joins through cgroup.procs (the slow lock, but works).
            _clone3_missing = True
    return sc.clone(flags | signal.SIGCHLD), False


def open_cgroup(path: str | None) -> int | None:
    """An ``O_PATH`` fd of the cgroup directory ``path`` for `clone_in_cgroup` (None: None)."""
    if path is None:
        return None
    return os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


def clone_child(plan: ChildPlan, err_w: int, stdio: list[int], console: int | None,
                init_fd: int, *, parent: bool = False,
                netns_fd: int | None = None) -> int:  # fmt: skip
    """Clone the container's first process; in the caller, return its PID.

    ``stdio`` are the child's ends (stdin, stdout, stderr) for a non-tty
    container, ``console`` a socket to send a pty master on for a tty one.
    With ``parent`` (the zygote's case) the child is made a sibling of the
    caller (CLONE_PARENT), so the engine that asked is its parent: it reaps it,
    and PDEATHSIG ties the container to the engine. On cgroup v2 the child
    is born in the container's cgroup (``plan.clone_into``) where the kernel
    can; otherwise it joins through ``plan.join_files`` first thing. With
    ``netns_fd`` it joins that network namespace (made and wired by the
    engine) instead of getting a new, empty one.

    Raises:
        OSError: the cgroup directory is gone, or the clone failed.
    """
    flags = NAMESPACES | (sc.CLONE_PARENT if parent else 0)
    if netns_fd is not None:
        flags &= ~sc.CLONE_NEWNET
    cgroup_fd = open_cgroup(plan.clone_into)
    try:
        pid, born_in = clone_in_cgroup(flags, cgroup_fd, plan.clone_into)
    finally:  # in both processes: the child needs the fd no more than the parent
        if cgroup_fd is not None:
            os.close(cgroup_fd)
    if pid:
        return pid
    # The child: never return into the caller's frames.
    code = EXIT_SETUP_FAILED
    try:
        sock = socket.socket(fileno=console) if console is not None else None
        _child(plan, stdio, sock, init_fd, joined=born_in, netns_fd=netns_fd)
    except CommandNotFound as exc:
        code = 127
        _report(err_w, "exec", errno_mod.ENOENT, str(exc), not_found=True)
    except rootfs.StepFailed as exc:
        _report(err_w, exc.step, exc.errno, exc.detail)
    except BaseException as exc:
        detail = traceback.format_exc() if os.environ.get("SANDBOX_DEBUG") else str(exc)
        _report(err_w, "start container process", getattr(exc, "errno", 0) or 0, detail)
    finally:
        os._exit(code)
    raise AssertionError("unreachable")  # [should never happen]


def spawn(
    root: RootfsSpec,
    proc: ProcessSpec,
    *,
    join_files: list[str],
    clone_into: str | None = None,
    open_stdin: bool = False,
    zygote: Zygote | None = None,
    netns_fd: int | None = None,
) -> Spawned:
    """Clone a container process and wait until it has exec'd its init.

    Args:
        root: the root filesystem to build.
        proc: the command, environment, working directory and terminal.
        join_files: the cgroup files (`Cgroup.join_files`) the child joins
            before anything else, unless it was born in ``clone_into``.
        clone_into: the cgroup v2 directory to clone the child straight into
            (`Cgroup.clone_into`); None: it joins through ``join_files``, as
            it also does where the kernel has no CLONE_INTO_CGROUP.
        open_stdin: give a non-tty container a stdin pipe (else /dev/null).
        zygote: clone through this fork server (None: clone this process,
            which must then be single-threaded).
        netns_fd: a network namespace for the container to join (see
            `sandbox.runtime.netns`); None: a new one with loopback only.

    Raises:
        CommandNotFound: the command is not on the container's PATH (the
            child has exited with status 127 and been reaped).
        RuntimeFailure: a setup step failed; the message names it.
    """
    pending = _begin(root, proc, join_files=join_files, clone_into=clone_into,
                     open_stdin=open_stdin, zygote=zygote, netns_fd=netns_fd)  # fmt: skip
    with pending:
        if pending.console is not None:
            pending.started.pty = _receive_pty(pending.console)
        _wait_exec(pending.err_r, pending.started)
    return pending.started


async def spawn_async(
    root: RootfsSpec,
    proc: ProcessSpec,
    *,
    join_files: list[str],
    clone_into: str | None = None,
    open_stdin: bool = False,
    zygote: Zygote | None = None,
    netns_fd: int | None = None,
) -> Spawned:
    """`spawn`, with the wait for the child's exec in the event loop, not blocking it.

    The clone is done at once; the child's set-up (mounts, pivot_root, ...)
    then takes milliseconds, during which a daemon serves its other clients.
    If the caller is cancelled meanwhile, the child is killed and reaped.

    Raises:
        the same as `spawn`.
    """
    pending = _begin(root, proc, join_files=join_files, clone_into=clone_into,
                     open_stdin=open_stdin, zygote=zygote, netns_fd=netns_fd)  # fmt: skip
    with pending:
        try:
            if pending.console is not None:
                await _readable(pending.console.fileno())
                pending.started.pty = _receive_pty(pending.console)
            await _readable(pending.err_r)  # a failure report, or EOF at the exec
        except BaseException:
            _kill_and_reap(pending.started)
            raise
        _wait_exec(pending.err_r, pending.started)  # reads what is there: no wait
    return pending.started


@dataclass
class _Pending:
    """A cloned child that has not exec'd yet: its handle and the parent's pipe ends."""

    started: Spawned
    err_r: int
    console: socket.socket | None

    def __enter__(self) -> _Pending:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.err_r)
        if self.console is not None:
            self.console.close()


async def _readable(fd: int) -> None:
    """Wait until ``fd`` is readable (data or end-of-file)."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_reader(fd)


def _kill_and_reap(started: Spawned) -> None:
    with contextlib.suppress(OSError):
        signal.pidfd_send_signal(started.pidfd, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(started.pid, 0)
    started.close()


def _begin(root: RootfsSpec, proc: ProcessSpec, *, join_files: list[str], clone_into: str | None,
           open_stdin: bool, zygote: Zygote | None, netns_fd: int | None) -> _Pending:  # fmt: skip
    """Clone the child (directly or through the zygote); it then sets up on its own."""
    if zygote is None and threading.active_count() != 1:
        raise RuntimeFailure(
            "containers must be started from a single-threaded process or through a zygote"
        )
    keep = capabilities.mask(capabilities.DEFAULT_CAPS)
    plan = ChildPlan(root, proc, join_files, keep, list(capabilities.to_drop(keep)), clone_into)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    parent_ends, child_ends, console = stdio_ends(proc.tty, open_stdin)
    console_fd = console[1].fileno() if console else None
    try:
        if zygote is not None:
            pid = zygote.clone(plan, err_w, child_ends, console_fd, netns_fd)
        else:
            pid = clone_child(plan, err_w, child_ends, console_fd, init_memfd(), netns_fd=netns_fd)
    except BaseException:
        for fd in (err_r, *parent_ends.values()):
            os.close(fd)
        raise
    finally:
        os.close(err_w)
        for fd in child_ends:
            os.close(fd)
        if console is not None:
            console[1].close()
    started = Spawned(pid=pid, pidfd=os.pidfd_open(pid), **parent_ends)
    return _Pending(started, err_r, console[0] if console is not None else None)


def _child(
    plan: ChildPlan,
    stdio: list[int],
    console: socket.socket | None,
    init_fd: int,
    *,
    joined: bool,
    netns_fd: int | None = None,
) -> None:
    """The container's first process: set up, then exec the init. Never returns.

    Everything it needs was computed by the parent: every Python object the
    child touches costs a copy-on-write page fault here. ``joined``: it was
    born in its cgroup (v2), so it has no ``join_files`` to write.
    """
    # Python's handlers must not run here (they would write to the engine's
    # wakeup fd); the mask is lifted just before exec.
    signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    # If the engine dies, so does the container: nothing runs unwatched.
    sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
    os.setsid()
    for target, fd in enumerate(stdio):
        os.dup2(fd, target)
    # Join the cgroup before anything else (unless born in it), so every later
    # allocation is counted and limited; then hide the host's cgroup paths.
    root, proc = plan.root, plan.proc
    for path in () if joined else plan.join_files:
        fd = os.open(path, os.O_WRONLY)
        os.write(fd, b"0")
        os.close(fd)
    sc.unshare(sc.CLONE_NEWCGROUP)
    if netns_fd is None:
        network.loopback_up()
    else:  # the engine made it, loopback up and its networks plugged in
        sc.setns(netns_fd, sc.CLONE_NEWNET)
    rootfs.prepare(root)
    if console is not None:
        open_terminal(console)
    sc.sethostname(proc.hostname)
    rootfs.enter_workdir(proc.cwd)
    _check_command(proc)
    sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
    capabilities.limit_to(plan.keep_caps, tuple(plan.drop_caps))
    # No host fd may leak in (CVE-2024-21626): everything above 2 closes at exec.
    sc.close_range_cloexec(3)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    # Without a terminal, -g: tini forwards a signal to the command's whole
    # process group (tini made it one), as a terminal's ^C does, not to the
    # command alone: a SIGINT reaches `sleep` in `bash -c '...; sleep 30'`
    # too, not only bash. With a terminal, the terminal itself signals the
    # foreground job, and -g would race the command's own setpgid (tini
    # warns "Child was dead when forwarding signal" on an early SIGWINCH).
    group = [] if console is not None else ["-g"]
    os.execve(init_fd, ["tini", *group, "--", *proc.argv], _env_dict(proc.env))


def open_terminal(console: socket.socket) -> None:
    """Open a terminal from the container's devpts, send the master to the engine.

    The caller (a container's first process, or an exec'd one) makes the
    slave its controlling terminal and its stdin, stdout and stderr.
    """
    master = os.open("/dev/pts/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    os.set_blocking(master, True)
    fcntl.ioctl(master, TIOCSPTLCK, b"\0\0\0\0")  # unlock the slave
    slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR)
    socket.send_fds(console, [b"pty"], [master])
    os.close(master)
    console.close()
    fcntl.ioctl(slave, TIOCSCTTY, 0)
    for target in (0, 1, 2):
        os.dup2(slave, target)
    os.close(slave)


def _check_command(proc: ProcessSpec) -> None:
    """Fail early and clearly when the command does not exist in the container."""
    if not proc.argv:
        raise CommandNotFound("no command given", step="exec")
    cmd = proc.argv[0]
    if "/" in cmd:
        if not os.path.exists(cmd):
            raise CommandNotFound(f"{cmd}: no such file or directory", step="exec")
        return
    for directory in proc.env_value("PATH", DEFAULT_PATH).split(":"):
        candidate = os.path.join(directory or ".", cmd)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return
    raise CommandNotFound(f"{cmd}: command not found", step="exec")


def _env_dict(env: list[str]) -> dict[str, str]:
    result: dict[str, str] = {}
    for item in env:
        key, _, value = item.partition("=")
        result[key] = value
    return result


def _report(fd: int, step: str, err: int, message: str, *, not_found: bool = False) -> None:
    data = json.dumps({"step": step, "errno": err, "message": message, "not_found": not_found})
    with contextlib.suppress(OSError):
        os.write(fd, data.encode())


def _receive_pty(sock: socket.socket) -> int | None:
    """The pty master the child sends; None if the child failed before."""
    _msg, fds, _flags, _addr = socket.recv_fds(sock, 16, 1)
    return fds[0] if fds else None


def _wait_exec(err_r: int, started: Spawned) -> None:
    """Block until the child has exec'd (EOF) or reported a failure."""
    chunks = []
    while chunk := os.read(err_r, 65536):
        chunks.append(chunk)
    if not chunks:
        return
    os.waitpid(started.pid, 0)
    started.close()
    report = json.loads(b"".join(chunks))
    if report.get("not_found"):
        raise CommandNotFound(report["message"], step="exec", errno=report["errno"])
    raise RuntimeFailure(
        f"cannot start container: {report['step']}: {report['message']}",
        step=report["step"],
        errno=report["errno"],
    )
