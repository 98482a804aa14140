"""Container output on the wire: Docker's stream framing, hijacked attach connections, logs.

Without a terminal, stdout and stderr travel on one connection, each chunk
behind an 8-byte header ``[stream, 0, 0, 0, size (u32, big-endian)]``; with a
terminal the bytes go raw (the pty merged them already).

An attach is not HTTP after its first reply: the client asks for
``Upgrade: tcp``, the daemon answers ``101 UPGRADED`` and from then on the
socket carries the container's output one way and its stdin the other. The
client half-closes when its stdin ends, and output must keep flowing until
the container exits. aiohttp has no such upgrade, so `hijack` writes the 101
itself and swaps its own protocol onto the transport (asyncio's
``set_protocol``); aiohttp's handler is told when the connection is lost, so
its bookkeeping stays right.

The trap (docker-py #3332, #2042): docker-py reads the 101 through a buffered
reader and then reads the raw socket, so output that arrives in the same read
as the 101 is lost. The 101 is therefore written alone, and for docker-py
(its User-Agent is ``docker-sdk-python/<version>``) output is held back for
`SETTLE` seconds after it (`settle`). Other clients keep what they read past
the 101 (the docker CLI, `sandbox.client`, which sends
``jupyter-sandbox/<version>``) and get their output at once: 20 ms less per
attach or exec, which a notebook pays on every cell.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import select
import struct
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from aiohttp import web

from sandbox.engine import Running

log = logging.getLogger("sandboxd")

MULTIPLEXED = "application/vnd.docker.multiplexed-stream"
RAW = "application/vnd.docker.raw-stream"
STREAM_IDS = {"stdin": 0, "stdout": 1, "stderr": 2, "system": 3}
SETTLE = 0.02  # seconds between the 101 and the first output (docker-py's bug)
DOCKER_PY_AGENT = "docker-sdk-python/"  # how docker-py's User-Agent begins
STDIN_HIGH_WATER = 1 << 20  # bytes of stdin held before the client is paused
LOG_CHUNK = 1 << 20  # bytes of log read (and sent) at a time
# Output a client does not read piles up in the daemon (the engine's pumps
# cannot be paused yet); past this, the client is cut off.
MAX_UNREAD = 64 << 20


def frame(stream: str, data: bytes) -> bytes:
    """One multiplexed chunk: the 8-byte header, then the bytes."""
    return struct.pack(">BxxxL", STREAM_IDS[stream], len(data)) + data


def encode(stream: str, data: bytes, tty: bool) -> bytes:
    """Output as the wire carries it: raw with a terminal, framed without."""
    return data if tty else frame(stream, data)


# -- the hijacked connection ------------------------------------------------------


class _Tail:
    """Catches the bytes aiohttp had already read after the request (early stdin)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.data += data
        return False, b""

    def feed_eof(self) -> None:
        pass


class HijackedConnection(asyncio.Protocol):
    """The raw socket of an attach after the 101: output out, stdin in.

    Input that arrives before `read_input` is called is kept and delivered
    then, in order.
    """

    def __init__(self, transport: asyncio.Transport, previous: asyncio.BaseProtocol,
                 early: bytes) -> None:  # fmt: skip
        self.transport = transport
        self._previous = previous
        self._early = bytearray(early)
        self._on_input: Callable[[bytes], None] | None = None
        self._on_eof: Callable[[], None] | None = None
        self.input_ended = False
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._hangup: select.epoll | None = None  # watches for the client's full close

    def read_input(self, on_input: Callable[[bytes], None], on_eof: Callable[[], None]) -> None:
        """Deliver the client's bytes (and its half-close) from now on."""
        self._on_input, self._on_eof = on_input, on_eof
        if self._early:
            data, self._early = bytes(self._early), bytearray()
            on_input(data)
        if self.input_ended:
            on_eof()

    def data_received(self, data: bytes) -> None:
        if self._on_input is None:
            self._early += data
        else:
            self._on_input(data)

    def eof_received(self) -> bool:
        self.input_ended = True
        if self._on_eof is not None:
            self._on_eof()
        self._watch_hangup()
        return True  # keep our half open: output flows until the container exits

    def _watch_hangup(self) -> None:
        """After the client's half-close, learn when it closes the rest (or dies).

        A client whose stdin ended half-closes, and output must keep flowing
        to it; a client that went away (killed, say) closed both ways. Reading
        cannot tell them apart: both read as end-of-file. But the kernel marks
        a unix socket whose peer has closed entirely with POLLHUP, and epoll
        always reports that: a private epoll set holding only this socket
        becomes readable exactly then. Without this, a client that died would
        only be noticed at the next write, and a silent container has none.
        """
        sock = self.transport.get_extra_info("socket")
        if sock is None or self._hangup is not None or self.transport.is_closing():
            return
        self._hangup = select.epoll()
        self._hangup.register(sock.fileno(), 0)  # nothing asked: only HUP and ERR come
        asyncio.get_running_loop().add_reader(self._hangup.fileno(), self._hung_up)

    def _hung_up(self) -> None:
        self._stop_watching()
        self.transport.abort()  # connection_lost follows

    def _stop_watching(self) -> None:
        if self._hangup is not None:
            asyncio.get_running_loop().remove_reader(self._hangup.fileno())
            self._hangup.close()
            self._hangup = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_watching()
        if not self.closed.done():
            self.closed.set_result(None)
        self._previous.connection_lost(exc)  # aiohttp forgets the connection

    def pause_reading(self) -> None:
        if not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if not self.transport.is_closing() and not self.transport.is_reading():
            self.transport.resume_reading()

    def write(self, data: bytes) -> None:
        if not data or self.transport.is_closing():
            return
        if self.transport.get_write_buffer_size() > MAX_UNREAD:
            log.warning("an attached client reads too slowly (%d MiB unread): cut off",
                        MAX_UNREAD >> 20)  # fmt: skip
            self.transport.abort()
            return
        self.transport.write(data)


