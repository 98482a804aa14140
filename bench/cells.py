"""Round trip of a notebook cell: the "Bash (sandbox)" kernel against bash_kernel.

Both kernels are real, started by jupyter_client from a kernelspec and driven
over ZeroMQ with a BlockingKernelClient, as a notebook frontend drives them.
One cell's time is from just before the execute_request is sent to when both
its execute_reply (shell channel) and its ``idle`` status (iopub) have
arrived, by time.perf_counter; for the sandbox that includes a fresh
container per cell, and its commit when the cell changed the filesystem.

- cells: ``true``, ``echo hi`` and ``ls /``, N of each per kernel after a few
  warm-up cells, interleaved (every round runs each cell on each kernel once,
  in a new shuffled order) so that a noisy neighbour slows all alike;
- depth: a notebook where every cell writes a file (``echo 17 > /f17``), so
  that on the sandbox each cell adds a layer to the session's image: the
  median of its first and of its last cells shows whether a cell's cost
  grows with the depth of the layer stack (the engine squashes it past
  MAX_DEPTH layers). bash_kernel runs the same cells on the same cell
  numbers, writing into a scratch directory of the bench, never into the
  host's /.
- meter: the sandbox kernel's live usage meter (issue #5): ``true``, ``ls /``
  and a cell of about a second, in rounds that alternate ``%stats off`` and
  ``%stats on`` (each sent as a cell of its own, not timed): the medians with
  and without the meter, and the meter's widget updates (comm_msg on iopub)
  per cell and per second.

The sandbox kernel gets a fresh store (SANDBOX_ROOT) in a temporary
directory, with the base image built there first, and starts that store's
own daemon with its first cell. bash_kernel gets a kernelspec in the same
temporary directory, found through JUPYTER_PATH in this process only. At the
end the kernels are shut down, the daemon is stopped and the directory is
removed, also after an error or Ctrl-C; what is left is printed in red.
Benchmarks print figures; they never assert.

EXAMPLE:
    bench/cells                    # 200 cells of each kind, a 300-cell notebook
    bench/cells --quick            # a smoke run
    bench/cells --only sandbox --depth 0 --json
    bench/cells --only sandbox --cells 0 --depth 0   # the meter only
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import random
import re
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from _common import (
    Leaks,
    Samples,
    cgroup_parents,
    container_cgroups,
    container_processes,
    dist_version,
    finish_cleanup,
    machine,
    median,
    mounts_under,
    p95,
    run_bench,
    start_report,
)
from _sandboxd import logged_traceback, stop_store_daemon
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager
from rich.console import Console
from rich.table import Table
from sandbox_kernel.visuals.meter import WIDGET_DELAY
from sandbox_kernel.visuals.models import MIME_STATS

from sandbox.engine import Engine
from sandbox.engine.core import MAX_DEPTH, SQUASH_TO

SANDBOX, BASH = "sandbox", "bash_kernel"
KERNELS = (SANDBOX, BASH)
SPEC = {SANDBOX: "sandbox", BASH: "bash"}  # kernelspec names
CELLS = ("true", "echo hi", "ls /")
GOAL_MS = 20.0  # the issue: median `true` cell under 20 ms, a fresh container included
GOAL_RATIO = 3.0  # ... and within 3x of bash_kernel's
WINDOW = 20  # cells in the first / last window of the depth notebook
TIMEOUT = 60.0  # seconds a cell may take before the kernel counts as failed (a hang guard)
SLOW_CELL = "head -c 50m /dev/zero | tail -c 40m > /dev/null; sleep 1"  # ~1 s, 40 MB in tail
METER_CELLS = ("true", "ls /", SLOW_CELL)
METER_AIM_PCT = 5.0  # issue #5: the live meter slows a cell by at most 5% ...
METER_AIM_RATE = 10.0  # ... and sends at most 10 updates a second
DEFAULTS = {"cells": 200, "warmup": 5, "depth": 300, "meter_rounds": 60, "meter_slow_rounds": 10}
QUICK = {"cells": 20, "warmup": 2, "depth": 60, "meter_rounds": 20, "meter_slow_rounds": 4}


class CellFailed(Exception):
    """A cell did not end with an ``ok`` reply, or printed something unexpected."""


@dataclass
class MeterCell:
    """One cell of the meter section: its times without and with the meter, and its updates."""

    off: list[float] = field(default_factory=list)  # ms, `%stats off`
    on: list[float] = field(default_factory=list)  # ms, `%stats on`
    updates: list[int] = field(default_factory=list)  # widget updates of each metered cell
    per_second: list[float] = field(default_factory=list)  # updates / the cell's time in s
    in_1s: list[int] = field(default_factory=list)  # most updates in any 1 s (kernel's clock)
    widgets: int = 0  # metered cells whose display became the live widget

    @property
    def overhead_pct(self) -> float:
        return (median(self.on) / median(self.off) - 1) * 100


def _meter_messages(code: str, on: bool, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The meter's part of a cell's iopub messages: widget updates and their send times.

    Raises:
        CellFailed: the meter is off and the cell still shows something, or it
            is on and the cell does not end with the frozen summary (stats+json).
    """
    kinds = ("display_data", "update_display_data", "comm_open", "comm_msg", "comm_close")
    shown = [m for m in messages if m["msg_type"] in kinds]
    if not on:
        if shown:
            kinds = ", ".join(sorted({m["msg_type"] for m in shown}))
            raise CellFailed(f"{code!r} with %stats off sent {kinds}")
        return {"updates": 0, "times": [], "widget": False}
    ends = [m for m in shown if m["msg_type"] == "update_display_data"]
    if not ends or MIME_STATS not in ends[-1]["content"]["data"]:
        raise CellFailed(f"{code!r} with %stats on: no frozen summary ({MIME_STATS}) at its end")
    updates = [m for m in shown if m["msg_type"] == "comm_msg"
               and m["content"]["data"].get("method") == "update"
               and "state" in m["content"]["data"]]  # fmt: skip
    opened = [m for m in shown if m["msg_type"] == "comm_open"]
    widget = any(m["content"].get("target_name") == "jupyter.widget" for m in opened)
    return {"updates": len(updates), "times": [_stamp(m) for m in updates], "widget": widget}


