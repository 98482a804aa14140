"""Start one more process inside a running container (``docker exec``).

The container's init is running; the new process must end up in its cgroup
and in all its namespaces, with the same capabilities and no_new_privs, and
nothing of the host may come with it. In order, as runc's ``setns`` path:

1. The engine clones a *middle* process (outside the container). It makes
   itself non-dumpable, joins the container's cgroup on v1 (so everything
   after is counted, limited, and killed with the container), then enters
   every namespace of the init but the cgroup one at once with
   ``setns(pidfd, ...)``.
2. Entering a PID namespace only changes where the *children* go, so the
   middle clones the *inner* process, with CLONE_PARENT: its parent is the
   engine, which reaps it and learns its exit status, and the middle exits
   at once. No host Python stays in the container's PID namespace, and none
   waits outside it either. On cgroup v2 the inner process is born in the
   container's cgroup (clone3 with CLONE_INTO_CGROUP): no move through
   ``cgroup.procs``, which waits on the kernel's global threadgroup lock
   (12-20 ms after a quiet spell). On a kernel without it, the inner process
   joins through ``cgroup.procs`` first thing.
3. The inner process (still the host's Python, non-dumpable, so no process
   of the container can open its ``/proc/PID/exe``, ``mem`` or ``fd``):
   enters the cgroup namespace, only now that it is in the cgroup (on a
   cgroup2 mounted with ``nsdelegate`` the kernel refuses a move, and a
   CLONE_INTO_CGROUP, from a cgroup outside the mover's cgroup namespace),
   opens a terminal from the container's devpts if asked, checks the working
   directory is inside the container's root (CVE-2024-21626) and the command
   exists, sets no_new_privs, keeps Docker's 14 capabilities, marks every fd
   above 2 close-on-exec, and execs the command through the sealed
   `trampoline` (CVE-2019-5736: see there).

Unlike a container's first process, the command runs without an init: it is
not PID 1, and its parent (the engine) is outside the namespace.

The parent learns the outcome over the error pipe (close-on-exec, one JSON
object per line): the middle writes ``{"pid": N}`` (the inner process's host
PID), a failing process writes the step that failed; end-of-file means both
are gone, the inner one by exec'ing. A terminal's master comes back over a
socket pair, as for a container.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import traceback
from dataclasses import dataclass
from typing import Any

from sandbox.errors import CommandNotFound, RuntimeFailure
from sandbox.runtime import capabilities, spawn, trampoline
from sandbox.runtime import syscalls as sc
from sandbox.runtime.spawn import Spawned
from sandbox.runtime.spec import DEFAULT_PATH, ProcessSpec

# Every namespace a container has (spawn.NAMESPACES, and the cgroup one it
# unshares after joining its cgroup); no user namespace. The middle process
# enters all but the cgroup one, the inner process that one.
NAMESPACES = (sc.CLONE_NEWNS | sc.CLONE_NEWUTS | sc.CLONE_NEWIPC | sc.CLONE_NEWNET
              | sc.CLONE_NEWPID | sc.CLONE_NEWCGROUP)  # fmt: skip
EXIT_SETUP_FAILED = 125


class _Failed(Exception):
    """A named step of the exec failed (in the middle or inner process)."""

    def __init__(self, step: str, err: BaseException | str, *, not_found: bool = False) -> None:
        self.step = step
        self.errno = getattr(err, "errno", 0) or 0
        self.detail = str(getattr(err, "strerror", None) or err)
        self.not_found = not_found
        super().__init__(f"{step}: {self.detail}")


@dataclass
class ExecPlan:
    """Everything the cloned processes need, computed before the clone.

    Attributes:
        proc: the command, environment, working directory (inside the
            container; it must exist) and terminal; ``hostname`` is unused.
        join_files: the container's cgroup files (`Cgroup.join_files`).
        keep_caps: the capability mask to keep.
        drop_caps: every capability number outside it.
        clone_into: the container's cgroup v2 directory
            (`Cgroup.clone_into`); None on v1.
    """

    proc: ProcessSpec
    join_files: list[str]
    keep_caps: int
    drop_caps: list[int]
    clone_into: str | None = None


def exec_into(pidfd: int, proc: ProcessSpec, *, join_files: list[str],
              clone_into: str | None = None, open_stdin: bool = False) -> Spawned:  # fmt: skip
    """Start ``proc`` in the container whose init ``pidfd`` refers to.

    Returns once the command runs (or failed): ``pid`` is its host PID and
    the caller is its parent (reap it, e.g. through the returned pidfd).

    Args:
        pidfd: a pidfd of the container's init (any process of it would do).
        proc: what to run; ``cwd`` must exist in the container.
        join_files: the container's cgroup files (`Cgroup.join_files`),
            joined unless the process is born in ``clone_into``.
        clone_into: the container's cgroup v2 directory (`Cgroup.clone_into`)
            to clone the process straight into; None: join ``join_files``.
        open_stdin: give a non-tty process a stdin pipe (else /dev/null).

    Raises:
        CommandNotFound: the command is not in the container (exit 127).
        RuntimeFailure: a step failed (its name is in ``step``; ESRCH when
            the container is gone); nothing is left running.
    """
    keep = capabilities.mask(capabilities.DEFAULT_CAPS)
    plan = ExecPlan(proc, join_files, keep, list(capabilities.to_drop(keep)), clone_into)
    tramp = trampoline.memfd()
    # Opened here, by host path: the middle and inner processes only use it
    # after they entered the container's mount namespace.
    try:
        cgroup_fd = spawn.open_cgroup(clone_into)
    except OSError as exc:
        raise RuntimeFailure(f"cannot exec in the container: join cgroup: {exc}",
                             step="join cgroup", errno=exc.errno or 0) from exc  # fmt: skip
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    parent_ends, child_ends, console = spawn.stdio_ends(proc.tty, open_stdin)
    try:
        middle = _clone_middle(plan, pidfd, cgroup_fd, err_w, child_ends,
                               console[1] if console else None, tramp)  # fmt: skip
    except BaseException:
        for fd in (err_r, *parent_ends.values()):
            os.close(fd)
        raise
    finally:
        os.close(err_w)
        if cgroup_fd is not None:
            os.close(cgroup_fd)
        for fd in child_ends:
            os.close(fd)
        if console is not None:
            console[1].close()
    try:
        pty = _receive_pty(console[0]) if console is not None else None
        messages = _read_reports(err_r)
    finally:
        os.close(err_r)
        if console is not None:
            console[0].close()
        os.waitpid(middle, 0)
    inner = next((m["pid"] for m in messages if "pid" in m), None)
    failure = next((m for m in messages if "step" in m), None)
    if failure is None and inner is None:  # [should never happen] the middle died silently
        failure = {"step": "enter container", "errno": 0, "message": "the helper process died"}
    if failure is not None:
        if inner is not None:
            os.waitpid(inner, 0)
        for end in [pty, *parent_ends.values()]:
            if end is not None:
                os.close(end)
        if failure.get("not_found"):
            raise CommandNotFound(failure["message"], step="exec", errno=failure["errno"])
        message = f"cannot exec in the container: {failure['step']}: {failure['message']}"
        raise RuntimeFailure(message, step=failure["step"], errno=failure["errno"])
    assert inner is not None
    return Spawned(pid=inner, pidfd=os.pidfd_open(inner), pty=pty, **parent_ends)


def _clone_middle(plan: ExecPlan, pidfd: int, cgroup_fd: int | None, err_w: int,
                  stdio: list[int], console: socket.socket | None, tramp: int) -> int:  # fmt: skip
    """Clone the middle process; in the caller, return its PID.

    Signals are blocked across the clone, so no Python handler ever runs in
    the child (it would write to the engine's wakeup fd and look like a
    signal to the engine).
    """
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    try:
        # A raw clone skips the at-fork handlers, which is only safe with one
        # thread; os.fork runs them (the child is single-threaded either way).
        pid = sc.clone(signal.SIGCHLD) if threading.active_count() == 1 else os.fork()
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        raise
    if pid:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        return pid
    code = EXIT_SETUP_FAILED
    try:
        _middle(plan, pidfd, cgroup_fd, err_w, stdio, console, tramp)
        code = 0
    except _Failed as exc:
        _report(err_w, exc)
    except BaseException as exc:
        _report(err_w, _Failed("enter container", _detail(exc)))
    finally:
        os._exit(code)
    raise AssertionError("unreachable")  # [should never happen]


def _middle(plan: ExecPlan, pidfd: int, cgroup_fd: int | None, err_w: int, stdio: list[int],
            console: socket.socket | None, tramp: int) -> None:  # fmt: skip
    """Join the cgroup (v1) and the namespaces, clone the inner process, report its PID."""
    # From here on no process of the container may ptrace us or open our
    # /proc files: we (and the inner process, which inherits it) hold the
    # engine's memory and fds, and our exe is the host's Python.
    sc.prctl(sc.PR_SET_DUMPABLE, 0)
    step = "join cgroup"
    try:
        if cgroup_fd is None:  # v1: the inner process inherits our cgroups
            for path in plan.join_files:
                _write_zero(os.open(path, os.O_WRONLY | os.O_CLOEXEC))
        # All at once, from the init's pidfd: mount (which also moves our root
        # and cwd to the container's root), UTS, IPC, network, and the PID
        # namespace of our children. The cgroup one is the inner process's.
        step = "join namespaces"
        sc.setns(pidfd, NAMESPACES & ~sc.CLONE_NEWCGROUP)
        step = "clone"
        pid, born_in = spawn.clone_in_cgroup(sc.CLONE_PARENT, cgroup_fd, plan.clone_into)
    except OSError as exc:
        raise _Failed(step, exc) from exc
    if pid:
        os.write(err_w, json.dumps({"pid": pid}).encode() + b"\n")
        return
    code = EXIT_SETUP_FAILED
    try:
        _inner(plan, pidfd, None if born_in else cgroup_fd, stdio, console, tramp)
    except _Failed as exc:
        code = 127 if exc.not_found else 126
        _report(err_w, exc)
    except BaseException as exc:
        _report(err_w, _Failed("exec", _detail(exc)))
    finally:
        os._exit(code)


def _enter_cgroup(pidfd: int, join_fd: int | None) -> None:
    """The inner process: join the cgroup if it was not born in it, then its namespace.

    ``join_fd`` is the cgroup's directory, opened by the engine: its host
    path is not reachable from the container's mount namespace we are in.
    """
    step = "join cgroup"
    try:
        if join_fd is not None:  # no CLONE_INTO_CGROUP on this kernel
            _write_zero(os.open("cgroup.procs", os.O_WRONLY | os.O_CLOEXEC, dir_fd=join_fd))
        step = "join namespaces"
        sc.setns(pidfd, sc.CLONE_NEWCGROUP)
    except OSError as exc:
        raise _Failed(step, exc) from exc


def _write_zero(fd: int) -> None:
    """Write ``0`` (this process) to an open cgroup file, and close it."""
    try:
        os.write(fd, b"0")
    finally:
        os.close(fd)


def _inner(plan: ExecPlan, pidfd: int, join_fd: int | None, stdio: list[int],
           console: socket.socket | None, tramp: int) -> None:  # fmt: skip
    """The process inside the container: set up, then exec. Never returns.

    ``join_fd``: the cgroup to join, if it was not born in it (else None).
    """
    proc = plan.proc
    # If the engine dies nothing may run on unwatched (the container dies too).
    sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
    _enter_cgroup(pidfd, join_fd)
    os.setsid()
    for target, fd in enumerate(stdio):
        os.dup2(fd, target)
    if console is not None:
        _open_terminal(console)
    _enter_workdir(proc.cwd)
    path = _find_command(proc)
    sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
    capabilities.limit_to(plan.keep_caps, tuple(plan.drop_caps))
    # No fd of the engine may leak in (CVE-2024-21626): all above 2 close at exec.
    sc.close_range_cloexec(3)
    # Handlers reset at exec by themselves, ignored signals do not (Python
    # ignores SIGPIPE and SIGXFSZ): the command starts with every default.
    for sig in signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}:
        with contextlib.suppress(OSError, ValueError):
            signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    os.execve(tramp, [trampoline.MARKER + path, *proc.argv], _env_dict(proc.env))


def _open_terminal(console: socket.socket) -> None:
    """`spawn.open_terminal`, its failure named as the exec's step."""
    try:
        spawn.open_terminal(console)
    except OSError as exc:
        raise _Failed("open terminal", exc) from exc


