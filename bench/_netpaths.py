"""bench/network's round trips: two containers on lab, an echo server, and the timed paths.

The server container publishes PORT; a TCP echo server (a process of its
own) serves a listening socket that the bench made inside that container's
network namespace. Each path is a way for the bench to reach it: from inside
the server container (its own loopback), from inside the client container
(over lab's veths and bridge), and from the host's loopback through the
published port (the daemon's proxy). The client's socket is made before the
clock starts: entering a namespace is not part of a path.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol

from _common import RunFailed

from sandbox.client import AsyncClient
from sandbox.runtime import netns

PORT = 7007  # the port the server container publishes and the echo server listens on
MESSAGE = b"x" * 64  # one echo's payload
CHUNK = 100  # kept-open round trips of one path before the next path's turn
# The paths, and the kinds of round trip, µs.
LOOPBACK = "a container's own loopback (no veth)"
C2C = "container to container on lab (veth, bridge, veth)"
PUBLISHED = "host loopback -> published port (daemon's proxy) -> container"
KEPT, NEW = "kept-open connection", "new connection each time"
PING_C2C = "ping, container to container on lab, by name"
PING_LO = "ping, a container to its own loopback"

# The TCP echo server: a process of its own serving a listening socket that
# the bench made inside the server container's namespace (argv[1] is its fd).
ECHO_SERVER = """\
import selectors, socket, sys
listener = socket.socket(fileno=int(sys.argv[1]))
listener.setblocking(False)
sel = selectors.DefaultSelector()
sel.register(listener, selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        sock = key.fileobj
        if sock is listener:
            conn, _ = listener.accept()
            conn.setblocking(True)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sel.register(conn, selectors.EVENT_READ)
            continue
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if data:
            sock.sendall(data)
        else:
            sel.unregister(sock)
            sock.close()
"""

Route = tuple[Callable[[], socket.socket], tuple[str, int]]  # make the socket, where it connects


class Daemon(Protocol):
    """What the pair needs of bench/network's daemon: a client, and a loop to run it on."""

    client: AsyncClient

    def run(self, coro: Any) -> Any: ...


class Pair:
    """Two containers left running on lab: the server (it publishes PORT) and a client."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.ids: list[str] = []
        self.ns_fds: dict[str, int] = {}
        self.server_ip = ""
        self.host_port = 0
        self.echo: subprocess.Popen[bytes] | None = None

    def start(self, specs: dict[str, dict[str, Any]]) -> None:
        """Start both from their create bodies, then the echo server in the server's namespace.

        ``specs`` holds the ``server`` and the ``client`` body; the server's
        publishes PORT on the host's loopback.

        Raises:
            RunFailed: a container did not come up with an address and a port.
        """
        client = self.daemon.client
        for role in ("server", "client"):
            cid = self.daemon.run(client.create(specs[role], f"bench-{role}"))
            self.ids.append(cid)
            self.daemon.run(client.start(cid))
            info = self.daemon.run(client.inspect_container(cid))
            pid = info["State"]["Pid"]
            self.ns_fds[role] = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            if role == "server":
                settings = info["NetworkSettings"]
                self.server_ip = settings["Networks"]["lab"]["IPAddress"]
                self.host_port = int(settings["Ports"][f"{PORT}/tcp"][0]["HostPort"])
        if not self.server_ip or not self.host_port:
            raise RunFailed(f"the server has no address or published port: {self.server_ip!r}")
        listener = netns.socket_in(self.ns_fds["server"], socket.AF_INET, socket.SOCK_STREAM)
        with listener:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("0.0.0.0", PORT))
            listener.listen(64)
            # Its own session: a ^C reaches the bench, which kills it.
            self.echo = subprocess.Popen([sys.executable, "-c", ECHO_SERVER,
                                          str(listener.fileno())],
                                         pass_fds=[listener.fileno()],
                                         start_new_session=True)  # fmt: skip

    def paths(self) -> dict[str, Route]:
        """Each path: how to make the client's socket, and where it connects."""
        server, client = self.ns_fds["server"], self.ns_fds["client"]

        def inside(fd: int) -> Callable[[], socket.socket]:
            return lambda: netns.socket_in(fd, socket.AF_INET, socket.SOCK_STREAM)

        return {
            LOOPBACK: (inside(server), ("127.0.0.1", PORT)),
            C2C: (inside(client), (self.server_ip, PORT)),
            PUBLISHED: (lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM),
                        ("127.0.0.1", self.host_port)),
        }  # fmt: skip

    def stop(self) -> None:
        """The echo server, our fds, then both containers (killed and removed)."""
        if self.echo is not None and self.echo.poll() is None:
            self.echo.kill()
            self.echo.wait()
        for fd in self.ns_fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self.ns_fds.clear()
        for cid in self.ids:
            with contextlib.suppress(Exception):
                self.daemon.run(self.daemon.client.remove(cid, force=True))
        self.ids.clear()


def echo_once(sock: socket.socket) -> None:
    sock.sendall(MESSAGE)
    got = 0
    while got < len(MESSAGE):
        data = sock.recv(len(MESSAGE) - got)
        if not data:
            raise RunFailed("the echo server closed the connection")
        got += len(data)


def connected(make: Callable[[], socket.socket], addr: tuple[str, int]) -> socket.socket:
    sock = make()
    sock.settimeout(10)
    sock.connect(addr)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def echo_times(
    paths: dict[str, Route], n: int, connections: int, seed: int
) -> dict[tuple[str, str], list[float]]:
    """TCP echo on each path: kept-open in chunks, then new connections, interleaved.

    Returns the µs of each round trip by (path, KEPT or NEW). On a kept-open
    connection the paths take turns of CHUNK round trips after 20 not timed;
    a new connection is made (connect, one echo, close) once per path a
    round, the paths in a new shuffled order each round.

    Raises:
        RunFailed: the echo server closed a connection.
    """
    trips: dict[tuple[str, str], list[float]] = {}
    rng = random.Random(seed)
    socks = {name: connected(make, addr) for name, (make, addr) in paths.items()}
    try:
        for sock in socks.values():
            for _ in range(20):  # warm-up: the neighbour's address is resolved
                echo_once(sock)
        order = list(paths)
        for start in range(0, n, CHUNK):
            rng.shuffle(order)
            for name in order:
                times = trips.setdefault((name, KEPT), [])
                sock = socks[name]
                for _ in range(min(CHUNK, n - start)):
                    t0 = time.perf_counter_ns()
                    echo_once(sock)
                    times.append((time.perf_counter_ns() - t0) / 1e3)
    finally:
        for sock in socks.values():
            sock.close()
    order = list(paths)
    for _ in range(connections):
        rng.shuffle(order)
        for name in order:
            make, addr = paths[name]
            sock = make()  # made before the clock: entering a namespace is not the path
            sock.settimeout(10)
            t0 = time.perf_counter_ns()
            sock.connect(addr)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            echo_once(sock)
            sock.close()
            trips.setdefault((name, NEW), []).append((time.perf_counter_ns() - t0) / 1e3)
    return trips


def ping_times(output: bytes) -> list[float]:
    """The round trips of ping's per-packet lines, in µs."""
    return [float(ms) * 1e3 for ms in re.findall(rb"time=([\d.]+) ms", output)]
