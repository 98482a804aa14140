"""The live cgroup meter of a running cell, and the sampler behind it.

While a cell runs with the meter on (``%stats on``, ``%%stats``), the kernel
follows the cell's container on the daemon's stats stream (`STATS_INTERVAL`)
and shows an ipywidgets HTML widget drawn by `html.render_stats` (memory
now/peak/limit, CPU % of the limit, pids now/limit). When the cell ends, an
``update_display_data`` replaces the widget with the frozen summary (the
stats+json bundle), so a saved notebook keeps the summary, and the widget is
closed.

Cheap by design, so that a cell is not measurably slower with the meter on:

- the cell's display starts as a line of text; the widget replaces it only
  once the cell has run for `WIDGET_DELAY` (a widget costs a model, a comm
  and a few messages: a cell of a few milliseconds, like ``true``, would be
  10% slower for a meter nobody could read);
- the sampler is one asyncio task on the kernel's own loop, reading one
  streamed HTTP response (the daemon samples the cgroup; the kernel only
  parses a line of JSON per sample);
- the widget is one model: one comm message per update, at most one per
  `WIDGET_PERIOD` (10 a second), and the latest sample is never dropped
  (`Throttle` sends it when the period is over);
- with the meter off and no side panel open, none of this exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from sandbox.client import AsyncClient
from sandbox.errors import SandboxError

from . import html
from .bundles import stats_bundle
from .models import Limits, Stats, UsageRecorder

STATS_INTERVAL = 0.1  # seconds between the daemon's samples (its minimum)
WIDGET_PERIOD = 0.1  # seconds between widget updates, at least: 10 a second at most
WIDGET_DELAY = 0.25  # seconds a cell runs before its display becomes the live widget
PANEL_PERIOD = 0.25  # the same for the side panel's usage pushes: 4 a second at most
STREAM_END_WAIT = 0.5  # seconds the stream may take to end after the container did

Send = Callable[[str, dict[str, Any]], None]  # (msg_type, content) on iopub
Clock = Callable[[], float]


class Handle(Protocol):
    def cancel(self) -> None: ...


Later = Callable[[float, Callable[[], None]], Handle]  # loop.call_later's shape


class Push(Protocol):
    """Where usage goes besides the widget: the side panel (`panel.Panel`)."""

    def push(self, data: dict[str, Any]) -> None: ...


class Throttle:
    """Calls ``send()`` at most once per ``period`` seconds, never losing the latest change.

    Call it whenever there is something new: it sends at once if the last
    send is ``period`` old, else once the period is over (a trailing send).
    Its start counts as a send (the widget was just displayed as it is), so
    that over any stretch of time from then on there are at most
    ``duration / period`` sends, never one more.

    Args:
        period: seconds between two sends, at least.
        send: what sends the latest state.
        clock: monotonic seconds (injected by tests).
        later: schedules a call after a delay (``loop.call_later``; injected by tests).
    """

    def __init__(self, period: float, send: Callable[[], None], clock: Clock = time.monotonic,
                 later: Later | None = None) -> None:  # fmt: skip
        self.period = period
        self.send = send
        self.clock = clock
        self.later = later
        self.sent = 0
        self._last = clock()
        self._timer: Handle | None = None
        self._dirty = False

    def __call__(self) -> None:
        self._dirty = True
        now = self.clock()
        if now - self._last >= self.period:
            self._fire(now)
        elif self._timer is None:
            later = self.later or asyncio.get_running_loop().call_later
            self._timer = later(self._last + self.period - now, self._due)

    def _due(self) -> None:
        self._timer = None
        if self._dirty:
            now = self.clock()
            if now - self._last >= self.period:
                self._fire(now)
            else:  # woken early (clock skew): wait for the rest of the period
                self()

    def _fire(self, now: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._dirty = False
        self._last = now
        self.sent += 1
        self.send()

    def cancel(self) -> None:
        """Send nothing more (a pending trailing send is dropped)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._dirty = False


