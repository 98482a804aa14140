"""What the Jupyter kernel needs from the daemon beyond Docker's API.

- no docker-py pause for our own clients (they send ``jupyter-sandbox/<v>``);
- a signal reaches the command's whole process group (``tini -g``);
- ``GET /sandbox/containers/{id}/stdin``: is a process blocked reading stdin?
- ``GET /containers/{id}/changes?detail=1``: size, type, layer and opacity.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web

from sandbox.client import AsyncClient, Client, user_agent
from sandbox.daemon import streams
from sandbox.errors import ContainerNotFound
from sandbox.store import Store

from .helpers import TEMP_PREFIX, Daemon, demux, hijack_attach, joined

pytestmark = pytest.mark.root

T = TypeVar("T")
HANG_GUARD = 20.0  # seconds a step may take before the test gives up (not a timing check)


def attach(daemon: Daemon, cid: str, query: str) -> tuple[socket.socket, bytes]:
    """A hijacked attach, as the docker CLI makes it: the socket and the bytes past the head."""
    sock, head, rest = hijack_attach(daemon, cid, query, timeout=HANG_GUARD)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock, rest


def read_to_end(sock: socket.socket, data: bytes = b"") -> bytes:
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    return data


def start(daemon: Daemon, cid: str) -> None:
    assert daemon.request("POST", f"/v1.44/containers/{cid}/start").status == 204


def wait_status(daemon: Daemon, cid: str) -> int:
    reply = daemon.request("POST", f"/v1.44/containers/{cid}/wait", timeout=HANG_GUARD)
    assert reply.status == 200, reply.body
    return int(reply.json()["StatusCode"])


def remove(daemon: Daemon, cid: str) -> None:
    reply = daemon.request("DELETE", f"/v1.44/containers/{cid}?force=1")
    assert reply.status in (204, 404), reply.body


def stdin_state(daemon: Daemon, cid: str) -> dict[str, Any]:
    reply = daemon.request("GET", f"/v1.44/sandbox/containers/{cid}/stdin")
    assert reply.status == 200, reply.body
    return dict(reply.json())


def until_waiting(daemon: Daemon, cid: str) -> dict[str, Any]:
    """Poll the stdin route until it says Waiting (a hang guard, no timing check)."""
    deadline = time.monotonic() + HANG_GUARD
    while True:
        state = stdin_state(daemon, cid)
        if state["Waiting"]:
            return state
        assert time.monotonic() < deadline, f"never waiting for input: {state}"
        time.sleep(0.05)


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


# -- the User-Agent and docker-py's pause --------------------------------------------


class _Request:
    def __init__(self, agent: str | None) -> None:
        self.headers = {} if agent is None else {"User-Agent": agent}


def test_only_docker_py_gets_the_pause_after_the_101(monkeypatch: pytest.MonkeyPatch) -> None:
    pauses: list[float] = []

    async def sleep(delay: float) -> None:
        pauses.append(delay)

    monkeypatch.setattr(streams.asyncio, "sleep", sleep)
    for agent in ("docker-sdk-python/7.2.0", "jupyter-sandbox/0.1.0", "Docker-Client/28", None):
        run(streams.settle(_Request(agent)))  # type: ignore[arg-type]
    assert pauses == [streams.SETTLE]


def test_the_client_names_itself_on_every_request() -> None:
    """Plain requests (aiohttp) and the hand-written hijack both send the User-Agent."""
    agents: dict[str, str] = {}

    async def record(request: web.Request) -> web.StreamResponse:
        agents[request.path] = request.headers.get("User-Agent", "")
        if request.path.endswith("/attach"):
            return web.json_response({"message": "No such container: x"}, status=404)
        return web.json_response({} if request.path.endswith("/json") else None)

    async def main(sock: Path) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", record)
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            await web.UnixSite(runner, str(sock)).start()
            async with AsyncClient(f"unix://{sock}", autostart=False) as client:
                await client.inspect_container("x")
                with pytest.raises(ContainerNotFound):
                    await client.attach("x", stdin=True)
        finally:
            await runner.cleanup()

    tmp = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
    try:
        asyncio.run(main(tmp / "fake.sock"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert user_agent().startswith("jupyter-sandbox/")
    assert agents == {
        "/_ping": user_agent(),
        "/v1.44/containers/x/json": user_agent(),
        "/v1.44/containers/x/attach": user_agent(),
    }


# -- signals reach the command's process group -----------------------------------------


def test_sigint_reaches_the_commands_children(daemon: Daemon) -> None:
    """As ^C in a terminal: bash and its `sleep` both get it, so nothing runs after."""
    cid = daemon.create(["bash", "-c", "echo ready; sleep 30; echo after"])
    try:
        start(daemon, cid)
        daemon.wait_for_output(cid, b"ready")  # tini forwards signals from now on
        reply = daemon.request("POST", f"/v1.44/containers/{cid}/kill?signal=SIGINT")
        assert reply.status == 204, reply.body
        # Without -g bash alone gets it, waits for the 30 s sleep and says "after".
        assert wait_status(daemon, cid) == 130
        logs = daemon.request("GET", f"/v1.44/containers/{cid}/logs?stdout=1&stderr=1").body
        assert joined(demux(logs), 1) == b"ready\n"
    finally:
        remove(daemon, cid)


# -- is it waiting for input? ---------------------------------------------------------------

STREAMS = "stream=1&stdin=1&stdout=1&stderr=1"


def test_read_waits_for_stdin_until_a_line_comes(daemon: Daemon) -> None:
    cid = daemon.create(["bash", "-c", "read x; echo got $x"], OpenStdin=True, AttachStdin=True)
    try:
        sock, rest = attach(daemon, cid, STREAMS)
        start(daemon, cid)
        state = until_waiting(daemon, cid)
        assert [r["Command"] for r in state["Readers"]] == ["bash"]
        assert all(isinstance(r["Pid"], int) and r["Pid"] > 1 for r in state["Readers"])
        sock.sendall(b"hi\n")
        assert joined(demux(read_to_end(sock, rest)), 1) == b"got hi\n"
        assert wait_status(daemon, cid) == 0
        assert stdin_state(daemon, cid) == {"Waiting": False, "Readers": []}  # not running
    finally:
        remove(daemon, cid)


def test_cat_waits_for_stdin_through_the_client(daemon: Daemon) -> None:
    """The kernel's way: AsyncClient attaches, polls stdin_waiting, sends, half-closes."""

    async def main() -> tuple[bytes, int]:
        async with AsyncClient(daemon.url, autostart=False) as client:
            cid = await client.create({"Image": "base", "Cmd": ["cat"], "OpenStdin": True,
                                       "AttachStdin": True})  # fmt: skip
            try:
                conn = await client.attach(cid, stdin=True)
                await client.start(cid)
                deadline = time.monotonic() + HANG_GUARD
                while not await client.stdin_waiting(cid):
                    assert time.monotonic() < deadline, "cat never waited for input"
                    await asyncio.sleep(0.05)
                await conn.send(b"line\n")
                conn.close_stdin()
                out = b"".join([data async for stream, data in conn.output() if stream == "stdout"])
                conn.close()
                status, _ = await (await client.wait(cid)).result()
                return out, status
            finally:
                await client.remove(cid, force=True)

    assert run(main()) == (b"line\n", 0)


