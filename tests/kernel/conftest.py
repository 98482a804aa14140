"""The real "Bash (sandbox)" kernel, started by jupyter_client from its installed kernelspec.

The kernel inherits SANDBOX_ROOT from the test session (`session_root`), so
its containers live in the session's store and its daemon is the session's.
"""

from __future__ import annotations

import contextlib
import queue
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager, start_new_kernel

KERNEL_NAME = "sandbox"


class Streams:
    """stdout and stderr of a cell, from its ``text(name)`` (also used by test_notebooks)."""

    def text(self, name: str) -> str:
        raise NotImplementedError

    @property
    def stdout(self) -> str:
        return self.text("stdout")

    @property
    def stderr(self) -> str:
        return self.text("stderr")


@dataclass
class Cell(Streams):
    """What one execute request produced."""

    reply: dict[str, Any]
    messages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> str:
        return str(self.reply["status"])

    def text(self, name: str) -> str:
        return "".join(m["content"]["text"] for m in self.messages
                       if m["msg_type"] == "stream" and m["content"]["name"] == name)  # fmt: skip

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [m["content"] for m in self.messages if m["msg_type"] == "error"]

    @property
    def displays(self) -> list[dict[str, Any]]:
        return [m["content"] for m in self.messages if m["msg_type"] == "display_data"]

    @property
    def updates(self) -> list[dict[str, Any]]:
        """The update_display_data contents (a live display of an earlier cell, redrawn)."""
        return [m["content"] for m in self.messages if m["msg_type"] == "update_display_data"]

    def shown(self, mime: str) -> list[Any]:
        """The ``mime`` data of each display_data that has it (%layers, %diff...)."""
        return [d["data"][mime] for d in self.displays if mime in d["data"]]

    @property
    def plain(self) -> str:
        """The text/plain of the cell's one picture (a magic's display_data)."""
        (text,) = self.shown("text/plain")
        return str(text)


class Driver:
    """A kernel manager and client, with a blocking `run` for one cell."""

    def __init__(self, km: KernelManager, kc: BlockingKernelClient) -> None:
        self.km = km
        self.kc = kc

    def run(self, code: str, *, timeout: float = 60, allow_stdin: bool = False,
            stop_on_error: bool = True) -> Cell:  # fmt: skip
        msg_id = self.kc.execute(code, allow_stdin=allow_stdin, stop_on_error=stop_on_error)
        return self.collect(msg_id, timeout=timeout)

    def iopub(self, msg_id: str, timeout: float) -> Iterator[dict[str, Any]]:
        """The iopub messages of ``msg_id`` as they come, status messages included.

        Raises ``queue.Empty`` once ``timeout`` seconds have passed (the caller says what for).
        """
        deadline = time.monotonic() + timeout
        while True:
            msg = self.kc.get_iopub_msg(timeout=max(deadline - time.monotonic(), 0.01))
            if msg["parent_header"].get("msg_id") == msg_id:
                yield msg

    def collect(self, msg_id: str, *, timeout: float = 60) -> Cell:
        """The iopub messages of ``msg_id`` up to its idle status, then its reply."""
        messages = []
        try:
            for msg in self.iopub(msg_id, timeout):
                if msg["msg_type"] != "status":
                    messages.append(msg)
                elif msg["content"]["execution_state"] == "idle":
                    break
        except queue.Empty:
            raise AssertionError(f"no idle status within {timeout} s; got {messages}") from None
        while True:
            reply = self.kc.get_shell_msg(timeout=timeout)
            if reply["parent_header"].get("msg_id") == msg_id:
                return Cell(reply["content"], messages)


@pytest.fixture(scope="module")
def api(session_root: Path) -> Iterator[docker.DockerClient]:
    """docker-py on the session's daemon."""
    client = docker.DockerClient(base_url="unix://" + str(session_root / "sandboxd.sock"),
                                 timeout=60)  # fmt: skip
    yield client
    client.close()


@pytest.fixture(scope="module")
def kernel(session_root: Path) -> Iterator[Driver]:
    """One kernel for a test module (starting one takes about a second)."""
    km, kc = start_new_kernel(kernel_name=KERNEL_NAME, startup_timeout=60)
    try:
        yield Driver(km, kc)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)


def ok(kernel: Driver, code: str, *, timeout: float = 60) -> Cell:
    """Run ``code``, which must succeed with no error message; the cell."""
    cell = kernel.run(code, timeout=timeout)
    assert cell.status == "ok", (code, cell.reply, cell.messages)
    assert not cell.errors, (code, cell.errors)
    return cell


def magic_error(kernel: Driver, code: str) -> str:
    """Run ``code``, which must fail with one MagicError; its message."""
    cell = kernel.run(code)
    assert cell.status == "error", (code, cell.messages)
    assert cell.reply["ename"] == "MagicError", cell.reply
    assert [e["ename"] for e in cell.errors] == ["MagicError"]
    return str(cell.reply["evalue"])


def unique(prefix: str) -> str:
    """A container or network name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def own_kernel() -> Iterator[Driver]:
    """A kernel of the test's own (SANDBOX_ROOT is the session's), shut down at the end."""
    km, kc = start_new_kernel(kernel_name=KERNEL_NAME, startup_timeout=60)
    try:
        yield Driver(km, kc)
    finally:
        kc.stop_channels()
        if km.has_kernel:
            km.shutdown_kernel(now=False)
        km.cleanup_resources()
