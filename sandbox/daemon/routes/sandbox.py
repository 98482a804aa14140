"""``/sandbox/...``: what the sandbox does that Docker's API has no route for.

- ``POST /sandbox/images/base``: (re)build the default image ``base`` from
  the host's shell tools (``sandbox image build-base``).
- ``POST /sandbox/containers/{id}/close-output?stream=``: stop reading a
  running container's stdout or stderr, for a client whose own reader went
  away (``sandbox run base yes | head -1``): the command's next write fails
  with SIGPIPE, as in a shell pipeline, instead of running on unheard.
- ``GET /sandbox/containers/{id}/stdin``: is the container waiting for input
  (a process blocked reading its stdin pipe)? For a notebook's input box.
"""

from __future__ import annotations

import time

from aiohttp import web

from sandbox.daemon import access
from sandbox.daemon.params import json_reply
from sandbox.daemon.routes import Route, supervisor
from sandbox.engine import views
from sandbox.errors import ContainerNotRunning, InvalidArgument, PermissionDenied


async def build_base(request: web.Request) -> web.StreamResponse:
    """``POST /sandbox/images/base``: 201 ``{"Id", "RepoTags", "Size", "CreatedBy", "Seconds"}``.

    The image is shared by every user, so only root (or the daemon's own
    user) may replace it. The build takes a few seconds, during which the
    daemon answers nothing else (it is single-threaded; see app.py).
    """
    if not access.is_admin(access.caller(request)):
        raise PermissionDenied(
            "only root can rebuild the shared image base: ask your administrator"
        )
    engine = supervisor(request).engine
    started = time.perf_counter()
    image = engine.build_base()
    return json_reply(
        {
            "Id": f"sha256:{image.id}",
            "RepoTags": image.tags,
            "Size": views.image_size(engine.store, image),
            "CreatedBy": image.history[-1].get("created_by", "") if image.history else "",
            "Seconds": time.perf_counter() - started,
        },
        status=201,
    )


async def close_output(request: web.Request) -> web.StreamResponse:
    """``POST /sandbox/containers/{id}/close-output?stream=stdout|stderr``: 204.

    Nothing the container writes to that stream afterwards is read, logged
    or sent to anyone attached. With a terminal, ``stdout`` is the terminal.

    Raises:
        InvalidArgument: another stream name.
        ContainerNotRunning: it is not running.
    """
    stream = request.query.get("stream", "")
    if stream not in ("stdout", "stderr"):
        raise InvalidArgument(f"invalid stream {stream!r}: use stdout or stderr")
    record = access.container(request, request.match_info["id"])
    running = supervisor(request).engine.running.get(record.id)
    if running is None:
        raise ContainerNotRunning(record.name)
    running.close_output(stream)
    return web.Response(status=204)


async def stdin(request: web.Request) -> web.StreamResponse:
    """``GET /sandbox/containers/{id}/stdin``: ``{"Waiting", "Readers": [{"Pid", "Command"}]}``.

    ``Waiting`` is true when a process of the running container is blocked
    in a read of its stdin pipe; ``Readers`` are those processes (host PIDs,
    command names). A blocking ``read``/``readv`` is seen, a wait in poll,
    select or epoll is not (see `sandbox.runtime.readers`). A container
    created without ``OpenStdin`` (or with a terminal), or not running,
    answers ``Waiting: false``; an unknown one is a 404.
    """
    record = access.container(request, request.match_info["id"])
    readers = supervisor(request).engine.stdin_readers(record.id)
    return json_reply({"Waiting": bool(readers), "Readers": readers})


ROUTES: list[Route] = [
    ("POST", "/sandbox/images/base", build_base),
    ("POST", "/sandbox/containers/{id}/close-output", close_output),
    ("GET", "/sandbox/containers/{id}/stdin", stdin),
]
