"""A cell's raw output, made into what the notebook shows.

The container's stdout and stderr arrive as byte chunks. `OutputSplitter`:

- takes out the kernel's own records (OSC 7777 control strings: the shell
  state the cell left, and `display` requests), wherever chunks split them;
- decodes UTF-8 incrementally, so a character split across chunks survives
  and invalid bytes become U+FFFD instead of an error;
- keeps ANSI colours (JupyterLab renders them);
- bounds what reaches the browser: past a byte or line limit it stops
  sending, says so once, and counts the rest (which stays in the log);
- coalesces small chunks, so `seq 100000` is a few messages, not thousands.
"""

from __future__ import annotations

import base64
import codecs
import json
import re
from collections.abc import Callable
from typing import Any

from sandbox.units import human_size

from .shellstate import LINE_OFFSET, OSC_NUMBER, ShellState, _unescape

RECORD_START = f"\x1b]{OSC_NUMBER};".encode()
MAX_RECORD = 64 << 20  # bytes: a longer unterminated record is shown as text
DEFAULT_LIMIT_BYTES = 256 << 10
DEFAULT_LIMIT_LINES = 10_000
# bash's own messages count one line too many (see shellstate.LINE_OFFSET)
_BASH_LINE = re.compile(r"(?m)^bash: (-c: )?line (\d+):")

StreamSink = Callable[[str, str], None]
DisplaySink = Callable[[dict[str, Any]], None]


class OutputSplitter:
    """One cell's output: feed it chunks, flush it now and then, finish it once."""

    def __init__(
        self,
        nonce: str,
        emit_stream: StreamSink,
        emit_display: DisplaySink,
        *,
        limit_bytes: int = DEFAULT_LIMIT_BYTES,
        limit_lines: int = DEFAULT_LIMIT_LINES,
        log_hint: str = "",
    ) -> None:
        self.nonce = nonce
        self.emit_stream = emit_stream
        self.emit_display = emit_display
        self.limit_bytes = limit_bytes
        self.limit_lines = limit_lines
        self.log_hint = log_hint
        self.state: ShellState | None = None
        self.shell_pid = 0  # the cell's bash, in its container (`%%container` cells say)
        self.shown_bytes = 0
        self.shown_lines = 0
        self.total_bytes = 0
        self.cut = False
        self._held = b""  # stdout bytes that may be the start of a record
        self._decoders = {
            name: codecs.getincrementaldecoder("utf-8")(errors="replace")
            for name in ("stdout", "stderr")
        }
        self._pending: list[list[str]] = []  # [stream, text] runs, in order

    # -- input -------------------------------------------------------------------------

    def feed(self, stream: str, data: bytes) -> None:
        """Take one chunk of a stream (``stdout`` or ``stderr``)."""
        if stream != "stdout":
            self._text("stderr", data)
            return
        data = self._held + data
        self._held = b""
        while data:
            start = data.find(RECORD_START)
            if start < 0:
                keep = _partial_prefix(data, RECORD_START)
                self._text("stdout", data[: len(data) - keep])
                self._held = data[len(data) - keep :]
                return
            self._text("stdout", data[:start])
            end = data.find(b"\x07", start)
            if end < 0:
                if len(data) - start > MAX_RECORD:
                    self._text("stdout", data[start:])
                else:
                    self._held = data[start:]
                return
            self._record(data[start + len(RECORD_START) : end])
            data = data[end + 1 :]

    def finish(self) -> None:
        """The streams ended: show what is held back, then flush."""
        if self._held:
            self._text("stdout", self._held)
            self._held = b""
        for name, decoder in self._decoders.items():
            self._append(name, decoder.decode(b"", final=True))
        self.flush()

    def flush(self) -> None:
        """Send what is pending, one message per run of one stream."""
        pending, self._pending = self._pending, []
        for name, text in pending:
            if text:
                self.emit_stream(name, text)

    # -- internals -----------------------------------------------------------------------

    def _text(self, stream: str, data: bytes) -> None:
        if not data:
            return
        self.total_bytes += len(data)
        if self.cut:
            return
        text = self._decoders[stream].decode(data)
        if stream == "stderr":
            text = _BASH_LINE.sub(_fix_line, text)
        room_bytes = self.limit_bytes - self.shown_bytes
        room_lines = self.limit_lines - self.shown_lines
        lines = text.count("\n")
        if len(text) <= room_bytes and lines <= room_lines:
            self.shown_bytes += len(text)
            self.shown_lines += lines
            self._append(stream, text)
            return
        # Cut at whichever limit comes first, on a line boundary where possible.
        head = text[: max(room_bytes, 0)]
        if head.count("\n") > room_lines:
            head = "\n".join(head.split("\n")[:room_lines]) + "\n"
        self.shown_bytes += len(head)
        self._append(stream, head)
        self.cut = True
        where = f" ({self.log_hint})" if self.log_hint else ""
        self._append(
            "stderr",
            f"\n[output cut: the notebook shows the first {human_size(self.limit_bytes)} or "
            f"{self.limit_lines:,} lines of a cell; the rest goes to the container's log"
            f"{where}]\n",
        )

    def _append(self, stream: str, text: str) -> None:
        if not text:
            return
        if self._pending and self._pending[-1][0] == stream:
            self._pending[-1][1] += text
        else:
            self._pending.append([stream, text])

    def _record(self, body: bytes) -> None:
        kind, _, rest = body.partition(b";")
        if kind == b"state":
            nonce, _, payload = rest.partition(b";")
            if nonce.decode("ascii", "replace") == self.nonce:
                try:
                    self.state = ShellState.parse(payload.decode("utf-8", "surrogateescape"))
                except ValueError:
                    self.state = None
            return
        if kind == b"pid":
            self.shell_pid = int(rest) if rest.isdigit() else 0
            return
        if kind == b"display":
            mime, _, rest = rest.partition(b";")
            name, _, data = rest.partition(b";")
            self.flush()  # what was printed before the display comes before it
            try:
                raw = base64.b64decode(data, validate=False)
            except ValueError:
                raw = b""
            bundle = display_bundle(_unescape(mime.decode()), _unescape(name.decode()), raw)
            if isinstance(bundle, str):
                self._append("stderr", bundle + "\n")
            else:
                self.emit_display(bundle)
            return
        # An OSC 7777 the kernel does not know: shown as it came.
        self._text("stdout", RECORD_START + body + b"\x07")


