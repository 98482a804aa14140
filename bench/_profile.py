"""Where the engine's API path spends its time, parent and container child.

``bench/startup --profile`` runs the API path (create + start + await exit +
remove of `true`) plainly, then again with timing wrappers around the
engine's steps, and prints the median of every step.

How the child is timed: the wrappers are installed before clone(2), so the
container's first process inherits them. It records CLOCK_MONOTONIC stamps
(``perf_counter_ns``, the same clock in every process) in its own copy of a
list, and the wrapper around ``os.execve`` writes that list to the
container's stderr pipe just before the exec; the parent reads it there. So
child and parent stamps are on one time line. Every wrapper costs a few
microseconds, which is why the plain run is shown first.

This patches the engine's modules in this process only; nothing is written
to ``sandbox/``.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

from _common import median
from rich.console import Console
from rich.table import Table

from sandbox.engine import core, running
from sandbox.runtime import capabilities, network, rootfs
from sandbox.runtime import spawn as sp
from sandbox.runtime import syscalls as sc
from sandbox.runtime.cgroups import v1, v2

Event = tuple[str, int, int]
PARENT: list[Event] = []  # this iteration, in the engine process
CHILD: list[Event] = []  # filled in the container's first process only
MARK = b"@@profile "

ROOTFS_STEPS = ("make_mounts_private", "mount_overlay", "mount_proc", "mount_dev", "mount_sys",
                "mask_paths", "readonly_paths", "bind_files", "pivot_into")  # fmt: skip


def _timed(label: str, fn: Callable[..., Any], sink: list[Event]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter_ns()
        try:
            return fn(*args, **kwargs)
        finally:
            sink.append((label, t0, time.perf_counter_ns()))

    return wrapper


class Patches:
    """Timing wrappers, installed and removed as one."""

    def __init__(self) -> None:
        self.saved: list[tuple[Any, str, Any]] = []

    def set(self, obj: Any, attr: str, value: Any) -> None:
        # None: the attribute came from the class, so undo deletes the override.
        self.saved.append((obj, attr, vars(obj).get(attr)))
        setattr(obj, attr, value)

    def time(self, obj: Any, attr: str, label: str, sink: list[Event]) -> None:
        if hasattr(obj, attr):  # the engine changes; a missing step is just not shown
            self.set(obj, attr, _timed(label, getattr(obj, attr), sink))

    def undo(self) -> None:
        for obj, attr, value in reversed(self.saved):
            if value is None:
                delattr(obj, attr)
            else:
                setattr(obj, attr, value)
        self.saved.clear()


def install(engine: Any) -> Patches:
    p = Patches()
    # The parent's steps.
    p.time(engine, "create", "create", PARENT)
    p.time(engine, "image", "create > resolve image", PARENT)
    p.time(engine.store.containers, "create", "create > write container dir", PARENT)
    p.time(engine, "start", "start", PARENT)
    p.time(engine.store.containers, "find", "start > find record", PARENT)
    p.time(engine.driver, "create", "start > cgroup create", PARENT)
    p.time(core, "_write_etc_files", "start > write hostname, hosts", PARENT)
    p.time(core, "spawn", "start > spawn", PARENT)
    p.time(sp, "_wait_exec", "spawn > wait for the child's exec", PARENT)
    p.time(engine.store.containers, "save", "start > save state.json", PARENT)
    p.time(core.reconcile, "process_start", "start > read /proc/PID/stat", PARENT)
    p.time(engine, "_exited", "exit > bookkeeping", PARENT)
    for cls in (v1.CgroupV1, v2.CgroupV2):
        p.time(cls, "stats", "exit > cgroup stats", PARENT)
        p.time(cls, "remove", "exit > cgroup rmdir", PARENT)
    p.time(engine, "_finish", "exit > delete container dir", PARENT)
    p.time(running.Running, "__init__", "start > Running (log, readers)", PARENT)
    p.time(running.Running, "_reap", "exit > reap", PARENT)

    real_clone = sc.clone

    def clone(flags: int) -> int:
        t0 = time.perf_counter_ns()
        pid = real_clone(flags)
        t1 = time.perf_counter_ns()
        if pid == 0:
            CHILD.clear()
            CHILD.append(("child runs", t1, t1))
        else:
            PARENT.append(("spawn > clone(2) in the parent", t0, t1))
        return pid

    p.set(sc, "clone", clone)
    # The child's steps (these functions run only in the container's first process).
    for step in ROOTFS_STEPS:
        p.time(rootfs, step, f"rootfs > {step}", CHILD)
    p.time(rootfs, "enter_workdir", "enter_workdir", CHILD)
    p.time(sp, "_check_command", "check command", CHILD)
    p.time(capabilities, "limit_to", "drop capabilities", CHILD)
    p.time(network, "loopback_up", "loopback up", CHILD)
    p.time(sc, "unshare", "unshare(cgroup ns)", CHILD)
    p.time(sc, "sethostname", "sethostname", CHILD)
    p.time(sc, "close_range_cloexec", "close_range", CHILD)
    p.time(os, "setsid", "setsid", CHILD)
    real_prctl = sc.prctl

    def prctl(option: int, *args: int) -> int:
        t0 = time.perf_counter_ns()
        try:
            return real_prctl(option, *args)
        finally:
            label = "prctl(PDEATHSIG)" if option == sc.PR_SET_PDEATHSIG else "prctl(NO_NEW_PRIVS)"
            CHILD.append((label, t0, time.perf_counter_ns()))

    p.set(sc, "prctl", prctl)
    real_execve = os.execve

    def execve(path: Any, argv: Any, env: Any) -> None:
        t = time.perf_counter_ns()
        CHILD.append(("execve", t, t))
        os.write(2, b"".join(MARK + f"{n}\t{a}\t{b}\n".encode() for n, a, b in CHILD))
        real_execve(path, argv, env)

    p.set(os, "execve", execve)
    return p


def _child_events(stderr: bytes) -> list[Event]:
    events = []
    for line in stderr.splitlines():
        if line.startswith(MARK):
            name, a, b = line[len(MARK) :].decode().split("\t")
            events.append((name, int(a), int(b)))
    return events


# Derived spans: (name, (event, "start" or "end"), (event, "start" or "end")).
GAPS = (
    ("wait: tini + true run, exit, loop wakes", ("start", "end"), ("exit > reap", "start")),
    ("after bookkeeping -> await returns", ("exit > bookkeeping", "end"), ("TOTAL", "end")),
    ("child: TOTAL clone -> execve", ("child runs", "start"), ("execve", "start")),
    ("child: clone(2) -> child runs", ("spawn > clone(2) in the parent", "start"),
     ("child runs", "start")),
    ("child: dup2 stdio + join cgroup (inline)", ("setsid", "end"),
     ("unshare(cgroup ns)", "start")),
    ("child: execve -> parent sees EOF", ("execve", "start"),
     ("spawn > wait for the child's exec", "end")),
)  # fmt: skip


def breakdown(t0: int, t_end: int, parent: list[Event], child: list[Event]) -> dict[str, float]:
    """One iteration as named durations in microseconds.

    A step that ran more than once (reading /proc/PID/stat) is summed; the
    derived spans use each event's first occurrence.
    """
    first: dict[str, tuple[int, int]] = {"TOTAL": (t0, t_end)}
    out: dict[str, float] = {"TOTAL create -> exited": (t_end - t0) / 1e3}
    for name, a, b in parent + child:
        first.setdefault(name, (a, b))
        if name not in ("child runs", "execve"):
            out[name] = out.get(name, 0.0) + (b - a) / 1e3
    for name, (ev_a, end_a), (ev_b, end_b) in GAPS:
        if ev_a in first and ev_b in first:
            a = first[ev_a][end_a == "end"]
            b = first[ev_b][end_b == "end"]
            out[name] = (b - a) / 1e3
    return out


ORDER = [
    "TOTAL create -> exited", "create", "create > resolve image", "create > write container dir",
    "start", "start > find record", "start > cgroup create", "start > write hostname, hosts",
    "start > spawn", "spawn > clone(2) in the parent", "spawn > wait for the child's exec",
    "start > save state.json", "start > read /proc/PID/stat", "start > Running (log, readers)",
    "wait: tini + true run, exit, loop wakes", "exit > reap", "exit > bookkeeping",
    "exit > cgroup stats", "exit > cgroup rmdir", "exit > delete container dir",
    "after bookkeeping -> await returns",
    "child: TOTAL clone -> execve", "child: clone(2) -> child runs", "prctl(PDEATHSIG)", "setsid",
    "child: dup2 stdio + join cgroup (inline)", "unshare(cgroup ns)", "loopback up",
    *[f"rootfs > {s}" for s in ROOTFS_STEPS], "sethostname", "enter_workdir", "check command",
    "prctl(NO_NEW_PRIVS)", "drop capabilities", "close_range", "child: execve -> parent sees EOF",
]  # fmt: skip


def profile(api: Any, args: argparse.Namespace) -> None:
    """Print the plain median, then the instrumented median of every step."""
    out = Console(highlight=False)
    engine, loop = api.engine, api.loop
    for _ in range(args.warmup):
        api.once()
    plain = [api.once()[0] for _ in range(args.runs)]

    async def one() -> dict[str, float]:
        PARENT.clear()
        err: list[bytes] = []
        t0 = time.perf_counter_ns()
        record = engine.create("base", ["true"], auto_remove=True)
        api.ids.add(record.id)
        run = engine.start(record.id, listener=lambda s, d: s == "stderr" and err.append(d))
        await run.exited
        t_end = time.perf_counter_ns()
        return breakdown(t0, t_end, list(PARENT), _child_events(b"".join(err)))

    patches = install(engine)
    try:
        rows = [loop.run_until_complete(one()) for _ in range(args.warmup + args.runs)]
    finally:
        patches.undo()
    rows = rows[args.warmup :]
    out.print(f"API path, plain: median {median(plain):.2f} ms over {len(plain)} runs")
    table = Table(title=f"API path, instrumented: median per step ({len(rows)} runs)")
    table.add_column("step")
    table.add_column("median µs", justify="right")
    table.add_column("share", justify="right")
    whole = median([r["TOTAL create -> exited"] for r in rows])
    names = [n for n in ORDER if any(n in r for r in rows)]
    names += sorted({n for r in rows for n in r} - set(names))
    for name in names:
        values = [r[name] for r in rows if name in r]
        m = median(values)
        table.add_row(name, f"{m:.0f}", f"{100 * m / whole:.0f}%")
    out.print(table)
