"""``sandboxd``: the daemon, an aiohttp application on a unix socket.

It holds one `Engine` in one event loop, in one thread: the engine starts a
container by cloning the daemon itself, which the kernel only does safely
from a single-threaded process. So nothing here runs in an executor or a
thread pool, and aiohttp's unix-socket server needs neither.

The socket is mode 0660, owned by the daemon's user and by the group
`sandbox` when that group exists (``scripts/setup.sh`` makes it): only that
user, root and the group's members can talk to it. Each client's uid comes
from the kernel (SO_PEERCRED) and decides what it may see (``access.py``).
It never listens on TCP.

EXAMPLE:
    sudo sandboxd                                # /run/sandbox/sandboxd.sock
    sandboxd --host unix:///tmp/s.sock --root /tmp/store
    docker -H unix:///tmp/s.sock run --rm base echo hi
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import grp
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import click
from aiohttp import web

from sandbox import config
from sandbox.config import socket_path
from sandbox.daemon.errors import error_middleware
from sandbox.daemon.routes import SUPERVISOR, Handler, Route, containers, images, system
from sandbox.daemon.routes import events as events_routes
from sandbox.daemon.routes import exec as exec_routes
from sandbox.daemon.routes import networks as network_routes
from sandbox.daemon.routes import sandbox as sandbox_routes
from sandbox.daemon.routes import stats as stats_routes
from sandbox.daemon.supervisor import Supervisor
from sandbox.engine import Engine
from sandbox.errors import InvalidArgument, SandboxError
from sandbox.store import atomic

log = logging.getLogger("sandboxd")
VERSION_PREFIX = r"/v{api_version:[0-9]+\.[0-9]+}"
DEFAULT_SHUTDOWN_TIMEOUT = 10.0  # seconds, Docker's default stop timeout
SOCKET_GROUP = "sandbox"  # its members may connect (like Docker's `docker` group)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


@web.middleware
async def version_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse a ``/v1.NN/`` prefix newer than ours; any older one is served."""
    asked = request.match_info.get("api_version")
    if asked and _version(asked) > _version(system.API_VERSION):
        raise InvalidArgument(
            f"client version {asked} is too new. Maximum supported API version is "
            f"{system.API_VERSION}"
        )
    return await handler(request)


async def _common_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Api-Version"] = system.API_VERSION
    response.headers["Server"] = f"sandboxd/{system.server_version()} (linux)"
    response.headers["Ostype"] = system.OS_TYPE


