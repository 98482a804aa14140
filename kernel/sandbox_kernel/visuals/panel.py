"""The comm behind JupyterLab's "Sandbox" side panel (target ``jupyter_sandbox.panel``).

The frontend opens the comm; then, on the comm:

- frontend -> kernel ``{"request": "snapshot"}``; the kernel answers
  ``{"type": "snapshot", "image", "image_id", "layers", "limits",
  "containers", "images"}`` (`snapshot`), or ``{"type": "error",
  "message"}`` if the daemon could not tell;
- kernel -> frontend, while a cell runs: ``{"type": "usage", ...}`` (the
  latest sample and the limits, at most 4 a second; see `meter`) and
  ``{"type": "idle", "cell"}`` when it ends.

Requests from the frontend wait while a cell runs (the kernel handles one
shell message at a time); the usage pushes are what the panel shows then.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from sandbox.errors import SandboxError

from .bundles import layer_stack
from .models import Limits

if TYPE_CHECKING:
    from ..session import Session

TARGET = "jupyter_sandbox.panel"
log = logging.getLogger(__name__)


class Panel:
    """Every open panel comm of the kernel.

    Args:
        snapshot: builds the answer to ``{"request": "snapshot"}``.
    """

    def __init__(self, snapshot: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        self.snapshot = snapshot
        self.comms: dict[str, Any] = {}
        self._tasks: set[asyncio.Future[None]] = set()

    def register(self, manager: Any) -> None:
        """Answer comms the frontend opens to `TARGET` (``manager``: the kernel's CommManager)."""
        manager.register_target(TARGET, self._opened)

    @property
    def active(self) -> bool:
        return bool(self.comms)

    def _opened(self, comm: Any, msg: dict[str, Any]) -> None:
        self.comms[comm.comm_id] = comm
        comm.on_msg(lambda message: self._received(comm, message))
        comm.on_close(lambda message: self.comms.pop(comm.comm_id, None))
        data = (msg.get("content") or {}).get("data") or {}
        if data.get("request"):  # a request may come with the open
            self._received(comm, msg)

    def _received(self, comm: Any, msg: dict[str, Any]) -> None:
        data = (msg.get("content") or {}).get("data") or {}
        request = data.get("request")
        if request == "snapshot":
            task = asyncio.ensure_future(self._answer(comm))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            comm.send({"type": "error", "message": f"unknown request {request!r}: the one "
                       "request is {\"request\": \"snapshot\"}"})  # fmt: skip

    async def _answer(self, comm: Any) -> None:
        try:
            answer = await self.snapshot()
        except SandboxError as exc:
            answer = {"type": "error", "message": f"sandbox: {exc}"}
        except Exception as exc:  # a bug of ours: say so, and keep the kernel going
            log.exception("the panel's snapshot failed")
            answer = {"type": "error", "message": f"the kernel failed: {exc!r}"}
        comm.send(answer)

    def push(self, data: dict[str, Any]) -> None:
        """Send ``data`` to every open panel."""
        for comm in list(self.comms.values()):
            comm.send(data)


async def snapshot(session: Session) -> dict[str, Any]:
    """The panel's picture: the session's stack and limits, the user's containers and images."""
    stack = await layer_stack(session, svg=False)
    containers = await session.client.containers(show_all=True)
    images = await session.client.images()
    return {
        "type": "snapshot",
        "image": session.base,
        "image_id": stack.image_id,
        "layers": [layer.to_json() for layer in stack.layers],
        "limits": Limits.from_host_config(session.limits).to_json(),
        "containers": [{"name": str((c.get("Names") or ["?"])[0]).lstrip("/"),
                        "image": c.get("Image", ""), "state": c.get("State", ""),
                        "status": c.get("Status", "")} for c in containers],
        "images": [{"tags": i.get("RepoTags") or [],
                    "id": str(i.get("Id", "")).removeprefix("sha256:")[:12],
                    "size": i.get("Size", 0)} for i in images],
    }  # fmt: skip
