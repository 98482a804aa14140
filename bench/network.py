"""The extra cost of attaching a container to a network, and what the network's paths cost.

Side by side, in one run, against a private store and its own sandboxd:

- start to exit of ``true`` through the daemon's API, the way ``sandbox run``
  and the kernel drive it (create, attach, wait, start, read to the end,
  remove), with ``--network none`` (loopback only, the default) and
  ``--network lab``, and both again with a published port (``-p
  127.0.0.1::7007``); the extra cost of attaching is lab - none;
- what users would otherwise do, the same plumbing by hand: a shell script of
  ``ip`` commands (``ip netns add``, a veth pair with one end moved into the
  namespace, an address, a default route, ``ip netns exec NS true``, ``ip
  netns del``), loopback only against a veth on a bridge; the bridge lives in
  a namespace of its own, as the engine's does, so nothing is added to the
  host's network namespace;
- the floor, a fresh network namespace and no container: ``unshare --net`` and
  ``bwrap --unshare-net`` against the same commands without a new namespace;
- lab with its bridge down (the first container on a network brings it up),
  against none, both after the same pause;
- round trips on a running network: TCP echo of 64 bytes over a container's
  own loopback, from one container to another over lab, and from the host's
  loopback through a published port (the daemon's proxy), on a kept-open
  connection and on a new connection each time; ICMP ping, the image's own,
  from one container to another by name and to its own loopback.

For the API path it also prints where the time goes (each phase between the
client's requests, none against lab), and each method's median right after a
run that removed a veth pair against after any other run: the kernel deletes
a veth pair with waits under its rtnl lock, partly after the run that asked
for it has returned, and any new network namespace waits on that lock.

The methods of a round run in a new shuffled order each round, so that a
noisy neighbour slows them all alike. Everything made (the store, the
daemon, the containers, the namespaces of the script, /run/netns if it was
not there) is removed at the end, also after an error or Ctrl-C; what is
left is printed in red. Benchmarks print figures; they never assert.

EXAMPLE:
    bench/network                  # 200 rounds
    bench/network --runs 30 --cold-runs 5 --json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from _common import (
    HOST_PATH,
    Samples,
    Spawner,
    cgroup_parents,
    first_line,
    machine,
    median,
    mounts_under,
    p95,
    remove_scratch,
    run_bench,
)
from rich.console import Console
from rich.table import Table

from sandbox.client import AsyncClient
from sandbox.engine import Engine
from sandbox.engine.networks import IDLE_SECONDS
from sandbox.runtime import netns

PORT = 7007  # the port the server container publishes and the echo server listens on
MESSAGE = b"x" * 64  # one echo's payload
CHUNK = 100  # kept-open round trips of one path before the next path's turn
PAUSE = IDLE_SECONDS + 0.5  # long enough for the daemon to bring an idle bridge down
FOREGROUND = {"sandbox.foreground": "1"}  # as the CLI and the kernel: attached before the start
NETNS_DIR = Path("/run/netns")
HAND_SUBNET = ("10.231.0.1", "10.231.0.2", 24)  # gateway, container, prefix: inside namespaces
RUN_NETNS_EXISTED = NETNS_DIR.exists()  # /run/netns is made (and mounted) by the first `ip netns`

# The methods of the rounds: start to exit of `true`.
NONE, LAB = "sandbox: --network none", "sandbox: --network lab"
NONE_P, LAB_P = "sandbox: none -p", "sandbox: lab -p"
HAND_LO, HAND_VETH = "by hand: loopback only", "by hand: veth on a bridge"
UNSHARE, UNSHARE_NET = "unshare true", "unshare --net true"
BWRAP, BWRAP_NET = "bwrap true", "bwrap --unshare-net true"
COLD_NONE, COLD_LAB = "after a pause: none", "after a pause: lab, bridge down"
# The methods that end by removing a veth pair.
TEARDOWNS = (LAB, LAB_P, HAND_VETH)
# Rows of the first table: (what, without, with).
PAIRS = (
    ("sandbox API: --network none -> lab", NONE, LAB),
    ("sandbox API, -p 127.0.0.1::7007: none -> lab", NONE_P, LAB_P),
    ("sandbox API, none: no port -> -p 127.0.0.1::7007", NONE, NONE_P),
    ("by hand, ip netns: loopback only -> veth on a bridge", HAND_LO, HAND_VETH),
    ("unshare true: host's netns -> --net", UNSHARE, UNSHARE_NET),
    ("bwrap true: host's netns -> --unshare-net", BWRAP, BWRAP_NET),
    ("sandbox API after a pause: none -> lab, bridge down", COLD_NONE, COLD_LAB),
)  # fmt: skip
# Round trips, µs.
LOOPBACK = "a container's own loopback (no veth)"
C2C = "container to container on lab (veth, bridge, veth)"
PUBLISHED = "host loopback -> published port (daemon's proxy) -> container"
KEPT, NEW = "kept-open connection", "new connection each time"
PING_C2C = "ping, container to container on lab, by name"
PING_LO = "ping, a container to its own loopback"

# One shell script, the classic way: $1 the namespace, $2 the bridge's
# namespace ("" for loopback only), $3 a suffix for the veth names.
HAND_SCRIPT = f"""\
set -e
ns=$1 br=$2 v=$3
ip netns add "$ns"
ip -n "$ns" link set lo up
if [ -n "$br" ]; then
    ip -n "$br" link add "h$v" type veth peer name "c$v"
    ip -n "$br" link set "c$v" netns "$ns"
    ip -n "$br" link set "h$v" master br0 up
    ip -n "$ns" addr add {HAND_SUBNET[1]}/{HAND_SUBNET[2]} dev "c$v"
    ip -n "$ns" link set "c$v" up
    ip -n "$ns" route add default via {HAND_SUBNET[0]}
