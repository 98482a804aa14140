"""Published ports: a container's TCP port reachable on the host's loopback.

``-p 127.0.0.1:8080:80`` makes the engine listen on 127.0.0.1:8080 in the
host's namespace (a listening socket: no interface, address or route is
added there) and, for each connection, open one to port 80 from inside the
container's own namespace, on its loopback, then copy bytes both ways, as
docker-proxy does. So a published port works whatever networks the container
is on, `none` included, and the container never gets a path to the host.

Only the loopback: publishing on 0.0.0.0 would open a student's server to
every network the machine is on.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

from sandbox.errors import Conflict, InvalidArgument, PermissionDenied, SandboxError
from sandbox.runtime import netns

log = logging.getLogger("sandboxd")
LOOPBACK = "127.0.0.1"
_LOOPBACK_NAMES = ("", LOOPBACK, "localhost")
CHUNK = 65536


def parse_bindings(bindings: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
    """Docker's PortBindings, checked: ``{"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}``.

    An empty HostIp means the loopback; an empty HostPort, a free port chosen
    at start.

    Raises:
        InvalidArgument: a malformed port, a range, UDP, or another address.
    """
    result: dict[str, list[dict[str, str]]] = {}
    for key, targets in (bindings or {}).items():
        port, _, proto = str(key).partition("/")
        proto = proto or "tcp"
        if proto != "tcp":
            raise InvalidArgument(
                f"cannot publish {key}: only TCP ports can be published "
                "(write -p 127.0.0.1:HOSTPORT:PORT)"
            )
        _check_port(port, key)
        checked = []
        for target in targets or [{}]:
            if not isinstance(target, dict):
                raise InvalidArgument(f"invalid port binding for {key}: {target!r}")
            host_ip = str(target.get("HostIp") or "")
            host_port = str(target.get("HostPort") or "")
            if host_ip not in _LOOPBACK_NAMES:
                raise InvalidArgument(
                    f"cannot publish port {port} on {host_ip}: ports are published on the "
                    f"host's loopback only, so only this machine reaches them; "
                    f"write -p 127.0.0.1:{host_port or 'HOSTPORT'}:{port}"
                )
            if host_port:
                _check_port(host_port, f"host port of {key}")
            checked.append({"HostIp": LOOPBACK, "HostPort": host_port})
        result[f"{int(port)}/tcp"] = checked
    return result


def check_unprivileged(bindings: dict[str, list[dict[str, str]]]) -> None:
    """Refuse host ports below the kernel's unprivileged start (1024) to a user not root.

    The daemon runs as root: without this, any user of it could have it
    listen on a port of a service the host has not started yet (25, 631).

    Raises:
        PermissionDenied: such a port.
    """
    try:
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
            start = int(f.read())
    except (OSError, ValueError):
        start = 1024
    for key, targets in bindings.items():
        for target in targets:
            if target["HostPort"] and int(target["HostPort"]) < start:
                raise PermissionDenied(
                    f"cannot publish {key} on host port {target['HostPort']}: ports below "
                    f"{start} are root's; choose a port from {start} up"
                )


def _check_port(text: str, what: str) -> None:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise InvalidArgument(
            f"invalid port {text!r} in {what}: use a number from 1 to 65535 "
            "(ranges are not supported)"
        )


class Namespace:
    """The proxy's own descriptor of a container's network namespace.

    Its own (a dup), so that the engine closing the container's never leaves
    a connection to be made through a descriptor number reused meanwhile,
    and closed once: a client accepted after that is simply hung up on.
    """

    def __init__(self, ns_fd: int) -> None:
        self.fd: int | None = os.dup(ns_fd)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


@dataclass
class Published:
    """One listening socket on the host and the container port it leads to."""

    server: asyncio.Server
    host_port: int
    container_port: int
    target: Namespace


async def publish(ns_fd: int, bindings: dict[str, list[dict[str, str]]]) -> list[Published]:
    """Listen for every binding; returns them (close them with `unpublish`).

    Raises:
        Conflict: a host port is taken (nothing stays open then).
    """
    opened: list[Published] = []
    if not bindings:
        return opened
    target = Namespace(ns_fd)
    try:
        for key, targets in bindings.items():
            container_port = int(key.partition("/")[0])
            for binding in targets:
                wanted = int(binding["HostPort"] or 0)
                opened.append(await _listen(target, wanted, container_port))
    except BaseException:
        unpublish(opened)
        target.close()
        raise
    return opened


def unpublish(published: list[Published]) -> None:
    """Stop listening (connections already made run on until either side closes)."""
    for item in published:
        item.server.close()
        item.target.close()


def settings(published: list[Published]) -> dict[str, list[dict[str, str]]]:
    """What inspect shows as NetworkSettings.Ports for them."""
    result: dict[str, list[dict[str, str]]] = {}
    for item in published:
        result.setdefault(f"{item.container_port}/tcp", []).append(
            {"HostIp": LOOPBACK, "HostPort": str(item.host_port)}
        )
    return result


async def _listen(target: Namespace, host_port: int, container_port: int) -> Published:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _relay(target, container_port, reader, writer)

    try:
        server = await asyncio.start_server(handle, LOOPBACK, host_port, reuse_address=True)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise Conflict(
                f"cannot publish port {container_port}: {LOOPBACK}:{host_port} is already in "
                f"use on this host; choose another host port (-p {LOOPBACK}:OTHER:"
                f"{container_port}) or leave it out to get a free one"
            ) from None
        raise
    port = server.sockets[0].getsockname()[1]
    return Published(server, port, container_port, target)


async def _relay(target: Namespace, port: int, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:  # fmt: skip
    """One client: connect inside the container's namespace, copy both ways."""
    try:
        if target.fd is None:  # the container has stopped
            raise ConnectionRefusedError
        sock = netns.socket_in(target.fd, socket.AF_INET, socket.SOCK_STREAM)
    except (OSError, SandboxError):
        writer.close()
        return
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (LOOPBACK, port))
        up_reader, up_writer = await asyncio.open_connection(sock=sock)
    except OSError:  # nothing listens there (yet): the client sees the connection close
        sock.close()
        writer.close()
        return
    try:
        await asyncio.gather(_copy(reader, up_writer), _copy(up_reader, writer))
    finally:
        for w in (writer, up_writer):
            w.close()


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end-of-file, then half-close, as TCP lets each side do.

    A reset on the reading side closes the writing side: its peer would
    otherwise wait for ever (a server that exits with connections still
    queued on its listening socket resets them).
    """
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()
