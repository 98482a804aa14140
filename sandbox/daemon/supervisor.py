"""The daemon's side of running containers: who watches, who waits, how they stop.

The engine starts a container and pumps its output; a daemon serves many
clients at once, so it adds:

- watchers per container (attached clients, ``logs --follow``) that get the
  output, the start and the exit. A watcher may come before the start
  (``docker run`` attaches first): it is registered on the container ID, and
  every started container's output goes through `_fan_out`, so nothing
  produced after the start is missed;
- waits that resolve on the next exit or on removal (``docker run`` waits
  before it starts, ``--rm`` waits for the removal);
- stop with a grace period, removal of a running container, and a shutdown
  that stops every container the daemon runs, so none outlives it.

Everything runs in the daemon's one event loop, in one thread (the engine
clones itself to start a container, which needs a single-threaded process).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import signal
import struct
import termios
from collections.abc import Callable
from typing import Protocol

from sandbox.engine import Engine, Running
from sandbox.engine.reconcile import same_process
from sandbox.errors import ContainerNotRunning, ContainerRunning, InvalidArgument, SandboxError
from sandbox.store.containers import RUNNING, ContainerRecord

log = logging.getLogger("sandboxd")
WAIT_CONDITIONS = ("not-running", "next-exit", "removed")
KILL_WAIT = 10.0  # seconds a SIGKILLed container may take to be reaped


class Exit(int):
    """An exit status that also carries why the container ended, if it says.

    Waits resolve with it and use it as the plain status; the wait route adds
    ``error`` to its reply, so that a client can print "out of memory" even
    for a ``--rm`` container that no longer exists to be inspected.
    """

    error: str = ""

    def __new__(cls, status: int, error: str = "") -> Exit:
        exit_ = super().__new__(cls, status)
        exit_.error = error
        return exit_


class DaemonClosing(SandboxError):
    """The daemon is shutting down and starts nothing more."""

    http_status = 503


class Watcher(Protocol):
    """What wants to hear about a container (an attached client, a log follower)."""

    def output(self, stream: str, data: bytes) -> None: ...

    def started(self, running: Running) -> None: ...

    def exited(self, status: int) -> None: ...


class Supervisor:
    """One engine and the clients of its containers."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._watchers: dict[str, list[Watcher]] = {}
        self._exits: dict[str, list[asyncio.Future[int]]] = {}
        self._removals: dict[str, list[asyncio.Future[int]]] = {}
        self._console: dict[str, tuple[int, int]] = {}
        self._abandoned: set[asyncio.Future[int]] = set()  # exits of `abandon`'s kills
        # Starts in progress (a container sets itself up while the loop serves
        # others): what would touch such a container waits for its start first.
        self._starting: dict[str, asyncio.Future[None]] = {}
        self.closing = False

    def find(self, ref: str) -> ContainerRecord:
        """A container by ID, name or unique prefix (raises ContainerNotFound)."""
        return self.engine.store.containers.find(ref)

    def is_running(self, record: ContainerRecord) -> bool:
        if record.id in self.engine.running:
            return True
        return record.state == RUNNING and same_process(record.pid, record.pid_start)

    # -- watchers and waits -------------------------------------------------------

    def watch(self, cid: str, watcher: Watcher) -> Callable[[], None]:
        """Register ``watcher`` on a container (started or not); returns the undo."""
        self._watchers.setdefault(cid, []).append(watcher)

        def unwatch() -> None:
            watchers = self._watchers.get(cid, [])
            if watcher in watchers:
                watchers.remove(watcher)
            if not watchers:
                self._watchers.pop(cid, None)

        return unwatch

    def _future(self, table: dict[str, list[asyncio.Future[int]]], cid: str) -> asyncio.Future[int]:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        table.setdefault(cid, []).append(future)
        future.add_done_callback(lambda f: _discard(table, cid, f))
        return future

    def waiter(self, record: ContainerRecord, condition: str) -> asyncio.Future[int]:
        """A future of the exit status once ``condition`` holds, registered now.

        ``not-running`` is met at once by a container that is not running,
        ``next-exit`` by its next exit (it may not have started yet),
        ``removed`` once it is removed.

        Raises:
            InvalidArgument: an unknown condition.
        """
        if condition not in WAIT_CONDITIONS:
            raise InvalidArgument(
                f"invalid wait condition {condition!r}: use {', '.join(WAIT_CONDITIONS)}"
            )
        if condition == "removed":
            return self._future(self._removals, record.id)
        if condition == "next-exit" or record.id in self.engine.running:
            return self._future(self._exits, record.id)
        if self.is_running(record):  # run by another process (the CLI)
            return asyncio.ensure_future(self._wait_elsewhere(record.id))
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        done.set_result(record.exit_code)
        return done

    async def _wait_elsewhere(self, cid: str) -> int:
        return (await self.engine.wait(cid)).exit_code

    def _notify_exit(self, cid: str, status: int) -> None:
        for watcher in list(self._watchers.get(cid, [])):
            watcher.exited(status)
        for future in list(self._exits.get(cid, [])):
            if not future.done():
                future.set_result(status)

    def _notify_removed(self, cid: str, status: int) -> None:
        self._notify_exit(cid, status)  # nothing will ever start it again
        for future in list(self._removals.get(cid, [])):
            if not future.done():
                future.set_result(status)
        self._console.pop(cid, None)

    def _exists(self, cid: str) -> bool:
        return (self.engine.store.containers.path(cid) / "state.json").exists()

    # -- lifecycle ------------------------------------------------------------------

    async def settled(self, ref: str) -> ContainerRecord:
        """The container, once a start of it in progress (milliseconds) has ended."""
        cid = self.find(ref).id
        starting = self._starting.get(cid)
        if starting is not None:
            await asyncio.wait([starting])
        return self.find(cid)

    async def start(self, ref: str) -> bool:
        """Start a container with every watcher attached; False if it already runs.

        The container's set-up is awaited, not waited for: the event loop
        serves other clients meanwhile.

        Raises:
            the engine's errors (LimitUnsupported, CommandNotFound, RuntimeFailure);
            waiters and watchers learn the outcome (a ``--rm`` container is removed).
        """
        record = await self.settled(ref)
        cid = record.id
        if self.is_running(record):
            return False
        if self.closing:
            raise DaemonClosing("the daemon is shutting down: start the container again later")
        starting = self._starting[cid] = asyncio.get_running_loop().create_future()
        try:
            running = await self.engine.start_async(
                cid, listener=lambda s, d: self._fan_out(cid, s, d)
            )
        except BaseException as exc:
            self._start_failed(record, 127 if getattr(exc, "step", "") == "exec" else 125)
            raise
        finally:
            del self._starting[cid]
            starting.set_result(None)
        # Nothing was read yet: the pumps run once this handler yields.
        if running.spawned.pty is not None and cid in self._console:
            _set_size(running.spawned.pty, *self._console[cid])
        for watcher in list(self._watchers.get(cid, [])):
            watcher.started(running)
        running.exited.add_done_callback(lambda f: self._exited(cid, f, running))
        log.info("started container %s (%s)", record.short_id, " ".join(record.cmd)[:80])
        return True

    def _start_failed(self, record: ContainerRecord, status: int) -> None:
        if not self._exists(record.id):  # the engine removed it (--rm)
            self._notify_removed(record.id, status)
        elif record.auto_remove:  # Docker removes a --rm container whose start failed
            self.engine.remove(record.id, force=True)
            self._notify_removed(record.id, status)
        else:
            self._notify_exit(record.id, status)

    def _fan_out(self, cid: str, stream: str, data: bytes) -> None:
        for watcher in list(self._watchers.get(cid, [])):
            try:
                watcher.output(stream, data)
            except Exception:  # one broken client must not stop the others
                log.exception("dropping output for a watcher of %s", cid[:12])

    def _exited(self, cid: str, future: asyncio.Future[int], running: Running) -> None:
        code = future.result() if not future.cancelled() else 137
        # The engine's bookkeeping ran before the future resolved: the
        # record's error (out of memory, ...) is final.
        status = Exit(code, getattr(running.record, "error", "") or "")
        log.info("container %s exited with status %d", cid[:12], status)
        if self._exists(cid):
            self._notify_exit(cid, status)
        else:
            self._notify_removed(cid, status)

    async def kill(self, ref: str, sig: int) -> None:
        """Send ``sig`` to the container (its init forwards it to the command).

        After SIGKILL it waits (up to `KILL_WAIT` s) until the container has
        exited, as Docker does: a ``ps`` right after a ``kill`` shows it stopped.

        Raises:
            ContainerNotRunning: it is not running.
        """
        record = await self.settled(ref)
        if sig != signal.SIGKILL or record.id not in self.engine.running:
            self.engine.kill(record.id, sig)
            return
        exited = self.waiter(record, "not-running")
        try:
            self.engine.kill(record.id, sig)
            await asyncio.wait_for(asyncio.shield(exited), KILL_WAIT)
        except TimeoutError:
            log.warning("container %s did not exit %g s after SIGKILL", record.short_id,
                        KILL_WAIT)  # fmt: skip
        finally:
            exited.cancel()

    async def stop(self, ref: str, timeout: float | None, sig: int = signal.SIGTERM) -> bool:
        """``sig``, then SIGKILL after ``timeout`` s (None: wait forever); False if not running."""
        record = await self.settled(ref)
        if not self.is_running(record):
            return False
        exited = self.waiter(record, "not-running")
        with contextlib.suppress(ContainerNotRunning):
            self.engine.kill(record.id, sig)
        try:
            await asyncio.wait_for(asyncio.shield(exited), timeout)
        except TimeoutError:
            with contextlib.suppress(ContainerNotRunning):
                self.engine.kill(record.id, signal.SIGKILL)
            await exited
        return True

    async def restart(self, ref: str, timeout: float | None) -> None:
        """Stop the container (as `stop`) if it runs, then start it again."""
        record = self.find(ref)
        await self.stop(record.id, timeout)
        await self.start(record.id)

    def abandon(self, cid: str, reason: str) -> None:
        """Kill a running container nobody is left to watch, and record why.

        For a container run in the foreground whose client went away (see the
        attach route): it must not outlive its ``sandbox run``, as it did not
        when the CLI ran containers itself. The reason becomes the
        container's ``State.Error``.
        """
        if cid in self._starting:  # still setting itself up: as soon as it runs
            self._starting[cid].add_done_callback(lambda _: self.abandon(cid, reason))
            return
        running = self.engine.running.get(cid)
        if running is None:
            return
        if running.record is not None:  # saved by the engine's exit bookkeeping
            running.record.error = reason
        log.info("killing container %s: %s", cid[:12], reason)
        exited = self._future(self._exits, cid)
        self._abandoned.add(exited)
        exited.add_done_callback(self._abandoned.discard)
        with contextlib.suppress(ContainerNotRunning):
            self.engine.kill(cid, signal.SIGKILL)

    async def settle(self) -> None:
        """Wait until the containers `abandon` killed have exited (at most `KILL_WAIT` s).

        The app awaits this before each request: what the next command sees
        (``ps``, the cgroups, the store) is the container already gone and
        cleaned up, as it was when the CLI that ran it died with it.
        """
        if self._abandoned:
            await asyncio.wait(list(self._abandoned), timeout=KILL_WAIT)

    async def remove(self, ref: str, *, force: bool = False) -> None:
        """Remove a container; a running one only with ``force`` (killed first).

        Raises:
            ContainerRunning: it runs and ``force`` is False.
        """
        record = await self.settled(ref)
        if self.is_running(record):
            if not force:
                raise ContainerRunning(record.name, "remove")
            if record.id not in self.engine.running:  # run by another process
                self.engine.remove(record.id, force=True)
                self._notify_removed(record.id, 137)
                return
            exited = self.waiter(record, "not-running")
            with contextlib.suppress(ContainerNotRunning):
                self.engine.kill(record.id, signal.SIGKILL)
            await exited
            if not self._exists(record.id):  # --rm: the engine removed it
                return
            record = self.find(record.id)
        self.engine.remove(record.id)
        self._notify_removed(record.id, record.exit_code)

    def resize(self, ref: str, height: int, width: int) -> None:
        """Set the terminal size now (if it runs) and at every later start."""
        if not (0 < height < 65536 and 0 < width < 65536):
            raise InvalidArgument(f"invalid terminal size {height}x{width}: use positive h and w")
        record = self.find(ref)
        self._console[record.id] = (height, width)
        running = self.engine.running.get(record.id)
        if running is not None and running.spawned.pty is not None:
            _set_size(running.spawned.pty, height, width)

    def console_size(self, cid: str, size: tuple[int, int]) -> None:
        """The terminal size to give the container when it starts (create's ConsoleSize)."""
        self._console[cid] = size

    async def shutdown(self, grace: float) -> None:
        """Stop every container this daemon runs: SIGTERM, SIGKILL after ``grace`` s.

        From now on nothing starts.
        """
        self.closing = True
        if self._starting:  # their containers are stopped with the others
            await asyncio.wait(list(self._starting.values()))
        cids = list(self.engine.running)
        if cids:
            log.info("stopping %d container(s)", len(cids))
        await asyncio.gather(*(self.stop(cid, grace) for cid in cids), return_exceptions=True)
        # Yield once more so the exit callbacks have run.
        await asyncio.sleep(0)


def _discard(table: dict[str, list[asyncio.Future[int]]], cid: str,
             future: asyncio.Future[int]) -> None:  # fmt: skip
    futures = table.get(cid, [])
    if future in futures:
        futures.remove(future)
    if not futures:
        table.pop(cid, None)


def _set_size(pty: int, height: int, width: int) -> None:
    with contextlib.suppress(OSError):  # the terminal went away with the container
        fcntl.ioctl(pty, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