fi
ip netns exec "$ns" true
ip netns del "$ns"
"""

# The TCP echo server: a process of its own serving a listening socket that
# the bench made inside the server container's namespace (argv[1] is its fd).
ECHO_SERVER = """\
import selectors, socket, sys
listener = socket.socket(fileno=int(sys.argv[1]))
listener.setblocking(False)
sel = selectors.DefaultSelector()
sel.register(listener, selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        sock = key.fileobj
        if sock is listener:
            conn, _ = listener.accept()
            conn.setblocking(True)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sel.register(conn, selectors.EVENT_READ)
            continue
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if data:
            sock.sendall(data)
        else:
            sel.unregister(sock)
            sock.close()
"""


class RunFailed(Exception):
    """A container or a command did not do what the bench needs; the message says what."""


# -- the daemon ---------------------------------------------------------------------


class Daemon:
    """sandboxd on a fresh store in the scratch directory, and a client of it."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.root = tmp / "store"
        self.sock = tmp / "sandboxd.sock"
        self.log = tmp / "sandboxd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.loop = asyncio.new_event_loop()
        self.client = AsyncClient(f"unix://{self.sock}", root=self.root, autostart=False)

    def start(self) -> None:
        """Build ``base`` here, then serve the store.

        Raises:
            RunFailed: the image could not be built or the daemon did not answer.
        """
        try:
            Engine(self.root).ensure_base()
        except Exception as exc:
            raise RunFailed(f"cannot build the image base: {exc}") from exc
        env = {**os.environ, "SANDBOX_ROOT": str(self.root)}
        env.pop("SANDBOX_HOST", None)
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [str(Path(sys.executable).with_name("sandboxd")), "--host",
                 f"unix://{self.sock}", "--root", str(self.root)],
                stdout=log, stderr=log, env=env,
                start_new_session=True,  # a ^C reaches the bench, which stops it in order
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RunFailed(f"sandboxd exited {self.proc.returncode}: {self.log_tail()}")
            try:
                self.run(self.client.version())  # AsyncClient.ping parses "OK" as JSON
                return
            except Exception as exc:
                why = exc
            if time.monotonic() > deadline:
                raise RunFailed(f"sandboxd did not answer within 60 s ({why}): {self.log_tail()}")
            time.sleep(0.1)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-400:] if self.log.exists() else ""

    def bridges_up(self) -> int:
        """How often the daemon has brought lab's bridge up so far (from its log)."""
        return self.log.read_text(errors="replace").count("network lab is up")

    def stop(self) -> list[str]:
        """Close the client, SIGTERM the daemon (it stops its containers); what is left."""
        left = []
        with contextlib.suppress(Exception):
            self.run(self.client.close())
        with contextlib.suppress(Exception):
            self.loop.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                left.append("sandboxd ignored SIGTERM for 30 s: killed")
        log = self.log.read_text(errors="replace") if self.log.exists() else ""
        if "Traceback" in log:
            tail = log[log.index("Traceback") :][:1500]
            left.append(f"the daemon logged a traceback:\n{tail}")
        return left


