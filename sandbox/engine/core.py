"""The engine: images and containers, from create to remove, in one process.

The CLI (and later the daemon) drives this class. Every method that changes
the store leaves it consistent if the process dies at any point: the
reconciler (``reconcile.py``) finishes or undoes what a crash interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox import config
from sandbox.engine import names, ports, reconcile
from sandbox.engine.events import EventBus
from sandbox.engine.execs import Execs
from sandbox.engine.networks import Networks, loopback_hosts
from sandbox.engine.running import OutputListener, Running
from sandbox.errors import (
    Conflict,
    ContainerNotFound,
    ContainerNotRunning,
    ContainerRunning,
    ImageNotFound,
    InvalidArgument,
    LayerNotFound,
    PermissionDenied,
    RuntimeFailure,
    SandboxError,
)
from sandbox.runtime import cgroups
from sandbox.runtime.cgroups import Limits
from sandbox.runtime.spawn import Spawned, spawn, spawn_async
from sandbox.runtime.spec import DEFAULT_PATH, ProcessSpec, RootfsSpec
from sandbox.runtime.zygote import Zygote
from sandbox.store import Store, atomic
from sandbox.store.containers import (
    COMMIT_MARKER,
    EXITED,
    RUNNING,
    ContainerRecord,
    check_name,
)
from sandbox.store.images import Image, new_config, rfc3339
from sandbox.store.locks import locked
from sandbox.store.networks import NONE
from sandbox.store.references import parse as parse_reference

BASE_REF = "base:latest"
# overlayfs takes up to 500 lowers, Docker stops at 125; squash before that so
# a notebook of hundreds of cells keeps running. SQUASH_TO is what remains.
MAX_DEPTH = 120
SQUASH_TO = 20


class Engine:
    """Images and containers in one store.

    Args:
        root: the store root; None means ``SANDBOX_ROOT`` or the default.
        driver: the cgroup driver; None detects this host's.
    """

    def __init__(self, root: Path | None = None, *, driver: cgroups.CgroupDriver | None = None,
                 reconcile_now: bool = True, zygote: bool = False) -> None:  # fmt: skip
        self.store = Store(root or config.store_root())
        self._driver = driver
        # A long-lived engine (the daemon) clones through a lean fork server;
        # a one-shot one (a CLI run) clones itself rather than start one.
        self._zygote: Zygote | None = Zygote() if zygote else None
        self.running: dict[str, Running] = {}
        self.events = EventBus()
        self.execs = Execs(self)  # `docker exec` instances, in memory as Docker's
        self.networks = Networks(self.store.root)
        if reconcile_now:
            self.reconcile()

    def close(self) -> None:
        """Stop the zygote, if any (containers still running are not touched)."""
        if self._zygote is not None:
            self._zygote.close()
            self._zygote = None

    async def close_networks(self) -> None:
        """Bring this engine's bridges down (its containers have stopped)."""
        await self.networks.close()

    @property
    def driver(self) -> cgroups.CgroupDriver:
        if self._driver is None:
            self._driver = cgroups.detect_driver()
        return self._driver

    def reconcile(self) -> list[str]:
        """Clean up what crashed runs left behind; returns what was done."""
        return reconcile.reconcile(self.store, self.driver)

    # -- images ----------------------------------------------------------------

    def ensure_base(self) -> Image:
        """The default image, built from this host's tools on first use."""
        try:
            return self.store.images.resolve(BASE_REF)
        except Exception:
            # Two processes may miss it at once: the second waits for the first
            # one's build and uses it rather than building a second base.
            with locked(self.store.root / "base.lock"):
                try:
                    return self.store.images.resolve(BASE_REF)
                except Exception:
                    return self.build_base()

    def build_base(self) -> Image:
        """(Re)build the default image ``base`` from this host's shell tools.

        Holds the store lock while building, so two processes never build it
        twice; the layer is staged in the store's tmp dir and renamed in.
        """
        from sandbox.store import base_image

        with locked(self.store.root / "base.lock"):
            staging = self.store.tempdir("base-")
            rootfs = staging / "rootfs"
            rootfs.mkdir()
            try:
                info = base_image.populate_rootfs(rootfs)
                cfg = new_config(
                    env=[f"PATH={DEFAULT_PATH}", "LANG=C.UTF-8", "TERM=xterm"],
                    cmd=["bash"],
                    history=[{"created": rfc3339(), "created_by": info.describe()}],
                )
                # One step under the store lock: a layer collection (rmi) in
                # between would take the new, still unreferenced layer away.
                with locked(self.store.lock_path):
                    layer = self.store.layers.add(
                        rootfs, created_by=info.describe(), size=info.size_bytes, files=info.files
                    )
                    return self.store.images.add([layer.id], cfg, tag=BASE_REF)
            finally:
                import shutil

                shutil.rmtree(staging, ignore_errors=True)

    def image(self, ref: str) -> Image:
        """Find an image; the default image is built when first asked for."""
        try:
            return self.store.images.resolve(ref)
        except Exception:
            if ref in ("base", BASE_REF):
                return self.ensure_base()
            raise

    def remove_image(self, ref: str, *, force: bool = False) -> list[dict[str, str]]:
        """Untag an image, and delete it and its unused layers once untagged.

        Returns Docker's list of ``{"Untagged": ...}`` / ``{"Deleted": ...}``.

        Raises:
            Conflict: a container still uses it (unless ``force``).
        """
        with locked(self.store.lock_path):  # no container is made from it meanwhile
            image = self.store.images.resolve(ref)
            tags = image.tags
            untag = [t for t in tags if t == _normal(ref)] or tags
            # Removing one of several tags deletes nothing: no container minds.
            users = [c for c in self.store.containers.list() if c.image_id == image.id]
            if users and not force and len(untag) == len(tags):
                raise Conflict(
                    f"unable to remove image {ref}: container {users[0].short_id} uses it; "
                    "remove the container first (`sandbox rm`), or use --force"
                )
            result: list[dict[str, str]] = []
            for tag in untag:
                self.store.images.untag(tag)
                result.append({"Untagged": tag})
                self.events.image("untag", image, tag)
            if len(untag) == len(tags):
                self.store.images.delete(image.id)
                result.append({"Deleted": f"sha256:{image.id}"})
                self.events.image("delete", image, ref)
                self.collect_layers()
        return result

    def collect_layers(self) -> list[str]:
        """Delete layers no image and no container refers to."""
        with locked(self.store.lock_path):
            used: set[str] = set()
            for image_id in self.store.images.ids():
                used.update(self.store.images.load(image_id).layers)
            for record in self.store.containers.list():
                used.update(record.layers)
                used.update(record.committed_layers)
            removed = [i for i in self.store.layers.ids() if i not in used]
            for layer_id in removed:
                self.store.layers.remove(layer_id)
        return removed

    # -- containers --------------------------------------------------------------

    def create(
        self,
        image: str,
        cmd: list[str] | None = None,
        *,
        name: str | None = None,
        env: list[str] | None = None,
        workdir: str | None = None,
        hostname: str | None = None,
        tty: bool = False,
        open_stdin: bool = False,
        limits: Limits | None = None,
        auto_remove: bool = False,
        owner: int = 0,
        labels: dict[str, str] | None = None,
        networks: dict[str, dict[str, Any]] | None = None,
        port_bindings: dict[str, Any] | None = None,
    ) -> ContainerRecord:
        """Create a container (not started) from an image.

        Args:
            networks: the networks it joins, as `Networks.resolve` gives them
                (None or empty: loopback only).
            port_bindings: Docker's PortBindings (checked here).

        Raises:
            ImageNotFound, InvalidArgument, Conflict: with a message naming
                what to change; nothing is created then.
        """
        img = self.image(image)
        img_cfg = img.config.get("config", {})
        command = list(cmd) if cmd else list(img_cfg.get("Cmd") or [])
        if not command:
            raise InvalidArgument(f"no command given and image {image} has no default command")
        for item in env or []:
            if "=" not in item or item.startswith("="):
                raise InvalidArgument(f"invalid environment variable {item!r}: use KEY=VALUE")
        if workdir is not None and not workdir.startswith("/"):
            raise InvalidArgument(f"invalid working directory {workdir!r}: use an absolute path")
        bindings = ports.parse_bindings(port_bindings or {})
        if owner != 0:
            ports.check_unprivileged(bindings)
        for net in networks or {}:
            self.networks.find(net)  # NetworkNotFound now, not at start
        cid = os.urandom(32).hex()
        record = ContainerRecord(
            id=cid,
            name=check_name(name) if name else names.generate(cid),
            image_id=img.id,
            image=image,
            layers=list(img.layers),
            cmd=command,
            env=_merge_env(img_cfg.get("Env") or [], env or [], tty),
            workdir=workdir or img_cfg.get("WorkingDir") or "/",
            hostname=hostname or cid[:12],
            tty=tty,
            open_stdin=open_stdin,
            limits=(limits or Limits()).to_json(),
            auto_remove=auto_remove,
            owner=owner,
            labels=dict(labels or {}),
            networks=dict(networks or {}),
            ports=bindings,
        )
        if hostname is not None:
            _check_hostname(hostname)
        with locked(self.store.lock_path):
            self.store.images.load(img.id)  # ImageNotFound if an rmi took it meanwhile
            created = self.store.containers.create(record)
        self.events.container("create", created)
        return created

    def start(self, ref: str, *, listener: OutputListener | None = None) -> Running:
        """Start a created (or exited) container; returns its pump.

        Must be called from within a running event loop. Blocks it while the
        container sets itself up (see `start_async`).

        Raises:
            ContainerRunning: it is already running.
            LimitUnsupported: a limit this host cannot enforce.
            CommandNotFound, RuntimeFailure: the process could not start; the
                container is marked exited with the reason.
        """
        record = self.store.containers.find(ref)
        if record.networks or record.ports:
            raise InvalidArgument(
                f"container {record.name} has networks or published ports: start it "
                "through the daemon (`sandbox start`), which runs them"
            )
        launch = self._launch(ref)
        try:
            spawned = spawn(launch.root, launch.proc, join_files=launch.cgroup.join_files(),
                            clone_into=launch.cgroup.clone_into(),
                            open_stdin=launch.record.open_stdin, zygote=self._zygote)  # fmt: skip
        except BaseException as exc:
            self._not_started(launch, exc)
            raise
        return self._started(launch, spawned, listener)

    async def start_async(self, ref: str, *, listener: OutputListener | None = None) -> Running:
        """`start`, awaiting the container's set-up instead of blocking the event loop.

        For the daemon: while one container mounts its root and execs (most
        of a start), the loop serves every other client. The container may
        not be started or removed by anyone else meanwhile (the daemon's
        supervisor sees to it).

        Raises:
            the same as `start`.
        """
        launch = self._launch(ref)
        record, ns_fd, published = launch.record, None, []
        try:
            if record.networks or record.ports:
                ns_fd = await self.networks.new_namespace()
                await self._plug_in(record, ns_fd, launch.path)
                published = await ports.publish(ns_fd, record.ports)
                record.published = ports.settings(published)
            spawned = await spawn_async(launch.root, launch.proc,
                                        join_files=launch.cgroup.join_files(),
                                        clone_into=launch.cgroup.clone_into(),
                                        open_stdin=record.open_stdin,
                                        zygote=self._zygote, netns_fd=ns_fd)  # fmt: skip
        except BaseException as exc:
            ports.unpublish(published)
            self._unplug(record)
            if ns_fd is not None:
                os.close(ns_fd)
            self._not_started(launch, exc)
            raise
        running = self._started(launch, spawned, listener)
        running.netns_fd, running.published = ns_fd, published
        return running

    async def _plug_in(self, record: ContainerRecord, ns_fd: int, path: Path) -> None:
        """Join the container's namespace to each of its networks (eth0, eth1, ...)."""
        for name in record.networks:
            endpoint = await self.networks.connect(record, ns_fd, name, path / "hosts")
            record.endpoints[endpoint.network.name] = endpoint.settings()

    def _unplug(self, record: ContainerRecord) -> None:
        """Its addresses back to the networks, its names out of the others' hosts files."""
        self.networks.release(record.id)
        record.endpoints, record.published = {}, {}

    def _launch(self, ref: str) -> _Launch:
        """Everything up to the clone: the running marker, the cgroup, the specs."""
        record = self.store.containers.find(ref)
        if record.state == RUNNING:
            raise Conflict(f"container {record.name} is already running")
        path = self.store.containers.path(record.id)
        # The marker first: if this process dies from here on, the reconciler
        # finds the cgroup and the container through it.
        marker = self.store.running_dir / record.id
        atomic.write_bytes(marker, f"{os.getpid()} {reconcile.process_start(os.getpid())}".encode())
        try:
            cgroup = self.driver.create(record.id, Limits.from_json(record.limits))
        except BaseException:
            marker.unlink(missing_ok=True)
            if record.auto_remove:  # `run --rm`: a container that never ran leaves nothing
                self._delete(record)
            raise
        try:
            _write_etc_files(path, record.hostname)
            _fresh_workdir(path / "work")
        except BaseException:
            cgroup.remove()
            marker.unlink(missing_ok=True)
            raise
        lowers = list(reversed(record.layers + record.committed_layers))
        root = RootfsSpec(
            layers_dir=str(self.store.layers.dir),
            lowers=lowers,
            upper=str(path / "upper"),
            work=str(path / "work"),
            merged=str(path / "merged"),
            binds={"/etc/hostname": str(path / "hostname"), "/etc/hosts": str(path / "hosts")},
            readonly_dev=not self.driver.confines_devices,
        )
        proc = ProcessSpec(argv=record.cmd, env=record.env, cwd=record.workdir,
                           hostname=record.hostname, tty=record.tty)  # fmt: skip
        return _Launch(record, cgroup, marker, path, root, proc)

    def _not_started(self, launch: _Launch, exc: BaseException) -> None:
        """Undo a launch whose process never ran; a failed set-up is recorded as the exit."""
        launch.cgroup.remove()
        if isinstance(exc, RuntimeFailure):
            record = launch.record
            record.state, record.exit_code = EXITED, 127 if exc.step == "exec" else 125
            record.error, record.finished_at = str(exc), time.time()
            self._finish(record)
        else:
            launch.marker.unlink(missing_ok=True)

    def _started(self, launch: _Launch, spawned: Spawned,
                 listener: OutputListener | None) -> Running:  # fmt: skip
        """Record the running container and start pumping its output."""
        record, cgroup = launch.record, launch.cgroup
        record.state, record.pid, record.started_at = RUNNING, spawned.pid, time.time()
        record.pid_start = reconcile.process_start(spawned.pid)
        record.monitor_pid, record.error = os.getpid(), ""
        record.exit_code, record.oom_killed, record.pids_limit_hit = 0, False, False
        self.store.containers.save(record)
        running = Running(spawned, str(launch.path / "log.jsonl"), asyncio.get_running_loop())
        running.record = record
        running.cgroup = cgroup  # for stats()
        if listener is not None:
            running.listeners.append(listener)
        self.running[record.id] = running
        running.on_exit(lambda status: self._exited(record, cgroup, status))
        self.events.container("start", record)
        return running

    def _exited(self, record: ContainerRecord, cgroup: cgroups.Cgroup, status: int) -> None:
        """Bookkeeping once the init is reaped: limits hit, cgroup removed, state saved."""
        record.oom_killed = cgroup.oom_killed()
        record.pids_limit_hit = cgroup.pids_limit_hit()
        running = self.running.get(record.id)
        if running is not None and running.netns_fd is not None:
            ports.unpublish(running.published)
            os.close(running.netns_fd)
            running.netns_fd = None
        if record.endpoints or record.published:
            self._unplug(record)
        with contextlib.suppress(SandboxError):  # still busy: the reconciler removes it
            cgroup.remove()
        record.state, record.exit_code, record.finished_at = EXITED, status, time.time()
        limits = Limits.from_json(record.limits)
        if record.oom_killed:
            record.error = (
                f"out of memory: the container reached its memory limit "
                f"({_mib(limits.memory)}, --memory) and the kernel killed it"
            )
        elif record.pids_limit_hit:
            record.error = (
                f"process limit reached: the container tried to run more than "
                f"{limits.pids} processes (--pids-limit), so new ones could not start"
            )
        self.running.pop(record.id, None)
        # `rm -f` (maybe from another process) asks for removal in the saved state.
        record.auto_remove = record.auto_remove or self._removal_requested(record.id)
        if record.oom_killed:
            self.events.container("oom", record)
        ran = str(int(record.finished_at - record.started_at))
        self.events.container("die", record, exitCode=str(status), execDuration=ran)
        self._finish(record)

    def _removal_requested(self, cid: str) -> bool:
        try:
            return self.store.containers.load(cid).auto_remove
        except ContainerNotFound:
            return True  # already deleted: nothing left to save

    def _finish(self, record: ContainerRecord) -> None:
        if record.auto_remove:
            self._delete(record)
        else:
            self.store.containers.save(record)
        (self.store.running_dir / record.id).unlink(missing_ok=True)

    async def wait(self, ref: str) -> ContainerRecord:
        """Wait until the container has exited; returns its final record.

        Works for containers this process runs and for ones another process
        runs (by polling its pidfd, then its saved state).
        """
        record = self.store.containers.find(ref)
        running = self.running.get(record.id)
        if running is not None:
            await asyncio.shield(running.exited)
            return record
        if record.state == RUNNING:
            await reconcile.wait_exit(record)
            for _ in range(500):  # the process running it writes the state next
                try:
                    record = self.store.containers.load(record.id)
                except Exception:
                    return record
                if record.state != RUNNING:
                    break
                self.reconcile()
                await asyncio.sleep(0.01)
        return record

    def kill(self, ref: str, sig: int = signal.SIGKILL) -> ContainerRecord:
        """Send a signal to the container's init, which forwards it to the command's group.

        The command and its children get it (``tini -g``), unless they made
        process groups of their own, as an interactive shell's jobs do.

        Raises:
            ContainerNotRunning: it is not running.
        """
        record = self.store.containers.find(ref)
        if record.state != RUNNING or not reconcile.same_process(record.pid, record.pid_start):
            raise ContainerNotRunning(record.name)
        os.kill(record.pid, sig)
        self.events.container("kill", record, signal=str(int(sig)))
        return record

    def stats(self, ref: str) -> cgroups.CgroupStats | None:
        """A sample of a running container's cgroup counters; None if it is not running.

        Cheap for a container this engine runs, looked up by its full ID: no
        store access, only the cgroup files (the stats stream reads it up to
        10 times a second).

        Raises:
            ContainerNotFound: no such container.
        """
        running = self.running.get(ref)
        if running is None:
            record = self.store.containers.find(ref)
            running = self.running.get(record.id)
            if running is None:  # run by another process, or not running
                alive = record.running and reconcile.same_process(record.pid, record.pid_start)
                return self.driver.open(record.id).stats() if alive else None
        return running.cgroup.stats() if running.cgroup is not None else None

    def stdin_readers(self, ref: str) -> list[dict[str, Any]]:
        """The container's processes blocked reading its stdin: ``[{"Pid", "Command"}]``.

        For "is it waiting for input?" (a notebook's input box). A process of
        the container's cgroup counts if it sleeps in a blocking ``read`` or
        ``readv`` of the container's stdin pipe, by whatever descriptor: see
        `sandbox.runtime.readers` for how, and its limits (a reader that
        waits in poll, select or epoll is not seen). A snapshot: [] for a
        container created without ``open_stdin``, with a terminal, whose
        stdin was closed, or that this engine does not run (not running, or
        run by another process).

        Raises:
            ContainerNotFound: no such container.
        """
        from sandbox.runtime.readers import blocked_readers, fd_name

        running = self.running.get(ref)
        if running is None:
            running = self.running.get(self.store.containers.find(ref).id)
        if running is None or running.cgroup is None or running.spawned.stdin is None:
            return []
        pipe = fd_name(running.spawned.stdin)  # the same pipe:[inode] as the read end
        readers = blocked_readers(running.cgroup.procs(), pipe)
        return [{"Pid": r.pid, "Command": r.command} for r in readers]

    def remove(self, ref: str, *, force: bool = False) -> ContainerRecord:
        """Remove a container and its upper layer.

        Raises:
            ContainerRunning: it runs and ``force`` is False.
        """
        record = self.store.containers.find(ref)
        if record.state == RUNNING:
            if not force:
                raise ContainerRunning(record.name, "remove")
            # The process that runs it deletes it at exit (it reads auto_remove
            # from the saved state, so this must be saved before the kill).
            record.auto_remove = True
            self.store.containers.save(record)
            reconcile.kill_and_wait(record.pid, record.pid_start)
            if record.id not in self.running:
                self._wait_removed(record)
            return record
        self._delete(record)
        return record

    def _delete(self, record: ContainerRecord) -> None:
        """Delete a container from the store, and tell the subscribers."""
        self.store.containers.delete(record)
        self.events.container("destroy", record)

    def _wait_removed(self, record: ContainerRecord) -> None:
        """Wait until the process that ran a killed container has deleted it.

        ``rm -f`` returns once the container is gone, as Docker's does. If
        that process lost the race (it saved the exit before ``auto_remove``
        was set) or never finishes, the container is deleted here.
        """
        current = record
        for _ in range(500):
            self.reconcile()  # finishes it if the process that ran it is dead
            try:
                current = self.store.containers.load(record.id)
            except ContainerNotFound:
                return
            if current.state != RUNNING:
                break
            time.sleep(0.01)
        self._delete(current)

    # -- networks ----------------------------------------------------------------------

    async def connect(self, ref: str, network: str, *, aliases: list[str] | None = None,
                      address: str = "") -> ContainerRecord:  # fmt: skip
        """Connect a container to one more network (``docker network connect``).

        A running container gets the next ``ethN`` at once; a stopped one
        joins when it starts.

        Raises:
            NetworkNotFound, ContainerNotFound: no such network or container.
            PermissionDenied: it is on that network already.
            Conflict: the address is taken.
            InvalidArgument: `none`, a bad alias or address.
        """
        record, running = self._record_and_running(ref)
        net = self.networks.find(network)
        if net.name == NONE:
            raise InvalidArgument(
                "a container cannot be connected to `none`: disconnect it from its "
                "networks instead (`sandbox network disconnect NETWORK CONTAINER`)"
            )
        if net.name in record.networks:
            # Docker's 403 (its API reference: "already connected" while running).
            raise PermissionDenied(
                f"container {record.name} is already connected to network {net.name}"
            )
        settings = {"Aliases": aliases or [], "IPAMConfig": {"IPv4Address": address}}
        config = self.networks.resolve(net.name, endpoints={net.name: settings})
        if running is not None:
            ns_fd = await self._namespace_of(record, running)
            path = self.store.containers.path(record.id)
            record.networks.update(config)
            try:
                endpoint = await self.networks.connect(record, ns_fd, net.name,
                                                       path / "hosts")  # fmt: skip
                if self.running.get(record.id) is not running:  # it exited meanwhile
                    self.networks.release(record.id, net.name)
                    raise ContainerNotRunning(record.name)
            except BaseException:
                record.networks.pop(net.name, None)
                raise
            record.endpoints[net.name] = endpoint.settings()
        else:
            record.networks.update(config)
        self.store.containers.save(record)
        self.events.network("connect", net, record)
        return record

    async def _namespace_of(self, record: ContainerRecord, running: Running) -> int:
        """The running container's network namespace, held by the engine from now on.

        One cloned with a namespace of its own (loopback only) is opened by
        its PID, then checked through its pidfd: if it is still alive, the
        PID was not reused for another process between the two.

        Raises:
            ContainerNotRunning: it has exited.
        """
        if running.netns_fd is not None:
            return running.netns_fd
        try:
            fd = os.open(f"/proc/{record.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            raise ContainerNotRunning(record.name) from None
        try:
            if running.status is not None or running.spawned.pidfd < 0:
                raise ContainerNotRunning(record.name)
            signal.pidfd_send_signal(running.spawned.pidfd, 0)
            await self.networks.adopt_namespace(fd)
        except ProcessLookupError:
            os.close(fd)
            raise ContainerNotRunning(record.name) from None
        except BaseException:
            os.close(fd)
            raise
        if self.running.get(record.id) is not running:  # exited during the await
            os.close(fd)
            raise ContainerNotRunning(record.name)
        running.netns_fd = fd
        return fd

    async def disconnect(self, ref: str, network: str) -> ContainerRecord:
        """Take a container off a network (``docker network disconnect``).

        Raises:
            NetworkNotFound, ContainerNotFound: no such network or container.
            Conflict: it is not on that network.
        """
        record, running = self._record_and_running(ref)
        net = self.networks.find(network)
        if net.name not in record.networks:
            raise Conflict(f"container {record.name} is not connected to network {net.name}")
        del record.networks[net.name]
        if running is not None:
            record.endpoints.pop(net.name, None)
            await self.networks.disconnect(record.id, net.name)
        self.store.containers.save(record)
        self.events.network("disconnect", net, record)
        return record

    def _record_and_running(self, ref: str) -> tuple[ContainerRecord, Running | None]:
        """The record to change: the live one of a container this engine runs."""
        record = self.store.containers.find(ref)
        running = self.running.get(record.id)
        if running is not None and running.record is not None:
            return running.record, running
        if record.state == RUNNING and reconcile.same_process(record.pid, record.pid_start):
            raise Conflict(
                f"container {record.name} is run by another process: connect it through "
                "the daemon that runs it"
            )
        return record, None

    # -- copy-on-write -------------------------------------------------------------

    def diff(self, ref: str) -> list[Any]:
        """What the container changed, read from its upper directory.

        Each `Change`'s ``layer`` indexes the container's lower layers from
        the top (0: the nearest), as `scan_changes` counts them.
        """
        from sandbox.store.changes import scan_changes

        record = self.store.containers.find(ref)
        layers = record.layers + record.committed_layers
        lowers = [self.store.layers.path(i) for i in reversed(layers)]
        return scan_changes(self.store.containers.path(record.id) / "upper", lowers)

    def commit(
        self,
        ref: str,
        repo_tag: str | None = None,
        *,
        message: str = "",
        author: str = "",
        created_by: str | None = None,
        owner: int = 0,
    ) -> Image:
        """Turn the container's changes into a new image (by renaming its upper dir).

        A container that changed nothing gives an image with one more
        ``empty_layer`` history entry and no new layer. The image's history is
        the container's image's, then one entry per commit of this container.

        Atomic under the store lock: the record names the new layer before the
        upper dir is renamed, so if the process dies midway the reconciler
        either finishes the commit (the layer is kept and the container gets a
        new empty upper dir) or finds the upper dir untouched. Only the image
        itself is then missing; committing again makes it.

        Raises:
            InvalidArgument: ``repo_tag`` is not a valid ``name[:tag]``
                (checked before anything moves).
            ContainerRunning: stop the container first.
        """
        from sandbox.store.changes import layer_usage

        if repo_tag:
            repo_tag = str(parse_reference(repo_tag))
        with locked(self.store.lock_path):
            record = self.store.containers.find(ref)
            if record.state == RUNNING:
                raise ContainerRunning(record.name, "commit", force_hint=False)
            base = self._base_config(record)
            path = self.store.containers.path(record.id)
            upper = path / "upper"
            entry: dict[str, Any] = {
                "created": rfc3339(),
                "created_by": created_by or shlex.join(record.cmd),
            }
            if author:
                entry["author"] = author
            if message:
                entry["comment"] = message
            with os.scandir(upper) as entries:
                changed = next(entries, None) is not None
            if changed:
                size, files = layer_usage(upper)
                layer_id = self.store.layers.new_id()
                # The journal: a marker naming this process, then the record
                # naming the layer; only then does the upper dir move.
                marker = self.store.containers.dir / f"{COMMIT_MARKER}{os.getpid()}-{record.id}"
                marker.touch()
                record.committed_layers.append(layer_id)
                record.committed_history.append(entry)
                self.store.containers.save(record)
                self.store.layers.add(
                    upper, layer_id=layer_id, created_by=entry["created_by"], size=size, files=files
                )
                upper.mkdir()
                marker.unlink()
            else:
                entry["empty_layer"] = True
                record.committed_history.append(entry)
                self.store.containers.save(record)
            layers = record.layers + record.committed_layers
            cfg = dict(base)
            cfg["created"] = entry["created"]
            cfg["history"] = [*base.get("history", []), *record.committed_history]
            cfg["config"] = dict(cfg.get("config", {}))
            if len(layers) > MAX_DEPTH:
                layers, cfg["history"] = self._squash(layers, cfg["history"])
            image = self.store.images.add(layers, cfg, owner=owner, tag=repo_tag)
        self.events.container("commit", record, comment=message, imageID=f"sha256:{image.id}",
                              imageRef=repo_tag or "")  # fmt: skip
        if repo_tag:
            self.events.image("tag", image, repo_tag)
        return image

    def tag(self, ref: str, repo_tag: str) -> Image:
        """Tag an image (``repo_tag`` is a checked ``name:tag``); returns it.

        Raises:
            ImageNotFound: no image ``ref``.
        """
        image = self.store.images.resolve(ref)
        self.store.images.tag(image.id, repo_tag)
        self.events.image("tag", image, repo_tag)
        return image

    def _base_config(self, record: ContainerRecord) -> dict[str, Any]:
        """The config of the container's image, rebuilt from the record if it was removed."""
        try:
            return self.store.images.load(record.image_id).config
        except ImageNotFound:
            pass
        history = []
        for layer_id in record.layers:
            try:
                made_by = self.store.layers.get(layer_id).created_by
            except LayerNotFound:
                made_by = ""
            history.append({"created": rfc3339(), "created_by": made_by})
        return new_config(env=record.env, cmd=record.cmd, workdir=record.workdir, history=history)

    def _squash(
        self, layers: list[str], history: list[dict[str, Any]]
    ) -> tuple[list[str], list[dict[str, Any]]]:
        """Flatten the oldest layers into one, keeping the newest SQUASH_TO - 1.

        The history keeps every entry (what made the image stays readable);
        those of the squashed layers become ``empty_layer`` and one entry for
        the flat layer follows them, so that the entries with a layer still
        match the layers one to one, as OCI requires.
        """
        from sandbox.store.changes import layer_usage
        from sandbox.store.squash import flatten

        keep = SQUASH_TO - 1
        old, new = layers[:-keep], layers[-keep:]
        staging = self.store.tempdir("squash-")
        try:
            dest = staging / "layer"
            flatten([self.store.layers.path(i) for i in reversed(old)], dest)
            size, files = layer_usage(dest)
            made_by = f"sandbox: {len(old)} layers squashed into one"
            flat = self.store.layers.add(dest, created_by=made_by, size=size, files=files)
        finally:
            import shutil

            shutil.rmtree(staging, ignore_errors=True)
        squashed: list[dict[str, Any]] = []
        flat_entry = {"created": rfc3339(), "created_by": made_by}
        seen = 0
        for item in history:
            if seen < len(old) and not item.get("empty_layer"):
                seen += 1
                squashed.append({**item, "empty_layer": True})
                if seen == len(old):
                    squashed.append(flat_entry)
            else:
                squashed.append(item)
        if seen < len(old):  # [should never happen]: fewer entries than layers
            squashed.insert(0, flat_entry)
        return [flat.id, *new], squashed


@dataclass
class _Launch:
    """A container between its launch and its clone (see `Engine.start`)."""

    record: ContainerRecord
    cgroup: cgroups.Cgroup
    marker: Path
    path: Path
    root: RootfsSpec
    proc: ProcessSpec


def _merge_env(image_env: list[str], extra: list[str], tty: bool) -> list[str]:
    """The image's environment, then Docker's defaults, then the user's ``-e``."""
    env = dict(item.partition("=")[::2] for item in image_env)
    if not tty:
        env.pop("TERM", None)  # no terminal: programs must not emit escape codes
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("HOME", "/root")
    env.update(item.partition("=")[::2] for item in extra)
    return [f"{k}={v}" for k, v in env.items()]


def _check_hostname(hostname: str) -> None:
    if not hostname or len(hostname) > 63 or not all(c.isalnum() or c in "-." for c in hostname):
        raise InvalidArgument(
            f"invalid hostname {hostname!r}: use up to 63 letters, digits, - or ."
        )


def _fresh_workdir(work: Path) -> None:
    """Give overlayfs a work dir it accepts.

    The overlay is mounted ``volatile`` (no syncfs of the whole host disk when
    the container's mount namespace goes away, which otherwise dominates the
    exit of a short container). A volatile mount leaves
    ``work/work/incompat/volatile`` behind, and overlayfs refuses that work dir
    until it is gone: a restarted container gets a new one. The upper dir is
    untouched, so nothing the container wrote is lost.
    """
    if os.path.lexists(work / "work" / "incompat"):
        import shutil

        shutil.rmtree(work)
        work.mkdir()


def _write_etc_files(path: Path, hostname: str) -> None:
    """The files bound over /etc/hostname and /etc/hosts (its networks rewrite the latter)."""
    (path / "hostname").write_text(hostname + "\n")
    (path / "hosts").write_text(loopback_hosts(hostname))


def _mib(n: int | None) -> str:
    if not n:
        return "unlimited"
    return f"{n / 1024**2:g} MiB"


def _normal(ref: str) -> str:
    from sandbox.store.references import parse

    try:
        return str(parse(ref))
    except InvalidArgument:
        return ref
