"""Finish or undo what a crashed engine process left behind.

Every engine process that runs a container writes a marker
``<root>/running/<id>`` holding its own PID and start time. When that process
is gone (killed by SIGKILL, say), its containers were killed with it (their
init has PDEATHSIG set), but their cgroups, state and auto-remove are still
to do. The next engine process does them here, before anything else. Mounts
need no cleanup: they only ever existed inside the containers' own mount
namespaces, which the kernel tore down with their last process.

Temporary files and directories carry their creator's PID in their name
(``.tmp-<file>.<pid>``, ``.new-<pid>-<id>``, ``<prefix><pid>-...``) so that
only those of dead processes are removed, never one a live process is using.
"""

from __future__ import annotations

import asyncio
import os
import re
import select
import shutil
import signal
import time

from sandbox.runtime.cgroups import CgroupDriver
from sandbox.store import Store
from sandbox.store.containers import EXITED, RUNNING

_PID_IN_NAME = re.compile(r"^(?:\.tmp-.*\.|\.new-|\.rm-|[a-z]+-)(\d+)[-.]?")


def process_start(pid: int) -> int:
    """The start time of a process (clock ticks since boot), or 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return 0
    # The command name may hold spaces and parentheses: split after the last ')'.
    return int(data[data.rindex(b")") + 2 :].split()[19])


def same_process(pid: int, start: int) -> bool:
    """True if ``pid`` is still the process that started at ``start``."""
    return pid > 0 and start > 0 and process_start(pid) == start


def _kill_and_wait(pid: int, start: int, timeout: float = 5.0) -> None:
    if not same_process(pid, start):
        return
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        signal.pidfd_send_signal(fd, signal.SIGKILL)
        select.select([fd], [], [], timeout)
    except ProcessLookupError:
        pass
    finally:
        os.close(fd)


async def wait_exit(record: object) -> None:
    """Wait until a container run by another process has exited."""
    pid, start = record.pid, record.pid_start  # type: ignore[attr-defined]
    if not same_process(pid, start):
        return
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.add_reader(fd, lambda: done.done() or done.set_result(None))
    try:
        await done
    finally:
        loop.remove_reader(fd)
        os.close(fd)


def _pid_dead(name: str) -> bool:
    match = _PID_IN_NAME.match(name)
    if not match:
        return False
    pid = int(match.group(1))
    return pid != os.getpid() and not os.path.exists(f"/proc/{pid}")


def reconcile(store: Store, driver: CgroupDriver) -> list[str]:
    """Clean up after crashed engine processes; returns a line per action."""
    done: list[str] = []
    live: set[str] = set()
    for marker in list(store.running_dir.iterdir()):
        cid = marker.name
        if cid.startswith(".tmp-"):
            if _pid_dead(cid):
                marker.unlink(missing_ok=True)
            continue
        try:
            monitor_pid, monitor_start = (int(x) for x in marker.read_text().split())
        except (OSError, ValueError):
            monitor_pid = monitor_start = 0
        if same_process(monitor_pid, monitor_start):
            live.add(cid)
            continue
        try:
            record = store.containers.load(cid)
        except Exception:
            record = None
        if record is not None and record.state == RUNNING:
            _kill_and_wait(record.pid, record.pid_start)
            record.state, record.exit_code, record.finished_at = EXITED, 137, time.time()
            record.error = (
                "stopped: the sandbox process that ran this container was killed, "
                "so the container was killed with it"
            )
            if record.auto_remove:
                store.containers.delete(record)
            else:
                store.containers.save(record)
            done.append(f"stopped container {cid[:12]} (its sandbox process died)")
        driver.open(cid).remove()
        marker.unlink(missing_ok=True)
    # A cgroup without a marker: the process died between making it and writing
    # the marker. Only this store's containers are touched: other stores (other
    # users, tests) share the `sandbox` parent.
    for name in driver.list_names():
        if name not in live and store.containers.path(name).exists():
            driver.open(name).remove()
            done.append(f"removed cgroup sandbox/{name}")
    for parent in (store.containers.dir, store.root / "tmp", store.images.dir, store.root,
                   store.layers.dir):  # fmt: skip
        for entry in os.scandir(parent):
            if _pid_dead(entry.name):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
                done.append(f"removed leftover {entry.path}")
    return done