class CellMeter:
    """The usage of one cell: sampled from the daemon, shown live, summed up at the end.

    Args:
        client: the daemon's client (its stats stream).
        cell: the cell's number.
        limits: the cell's cgroup limits (the bars' scale).
        send: sends an iopub message (display_data, update_display_data).
        widget: show the live widget and, at the end, the summary; False when
            only the side panel wants the usage.
        panel: gets ``usage`` pushes (at most 4 a second) and ``idle`` at the end.
        container: the container's name, for the summary.
        clock: monotonic seconds (injected by tests).
    """

    def __init__(self, client: AsyncClient, cell: int, limits: Limits, send: Send, *,
                 widget: bool = True, panel: Push | None = None, container: str = "",
                 clock: Clock = time.monotonic) -> None:  # fmt: skip
        self.client = client
        self.cell = cell
        self.send = send
        self.panel = panel
        self.clock = clock
        self.recorder = UsageRecorder(limits)
        self.container = container
        self.display_id = f"sandbox-stats-{uuid.uuid4().hex}"
        self.started = clock()
        self.samples = 0
        self._widget: Any = None
        self._task: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._show_widget = widget
        self.widget_updates: Throttle | None = None  # made with the widget
        self.panel_updates = Throttle(PANEL_PERIOD, self._push_usage, clock)

    # -- the live part -----------------------------------------------------------------

    def show(self) -> None:
        """The cell's display (before it starts, so that it sits above its output).

        A line of text at first; the live widget after `WIDGET_DELAY`.
        """
        if not self._show_widget:
            return
        text = f"[cell {self.cell}: measuring its memory, CPU and processes]"
        data = {"text/plain": text, "text/html": f'<div style="color:#6b7280">{text}</div>'}
        self.send("display_data", {"data": data, "metadata": {},
                                   "transient": {"display_id": self.display_id}})  # fmt: skip
        self._timer = asyncio.get_running_loop().call_later(WIDGET_DELAY, self._make_widget)

    def _make_widget(self) -> None:
        import ipywidgets

        self._timer = None
        self._widget = ipywidgets.HTML(value=html.render_stats(self._live()))
        self.widget_updates = Throttle(WIDGET_PERIOD, self._update_widget, self.clock)
        self.send("update_display_data", {"data": self._widget._repr_mimebundle_(),
                                          "metadata": {},
                                          "transient": {"display_id": self.display_id}})

    def start(self, container: str) -> None:
        """The container (name or ID) runs: follow it on the daemon's stats stream."""
        self.container = self.container or container
        self._task = asyncio.ensure_future(self._follow(container))

    async def _follow(self, ref: str) -> None:
        with contextlib.suppress(SandboxError):  # it may have ended (or gone) already
            async for stats in self.client.stats(ref, stream=True, interval=STATS_INTERVAL):
                if self.recorder.add(stats, self.clock() - self.started) is None:
                    continue
                self.samples += 1
                if self.widget_updates is not None:
                    self.widget_updates()
                if self.panel is not None:
                    self.panel_updates()

    def _live(self) -> Stats:
        return self.recorder.live(self.cell, self.container, self.clock() - self.started)

    def _update_widget(self) -> None:
        if self._widget is not None:
            self._widget.value = html.render_stats(self._live())

    def _push_usage(self) -> None:
        if self.panel is not None:
            self.panel.push(self._live().usage())

    # -- the end -------------------------------------------------------------------------

    def abandon(self) -> None:
        """The cell failed inside the kernel: stop at once, and freeze what there is."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._quiet()
        self._freeze(self.recorder.summary(self.cell, self.container,
                                           self.clock() - self.started))  # fmt: skip

    async def finish(self, *, exited: bool = True, oom_killed: bool = False,
                     pids_limit_hit: bool = False,
                     limits: Limits | None = None) -> Stats:  # fmt: skip
        """Stop sampling, replace the widget by the frozen summary; the summary.

        Args:
            exited: the container has exited (its stream ends by itself: the
                last sample is waited for); False for a ``%%container`` one.
            oom_killed: the cell was killed for memory (the daemon's reason).
            pids_limit_hit: the cell hit its process limit.
            limits: the limits the cell really had, if they changed meanwhile.
        """
        duration = self.clock() - self.started
        await self.stop(wait=exited)
        if limits is not None:
            self.recorder.limits = limits
        stats = self.recorder.summary(self.cell, self.container, duration, oom_killed=oom_killed,
                                      pids_limit_hit=pids_limit_hit)  # fmt: skip
        self._freeze(stats)
        return stats

    def _freeze(self, stats: Stats) -> None:
        """The display becomes the summary (the widget goes); the panel hears the cell ended."""
        if self._show_widget:
            content = {"data": stats_bundle(stats), "metadata": {},
                       "transient": {"display_id": self.display_id}}  # fmt: skip
            self.send("update_display_data", content)
        if self._widget is not None:
            self._widget.close()
            self._widget = None
        if self.panel is not None:
            self.panel.push({"type": "idle", "cell": self.cell})

    async def stop(self, *, wait: bool = False) -> None:
        """Stop the sampler (after the stream's end, up to `STREAM_END_WAIT` s, if ``wait``)."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            if wait:  # let it end cleanly rather than cut the daemon off mid-stream
                await asyncio.wait([task], timeout=STREAM_END_WAIT)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._quiet()

    def _quiet(self) -> None:
        """No more widget or panel updates, and no widget if it is not there yet."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.widget_updates is not None:
            self.widget_updates.cancel()
        self.panel_updates.cancel()
