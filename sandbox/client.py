"""The one way to the daemon: its REST API over the unix socket.

Every client of ``sandboxd`` (the ``sandbox`` CLI, the kernel, the widgets)
goes through `AsyncClient`; the CLI uses `Client`, whose methods are the
same coroutines run to completion, never a second implementation. The
client does no work of its own: it sends requests and turns the replies back
into Python values, and each error reply back into the `SandboxError` class
the daemon raised (see `error_from_reply`). Lower layers never leak: a socket
that nobody answers, or a connection lost midway, is a `DaemonUnreachable`
that names the socket.

Where the daemon is: ``SANDBOX_HOST`` (``unix:///path``) if set; else the
socket of the store's daemon (`sandbox.config.default_socket`). When nothing
answers there, the client starts ``sandboxd`` for the user (once, even if
several clients race) and tells its caller so; with ``SANDBOX_HOST`` it does
not, since the user named a daemon that should be there.

Streams: ``logs`` and ``stats`` are chunked replies read as they come;
``attach`` and ``exec`` start take the connection over (``Upgrade: tcp``,
``101 UPGRADED``), after which it carries the output one way (raw with a
terminal, else 8-byte-framed stdout and stderr) and stdin the other, with a
half-close when stdin ends (`Hijacked`). Every request, the hijacked ones
too, says who sends it: ``User-Agent: jupyter-sandbox/<version>``.

EXAMPLE:
    async with AsyncClient() as client:
        cid = await client.create({"Image": "base", "Cmd": ["echo", "hi"]})
        await client.start(cid)
        status, _ = await (await client.wait(cid)).result()
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import inspect
import json
import os
import signal
import struct
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import aiohttp

from sandbox import config
from sandbox.errors import (
    CommandNotFound,
    Conflict,
    ContainerNotFound,
    ContainerNotRunning,
    ContainerRunning,
    DaemonUnreachable,
    ImageNotFound,
    InvalidArgument,
    LimitUnsupported,
    NetworkNotFound,
    NotFound,
    PermissionDenied,
    RuntimeFailure,
    SandboxError,
)

T = TypeVar("T")

API_VERSION = "1.44"
PREFIX = f"/v{API_VERSION}"
START_TIMEOUT = 60.0  # seconds a daemon started for the user may take to answer
CONNECT_TIMEOUT = 10.0  # seconds to connect to a socket that exists
RAW = "application/vnd.docker.raw-stream"
STREAM_NAMES = {0: "stdin", 1: "stdout", 2: "stderr", 3: "system"}
# The words the daemon adds to a missing command's message for the docker
# CLI, which picks exit status 127 from them (sandbox/daemon/errors.py).
_DOCKER_127 = " (executable file not found in $PATH)"


@functools.cache
def user_agent() -> str:
    """``jupyter-sandbox/<version>``: the User-Agent of every request this client sends.

    The daemon tells its own clients from docker-py by it (docker-py alone
    needs a pause after an attach's 101: sandbox/daemon/streams.py).
    """
    try:
        version = metadata.version("jupyter-sandbox")
    except metadata.PackageNotFoundError:
        version = "0.0.0"
    return f"jupyter-sandbox/{version}"


# -- errors --------------------------------------------------------------------


def _rebuild(cls: type[SandboxError], message: str) -> SandboxError:
    """An instance of ``cls`` with exactly ``message`` (their __init__ builds one)."""
    exc = cls.__new__(cls)
    SandboxError.__init__(exc, message)
    if isinstance(exc, RuntimeFailure):
        exc.step, exc.errno = ("exec" if isinstance(exc, CommandNotFound) else ""), 0
    return exc


def error_from_reply(status: int, body: bytes) -> SandboxError:
    """The `SandboxError` a daemon's error reply stands for.

    The status picks the family and the message the class within it, as the
    daemon builds them (``No such container: ...``, ``Container x is not
    running``); the message is kept as the daemon wrote it.
    """
    try:
        message = str(json.loads(body)["message"])
    except (ValueError, KeyError, TypeError):
        message = body.decode("utf-8", "replace").strip() or f"HTTP status {status}"
    cls: type[SandboxError] = SandboxError
    if status == 404:
        cls = NotFound
        if message.startswith("No such container"):
            cls = ContainerNotFound
        elif message.startswith("No such image"):
            cls = ImageNotFound
        elif message.startswith("No such network"):
            cls = NetworkNotFound
    elif status == 409:
        cls = Conflict
        if message.endswith("is not running"):
            cls = ContainerNotRunning
        elif message.startswith("You cannot") and "running container" in message:
            cls = ContainerRunning
    elif status == 400:
        cls = InvalidArgument
        if message.endswith(_DOCKER_127):
            cls, message = CommandNotFound, message.removesuffix(_DOCKER_127)
        elif "no such file or directory" in message and ":" in message:
            cls = CommandNotFound
        elif message.startswith("cannot enforce"):
            cls = LimitUnsupported
    elif status == 403:
        cls = PermissionDenied
    elif status == 503:
        cls = DaemonUnreachable
    return _rebuild(cls, message)


# -- streams -------------------------------------------------------------------


async def read_frames(reader: Any, multiplexed: bool) -> AsyncIterator[tuple[str, bytes]]:
    """``(stream, bytes)`` until the end: framed stdout/stderr, or raw bytes as stdout.

    ``reader`` is an asyncio or aiohttp stream reader.
    """
    while True:
        if not multiplexed:
            data = await reader.read(65536)
            if not data:
                return
            yield "stdout", data
            continue
        try:
            head = await reader.readexactly(8)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise SandboxError("the daemon's output stream ended inside a frame") from None
            return
        stream, size = struct.unpack(">BxxxL", head)
        data = await reader.readexactly(size) if size else b""
        yield STREAM_NAMES.get(stream, "stdout"), data


class Hijacked:
    """An attach or exec connection after ``101 UPGRADED``: output in, stdin out."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tty: bool,
                 lost: Callable[[BaseException], SandboxError]) -> None:  # fmt: skip
        self.reader = reader
        self.writer = writer
        self.tty = tty
        self._lost = lost

    async def output(self) -> AsyncIterator[tuple[str, bytes]]:
        """The output until the daemon closes the connection (the container or exec ended)."""
        try:
            async for item in read_frames(self.reader, multiplexed=not self.tty):
                yield item
        except OSError as exc:  # reset: the daemon died
            raise self._lost(exc) from exc

    async def send(self, data: bytes) -> None:
        """Send bytes to the container's stdin (waits while the daemon is behind)."""
        self.writer.write(data)
        await self.writer.drain()

    def close_stdin(self) -> None:
        """Half-close: the container's stdin ends; its output keeps coming."""
        with contextlib.suppress(OSError):
            if self.writer.can_write_eof() and not self.writer.is_closing():
                self.writer.write_eof()

    def close(self) -> None:
        self.writer.close()