class HijackedResponse(web.StreamResponse):
    """What an attach handler returns: its reply was written raw already.

    aiohttp finishes every response it is given; this one writes nothing
    more, and the connection is closed after it, never reused.
    """

    def __init__(self, status: int) -> None:
        super().__init__(status=status, reason="UPGRADED" if status == 101 else None)
        self.force_close()

    async def prepare(self, request: web.BaseRequest) -> None:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


async def hijack(request: web.Request, content_type: str) -> tuple[HijackedConnection, int]:
    """Answer ``101 UPGRADED`` and take the connection over from aiohttp.

    Returns the connection and the status written (200 when the client did
    not ask for an upgrade: moby answers ``200 OK`` and hijacks anyway).

    Raises:
        ConnectionResetError: the client is already gone.
    """
    await request.read()  # an attach has no body; one sent anyway is skipped
    transport, protocol = request.transport, request.protocol
    if transport is None or transport.is_closing() or not isinstance(transport, asyncio.Transport):
        raise ConnectionResetError("the client closed the connection")
    upgrade = request.headers.get("Upgrade", "").lower() == "tcp"
    status, head = (101, "101 UPGRADED") if upgrade else (200, "200 OK")
    tail = _Tail()
    protocol.set_parser(tail)  # type: ignore[arg-type]  # hands over what it buffered
    conn = HijackedConnection(transport, protocol, bytes(tail.data))
    transport.set_protocol(conn)
    if not transport.is_reading():
        transport.resume_reading()
    lines = [f"HTTP/1.1 {head}", f"Content-Type: {content_type}"]
    if upgrade:
        lines += ["Connection: Upgrade", "Upgrade: tcp"]
    transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    return conn, status


async def settle(request: web.Request) -> None:
    """Pause `SETTLE` seconds after the 101 if the client is docker-py, else not at all.

    docker-py loses the output that arrives in the same read as the 101 (see
    the module's docstring); every other client keeps it. A docker-py whose
    ``user_agent`` was changed is not recognised, and may lose the first
    output of an attach or exec.
    """
    if request.headers.get("User-Agent", "").lower().startswith(DOCKER_PY_AGENT):
        await asyncio.sleep(SETTLE)


# -- stdin --------------------------------------------------------------------------


