"""sandboxd for the benches: started on a fresh store and stopped, or found by its pid file.

bench/api and bench/network serve a store of their own (``Sandboxd``);
bench/cells and bench/startup drive clients (the kernel, the CLI) that start
the store's daemon on first use, and ``stop_store_daemon`` stops that one.
``UnixConnection`` is a plain HTTP client over a unix socket: it asks a
daemon (ours or dockerd) whether it answers yet, and bench/api times it.

Like the rest of bench/, nothing here raises for a daemon that misbehaves:
it returns why, or what is left, for the caller to print.
"""

from __future__ import annotations

import fcntl
import http.client
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sandbox.engine import Engine

GRACE = 30.0  # seconds a daemon may take to stop after SIGTERM before it is killed


class UnixConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a unix socket, kept open between requests."""

    def __init__(self, path: str, timeout: float = 60) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.path)
        self.sock = sock

    def call(self, method: str, url: str, body: Any = None, expect: int = 200) -> Any:
        """One request; the decoded JSON reply (or None).

        Raises:
            RuntimeError: another status than ``expect``.
        """
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        self.request(method, url, body=data, headers=headers)
        reply = self.getresponse()
        raw = reply.read()
        if reply.status != expect:
            raise RuntimeError(f"{method} {url}: {reply.status} {raw[:200]!r}")
        return json.loads(raw) if raw.strip().startswith((b"{", b"[")) else None


def wait_ping(sock: Path, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> str:
    """Wait until the daemon ``proc`` answers ``GET /_ping`` on ``sock``; "" or why it did not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"exited with {proc.returncode}: {log.read_text(errors='replace')[-400:]}"
        conn = UnixConnection(str(sock), timeout=2)
        try:
            conn.call("GET", "/_ping")
            return ""
        except (OSError, RuntimeError, http.client.HTTPException):
            time.sleep(0.1)
        finally:
            conn.close()
    return f"did not answer within {timeout:g} s: {log.read_text(errors='replace')[-400:]}"


def terminate(proc: subprocess.Popen[bytes], grace: float = GRACE) -> bool:
    """SIGTERM a daemon we started and wait; SIGKILL it after ``grace`` s. True if killed."""
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
        return False
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return True


def logged_traceback(log: Path) -> str:
    """The daemon's log from its first traceback on (at most 2000 characters), or ""."""
    text = log.read_text(errors="replace") if log.exists() else ""
    start = text.find("Traceback")
    return text[start:][:2000] if start >= 0 else ""


class Sandboxd:
    """sandboxd serving a fresh store in the bench's scratch directory."""

    def __init__(self, tmp: Path) -> None:
        self.root = tmp / "store"
        self.sock = tmp / "sandboxd.sock"
        self.log = tmp / "sandboxd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        """Build ``base`` in the store, then serve it; "" or why it failed.

        The image is built here, not by a daemon a client would autostart, so
        that the first measured run does not pay for it.
        """
        try:
            Engine(self.root).ensure_base()
        except Exception as exc:
            return f"cannot build the image base: {exc}"
        env = {**os.environ, "SANDBOX_ROOT": str(self.root)}
        env.pop("SANDBOX_HOST", None)
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [str(Path(sys.executable).with_name("sandboxd")), "--host",
                 f"unix://{self.sock}", "--root", str(self.root)],
                stdout=log, stderr=log, env=env,
                start_new_session=True,  # a ^C reaches the bench, which stops it in order
            )  # fmt: skip
        return wait_ping(self.sock, self.proc, self.log)

    def stop(self) -> list[str]:
        """SIGTERM the daemon (it stops its containers) and wait; returns what is left."""
        if self.proc is not None and terminate(self.proc):
            return [f"sandboxd ignored SIGTERM for {GRACE:g} s: killed"]
        return []


def stop_store_daemon(root: Path) -> list[str]:
    """Stop the sandboxd a client started for the store at ``root`` (SIGTERM), and wait.

    It is not our child: it is found by the store's pid file, and only if it
    holds the store's lock and is still a sandboxd (not a recycled PID).
    Returns what went wrong (nothing when none ran or it stopped).
    """
    pid_file, lock_file = root / "sandboxd.pid", root / "sandboxd.lock"
    if not lock_file.exists():
        return []  # none was ever started
    with open(lock_file, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return []  # nobody holds it: no daemon runs
        except BlockingIOError:
            pass
    try:
        pid = int(pid_file.read_text())
        if b"sandboxd" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return []  # a stale PID, now another process's
        fd = os.pidfd_open(pid)
    except (OSError, ValueError):
        return []
    try:
        signal.pidfd_send_signal(fd, signal.SIGTERM)
        if not select.select([fd], [], [], GRACE)[0]:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
            return [f"sandboxd ({pid}) ignored SIGTERM for {GRACE:g} s: killed"]
    finally:
        os.close(fd)
    return []
