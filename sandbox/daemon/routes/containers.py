"""``/containers/...``: create, start, attach, wait, logs, stop, restart, kill, remove, diff.

``docker run --rm base echo hi`` is, in order: create, attach (hijacked),
``wait?condition=removed``, start. The attach and the wait come before the
start, so both register on the container's ID with the supervisor, which
hands every started container's output to whoever is registered. The wait
replies with its headers at once (the CLI sends the start only after them)
and with ``{"StatusCode": N}`` when the condition is met.

``sandbox run`` (without ``-d``) makes the same calls, and labels the
container ``sandbox.foreground=1``: if its connection closes while the
container runs, the client is gone and the container is killed with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from typing import Any

from aiohttp import web

from sandbox.daemon import access, params
from sandbox.daemon.create import parse_create
from sandbox.daemon.params import json_reply
from sandbox.daemon.routes import Route, supervisor
from sandbox.daemon.streams import (
    MULTIPLEXED,
    RAW,
    Attachment,
    HijackedResponse,
    LogReader,
    StdinPump,
    encode_entries,
    hijack,
    last_lines,
    settle,
)
from sandbox.engine import Running, views
from sandbox.errors import Conflict, InvalidArgument, NotFound
from sandbox.store.containers import ContainerRecord

DEFAULT_STOP_TIMEOUT = 10  # seconds, as Docker's
# `sandbox run` (without -d) and `sandbox create` label their containers so:
# the client that attaches before the start runs it in the foreground.
FOREGROUND_LABEL = "sandbox.foreground"
FOREGROUND_GONE = (
    "stopped: the sandbox client that ran it in the foreground went away, "
    "so the container was killed"
)


def _streams(request: web.Request) -> set[str]:
    return {s for s in ("stdout", "stderr") if params.flag(request, s)}


async def create(request: web.Request) -> web.StreamResponse:
    """``POST /containers/create?name=``: 201 ``{"Id", "Warnings"}``; 404 for an unknown image."""
    sup = supervisor(request)
    spec = parse_create(await params.json_body(request))
    name = request.query.get("name", "").lstrip("/") or None
    # Someone else's image is "No such image" (and the default one is built
    # on first use).
    access.check_image(request, sup.engine.image(spec.image), spec.image)
    networks = sup.engine.networks.resolve(spec.network_mode, endpoints=spec.endpoints)
    try:
        record = sup.engine.create(
            spec.image,
            spec.cmd,
            name=name,
            env=spec.env,
            workdir=spec.workdir,
            hostname=spec.hostname,
            tty=spec.tty,
            open_stdin=spec.open_stdin,
            limits=spec.limits,
            auto_remove=spec.auto_remove,
            owner=access.caller(request),
            labels=spec.labels,
            networks=networks,
            port_bindings=spec.port_bindings,
        )
    except Conflict:
        if name is None or access.name_visible(request, name):
            raise
        # Names are shared by all users; someone else's container stays unnamed.
        raise Conflict(
            f'the container name "{name}" is already in use: choose another name'
        ) from None
    if spec.console_size is not None:
        sup.console_size(record.id, spec.console_size)
    return json_reply({"Id": record.id, "Warnings": []}, status=201)


def _matches(record: ContainerRecord, filters: dict[str, list[str]]) -> bool:
    for key, values in filters.items():
        if key == "id" and not any(record.id.startswith(v) for v in values):
            return False
        if key == "name" and not any(params.name_matches(v, record.name) for v in values):
            return False
        if key == "status" and record.state not in values:
            return False
        if key not in ("id", "name", "status"):
            raise InvalidArgument(f"invalid filter {key!r}: use id, name or status")
    return True


async def list_containers(request: web.Request) -> web.StreamResponse:
    """``GET /containers/json?all=&limit=&filters=``: running ones unless ``all``."""
    limit = params.integer(request, "limit", -1) or -1
    show_all = params.flag(request, "all") or limit > 0
    filters = params.filters(request)
    records = [r for r in access.containers(request)
               if (show_all or r.state == "running") and _matches(r, filters)]  # fmt: skip
    if limit > 0:
        records = records[:limit]
    return json_reply([views.container_summary(r) for r in records])


async def inspect(request: web.Request) -> web.StreamResponse:
    """``GET /containers/{id}/json``."""
    sup = supervisor(request)
    record = access.container(request, request.match_info["id"])
    return json_reply(views.container_inspect(sup.engine.store, record))


async def start(request: web.Request) -> web.StreamResponse:
    """``POST /containers/{id}/start``: 204, or 304 if it already runs."""
    record = access.container(request, request.match_info["id"])
    started = await supervisor(request).start(record.id)
    return web.Response(status=204 if started else 304)


async def wait(request: web.Request) -> web.StreamResponse:
    """``POST /containers/{id}/wait?condition=``: headers now, the status when met."""
    sup = supervisor(request)
    record = access.container(request, request.match_info["id"])
    waiting = sup.waiter(record, request.query.get("condition", "") or "not-running")
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    try:
        await response.prepare(request)  # sent at once: the CLI starts only after it
        status = await waiting
    finally:
        waiting.cancel()
    reply: dict[str, Any] = {"StatusCode": int(status), "Error": None}
    if error := getattr(status, "error", ""):
        # Why it ended (out of memory, ...), for a client that cannot inspect
        # it any more (--rm). Not Docker's "Error", which the docker CLI
        # reads as a failed wait (exit 125).
        reply["SandboxError"] = error
    await response.write(json.dumps(reply).encode() + b"\n")
    await response.write_eof()
    return response


class _Wake:
    """A log follower's watcher: any output or the exit wakes it."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def output(self, stream: str, data: bytes) -> None:
        self.event.set()

    def started(self, running: Running) -> None:
        self.event.set()

    def exited(self, status: int) -> None:
        self.event.set()


