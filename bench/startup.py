"""Time to run `true` in a fresh container: the engine against plain processes and other runtimes.

Every method runs the same command (`true`) on the same root filesystem, the
single layer of the default image `base`, in the same run, interleaved in a
shuffled order each round so that a noisy neighbour hits every method alike
(the CLI, 30 times slower than the rest, runs in a block of its own after):

- sandbox API: create + start + await exit + remove through ``Engine``, from
  this one warm Python process (what a notebook cell pays);
- sandbox run --rm: the whole CLI command, a new Python process each time;
- fork/exec: the host's /usr/bin/true, no container at all;
- unshare+chroot, bubblewrap: namespaces and a root, no overlay, no cgroup;
- crun, runc: OCI bundles with a cgroup under ``sandbox/``.

Each external command is timed from posix_spawn(3) to waitpid(2). Everything
made (store, bundles, runtime state, cgroups) is removed at the end, also on
an error or Ctrl-C. Benchmarks print figures; they never assert.

EXAMPLE:
    bench/startup                  # 200 runs per method
    bench/startup --runs 50 --json
    bench/startup --profile        # where the API path spends its time
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from _common import (
    HOST_PATH,
    Samples,
    Spawner,
    SpawnFailed,
    add_run_options,
    apt_install,
    cgroup_layout,
    cgroup_parents,
    close_methods,
    first_line,
    machine,
    measure_and_report,
    remove_cgroups,
    remove_scratch,
    report_left,
    run_bench,
    start_report,
)
from _sandboxd import stop_store_daemon
from rich.console import Console
from rich.table import Table

from sandbox.engine import Engine
from sandbox.runtime import syscalls as sc

API = "sandbox API (warm process)"
CLI = "sandbox run --rm (CLI)"
# The medians on this kind of machine (2 cores, Debian 12), for comparison.
REFERENCE_MS = {"fork/exec": 0.6, "unshare+chroot": 2.8, "bubblewrap": 3.0, "crun": 5.6,
                "runc": 15.9}  # fmt: skip
# Competitor tools and the Debian packages that provide them.
PACKAGES = {"bwrap": "bubblewrap", "crun": "crun", "runc": "runc"}
NAMESPACES = ("pid", "mount", "ipc", "uts", "network")
UNIFIED = "/sys/fs/cgroup/unified"  # the hybrid layout's cgroup2, which crun refuses


class EngineApi:
    """Ours, the way a notebook cell runs: one container per call, in a warm process."""

    name = API

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.loop = asyncio.new_event_loop()
        self.ids: set[str] = set()
        self.left: list[str] = []  # cgroups close() could not remove

    def once(self) -> tuple[float, float]:
        """Wall and CPU milliseconds (this process, plus the container it reaped)."""
        cpu0 = _cpu_ms()
        wall = self.loop.run_until_complete(self._one())
        return wall, _cpu_ms() - cpu0

    async def _one(self) -> float:
        t0 = time.perf_counter_ns()
        record = self.engine.create("base", ["true"], auto_remove=True)
        self.ids.add(record.id)
        running = self.engine.start(record.id)
        status = await running.exited
        t1 = time.perf_counter_ns()
        if status != 0:
            raise SpawnFailed(f"`true` exited {status} in the container: {record.error}")
        return (t1 - t0) / 1e6

    def close(self) -> None:
        """Kill and reap a container an interrupt left running; remove every cgroup."""
        for running in list(self.engine.running.values()):
            try:
                os.kill(running.spawned.pid, signal.SIGKILL)
                os.waitpid(running.spawned.pid, 0)
            except OSError:
                pass
            running.spawned.close()
        self.engine.running.clear()
        ids = self.ids | {p.name for p in self.engine.store.containers.dir.iterdir()}
        for cid in ids:
            with contextlib.suppress(Exception):  # a leftover is reported below
                self.engine.driver.open(cid).remove()
        self.left = [p for cid in ids for p in glob.glob(f"/sys/fs/cgroup/*/sandbox/{cid}")]
        self.loop.close()


def _cpu_ms() -> float:
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage) * 1e3


class Command:
    """An external command, spawned and reaped from this process."""

    def __init__(self, name: str, argv: list[str], spawner: Spawner) -> None:
        self.name, self.argv, self.spawner = name, argv, spawner

    def once(self) -> tuple[float, float]:
        return self.spawner.run(self.argv)

    def close(self) -> None:
        pass


class OciRuntime:
    """crun or runc on a bundle: ``<runtime> --root <state> run <fresh id>``.

    ``run`` without ``--detach`` (or runc's ``--keep``) deletes the container
    once it exits: that is Docker's ``--rm``. ``runner`` is this process's
    Spawner, or a PrivateMountRunner for crun on a hybrid host.
    """

    def __init__(self, name: str, binary: str, bundle: Path, state: Path, prefix: str,
                 runner: Any) -> None:  # fmt: skip
        self.name, self.binary, self.bundle, self.state = name, binary, bundle, state
        self.prefix, self.runner, self.count = prefix, runner, 0

    def once(self) -> tuple[float, float]:
        self.count += 1
        argv = [self.binary, "--root", str(self.state), "run", "--bundle", str(self.bundle),
                f"{self.prefix}-{self.count}"]  # fmt: skip
        return self.runner.run(argv)

    def close(self) -> None:
        """Force-delete containers an interrupt left behind (their state is ours)."""
        if hasattr(self.runner, "close"):
            self.runner.close()
        if self.state.is_dir():
            for entry in self.state.iterdir():
                subprocess.run([self.binary, "--root", str(self.state), "delete", "--force",
                                entry.name], capture_output=True, check=False)  # fmt: skip


class PrivateMountRunner:
    """Times commands from a forked child, in a mount namespace without the hybrid cgroup2.

    crun refuses a hybrid cgroup layout (v1 hierarchies plus a cgroup2 at
    unified/) with "cgroups in hybrid mode not supported"; with the cgroup2
    unmounted in its own mount namespace it takes the v1 path. The host's
    mounts are untouched: the namespace is private and dies with the child.
    """

    def __init__(self, scratch: str, env: dict[str, str], unmount: str | None) -> None:
        cmd_r, cmd_w = os.pipe2(os.O_CLOEXEC)
        res_r, res_w = os.pipe2(os.O_CLOEXEC)
        self.pid = os.fork()
        if self.pid == 0:  # the child: never return into the caller's frames
            code = 1
            try:
                os.close(cmd_w)
                os.close(res_r)
                _serve(cmd_r, res_w, scratch, env, unmount)
                code = 0
            finally:
                os._exit(code)
        os.close(cmd_r)
        os.close(res_w)
        self.cmd = os.fdopen(cmd_w, "w", buffering=1)
        self.res = os.fdopen(res_r, "r")
        hello = json.loads(self.res.readline() or '{"error": "the child died"}')
        if "error" in hello:
            self.close()
            raise SpawnFailed(hello["error"])

    def run(self, argv: list[str]) -> tuple[float, float]:
        self.cmd.write(json.dumps(argv) + "\n")
        reply = json.loads(self.res.readline() or '{"error": "the child died"}')
        if "error" in reply:
            raise SpawnFailed(reply["error"])
        return float(reply["ms"]), float(reply["cpu"])

    def close(self) -> None:
        if self.pid:
            for f in (self.cmd, self.res):
                with contextlib.suppress(OSError):
                    f.close()
            os.waitpid(self.pid, 0)  # it exits at end-of-file on its command pipe
            self.pid = 0


def _serve(cmd_r: int, res_w: int, scratch: str, env: dict[str, str], unmount: str | None) -> None:
    """The runner child: set up the namespace, then time one command per request line."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # finish the run; the parent decides
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
    out = os.fdopen(res_w, "w", buffering=1)
    try:
        sc.unshare(sc.CLONE_NEWNS)
        sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
        if unmount:
            sc.umount2(unmount, 0)
    except OSError as exc:
        out.write(json.dumps({"error": f"private mount namespace: {exc}"}) + "\n")
        return
    spawner = Spawner(scratch, env)
    out.write('{"ready": true}\n')
    with os.fdopen(cmd_r) as requests:
        for line in requests:
            try:
                wall, cpu = spawner.run(json.loads(line))
                out.write(json.dumps({"ms": wall, "cpu": cpu}) + "\n")
            except (SpawnFailed, OSError) as exc:
                out.write(json.dumps({"error": str(exc)}) + "\n")


def write_bundle(binary: str, bundle: Path, rootfs: Path, cgroup: str) -> None:
    """An OCI bundle running /usr/bin/true on ``rootfs`` (read-only) in ``cgroup``."""
    bundle.mkdir(parents=True)
    subprocess.run([binary, "spec"], cwd=bundle, check=True, capture_output=True)
    path = bundle / "config.json"
    cfg = json.loads(path.read_text())
    cfg["process"]["args"] = ["/usr/bin/true"]
    cfg["process"]["terminal"] = False
    cfg["root"] = {"path": str(rootfs), "readonly": True}
    cfg["linux"]["namespaces"] = [{"type": t} for t in NAMESPACES]
    cfg["linux"]["cgroupsPath"] = cgroup
    path.write_text(json.dumps(cfg, indent=1))


class Bench:
    """One run: set-up, interleaved rounds, report, cleanup."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args, self.tmp = args, tmp
        self.err = Console(stderr=True, highlight=False)
        self.methods: list[Any] = []
        self.samples: dict[str, Samples] = {}
        self.versions: dict[str, str] = {}
        self.parents_before = cgroup_parents()
        self.tag = f"bench-{os.getpid()}"
        self.engine: Engine | None = None
        self.spawner: Spawner | None = None
        self.load: list[float] = []  # 1-minute load average before and after measuring

    # -- set-up --------------------------------------------------------------------

    def setup(self) -> None:
        root = self.tmp / "store"
        os.environ["SANDBOX_ROOT"] = str(root)
        self.err.print(f"building the base image in {root} ...")
        self.engine = Engine(root)
        image = self.engine.ensure_base()
        layer = self.engine.store.layers.path(image.layers[0])
        env = {"PATH": HOST_PATH, "SANDBOX_ROOT": str(root), "LANG": "C.UTF-8"}
        self.spawner = Spawner(str(self.tmp / "stderr"), env)
        self.install_missing()
        self.add(API, lambda: EngineApi(self.engine), self.sandbox_version())
        if self.args.profile:
            return

        sandbox_bin = str(Path(sys.prefix) / "bin" / "sandbox")
        self.add(CLI, lambda: Command(CLI, [sandbox_bin, "run", "--rm", "base", "true"],
                                      self.spawner), "same")  # fmt: skip
        true = shutil.which("true", path=HOST_PATH) or "/usr/bin/true"
        self.add("fork/exec", lambda: Command("fork/exec", [true], self.spawner),
                 first_line([true, "--version"]))  # fmt: skip
        self.add_unshare(layer)
        self.add_bwrap(layer)
        self.add_oci("crun", layer)
        self.add_oci("runc", layer)

    def install_missing(self) -> None:
        missing = [pkg for tool, pkg in PACKAGES.items() if shutil.which(tool) is None]
        if not missing:
            return
        if self.args.no_install:
            self.err.print(f"not installing {' '.join(missing)} (--no-install)")
            return
        self.err.print(f"installing {' '.join(missing)} with apt-get ...")
        if reason := apt_install(missing):
            self.err.print(f"[yellow]{reason}[/]")

    def wanted(self, name: str) -> bool:
        """The API path always runs (the ratios need it); others as --only says."""
        only = [w.strip().lower() for w in (self.args.only or "").split(",") if w.strip()]
        return name == API or not only or any(w in name.lower() for w in only)

    def add(self, name: str, make: Any, version: str) -> None:
        """Make a method; a failure to set it up skips it with the reason."""
        if not self.wanted(name):
            return
        self.samples[name] = Samples(name)
        self.versions[name] = version
        try:
            self.methods.append(make())
        except Exception as exc:
            self.samples[name].skipped = f"set-up failed: {exc}"

    def skip(self, name: str, reason: str) -> None:
        if self.wanted(name):
            self.samples[name] = Samples(name, skipped=reason)

    def add_unshare(self, layer: Path) -> None:
        unshare, chroot = shutil.which("unshare"), shutil.which("chroot", path=HOST_PATH)
        if not unshare or not chroot:
            return self.skip("unshare+chroot", "unshare or chroot not found")
        argv = [unshare, "--mount", "--uts", "--ipc", "--net", "--pid", "--fork",
                chroot, str(layer), "/usr/bin/true"]  # fmt: skip
        self.add("unshare+chroot", lambda: Command("unshare+chroot", argv, self.spawner),
                 first_line([unshare, "--version"]))  # fmt: skip

    def add_bwrap(self, layer: Path) -> None:
        bwrap = shutil.which("bwrap", path=HOST_PATH)
        if not bwrap:
            return self.skip("bubblewrap", "bwrap not installed (apt-get install bubblewrap)")
        argv = [bwrap, "--unshare-pid", "--unshare-ipc", "--unshare-net", "--unshare-uts",
                "--ro-bind", str(layer), "/", "--proc", "/proc", "--dev", "/dev",
                "/usr/bin/true"]  # fmt: skip
        self.add("bubblewrap", lambda: Command("bubblewrap", argv, self.spawner),
                 first_line([bwrap, "--version"]))  # fmt: skip

    def add_oci(self, name: str, layer: Path) -> None:
        binary = shutil.which(name, path=HOST_PATH)
        if not binary:
            return self.skip(name, f"{name} not installed (apt-get install {name})")
        bundle, state = self.tmp / f"bundle-{name}", self.tmp / f"state-{name}"

        def make() -> OciRuntime:
            write_bundle(binary, bundle, layer, f"/sandbox/{self.tag}-{name}")
            runner: Any = self.spawner
            if name == "crun" and cgroup_layout() == "v1 hybrid":
                scratch = str(self.tmp / "stderr-crun")
                runner = PrivateMountRunner(scratch, dict(self.spawner.env), UNIFIED)
            return OciRuntime(name, binary, bundle, state, f"{self.tag}-{name}", runner)

        self.add(name, make, first_line([binary, "--version"]))

    def sandbox_version(self) -> str:
        from importlib.metadata import PackageNotFoundError, version

        try:
            ours = version("jupyter-sandbox")
        except PackageNotFoundError:
            ours = "unknown"
        tini = shutil.which("tini-static", path=HOST_PATH) or "tini-static"
        return f"jupyter-sandbox {ours}, {first_line([tini, '--version'])}"

    # -- measuring -----------------------------------------------------------------

    def measure(self) -> None:
        """Interleaved rounds of the container methods, then the CLI in a block of its own.

        The CLI is kept out of the rounds on purpose: each run is a new Python
        process (~150 ms of CPU) that leaves page cache, journal and cgroup
        work behind, and interleaved it doubled the median of whatever ran next
        (crun's and the API path's), which measures the neighbour, not them.
        """
        solo = [m for m in self.methods if m.name == CLI]
        rounds = [m for m in self.methods if m.name != CLI]
        total = self.args.runs + self.args.warmup
        self.err.print(f"{self.args.runs} runs (+{self.args.warmup} warm-up) of: "
                       f"{', '.join(m.name for m in rounds + solo)}")  # fmt: skip
        self.load.append(os.getloadavg()[0])
        rng = random.Random(self.args.seed)
        step = max(1, total // 10)
        for i in range(total):
            rng.shuffle(rounds)
            for method in list(rounds):
                if not self.once(method, measured=i >= self.args.warmup):
                    rounds.remove(method)
            if (i + 1) % step == 0:
                self.err.print(f"  round {i + 1}/{total}")
        for method in solo:
            self.err.print(f"  {method.name}: {total} runs")
            for i in range(total):
                if not self.once(method, measured=i >= self.args.warmup):
                    break
        self.load.append(os.getloadavg()[0])

    def once(self, method: Any, *, measured: bool) -> bool:
        """Run a method once and keep its figures; False (and skipped) if it failed."""
        try:
            ms, cpu = method.once()
        except Exception as exc:
            self.samples[method.name].skipped = f"failed: {exc}"
            return False
        if measured:
            self.samples[method.name].ms.append(ms)
            self.samples[method.name].cpu.append(cpu)
        return True

    # -- reporting -----------------------------------------------------------------

    def results(self) -> dict[str, Any]:
        ours = self.samples[API].median if self.samples[API].ms else float("nan")
        rows = []
        for s in self.samples.values():
            rows.append({
                "method": s.name,
                "n": len(s.ms),
                "median_ms": round(s.median, 3) if s.ms else None,
                "p95_ms": round(s.p95, 3) if s.ms else None,
                "ratio_to_api": round(s.median / ours, 3) if s.ms and ours == ours else None,
                "cpu_median_ms": round(s.cpu_median, 3) if s.cpu else None,
                "reference_median_ms": REFERENCE_MS.get(s.name),
                "skipped": s.skipped or None,
                "version": self.versions.get(s.name),
            })  # fmt: skip
        return {"machine": machine(), "load_average_1min": self.load, "runs": self.args.runs,
                "warmup": self.args.warmup, "results": rows}  # fmt: skip

    def report(self) -> None:
        data = self.results()
        if (out := start_report(data, self.args)) is None:
            return
        table = Table(title=f"time to run `true` in a fresh container ({self.args.runs} runs, "
                            f"{self.args.warmup} warm-up runs excluded)")  # fmt: skip
        for col in ("method", "median ms", "p95 ms", "÷ API median", "CPU ms", "issue's ref. ms"):
            table.add_column(col, justify="left" if col == "method" else "right")
        for row in data["results"]:
            if row["median_ms"] is None:
                continue
            ref = row["reference_median_ms"]
            table.add_row(row["method"], f"{row['median_ms']:.2f}", f"{row['p95_ms']:.2f}",
                          f"{row['ratio_to_api']:.2f}x" if row["ratio_to_api"] else "-",
                          f"{row['cpu_median_ms']:.2f}",
                          f"{ref:.1f}" if ref else "")  # fmt: skip
        out.print(table)
        for row in data["results"]:
            if row["skipped"]:
                out.print(f"[yellow]skipped[/] {row['method']}: {row['skipped']}")
        out.print("versions:")
        for row in data["results"]:
            if row["version"] and row["version"] != "same":
                out.print(f"  {row['method']}: {row['version']}")
        api = self.samples[API].median if self.samples[API].ms else None
        for name, target in (("crun", 1.0), ("bubblewrap", 1.5)):
            other = self.samples.get(name)
            if api and other and other.ms:
                out.print(f"API median / {name} median = {api / other.median:.2f}x "
                          f"(goal: at most {target:.1f}x)")  # fmt: skip

    # -- cleanup -------------------------------------------------------------------

    def cleanup(self) -> None:
        """Remove everything this run made; print what could not be removed."""
        close_methods(self.methods, self.err)
        # The sandboxd that the CLI runs started for the store.
        for line in stop_store_daemon(self.tmp / "store"):
            self.err.print(f"[yellow]{line}[/]")
        if self.engine is not None:
            try:
                self.engine.reconcile()  # containers the CLI runs left behind
            except Exception as exc:
                self.err.print(f"[yellow]reconcile: {exc}[/]")
        if self.spawner is not None:
            self.spawner.close()
        left = remove_cgroups(f"{self.tag}-*")
        left += [p for m in self.methods for p in getattr(m, "left", [])]
        left += remove_scratch(self.tmp, self.parents_before)
        report_left(self.err, left)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/startup", description=__doc__.split("\n")[0])
    add_run_options(p, runs=200, warmup=5)
    p.add_argument(
        "--only",
        metavar="WORDS",
        help="comma-separated words: run only the methods whose name has one "
        "(e.g. crun,bubblewrap); the API path always runs. Default: all",
    )
    p.add_argument(
        "--no-install",
        action="store_true",
        help="do not apt-get install missing competitors; skip them",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="only the API path: print where its time goes (bench/_profile.py)",
    )
    return p.parse_args(argv)  # fmt: skip


def _steps(bench: Bench) -> int:
    if bench.args.profile:
        from _profile import profile

        if bench.samples[API].skipped:
            bench.err.print(f"[red]{API}: {bench.samples[API].skipped}[/]")
            return 1
        profile(bench.methods[0], bench.args)
        return 0
    return measure_and_report(bench)


def main(argv: list[str] | None = None) -> int:
    return run_bench(
        Bench,
        parse_args(argv),
        needs_root="bench/startup needs root: containers need namespaces, mounts and cgroups",
        prefix="sandbox-bench-",
        steps=_steps,
    )


if __name__ == "__main__":
    sys.exit(main())
