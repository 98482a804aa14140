"""This process's terminal and pipes, wired to a container through the daemon.

``run``, ``start``, ``attach`` and ``exec`` share these pieces: raw mode for
``-it``, the window size (sent again on every SIGWINCH), stdin copied to the
hijacked connection (half-closed at its end), the output written to stdout and
stderr as it comes, and, without a terminal, SIGINT, SIGTERM and SIGHUP
forwarded to the container as docker's sig-proxy does (with a terminal, ^C
travels through it as a byte instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import struct
import sys
import termios
import tty
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager

from sandbox.client import Hijacked
from sandbox.errors import SandboxError

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextmanager
def raw_mode(enabled: bool) -> Iterator[None]:
    """Put the controlling terminal in raw mode (keys go to the container as typed)."""
    if not enabled or not os.isatty(0):
        yield
        return
    saved = termios.tcgetattr(0)
    try:
        tty.setraw(0)
        yield
    finally:
        termios.tcsetattr(0, termios.TCSADRAIN, saved)


def size() -> tuple[int, int] | None:
    """This terminal's (rows, columns), or None without a terminal."""
    for fd in (0, 1, 2):
        if os.isatty(fd):
            rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
            if rows and cols:
                return rows, cols
    return None


def _background(coro: Awaitable[None], tasks: set[asyncio.Task[None]]) -> None:
    """Run ``coro`` on its own; a failure (the container just exited, say) is dropped."""

    async def quietly() -> None:
        with contextlib.suppress(SandboxError):
            await coro

    task = asyncio.ensure_future(quietly())
    tasks.add(task)
    task.add_done_callback(tasks.discard)


class Wiring:
    """Handlers installed for one attached container, removed by `close`."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.signals: list[int] = []
        self.tasks: set[asyncio.Task[None]] = set()

    def follow_size(self, resize: Callable[[int, int], Awaitable[None]]) -> None:
        """Send the terminal's size now and on every SIGWINCH, so full-screen programs fit."""

        def send() -> None:
            if (now := size()) is not None:
                _background(resize(*now), self.tasks)

        send()
        self.loop.add_signal_handler(signal.SIGWINCH, send)
        self.signals.append(signal.SIGWINCH)

    def forward_signals(self, kill: Callable[[int], Awaitable[None]]) -> None:
        """Forward SIGINT, SIGTERM and SIGHUP to the container (it decides what they do)."""
        for sig in FORWARDED:
            self.loop.add_signal_handler(sig, lambda s=sig: _background(kill(s), self.tasks))
            self.signals.append(sig)

    def close(self) -> None:
        for sig in self.signals:
            self.loop.remove_signal_handler(sig)
        self.signals.clear()


async def forward_stdin(hijacked: Hijacked, fd: int = 0) -> None:
    """Copy this process's stdin to the container until it ends, then half-close."""
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()
    was_blocking = os.get_blocking(fd)
    try:
        loop.add_reader(fd, ready.set)
        watched = True
    except OSError:  # a regular file (`< file`) cannot be watched, and never blocks
        watched = False
    try:
        if watched:
            os.set_blocking(fd, False)
        while True:
            if watched:
                await ready.wait()
                ready.clear()
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                continue
            except OSError:  # EIO: the terminal went away
                data = b""
            if not data:
                break
            try:
                await hijacked.send(data)
            except (OSError, RuntimeError):  # the daemon closed the connection: it ended
                return
            if not watched:
                await asyncio.sleep(0)
    finally:
        if watched:
            loop.remove_reader(fd)
            os.set_blocking(fd, was_blocking)
    hijacked.close_stdin()


async def copy_output(output: AsyncIterator[tuple[str, bytes]],
                      on_gone: Callable[[str], Awaitable[None]] | None = None) -> None:  # fmt: skip
    """Write the container's stdout and stderr here until its output ends.

    When a reader of ours goes away (``sandbox run base yes | head -1``),
    ``on_gone(stream)`` tells the daemon, so that the command gets SIGPIPE as
    in a shell pipeline; the rest of that stream goes nowhere, quietly.
    """
    targets = {"stdout": sys.stdout.buffer, "stderr": sys.stderr.buffer}
    gone: set[str] = set()
    async for stream, data in output:
        name = "stderr" if stream in ("stderr", "system") else "stdout"
        if name in gone:
            continue
        target = targets[name]
        try:
            target.write(data)
            target.flush()
        except BrokenPipeError:
            gone.add(name)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, target.fileno())  # the unflushed rest goes nowhere
            os.close(devnull)
            if on_gone is not None:
                with contextlib.suppress(SandboxError):  # it may have ended meanwhile
                    await on_gone(name)


async def pump(hijacked: Hijacked, *, stdin: bool,
               on_gone: Callable[[str], Awaitable[None]] | None = None) -> None:  # fmt: skip
    """Copy output here (and stdin there) until the daemon ends the stream."""
    feeding = asyncio.ensure_future(forward_stdin(hijacked)) if stdin else None
    try:
        await copy_output(hijacked.output(), on_gone)
    finally:
        if feeding is not None:
            feeding.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await feeding
        hijacked.close()
