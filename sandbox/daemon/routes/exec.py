"""``/containers/{id}/exec`` and ``/exec/...``: run more processes in a running container.

``docker exec c cmd`` is, in order: inspect the container, ``POST
/containers/{id}/exec`` (201 ``{"Id"}``), ``POST /exec/{eid}/start`` with
``{"Detach": false, "Tty": false}`` (hijacked like an attach: 101, then the
stream, with stdin the other way), and ``GET /exec/{eid}/json``, whose
``ExitCode`` becomes the CLI's exit status. ``exec -it`` also sends
``POST /exec/{eid}/resize``. With ``-d`` the start is a plain 200.

A command that cannot start (not found, not executable) still gets its 101:
the message goes down the stream and the exit code (127 or 126) into the
exec's inspect, so ``docker exec c nosuch`` exits 127 as with Docker.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from sandbox.daemon import access, params
from sandbox.daemon.errors import docker_message
from sandbox.daemon.params import json_reply
from sandbox.daemon.routes import Route, supervisor
from sandbox.daemon.streams import (
    MULTIPLEXED,
    RAW,
    Attachment,
    HijackedResponse,
    StdinPump,
    encode,
    hijack,
    settle,
)
from sandbox.daemon.supervisor import DaemonClosing
from sandbox.engine.execs import ExecRecord
from sandbox.engine.running import Running
from sandbox.errors import ExecNotFound, InvalidArgument, RuntimeFailure


def _exec(request: web.Request) -> ExecRecord:
    """The exec instance in the path, if the caller may see it.

    Raises:
        ExecNotFound: no such exec, or someone else's.
    """
    exec_id = request.match_info["id"]
    record = supervisor(request).engine.execs.get(exec_id)
    if not access.may_see(access.caller(request), record.owner):
        raise ExecNotFound(exec_id)
    return record


async def create(request: web.Request) -> web.StreamResponse:
    """``POST /containers/{id}/exec``: 201 ``{"Id"}``; 409 if the container is not running."""
    container = access.container(request, request.match_info["id"])
    body = await params.json_body(request)
    if params.field(body, "Privileged", bool, False):
        raise InvalidArgument(
            "privileged exec is not supported: an exec'd process gets the container's "
            "capabilities, never more"
        )
    record = supervisor(request).engine.execs.create(
        container.id,
        params.string_list(body, "Cmd") or [],
        env=params.string_list(body, "Env"),
        workdir=params.field(body, "WorkingDir", str, "") or None,
        tty=params.field(body, "Tty", bool, False),
        attach_stdin=params.field(body, "AttachStdin", bool, False),
        attach_stdout=params.field(body, "AttachStdout", bool, False),
        attach_stderr=params.field(body, "AttachStderr", bool, False),
        user=params.field(body, "User", str, ""),
        owner=access.caller(request),
    )
    return json_reply({"Id": record.id}, status=201)


def _console_size(body: dict[str, Any]) -> tuple[int, int] | None:
    size = params.field(body, "ConsoleSize", list, [])
    if not size or size == [0, 0]:
        return None
    if len(size) != 2 or not all(isinstance(n, int) and not isinstance(n, bool) for n in size):
        raise InvalidArgument(f"invalid ConsoleSize {size!r}: use [height, width]")
    return size[0], size[1]


async def start(request: web.Request) -> web.StreamResponse:
    """``POST /exec/{id}/start``: hijacked until the process exits; 200 with ``Detach``.

    Errors found before the process starts (no such exec, already started,
    the container is not running) are plain HTTP errors.
    """
    sup = supervisor(request)
    body = await params.json_body(request)
    detach = params.field(body, "Detach", bool, False)
    size = _console_size(body)
    record = _exec(request)
    execs = sup.engine.execs
    if size is not None:
        execs.resize(record.id, *size)
    if sup.closing:
        raise DaemonClosing("the daemon is shutting down: run the command again later")
    if detach:
        execs.start(record.id, attach=False)
        return web.Response(status=200)
    streams = {name for name, on in (("stdout", record.attach_stdout),
                                      ("stderr", record.attach_stderr)) if on}  # fmt: skip
    attachment = Attachment(streams, record.tty)
    process: Running | None = None
    failure: RuntimeFailure | None = None
    try:
        process = execs.start(record.id, listener=attachment.output)
    except RuntimeFailure as exc:  # told in the stream: the CLI exits with the exit code
        failure = exc
    else:
        process.exited.add_done_callback(lambda _: attachment.exited(0))
    try:
        conn, status = await hijack(request, RAW if record.tty else MULTIPLEXED)
        if process is not None and record.attach_stdin:
            attachment.stdin = StdinPump(conn)
            conn.read_input(attachment.stdin.feed, attachment.stdin.feed_eof)
            attachment.stdin.connect(process)
        else:
            conn.read_input(lambda data: None, lambda: None)
        await settle(request)  # the 101 alone first, for docker-py (see streams)
        if failure is not None:
            conn.write(encode("stderr", f"{docker_message(failure)}\n".encode(), record.tty))
        else:
            attachment.connect(conn)
            ends: list[asyncio.Future[Any]] = [attachment.finished, conn.closed]
            await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if attachment.stdin is not None:
            attachment.stdin.close()
        if process is not None:
            # The client is gone (or the process is): its stdin ends, as Docker's.
            process.close_stdin()
    return HijackedResponse(status)


async def resize(request: web.Request) -> web.StreamResponse:
    """``POST /exec/{id}/resize?h=&w=``: the terminal's rows and columns."""
    height, width = params.integer(request, "h", 0), params.integer(request, "w", 0)
    record = _exec(request)
    supervisor(request).engine.execs.resize(record.id, height or 0, width or 0)
    return web.Response(status=200)


async def inspect(request: web.Request) -> web.StreamResponse:
    """``GET /exec/{id}/json``: ``Running``, ``ExitCode`` (null until it exits), ``Pid``..."""
    return json_reply(_exec(request).inspect())


ROUTES: list[Route] = [
    ("POST", "/containers/{id}/exec", create),
    ("POST", "/exec/{id}/start", start),
    ("POST", "/exec/{id}/resize", resize),
    ("GET", "/exec/{id}/json", inspect),
]
