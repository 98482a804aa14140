"""The "Bash (sandbox)" Jupyter kernel: ipykernel's protocol, the daemon's containers.

The ``*_request`` side (the wire) is ipykernel's; this class implements the
``do_*`` hooks. A cell's shell code runs through `session.Session`, its
magics through `magics`, and its output through `output.OutputSplitter`;
the pictures (layer stack, diffs, the usage meter, the side panel's comm)
come from `visuals`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from typing import Any

import comm
import ipykernel.ipkernel  # noqa: F401  (makes comm's comms ipykernel's, as widgets need)
import zmq
from ipykernel.kernelbase import Kernel

from sandbox.client import AsyncClient
from sandbox.errors import Conflict, InvalidArgument, PermissionDenied, SandboxError

from . import __version__, network, syntax
from .magics import MAGICS, MagicError, run_line_magic, split_cell
from .output import OutputSplitter
from .session import NO_NETWORK, CellResult, Session, first_line
from .visuals.bundles import Display, cell_diff, diff_bundle, layer_stack, layers_bundle
from .visuals.meter import CellMeter
from .visuals.models import Limits
from .visuals.panel import Panel, snapshot

EXIT_STATUS = "ExitStatus"
INTERRUPTED = "KeyboardInterrupt"
MAX_LIVE_LAYERS = 20  # %layers displays kept up to date (the latest ones)


class SandboxKernel(Kernel):
    """Every cell's shell in a fresh container; one layer per cell that changes the disk."""

    implementation = "sandbox_kernel"
    implementation_version = __version__
    language = "bash"
    language_version = "5"
    language_info = {
        "name": "bash",
        "mimetype": "text/x-sh",
        "file_extension": ".sh",
        "codemirror_mode": "shell",
        "pygments_lexer": "bash",
    }
    banner = (
        "Bash (sandbox): every cell runs in a fresh container; what it changes on disk "
        "becomes a layer. %help lists the magics."
    )
    help_links = [{"text": "Bash manual", "url": "https://www.gnu.org/software/bash/manual/"}]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.client = AsyncClient()
        # (`self.session` is ipykernel's: the messaging session.)
        self.sandbox = Session(self.client, base=os.environ.get("SANDBOX_KERNEL_IMAGE", "base"))
        self._interrupt: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._live_layers: list[str] = []  # display IDs of %layers displays
        self._comms()

    def _comms(self) -> None:
        """Comms, as IPython's kernel has them: for ipywidgets and the side panel."""
        import ipywidgets

        self.comm_manager = comm.get_comm_manager()
        for msg_type in ("comm_open", "comm_msg", "comm_close"):
            self.shell_handlers[msg_type] = getattr(self.comm_manager, msg_type)
        ipywidgets.register_comm_target()
        self.panel = Panel(lambda: snapshot(self.sandbox))
        self.panel.register(self.comm_manager)

    @property
    def kernel_info(self) -> dict[str, Any]:
        info = dict(super().kernel_info)
        # ipykernel advertises its debugger whenever debugpy is importable; a
        # shell kernel has none.
        features = info.get("supported_features") or []
        info["supported_features"] = [f for f in features if f != "debugger"]
        return info

    # -- interrupts ------------------------------------------------------------------------

    def pre_handler_hook(self) -> None:
        """While a request runs, SIGINT (the interrupt button) interrupts the cell."""
        self.saved_sigint_handler = None
        if threading.current_thread() is threading.main_thread():
            self.saved_sigint_handler = signal.signal(signal.SIGINT, self._on_sigint)

    def post_handler_hook(self) -> None:
        if self.saved_sigint_handler is not None:
            signal.signal(signal.SIGINT, self.saved_sigint_handler)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        event, loop = self._interrupt, self._loop
        if event is not None and loop is not None:
            loop.call_soon_threadsafe(event.set)

    # -- execute -------------------------------------------------------------------------

    async def do_execute(  # type: ignore[override]
        self,
        code: str,
        silent: bool,
        store_history: bool = True,
        user_expressions: dict[str, Any] | None = None,
        allow_stdin: bool = False,
        *,
        cell_id: str | None = None,
    ) -> dict[str, Any]:
        self._loop = asyncio.get_running_loop()
        self._interrupt = asyncio.Event()
        try:
            return await self._execute(code, silent, allow_stdin)
        except MagicError as exc:
            return self._error("MagicError", str(exc), [str(exc)], silent)
        except SandboxError as exc:
            return self._error(type(exc).__name__, str(exc), [f"sandbox: {exc}"], silent)
        except Exception as exc:  # a bug of the kernel's: say so, and stay usable
            self.log.exception("cell failed inside the kernel")
            message = f"the kernel failed: {exc!r} (a bug: please report it)"
            return self._error("KernelError", repr(exc), [message], silent)
        finally:
            self._interrupt = None

    async def _execute(self, code: str, silent: bool, allow_stdin: bool) -> dict[str, Any]:
        before = self.sandbox.image
        try:
            return await self._run(code, silent, allow_stdin)
        finally:
            if not silent and before and self.sandbox.image != before and self._live_layers:
                await self._refresh_layers()

    async def _run(self, code: str, silent: bool, allow_stdin: bool) -> dict[str, Any]:
        magics, shell, cell_magic = split_cell(code)
        for name, args in magics:
            self._show(await run_line_magic(self.sandbox, name, args), silent)
        self._say_notices(silent)
        metered = self.sandbox.meter
        if cell_magic is not None:
            name, args = cell_magic
            if name == "container":
                try:
                    container, ports = network.parse_container_args(args)
                except InvalidArgument as exc:
                    usage = MAGICS["container"].usage
                    raise MagicError(f"%%container: {exc} (usage: {usage} on the first "
                                     "line; the shell code follows)") from None  # fmt: skip
                return await self._run_in_container(container, shell, silent, metered, ports)
            if name == "stats" and not args:
                metered = True
            elif name == "stats":
                raise MagicError("usage: %%stats (the first line; the shell code follows)")
            else:
                raise MagicError(f"unknown cell magic %%{name}: the cell magics are "
                                 "%%container NAME and %%stats")  # fmt: skip
        if not shell.strip():
            return self._ok()
        splitter = self._splitter(silent)
        ask = self._ask if allow_stdin else None
        assert self._interrupt is not None
        meter = self._meter(metered, silent)
        started = meter.start if meter is not None else None
        try:
            result = await self.sandbox.run_cell(shell, self.execution_count, splitter,
                                                 self._interrupt, ask,
                                                 first_line=first_line(shell),
                                                 started=started)  # fmt: skip
        except BaseException:
            if meter is not None:
                meter.abandon()
            raise
        if meter is not None:
            await meter.finish(oom_killed=result.reason.startswith("out of memory"),
                               pids_limit_hit=result.reason.startswith("process limit"),
                               limits=Limits.from_host_config(self.sandbox.limits))  # fmt: skip
        self._say_notices(silent)
        self._notes(result, silent)
        if result.layer is not None and self.sandbox.autodiff and not silent:
            diff = cell_diff(self.sandbox, result.layer.cell)
            if diff is not None:
                self._show(Display(diff_bundle(diff)), silent)
        return self._verdict(result, silent)

    async def _run_in_container(self, name: str, shell: str, silent: bool,
                                metered: bool = False,
                                ports: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
        try:
            lived = await self.sandbox.ensure_container(name, ports)
        except (InvalidArgument, Conflict, PermissionDenied) as exc:  # bad, taken, or root's ports
            raise MagicError(f"%%container {name}: {exc}") from None
        if lived.made:
            where = "" if lived.network == NO_NETWORK else f" on network {lived.network}"
            self._say(f"[started the container {name}{where}: it runs until %rm {name}]",
                      silent, stream="stderr")  # fmt: skip
        else:
            for note in network.settings_differ(lived, self.sandbox.network, ports or {}):
                self._say(f"[{note}]", silent, stream="stderr")
        # The link comes after the cell's output (the server it starts is up by
        # then), before its verdict; only once, when the container is made.
        links = network.published_bundle(lived) if lived.made and lived.published else None
        if not shell.strip():
            self._links(links, silent)
            return self._ok()
        splitter = self._splitter(silent)
        assert self._interrupt is not None
        meter = self._meter(metered, silent, name)
        if meter is not None:
            meter.start(name)
        try:
            result = await self.sandbox.run_in_container(name, shell, splitter, self._interrupt)
        except BaseException:
            if meter is not None:
                meter.abandon()
            raise
        if meter is not None:
            await meter.finish(exited=False)
        self._links(links, silent)
        return self._finish(result, splitter, silent, in_container=True)

    def _links(self, data: dict[str, Any] | None, silent: bool) -> None:
        if data is not None and not silent:
            self._send("display_data", {"data": data, "metadata": {}, "transient": {}})

    # -- pictures ----------------------------------------------------------------------

    def _send(self, msg_type: str, content: dict[str, Any]) -> None:
        self.send_response(self.iopub_socket, msg_type, content)

    def _show(self, out: str | Display, silent: bool) -> None:
        """A magic's answer: text on stdout, or a display (kept up to date if ``live``)."""
        if isinstance(out, str):
            self._say(out, silent)
            return
        if silent:
            return
        transient = {}
        if out.live:
            display_id = f"sandbox-layers-{os.urandom(8).hex()}"
            self._live_layers = [*self._live_layers, display_id][-MAX_LIVE_LAYERS:]
            transient["display_id"] = display_id
        self._send("display_data", {"data": out.data, "metadata": {}, "transient": transient})

    async def _refresh_layers(self) -> None:
        """The session's stack changed: every live %layers display shows the new one."""
        try:
            data = layers_bundle(await layer_stack(self.sandbox))
        except SandboxError:
            self.log.warning("could not update the %%layers displays", exc_info=True)
            return
        for display_id in self._live_layers:
            transient = {"display_id": display_id}
            self._send("update_display_data",
                       {"data": data, "metadata": {}, "transient": transient})  # fmt: skip

    def _meter(self, metered: bool, silent: bool, container: str = "") -> CellMeter | None:
        """The usage meter of the cell about to run, if it has one or the side panel is open.

        Nothing at all when neither wants it: a cell without the meter costs nothing more.
        """
        if silent or not (metered or self.panel.active):
            return None
        panel = self.panel if self.panel.active else None
        meter = CellMeter(self.client, self.execution_count,
                          Limits.from_host_config(self.sandbox.limits), self._send,
                          widget=metered, panel=panel,
                          container=container or self.sandbox.container_name(self.execution_count))
        meter.show()
        return meter

    def _splitter(self, silent: bool) -> OutputSplitter:
        def stream(name: str, text: str) -> None:
            if not silent:
                self.send_response(self.iopub_socket, "stream", {"name": name, "text": text})

        def display(content: dict[str, Any]) -> None:
            if not silent:
                self.send_response(self.iopub_socket, "display_data", content)

        return OutputSplitter(self.sandbox.nonce, stream, display)

    def _finish(self, result: CellResult, splitter: OutputSplitter, silent: bool,
                in_container: bool = False) -> dict[str, Any]:  # fmt: skip
        self._notes(result, silent, in_container)
        return self._verdict(result, silent)

    def _notes(self, result: CellResult, silent: bool, in_container: bool = False) -> None:
        """The kernel's words on how the cell ended (on stderr, after its output)."""
        notes = []
        if result.left_running and not in_container:
            notes.append(
                f"[killed {len(result.left_running)} process(es) still running at the end of "
                f"the cell: {', '.join(result.left_running)}. Processes end with their cell; "
                "use %%container NAME for servers and background jobs]"
            )
        if result.state_lost and not result.interrupted and not result.reason:
            notes.append(
                "[the shell state of this cell (variables, directory) was lost: the next cell "
                "continues from the previous one's]"
            )
        if result.kept:
            notes.append(
                f"[the full output stays in the container's log: sandbox logs {result.kept}]"
            )
        for note in notes:
            self._say(note, silent, stream="stderr")

    def _verdict(self, result: CellResult, silent: bool) -> dict[str, Any]:
        """The reply: ok, or the one error message (interrupt, limit, exit status)."""
        if result.interrupted:
            message = "interrupted: the cell's processes were stopped (^C)"
            return self._error(INTERRUPTED, "interrupted", [message], silent)
        if result.reason and result.status != 0:
            return self._error(EXIT_STATUS, str(result.status),
                               [self._explain(result)], silent)  # fmt: skip
        if result.reason:  # a limit was hit, yet the cell's last command succeeded
            self._say(f"[{self._explain(result)}]", silent, stream="stderr")
        if result.status != 0:
            return self._error(EXIT_STATUS, str(result.status),
                               [f"exit status {result.status}"], silent)  # fmt: skip
        return self._ok()

    def _explain(self, result: CellResult) -> str:
        """The daemon's reason, in words for a student."""
        from .magics import describe_limits

        limits = describe_limits(self.sandbox.limits)
        reason = result.reason
        if reason.startswith("out of memory"):
            return (f"out of memory: the cell used all the memory it may use ({limits}), so "
                    f"the kernel killed it (exit status {result.status}). Use less memory, or "
                    "raise the limit with %limits memory=SIZE.")  # fmt: skip
        if reason.startswith("process limit"):
            return (f"too many processes: the cell tried to run more processes at once than "
                    f"it may ({limits}), so new ones could not start (exit status "
                    f"{result.status}). Raise the limit with %limits pids=N.")  # fmt: skip
        return f"{reason} (exit status {result.status})"

    def _ok(self) -> dict[str, Any]:
        return {"status": "ok", "execution_count": self.execution_count,
                "payload": [], "user_expressions": {}}  # fmt: skip

    def _error(self, ename: str, evalue: str, traceback: list[str],
               silent: bool) -> dict[str, Any]:  # fmt: skip
        content = {"ename": ename, "evalue": evalue,
                   "traceback": [f"\x1b[0;31m{line}\x1b[0m" for line in traceback]}  # fmt: skip
        if not silent:
            self.send_response(self.iopub_socket, "error", content)
        return {"status": "error", "execution_count": self.execution_count, **content}

    def _say(self, text: str, silent: bool, stream: str = "stdout") -> None:
        if text and not silent:
            self.send_response(self.iopub_socket, "stream",
                               {"name": stream, "text": text.rstrip("\n") + "\n"})  # fmt: skip

    def _say_notices(self, silent: bool) -> None:
        while self.sandbox.notices:
            self._say(f"[{self.sandbox.notices.pop(0)}]", silent, stream="stderr")

    # -- input -----------------------------------------------------------------------------

    async def _ask(self, prompt: str) -> str:
        """Jupyter's input box, awaited (ipykernel's own raw_input blocks the loop)."""
        parent = self.get_parent("shell")
        ident = self._get_shell_context_var(self._shell_parent_ident)
        with contextlib.suppress(zmq.ZMQError):
            while self.stdin_socket.recv_multipart(zmq.NOBLOCK):
                pass  # stale replies
        content = {"prompt": prompt, "password": False}
        self.session.send(self.stdin_socket, "input_request", content, parent, ident=ident)
        while True:
            with contextlib.suppress(zmq.ZMQError):
                _, reply = self.session.recv(self.stdin_socket, zmq.NOBLOCK)
                if reply is not None:
                    return str(reply["content"].get("value", ""))
            if self._interrupt is not None and self._interrupt.is_set():
                return "\x04"
            await asyncio.sleep(0.02)

    # -- completion, inspection, is_complete -----------------------------------------

    async def do_complete(self, code: str, cursor_pos: int) -> dict[str, Any]:  # type: ignore[override]
        from . import completion

        return await completion.complete(code, cursor_pos, self.sandbox.run_quiet)

    async def do_inspect(self, code: str, cursor_pos: int, detail_level: int = 0,  # type: ignore[override]
                         omit_sections: Any = ()) -> dict[str, Any]:  # fmt: skip
        from . import completion

        return await completion.inspect(code, cursor_pos, detail_level, self.sandbox.run_quiet)

    async def do_is_complete(self, code: str) -> dict[str, Any]:  # type: ignore[override]
        return syntax.is_complete(code)

    async def do_shutdown(self, restart: bool) -> dict[str, Any]:  # type: ignore[override]
        """Restart and shutdown: every container of the session goes, and its images.

        This runs on ipykernel's control thread; the daemon connection belongs
        to the main thread's loop, so the clean-up runs there.
        """

        async def clean() -> None:
            # A cell still running (a restart in the middle of it) is stopped
            # first, as an interrupt would, so it does not find its
            # connection closed under it.
            if self._interrupt is not None:
                self._interrupt.set()
                for _ in range(60):
                    if self._interrupt is None:
                        break
                    await asyncio.sleep(0.05)
            with contextlib.suppress(SandboxError, OSError):
                await self.sandbox.close()
            await self.client.close()

        main = self.io_loop.asyncio_loop
        if main is asyncio.get_running_loop():
            await clean()
        else:
            done = asyncio.run_coroutine_threadsafe(clean(), main)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.wrap_future(done), 30)
        return {"status": "ok", "restart": restart}