@web.middleware
async def settle_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer no request while a container whose client went away is still being killed."""
    await request.app[SUPERVISOR].settle()
    return await handler(request)


def create_app(sup: Supervisor) -> web.Application:
    """The application: every route bare and behind a version prefix."""
    app = web.Application(middlewares=[error_middleware, version_middleware, settle_middleware],
                          client_max_size=16 * 1024**2)  # fmt: skip
    app[SUPERVISOR] = sup
    app.on_response_prepare.append(_common_headers)
    routes: list[Route] = [*system.ROUTES, *containers.ROUTES, *images.ROUTES]
    routes += [*stats_routes.ROUTES, *events_routes.ROUTES, *sandbox_routes.ROUTES]
    routes += [*exec_routes.ROUTES, *network_routes.ROUTES]
    for method, path, handler in routes:
        for full in (path, VERSION_PREFIX + path):
            if method == "GET":
                app.router.add_get(full, handler)  # and HEAD
            else:
                app.router.add_route(method, full, handler)
    return app


def _lock_store(root: Path) -> Any:
    """One daemon per store: an exclusive lock held for the daemon's life.

    Raises:
        SandboxError: another daemon serves this store.
    """
    lock = open(root / "sandboxd.lock", "a")  # noqa: SIM115  # held until exit
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise SandboxError(
            f"another sandboxd already serves the store {root}: stop it first, "
            "or give this one its own --root"
        ) from None
    return lock


def _claim_socket(path: Path) -> None:
    """Make room for the socket; never take it from a daemon that answers.

    Raises:
        SandboxError: a daemon listens there, or the path is not a socket.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_socket():
        raise SandboxError(f"cannot listen on {path}: it exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()  # left by a daemon that died
        return
    finally:
        probe.close()
    raise SandboxError(f"another sandboxd is already listening on unix://{path}")


def _share_socket(path: Path) -> None:
    """Give the socket to the group `SOCKET_GROUP`, if it exists, so its members connect."""
    try:
        gid = grp.getgrnam(SOCKET_GROUP).gr_gid
    except KeyError:
        log.info("no group %s: only root and the daemon's user can connect", SOCKET_GROUP)
        return
    try:
        os.chown(path, -1, gid)
    except PermissionError:
        log.warning("cannot give the socket to the group %s: only root and the daemon's "
                    "user can connect", SOCKET_GROUP)  # fmt: skip


async def serve(path: Path, root: Path | None, *, shutdown_timeout: float) -> None:
    """Run the daemon until SIGTERM or SIGINT, then stop its containers and exit."""
    engine = Engine(root, zygote=True)  # finishes what a crashed daemon left
    lock = _lock_store(engine.store.root)
    _claim_socket(path)
    # Who serves this store, for `kill $(cat <root>/sandboxd.pid)` and for the
    # tests that stop the daemons a client started; the lock says it is live.
    pid_file = config.pid_file(engine.store.root)
    atomic.write_bytes(pid_file, f"{os.getpid()}\n".encode())
    sup = Supervisor(engine)
    # By the time the server shuts down every container has stopped, so what
    # still waits (on a container never started) is cut off after a second.
    runner = web.AppRunner(create_app(sup), handle_signals=False, shutdown_timeout=1.0,
                           access_log=logging.getLogger("sandboxd.access"))  # fmt: skip
    await runner.setup()
    site = web.UnixSite(runner, str(path))
    umask = os.umask(0o117)  # the socket is born 0660: no moment when others may connect
    try:
        await site.start()
    finally:
        os.umask(umask)
    _share_socket(path)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    log.info("listening on unix://%s (store %s, API %s)", path, engine.store.root,
             system.API_VERSION)  # fmt: skip
    try:
        await stopping.wait()
    finally:
        log.info("shutting down")
        await site.stop()  # no new connections
        await sup.shutdown(shutdown_timeout)
        await runner.cleanup()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        await engine.close_networks()
        engine.close()
        with contextlib.suppress(FileNotFoundError):
            pid_file.unlink()
        lock.close()
        log.info("stopped")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-H",
    "--host",
    envvar="SANDBOX_HOST",
    metavar="unix:///PATH",
    help="Socket to listen on. Default: $SANDBOX_HOST; else, for a store other than "
    "the default one, ROOT/sandboxd.sock (where the clients of that store look); else "
    "/run/sandbox/sandboxd.sock as root, $XDG_RUNTIME_DIR/sandbox/sandboxd.sock otherwise.",
)
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    help="Store root. Default: $SANDBOX_ROOT, else /var/lib/sandbox as root, "
    "else $XDG_DATA_HOME/sandbox.",
)
@click.option(
    "--shutdown-timeout",
    type=float,
    default=DEFAULT_SHUTDOWN_TIMEOUT,
    show_default=True,
    metavar="SECONDS",
    help="When the daemon stops, how long containers get after SIGTERM before SIGKILL.",
)
@click.option("--debug", is_flag=True, help="Log every request, and tracebacks.")
def main(host: str | None, root: Path | None, shutdown_timeout: float, debug: bool) -> None:
    """Serve the sandbox's Docker-compatible API on a unix socket (in the foreground)."""
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if debug else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")  # fmt: skip
    logging.getLogger("sandboxd.access").setLevel(logging.DEBUG if debug else logging.WARNING)
    logging.getLogger("asyncio").setLevel(logging.WARNING)
    try:
        asyncio.run(serve(socket_path(host, root), root, shutdown_timeout=shutdown_timeout))
    except SandboxError as exc:
        if debug:
            log.exception("cannot start")
        click.echo(f"sandboxd: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
