"""The user's terminal during ``run -it``: raw mode, window size, stdin."""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import sys
import termios
import tty
from collections.abc import Iterator
from contextlib import contextmanager

from sandbox.engine import Running


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


def copy_size(pty: int) -> None:
    """Give the container's terminal this terminal's size (rows, columns)."""
    for fd in (0, 1, 2):
        if os.isatty(fd):
            size = fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
            fcntl.ioctl(pty, termios.TIOCSWINSZ, size)
            return


def resize(pty: int, rows: int, cols: int) -> None:
    """Set the container's terminal size explicitly."""
    import struct

    fcntl.ioctl(pty, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def follow_size(loop: asyncio.AbstractEventLoop, running: Running) -> None:
    """Copy the size now and on every SIGWINCH, so full-screen programs fit."""
    pty = running.spawned.pty
    if pty is None:
        return
    copy_size(pty)

    def on_winch() -> None:
        if running.spawned.pty is not None:
            copy_size(running.spawned.pty)

    loop.add_signal_handler(signal.SIGWINCH, on_winch)
    running.exited.add_done_callback(lambda _: loop.remove_signal_handler(signal.SIGWINCH))


def forward_stdin(loop: asyncio.AbstractEventLoop, running: Running) -> None:
    """Copy this process's stdin to the container until either ends."""
    fd = sys.stdin.fileno()
    was_blocking = os.get_blocking(fd)
    os.set_blocking(fd, False)

    def stop() -> None:
        loop.remove_reader(fd)
        os.set_blocking(fd, was_blocking)

    def readable() -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        if data:
            running.write_stdin(data)
        else:
            stop()
            running.close_stdin()

    loop.add_reader(fd, readable)
    running.exited.add_done_callback(lambda _: stop() if not running.exited.cancelled() else None)