@pytest.mark.parametrize(
    ("open_stdin", "script"),
    [
        (True, "echo ready; exec sleep 30"),  # runs, reads nothing
        (True, "echo ready; sleep 30 | cat"),  # cat reads a pipe, not the stdin one
        (False, "echo ready; sleep 30 | cat"),
        (False, "echo ready; exec sleep 30"),
    ],
    ids=["sleep", "cat-of-another-pipe", "no-stdin-cat-of-another-pipe", "no-stdin-sleep"],
)
def test_a_container_not_reading_its_stdin_is_not_waiting(
    daemon: Daemon, open_stdin: bool, script: str
) -> None:
    cid = daemon.create(["sh", "-c", script], OpenStdin=open_stdin, AttachStdin=open_stdin)
    sock = None
    try:
        if open_stdin:  # stdin held open, as a kernel holds it
            sock, _rest = attach(daemon, cid, STREAMS)
        start(daemon, cid)
        daemon.wait_for_output(cid, b"ready")
        for _ in range(5):
            assert stdin_state(daemon, cid) == {"Waiting": False, "Readers": []}
            time.sleep(0.05)
        with Client(daemon.url, autostart=False) as client:
            assert client.stdin_waiting(cid) is False
    finally:
        remove(daemon, cid)
        if sock is not None:
            sock.close()


