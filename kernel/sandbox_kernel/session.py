"""A notebook session: its image, limits and shell state, and how one cell runs.

Each cell is one container, driven through the daemon's Docker API exactly
as `docker run` would (create, attach, wait, start), then, if it changed the
filesystem, committed as one more layer of the session's image (a rename in
the daemon, not a tar), and removed. The session's image is the base image
plus one layer per cell that changed something.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sandbox.client import AsyncClient, Hijacked
from sandbox.errors import (
    ContainerNotFound,
    ImageNotFound,
    LimitUnsupported,
    NotFound,
    SandboxError,
)

from . import shellstate
from .output import OutputSplitter
from .shellstate import ShellState

DEFAULT_IMAGE = "base"
FOREGROUND_LABEL = "sandbox.foreground"  # the daemon kills it if the kernel goes away
SESSION_LABEL = "sandbox.kernel.session"
GRACE = 0.5  # seconds between the SIGINT of an interrupt and the SIGKILL
FLUSH_EVERY = 0.05  # seconds between output messages while a cell runs
STDIN_POLL = 0.15  # seconds between "is it reading its stdin?" questions
HOSTNAME = "sandbox"
# The notebook renders ANSI colours; tools that are told to colour (ls
# --color=always, grep --color=always) look at TERM to know how.
CELL_ENV = ["TERM=xterm-256color"]
# What the kernel's containers get unless the notebook says otherwise (%limits):
# a runaway cell must not take the machine from the other students on it.
DEFAULT_LIMITS = {"Memory": 512 << 20, "MemorySwap": 512 << 20, "PidsLimit": 512}
LIMIT_FIELDS = ("Memory", "MemorySwap", "NanoCpus", "PidsLimit")  # HostConfig's, for %limits
# The kernel's cells have loopback only unless the notebook says otherwise (%network).
NO_NETWORK = "none"

Ask = Callable[[str], Awaitable[str]]  # the frontend's input box: prompt -> line
Started = Callable[[str], None]  # told the container's ID as soon as it runs (the meter)


@dataclass
class CellLayer:
    """One layer of the session's image that a cell made."""

    cell: int
    image: str  # the session's image after this cell
    command: str  # the cell's first line
    changes: list[dict[str, Any]]
    index: int | None = None  # its place in the image's stack (0: the bottom layer)


@dataclass
class CellResult:
    """How a cell ended."""

    status: int = 0
    reason: str = ""  # the daemon's word on why (out of memory, ...)
    interrupted: bool = False
    state_lost: bool = False
    left_running: list[str] = field(default_factory=list)
    layer: CellLayer | None = None
    kept: str = ""  # a container kept for its log (its output was cut)


@dataclass
class LongLived:
    """A ``%%container`` container: its network and where its ports are published."""

    name: str
    made: bool  # just made (by this cell)
    network: str  # the first network it is on ("none": loopback only)
    published: dict[int, list[int]] = field(default_factory=dict)  # port -> host ports
    bindings: dict[str, Any] = field(default_factory=dict)  # PortBindings, as made

    @classmethod
    def from_inspect(cls, name: str, info: dict[str, Any], made: bool) -> LongLived:
        host = info.get("HostConfig") or {}
        ports = (info.get("NetworkSettings") or {}).get("Ports") or {}
        published = {
            int(key.partition("/")[0]): [int(b["HostPort"]) for b in bound]
            for key, bound in ports.items() if bound
        }  # fmt: skip
        return cls(name, made, str(host.get("NetworkMode") or NO_NETWORK), published,
                   dict(host.get("PortBindings") or {}))  # fmt: skip

    def urls(self) -> list[tuple[int, str]]:
        """``(container port, URL on this machine)`` of each published port."""
        return [(port, f"http://127.0.0.1:{host_port}/")
                for port, host_ports in sorted(self.published.items())
                for host_port in host_ports]  # fmt: skip