def _stamp(msg: dict[str, Any]) -> float:
    """When the kernel sent ``msg`` (its header's date), in seconds."""
    date = msg["header"]["date"]
    return (date if isinstance(date, datetime) else datetime.fromisoformat(date)).timestamp()


def _most_in(times: list[float], span: float) -> int:
    """The most of ``times`` that fall in any window ``span`` seconds long."""
    times, most, lo = sorted(times), 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= span:
            lo += 1
        most = max(most, hi - lo + 1)
    return most


class Kernel:
    """One kernel, started from its kernelspec, and a blocking client on it."""

    def __init__(self, name: str, env: dict[str, str], cwd: Path) -> None:
        self.name = name
        self.km = KernelManager(kernel_name=SPEC[name])
        self.km.shutdown_wait_time = 60.0  # the sandbox removes its session's images
        self.km.start_kernel(env=env, cwd=str(cwd))
        self.kc: BlockingKernelClient = self.km.client()
        self.kc.start_channels()
        try:
            self.kc.wait_for_ready(timeout=TIMEOUT)
        except BaseException:
            self.close()
            raise
        self.failed = ""  # why it no longer runs cells

    def run(self, code: str, expect: str | None = None,
            messages: list[dict[str, Any]] | None = None) -> tuple[float, str]:  # fmt: skip
        """Milliseconds from sending ``code`` to having its reply and idle status; its stdout.

        The cell's iopub messages are appended to ``messages``, if given.

        Raises:
            CellFailed: not an ``ok`` reply, no answer in TIMEOUT s, or a stdout
                other than ``expect`` (when given).
        """
        t0 = time.perf_counter()
        msg_id = self.kc.execute(code, allow_stdin=False)
        out: list[str] = []
        deadline = t0 + TIMEOUT
        while True:  # iopub up to the idle status
            try:
                msg = self.kc.get_iopub_msg(timeout=max(deadline - time.perf_counter(), 0.01))
            except queue.Empty:
                raise CellFailed(f"{code!r}: no idle status in {TIMEOUT:g} s") from None
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if messages is not None:
                messages.append(msg)
            kind, content = msg["msg_type"], msg["content"]
            if kind == "status" and content["execution_state"] == "idle":
                break
            if kind == "stream" and content["name"] == "stdout":
                out.append(content["text"])
        while True:  # and the reply (ipykernel sends it before the idle status)
            try:
                reply = self.kc.get_shell_msg(timeout=max(deadline - time.perf_counter(), 0.01))
            except queue.Empty:
                raise CellFailed(f"{code!r}: no execute_reply in {TIMEOUT:g} s") from None
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        ms = (time.perf_counter() - t0) * 1e3
        content = reply["content"]
        if content["status"] != "ok":
            why = content.get("traceback") or [content.get("evalue", "")]
            raise CellFailed(f"{code!r}: {content['status']}: {content.get('ename')}: "
                             f"{' '.join(why)[:300]}")  # fmt: skip
        text = "".join(out).replace("\r\n", "\n")  # bash_kernel reads a terminal
        if expect is not None and text.strip() != expect.strip():
            raise CellFailed(f"{code!r} printed {text[:200]!r}, not {expect!r}")
        return ms, text

    def close(self) -> None:
        """Shut the kernel down (a shutdown_request: the sandbox's removes its images)."""
        with contextlib.suppress(Exception):
            self.kc.stop_channels()
        try:
            self.km.shutdown_kernel(now=False)
        except Exception:
            with contextlib.suppress(Exception):
                self.km.shutdown_kernel(now=True)