def test_stdin_of_an_unknown_container_is_a_404(daemon: Daemon) -> None:
    reply = daemon.request("GET", "/v1.44/sandbox/containers/nosuch/stdin")
    assert reply.status == 404
    assert reply.json()["message"].startswith("No such container")
    cid = daemon.create(["true"])  # created, never started
    try:
        assert stdin_state(daemon, cid) == {"Waiting": False, "Readers": []}
    finally:
        remove(daemon, cid)


# -- changes with details ------------------------------------------------------------------


def test_changes_with_detail_name_size_type_layer_and_opacity(daemon: Daemon) -> None:
    """On a two-layer image: the base (layer 0) and a committed layer (layer 1)."""
    first = daemon.create(["sh", "-c", "mkdir -p /data/dir && echo one > /data/f"
                                       " && echo a > /data/dir/a"])  # fmt: skip
    made: list[str] = [first]
    image = "detail-test:1"
    try:
        start(daemon, first)
        assert wait_status(daemon, first) == 0
        reply = daemon.request("POST", f"/v1.44/commit?container={first}&repo=detail-test&tag=1")
        assert reply.status == 201, reply.body
        script = (
            "echo two >> /data/f && echo more >> /etc/profile && rm /etc/os-release"
            " && echo new > /added && ln -s /added /link"
            " && rm -rf /data/dir && mkdir /data/dir && echo c > /data/dir/c"
            " && rm -rf /etc/vim && mkdir /etc/vim && echo set > /etc/vim/vimrc"
        )
        cid = daemon.create(["sh", "-c", script], Image=image)
        made.append(cid)
        start(daemon, cid)
        assert wait_status(daemon, cid) == 0

        plain = daemon.request("GET", f"/v1.44/containers/{cid}/changes").json()
        assert all(set(c) == {"Path", "Kind"} for c in plain)
        reply = daemon.request("GET", f"/v1.44/containers/{cid}/changes?detail=1")
        assert reply.status == 200, reply.body
        detail = reply.json()
        assert [(c["Path"], c["Kind"]) for c in detail] == [(c["Path"], c["Kind"]) for c in plain]
        got = {c["Path"]: (c["Kind"], c["Type"], c["Size"], c["Layer"], c["Opaque"])
               for c in detail}  # fmt: skip
        base_layer = daemon.request("GET", "/v1.44/images/base/json").json()["SandboxLayers"][0]
        profile = Store(daemon.root).layers.path(base_layer) / "etc" / "profile"
        assert got == {
            "/added": (1, "file", 4, None, False),
            "/data": (0, "dir", 0, 1, False),
            "/data/dir": (0, "dir", 0, 1, True),
            "/data/dir/a": (2, "file", 0, 1, False),
            "/data/dir/c": (1, "file", 2, None, False),
            "/data/f": (0, "file", 8, 1, False),
            "/etc": (0, "dir", 0, 0, False),
            "/etc/os-release": (2, "file", 0, 0, False),
            "/etc/profile": (0, "file", profile.stat().st_size + len("more\n"), 0, False),
            "/etc/vim": (0, "dir", 0, 0, True),
            "/etc/vim/vimrc": (1, "file", 4, None, False),
            "/etc/vim/vimrc.tiny": (2, "file", 0, 0, False),
            "/link": (1, "symlink", 0, None, False),
        }

        with Client(daemon.url, autostart=False) as client:
            assert client.changes(cid, detail=True) == detail
            assert client.changes(cid) == plain
    finally:
        for ref in made:
            remove(daemon, ref)
        daemon.request("DELETE", f"/v1.44/images/{image}")
