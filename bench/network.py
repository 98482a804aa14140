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
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from _common import (
    HOST_PATH,
    Command,
    Leaks,
    RunFailed,
    Samples,
    Spawner,
    cgroup_parents,
    container_processes,
    dist_version,
    finish_cleanup,
    first_line,
    interleave,
    machine,
    median,
    mount_points,
    mounts_under,
    p95,
    print_skipped_and_versions,
    run_bench,
    start_report,
)
from _netpaths import (
    C2C,
    KEPT,
    LOOPBACK,
    NEW,
    PING_C2C,
    PING_LO,
    PORT,
    PUBLISHED,
    Pair,
    echo_times,
    ping_times,
)
from _sandboxd import Sandboxd, logged_traceback
from rich.console import Console
from rich.table import Table

from sandbox.client import AsyncClient
from sandbox.engine.networks import IDLE_SECONDS
from sandbox.runtime import netns

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


# -- the daemon ---------------------------------------------------------------------


class Daemon(Sandboxd):
    """The bench's sandboxd, and a client of it as the CLI and the kernel use it."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.loop = asyncio.new_event_loop()
        self.client = AsyncClient(f"unix://{self.sock}", root=self.root, autostart=False)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def bridges_up(self) -> int:
        """How often the daemon has brought lab's bridge up so far (from its log)."""
        return self.log.read_text(errors="replace").count("network lab is up")

    def stop(self) -> list[str]:
        """Close the client, SIGTERM the daemon (it stops its containers); what is left."""
        with contextlib.suppress(Exception):
            self.run(self.client.close())
        with contextlib.suppress(Exception):
            self.loop.close()
        left = super().stop()
        if tail := logged_traceback(self.log):
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


def leaks(tmp: Path) -> Leaks:
    """What the run could leave: named and held network namespaces, host links, container
    processes, mounts under ``tmp`` and under /run/netns."""
    return Leaks({
        "named network namespaces": lambda: set(named_namespaces()),
        "network namespaces": netns.in_use,
        "host links": lambda: set(os.listdir("/sys/class/net")),
        "container processes": container_processes,
        "mounts": lambda: set(mounts_under(tmp))
                          | {p for p in mount_points() if p.startswith(str(NETNS_DIR))},
    })  # fmt: skip


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
        self.leaks = leaks(tmp)
        self.left: list[str] = []

    def skip(self, name: str, why: str) -> None:
        self.samples[name] = Samples(name, skipped=why)

    def add(self, method: Any) -> None:
        self.methods.append(method)
        self.samples[method.name] = Samples(method.name)

    def setup(self) -> None:
        self.err.print("starting sandboxd on a fresh store (building base) ...")
        if why := self.daemon.start():
            raise SystemExit(f"bench/network: sandboxd: {why}")
        self.versions["jupyter-sandbox"] = dist_version("jupyter-sandbox")
        for name, spec in ((NONE, body("none")), (LAB, body("lab")),
                           (NONE_P, body("none", publish=True)),
                           (LAB_P, body("lab", publish=True))):  # fmt: skip
            self.add(ApiRun(name, self.daemon, spec))
        try:
            self.hand.setup()
            self.add(Command(HAND_LO, self.hand.argv(veth=False), self.spawner))
            self.add(Command(HAND_VETH, self.hand.argv(veth=True), self.spawner))
            self.versions["iproute2"] = first_line(["ip", "-V"])
        except RunFailed as exc:
            self.skip(HAND_LO, str(exc))
            self.skip(HAND_VETH, str(exc))
        true = shutil.which("true", path=HOST_PATH) or "/bin/true"
        if unshare := shutil.which("unshare", path=HOST_PATH):
            self.add(Command(UNSHARE, [unshare, true], self.spawner))
            self.add(Command(UNSHARE_NET, [unshare, "--net", true], self.spawner))
            self.versions["unshare"] = first_line([unshare, "--version"])
        else:
            for name in (UNSHARE, UNSHARE_NET):
                self.skip(name, "unshare (util-linux) not found")
        if bwrap := shutil.which("bwrap", path=HOST_PATH):
            self.add(Command(BWRAP, [bwrap, "--ro-bind", "/", "/", true], self.spawner))
            net = [bwrap, "--unshare-net", "--ro-bind", "/", "/", true]
            self.add(Command(BWRAP_NET, net, self.spawner))
            self.versions["bwrap"] = first_line([bwrap, "--version"])
        else:
            for name in (BWRAP, BWRAP_NET):
                self.skip(name, "bwrap not installed (apt-get install bubblewrap)")

    # -- measuring ------------------------------------------------------------------------

    def measure(self) -> None:
        self.load.append(os.getloadavg()[0])
        self.err.print("starting the round-trip pair on lab (server with -p, client) ...")
        specs = {role: body("lab", publish=role == "server", cmd=("sleep", "infinity"),
                            labels={"bench": role}) for role in ("server", "client")}  # fmt: skip
        try:
            self.pair.start(specs)
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
        self.err.print(f"{self.args.runs} rounds (+{self.args.warmup} warm-up) of "
                       f"{len(self.methods)} methods, interleaved")  # fmt: skip

        def kept(method: Any, previous: str) -> None:
            self.previous.setdefault(method.name, []).append(previous)
            if phases := getattr(method, "last_phases", None):
                self.phases.setdefault(method.name, []).append(phases)

        interleave(self.methods, self.samples, self.args, self.err, kept)

    def round_trips(self) -> None:
        """TCP echo on each path: kept-open in chunks, then new connections, interleaved."""
        self.err.print(f"TCP echo: {self.args.round_trips} round trips on a kept-open "
                       f"connection and {self.args.connections} new connections per "
                       f"path")  # fmt: skip
        self.trips.update(echo_times(self.pair.paths(), self.args.round_trips,
                                     self.args.connections, self.args.seed))  # fmt: skip

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
        if (out := start_report(data, self.args, min_width=140)) is None:
            return
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
        print_skipped_and_versions(out, self.samples, self.versions)

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
        clean = "cleaned up: no daemon, container, namespace, link or mount left"
        finish_cleanup(self.tmp, self.parents_before, self.leaks, self.left, self.err, clean)


def _r(x: float) -> float:
    return round(x, 3)


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