class Bench:
    """One run: set-up, the cells, the depth notebook, report, cleanup."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args, self.tmp = args, tmp
        self.root = tmp / "store"
        self.scratch = tmp / "bash-files"  # where bash_kernel's depth cells write
        self.err = Console(stderr=True, highlight=False)
        self.kernels: dict[str, Kernel] = {}
        self.skipped: dict[str, str] = {}  # kernel -> why it was not measured
        self.samples: dict[tuple[str, str], Samples] = {}  # (kernel, cell) -> samples
        self.depth: dict[str, list[float]] = {}  # kernel -> ms of every depth cell, in order
        self.stack: dict[str, str] = {}  # "before" / "after": %layers' first line
        self.meter: dict[str, MeterCell] = {}  # cell -> its times without and with the meter
        self.versions: dict[str, str] = {}
        self.parents_before = cgroup_parents()
        # What the run could leave behind (a container's last process and
        # cgroup may take a moment to go once its daemon has stopped).
        self.leaks = Leaks({"cgroups": container_cgroups,
                            "container processes": container_processes,
                            "mounts": lambda: set(mounts_under(tmp))})  # fmt: skip
        self.load: list[float] = []
        self.left: list[str] = []
        self.base_layers = 1

    @property
    def wanted(self) -> list[str]:
        return [k for k in KERNELS if not self.args.only or k == self.args.only]

    # -- set-up ------------------------------------------------------------------------

    def setup(self) -> None:
        env = {**os.environ, "SANDBOX_ROOT": str(self.root)}
        env.pop("SANDBOX_HOST", None)  # the kernel must start (and use) the store's own daemon
        self.scratch.mkdir()
        if SANDBOX in self.wanted:
            self.err.print(f"building the base image in {self.root} ...")
            # Built here: the daemon the kernel starts finds it ready.
            self.base_layers = len(Engine(self.root).ensure_base().layers)
        if BASH in self.wanted:
            spec = self.tmp / "jupyter" / "kernels" / SPEC[BASH]
            spec.mkdir(parents=True)
            (spec / "kernel.json").write_text(json.dumps({
                "argv": [sys.executable, "-m", "bash_kernel", "-f", "{connection_file}"],
                "display_name": "Bash", "language": "bash",
            }))  # fmt: skip
            # This process's JUPYTER_PATH only (the kernels inherit it, harmlessly);
            # nothing is installed into the virtualenv.
            paths = [str(self.tmp / "jupyter"), os.environ.get("JUPYTER_PATH", "")]
            os.environ["JUPYTER_PATH"] = os.pathsep.join(p for p in paths if p)
        for name in self.wanted:
            dist = "jupyter-sandbox" if name == SANDBOX else "bash_kernel"
            self.versions[name] = f"{dist} {dist_version(dist)}"
            self.err.print(f"starting the {name} kernel ...")
            try:
                self.kernels[name] = Kernel(name, env, self.scratch)
            except Exception as exc:
                self.skipped[name] = f"did not start: {exc}"

    # -- measuring ---------------------------------------------------------------------

    def live(self) -> list[Kernel]:
        return [k for k in self.kernels.values() if not k.failed]

    def once(self, kernel: Kernel, code: str, expect: str | None = None,
             messages: list[dict[str, Any]] | None = None) -> float | None:  # fmt: skip
        try:
            return kernel.run(code, expect, messages)[0]
        except CellFailed as exc:
            kernel.failed = str(exc)
            self.err.print(f"[yellow]{kernel.name}: {exc}[/]")
            return None

    def measure_cells(self) -> None:
        n, warmup = self.args.cells, self.args.warmup
        if n <= 0:
            return
        for name in self.kernels:
            for cell in CELLS:
                self.samples[(name, cell)] = Samples(f"{name}: {cell}")
        expect = {"true": "", "echo hi": "hi\n", "ls /": None}
        total = n + warmup
        self.err.print(f"cells: {n} of each (+{warmup} warm-up) on "
                       f"{', '.join(k.name for k in self.live())}, interleaved")  # fmt: skip
        rng = random.Random(self.args.seed)
        step = max(1, total // 10)
        for i in range(total):
            jobs = [(k, c) for k in self.live() for c in CELLS]
            rng.shuffle(jobs)
            for kernel, cell in jobs:
                if kernel.failed:
                    continue
                ms = self.once(kernel, cell, expect[cell])
                if ms is not None and i >= warmup:
                    self.samples[(kernel.name, cell)].ms.append(ms)
            if (i + 1) % step == 0:
                self.err.print(f"  round {i + 1}/{total}")

    def measure_depth(self) -> None:
        n = self.args.depth
        if n <= 0 or not self.live():
            return
        sandbox = self.kernels.get(SANDBOX)
        if sandbox and not sandbox.failed:
            self.stack["before"] = self.layers(sandbox)
        self.err.print(f"depth: a {n}-cell notebook, every cell writes a file, on "
                       f"{', '.join(k.name for k in self.live())}, interleaved")  # fmt: skip
        for kernel in self.live():
            self.depth[kernel.name] = []
        rng = random.Random(self.args.seed + 1)
        step = max(1, n // 10)
        for i in range(1, n + 1):
            kernels = self.live()
            rng.shuffle(kernels)
            for kernel in kernels:
                where = "" if kernel.name == SANDBOX else str(self.scratch)
                ms = self.once(kernel, f"echo {i} > {where}/f{i}", "")
                if ms is not None:
                    self.depth[kernel.name].append(ms)
            if i % step == 0:
                self.err.print(f"  cell {i}/{n}")
        if sandbox and not sandbox.failed:
            self.stack["after"] = self.layers(sandbox)

    def measure_meter(self) -> None:
        """The same cells without and with the live meter, in rounds that alternate the two.

        Each round runs its cells (in a new shuffled order, the same for both
        halves) once with ``%stats off``, then once with ``%stats on``; the
        two magics are cells of their own, not timed. The slow cell runs in
        ``meter_slow_rounds`` rounds spread over the ``meter_rounds``. A first
        round, not counted, warms both up.
        """
        kernel = self.kernels.get(SANDBOX)
        short, slow = max(self.args.meter_rounds, 0), max(self.args.meter_slow_rounds, 0)
        total = max(short, slow)
        if not self.args.meter or kernel is None or kernel.failed or total == 0:
            return
        slow_rounds = {k * total // slow for k in range(slow)} if slow else set()
        self.meter = {c: MeterCell() for c in METER_CELLS if c != SLOW_CELL or slow}
        expect = {"true": "", "ls /": None, SLOW_CELL: ""}
        self.err.print(f"meter: {short} rounds of `true` and `ls /`, {slow} of the ~1 s cell, "
                       f"each with %stats off, then on (+1 warm-up round)")  # fmt: skip
        rng = random.Random(self.args.seed + 2)
        step = max(1, total // 10)
        for i in range(-1, total):  # -1: the warm-up round
            cells = [c for c in self.meter if i < 0 or (c == SLOW_CELL and i in slow_rounds)
                     or (c != SLOW_CELL and i < short)]  # fmt: skip
            rng.shuffle(cells)
            for on in (False, True):
                if not self.toggle(kernel, on):
                    return
                for cell in cells:
                    messages: list[dict[str, Any]] = []
                    ms = self.once(kernel, cell, expect[cell], messages)
                    if ms is None:
                        return
                    try:
                        seen = _meter_messages(cell, on, messages)
                    except CellFailed as exc:
                        kernel.failed = str(exc)
                        self.err.print(f"[yellow]{kernel.name}: {exc}[/]")
                        return
                    if i < 0:
                        continue
                    m = self.meter[cell]
                    if not on:
                        m.off.append(ms)
                        continue
                    m.on.append(ms)
                    m.updates.append(seen["updates"])
                    m.per_second.append(seen["updates"] / (ms / 1e3))
                    m.in_1s.append(_most_in(seen["times"], 1.0))
                    m.widgets += seen["widget"]
            if (i + 1) % step == 0 and i >= 0:
                self.err.print(f"  round {i + 1}/{total}")
        self.toggle(kernel, False)  # the depth notebook runs without it

    def toggle(self, kernel: Kernel, on: bool) -> bool:
        """``%stats on`` / ``%stats off``, as a cell of its own (not timed); False if it failed."""
        state = "on" if on else "off"
        try:
            text = kernel.run(f"%stats {state}")[1]
        except CellFailed as exc:
            kernel.failed = str(exc)
        else:
            if text.startswith(f"%stats {state}:"):
                return True
            kernel.failed = f"%stats {state} printed {text[:200]!r}"
        self.err.print(f"[yellow]{kernel.name}: {kernel.failed}[/]")
        return False

    def layers(self, kernel: Kernel) -> str:
        """The first line of ``%layers``: how deep the session's stack is (not timed).

        ``%layers 1``, not ``%layers``: a plain ``%layers`` display stays live,
        and the kernel would redraw it (daemon requests and ``dot``) after
        every later cell that adds a layer, which the depth notebook would
        measure. With a cell number it is not live; its first line (the
        whole stack) is the same. It is a display: its text/plain is read.
        """
        messages: list[dict[str, Any]] = []
        try:
            text = kernel.run("%layers 1", messages=messages)[1]
        except CellFailed as exc:
            return f"%layers failed: {exc}"
        for msg in messages:
            if msg["msg_type"] == "display_data":
                text += msg["content"]["data"].get("text/plain", "")
        return text.strip().splitlines()[0] if text.strip() else "%layers printed nothing"

    def measure(self) -> None:
        self.load.append(os.getloadavg()[0])
        self.measure_cells()
        self.measure_meter()
        self.measure_depth()
        self.load.append(os.getloadavg()[0])

    # -- reporting ---------------------------------------------------------------------

    def cell(self, name: str, cell: str) -> Samples | None:
        s = self.samples.get((name, cell))
        return s if s is not None and s.ms else None

    def depth_figures(self, name: str) -> dict[str, Any] | None:
        ms = self.depth.get(name) or []
        if len(ms) < 2:
            return None
        w = min(WINDOW, len(ms) // 2)
        first, last = median(ms[:w]), median(ms[-w:])
        slowest = sorted(range(len(ms)), key=lambda i: ms[i], reverse=True)[:3]
        figures = {"n": len(ms), "window": w, "first_median_ms": round(first, 3),
                   "last_median_ms": round(last, 3), "last_over_first": round(last / first, 2),
                   "median_ms": round(median(ms), 3), "p95_ms": round(p95(ms), 3),
                   "slowest": [{"cell": i + 1, "ms": round(ms[i], 3)}
                               for i in slowest]}  # fmt: skip
        if name == SANDBOX:
            figures.update(self.stack_figures(ms, w))
        return figures

    def stack_figures(self, ms: list[float], w: int) -> dict[str, Any]:
        """Where the sandbox's cells stood in the layer stack, if every cell added a layer.

        The layers below cell i are those before the notebook (`%layers`, else
        the base image's) plus one per earlier cell, squashed into SQUASH_TO by
        the commit that takes them past MAX_DEPTH (`%layers` after the notebook
        shows whether that held).
        """
        found = re.search(r": (\d+) read-only layer", self.stack.get("before", ""))
        depth, below, squashed = int(found[1]) if found else self.base_layers, [], []
        for i in range(len(ms)):
            below.append(depth)
            depth += 1
            if depth > MAX_DEPTH:
                depth = SQUASH_TO
                squashed.append(i)
        n = len(ms)
        figures: dict[str, Any] = {
            "layers_below_first": [min(below[:w]), max(below[:w])],
            "layers_below_last": [min(below[n - w :]), max(below[n - w :])],
            "squashed_by_cells": [{"cell": i + 1, "ms": round(ms[i], 3)} for i in squashed],
        }
        if squashed and squashed[0] >= 2 * w:
            # The deepest cells: those just before the first squash (the
            # squashing cell itself runs deepest, but pays for the squash too).
            end = squashed[0]
            figures["deepest_cells"] = [end - w + 1, end]
            figures["deepest_median_ms"] = round(median(ms[end - w : end]), 3)
            figures["layers_below_deepest"] = [min(below[end - w : end]), max(below[end - w : end])]
        return figures

    def results(self) -> dict[str, Any]:
        cells = []
        for cell in CELLS:
            item: dict[str, Any] = {"cell": cell}
            for name in self.kernels:
                s = self.cell(name, cell)
                if s:
                    item[name] = {"n": len(s.ms), "median_ms": round(s.median, 3),
                                  "p95_ms": round(s.p95, 3)}  # fmt: skip
            ours, theirs = self.cell(SANDBOX, cell), self.cell(BASH, cell)
            if ours and theirs:
                item["sandbox_over_bash_kernel"] = round(ours.median / theirs.median, 2)
            cells.append(item)
        depth = {name: f for name in self.depth if (f := self.depth_figures(name))}
        return {"machine": machine(), "load_average_1min": self.load,
                "cells_per_kind": self.args.cells, "warmup": self.args.warmup,
                "depth_cells": self.args.depth, "versions": self.versions,
                "goal": f"median `true` cell under {GOAL_MS:g} ms (a fresh container included) "
                        f"and within {GOAL_RATIO:g}x of bash_kernel",
                "cells": cells if self.args.cells > 0 else [], "depth": depth,
                "layer_stack": self.stack, "max_depth": MAX_DEPTH, "squash_to": SQUASH_TO,
                "meter": self.meter_figures(),
                "failed": {k.name: k.failed for k in self.kernels.values() if k.failed},
                "skipped": self.skipped}  # fmt: skip

    def meter_figures(self) -> dict[str, Any]:
        """The meter section's figures, and the two aims of issue #5 (empty if not run)."""
        rows = []
        for cell, m in self.meter.items():
            if not (m.off and m.on):
                continue
            rows.append({"cell": cell, "n_off": len(m.off), "n_on": len(m.on),
                         "off_median_ms": round(median(m.off), 3),
                         "off_p95_ms": round(p95(m.off), 3),
                         "on_median_ms": round(median(m.on), 3), "on_p95_ms": round(p95(m.on), 3),
                         "overhead_pct": round(m.overhead_pct, 2), "widgets": m.widgets,
                         "updates_median": median(m.updates), "updates_max": max(m.updates),
                         "updates_per_second_max": round(max(m.per_second), 2),
                         "updates_in_1s_max": max(m.in_1s)})  # fmt: skip
        if not rows:
            return {}
        worst = max(rows, key=lambda r: r["overhead_pct"])
        fastest = max(rows, key=lambda r: r["updates_per_second_max"])
        in_1s = max(r["updates_in_1s_max"] for r in rows)
        return {"rounds": self.args.meter_rounds, "slow_rounds": self.args.meter_slow_rounds,
                "slow_cell": SLOW_CELL, "cells": rows,
                "overhead_pct_max": worst["overhead_pct"], "overhead_worst_cell": worst["cell"],
                "overhead_met": worst["overhead_pct"] <= METER_AIM_PCT,
                "updates_per_second_max": fastest["updates_per_second_max"],
                "updates_per_second_cell": fastest["cell"], "updates_in_1s_max": in_1s,
                "updates_met": fastest["updates_per_second_max"] <= METER_AIM_RATE
                               and in_1s <= METER_AIM_RATE,
                "aims": f"the meter slows a cell by at most {METER_AIM_PCT:g}% and sends "
                        f"at most {METER_AIM_RATE:g} updates a second"}  # fmt: skip

    def report(self) -> None:
        data = self.results()
        if (out := start_report(data, self.args, min_width=120)) is None:
            return
        names = list(self.kernels)
        if data["cells"]:
            table = Table(title=f"execute_request round trip, median / p95 in ms "
                                f"({self.args.cells} cells of each, {self.args.warmup} "
                                f"warm-up cells excluded)")  # fmt: skip
            table.add_column("cell", justify="left", no_wrap=True)
            for name in names:
                table.add_column(name, justify="right")
            table.add_column("sandbox ÷ bash_kernel", justify="right")
            for row in data["cells"]:
                values = []
                for name in names:
                    s = self.cell(name, row["cell"])
                    values.append(f"{s.median:.2f} / {s.p95:.2f}" if s else "-")
                ratio = row.get("sandbox_over_bash_kernel")
                table.add_row(f"`{row['cell']}`", *values, f"{ratio:.1f}x" if ratio else "-")
            out.print(table)
        if data["meter"]:
            self.report_meter(out, data["meter"])
        if data["depth"]:
            self.report_depth(out, data["depth"])
        for name, why in data["skipped"].items():
            out.print(f"[yellow]skipped[/] {name}: {why}")
        for name, why in data["failed"].items():
            out.print(f"[yellow]stopped measuring[/] {name}: {why}")
        for name, v in self.versions.items():
            out.print(f"{name}: {v}")
        ours, theirs = self.cell(SANDBOX, "true"), self.cell(BASH, "true")
        if ours:
            verdict = "[green]met[/]" if ours.median < GOAL_MS else "[red]not met[/]"
            out.print(f"goal: median `true` cell under {GOAL_MS:g} ms, a fresh container "
                      f"included: {ours.median:.1f} ms {verdict}")  # fmt: skip
        if ours and theirs:
            ratio = ours.median / theirs.median
            verdict = "[green]met[/]" if ratio <= GOAL_RATIO else "[red]not met[/]"
            out.print(f"goal: within {GOAL_RATIO:g}x of bash_kernel ({theirs.median:.1f} ms): "
                      f"{ratio:.1f}x {verdict}")  # fmt: skip
        meter = data["meter"]
        if meter:
            verdict = "[green]met[/]" if meter["overhead_met"] else "[red]not met[/]"
            worst = _short(meter["overhead_worst_cell"])
            out.print(f"aim (issue #5): meter overhead ≤ {METER_AIM_PCT:g}%: worst "
                      f"{meter['overhead_pct_max']:+.1f}% ({worst}) {verdict}")  # fmt: skip
            verdict = "[green]met[/]" if meter["updates_met"] else "[red]not met[/]"
            out.print(f"aim (issue #5): ≤ {METER_AIM_RATE:g} updates a second: at most "
                      f"{meter['updates_per_second_max']:.1f} a second of cell time "
                      f"({_short(meter['updates_per_second_cell'])}), at most "
                      f"{meter['updates_in_1s_max']} in any 1 s {verdict}")  # fmt: skip
        f = data["depth"].get(SANDBOX)
        if f:
            out.print(f"depth: the last {f['window']} cells take {f['last_over_first']:.2f}x "
                      f"the first {f['window']} (a cell's cost should not grow with the "
                      f"stack)")  # fmt: skip

    def report_meter(self, out: Console, meter: dict[str, Any]) -> None:
        table = Table(title=f"the sandbox's live meter off and on (`%stats off|on`), ms per "
                            f"cell; {meter['rounds']} alternating rounds, "
                            f"{meter['slow_rounds']} with the ~1 s cell")  # fmt: skip
        cols = ["cell", "meter off\nmedian / p95", "meter on\nmedian / p95",
                "over-\nhead", "widget\nshown", "updates a\ncell, med / max",
                "updates a s of\ncell time, max", "most in\nany 1 s"]  # fmt: skip
        for i, col in enumerate(cols):
            table.add_column(col, justify="right" if i else "left", no_wrap=True)
        for r in meter["cells"]:
            table.add_row(_short(r["cell"]),
                          f"{r['off_median_ms']:.2f} / {r['off_p95_ms']:.2f}",
                          f"{r['on_median_ms']:.2f} / {r['on_p95_ms']:.2f}",
                          f"{r['overhead_pct']:+.1f}%", f"{r['widgets']}/{r['n_on']}",
                          f"{r['updates_median']:g} / {r['updates_max']}",
                          f"{r['updates_per_second_max']:.1f}",
                          str(r["updates_in_1s_max"]))  # fmt: skip
        out.print(table)
        out.print(f"the ~1 s cell: `{SLOW_CELL}`")
        out.print(f"updates: the widget's comm_msg updates on iopub (a cell's display becomes "
                  f"the widget once it has run {WIDGET_DELAY:g} s)")  # fmt: skip

    def report_depth(self, out: Console, depth: dict[str, Any]) -> None:
        table = Table(title=f"a {self.args.depth}-cell notebook where every cell writes a file "
                            f"(`echo N > /fN`), ms per cell")  # fmt: skip
        table.add_column("kernel", justify="left", no_wrap=True)
        any_deepest = any("deepest_median_ms" in f for f in depth.values())
        cols = ["cells", "first cells, median"]
        cols += ["deepest cells, median"] if any_deepest else []
        cols += ["last cells, median", "last ÷ first", "all, median / p95", "slowest cells"]
        for col in cols:
            table.add_column(col, justify="right")
        for name, f in depth.items():
            w, n = f["window"], f["n"]
            row = [name, str(n), f"{f['first_median_ms']:.2f} (1-{w})"]
            if any_deepest:
                a, b = f.get("deepest_cells", (0, 0))
                row.append(f"{f['deepest_median_ms']:.2f} ({a}-{b})" if a else "-")
            row += [f"{f['last_median_ms']:.2f} ({n - w + 1}-{n})", f"{f['last_over_first']:.2f}x",
                    f"{f['median_ms']:.2f} / {f['p95_ms']:.2f}",
                    ", ".join(f"#{s['cell']} {s['ms']:.0f}" for s in f["slowest"])]  # fmt: skip
            table.add_row(*row)
        out.print(table)
        f = depth.get(SANDBOX)
        if f:
            where = [f"first {_span(f['layers_below_first'])}"]
            if "layers_below_deepest" in f:
                where.append(f"deepest {_span(f['layers_below_deepest'])}")
            where.append(f"last {_span(f['layers_below_last'])}")
            out.print(f"sandbox: layers below the cells: {', '.join(where)}; the engine "
                      f"squashes the stack past {MAX_DEPTH} layers into {SQUASH_TO}")  # fmt: skip
            if f["squashed_by_cells"]:
                cells = [f"cell {s['cell']} ({s['ms']:.0f} ms)" for s in f["squashed_by_cells"]]
                out.print(f"sandbox: the commits that squashed: {', '.join(cells)}")
        for when, line in self.stack.items():
            out.print(f"sandbox's stack {when} the notebook (%layers): {line}")

    # -- cleanup -----------------------------------------------------------------------

    def cleanup(self) -> None:
        """Shut the kernels down, stop the daemon, remove the directory; print what is left."""
        for kernel in self.kernels.values():
            try:
                kernel.close()
            except Exception as exc:
                self.err.print(f"[yellow]shutdown of {kernel.name}: {exc}[/]")
            if kernel.km.has_kernel and kernel.km.is_alive():
                self.left.append(f"the {kernel.name} kernel process")
        try:
            self.left += stop_store_daemon(self.root)
        except Exception as exc:
            self.left.append(f"the daemon: {exc}")
        if tail := logged_traceback(self.root / "sandboxd.log"):
            self.err.print(f"[yellow]the daemon logged a traceback:[/]\n{tail}")
        containers = self.root / "containers"
        if containers.is_dir() and any(containers.iterdir()):
            # The kernel removes its cells' containers: any left is a leak. The
            # daemon has stopped; reconcile unmounts them and removes their cgroups.
            names = sorted(p.name for p in containers.iterdir())
            self.left.append(f"containers in the store: {', '.join(names)} (reconciled)")
            try:
                Engine(self.root, reconcile_now=False).reconcile()
            except Exception as exc:
                self.left.append(f"reconcile: {exc}")
        clean = "cleaned up: no kernel, daemon, container, mount or cgroup left"
        finish_cleanup(self.tmp, self.parents_before, self.leaks, self.left, self.err, clean)


def _short(cell: str) -> str:
    return "~1 s cell" if cell == SLOW_CELL else f"`{cell}`"


def _span(pair: list[int]) -> str:
    return f"{pair[0]}-{pair[1]}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/cells", description=__doc__.split("\n")[0])
    p.add_argument("--cells", type=int, metavar="N",
                   help="measured cells of each kind per kernel (default 200; --quick: "
                        f"{QUICK['cells']})")  # fmt: skip
    p.add_argument("--warmup", type=int, metavar="N",
                   help="rounds of cells before measuring, not counted (default 5; --quick: "
                        f"{QUICK['warmup']})")  # fmt: skip
    p.add_argument("--depth", type=int, metavar="N",
                   help="cells of the notebook where each cell writes a file; 0 skips it "
                        f"(default 300; --quick: {QUICK['depth']})")  # fmt: skip
    p.add_argument("--meter", action=argparse.BooleanOptionalAction, default=True,
                   help="the sandbox with its live meter off and on (default: on; "
                        "--no-meter skips it)")  # fmt: skip
    p.add_argument("--meter-rounds", type=int, metavar="N",
                   help="rounds of `true` and `ls /` in the meter section (default "
                        f"{DEFAULTS['meter_rounds']}; --quick: "
                        f"{QUICK['meter_rounds']})")  # fmt: skip
    p.add_argument("--meter-slow-rounds", type=int, metavar="N",
                   help="rounds of the ~1 s cell in the meter section (default "
                        f"{DEFAULTS['meter_slow_rounds']}; --quick: "
                        f"{QUICK['meter_slow_rounds']})")  # fmt: skip
    p.add_argument("--quick", action="store_true",
                   help="smaller numbers, for a smoke run (explicit options win)")  # fmt: skip
    p.add_argument("--only", choices=KERNELS, help="measure one kernel only")
    p.add_argument("--seed", type=int, default=1, help="seed of the per-round shuffle")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead")
    args = p.parse_args(argv)
    defaults = QUICK if args.quick else DEFAULTS
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> int:
    return run_bench(
        Bench,
        parse_args(argv),
        needs_root="bench/cells needs root: the sandbox kernel's daemon runs containers",
        prefix="sandbox-bench-cells-",
    )


if __name__ == "__main__":
    sys.exit(main())