def _fix_line(match: re.Match[str]) -> str:
    number = max(int(match.group(2)) - LINE_OFFSET, 1)
    return f"bash: {match.group(1) or ''}line {number}:"


def _partial_prefix(data: bytes, marker: bytes) -> int:
    """How many bytes at the end of ``data`` could begin ``marker``."""
    for n in range(min(len(marker) - 1, len(data)), 0, -1):
        if data.endswith(marker[:n]):
            return n
    return 0


_EXTENSIONS = {
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
    ".svg": "image/svg+xml", ".html": "text/html", ".htm": "text/html",
    ".md": "text/markdown", ".json": "application/json", ".txt": "text/plain",
    ".csv": "text/plain", ".log": "text/plain",
}  # fmt: skip
_BINARY = {"image/png", "image/jpeg", "image/gif"}


def sniff(name: str, raw: bytes) -> str | None:
    """The MIME type of ``raw``: by its first bytes, else by ``name``'s extension."""
    if raw.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if raw.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if raw.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    head = raw[:512].lstrip().lower()
    dot = name.rfind(".")
    by_name = _EXTENSIONS.get(name[dot:].lower()) if dot >= 0 else None
    if by_name:
        return by_name
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in raw[:4096]):
        return "image/svg+xml"
    if head.startswith((b"<!doctype html", b"<html")):
        return "text/html"
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return "text/plain"


def display_bundle(mime: str, name: str, raw: bytes) -> dict[str, Any] | str:
    """A display_data content for ``display``'s file, or a message saying why not."""
    label = name if name and name != "-" else "stdin"
    mime = mime or sniff(name, raw) or ""
    if not mime:
        return (
            f"display: {label} is binary data of a type it does not know; it shows PNG, "
            "JPEG, GIF, SVG, HTML, Markdown, JSON and text (or say which: --mime TYPE)"
        )
    summary = f"[{mime}, {human_size(len(raw))}: {label}]"
    data: dict[str, Any] = {"text/plain": summary}
    if mime in _BINARY or (mime.startswith("image/") and mime != "image/svg+xml"):
        data[mime] = base64.b64encode(raw).decode("ascii")
    else:
        text = raw.decode("utf-8", "replace")
        if mime == "application/json":
            try:
                data[mime] = json.loads(text)
            except ValueError:
                return f"display: {label} is not valid JSON"
        elif mime == "text/plain":
            data["text/plain"] = text
        else:
            data[mime] = text
    return {"data": data, "metadata": {}, "transient": {}}
