"""Latency through the API: sandboxd against the engine in-process and against a real dockerd.

Side by side, in one run, on the same root filesystem (the single layer of
the default image ``base``; dockerd gets it by ``docker import``):

- ``_ping``: one request's round trip on an open (keep-alive) connection;
- create + start + wait + remove of a container running ``true``, through
  the API on an open connection (what docker-py does), and through the
  engine called in-process (what the API adds is the difference);
- ``docker run --rm base true``: the docker CLI (a new process each time)
  pointed at dockerd and at sandboxd, and ``sandbox run --rm base true``
  pointed at sandboxd.

sandboxd runs on a temporary store and socket; dockerd (Debian's docker.io,
installed if missing) on its own data root, exec root and socket under the
same temporary directory, with no bridge, no iptables and no IP forwarding:
nothing leaves the machine, and nothing is pulled. The methods are
interleaved, every round in a new shuffled order, so a noisy neighbour
slows them all alike. Everything made is removed at the end, also after an
error or Ctrl-C. Benchmarks print figures; they never assert.

EXAMPLE:
    bench/api                   # 100 runs per method
    bench/api --runs 30 --json
    bench/api --no-docker       # sandboxd and the engine only
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from _common import (
    HOST_PATH,
    Samples,
    Spawner,
    apt_install,
    cgroup_parents,
    first_line,
    machine,
    mounts_under,
    remove_scratch,
    run_bench,
)
from rich.console import Console
from rich.table import Table

from sandbox.engine import Engine

DOCKER_CLI = "/usr/local/bin/docker"
BODY = {"Image": "base", "Cmd": ["true"], "HostConfig": {"NetworkMode": "none"}}
GOAL = 5.0  # docker run through sandboxd should take under a fifth of dockerd's time
# Rows of the table: (what is timed, {column: method name}).
PING, LIFECYCLE, DOCKER_RUN, SANDBOX_RUN = (
    "_ping round trip (API)",
    "create+start+wait+rm `true` (API)",
    "docker run --rm base true",
    "sandbox run --rm base true",
)
SANDBOXD, ENGINE, DOCKERD = "sandboxd", "engine in-process", "dockerd"


class UnixConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a unix socket, kept open between requests."""

    def __init__(self, path: str, timeout: float = 60) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.path)
        self.sock = sock

    def call(self, method: str, url: str, body: Any = None, expect: int = 200) -> Any:
        """One request; the decoded JSON reply (or None).

        Raises:
            RuntimeError: another status than ``expect``.
        """
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        self.request(method, url, body=data, headers=headers)
        reply = self.getresponse()
        raw = reply.read()
        if reply.status != expect:
            raise RuntimeError(f"{method} {url}: {reply.status} {raw[:200]!r}")
        return json.loads(raw) if raw.strip().startswith((b"{", b"[")) else None


class ApiMethod:
    """Ping or run a container through one daemon's API on a kept-open connection."""

    def __init__(self, name: str, sock: Path, prefix: str, what: str) -> None:
        self.name, self.what = name, what
        self.conn = UnixConnection(str(sock))
        self.prefix = prefix

    def once(self) -> float:
        t0 = time.perf_counter_ns()
        if self.what == PING:
            self.conn.call("GET", "/_ping")
        else:
            p = self.prefix
            cid = self.conn.call("POST", f"{p}/containers/create", BODY, expect=201)["Id"]
            self.conn.call("POST", f"{p}/containers/{cid}/start", expect=204)
            status = self.conn.call("POST", f"{p}/containers/{cid}/wait")["StatusCode"]
            self.conn.call("DELETE", f"{p}/containers/{cid}", expect=204)
            if status != 0:
                raise RuntimeError(f"`true` exited {status}")
        return (time.perf_counter_ns() - t0) / 1e6

    def close(self) -> None:
        self.conn.close()


