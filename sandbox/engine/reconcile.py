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

from sandbox.runtime.cgroups import Cgroup, CgroupDriver
from sandbox.store import Store
from sandbox.store.containers import COMMIT_MARKER, EXITED, RUNNING, ContainerRecord
from sandbox.store.layers import Layer
from sandbox.store.locks import locked

# How long a cgroup without a running marker is left alone: `Engine.start`
# makes the cgroup, then spawns the container, then writes the marker.
START_GRACE = 30.0
_PID_IN_NAME = re.compile(r"^(?:\.tmp-.*\.|\.new-|\.rm-|[a-z]+-)(\d+)[-.]?")


def process_start(pid: int) -> int:
    """The start time of a process (clock ticks since boot), or 0 if it is gone.

    A zombie is gone: it holds nothing any more, and whoever should reap it
    (init, for a daemon whose starter exited) may not have done so yet.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return 0
    # The command name may hold spaces and parentheses: split after the last ')'.
    fields = data[data.rindex(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):
        return 0
    return int(fields[19])


def same_process(pid: int, start: int) -> bool:
    """True if ``pid`` is still the process that started at ``start``."""
    return pid > 0 and start > 0 and process_start(pid) == start


def kill_and_wait(pid: int, start: int, timeout: float = 10.0) -> None:
    """SIGKILL a container's init (if it still is that process) and wait for its end."""
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
    return pid != os.getpid() and process_start(pid) == 0


def _maybe_starting(cgroup: Cgroup) -> bool:
    """True if a live `Engine.start` may own this cgroup (it has no marker yet)."""
    try:
        if cgroup.procs():
            return True
        made = os.stat(cgroup.join_files()[0]).st_mtime
    except (OSError, IndexError):
        return False  # gone meanwhile, or half-removed: finish removing it
    return time.time() - made < START_GRACE


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
            kill_and_wait(record.pid, record.pid_start)
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
    # the marker, or, just as well, a live process is between those two steps
    # of `Engine.start` right now. Such a cgroup is taken only once it is
    # empty (a dead starter's container dies with it: PDEATHSIG) and older
    # than START_GRACE. Only this store's containers are touched: other stores
    # (other users, tests) share the `sandbox` parent.
    for name in driver.list_names():
        if name not in live and store.containers.path(name).exists():
            cgroup = driver.open(name)
            if _maybe_starting(cgroup):
                continue
            cgroup.remove()
            done.append(f"removed cgroup sandbox/{name}")
    done += _finish_commits(store)
    container_dirs = [
        e.path
        for e in os.scandir(store.containers.dir)
        if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)
    ]
    for parent in (store.containers.dir, store.root / "tmp", store.images.dir, store.root,
                   store.layers.dir, store.running_dir, *container_dirs):  # fmt: skip
        try:
            entries = list(os.scandir(parent))
        except FileNotFoundError:  # a container removed meanwhile
            continue
        for entry in entries:
            if _pid_dead(entry.name):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
                done.append(f"removed leftover {entry.path}")
    for name in store.containers.dangling_names():
        name.unlink(missing_ok=True)
        done.append(f"removed the name {name.name} of a container that was never made")
    return done


def _finish_commits(store: Store) -> list[str]:
    """Finish or undo the commits of dead processes; remove layers nothing made whole.

    A commit (``Engine.commit``) leaves the marker ``.commit-<pid>-<id>`` in
    the containers dir while it moves the upper dir; its record already names
    the new layer. Whatever point it died at, this makes the container whole
    again: the layer with its metadata and an empty upper dir if the rename
    happened, else the upper dir as it was and the layer forgotten. Then a
    layer directory without metadata (a squash or a base build killed between
    the rename and the metadata) is removed. Under the store lock, which every
    live commit and layer add holds, so nothing in progress is touched.
    """
    markers = [e.name for e in os.scandir(store.containers.dir) if e.name.startswith(COMMIT_MARKER)]
    if not markers and not store.layers.orphans():
        return []
    done: list[str] = []
    with locked(store.lock_path):
        for name in markers:
            pid, _, cid = name[len(COMMIT_MARKER) :].partition("-")
            if not pid.isdigit() or process_start(int(pid)) != 0:
                continue
            try:
                record = store.containers.load(cid)
            except Exception:  # the container was removed meanwhile
                record = None
            if record is not None:
                done += _finish_commit(store, record)
            (store.containers.dir / name).unlink(missing_ok=True)
        for orphan in store.layers.orphans():
            shutil.rmtree(orphan, ignore_errors=True)
            done.append(f"removed layer directory {orphan.name} (it has no metadata)")
    return done


def _finish_commit(store: Store, record: ContainerRecord) -> list[str]:
    from sandbox.store.changes import layer_usage

    upper = store.containers.path(record.id) / "upper"
    pending = record.committed_layers[-1:] if record.committed_layers else []
    for layer_id in pending:
        if store.layers.exists(layer_id):
            continue
        made = [h for h in record.committed_history if not h.get("empty_layer")]
        created_by = made[-1].get("created_by", "") if made else ""
        if store.layers.path(layer_id).is_dir():  # renamed: keep it
            size, files = layer_usage(store.layers.path(layer_id))
            store.layers.update(Layer(layer_id, time.time(), size, files, created_by))
        else:  # the upper dir never moved: forget the layer and its entry
            record.committed_layers.pop()
            if made:
                record.committed_history.remove(made[-1])
            store.containers.save(record)
    if not upper.exists():
        upper.mkdir()
    return [f"finished the interrupted commit of container {record.id[:12]}"]