def _tail(request: web.Request) -> int | None:
    text = request.query.get("tail", "all").strip()
    if text in ("", "all"):
        return None
    try:
        count = int(text)
    except ValueError:
        count = -1
    if count < 0:
        raise InvalidArgument(f"invalid tail {text!r}: use a number of lines or all")
    return count


async def logs(request: web.Request) -> web.StreamResponse:
    """``GET /containers/{id}/logs?stdout=&stderr=&follow=&tail=&timestamps=`` (chunked)."""
    sup = supervisor(request)
    record = access.container(request, request.match_info["id"])
    streams = _streams(request)
    if not streams:
        raise InvalidArgument("Bad parameters: you must choose at least one stream")
    follow, stamps = params.flag(request, "follow"), params.flag(request, "timestamps")
    tail = _tail(request)
    reader = LogReader(sup.engine.store.containers.path(record.id) / "log.jsonl")
    wake = _Wake()
    unwatch = sup.watch(record.id, wake)
    response = web.StreamResponse(headers={"Content-Type": RAW if record.tty else MULTIPLEXED})
    try:
        await response.prepare(request)
        if tail is not None:  # the last lines of the streams asked for
            lines = last_lines(reader, streams, tail)
            await response.write(encode_entries(lines, streams, record.tty, stamps))
        else:
            await _copy_log(reader, response, streams, record.tty, stamps)
        while follow and request.transport is not None and not request.transport.is_closing():
            # Learn whether it still runs *before* reading: a final read after
            # the exit has everything, since the log is written before the exit.
            alive = _alive(sup, record.id)
            wake.event.clear()
            await _copy_log(reader, response, streams, record.tty, stamps)
            if not alive:
                break
            with contextlib.suppress(TimeoutError):  # run by another process: poll
                await asyncio.wait_for(wake.event.wait(), 1.0)
    finally:
        unwatch()
        reader.close()
    await response.write_eof()
    return response


async def _copy_log(reader: LogReader, response: web.StreamResponse, streams: set[str],
                    tty: bool, stamps: bool) -> None:  # fmt: skip
    """Send what the log holds past the reader's position, a chunk at a time."""
    while entries := reader.read():
        if data := encode_entries(entries, streams, tty, stamps):
            await response.write(data)  # waits while the client is slow


def _alive(sup: Any, cid: str) -> bool:
    try:
        return bool(sup.is_running(sup.find(cid)))
    except NotFound:
        return False


