"""Helpers shared by the bench scripts: statistics, timed spawns, rounds, host facts, cleanup
and leaks, the start of a report, options and main.

Nothing here asserts: a bench prints figures, and a helper that cannot do its
job returns a reason (a string) for the caller to print.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import math
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from rich.console import Console

CGROUP_ROOT = "/sys/fs/cgroup"
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


# -- statistics -------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def p95(values: Sequence[float]) -> float:
    """The 95th percentile by nearest rank (an observed value, never interpolated)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


@dataclass
class Samples:
    """Wall and CPU times of one method, in milliseconds, warm-up excluded."""

    name: str
    ms: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # user + system, every process involved
    skipped: str = ""  # why the method was not (or no longer) measured

    @property
    def median(self) -> float:
        return median(self.ms)

    @property
    def cpu_median(self) -> float:
        return median(self.cpu)

    @property
    def p95(self) -> float:
        return p95(self.ms)


# -- timed processes --------------------------------------------------------------


class SpawnFailed(Exception):
    """A timed command exited non-zero; the message holds its stderr."""


class RunFailed(Exception):
    """A container or a command did not do what the bench needs; the message says what."""


class Spawner:
    """Runs a command and times it from posix_spawn(3) to waitpid(2), nothing else.

    glibc's posix_spawn is a vfork-style clone plus exec, the cheapest way a
    process can start another, so the harness adds as little as it can to every
    method alike. stdin and stdout are /dev/null; stderr goes to a scratch file
    that is read only when the command fails.
    """

    def __init__(self, scratch: str, env: dict[str, str]) -> None:
        self.env = env
        self.devnull = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
        self.errfd = os.open(scratch, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self.actions = [
            (os.POSIX_SPAWN_DUP2, self.devnull, 0),
            (os.POSIX_SPAWN_DUP2, self.devnull, 1),
            (os.POSIX_SPAWN_DUP2, self.errfd, 2),
        ]

    def run(self, argv: list[str]) -> tuple[float, float]:
        """Milliseconds from spawn to reaped exit, and CPU milliseconds it used.

        The CPU time is wait4(2)'s: the command's and that of every descendant
        it reaped (a runtime's container process, bwrap's init).

        Raises:
            SpawnFailed: the command exited non-zero (message: its stderr).
        """
        os.ftruncate(self.errfd, 0)
        t0 = time.perf_counter_ns()
        pid = os.posix_spawn(argv[0], argv, self.env, file_actions=self.actions)
        try:
            _, status, usage = os.wait4(pid, 0)
        except BaseException:  # interrupted: the command must not outlive the bench
            stop(pid)
            raise
        t1 = time.perf_counter_ns()
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            err = os.pread(self.errfd, 4096, 0).decode(errors="replace").strip()
            raise SpawnFailed(f"`{' '.join(argv)}` exited {code}: {err or '(no output)'}")
        return (t1 - t0) / 1e6, (usage.ru_utime + usage.ru_stime) * 1e3

    def close(self) -> None:
        for fd in (self.devnull, self.errfd):
            with contextlib.suppress(OSError):
                os.close(fd)


def stop(pid: int, grace: float = 2.0) -> None:
    """SIGTERM a child (runtimes and the CLI forward it and clean up), SIGKILL after ``grace``."""
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
            time.sleep(0.01)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
    except ProcessLookupError:
        pass


# -- rounds -----------------------------------------------------------------------


class Command:
    """A command timed from posix_spawn to its reaped exit; ``argv`` may be made anew per run."""

    def __init__(
        self, name: str, argv: list[str] | Callable[[], list[str]], spawner: Spawner
    ) -> None:
        self.name, self.argv, self.spawner = name, argv, spawner

    def once(self) -> float:
        return self.spawner.run(self.argv() if callable(self.argv) else self.argv)[0]

    def close(self) -> None:
        pass


def interleave(
    methods: Sequence[Any],
    samples: dict[str, Samples],
    args: Any,
    err: Console,
    kept: Callable[[Any, str], None] | None = None,
) -> None:
    """Every method once a round, in a new shuffled order each round (``args.seed``).

    ``args.warmup`` rounds first, not kept, then ``args.runs`` rounds whose
    milliseconds go to ``samples[method.name]``. A method that raises is
    dropped with ``skipped`` set to why. ``kept(method, previous)`` is called
    after each kept sample with the name of the method that ran just before
    it, in this round or the last ("" for the very first).
    """
    methods = list(methods)
    total = args.runs + args.warmup
    rng = random.Random(args.seed)
    step = max(1, total // 10)
    previous = ""
    for i in range(total):
        rng.shuffle(methods)
        for method in list(methods):
            try:
                ms = method.once()
            except Exception as exc:
                samples[method.name].skipped = f"failed: {exc}"
                methods.remove(method)
                continue
            if i >= args.warmup:
                samples[method.name].ms.append(ms)
                if kept is not None:
                    kept(method, previous)
            previous = method.name
        if (i + 1) % step == 0:
            err.print(f"  round {i + 1}/{total}")


def close_methods(methods: Sequence[Any], err: Console) -> None:
    """Close every method (its connection, loop or runner); a failure is printed, not raised."""
    for method in methods:
        try:
            method.close()
        except Exception as exc:
            err.print(f"[yellow]cleanup of {method.name}: {exc}[/]")


# -- the host -----------------------------------------------------------------------


def first_line(argv: list[str]) -> str:
    """The first line a command prints (``--version``), or why there is none."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def cgroup_layout() -> str:
    """``v2``, ``v1 hybrid`` (v1 hierarchies plus a cgroup2 at unified/) or ``v1``."""
    fstypes = {}
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            head, _, tail = line.partition(" - ")
            fstypes[head.split(" ")[4]] = tail.split(" ")[0]
    if fstypes.get(CGROUP_ROOT) == "cgroup2":
        return "v2"
    if fstypes.get(f"{CGROUP_ROOT}/unified") == "cgroup2":
        return "v1 hybrid"
    return "v1"


def machine() -> dict[str, str]:
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": str(os.cpu_count()),
        "kernel": platform.release(),
        "cpu": model or platform.machine(),
        "cgroups": cgroup_layout(),
        "python": platform.python_version(),
    }


def dist_version(dist: str) -> str:
    """The installed version of the distribution ``dist``, or "(not installed)"."""
    try:
        return version(dist)
    except PackageNotFoundError:
        return "(not installed)"


def apt_install(packages: list[str]) -> str:
    """Install Debian packages; returns "" or why it failed (never raises)."""
    if not packages:
        return ""
    if shutil.which("apt-get") is None:
        return "apt-get not found"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        out = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *packages],
                             capture_output=True, text=True, env=env, timeout=600,
                             check=False)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"apt-get install failed: {exc}"
    if out.returncode != 0:
        lines = (out.stderr or out.stdout).strip().splitlines()
        return f"apt-get install failed: {lines[-1] if lines else out.returncode}"
    return ""


# -- cleanup ------------------------------------------------------------------------


def cgroup_parents() -> set[str]:
    """The ``sandbox`` parent directories that exist in any hierarchy now."""
    return set(glob.glob(f"{CGROUP_ROOT}/*/sandbox"))


def container_cgroups() -> set[str]:
    """The cgroups under ``sandbox/`` now, in v1 hierarchies and in a v2 root."""
    found = glob.glob(f"{CGROUP_ROOT}/*/sandbox/*") + glob.glob(f"{CGROUP_ROOT}/sandbox/*")
    return {p for p in found if os.path.isdir(p)}


def container_processes() -> set[str]:
    """PIDs of container processes now: the engine's init runs from a memfd named tini."""
    procs = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/exe").startswith("/memfd:tini"):
                    procs.add(pid)
    return procs


def remove_cgroups(pattern: str) -> list[str]:
    """Kill what runs in, then remove, the cgroups matching ``sandbox/<pattern>``.

    Deepest first (runtimes may nest), retried for ~2 s while the kernel still
    counts dying tasks. Returns what could not be removed.
    """
    dirs = glob.glob(f"{CGROUP_ROOT}/*/sandbox/{pattern}") + glob.glob(
        f"{CGROUP_ROOT}/*/sandbox/{pattern}/**/", recursive=True
    )
    left = []
    for d in sorted({p.rstrip("/") for p in dirs}, key=lambda p: p.count("/"), reverse=True):
        deadline = time.monotonic() + 2.0
        while True:
            try:
                with open(f"{d}/cgroup.procs", encoding="ascii") as f:
                    for pid in f.read().split():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    left.append(d)
                    break
                time.sleep(0.02)
    return left


def remove_new_parents(before: set[str]) -> None:
    """rmdir the ``sandbox`` parents this run made, if nothing else uses them now.

    The engine recreates its parent on demand, so removing an empty one that
    we made is harmless; a parent that is not empty is left alone (rmdir fails).
    """
    for parent in cgroup_parents() - before:
        with contextlib.suppress(OSError):
            os.rmdir(parent)


def mount_points() -> list[str]:
    """Every mount point in this mount namespace."""
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        return [line.split()[4].replace("\\040", " ") for line in f]


def mounts_under(path: Path) -> list[str]:
    """Mount points under ``path``, deepest first."""
    found = [p for p in mount_points() if p.startswith(str(path) + "/")]
    return sorted(found, key=len, reverse=True)


def unmount_under(path: Path) -> list[str]:
    """Lazily unmount whatever is still mounted under ``path``; returns what was."""
    points = mounts_under(path)
    for point in points:
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    return points


def remove_scratch(tmp: Path, parents_before: set[str]) -> list[str]:
    """Remove the run's directory and the cgroup parents it made; returns what is left."""
    shutil.rmtree(tmp, ignore_errors=True)
    remove_new_parents(parents_before)
    return [str(tmp)] if tmp.exists() else []


class Leaks:
    """What a run could leave behind, listed before it starts and compared at its end.

    ``probes`` maps what is looked for ("container processes") to a function
    that lists what there is of it now.
    """

    def __init__(self, probes: dict[str, Callable[[], set[str]]]) -> None:
        self.probes = probes
        self.before = self.take()

    def take(self) -> dict[str, set[str]]:
        return {what: probe() for what, probe in self.probes.items()}

    def new(self, wait: float = 3.0) -> list[str]:
        """What there is now and was not at the start, a line for each kind.

        Retried for ``wait`` seconds: a container's last process, its cgroup
        or a network namespace takes a moment to go once its holder has.
        """
        deadline = time.monotonic() + wait
        while True:
            now = self.take()
            if all(now[k] <= self.before[k] for k in now) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        return [f"{what}: {', '.join(sorted(items - self.before[what]))} (new since the "
                f"start; another user's if the machine is shared)"
                for what, items in now.items() if items - self.before[what]]  # fmt: skip


def report_left(err: Console, left: list[str], clean: str = "") -> None:
    """Print what is left behind in red, or the ``clean`` line (if any) when nothing is."""
    if left:
        err.print(f"[red]left behind: {'; '.join(left)}[/]")
    elif clean:
        err.print(clean)


def finish_cleanup(
    tmp: Path, parents_before: set[str], leaks: Leaks, left: list[str], err: Console, clean: str
) -> None:
    """The end of a bench's cleanup, once its own parts have stopped.

    Unmount what is still mounted under ``tmp`` (each one is a leak), remove
    ``tmp`` and the cgroup parents the run made, add what else is new since
    the start to ``left``, and print it (or ``clean``).
    """
    left += [f"mount {point} (unmounted)" for point in unmount_under(tmp)]
    left += remove_scratch(tmp, parents_before)
    left += leaks.new()
    report_left(err, left, clean)


# -- reports ----------------------------------------------------------------------


def start_report(data: dict[str, Any], args: Any, min_width: int | None = None) -> Console | None:
    """Begin a report: print ``data`` as JSON (``args.json``) and return None, or return the
    console for the tables, the machine's lines printed on it.

    ``min_width``: the columns the tables need at least, wider if the
    terminal is; None lets rich decide.
    """
    if args.json:
        print(json.dumps(data, indent=1))
        return None
    if min_width is None:
        out = Console(highlight=False)
    else:
        out = Console(highlight=False, width=max(min_width, shutil.get_terminal_size().columns))
    print_machine(out, data["machine"], data["load_average_1min"])
    return out


def print_machine(out: Console, m: dict[str, str], load: list[float]) -> None:
    """The machine's line, and the load average before and after measuring (if taken)."""
    out.print(f"machine: nproc {m['nproc']}, kernel {m['kernel']}, cgroups {m['cgroups']}, "
              f"{m['cpu']}, Python {m['python']}")  # fmt: skip
    if load:
        load_avg = " -> ".join(f"{x:.2f}" for x in load)
        out.print(f"load average (1 min) during the run: {load_avg} (anything near nproc is noise)")


def print_skipped_and_versions(
    out: Console, samples: dict[str, Samples], versions: dict[str, str]
) -> None:
    """A line for each method that was skipped (and why), then one for each version."""
    for s in samples.values():
        if s.skipped:
            out.print(f"[yellow]skipped[/] {s.name}: {s.skipped}")
    for what, text in versions.items():
        out.print(f"{what}: {text}")


# -- main ---------------------------------------------------------------------------


def add_run_options(p: argparse.ArgumentParser, *, runs: int, warmup: int) -> None:
    """--runs, --warmup, --seed and --json, for a bench that runs each method N times."""
    p.add_argument("--runs", type=int, default=runs, metavar="N",
                   help=f"measured runs per method (default {runs})")  # fmt: skip
    p.add_argument("--warmup", type=int, default=warmup, metavar="N",
                   help=f"runs per method before measuring, not counted "
                        f"(default {warmup})")  # fmt: skip
    p.add_argument("--seed", type=int, default=1, help="seed of the per-round shuffle")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead")


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def measure_and_report(bench: Any) -> int:
    bench.measure()
    bench.report()
    return 0


def run_bench(
    make: Callable[[Any, Path], Any],
    args: Any,
    *,
    needs_root: str,
    prefix: str,
    steps: Callable[[Any], int] = measure_and_report,
) -> int:
    """The body of every bench's main: root, signals, scratch directory, setup, steps, cleanup.

    ``needs_root`` is the line printed (exit 1) when not run as root; ``make(args,
    tmp)`` builds the bench (with ``setup``, ``cleanup`` and an ``err`` console)
    on the scratch directory ``tmp`` made with ``prefix``; SIGTERM and SIGHUP interrupt like ^C
    (exit 130), and the bench is cleaned up whatever happens.
    """
    if os.geteuid() != 0:
        print(needs_root, file=sys.stderr)
        return 1
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    bench = make(args, tmp)
    try:
        bench.setup()
        return steps(bench)
    except KeyboardInterrupt:
        bench.err.print("interrupted: cleaning up")
        return 130
    finally:
        bench.cleanup()