def _enter_workdir(cwd: str) -> None:
    """chdir into the working directory, which must exist inside the container.

    Unlike a container's start, exec does not make it (Docker does not). A
    path through a magic link (``/proc/self/fd/N``) could lead out of the
    container's root: whatever we land in must have a path inside it.
    """
    try:
        os.chdir(cwd)
    except OSError as exc:
        raise _Failed("chdir", f"working directory {cwd}: {exc.strerror}") from exc
    try:
        here = os.getcwd()
    except OSError:  # glibc's answer for a directory outside the root
        here = ""
    if not here.startswith("/"):
        raise _Failed("chdir", f"working directory {cwd} is outside the container")


def _find_command(proc: ProcessSpec) -> str:
    """The path the trampoline execs, checked so that a failure reads clearly."""
    if not proc.argv:
        raise _Failed("exec", "no command given", not_found=True)
    cmd = proc.argv[0]
    path = cmd if "/" in cmd else None
    if path is None:
        for directory in proc.env_value("PATH", DEFAULT_PATH).split(":"):
            candidate = os.path.join(directory or ".", cmd)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                path = candidate
                break
        else:
            raise _Failed("exec", f"{cmd}: command not found", not_found=True)
    elif not os.path.exists(path):
        raise _Failed("exec", f"{cmd}: no such file or directory", not_found=True)
    if os.path.isdir(path):
        raise _Failed("exec", f"{cmd}: is a directory")
    if not os.access(path, os.X_OK):
        raise _Failed("exec", f"{cmd}: permission denied")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise _Failed("exec", f"{cmd}: {exc.strerror}") from exc
    if magic != b"\x7fELF" and not magic.startswith(b"#!"):
        raise _Failed("exec", f"{cmd}: exec format error (a script needs a #! line)")
    return path


def _env_dict(env: list[str]) -> dict[str, str]:
    return dict(item.partition("=")[::2] for item in env)


def _detail(exc: BaseException) -> str:
    return traceback.format_exc() if os.environ.get("SANDBOX_DEBUG") else str(exc)


def _report(fd: int, failure: _Failed) -> None:
    data = {"step": failure.step, "errno": failure.errno, "message": failure.detail,
            "not_found": failure.not_found}  # fmt: skip
    with contextlib.suppress(OSError):
        os.write(fd, json.dumps(data).encode() + b"\n")


def _receive_pty(sock: socket.socket) -> int | None:
    """The pty master the inner process sends; None if it failed before."""
    _msg, fds, _flags, _addr = socket.recv_fds(sock, 16, 1)
    return fds[0] if fds else None


def _read_reports(fd: int) -> list[dict[str, Any]]:
    """Every JSON line written to the error pipe, up to end-of-file."""
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    reports = []
    for line in b"".join(chunks).splitlines():
        with contextlib.suppress(ValueError):
            reports.append(json.loads(line))
    return reports


__all__ = ["NAMESPACES", "ExecPlan", "exec_into"]