@dataclass
class Session:
    """The state one kernel keeps between cells."""

    client: AsyncClient
    base: str = DEFAULT_IMAGE
    sid: str = field(default_factory=lambda: os.urandom(3).hex())
    limits: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    limits_set: bool = False  # the notebook chose them (%limits): never dropped
    image: str = ""  # the current image's ID; "" until the first cell resolves `base`
    state: ShellState | None = None
    nonce: str = field(default_factory=shellstate.new_nonce)
    layers: list[CellLayer] = field(default_factory=list)  # those of the current image
    diffs: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    # Every layer a cell made, by cell (kept by %image; %reset clears it, and diffs).
    cell_layers: dict[int, CellLayer] = field(default_factory=dict)
    depth: int = 0  # layers in the current image
    meter: bool = False  # %stats on: the live usage meter for every cell
    autodiff: bool = False  # %autodiff on: the diff after every cell that changed the disk
    # %network: the network of the next cells and of %%container containers made from now on.
    network: str = NO_NETWORK
    containers: set[str] = field(default_factory=set)  # %%container names
    kept: list[str] = field(default_factory=list)
    made: list[str] = field(default_factory=list)  # image IDs this session committed
    env_names: list[str] = field(default_factory=list)  # the image's Env names
    notices: list[str] = field(default_factory=list)  # said once, on the next cell
    _background: set[asyncio.Future[None]] = field(default_factory=set)

    # -- images ---------------------------------------------------------------------------

    async def current_image(self) -> str:
        """The image the next cell runs in (building the default image on first use)."""
        if not self.image:
            await self.use_image(self.base)
        return self.image

    async def use_image(self, ref: str) -> dict[str, Any]:
        """Start over from image ``ref`` (``%image``, ``%reset``); the shell state is kept.

        Raises:
            ImageNotFound: no such image (the session is unchanged).
        """
        try:
            info = await self.client.inspect_image(ref)
        except ImageNotFound:
            if ref != DEFAULT_IMAGE:
                raise
            self.notices.append("building the default image `base` (first use, a second or so)")
            await self.client.build_base()
            info = await self.client.inspect_image(ref)
        self.base = ref
        self.image = str(info["Id"]).removeprefix("sha256:")
        self.depth = len(info.get("SandboxLayers") or [])
        self.layers.clear()
        env = (info.get("Config") or {}).get("Env") or []
        self.env_names = [item.partition("=")[0] for item in env]
        return info

    def reset_state(self) -> None:
        self.state = None

    # -- one cell ----------------------------------------------------------------------

    def _body(self, cmd: list[str], env: list[str], image: str, *, stdin: bool,
              labels: dict[str, str] | None = None, hostname: str = HOSTNAME,
              network: str | None = None,
              ports: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
        """A create body: the session's limits, and its network unless ``network`` is given."""
        host: dict[str, Any] = {**self.limits, "NetworkMode": network or self.network}
        if ports:
            host["PortBindings"] = ports
        return {
            "Image": image,
            "Cmd": cmd,
            "Env": [*CELL_ENV, *env],
            "Hostname": hostname,
            "Tty": False,
            "OpenStdin": stdin,
            "AttachStdin": stdin,
            "StdinOnce": stdin,
            "Labels": {SESSION_LABEL: self.sid, **(labels or {})},
            "HostConfig": host,
        }

    def _prelude(self, **kwargs: Any) -> str:
        inherited = [*self.env_names, "HOSTNAME", "PATH", "HOME", "TERM"]
        return shellstate.prelude(self.state, self.nonce, inherited_env=inherited, **kwargs)

    async def _create(self, body: dict[str, Any], name: str | None) -> str:
        """Create, dropping a default limit this host cannot enforce (said once)."""
        while True:
            try:
                return await self.client.create(body, name)
            except LimitUnsupported as exc:
                dropped = self._drop_unsupported(str(exc))
                if not dropped:
                    raise
                others = {k: v for k, v in body["HostConfig"].items() if k not in LIMIT_FIELDS}
                body["HostConfig"] = {**self.limits, **others}

    def _drop_unsupported(self, message: str) -> bool:
        if self.limits_set:
            return False
        words = {"Memory": ("memory",), "PidsLimit": ("pids", "process"),
                 "NanoCpus": ("cpu",)}  # fmt: skip
        for key, hints in words.items():
            if key in self.limits and any(h in message.lower() for h in hints):
                self.limits.pop(key)
                if key == "Memory":
                    self.limits.pop("MemorySwap", None)
                self.notices.append(
                    f"this host cannot limit {hints[0]}: running without ({message})"
                )
                return True
        return False

    async def run_cell(
        self,
        code: str,
        cell: int,
        splitter: OutputSplitter,
        interrupt: asyncio.Event,
        ask: Ask | None,
        *,
        first_line: str = "",
        started: Started | None = None,
    ) -> CellResult:
        """Run one cell in a fresh container; commit what it changed as a layer.

        ``started``, if given, is called with the container's ID once it runs.
        """
        image = await self.current_image()
        env = [f"{shellstate.PRELUDE_VAR}={self._prelude()}"]
        name = self.container_name(cell)
        body = self._body(shellstate.cell_command(code), env, image, stdin=True,
                          labels={FOREGROUND_LABEL: "1"})  # fmt: skip
        try:
            cid = await self._create(body, name)
        except ImageNotFound:
            raise SandboxError(
                f"the session's image {image[:12]} was removed (by `sandbox rmi`?), and with "
                f"it what earlier cells wrote: %reset starts again from {self.base}"
            ) from None
        except NotFound as exc:
            self._raise_if_network_gone(exc)
            raise
        splitter.log_hint = f"`sandbox logs {name}`"
        result = CellResult()
        try:
            await self._attach_and_run(cid, splitter, interrupt, ask, result, started)
        except BaseException:
            await self._discard(cid)
            raise
        state = splitter.state
        if state is None:
            result.state_lost = True
        else:
            self.state = state
            result.left_running = state.left_running
        changes = await self.client.changes(cid, detail=True)
        if changes:
            label = first_line or code.strip().splitlines()[0] if code.strip() else ""
            made_by = f"cell {cell}: {label}"[:200]
            image_ref = await self.client.commit(cid, message=f"notebook cell {cell}",
                                                 created_by=made_by)  # fmt: skip
            self.image = image_ref.removeprefix("sha256:")
            self.made.append(self.image)
            result.layer = CellLayer(cell, self.image, label, changes, index=self.depth)
            self.depth += 1
            self.layers.append(result.layer)
            self.diffs[cell] = changes
            self.cell_layers[cell] = result.layer
        if splitter.cut:
            self.kept.append(name)
            result.kept = name
        else:
            self._later(self._discard(cid))
        return result

    def network_gone(self) -> str:
        """What to say when the session's network was removed: what happened, what to do."""
        return (
            f"the session's network {self.network} no longer exists (removed with "
            "`sandbox network rm`?): choose another with %network NAME, or %network none"
        )

    def _raise_if_network_gone(self, exc: NotFound) -> None:
        """Raise `network_gone` for a create refused because the session's network went."""
        if str(exc).startswith("No such network"):
            raise SandboxError(self.network_gone()) from None

    def container_name(self, cell: int) -> str:
        """The name of the container that runs ``cell``."""
        return f"nb{self.sid}-{cell}"

    def _later(self, coro: Awaitable[None]) -> None:
        """Run ``coro`` after the reply (a removal need not delay the notebook)."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _discard(self, cid: str) -> None:
        with contextlib.suppress(SandboxError):
            await self.client.remove(cid, force=True)

    async def _attach_and_run(self, cid: str, splitter: OutputSplitter, interrupt: asyncio.Event,
                              ask: Ask | None, result: CellResult,
                              started: Started | None = None) -> None:  # fmt: skip
        conn = await self.client.attach(cid, stdin=True)
        try:
            waiting = await self.client.wait(cid, "next-exit")
            await self.client.start(cid)
            if started is not None:
                started(cid)
            last_output = [time.monotonic()]
            pump = asyncio.ensure_future(_pump(conn, splitter, last_output))
            ended = asyncio.ensure_future(waiting.result())
            helpers = [
                asyncio.ensure_future(_flush_often(splitter)),
                asyncio.ensure_future(self._watch_stdin(cid, conn, splitter, ask, last_output)),
            ]
            stop = asyncio.ensure_future(interrupt.wait())
            try:
                await asyncio.wait({ended, stop}, return_when=asyncio.FIRST_COMPLETED)
                if not ended.done():
                    result.interrupted = True
                    await self._interrupt(cid, ended)
                result.status, result.reason = await ended
                await pump
            finally:
                for task in (*helpers, stop, pump, ended):
                    task.cancel()
                waiting.close()
            splitter.finish()
        finally:
            conn.close()

    async def _interrupt(self, cid: str, ended: asyncio.Future[Any]) -> None:
        """^C to the cell's processes; SIGKILL for all of them if that is not enough."""
        with contextlib.suppress(SandboxError):
            await self.client.kill(cid, "SIGINT")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(ended), GRACE)
            return
        with contextlib.suppress(SandboxError):
            await self.client.kill(cid, "SIGKILL")

    async def _watch_stdin(self, cid: str, conn: Hijacked, splitter: OutputSplitter,
                           ask: Ask | None, last_output: list[float]) -> None:  # fmt: skip
        """Give the cell a line of input whenever it blocks reading its stdin."""
        while True:
            await asyncio.sleep(STDIN_POLL)
            if time.monotonic() - last_output[0] < STDIN_POLL:
                continue  # still writing: not waiting for anyone
            try:
                waiting = await self.client.stdin_waiting(cid)
            except SandboxError:
                return
            if not waiting:
                continue
            splitter.flush()
            if ask is None:
                splitter.feed("stderr", (
                    b"input: this command is waiting to read from stdin, but this notebook "
                    b"frontend does not accept input (it sent allow_stdin=false); it gets "
                    b"end-of-file instead. Give it input with a pipe or a heredoc "
                    b"(echo answer | command).\n"))  # fmt: skip
                conn.close_stdin()
                return
            value = await ask("")
            if value == "\x04":  # the frontend's end-of-file
                conn.close_stdin()
                return
            await conn.send(value.encode() + b"\n")
            last_output[0] = time.monotonic()

    # -- helpers for completion and %%container -------------------------------------

    async def run_quiet(self, script: str, timeout: float = 5.0) -> tuple[int, str, str]:
        """Run ``script`` in a throwaway container with the session's state; nothing is kept."""
        image = await self.current_image()
        env = [f"{shellstate.PRELUDE_VAR}={self._prelude(save_state=False)}"]
        # No network: completion reads files, and a helper container need not
        # show up in the /etc/hosts of the others on the session's network.
        body = self._body(shellstate.cell_command(script), env, image, stdin=False,
                          labels={FOREGROUND_LABEL: "1"}, network=NO_NETWORK)  # fmt: skip
        cid = await self._create(body, None)
        out: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
        try:
            conn = await self.client.attach(cid, stdin=False)
            try:
                waiting = await self.client.wait(cid, "next-exit")
                await self.client.start(cid)

                async def collect() -> int:
                    async for stream, data in conn.output():
                        out.setdefault(stream, []).append(data)
                    status, _ = await waiting.result()
                    return status

                try:
                    status = await asyncio.wait_for(collect(), timeout)
                except TimeoutError:
                    status = 124
                finally:
                    waiting.close()
            finally:
                conn.close()
        finally:
            self._later(self._discard(cid))
        text = {k: b"".join(v).decode("utf-8", "replace") for k, v in out.items()}
        return status, text["stdout"], text["stderr"]

    async def ensure_container(self, name: str,
                               ports: dict[str, Any] | None = None) -> LongLived:  # fmt: skip
        """The long-lived container ``name`` for ``%%container``, made on first use.

        A new one is made from the session's image, on the session's network,
        with ``ports`` (Docker's PortBindings) published; one that exists keeps
        the network and ports it was made with.

        Raises:
            SandboxError: the daemon's refusal (a host port taken, a bad
                binding, a network removed); nothing is left behind then.
        """
        try:
            info = await self.client.inspect_container(name)
        except ContainerNotFound:
            info = None
        made = info is None
        if info is None:
            image = await self.current_image()
            body = self._body(["sleep", "infinity"], [], image, stdin=False, hostname=name,
                              ports=ports)  # fmt: skip
            try:
                await self._create(body, name)
            except NotFound as exc:
                self._raise_if_network_gone(exc)
                raise
            try:
                await self.client.start(name)
            except BaseException:
                await self._discard(name)  # a port taken: no half-made container stays
                raise
            info = await self.client.inspect_container(name)
        elif not info["State"]["Running"]:
            await self.client.start(name)
            info = await self.client.inspect_container(name)
        self.containers.add(name)
        return LongLived.from_inspect(name, info, made)

    async def run_in_container(self, name: str, code: str, splitter: OutputSplitter,
                               interrupt: asyncio.Event) -> CellResult:  # fmt: skip
        """Run a cell in the long-lived container ``name`` (exec); its processes may stay."""
        env = [f"{shellstate.PRELUDE_VAR}={self._prelude(keep_processes=True)}"]
        exec_id = await self.client.exec_create(name, {
            "Cmd": shellstate.cell_command(code), "Env": env,
            "AttachStdout": True, "AttachStderr": True, "AttachStdin": False, "Tty": False,
        })  # fmt: skip
        conn = await self.client.exec_start(exec_id, tty=False)
        assert conn is not None
        result = CellResult()
        try:
            pump = asyncio.ensure_future(_pump(conn, splitter, [0.0], until_state=True))
            flusher = asyncio.ensure_future(_flush_often(splitter))
            stop = asyncio.ensure_future(interrupt.wait())
            try:
                await asyncio.wait({pump, stop}, return_when=asyncio.FIRST_COMPLETED)
                if not pump.done():
                    result.interrupted = True
                    await self._interrupt_exec(name, splitter)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(pump), GRACE * 4)
            finally:
                for task in (pump, flusher, stop):
                    task.cancel()
            splitter.finish()
        finally:
            conn.close()
        if splitter.state is not None:
            result.status = splitter.state.status
        else:
            result.state_lost = not result.interrupted
            with contextlib.suppress(SandboxError):
                info = await self.client.exec_inspect(exec_id)
                result.status = int(info.get("ExitCode") or 0)
        if result.interrupted and not result.status:
            result.status = 130
        return result

    async def _interrupt_exec(self, name: str, splitter: OutputSplitter) -> None:
        pid = splitter.shell_pid
        if not pid:
            return
        exec_id = await self.client.exec_create(name, {
            "Cmd": ["kill", "-INT", "--", f"-{pid}"], "AttachStdout": False,
            "AttachStderr": False})  # fmt: skip
        await self.client.exec_start(exec_id, tty=False, detach=True)

    async def remove_container(self, name: str) -> None:
        await self.client.remove(name, force=True)
        self.containers.discard(name)

    # -- the end -------------------------------------------------------------------------

    async def close(self) -> None:
        """Remove every container of the session and the images only it used."""
        if self._background:
            await asyncio.wait(list(self._background), timeout=10)
        names = [*self.containers, *self.kept]
        with contextlib.suppress(SandboxError):
            for info in await self.client.containers(show_all=True):
                if (info.get("Labels") or {}).get(SESSION_LABEL) == self.sid:
                    names.append(info["Id"])
        for name in dict.fromkeys(names):
            with contextlib.suppress(SandboxError):
                await self.client.remove(name, force=True)
        for image in reversed(self.made):
            # An image someone named (%commit, `sandbox tag`) stays: removing it by ID
            # would untag it and delete it, force or not.
            with contextlib.suppress(SandboxError):
                if (await self.client.inspect_image(image)).get("RepoTags"):
                    continue
                await self.client.remove_image(image)
        self.containers.clear()
        self.kept.clear()
        self.made.clear()


async def _pump(conn: Hijacked, splitter: OutputSplitter, last_output: list[float], *,
                until_state: bool = False) -> None:  # fmt: skip
    """Feed the container's output to the splitter until it ends (or the state came)."""
    async for stream, data in conn.output():
        splitter.feed(stream, data)
        last_output[0] = time.monotonic()
        if until_state and splitter.state is not None:
            return


async def _flush_often(splitter: OutputSplitter) -> None:
    while True:
        await asyncio.sleep(FLUSH_EVERY)
        splitter.flush()


def first_line(code: str) -> str:
    """The first line that is not blank or a comment, for history and %layers."""
    for line in code.splitlines():
        text = line.strip()
        if text and not text.startswith("#"):
            return text
    return shlex.quote(code.strip()[:40])