class Waiting:
    """A ``wait`` the daemon has accepted: its headers came, the status comes at the exit."""

    def __init__(self, client: AsyncClient, response: aiohttp.ClientResponse) -> None:
        self._client = client
        self._response = response

    async def result(self) -> tuple[int, str]:
        """The exit status, and why it ended if the daemon says (out of memory, ...).

        Raises:
            DaemonUnreachable: the daemon went away before the container ended.
        """
        try:
            body = json.loads(await self._response.read())
        except (aiohttp.ClientError, ValueError) as exc:
            raise self._client.lost(exc) from exc
        finally:
            self._response.release()
        if body.get("Error"):
            raise SandboxError(str(body["Error"].get("Message", body["Error"])))
        return int(body["StatusCode"]), str(body.get("SandboxError") or "")

    def close(self) -> None:
        self._response.close()


# -- the daemon started for the user ----------------------------------------------------


def _sandboxd_argv() -> list[str]:
    script = Path(sys.executable).with_name("sandboxd")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "sandbox.daemon.app"]


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""


def _spawn_daemon(root: Path, sock: Path, log: Path) -> int:
    """Start ``sandboxd`` for ``root`` on ``sock``, detached; returns its PID.

    It gets a session of its own (a ^C in the user's terminal is not for
    it), stdin from /dev/null and its log in ``log``; it inherits no other
    descriptor. Python's own are close-on-exec, but not those this process
    inherited: a daemon that kept, say, its starter's lock file or a Jupyter
    server's socket open would hold them for as long as it runs.
    """
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
    try:
        argv = [*_sandboxd_argv(), "--root", str(root), "--host", f"unix://{sock}"]
        env = {k: v for k, v in os.environ.items() if k != "SANDBOX_HOST"}
        inherited = [int(n) for n in os.listdir("/proc/self/fd") if int(n) > 2 and int(n) != fd]
        return os.posix_spawn(
            argv[0], argv, env,
            file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                          (os.POSIX_SPAWN_DUP2, fd, 1), (os.POSIX_SPAWN_DUP2, fd, 2),
                          *[(os.POSIX_SPAWN_CLOSE, n) for n in inherited
                            if not _cloexec(n)]],
            setsid=True,
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT),
        )  # fmt: skip
    finally:
        os.close(fd)


