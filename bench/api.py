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
import json
import os
import shutil
import signal
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
    Command,
    Samples,
    Spawner,
    add_run_options,
    apt_install,
    cgroup_parents,
    close_methods,
    first_line,
    interleave,
    machine,
    print_skipped_and_versions,
    remove_scratch,
    report_left,
    run_bench,
    start_report,
    unmount_under,
)
from _sandboxd import Sandboxd, UnixConnection, terminate, wait_ping
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


class Daemons:
    """sandboxd and dockerd under one temporary directory, started and stopped."""

    def __init__(self, tmp: Path, err: Console) -> None:
        self.tmp, self.err = tmp, err
        self.sandboxd = Sandboxd(tmp)
        self.docker_dir = tmp / "docker"
        self.dockerd_sock = self.docker_dir / "docker.sock"
        self.dockerd: subprocess.Popen[bytes] | None = None
        self.docker_env = {"PATH": HOST_PATH, "DOCKER_CONFIG": str(tmp / "docker-config"),
                           "DOCKER_CLI_HINTS": "false", "HOME": str(tmp)}  # fmt: skip
        # What dockerd makes outside its directories, to remove only if we made it.
        self.outside = {p: os.path.exists(p) for p in ("/etc/docker/key.json", "/run/docker")}
        self.docker_cgroups_before = set(glob.glob("/sys/fs/cgroup/*/docker"))

    def base_layer(self) -> Path:
        """The single layer of sandboxd's ``base``, read from its store."""
        root = self.sandboxd.root
        images = json.loads((root / "refs.json").read_text())
        record = json.loads((root / "images" / f"{images['base:latest']}.json").read_text())
        (layer,) = record["layers"]
        return root / "layers" / layer

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
        if why := wait_ping(self.dockerd_sock, self.dockerd, d / "dockerd.log"):
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
        left = self.sandboxd.stop()
        if self.dockerd is not None:
            terminate(self.dockerd)
            # dockerd's own containerd (and its shims) are in its session.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.dockerd.pid, signal.SIGKILL)
        # Whatever is still mounted (dockerd, killed with its session, leaves
        # its own), so that the directory can be removed.
        unmount_under(self.tmp)
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
        if why := self.daemons.sandboxd.start():
            raise SystemExit(f"sandboxd: {why}")
        sock = self.daemons.sandboxd.sock
        # The clients' environment: the sandbox CLI finds sandboxd through
        # SANDBOX_HOST; the docker CLI is always given -H.
        env = {**self.daemons.docker_env, "SANDBOX_HOST": f"unix://{sock}"}
        self.spawner = Spawner(str(self.tmp / "stderr"), env)
        self.add(ApiMethod(self.name(PING, SANDBOXD), sock, "/v1.44", PING))
        self.add(ApiMethod(self.name(LIFECYCLE, SANDBOXD), sock, "/v1.44", LIFECYCLE))
        self.add(EngineMethod(self.daemons.sandboxd.root))
        sandbox_cli = str(Path(sys.executable).with_name("sandbox"))
        self.add(Command(self.name(SANDBOX_RUN, SANDBOXD),
                               [sandbox_cli, "run", "--rm", "base", "true"],
                               self.spawner))  # fmt: skip
        docker_ok = os.access(DOCKER_CLI, os.X_OK)
        if docker_ok:
            self.add(Command(self.name(DOCKER_RUN, SANDBOXD),
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
            self.add(Command(self.name(DOCKER_RUN, DOCKERD),
                                   [DOCKER_CLI, "-H", f"unix://{dsock}", "run", "--rm", "base",
                                    "true"], self.spawner))  # fmt: skip
            self.versions["dockerd"] = first_line(["dockerd", "--version"])

    def measure(self) -> None:
        self.err.print(f"{self.args.runs} runs (+{self.args.warmup} warm-up) of "
                       f"{len(self.methods)} methods, interleaved")  # fmt: skip
        self.load.append(os.getloadavg()[0])
        interleave(self.methods, self.samples, self.args, self.err)
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
        if (out := start_report(data, self.args, min_width=132)) is None:
            return
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
        print_skipped_and_versions(out, self.samples, self.versions)
        ours, theirs = self.cell(DOCKER_RUN, SANDBOXD), self.cell(DOCKER_RUN, DOCKERD)
        if ours and theirs:
            share = theirs.median / ours.median
            verdict = "[green]met[/]" if share >= GOAL else "[red]not met[/]"
            out.print(f"docker run --rm base true: {ours.median:.1f} ms through sandboxd, "
                      f"{theirs.median:.1f} ms through dockerd: 1/{share:.1f} of the time "
                      f"(goal: under 1/{GOAL:g}) {verdict}")  # fmt: skip

    # -- cleanup ---------------------------------------------------------------------

    def cleanup(self) -> None:
        close_methods(self.methods, self.err)
        if self.spawner is not None:
            self.spawner.close()
        left = self.daemons.stop()
        left += remove_scratch(self.tmp, self.parents_before)
        report_left(self.err, left)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/api", description=__doc__.split("\n")[0])
    add_run_options(p, runs=100, warmup=3)
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