def body(network: str, *, publish: bool = False, cmd: tuple[str, ...] = ("true",),
         labels: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """A ``POST /containers/create`` body, as ``sandbox run --network NET [-p ...]`` sends it."""
    host: dict[str, Any] = {"NetworkMode": network}
    if publish:
        host["PortBindings"] = {f"{PORT}/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}
    return {"Image": "base", "Cmd": list(cmd), "Labels": labels or dict(FOREGROUND),
            "HostConfig": host, "NetworkingConfig": {"EndpointsConfig": {}}}  # fmt: skip


PHASES = ("create", "attach + wait", "start", "start -> exit", "remove")


@dataclass
class Run:
    """One container's run: ms from create to removed, its output, ms of each phase."""

    ms: float
    output: bytes
    phases: dict[str, float]


async def run_attached(client: AsyncClient, spec: dict[str, Any]) -> Run:
    """Create, attach, wait, start, read to the end, remove (as ``sandbox run`` does).

    The phases are timed between the client's requests: ``start`` ends when
    the daemon answers the start (the network plugged in, the process
    cloned), ``start -> exit`` when the exit status arrives.

    Raises:
        RunFailed: the command exited non-zero.
    """
    out = bytearray()
    stamps = [time.perf_counter_ns()]
    cid = await client.create(spec)
    stamps.append(time.perf_counter_ns())
    try:
        conn = await client.attach(cid, stdin=False)
        try:
            waiting = await client.wait(cid, "next-exit")
            stamps.append(time.perf_counter_ns())
            try:
                await client.start(cid)
                stamps.append(time.perf_counter_ns())
                async for _, data in conn.output():
                    out += data
                status, why = await waiting.result()
                stamps.append(time.perf_counter_ns())
            finally:
                waiting.close()
        finally:
            conn.close()
    except BaseException:
        with contextlib.suppress(Exception):
            await client.remove(cid, force=True)
        raise
    await client.remove(cid)
    stamps.append(time.perf_counter_ns())
    if status != 0:
        raise RunFailed(f"{' '.join(spec['Cmd'])} exited {status} {why}: {bytes(out)[-300:]!r}")
    spans = zip(PHASES, stamps[:-1], stamps[1:], strict=True)
    phases = {name: (b - a) / 1e6 for name, a, b in spans}
    return Run((stamps[-1] - stamps[0]) / 1e6, bytes(out), phases)


# -- the methods of the rounds ----------------------------------------------------------


class ApiRun:
    """``true`` in a fresh container through the daemon's API."""

    def __init__(self, name: str, daemon: Daemon, spec: dict[str, Any]) -> None:
        self.name, self.daemon, self.spec = name, daemon, spec
        self.last_phases: dict[str, float] = {}

    def once(self) -> float:
        run = self.daemon.run(run_attached(self.daemon.client, self.spec))
        self.last_phases = run.phases
        return float(run.ms)


class Command:
    """A command timed from posix_spawn to its reaped exit; ``argv`` may change per run."""

    def __init__(self, name: str, spawner: Spawner, argv: Callable[[], list[str]]) -> None:
        self.name, self.spawner, self.argv = name, spawner, argv

    def once(self) -> float:
        return self.spawner.run(self.argv())[0]


class Hand:
    """The script's namespaces: a bridge in one of its own, a fresh one per run, all removed."""

    def __init__(self, tmp: Path) -> None:
        self.prefix = f"sbxbench-{os.getpid()}"
        self.bridge_ns = f"{self.prefix}-br"
        self.script = tmp / "hand.sh"
        self.count = 0

    def setup(self) -> None:
        """Write the script; make the bridge's namespace (br0, the gateway's address, up).

        Raises:
            RunFailed: ``ip`` is missing or refused.
        """
        if not shutil.which("ip", path=HOST_PATH):
            raise RunFailed("ip (iproute2) is not installed")
        self.script.write_text(HAND_SCRIPT)
        gateway, _, prefixlen = HAND_SUBNET
        ns = self.bridge_ns
        for argv in (["ip", "netns", "add", ns], ["ip", "-n", ns, "link", "set", "lo", "up"],
                     ["ip", "-n", ns, "link", "add", "br0", "type", "bridge"],
                     ["ip", "-n", ns, "addr", "add", f"{gateway}/{prefixlen}", "dev", "br0"],
                     ["ip", "-n", ns, "link", "set", "br0", "up"]):  # fmt: skip
            done = subprocess.run(argv, capture_output=True, text=True, env={"PATH": HOST_PATH},
                                  check=False)  # fmt: skip
            if done.returncode != 0:
                raise RunFailed(f"`{' '.join(argv)}` failed: {done.stderr.strip()}")

    def argv(self, veth: bool) -> Callable[[], list[str]]:
        def next_run() -> list[str]:
            self.count += 1
            return ["/bin/sh", str(self.script), f"{self.prefix}-{self.count}",
                    self.bridge_ns if veth else "", str(self.count)]  # fmt: skip

        return next_run

    def remove(self) -> list[str]:
        """``ip netns del`` every namespace of ours; /run/netns too if we made it."""
        left = []
        for name in named_namespaces():
            if not name.startswith(self.prefix + "-"):
                continue
            done = subprocess.run(["ip", "netns", "del", name], capture_output=True,
                                  env={"PATH": HOST_PATH}, check=False)  # fmt: skip
            if done.returncode != 0:
                left.append(f"namespace {name}")
        if not RUN_NETNS_EXISTED and NETNS_DIR.is_dir() and not named_namespaces():
            if str(NETNS_DIR) in mount_points():
                subprocess.run(["umount", str(NETNS_DIR)], capture_output=True, check=False)
            with contextlib.suppress(OSError):
                NETNS_DIR.rmdir()
            if NETNS_DIR.exists():
                left.append(f"{NETNS_DIR} (made by this run's first `ip netns add`)")
        return left


def named_namespaces() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def mount_points() -> set[str]:
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        return {line.split()[4] for line in f}


# -- round trips ----------------------------------------------------------------------


class Pair:
    """Two containers left running on lab: the server (it publishes PORT) and a client."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.ids: list[str] = []
        self.ns_fds: dict[str, int] = {}
        self.server_ip = ""
        self.host_port = 0
        self.echo: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start both (``sleep infinity``), then the echo server in the server's namespace.

        Raises:
            RunFailed: a container did not come up with an address and a port.
        """
        client = self.daemon.client
        for role in ("server", "client"):
            spec = body("lab", publish=role == "server", cmd=("sleep", "infinity"),
                        labels={"bench": role})  # fmt: skip
            cid = self.daemon.run(client.create(spec, f"bench-{role}"))
            self.ids.append(cid)
            self.daemon.run(client.start(cid))
            info = self.daemon.run(client.inspect_container(cid))
            pid = info["State"]["Pid"]
            self.ns_fds[role] = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            if role == "server":
                settings = info["NetworkSettings"]
                self.server_ip = settings["Networks"]["lab"]["IPAddress"]
                self.host_port = int(settings["Ports"][f"{PORT}/tcp"][0]["HostPort"])
        if not self.server_ip or not self.host_port:
            raise RunFailed(f"the server has no address or published port: {self.server_ip!r}")
        listener = netns.socket_in(self.ns_fds["server"], socket.AF_INET, socket.SOCK_STREAM)
        with listener:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("0.0.0.0", PORT))
            listener.listen(64)
            # Its own session: a ^C reaches the bench, which kills it.
            self.echo = subprocess.Popen([sys.executable, "-c", ECHO_SERVER,
                                          str(listener.fileno())],
                                         pass_fds=[listener.fileno()],
                                         start_new_session=True)  # fmt: skip

    def paths(self) -> dict[str, tuple[Callable[[], socket.socket], tuple[str, int]]]:
        """Each path: how to make the client's socket, and where it connects."""
        server, client = self.ns_fds["server"], self.ns_fds["client"]

        def inside(fd: int) -> Callable[[], socket.socket]:
            return lambda: netns.socket_in(fd, socket.AF_INET, socket.SOCK_STREAM)

        return {
            LOOPBACK: (inside(server), ("127.0.0.1", PORT)),
            C2C: (inside(client), (self.server_ip, PORT)),
            PUBLISHED: (lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM),
                        ("127.0.0.1", self.host_port)),
        }  # fmt: skip

    def stop(self) -> None:
        """The echo server, our fds, then both containers (killed and removed)."""
        if self.echo is not None and self.echo.poll() is None:
            self.echo.kill()
            self.echo.wait()
        for fd in self.ns_fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self.ns_fds.clear()
        for cid in self.ids:
            with contextlib.suppress(Exception):
                self.daemon.run(self.daemon.client.remove(cid, force=True))
        self.ids.clear()