def _cloexec(fd: int) -> bool:
    """True if ``fd`` closes on exec anyway (or is not open any more)."""
    try:
        return bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)
    except OSError:
        return True


def _exited(pid: int) -> int | None:
    """The exit status of our child ``pid`` if it has ended (reaped now), else None."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return -1
    return os.waitstatus_to_exitcode(status) if done else None


# -- the client ------------------------------------------------------------------


class AsyncClient:
    """The daemon's API as coroutines.

    Args:
        host: ``unix:///path`` of the daemon; None means ``SANDBOX_HOST``, else
            the socket of the store's daemon.
        root: the store whose daemon to use and, if needed, start; None means
            ``SANDBOX_ROOT`` or the default store.
        autostart: start a daemon when none answers; None means "unless the
            user named one with ``host`` or ``SANDBOX_HOST``".
        on_start: called with the daemon's log path after starting one.
    """

    def __init__(self, host: str | None = None, *, root: Path | None = None,
                 autostart: bool | None = None,
                 on_start: Callable[[Path], None] | None = None) -> None:  # fmt: skip
        self.host = host or config.daemon_host()
        self.root = Path(root) if root is not None else config.store_root()
        self.socket = config.socket_path(self.host, self.root)
        self.autostart = self.host is None if autostart is None else autostart
        self.on_start = on_start
        self._session: aiohttp.ClientSession | None = None
        self._ready = False
        self._why: BaseException | None = None  # why the last ping failed

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:  # fmt: skip
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- transport -----------------------------------------------------------------

    def unreachable(self, exc: BaseException | None = None) -> DaemonUnreachable:
        why = f" ({exc.strerror or exc})" if isinstance(exc, OSError) else ""
        if self.host:
            hint = (f"start it (`sandboxd --host {self.url}`), or unset SANDBOX_HOST to use "
                    "the default daemon, which is started for you")  # fmt: skip
        else:
            hint = f"start it with `sandboxd --root {self.root}`"
        return DaemonUnreachable(f"cannot reach the sandbox daemon at {self.url}{why}: {hint}")

    def lost(self, exc: BaseException) -> DaemonUnreachable:
        log = config.log_file(self.root)
        where = f" (see its log, {log})" if not self.host and log.exists() else ""
        return DaemonUnreachable(
            f"lost the connection to the sandbox daemon at {self.url}{where}: {exc or 'closed'}"
        )

    async def _session_ready(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                base_url="http://sandboxd",
                connector=aiohttp.UnixConnector(path=str(self.socket)),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT),
                headers={"User-Agent": user_agent()},
            )
        if not self._ready:
            if not await self._answers():
                if not self.autostart:
                    raise self.unreachable(self._why)
                await self._start_daemon()
            self._ready = True
        return self._session

    async def _answers(self) -> bool:
        """True if a daemon answers ``_ping`` on the socket."""
        assert self._session is not None
        self._why = None
        try:
            async with self._session.get("/_ping") as resp:
                return resp.status == 200
        except aiohttp.ClientConnectorError as exc:
            self._why = exc.os_error
            return False
        except aiohttp.ClientError as exc:
            self._why = exc
            return False

    async def _start_daemon(self) -> None:
        """Start a daemon for the store; just wait for it if another client is starting one.

        Raises:
            DaemonUnreachable: it could not be started, or did not answer in
                `START_TIMEOUT` s; the message has the last line of its log.
        """
        log = config.log_file(self.root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            lock = open(self.root / "sandboxd.start.lock", "a")  # noqa: SIM115  # closed below
        except OSError as exc:
            raise DaemonUnreachable(
                f"cannot reach the sandbox daemon at {self.url}, and cannot start one: "
                f"cannot use its store {self.root} ({exc.strerror})"
            ) from exc
        deadline = time.monotonic() + START_TIMEOUT
        try:
            # One client starts it; the others wait here, then find it answering.
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise self.unreachable() from None
                    await asyncio.sleep(0.02)
            if await self._answers():
                return
            try:
                pid = _spawn_daemon(self.root, self.socket, log)
            except OSError as exc:
                raise DaemonUnreachable(
                    f"cannot reach the sandbox daemon at {self.url}, and cannot start one: "
                    f"{exc.strerror}: {exc.filename or _sandboxd_argv()[0]}"
                ) from exc
            while not await self._answers():
                code = _exited(pid)
                if code is not None:
                    raise DaemonUnreachable(
                        f"cannot reach the sandbox daemon at {self.url}, and the one started "
                        f"for you exited ({code}): {_last_line(log)} (log: {log})"
                    )
                if time.monotonic() > deadline:
                    raise DaemonUnreachable(
                        f"the sandbox daemon started for you did not answer at {self.url} "
                        f"within {START_TIMEOUT:g} s (log: {log})"
                    )
                await asyncio.sleep(0.02)
        finally:
            lock.close()
        if self.on_start is not None:
            self.on_start(log)

    async def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                      body: Any = None) -> aiohttp.ClientResponse:  # fmt: skip
        """Send one request; returns the response (the caller releases it).

        Raises:
            SandboxError: the daemon's error reply, as its class.
            DaemonUnreachable: nothing answers, or the connection was lost.
        """
        session = await self._session_ready()
        query = {k: _query_value(v) for k, v in (params or {}).items() if v is not None}
        try:
            resp = await session.request(method, PREFIX + path, params=query,
                                         json=body)  # fmt: skip
        except aiohttp.ClientConnectorError as exc:
            raise self.unreachable(exc.os_error) from exc
        except aiohttp.ClientError as exc:
            raise self.lost(exc) from exc
        if resp.status >= 400:
            async with resp:
                data = await resp.read()
            raise error_from_reply(resp.status, data)
        return resp

    async def call(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                   body: Any = None) -> Any:  # fmt: skip
        """One request; returns its JSON body (None if empty)."""
        resp = await self.request(method, path, params=params, body=body)
        async with resp:
            try:
                data = await resp.read()
            except aiohttp.ClientError as exc:
                raise self.lost(exc) from exc
        return json.loads(data) if data.strip() else None

    async def hijack(self, path: str, params: dict[str, Any], body: Any = None) -> Hijacked:
        """POST with ``Upgrade: tcp`` and take the connection over after the 101.

        aiohttp's client has no such upgrade (only websockets), so this is the
        one request written by hand: a request line, a few headers, and a
        reply head read up to its blank line.

        Raises:
            SandboxError: an error reply (404 for an unknown container, ...).
        """
        await self._session_ready()
        query = urlencode({k: _query_value(v) for k, v in params.items() if v is not None})
        data = json.dumps(body).encode() if body is not None else b""
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(str(self.socket), limit=1 << 20), CONNECT_TIMEOUT
            )
        except (OSError, TimeoutError) as exc:
            raise self.unreachable(exc) from exc
        try:
            writer.write(
                f"POST {PREFIX}{path}?{query} HTTP/1.1\r\nHost: sandboxd\r\n"
                f"User-Agent: {user_agent()}\r\n"
                "Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\n\r\n".encode()
                + data
            )
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            fields = (line.partition(":") for line in lines[1:] if line)
            headers = {k.strip().lower(): v.strip() for k, _, v in fields}
            if status >= 400:
                length = int(headers.get("content-length", "0") or 0)
                raise error_from_reply(status, await reader.readexactly(length))
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError, IndexError) as exc:  # fmt: skip
            writer.close()
            raise self.lost(exc) from exc
        except BaseException:
            writer.close()
            raise
        return Hijacked(reader, writer, headers.get("content-type") == RAW, self.lost)

    # -- system ----------------------------------------------------------------------

    async def ping(self) -> bool:
        """``GET /_ping`` (its body is ``OK``, not JSON); raises if the daemon refuses."""
        resp = await self.request("GET", "/_ping")
        resp.release()
        return True

    async def version(self) -> dict[str, Any]:
        return dict(await self.call("GET", "/version"))

    async def info(self) -> dict[str, Any]:
        return dict(await self.call("GET", "/info"))

    # -- containers --------------------------------------------------------------------

    async def create(self, body: dict[str, Any], name: str | None = None) -> str:
        """``POST /containers/create``: the new container's ID."""
        reply = await self.call("POST", "/containers/create", params={"name": name}, body=body)
        return str(reply["Id"])

    async def containers(self, show_all: bool = False) -> list[dict[str, Any]]:
        """Running containers (every one with ``show_all``), newest first."""
        return list(await self.call("GET", "/containers/json", params={"all": show_all}))

    async def inspect_container(self, ref: str) -> dict[str, Any]:
        return dict(await self.call("GET", f"/containers/{_seg(ref)}/json"))

    async def start(self, ref: str) -> bool:
        """Start it; False if it was running already (304)."""
        resp = await self.request("POST", f"/containers/{_seg(ref)}/start")
        resp.release()
        return resp.status != 304

    async def wait(self, ref: str, condition: str = "not-running") -> Waiting:
        """Register a wait now (the status comes later, from `Waiting.result`)."""
        resp = await self.request("POST", f"/containers/{_seg(ref)}/wait",
                                  params={"condition": condition})  # fmt: skip
        return Waiting(self, resp)

    async def attach(self, ref: str, *, stdin: bool, logs: bool = False) -> Hijacked:
        """Attach to the container's stdout and stderr (and stdin) from now on."""
        params = {"stream": True, "stdin": stdin, "stdout": True, "stderr": True, "logs": logs}
        return await self.hijack(f"/containers/{_seg(ref)}/attach", params)

    async def resize(self, ref: str, height: int, width: int) -> None:
        await self.call("POST", f"/containers/{_seg(ref)}/resize", params={"h": height, "w": width})

    async def kill(self, ref: str, sig: int | str | None = None) -> None:
        await self.call("POST", f"/containers/{_seg(ref)}/kill", params={"signal": sig})

    async def stop(self, ref: str, timeout: int | None = None) -> bool:
        """Stop it (SIGKILL after ``timeout`` s; None: the daemon's 10); False if not running."""
        resp = await self.request("POST", f"/containers/{_seg(ref)}/stop", params={"t": timeout})
        resp.release()
        return resp.status != 304

    async def restart(self, ref: str, timeout: int | None = None) -> None:
        await self.call("POST", f"/containers/{_seg(ref)}/restart", params={"t": timeout})

    async def remove(self, ref: str, force: bool = False) -> None:
        await self.call("DELETE", f"/containers/{_seg(ref)}", params={"force": force})

    async def changes(self, ref: str, detail: bool = False) -> list[dict[str, Any]]:
        """``[{"Path", "Kind"}]``; with ``detail`` also ``Size``, ``Type``, ``Layer``, ``Opaque``.

        ``Layer`` counts from the bottom of the container's layer stack (see
        sandbox/engine/views.py, ``container_changes``).
        """
        params = {"detail": True} if detail else None
        return list(await self.call("GET", f"/containers/{_seg(ref)}/changes",
                                    params=params) or [])  # fmt: skip

    async def commit(self, ref: str, repo_tag: str | None = None, *, message: str = "",
                     author: str = "", created_by: str | None = None) -> str:  # fmt: skip
        """Commit the container's changes; returns ``sha256:<image id>``.

        ``created_by`` replaces the container's command in the image history.
        """
        params = {"container": ref, "repo": repo_tag, "comment": message, "author": author,
                  "created_by": created_by}  # fmt: skip
        return str((await self.call("POST", "/commit", params=params))["Id"])

    async def close_output(self, ref: str, stream: str) -> None:
        """Stop reading the container's ``stream`` (its reader went away: SIGPIPE)."""
        await self.call("POST", f"/sandbox/containers/{_seg(ref)}/close-output",
                        params={"stream": stream})  # fmt: skip

    async def stdin_waiting(self, ref: str) -> bool:
        """True if a process of the running container is blocked reading its stdin.

        For containers created with ``OpenStdin`` (no terminal); others, and
        containers that are not running, answer False. Blocking reads only: a
        program that waits in poll, select or epoll is not seen (see
        sandbox/runtime/readers.py). A snapshot: poll it.
        """
        reply = await self.call("GET", f"/sandbox/containers/{_seg(ref)}/stdin")
        return bool(reply["Waiting"])

    async def logs(self, ref: str, *, follow: bool = False, timestamps: bool = False,
                   tty: bool = False) -> AsyncIterator[tuple[str, bytes]]:  # fmt: skip
        """The container's log as ``(stream, bytes)``; with ``follow``, until it exits."""
        params = {"stdout": True, "stderr": True, "follow": follow, "timestamps": timestamps}
        resp = await self.request("GET", f"/containers/{_seg(ref)}/logs", params=params)
        async with resp:
            try:
                multiplexed = resp.headers.get("Content-Type") != RAW
                async for item in read_frames(resp.content, multiplexed):
                    yield item
            except aiohttp.ClientError as exc:
                raise self.lost(exc) from exc

    async def stats(self, ref: str, *, stream: bool = True,
                    interval: float | None = None) -> AsyncIterator[dict[str, Any]]:  # fmt: skip
        """Usage samples (Docker's stats JSON) until it exits; one if not ``stream``.

        ``interval``: seconds between samples (a sandbox extension, 0.1 to 60);
        None means the daemon's default, one second as Docker's.
        """
        resp = await self.request("GET", f"/containers/{_seg(ref)}/stats",
                                  params={"stream": stream, "interval": interval})  # fmt: skip
        async with resp:
            try:
                async for line in resp.content:
                    if line.strip():
                        yield json.loads(line)
            except aiohttp.ClientError as exc:
                raise self.lost(exc) from exc

    # -- exec ----------------------------------------------------------------------

    async def exec_create(self, ref: str, body: dict[str, Any]) -> str:
        """``POST /containers/{id}/exec``: the exec's ID."""
        reply = await self.call("POST", f"/containers/{_seg(ref)}/exec", body=body)
        return str(reply["Id"])

    async def exec_start(self, exec_id: str, *, tty: bool, detach: bool = False) -> Hijacked | None:
        """Start it: hijacked for its output (and stdin), or nothing when ``detach``."""
        body = {"Detach": detach, "Tty": tty}
        if detach:
            await self.call("POST", f"/exec/{_seg(exec_id)}/start", body=body)
            return None
        return await self.hijack(f"/exec/{_seg(exec_id)}/start", {}, body)

    async def exec_inspect(self, exec_id: str) -> dict[str, Any]:
        return dict(await self.call("GET", f"/exec/{_seg(exec_id)}/json"))

    async def exec_resize(self, exec_id: str, height: int, width: int) -> None:
        await self.call("POST", f"/exec/{_seg(exec_id)}/resize", params={"h": height, "w": width})

    # -- images --------------------------------------------------------------------------

    async def images(self) -> list[dict[str, Any]]:
        return list(await self.call("GET", "/images/json"))

    async def inspect_image(self, ref: str) -> dict[str, Any]:
        return dict(await self.call("GET", f"/images/{_seg(ref, image=True)}/json"))

    async def history(self, ref: str) -> list[dict[str, Any]]:
        return list(await self.call("GET", f"/images/{_seg(ref, image=True)}/history"))

    async def tag(self, ref: str, target: str) -> None:
        await self.call("POST", f"/images/{_seg(ref, image=True)}/tag", params={"repo": target})

    async def remove_image(self, ref: str, force: bool = False) -> list[dict[str, str]]:
        return list(await self.call("DELETE", f"/images/{_seg(ref, image=True)}",
                                    params={"force": force}))  # fmt: skip

    async def build_base(self) -> dict[str, Any]:
        """(Re)build the default image ``base`` (sandbox-only route)."""
        return dict(await self.call("POST", "/sandbox/images/base"))

    # -- networks ----------------------------------------------------------------------

    async def networks(self, filters: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
        """Every network (Docker's ``filters``: name, id, driver, label, type), built-in first."""
        params = {"filters": json.dumps(filters)} if filters else None
        return list(await self.call("GET", "/networks", params=params))

    async def inspect_network(self, ref: str) -> dict[str, Any]:
        """One network by name, ID or unique ID prefix (with the containers on it now)."""
        return dict(await self.call("GET", f"/networks/{_seg(ref)}"))

    async def create_network(self, name: str, subnet: str | None = None,
                             labels: dict[str, str] | None = None) -> str:  # fmt: skip
        """Make a bridge network; returns its ID.

        ``subnet``: an IPv4 CIDR; None means the next free 10.200.N.0/24.
        """
        body: dict[str, Any] = {"Name": name, "Driver": "bridge", "Labels": labels or {}}
        if subnet is not None:
            body["IPAM"] = {"Config": [{"Subnet": subnet}]}
        return str((await self.call("POST", "/networks/create", body=body))["Id"])

    async def remove_network(self, ref: str) -> None:
        await self.call("DELETE", f"/networks/{_seg(ref)}")

    async def connect_network(self, network: str, container: str, *, address: str = "",
                              aliases: list[str] | None = None) -> None:  # fmt: skip
        """Put a container on one more network (a running one gets its next ethN now).

        ``address``: a fixed IPv4 address in the subnet; empty means the next free one.
        """
        config: dict[str, Any] = {"Aliases": list(aliases or [])}
        if address:
            config["IPAMConfig"] = {"IPv4Address": address}
        await self.call("POST", f"/networks/{_seg(network)}/connect",
                        body={"Container": container, "EndpointConfig": config})  # fmt: skip

    async def disconnect_network(self, network: str, container: str) -> None:
        await self.call("POST", f"/networks/{_seg(network)}/disconnect",
                        body={"Container": container})  # fmt: skip

    async def prune_networks(self) -> list[str]:
        """Remove one's networks that no container is on; returns their names."""
        reply = await self.call("POST", "/networks/prune")
        return list(reply.get("NetworksDeleted") or [])


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _seg(ref: str, image: bool = False) -> str:
    """``ref`` as a path segment (an image name keeps its slashes, as Docker's do)."""
    return quote(ref, safe="/:@" if image else ":@")


# -- the synchronous face ------------------------------------------------------------------


class Client:
    """`AsyncClient` for synchronous callers: each method runs the coroutine to completion.

    One event loop lives as long as the client, so connections are reused
    between calls; `run` runs any coroutine on it (the CLI's longer flows,
    written against ``client.aio``).
    """

    def __init__(self, host: str | None = None, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self.aio = AsyncClient(host, **kwargs)

    def run(self, coro: Awaitable[T]) -> T:
        return self._loop.run_until_complete(coro)

    def close(self) -> None:
        if not self._loop.is_closed():
            self.run(self.aio.close())
            self._loop.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.close()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.aio, name)
        if name.startswith("_") or not inspect.iscoroutinefunction(method):
            raise AttributeError(name)

        def sync(*args: Any, **kwargs: Any) -> Any:
            return self.run(method(*args, **kwargs))

        sync.__doc__ = method.__doc__
        return sync


__all__ = [
    "API_VERSION",
    "AsyncClient",
    "Client",
    "Hijacked",
    "Waiting",
    "error_from_reply",
    "read_frames",
]