class StdinPump:
    """Copies a client's bytes to a container's stdin without blocking the loop.

    Bytes sent before the container starts wait here. A container that does
    not read pauses the client (at `STDIN_HIGH_WATER` bytes) instead of
    growing the buffer. The pump writes through its own duplicate of the fd,
    so the engine closing its copy at exit never leaves the loop watching a
    closed (or reused) fd number. When the client half-closes, the
    container's stdin is closed after the buffer is written (a terminal has
    no end-of-file to send: its input just stops).
    """

    def __init__(self, conn: HijackedConnection) -> None:
        self.conn = conn
        self.loop = asyncio.get_running_loop()
        self.buffer = bytearray()
        self.ended = False
        self.running: Running | None = None
        self.fd: int | None = None
        self.done = False

    def feed(self, data: bytes) -> None:
        if self.done:
            return
        self.buffer += data
        self._flush()
        if len(self.buffer) > STDIN_HIGH_WATER:
            self.conn.pause_reading()

    def feed_eof(self) -> None:
        self.ended = True
        self._flush()

    def connect(self, running: Running) -> None:
        """The container started: write to its stdin (or terminal) from now on."""
        spawned = running.spawned
        target = spawned.pty if spawned.pty is not None else spawned.stdin
        if target is None or self.done:  # started without stdin: input is dropped
            self.close()
            return
        self.running = running
        self.fd = os.dup(target)
        os.set_blocking(self.fd, False)
        self._flush()

    def _flush(self) -> None:
        if self.fd is None:
            return
        while self.buffer:
            try:
                written = os.write(self.fd, self.buffer)
            except BlockingIOError:
                self.loop.add_writer(self.fd, self._flush)
                return
            except OSError:  # EPIPE: the container closed its stdin or exited
                self.close()
                return
            del self.buffer[:written]
        self.loop.remove_writer(self.fd)
        self.conn.resume_reading()
        if self.ended:
            running = self.running
            self.close()
            if running is not None and running.spawned.pty is None:
                running.close_stdin()

    def close(self) -> None:
        """Stop writing (idempotent); the container's stdin stays as it is."""
        self.done = True
        self.buffer.clear()
        if self.fd is not None:
            self.loop.remove_writer(self.fd)
            os.close(self.fd)
            self.fd = None


# -- attach ---------------------------------------------------------------------------


class Attachment:
    """One attached client, as the supervisor's watcher of a container.

    Output is held until `connect` (the 101 written and settled), then
    written as it comes. ``finished`` resolves when the container exits.
    """

    def __init__(self, streams: set[str], tty: bool) -> None:
        self.streams = streams
        self.tty = tty
        self.held: list[bytes] = []
        self.conn: HijackedConnection | None = None
        self.stdin: StdinPump | None = None
        self.finished: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def output(self, stream: str, data: bytes) -> None:
        if stream not in self.streams:
            return
        chunk = encode(stream, data, self.tty)
        if self.conn is None:
            self.held.append(chunk)
        else:
            self.conn.write(chunk)

    def started(self, running: Running) -> None:
        if self.stdin is not None:
            self.stdin.connect(running)

    def exited(self, status: int) -> None:
        if self.stdin is not None:
            self.stdin.close()
        if not self.finished.done():
            self.finished.set_result(status)

    def connect(self, conn: HijackedConnection) -> None:
        """Send what was held back, then stream directly."""
        held, self.held = self.held, []
        conn.write(b"".join(held))
        self.conn = conn


# -- logs ----------------------------------------------------------------------------


class LogReader:
    """Reads a container's json-file log, each call from where the last stopped.

    The file is kept open, so a container removed meanwhile (``--rm``) can
    still be read to its end.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: Any = None
        self.partial = b""
        self._open()

    def _open(self) -> None:
        try:
            self.file = open(self.path, "rb")  # noqa: SIM115  # kept open across reads
        except FileNotFoundError:
            self.file = None

    def read(self, limit: int = LOG_CHUNK) -> list[dict[str, Any]]:
        """The next complete records, about ``limit`` bytes of them; [] at the end for now."""
        if self.file is None:
            self._open()
            if self.file is None:
                return []
        data = self.partial
        while chunk := self.file.read(limit):  # to the end of a line at least
            data += chunk
            if b"\n" in chunk:
                break
        lines = data.split(b"\n")
        self.partial = lines.pop()
        entries = []
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a damaged line: skip it, as Docker's reader does
            if isinstance(entry, dict) and isinstance(entry.get("log"), str):
                entries.append(entry)
        return entries

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def last_lines(reader: LogReader, streams: set[str], count: int) -> list[dict[str, Any]]:
    """The last ``count`` lines of ``streams`` in the log (a record may hold several).

    Reads the whole log but keeps only ``count`` lines in memory.
    """
    lines: deque[dict[str, Any]] = deque(maxlen=count)
    while entries := reader.read():
        for entry in entries:
            if entry.get("stream", "stdout") in streams:
                lines.extend({**entry, "log": line}
                             for line in entry["log"].splitlines(keepends=True))  # fmt: skip
    return list(lines)


def encode_entries(entries: Iterable[dict[str, Any]], streams: set[str], tty: bool,
                   timestamps: bool) -> bytes:  # fmt: skip
    """Log records as the wire carries them (one frame per record)."""
    out = []
    for entry in entries:
        stream = entry.get("stream", "stdout")
        if stream not in streams:
            continue
        data = entry["log"].encode("utf-8", "surrogateescape")
        if timestamps:
            data = entry.get("time", "").encode() + b" " + data
        out.append(encode(stream, data, tty))
    return b"".join(out)
