"""Errors to HTTP, in one place: every failure becomes a status and ``{"message": ...}``.

The docker clients read only the status and the message: a 404 from
``/containers/create`` makes the CLI try a pull, a 409 is a conflict, a 304 a
no-op, and the CLI prints ``Error response from daemon: <message>``. So each
``SandboxError`` keeps its own ``http_status`` and readable message; a
malformed request is a 400 that says what was wrong; an unknown route is 404
``page not found`` as Docker says it; and a bug in the daemon is a 500 whose
traceback goes to the daemon's log, never to the client.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from sandbox.daemon.params import json_reply
from sandbox.errors import CommandNotFound, SandboxError

log = logging.getLogger("sandboxd")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, message: str) -> web.Response:
    """A Docker-shaped error reply."""
    return json_reply({"message": message}, status=status)


def docker_message(exc: SandboxError) -> str:
    """The message as the docker clients need it.

    The CLI picks ``docker run``'s exit status from the text of a failed
    start: 127 needs "executable file not found" or "no such file or
    directory" in it, so a command that is not found says so in those words.
    """
    message = str(exc)
    if isinstance(exc, CommandNotFound) and "no such file or directory" not in message:
        message += " (executable file not found in $PATH)"
    return message


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn whatever a handler raises into one JSON error reply."""
    try:
        return await handler(request)
    except SandboxError as exc:
        if exc.http_status >= 500:
            log.error("%s %s: %s", request.method, request.path, exc)
        return error_response(exc.http_status, docker_message(exc))
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        # A known path with another method (POST /containers/prune matches
        # DELETE /containers/{id}) is no route either, as Docker says.
        return error_response(404, "page not found")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, exc.reason)
    except ConnectionError:
        if request.transport is not None and not request.transport.is_closing():
            raise  # [should never happen] the connection is fine: let aiohttp report it
        # The client went away (a wait or logs whose client quit): nothing is
        # left to tell it, and nothing went wrong here.
        log.debug("%s %s: the client went away", request.method, request.path)
        return web.Response(status=499, reason="Client Closed Request")
    except Exception as exc:
        log.exception("internal error in %s %s", request.method, request.path)
        return error_response(
            500,
            f"internal error in sandboxd ({type(exc).__name__}: {exc}); "
            "the daemon's log has the details",
        )
