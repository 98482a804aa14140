"""A running container as its engine process sees it: output pumps and the exit.

Output is read from the container's pipes (or its pty) by the event loop,
appended to the container's log as Docker json-file lines, and handed to
whoever listens (the CLI's terminal, an API client). The exit is learnt from a
pidfd, so no SIGCHLD handler or wait thread is needed.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sandbox.runtime.cgroups import Cgroup
from sandbox.runtime.spawn import Spawned

OutputListener = Callable[[str, bytes], None]


def log_line(stream: str, data: bytes, now: float | None = None) -> bytes:
    """One json-file log record (undecodable bytes kept as surrogate escapes)."""
    moment = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"
    text = data.decode("utf-8", "surrogateescape")
    return (json.dumps({"log": text, "stream": stream, "time": stamp}) + "\n").encode()


class Running:
    """Pumps a started container's output and resolves ``exited`` with its status.

    ``exited`` is set once the init has exited and every output stream has
    reached end-of-file (nothing written before the exit is lost).
    """

    def __init__(self, spawned: Spawned, log_path: str | None,
                 loop: asyncio.AbstractEventLoop) -> None:  # fmt: skip
        self.spawned = spawned
        self.record: Any = None  # the engine's ContainerRecord, updated at exit
        self.cgroup: Cgroup | None = None  # the engine's stats() reads it
        # Its network namespace, held while it runs (published ports and
        # `network connect` work in it); None: made by the clone, not held.
        self.netns_fd: int | None = None
        self.published: list[Any] = []  # the engine's ports.Published
        self.loop = loop
        self.listeners: list[OutputListener] = []
        # No log for an exec'd process (Docker logs only the container's own output).
        self.log_fd = None if log_path is None else os.open(
            log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)  # fmt: skip
        self.exited: asyncio.Future[int] = loop.create_future()
        self.status: int | None = None
        self._open_streams: dict[int, str] = {}
        self._on_exit: list[Callable[[int], None]] = []
        for stream in ("stdout", "stderr", "pty"):
            fd = getattr(spawned, stream)
            if fd is not None:
                os.set_blocking(fd, False)
                self._open_streams[fd] = "stdout" if stream == "pty" else stream
                loop.add_reader(fd, self._readable, fd)
        loop.add_reader(spawned.pidfd, self._reap)

    def on_exit(self, callback: Callable[[int], None]) -> None:
        """Run ``callback(status)`` (synchronously) before ``exited`` resolves."""
        self._on_exit.append(callback)

    def _readable(self, fd: int) -> bool:
        """Read one chunk; False when nothing was there to read."""
        stream = self._open_streams[fd]
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return False
        except OSError as exc:  # a pty reports EIO once every slave fd is closed
            if exc.errno != errno.EIO:
                raise
            data = b""
        if not data:
            self._close_stream(fd)
            return False
        if self.log_fd is not None:
            os.write(self.log_fd, log_line(stream, data))
        for listener in list(self.listeners):
            listener(stream, data)
        return True

    def _close_stream(self, fd: int) -> None:
        self.loop.remove_reader(fd)
        del self._open_streams[fd]
        self._maybe_done()

    def _reap(self) -> None:
        self.loop.remove_reader(self.spawned.pidfd)
        _, status = os.waitpid(self.spawned.pid, 0)
        self.status = os.waitstatus_to_exitcode(status)
        if self.status < 0:  # killed by a signal: the shell's convention, 128 + N
            self.status = 128 - self.status
        # The whole PID namespace is gone: drain what is buffered, then finish.
        for fd in list(self._open_streams):
            while fd in self._open_streams and self._readable(fd):
                pass
        self._maybe_done()

    def _maybe_done(self) -> None:
        if self.status is None or self._open_streams or self.exited.done():
            return
        if self.log_fd is not None:
            os.close(self.log_fd)
        self.spawned.close()
        try:
            for callback in self._on_exit:
                callback(self.status)
        except BaseException as exc:  # waiters must learn of it, not hang
            self.exited.set_exception(exc)
            raise
        self.exited.set_result(self.status)

    def close_output(self, stream: str) -> None:
        """Stop reading ``stream`` ("stdout" or "stderr"; "stdout" is the terminal).

        For a reader that has gone away (``sandbox run ... | head -1``): the
        command's next write to the stream fails with SIGPIPE, as in a shell
        pipeline, instead of the container running on unheard. Nothing it
        writes to the stream afterwards reaches the log.
        """
        for fd, name in list(self._open_streams.items()):
            if name != stream:
                continue
            for attr in ("stdout", "stderr", "pty"):
                if getattr(self.spawned, attr) == fd:
                    setattr(self.spawned, attr, None)
            self._close_stream(fd)
            os.close(fd)

    def write_stdin(self, data: bytes) -> None:
        """Send bytes to the container's stdin (or its terminal)."""
        fd = self.spawned.pty if self.spawned.pty is not None else self.spawned.stdin
        if fd is None:
            return
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:
                time.sleep(0.001)
            except OSError:
                return  # the container is gone

    def close_stdin(self) -> None:
        """End the container's stdin (non-tty containers)."""
        if self.spawned.stdin is not None:
            os.close(self.spawned.stdin)
            self.spawned.stdin = None
