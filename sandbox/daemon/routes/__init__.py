"""The API's routes, one module per resource; each lists its ``ROUTES``.

A route is ``(method, path, handler)`` with the path as Docker writes it
(``/containers/{id}/json``); the application registers each one twice, bare
and behind a ``/v1.NN`` version prefix.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Awaitable, Callable

from aiohttp import web

from sandbox.daemon.supervisor import Supervisor

SUPERVISOR = web.AppKey("supervisor", Supervisor)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Route = tuple[str, str, Handler]


def supervisor(request: web.Request) -> Supervisor:
    """The daemon's one supervisor (and through it, its one engine)."""
    return request.app[SUPERVISOR]


def peer_uid(request: web.Request) -> int:
    """The uid of the process at the other end of the unix socket (SO_PEERCRED).

    The kernel vouches for it: a client cannot claim another uid. Recorded
    as the owner of what the request creates; 0 if it cannot be learnt.
    """
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is None or sock.family != socket.AF_UNIX:
        return 0
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)