async def attach(request: web.Request) -> web.StreamResponse:
    """``POST /containers/{id}/attach?stream=&logs=&stdin=&stdout=&stderr=`` (hijacked).

    Stays until the container exits (after its next start, if it is not
    running yet) or the client goes away.
    """
    sup = supervisor(request)
    record = access.container(request, request.match_info["id"])
    streams = _streams(request)
    stream, replay, want_stdin = (params.flag(request, k) for k in ("stream", "logs", "stdin"))
    if not (streams or want_stdin):
        raise InvalidArgument("Bad parameters: you must choose at least one stream")
    if sup.is_running(record) and record.id not in sup.engine.running:
        raise Conflict(
            f"container {record.name} is run by another sandbox process (`sandbox run`), "
            "not by this daemon: attach to it there"
        )
    # Attached before the start of a foreground container: this client runs
    # it, and it must not outlive the client (see below).
    foreground = record.labels.get(FOREGROUND_LABEL) == "1" and not sup.is_running(record)
    attachment = Attachment(streams, record.tty)
    # Registering and reading the log happen together (no await between), so
    # the replay and the live output neither overlap nor leave a gap.
    unwatch = sup.watch(record.id, attachment) if stream else None
    history: list[dict[str, Any]] = []
    if replay:
        reader = LogReader(sup.engine.store.containers.path(record.id) / "log.jsonl")
        while entries := reader.read():
            history += entries
        reader.close()
    try:
        conn, status = await hijack(request, RAW if record.tty else MULTIPLEXED)
        if want_stdin and stream and record.open_stdin:
            attachment.stdin = StdinPump(conn)
            conn.read_input(attachment.stdin.feed, attachment.stdin.feed_eof)
            running = sup.engine.running.get(record.id)
            if running is not None:
                attachment.stdin.connect(running)
        else:
            conn.read_input(lambda data: None, lambda: None)
        await settle(request)  # the 101 alone first, for docker-py (see streams)
        conn.write(encode_entries(history, streams, record.tty, False))
        if stream:
            attachment.connect(conn)
            ends: list[asyncio.Future[Any]] = [attachment.finished, conn.closed]
            await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
            # The connection closed while the container runs: the client that
            # runs it in the foreground went away (killed by SIGKILL, say).
            # Before the daemon, the container died with that process; it
            # still must, or it would run on with nobody to see or stop it.
            # (`sandbox run -d` sets no label: it outlives its client.)
            if foreground and conn.closed.done() and not attachment.finished.done():
                sup.abandon(record.id, FOREGROUND_GONE)
    finally:
        if unwatch is not None:
            unwatch()
        if attachment.stdin is not None:
            attachment.stdin.close()
    return HijackedResponse(status)


async def resize(request: web.Request) -> web.StreamResponse:
    """``POST /containers/{id}/resize?h=&w=``: the terminal's rows and columns."""
    height, width = params.integer(request, "h", 0), params.integer(request, "w", 0)
    record = access.container(request, request.match_info["id"])
    supervisor(request).resize(record.id, height or 0, width or 0)
    return web.Response(status=200)


async def kill(request: web.Request) -> web.StreamResponse:
    """``POST /containers/{id}/kill?signal=``: 204; 409 if it is not running."""
    sig = params.signal_number(request.query.get("signal", ""), signal.SIGKILL)
    record = access.container(request, request.match_info["id"])
    await supervisor(request).kill(record.id, sig)
    return web.Response(status=204)


async def stop(request: web.Request) -> web.StreamResponse:
    """``POST /containers/{id}/stop?t=&signal=``: 204 once stopped, 304 if it was not running."""
    timeout = params.integer(request, "t", DEFAULT_STOP_TIMEOUT)
    sig = params.signal_number(request.query.get("signal", ""), signal.SIGTERM)
    grace = None if timeout is not None and timeout < 0 else float(timeout or 0)
    record = access.container(request, request.match_info["id"])
    stopped = await supervisor(request).stop(record.id, grace, sig)
    return web.Response(status=204 if stopped else 304)


async def restart(request: web.Request) -> web.StreamResponse:
    """``POST /containers/{id}/restart?t=``: stop (SIGKILL after ``t`` s), then start; 204."""
    timeout = params.integer(request, "t", DEFAULT_STOP_TIMEOUT)
    grace = None if timeout is not None and timeout < 0 else float(timeout or 0)
    record = access.container(request, request.match_info["id"])
    await supervisor(request).restart(record.id, grace)
    return web.Response(status=204)


async def remove(request: web.Request) -> web.StreamResponse:
    """``DELETE /containers/{id}?force=``: 204; 409 if it runs and force is not given."""
    record = access.container(request, request.match_info["id"])
    await supervisor(request).remove(record.id, force=params.flag(request, "force"))
    return web.Response(status=204)


async def changes(request: web.Request) -> web.StreamResponse:
    """``GET /containers/{id}/changes?detail=``: ``[{"Path", "Kind"}]`` (0 C, 1 A, 2 D).

    ``detail=1`` (a sandbox extension) adds ``Size``, ``Type``, ``Layer`` and
    ``Opaque`` to each entry (see `views.container_changes`).
    """
    record = access.container(request, request.match_info["id"])
    found = supervisor(request).engine.diff(record.id)
    detail = params.flag(request, "detail")
    return json_reply(views.container_changes(record, found, detail=detail))


ROUTES: list[Route] = [
    ("POST", "/containers/create", create),
    ("GET", "/containers/json", list_containers),
    ("GET", "/containers/{id}/json", inspect),
    ("POST", "/containers/{id}/start", start),
    ("POST", "/containers/{id}/wait", wait),
    ("GET", "/containers/{id}/logs", logs),
    ("POST", "/containers/{id}/attach", attach),
    ("POST", "/containers/{id}/resize", resize),
    ("POST", "/containers/{id}/kill", kill),
    ("POST", "/containers/{id}/stop", stop),
    ("POST", "/containers/{id}/restart", restart),
    ("DELETE", "/containers/{id}", remove),
    ("GET", "/containers/{id}/changes", changes),
]
