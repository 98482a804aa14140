"""A small fork server that clones containers for a long-lived engine.

Cloning costs in proportion to the caller's memory: the kernel copies its page
tables, the child then pays a copy-on-write fault for every page it touches,
and its exec tears the copy down again. A daemon that has loaded a web
framework pays that on every container. The zygote is a second, lean
interpreter (it imports only the runtime) started once; the engine sends it a
plan and the child's file descriptors, and it clones the container's first
process with CLONE_PARENT, so the engine, not the zygote, is that process's
parent: the engine reaps it, gets its SIGCHLD, and PDEATHSIG still ties the
container to the engine. The zygote is single-threaded, which a raw clone
needs, so the engine itself may use threads.

The zygote dies with the engine (PDEATHSIG) and when its socket closes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

from sandbox.errors import RuntimeFailure
from sandbox.runtime import spawn
from sandbox.runtime import syscalls as sc

MAX_REQUEST = 1 << 20
MAX_FDS = 8


class Zygote:
    """The engine's handle on its fork server (start it from the main thread)."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock = ours
        # PDEATHSIG follows the thread that forked: the main thread lives as
        # long as the engine.
        self.process = subprocess.Popen(
            [sys.executable, "-s", "-m", "sandbox.runtime.zygote", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        theirs.close()

    def clone(self, plan: spawn.ChildPlan, err_w: int, stdio: list[int],
              console: int | None, netns_fd: int | None = None) -> int:  # fmt: skip
        """Have the zygote clone the container's first process; returns its PID."""
        fds = [err_w, *stdio] + ([console] if console is not None else [])
        fds += [netns_fd] if netns_fd is not None else []
        request = {"plan": plan.to_json(), "stdio": len(stdio), "console": console is not None,
                   "netns": netns_fd is not None}  # fmt: skip
        try:
            socket.send_fds(self.sock, [json.dumps(request).encode()], fds)
            reply = json.loads(self.sock.recv(65536) or b'{"error": "the zygote exited"}')
        except OSError as exc:
            raise RuntimeFailure(f"cannot reach the zygote: {exc}", step="clone") from exc
        if "error" in reply:
            raise RuntimeFailure(f"cannot start container: clone: {reply['error']}", step="clone")
        return int(reply["pid"])

    def close(self) -> None:
        """Stop the zygote (it exits when its socket closes)."""
        self.sock.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def serve(fd: int) -> None:
    """The zygote's loop: one clone per request, until the engine goes away."""
    sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the engine died before we set PDEATHSIG
        return
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    sock = socket.socket(fileno=fd)
    init_fd = spawn.init_memfd()
    while True:
        try:
            data, fds, _flags, _addr = socket.recv_fds(sock, MAX_REQUEST, MAX_FDS)
        except InterruptedError:
            continue
        if not data:
            return
        try:
            request = json.loads(data)
            plan = spawn.ChildPlan.from_json(request["plan"])
            err_w, stdio = fds[0], fds[1 : 1 + request["stdio"]]
            rest = fds[1 + request["stdio"] :]
            console = rest.pop(0) if request["console"] else None
            netns_fd = rest.pop(0) if request.get("netns") else None
            pid = spawn.clone_child(plan, err_w, stdio, console, init_fd, parent=True,
                                    netns_fd=netns_fd)  # fmt: skip
            reply = {"pid": pid}
        except Exception as exc:
            reply = {"error": str(exc)}
        finally:
            for received in fds:
                os.close(received)
        sock.send(json.dumps(reply).encode())


if __name__ == "__main__":
    serve(int(sys.argv[1]))