class EngineMethod:
    """The same create+start+wait+remove through `Engine`, in this process."""

    name = f"{LIFECYCLE} / {ENGINE}"

    def __init__(self, root: Path) -> None:
        # The daemon's set-up: a zygote clones the containers.
        self.engine = Engine(root, zygote=True)
        self.loop = asyncio.new_event_loop()

    def once(self) -> float:
        return self.loop.run_until_complete(self._one())

    async def _one(self) -> float:
        t0 = time.perf_counter_ns()
        record = self.engine.create("base", ["true"])
        status = await self.engine.start(record.id).exited
        self.engine.remove(record.id)
        t1 = time.perf_counter_ns()
        if status != 0:
            raise RuntimeError(f"`true` exited {status}")
        return (t1 - t0) / 1e6

    def close(self) -> None:
        for running in list(self.engine.running.values()):
            with contextlib.suppress(OSError):
                os.kill(running.spawned.pid, signal.SIGKILL)
        self.engine.running.clear()
        self.engine.close()
        self.loop.close()


class CommandMethod:
    """A whole client command (a new process), timed from spawn to exit."""

    def __init__(self, name: str, argv: list[str], spawner: Spawner) -> None:
        self.name, self.argv, self.spawner = name, argv, spawner

    def once(self) -> float:
        return self.spawner.run(self.argv)[0]

    def close(self) -> None:
        pass


class Daemons:
    """sandboxd and dockerd under one temporary directory, started and stopped."""

    def __init__(self, tmp: Path, err: Console) -> None:
        self.tmp, self.err = tmp, err
        self.root = tmp / "store"
        self.sandboxd_sock = tmp / "sandboxd.sock"
        self.docker_dir = tmp / "docker"
        self.dockerd_sock = self.docker_dir / "docker.sock"
        self.sandboxd: subprocess.Popen[bytes] | None = None
        self.dockerd: subprocess.Popen[bytes] | None = None
        self.docker_env = {"PATH": HOST_PATH, "DOCKER_CONFIG": str(tmp / "docker-config"),
                           "DOCKER_CLI_HINTS": "false", "HOME": str(tmp)}  # fmt: skip
        # What dockerd makes outside its directories, to remove only if we made it.
        self.outside = {p: os.path.exists(p) for p in ("/etc/docker/key.json", "/run/docker")}
        self.docker_cgroups_before = set(glob.glob("/sys/fs/cgroup/*/docker"))

    # -- sandboxd ---------------------------------------------------------------------

    def start_sandboxd(self) -> str:
        """Build ``base`` in a fresh store and serve it; "" or why it failed."""
        env = {**os.environ, "SANDBOX_ROOT": str(self.root)}
        env.pop("SANDBOX_HOST", None)
        bin_dir = Path(sys.executable).parent
        try:
            Engine(self.root).ensure_base()  # here, not through a daemon the CLI would start
        except Exception as exc:
            return f"cannot build the image base: {exc}"
        log = open(self.tmp / "sandboxd.log", "wb")  # noqa: SIM115  # the daemon's, until it exits
        self.sandboxd = subprocess.Popen(
            [str(bin_dir / "sandboxd"), "--host", f"unix://{self.sandboxd_sock}",
             "--root", str(self.root)],
            stdout=log, stderr=log, env=env,
        )  # fmt: skip
        log.close()
        return _wait_ping(self.sandboxd_sock, self.sandboxd, self.tmp / "sandboxd.log")

    def base_layer(self) -> Path:
        images = json.loads((self.root / "refs.json").read_text())
        record = json.loads((self.root / "images" / f"{images['base:latest']}.json").read_text())
        (layer,) = record["layers"]
        return self.root / "layers" / layer

    # -- dockerd ------------------------------------------------------------------------

    def start_dockerd(self, install: bool) -> str:
        """Start Debian's dockerd with no network and import ``base``; "" or why not."""
        if not shutil.which("dockerd", path=HOST_PATH):
            if not install:
                return "dockerd is not installed (apt-get install docker.io)"
            self.err.print("installing docker.io (Debian's dockerd) ...")
            if why := apt_install(["docker.io"]):
                return why
        if not os.access(DOCKER_CLI, os.X_OK):
            return f"the docker CLI is not at {DOCKER_CLI}"
        d = self.docker_dir
        d.mkdir()
        log = open(d / "dockerd.log", "wb")  # noqa: SIM115  # the daemon's, until it exits
        self.dockerd = subprocess.Popen(
            ["dockerd", "--data-root", str(d / "data"), "--exec-root", str(d / "exec"),
             "--pidfile", str(d / "dockerd.pid"), "-H", f"unix://{self.dockerd_sock}",
             "--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-forward=false",
             "--ip-masq=false", "--userland-proxy=false", "--log-level=error"],
            stdout=log, stderr=log, env={"PATH": HOST_PATH}, start_new_session=True,
        )  # fmt: skip
        log.close()
        if why := _wait_ping(self.dockerd_sock, self.dockerd, d / "dockerd.log"):
            return why
        # The same root filesystem, as an image of dockerd's own: no pull.
        tarball = self.tmp / "base.tar"
        with tarfile.open(tarball, "w") as tar:
            tar.add(self.base_layer(), arcname=".")
        imported = subprocess.run(
            [DOCKER_CLI, "-H", f"unix://{self.dockerd_sock}", "import",
             "--change", f"ENV PATH={HOST_PATH}", str(tarball), "base"],
            capture_output=True, text=True, env=self.docker_env, timeout=300,
        )  # fmt: skip
        tarball.unlink()
        if imported.returncode != 0:
            return f"docker import failed: {imported.stderr.strip()[-300:]}"
        return ""

    # -- the end --------------------------------------------------------------------------

    def stop(self) -> list[str]:
        """Stop both daemons and remove what they made; returns what is left."""
        left = []
        for proc, grace in ((self.sandboxd, 15), (self.dockerd, 30)):
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.dockerd is not None:
            # dockerd's own containerd (and its shims) are in its session.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.dockerd.pid, signal.SIGKILL)
        for mount in mounts_under(self.tmp):
            subprocess.run(["umount", "-l", mount], capture_output=True, check=False)
        for path, existed in self.outside.items():
            if not existed and os.path.exists(path):
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.unlink(path)
        for parent in set(glob.glob("/sys/fs/cgroup/*/docker")) - self.docker_cgroups_before:
            try:
                os.rmdir(parent)
            except OSError:
                left.append(parent)
        return left


