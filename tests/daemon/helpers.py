"""A real sandboxd as a subprocess, and a small raw HTTP client for its socket.

The daemon runs on a socket and a store of its own (the base image built
first with the real ``sandbox image build-base``). When stopped it gets
SIGTERM, and must exit 0, remove its socket and leave no container process
and no cgroup of its store behind.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
TEMP_PREFIX = "sandbox-test-daemon-"


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a unix socket."""

    def __init__(self, path: str, timeout: float = 30) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Daemon:
    """A running sandboxd: its socket, store, process and log."""

    socket: Path
    root: Path
    dir: Path
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def connection(self, timeout: float = 30) -> UnixHTTPConnection:
        return UnixHTTPConnection(str(self.socket), timeout)

    def request(self, method: str, url: str, body: Any = None, *, raw: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 30) -> Reply:  # fmt: skip
        """One request on a fresh connection; ``body`` is sent as JSON."""
        conn = self.connection(timeout)
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        hdrs = {"Content-Type": "application/json"} if data is not None else {}
        try:
            conn.request(method, url, body=data, headers={**hdrs, **(headers or {})})
            resp = conn.getresponse()
            return Reply(resp.status, resp.headers, resp.read())
        finally:
            conn.close()

    def create(self, cmd: list[str], **extra: Any) -> str:
        name = extra.pop("name", None)
        url = "/v1.44/containers/create" + (f"?name={name}" if name else "")
        reply = self.request("POST", url, {"Image": "base", "Cmd": cmd, **extra})
        assert reply.status == 201, reply.body
        return str(reply.json()["Id"])

    def wait_for_output(self, cid: str, needle: bytes, timeout: float = 30) -> None:
        """Wait until the container has written ``needle``.

        A signal sent in the first moments after a start can be lost: the
        init (tini) drops what comes before it has set up its handlers, as
        with ``docker run --init``. A command that prints when it runs tells
        the test when signals will be forwarded.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            logs = self.request("GET", f"/v1.44/containers/{cid}/logs?stdout=1&stderr=1")
            if needle in logs.body:
                return
            time.sleep(0.05)
        raise AssertionError(f"container {cid[:12]} did not print {needle!r} in {timeout} s")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def hijack_attach(daemon: Daemon, cid: str, query: str,
                  timeout: float = 20) -> tuple[socket.socket, bytes, bytes]:
    """A hijacked attach as the docker CLI makes it: the socket, the reply head, what follows."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(str(daemon.socket))
    sock.sendall(
        f"POST /v1.44/containers/{cid}/attach?{query} HTTP/1.1\r\nHost: localhost\r\n"
        "Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n".encode()
    )
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, f"connection closed before the reply head: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return sock, head + b"\r\n\r\n", rest


def demux(data: bytes) -> list[tuple[int, bytes]]:
    """Split Docker's multiplexed stream into (stream, bytes) frames."""
    frames = []
    while data:
        assert len(data) >= 8, f"truncated frame header: {data!r}"
        stream, size = struct.unpack(">BxxxL", data[:8])
        frames.append((stream, data[8 : 8 + size]))
        data = data[8 + size :]
    return frames


def joined(frames: list[tuple[int, bytes]], stream: int) -> bytes:
    return b"".join(data for s, data in frames if s == stream)


def _container_ids(root: Path) -> set[str]:
    path = root / "containers"
    return {n for n in os.listdir(path) if not n.startswith(".")} if path.exists() else set()


def _processes_of(root: Path) -> set[int]:
    """Processes in the cgroup of a container of this store (other tests may run others)."""
    ids = _container_ids(root)
    found = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cgroup") as f:
                    text = f.read()
            except OSError:
                continue
            if any(f"/sandbox/{cid}" in text for cid in ids):
                found.add(int(pid))
    return found


def _cgroups_of(root: Path) -> list[str]:
    """Cgroups under ``sandbox/`` named after a container of this store."""
    ids = _container_ids(root)
    found = []
    for parent in [*Path("/sys/fs/cgroup").glob("*/sandbox"), Path("/sys/fs/cgroup/sandbox")]:
        if parent.is_dir():
            found += [str(p) for p in parent.iterdir() if p.name in ids]
    return found


def start_daemon(tmp: Path, *extra: str, build_base: bool = True) -> Daemon:
    """Start sandboxd on a fresh store, wait for its ping, build the base image through it.

    With ``build_base=False`` the store is used as it is (a restart).
    """
    root = tmp / "root"
    env = {**os.environ, "SANDBOX_ROOT": str(root)}
    env.pop("SANDBOX_HOST", None)
    sock, log = tmp / "sandboxd.sock", tmp / "sandboxd.log"
    with open(log, "ab") as out:  # a restart keeps the log of the daemon before
        proc = subprocess.Popen(
            [str(BIN / "sandboxd"), "--host", f"unix://{sock}", "--root", str(root), "--debug",
             "--shutdown-timeout", "2", *extra],
            stdout=out, stderr=out, env=env,
        )  # fmt: skip
    daemon = Daemon(sock, root, tmp, proc, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"sandboxd exited with {proc.returncode}:\n{daemon.log_text()}")
        try:
            if daemon.request("GET", "/_ping", timeout=2).status == 200:
                if build_base:  # the CLI is a client: of this daemon, not one of its own
                    subprocess.run([str(BIN / "sandbox"), "image", "build-base"],
                                   env={**env, "SANDBOX_HOST": daemon.url}, check=True,
                                   capture_output=True, timeout=120)  # fmt: skip
                return daemon
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"sandboxd did not answer within 30 s:\n{daemon.log_text()}")


def stop_daemon(daemon: Daemon) -> None:
    """SIGTERM; it must exit 0 and leave no socket, container process or cgroup.

    Its log must hold no traceback: every error it met was one it meant to report.
    """
    daemon.proc.send_signal(signal.SIGTERM)

    try:
        code = daemon.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        daemon.proc.kill()
        daemon.proc.wait()
        raise AssertionError(f"sandboxd ignored SIGTERM:\n{daemon.log_text()}") from None
    assert code == 0, f"sandboxd exited with {code}:\n{daemon.log_text()}"
    assert not daemon.socket.exists(), "sandboxd left its socket behind"
    deadline = time.monotonic() + 3
    while True:
        left = _processes_of(daemon.root)
        cgroups = _cgroups_of(daemon.root)
        if not (left or cgroups) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not left, f"container processes outlived sandboxd: {left}"
    assert not cgroups, f"cgroups outlived sandboxd: {cgroups}"
    assert "Traceback" not in daemon.log_text(), daemon.log_text()[-20000:]