def echo_once(sock: socket.socket) -> None:
    sock.sendall(MESSAGE)
    got = 0
    while got < len(MESSAGE):
        data = sock.recv(len(MESSAGE) - got)
        if not data:
            raise RunFailed("the echo server closed the connection")
        got += len(data)


def connected(make: Callable[[], socket.socket], addr: tuple[str, int]) -> socket.socket:
    sock = make()
    sock.settimeout(10)
    sock.connect(addr)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def ping_times(output: bytes) -> list[float]:
    """The round trips of ping's per-packet lines, in µs."""
    return [float(ms) * 1e3 for ms in re.findall(rb"time=([\d.]+) ms", output)]


# -- the bench -----------------------------------------------------------------------


class Bench:
    """Set up, measure, report, clean up."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args, self.tmp = args, tmp
        self.err = Console(stderr=True, highlight=False)
        self.daemon = Daemon(tmp)
        self.hand = Hand(tmp)
        self.pair = Pair(self.daemon)
        self.spawner = Spawner(str(tmp / "stderr"), {"PATH": HOST_PATH})
        self.methods: list[Any] = []
        self.samples: dict[str, Samples] = {}
        self.trips: dict[tuple[str, str], list[float]] = {}  # (path, kind) -> µs
        self.phases: dict[str, list[dict[str, float]]] = {}  # method -> each run's phases, ms
        self.previous: dict[str, list[str]] = {}  # method -> the method run just before each
        self.cold_found_down = 0
        self.load: list[float] = []
        self.versions: dict[str, str] = {}
        self.parents_before = cgroup_parents()
        self.before = snapshot(tmp)
        self.left: list[str] = []

    def skip(self, name: str, why: str) -> None:
        self.samples[name] = Samples(name, skipped=why)

    def add(self, method: Any) -> None:
        self.methods.append(method)
        self.samples[method.name] = Samples(method.name)

    def setup(self) -> None:
        self.err.print("starting sandboxd on a fresh store (building base) ...")
        try:
            self.daemon.start()
        except RunFailed as exc:
            raise SystemExit(f"bench/network: {exc}") from None
        self.versions["jupyter-sandbox"] = _version("jupyter-sandbox")
        for name, spec in ((NONE, body("none")), (LAB, body("lab")),
                           (NONE_P, body("none", publish=True)),
                           (LAB_P, body("lab", publish=True))):  # fmt: skip
            self.add(ApiRun(name, self.daemon, spec))
        try:
            self.hand.setup()
            self.add(Command(HAND_LO, self.spawner, self.hand.argv(veth=False)))
            self.add(Command(HAND_VETH, self.spawner, self.hand.argv(veth=True)))
            self.versions["iproute2"] = first_line(["ip", "-V"])
        except RunFailed as exc:
            self.skip(HAND_LO, str(exc))
            self.skip(HAND_VETH, str(exc))
        true = shutil.which("true", path=HOST_PATH) or "/bin/true"
        if unshare := shutil.which("unshare", path=HOST_PATH):
            self.add(Command(UNSHARE, self.spawner, lambda: [unshare, true]))
            self.add(Command(UNSHARE_NET, self.spawner, lambda: [unshare, "--net", true]))
            self.versions["unshare"] = first_line([unshare, "--version"])
        else:
            for name in (UNSHARE, UNSHARE_NET):
                self.skip(name, "unshare (util-linux) not found")
        if bwrap := shutil.which("bwrap", path=HOST_PATH):
            self.add(Command(BWRAP, self.spawner, lambda: [bwrap, "--ro-bind", "/", "/", true]))
            net = [bwrap, "--unshare-net", "--ro-bind", "/", "/", true]
            self.add(Command(BWRAP_NET, self.spawner, lambda: net))
            self.versions["bwrap"] = first_line([bwrap, "--version"])
        else:
            for name in (BWRAP, BWRAP_NET):
                self.skip(name, "bwrap not installed (apt-get install bubblewrap)")

    # -- measuring ------------------------------------------------------------------------

    def measure(self) -> None:
        self.load.append(os.getloadavg()[0])
        self.err.print("starting the round-trip pair on lab (server with -p, client) ...")
        try:
            self.pair.start()
        except Exception as exc:
            raise SystemExit(f"bench/network: the round-trip pair: {exc}") from None
        self.rounds()
        self.round_trips()
        self.pings()
        self.pair.stop()
        self.cold()
        self.load.append(os.getloadavg()[0])

    def rounds(self) -> None:
        """Every method once a round, in a new shuffled order; the pair stays on lab."""
        methods = list(self.methods)
        total = self.args.runs + self.args.warmup
        self.err.print(f"{self.args.runs} rounds (+{self.args.warmup} warm-up) of "
                       f"{len(methods)} methods, interleaved")  # fmt: skip
        rng = random.Random(self.args.seed)
        step = max(1, total // 10)
        previous = ""
        for i in range(total):
            rng.shuffle(methods)
            for method in list(methods):
                try:
                    ms = method.once()
                except Exception as exc:
                    self.samples[method.name].skipped = f"failed: {exc}"
                    methods.remove(method)
                    continue
                if i >= self.args.warmup:
                    self.samples[method.name].ms.append(ms)
                    self.previous.setdefault(method.name, []).append(previous)
                    if phases := getattr(method, "last_phases", None):
                        self.phases.setdefault(method.name, []).append(phases)
                previous = method.name
            if (i + 1) % step == 0:
                self.err.print(f"  round {i + 1}/{total}")

    def round_trips(self) -> None:
        """TCP echo on each path: kept-open in chunks, then new connections, interleaved."""
        paths = self.pair.paths()
        rng = random.Random(self.args.seed)
        n = self.args.round_trips
        self.err.print(f"TCP echo: {n} round trips on a kept-open connection and "
                       f"{self.args.connections} new connections per path")  # fmt: skip
        socks = {name: connected(make, addr) for name, (make, addr) in paths.items()}
        try:
            for sock in socks.values():
                for _ in range(20):  # warm-up: the neighbour's address is resolved
                    echo_once(sock)
            order = list(paths)
            for start in range(0, n, CHUNK):
                rng.shuffle(order)
                for name in order:
                    times = self.trips.setdefault((name, KEPT), [])
                    sock = socks[name]
                    for _ in range(min(CHUNK, n - start)):
                        t0 = time.perf_counter_ns()
                        echo_once(sock)
                        times.append((time.perf_counter_ns() - t0) / 1e3)
        finally:
            for sock in socks.values():
                sock.close()
        order = list(paths)
        for _ in range(self.args.connections):
            rng.shuffle(order)
            for name in order:
                make, addr = paths[name]
                sock = make()  # made before the clock: entering a namespace is not the path
                sock.settimeout(10)
                t0 = time.perf_counter_ns()
                sock.connect(addr)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                echo_once(sock)
                sock.close()
                self.trips.setdefault((name, NEW), []).append((time.perf_counter_ns() - t0) / 1e3)

    def pings(self) -> None:
        """The image's ping in a fresh container: to the server by name, to its loopback."""
        n = self.args.pings
        if n <= 0:
            return
        self.err.print(f"ping: {n} packets 10 ms apart, from a container on lab to "
                       f"bench-server, and to its own loopback")  # fmt: skip
        for name, network, target in ((PING_C2C, "lab", "bench-server"),
                                      (PING_LO, "none", "127.0.0.1")):  # fmt: skip
            cmd = ("ping", "-n", "-c", str(n + 1), "-i", "0.01", "-W", "1", target)
            try:
                run = self.daemon.run(run_attached(self.daemon.client, body(network, cmd=cmd)))
            except Exception as exc:
                self.err.print(f"[yellow]ping failed: {exc}[/]")
                continue
            # The first packet also resolves the neighbour's MAC (ARP): not counted.
            self.trips[(name, "ping")] = ping_times(run.output)[1:]

    def cold(self) -> None:
        """none and lab, each after a pause long enough for lab's bridge to go down."""
        n = self.args.cold_runs
        if n <= 0:
            return
        self.err.print(f"{n} runs each of none and lab after a {PAUSE:.1f} s pause "
                       "(lab's bridge goes down when idle for "
                       f"{IDLE_SECONDS:g} s) ...")  # fmt: skip
        for name in (COLD_NONE, COLD_LAB):
            self.samples[name] = Samples(name)
        rng = random.Random(self.args.seed)
        for _ in range(n):
            order = [COLD_NONE, COLD_LAB]
            rng.shuffle(order)
            for name in order:
                time.sleep(PAUSE)
                ups = self.daemon.bridges_up()
                spec = body("lab" if name == COLD_LAB else "none")
                try:
                    ms = self.daemon.run(run_attached(self.daemon.client, spec)).ms
                except Exception as exc:
                    self.samples[name].skipped = f"failed: {exc}"
                    return
                self.samples[name].ms.append(ms)
                if name == COLD_LAB and self.daemon.bridges_up() > ups:
                    self.cold_found_down += 1

    # -- reporting -----------------------------------------------------------------------

    def results(self) -> dict[str, Any]:
        rows = []
        for what, without, with_ in PAIRS:
            a, b = self.samples.get(without), self.samples.get(with_)
            item: dict[str, Any] = {"what": what}
            for key, s in (("without", a), ("with", b)):
                if s is None:
                    continue
                item[key] = {"method": s.name, "n": len(s.ms), "skipped": s.skipped or None,
                             "median_ms": _r(s.median) if s.ms else None,
                             "p95_ms": _r(s.p95) if s.ms else None}  # fmt: skip
            if a and b and a.ms and b.ms:
                paired = [y - x for x, y in zip(a.ms, b.ms, strict=False)]
                item["extra_median_ms"] = _r(b.median - a.median)
                item["extra_p95_ms"] = _r(b.p95 - a.p95)
                item["paired_extra_median_ms"] = _r(median(paired))
            if with_ == COLD_LAB and b is not None:
                item["bridge_found_down"] = self.cold_found_down
            rows.append(item)
        trips = [{"path": path, "kind": kind, "n": len(v), "median_us": _r(median(v)),
                  "p95_us": _r(p95(v))} for (path, kind), v in self.trips.items() if v]  # fmt: skip
        phases = {name: {phase: _r(median([run[phase] for run in runs])) for phase in PHASES}
                  for name, runs in self.phases.items() if runs}  # fmt: skip
        return {"machine": machine(), "load_average_1min": self.load, "runs": self.args.runs,
                "warmup": self.args.warmup, "cold_runs": self.args.cold_runs,
                "versions": self.versions, "start_to_exit": rows, "phases_median_ms": phases,
                "after_a_veth_teardown": self.neighbours(), "round_trips": trips}  # fmt: skip

    def neighbours(self) -> list[dict[str, Any]]:
        """Each method's median right after a run that tore a veth pair down, and otherwise.

        The kernel deletes a veth pair (and a namespace) with waits for RCU
        grace periods under the rtnl lock, partly after the API call or the
        script has returned; whatever runs next and needs that lock (any new
        network namespace does) waits too.
        """
        rows = []
        for name, s in self.samples.items():
            before = self.previous.get(name, [])
            after = [ms for ms, prev in zip(s.ms, before, strict=False) if prev in TEARDOWNS]
            other = [ms for ms, prev in zip(s.ms, before, strict=False) if prev not in TEARDOWNS]
            if after and other:
                rows.append({"method": name, "after_n": len(after), "other_n": len(other),
                             "after_median_ms": _r(median(after)),
                             "other_median_ms": _r(median(other))})  # fmt: skip
        return rows

    def report(self) -> None:
        data = self.results()
        if self.args.json:
            print(json.dumps(data, indent=1))
            return
        out = Console(highlight=False, width=max(140, shutil.get_terminal_size().columns))
        m = data["machine"]
        out.print(f"machine: nproc {m['nproc']}, kernel {m['kernel']}, cgroups {m['cgroups']}, "
                  f"{m['cpu']}, Python {m['python']}")  # fmt: skip
        load = " -> ".join(f"{x:.2f}" for x in self.load)
        out.print(f"load average (1 min) during the run: {load} (anything near nproc is noise)")
        table = Table(title=f"start to exit of `true`, ms: median / p95 ({self.args.runs} "
                            f"interleaved rounds, {self.args.warmup} warm-up rounds excluded; "
                            f"pause rows: {self.args.cold_runs} runs)")  # fmt: skip
        table.add_column("what: without -> with", justify="left", no_wrap=True)
        for col in ("without", "with", "with - without", "per round: median"):
            table.add_column(col, justify="right", no_wrap=True)
        for row in data["start_to_exit"]:
            cells = []
            for key in ("without", "with"):
                s = row.get(key)
                cells.append(f"{s['median_ms']:.2f} / {s['p95_ms']:.2f}"
                             if s and s["median_ms"] is not None else "-")  # fmt: skip
            if "extra_median_ms" in row:
                cells.append(f"{row['extra_median_ms']:+.2f} / {row['extra_p95_ms']:+.2f}")
                cells.append(f"{row['paired_extra_median_ms']:+.2f}")
            else:
                cells += ["-", "-"]
            table.add_row(row["what"], *cells)
        out.print(table)
        out.print("with - without: the difference of the medians / of the p95s; per round: the "
                  "median of each round's (with - without), which a slow patch of the run "
                  "shifts less")  # fmt: skip
        cold = next((r for r in data["start_to_exit"] if "bridge_found_down" in r), None)
        if cold and cold.get("with"):
            out.print(f"after a pause: lab's bridge was down (brought up by the run) in "
                      f"{cold['bridge_found_down']} of {cold['with']['n']} lab runs")  # fmt: skip
        self.report_phases(out, data["phases_median_ms"])
        self.report_neighbours(out, data["after_a_veth_teardown"])
        trips = Table(title="round trips, µs: median / p95 (64-byte TCP echo; ping: per packet)")
        trips.add_column("path", justify="left", no_wrap=True)
        for col in (KEPT, NEW, "ping"):
            trips.add_column(col, justify="right", no_wrap=True)
        for path in (LOOPBACK, C2C, PUBLISHED, PING_LO, PING_C2C):
            cells = []
            for kind in (KEPT, NEW, "ping"):
                v = self.trips.get((path, kind))
                cells.append(f"{median(v):.1f} / {p95(v):.1f} (n={len(v)})" if v else "")
            if any(cells):
                trips.add_row(path, *cells)
        out.print(trips)
        out.print("TCP: the client's socket is the bench's, made inside the client container's "
                  "namespace (or on the host, for the published port); the echo server is a "
                  "process serving a socket made inside the server container's namespace. "
                  "'new connection': connect, one echo, close (the socket is made before the "
                  "clock starts).")  # fmt: skip
        for s in self.samples.values():
            if s.skipped:
                out.print(f"[yellow]skipped[/] {s.name}: {s.skipped}")
        for what, text in self.versions.items():
            out.print(f"{what}: {text}")

    def report_phases(self, out: Console, phases: dict[str, dict[str, float]]) -> None:
        names = [n for n in (NONE, LAB, NONE_P, LAB_P) if n in phases]
        if not names:
            return
        table = Table(title="where the API path's time goes: median ms of each phase, "
                            "timed between the client's requests")  # fmt: skip
        table.add_column("phase", justify="left", no_wrap=True)
        for name in names:
            table.add_column(name.removeprefix("sandbox: "), justify="right", no_wrap=True)
        both = NONE in phases and LAB in phases
        if both:
            table.add_column("lab - none", justify="right", no_wrap=True)
        for phase in PHASES:
            cells = [f"{phases[n][phase]:.2f}" for n in names]
            if both:
                cells.append(f"{phases[LAB][phase] - phases[NONE][phase]:+.2f}")
            table.add_row(phase, *cells)
        out.print(table)

    def report_neighbours(self, out: Console, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        title = ("median ms of each method right after a run that removed a veth pair (lab, "
                 "lab -p, by hand with a veth), and after any other")  # fmt: skip
        table = Table(title=title)
        table.add_column("method", justify="left", no_wrap=True)
        for col in ("after a veth teardown", "after any other", "difference"):
            table.add_column(col, justify="right", no_wrap=True)
        for r in rows:
            table.add_row(r["method"], f"{r['after_median_ms']:.2f} (n={r['after_n']})",
                          f"{r['other_median_ms']:.2f} (n={r['other_n']})",
                          f"{r['after_median_ms'] - r['other_median_ms']:+.2f}")  # fmt: skip
        out.print(table)

    # -- cleanup -------------------------------------------------------------------------

    def cleanup(self) -> None:
        """The pair, the daemon, the script's namespaces, the directory; print what is left."""
        try:
            self.pair.stop()
        except Exception as exc:
            self.left.append(f"the round-trip pair: {exc}")
        self.left += self.daemon.stop()
        self.left += self.hand.remove()
        self.spawner.close()
        for point in mounts_under(self.tmp):
            self.left.append(f"mount {point} (unmounted)")
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
        self.left += remove_scratch(self.tmp, self.parents_before)
        after = snapshot(self.tmp, wait_for=self.before)
        for what, items in after.items():
            new = items - self.before[what]
            if new:
                self.left.append(f"{what}: {', '.join(sorted(new))} (new since the start; "
                                 f"another user's if the machine is shared)")  # fmt: skip
        if self.left:
            self.err.print(f"[red]left behind: {'; '.join(self.left)}[/]")
        else:
            self.err.print("cleaned up: no daemon, container, namespace, link or mount left")


def snapshot(tmp: Path, wait_for: dict[str, set[str]] | None = None) -> dict[str, set[str]]:
    """What the run could leave: named and held network namespaces, host links, container
    processes, mounts under ``tmp``; retried ~3 s to match ``wait_for`` (namespaces and
    processes take a moment to go once their holder has)."""
    deadline = time.monotonic() + 3.0
    while True:
        held, procs = set(), set()
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            with contextlib.suppress(OSError):
                held.add(os.readlink(f"/proc/{pid}/ns/net"))
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/exe").startswith("/memfd:tini"):
                    procs.add(pid)
            with contextlib.suppress(OSError):
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    with contextlib.suppress(OSError):
                        target = os.readlink(f"/proc/{pid}/fd/{fd}")
                        if target.startswith("net:"):
                            held.add(target)
        found = {"named network namespaces": set(named_namespaces()),
                 "network namespaces": held, "host links": set(os.listdir("/sys/class/net")),
                 "container processes": procs, "mounts": set(mounts_under(tmp))}  # fmt: skip
        found["mounts"] |= {p for p in mount_points() if p.startswith(str(NETNS_DIR))}
        if wait_for is None or time.monotonic() > deadline:
            return found
        if all(found[k] <= wait_for[k] for k in found):
            return found
        time.sleep(0.05)


def _r(x: float) -> float:
    return round(x, 3)


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "(not installed)"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/network", description=__doc__.split("\n")[0])
    add = p.add_argument
    add("--runs", type=int, default=200, metavar="N",
        help="measured rounds, each running every method once (default 200)")  # fmt: skip
    add("--warmup", type=int, default=5, metavar="N",
        help="rounds before measuring, not counted (default 5)")  # fmt: skip
    add("--cold-runs", type=int, default=20, metavar="N",
        help=f"runs each of none and lab after a {PAUSE:.1f} s pause (lab's bridge down); "
             "0 skips them (default 20)")  # fmt: skip
    add("--round-trips", type=int, default=2000, metavar="N",
        help="TCP echoes per path on one kept-open connection (default 2000)")  # fmt: skip
    add("--connections", type=int, default=300, metavar="N",
        help="new connections per path, one echo each (default 300)")  # fmt: skip
    add("--pings", type=int, default=200, metavar="N",
        help="ping packets per path, 10 ms apart; 0 skips them (default 200)")  # fmt: skip
    add("--seed", type=int, default=1, help="seed of the per-round shuffle")
    add("--json", action="store_true", help="print the results as JSON instead")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run_bench(
        Bench,
        parse_args(argv),
        needs_root="bench/network needs root: the daemon runs containers, "
        "and the script makes network namespaces",
        prefix="sandbox-bench-network-",
    )


if __name__ == "__main__":
    sys.exit(main())