def _wait_ping(sock: Path, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"exited with {proc.returncode}: {log.read_text(errors='replace')[-400:]}"
        conn = UnixConnection(str(sock), timeout=2)
        try:
            conn.call("GET", "/_ping")
            return ""
        except (OSError, RuntimeError, http.client.HTTPException):
            time.sleep(0.1)
        finally:
            conn.close()
    return f"did not answer within {timeout:g} s: {log.read_text(errors='replace')[-400:]}"


class Bench:
    """Set up, measure, report, clean up."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args, self.tmp = args, tmp
        self.err = Console(stderr=True, highlight=False)
        self.daemons = Daemons(tmp, self.err)
        self.methods: list[Any] = []
        self.samples: dict[str, Samples] = {}
        self.spawner: Spawner | None = None
        self.parents_before = cgroup_parents()
        self.load: list[float] = []
        self.versions: dict[str, str] = {}

    def name(self, row: str, column: str) -> str:
        return f"{row} / {column}"

    def add(self, method: Any) -> None:
        self.methods.append(method)
        self.samples[method.name] = Samples(method.name)

    def skip(self, row: str, column: str, why: str) -> None:
        name = self.name(row, column)
        self.samples[name] = Samples(name, skipped=why)

    def setup(self) -> None:
        self.err.print("starting sandboxd on a fresh store (building base) ...")
        if why := self.daemons.start_sandboxd():
            raise SystemExit(f"sandboxd: {why}")
        sock = self.daemons.sandboxd_sock
        # The clients' environment: the sandbox CLI finds sandboxd through
        # SANDBOX_HOST; the docker CLI is always given -H.
        env = {**self.daemons.docker_env, "SANDBOX_HOST": f"unix://{sock}"}
        self.spawner = Spawner(str(self.tmp / "stderr"), env)
        self.add(ApiMethod(self.name(PING, SANDBOXD), sock, "/v1.44", PING))
        self.add(ApiMethod(self.name(LIFECYCLE, SANDBOXD), sock, "/v1.44", LIFECYCLE))
        self.add(EngineMethod(self.daemons.root))
        sandbox_cli = str(Path(sys.executable).with_name("sandbox"))
        self.add(CommandMethod(self.name(SANDBOX_RUN, SANDBOXD),
                               [sandbox_cli, "run", "--rm", "base", "true"],
                               self.spawner))  # fmt: skip
        docker_ok = os.access(DOCKER_CLI, os.X_OK)
        if docker_ok:
            self.add(CommandMethod(self.name(DOCKER_RUN, SANDBOXD),
                                   [DOCKER_CLI, "-H", f"unix://{sock}", "run", "--rm", "base",
                                    "true"], self.spawner))  # fmt: skip
            self.versions["docker CLI"] = first_line([DOCKER_CLI, "--version"])
        else:
            self.skip(DOCKER_RUN, SANDBOXD, f"no docker CLI at {DOCKER_CLI}")
        why = "--no-docker" if self.args.no_docker else ""
        if not why:
            self.err.print("starting dockerd (no bridge, no iptables) and importing base ...")
            why = self.daemons.start_dockerd(install=not self.args.no_install)
        if why:
            for row in (PING, LIFECYCLE, DOCKER_RUN):
                self.skip(row, DOCKERD, why)
        else:
            dsock = self.daemons.dockerd_sock
            self.add(ApiMethod(self.name(PING, DOCKERD), dsock, "/v1.41", PING))
            self.add(ApiMethod(self.name(LIFECYCLE, DOCKERD), dsock, "/v1.41", LIFECYCLE))
            self.add(CommandMethod(self.name(DOCKER_RUN, DOCKERD),
                                   [DOCKER_CLI, "-H", f"unix://{dsock}", "run", "--rm", "base",
                                    "true"], self.spawner))  # fmt: skip
            self.versions["dockerd"] = first_line(["dockerd", "--version"])

    def measure(self) -> None:
        methods = list(self.methods)
        total = self.args.runs + self.args.warmup
        self.err.print(f"{self.args.runs} runs (+{self.args.warmup} warm-up) of "
                       f"{len(methods)} methods, interleaved")  # fmt: skip
        self.load.append(os.getloadavg()[0])
        rng = random.Random(self.args.seed)
        step = max(1, total // 10)
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
            if (i + 1) % step == 0:
                self.err.print(f"  round {i + 1}/{total}")
        self.load.append(os.getloadavg()[0])

    # -- reporting -------------------------------------------------------------------

    def cell(self, row: str, column: str) -> Samples | None:
        s = self.samples.get(self.name(row, column))
        return s if s is not None and s.ms else None

    def results(self) -> dict[str, Any]:
        rows = []
        for row in (PING, LIFECYCLE, DOCKER_RUN, SANDBOX_RUN):
            item: dict[str, Any] = {"what": row}
            for column in (SANDBOXD, ENGINE, DOCKERD):
                s = self.samples.get(self.name(row, column))
                if s is None:
                    continue
                item[column] = {"n": len(s.ms),
                                "median_ms": round(s.median, 3) if s.ms else None,
                                "p95_ms": round(s.p95, 3) if s.ms else None,
                                "skipped": s.skipped or None}  # fmt: skip
            ours, theirs = self.cell(row, SANDBOXD), self.cell(row, DOCKERD)
            if ours and theirs:
                item["dockerd_over_sandboxd"] = round(theirs.median / ours.median, 2)
            inproc = self.cell(row, ENGINE)
            if ours and inproc:
                item["sandboxd_over_engine"] = round(ours.median / inproc.median, 2)
            rows.append(item)
        return {"machine": machine(), "load_average_1min": self.load, "runs": self.args.runs,
                "warmup": self.args.warmup, "versions": self.versions,
                "goal": f"docker run via sandboxd under 1/{GOAL:g} of dockerd's",
                "rows": rows}  # fmt: skip

    def report(self) -> None:
        data = self.results()
        if self.args.json:
            print(json.dumps(data, indent=1))
            return
        out = Console(highlight=False, width=max(132, shutil.get_terminal_size().columns))
        m = data["machine"]
        out.print(f"machine: nproc {m['nproc']}, kernel {m['kernel']}, cgroups {m['cgroups']}, "
                  f"{m['cpu']}, Python {m['python']}")  # fmt: skip
        load = " -> ".join(f"{x:.2f}" for x in self.load)
        out.print(f"load average (1 min) during the run: {load} (anything near nproc is noise)")
        table = Table(title=f"API latency, median / p95 in ms ({self.args.runs} runs, "
                            f"{self.args.warmup} warm-up runs excluded)")  # fmt: skip
        table.add_column("what", justify="left", no_wrap=True)
        for col in (SANDBOXD, ENGINE, DOCKERD, "dockerd ÷ sandboxd", "sandboxd ÷ engine"):
            table.add_column(col, justify="right")
        for row in data["rows"]:
            cells = []
            for column in (SANDBOXD, ENGINE, DOCKERD):
                s = self.cell(row["what"], column)
                cells.append(f"{s.median:.2f} / {s.p95:.2f}" if s else "-")
            ratio = row.get("dockerd_over_sandboxd")
            over = row.get("sandboxd_over_engine")
            cells.append(f"{ratio:.1f}x" if ratio else "-")
            cells.append(f"{over:.2f}x" if over else "-")
            table.add_row(row["what"], *cells)
        out.print(table)
        for s in self.samples.values():
            if s.skipped:
                out.print(f"[yellow]skipped[/] {s.name}: {s.skipped}")
        for what, version in self.versions.items():
            out.print(f"{what}: {version}")
        ours, theirs = self.cell(DOCKER_RUN, SANDBOXD), self.cell(DOCKER_RUN, DOCKERD)
        if ours and theirs:
            share = theirs.median / ours.median
            verdict = "[green]met[/]" if share >= GOAL else "[red]not met[/]"
            out.print(f"docker run --rm base true: {ours.median:.1f} ms through sandboxd, "
                      f"{theirs.median:.1f} ms through dockerd: 1/{share:.1f} of the time "
                      f"(goal: under 1/{GOAL:g}) {verdict}")  # fmt: skip

    # -- cleanup ---------------------------------------------------------------------

    def cleanup(self) -> None:
        for method in self.methods:
            try:
                method.close()
            except Exception as exc:
                self.err.print(f"[yellow]cleanup of {method.name}: {exc}[/]")
        if self.spawner is not None:
            self.spawner.close()
        left = self.daemons.stop()
        left += remove_scratch(self.tmp, self.parents_before)
        if left:
            self.err.print(f"[red]left behind: {', '.join(left)}[/]")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/api", description=__doc__.split("\n")[0])
    p.add_argument(
        "--runs", type=int, default=100, metavar="N", help="measured runs per method (default 100)"
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=3,
        metavar="N",
        help="runs per method before measuring, not counted (default 3)",
    )
    p.add_argument("--seed", type=int, default=1, help="seed of the per-round shuffle")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead")
    p.add_argument(
        "--no-docker",
        action="store_true",
        help="do not start dockerd: sandboxd and the engine only",
    )
    p.add_argument(
        "--no-install",
        action="store_true",
        help="do not apt-get install docker.io when dockerd is missing; skip it",
    )
    return p.parse_args(argv)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    return run_bench(
        Bench,
        parse_args(argv),
        needs_root="bench/api needs root: the daemons run containers",
        prefix="sandbox-bench-api-",
    )


if __name__ == "__main__":
    sys.exit(main())
