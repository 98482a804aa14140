"""Tests of the cgroup drivers (sandbox.runtime.cgroups).

Real where the host allows: the v1 tests create cgroups under
/sys/fs/cgroup/<controller>/sandbox/ and run real processes in them; the real
v2 tests use a cgroup2 mount (/sys/fs/cgroup, or /sys/fs/cgroup/unified on a
hybrid host). The v2 limit and stats logic also runs against a fake cgroup2
tree in a temp dir, because a hybrid host's cgroup2 has no memory, cpu or
pids controller to run it for real.

Every cgroup and process a test makes is registered with the ``harness``
fixture, which kills, reaps and removes them even when the test fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from sandbox.errors import InvalidArgument, LimitUnsupported, SandboxError
from sandbox.runtime import cgroups
from sandbox.runtime.cgroups import (
    Cgroup,
    CgroupDriver,
    CgroupV1Driver,
    CgroupV2Driver,
    Limits,
    detect_driver,
)
from sandbox.runtime.cgroups.v1 import DEVICE_RULES
from sandbox.runtime.cgroups.v2 import cpu_weight

MiB = 1 << 20
CGROUP_ROOT = "/sys/fs/cgroup"
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "devices")


def _cgroup_mounts() -> dict[str, tuple[str, str]]:
    mounts = {}
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            head, _, tail = line.partition(" - ")
            fstype, _, rest = tail.partition(" ")
            if fstype.startswith("cgroup"):
                mounts[head.split()[4]] = (fstype, rest.split()[-1])
    return mounts


MOUNTS = _cgroup_mounts()
IS_ROOT = os.geteuid() == 0
HAS_V1 = all(
    MOUNTS.get(f"{CGROUP_ROOT}/{c}", ("", ""))[0] == "cgroup"
    and c in MOUNTS[f"{CGROUP_ROOT}/{c}"][1].split(",")
    for c in V1_CONTROLLERS
)
V2_ROOT = next(
    (p for p in (CGROUP_ROOT, f"{CGROUP_ROOT}/unified") if MOUNTS.get(p, ("",))[0] == "cgroup2"),
    None,
)

needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root to write cgroups")
needs_v1 = pytest.mark.skipif(
    not HAS_V1, reason=f"needs cgroup v1 hierarchies {V1_CONTROLLERS} under {CGROUP_ROOT}"
)
needs_v2 = pytest.mark.skipif(V2_ROOT is None, reason="needs a cgroup2 mount")

T = TypeVar("T", bound=Callable[..., object])


def requires_v1(test: T) -> T:
    """Mark ``root`` and ``cgroup_v1``; skip, with the reason, where the host lacks them."""
    for mark in (pytest.mark.root, pytest.mark.cgroup_v1, needs_root, needs_v1):
        test = mark(test)
    return test


def requires_v2(test: T) -> T:
    """Mark ``root`` and ``cgroup_v2``; skip, with the reason, where the host lacks them."""
    for mark in (pytest.mark.root, pytest.mark.cgroup_v2, needs_root, needs_v2):
        test = mark(test)
    return test


def _name() -> str:
    return f"t{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _read(path: str | Path) -> str:
    return Path(path).read_text().strip()


class Harness:
    """Creates cgroups and processes for one test, and cleans them all up."""

    def __init__(self, driver: CgroupDriver) -> None:
        self.driver = driver
        self.names: list[str] = []
        self.children: list[subprocess.Popen[str]] = []

    def name(self) -> str:
        """A fresh cgroup name, registered for removal."""
        name = _name()
        self.names.append(name)
        return name

    def create(self, limits: Limits | None = None) -> Cgroup:
        return self.driver.create(self.name(), limits or Limits())

    def spawn(self, cg: Cgroup, code: str, *args: str) -> subprocess.Popen[str]:
        """Run ``python -c code`` inside ``cg``: it joins before exec, as the runtime does."""
        files = cg.join_files()

        def join() -> None:
            for file in files:
                with open(file, "w") as f:
                    f.write("0")

        child = subprocess.Popen(
            [sys.executable, "-c", code, *args],
            preexec_fn=join,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.children.append(child)
        return child

    def close(self) -> None:
        try:
            for child in self.children:
                if child.poll() is None:
                    child.kill()
                child.wait()
                if child.stdout:
                    child.stdout.close()
        finally:
            for name in self.names:
                self.driver.open(name).remove()
        left = set(self.names) & set(self.driver.list_names())
        assert not left, f"cgroups left behind: {left}"


@pytest.fixture(scope="module", autouse=True)
def _tidy_parents() -> Iterator[None]:
    """Remove the ``sandbox`` parents at the end of the module, if they are empty.

    rmdir fails on a parent that still has a child (a container of someone
    else), and the drivers make a parent again when it is gone.
    """
    yield
    parents = [f"{CGROUP_ROOT}/{c}/sandbox" for c in V1_CONTROLLERS]
    if V2_ROOT:
        parents.append(f"{V2_ROOT}/sandbox")
    for parent in parents:
        with contextlib.suppress(OSError):
            os.rmdir(parent)


@pytest.fixture
def v1() -> Iterator[Harness]:
    harness = Harness(CgroupV1Driver(CGROUP_ROOT))
    try:
        yield harness
    finally:
        harness.close()


@pytest.fixture
def v2() -> Iterator[Harness]:
    assert V2_ROOT is not None
    harness = Harness(CgroupV2Driver(V2_ROOT))
    try:
        yield harness
    finally:
        harness.close()


def _no_dirs(name: str) -> list[str]:
    """Directories named ``name`` under any hierarchy's sandbox/ (should be [])."""
    found = [str(p) for p in Path(CGROUP_ROOT).glob(f"*/sandbox/{name}")]
    if V2_ROOT:
        found += [str(p) for p in Path(V2_ROOT).glob(f"sandbox/{name}")]
    return found


# --- cgroup v1, real ------------------------------------------------------------------------


@requires_v1
def test_v1_create_writes_every_limit(v1: Harness) -> None:
    cg = v1.create(Limits(memory=64 * MiB, nano_cpus=500_000_000, cpu_shares=512, pids=16))
    dirs = cg.dirs  # type: ignore[attr-defined]
    assert _read(f"{dirs['memory']}/memory.limit_in_bytes") == str(64 * MiB)
    # memory_swap unset: Docker gives as much swap as memory, 2 x 64 MiB in all.
    assert _read(f"{dirs['memory']}/memory.memsw.limit_in_bytes") == str(128 * MiB)
    assert _read(f"{dirs['cpu']}/cpu.cfs_period_us") == "100000"
    assert _read(f"{dirs['cpu']}/cpu.cfs_quota_us") == "50000"
    assert _read(f"{dirs['cpu']}/cpu.shares") == "512"
    assert _read(f"{dirs['pids']}/pids.max") == "16"
    assert _read(f"{dirs['devices']}/devices.list").splitlines() == list(DEVICE_RULES)
    assert cg.join_files() == [f"{dirs[c]}/tasks" for c in V1_CONTROLLERS]
    assert all(os.path.exists(f) for f in cg.join_files())
    assert cg.name in v1.driver.list_names()

    st = cg.stats()
    assert st.memory_limit == 64 * MiB
    assert st.nano_cpus == 500_000_000
    assert st.pids_limit == 16
    assert (st.memory_usage, st.pids_current, st.oom_kills, st.pids_limit_hits) == (0, 0, 0, 0)
    assert not cg.oom_killed()
    assert not cg.pids_limit_hit()


@requires_v1
def test_v1_unlimited_values(v1: Harness) -> None:
    cg = v1.create(Limits(memory=64 * MiB, memory_swap=-1, pids=0))
    dirs = cg.dirs  # type: ignore[attr-defined]
    assert int(_read(f"{dirs['memory']}/memory.memsw.limit_in_bytes")) > 1 << 62
    assert _read(f"{dirs['pids']}/pids.max") == "max"
    assert cg.stats().pids_limit is None

    cg = v1.create(Limits(memory=64 * MiB, memory_swap=96 * MiB))
    assert _read(f"{cg.dirs['memory']}/memory.memsw.limit_in_bytes") == str(96 * MiB)  # type: ignore[attr-defined]

    st = v1.create(Limits()).stats()
    assert (st.memory_limit, st.nano_cpus, st.pids_limit) == (None, None, None)


@requires_v1
def test_v1_memory_hog_is_oom_killed(v1: Harness) -> None:
    cg = v1.create(Limits(memory=64 * MiB))
    # bytes * n writes every page, so the 200 MiB are really charged.
    hog = v1.spawn(cg, "x = b'x' * (200 << 20)")
    assert hog.wait(timeout=60) == -signal.SIGKILL
    assert cg.oom_killed()
    st = cg.stats()
    assert st.oom_kills >= 1
    assert 0 < st.memory_peak <= 64 * MiB


FORK_LOOP = """
import os, time
n = 0
try:
    while n < 200:
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        n += 1
except OSError as exc:
    print("fork failed after", n, exc.errno, flush=True)
time.sleep(60)
"""


@requires_v1
def test_v1_fork_loop_is_stopped_by_pids_limit(v1: Harness) -> None:
    cg = v1.create(Limits(pids=16))
    loop = v1.spawn(cg, FORK_LOOP)
    assert loop.stdout is not None
    line = loop.stdout.readline()
    assert line.startswith("fork failed after"), line
    assert int(line.split()[3]) < 16
    assert cg.pids_limit_hit()
    st = cg.stats()
    assert st.pids_limit_hits >= 1
    assert st.pids_current <= 16

    cg.kill_all()
    assert cg.procs() == []
    assert loop.wait(timeout=10) == -signal.SIGKILL


@requires_v1
def test_v1_busy_loop_gets_half_a_cpu(v1: Harness) -> None:
    cg = v1.create(Limits(nano_cpus=500_000_000))
    v1.spawn(cg, "while True: pass")
    time.sleep(0.2)
    used0, wall0 = cg.stats().cpu_usage_ns, time.monotonic_ns()
    time.sleep(1.5)
    used1, wall1 = cg.stats().cpu_usage_ns, time.monotonic_ns()
    # A vanished cgroup reads as 0: say so rather than report a negative ratio.
    assert os.path.exists(cg.join_files()[0]), "someone else removed the cgroup (a reconciler?)"
    ratio = (used1 - used0) / (wall1 - wall0)
    assert 0.3 < ratio < 0.7, f"the busy loop got {ratio:.2f} of a CPU under a 0.5 CPU quota"
    st = cg.stats()
    assert st.cpu_user_ns > 0
    assert sum(st.cpu_percpu_ns) == pytest.approx(st.cpu_usage_ns, rel=0.05)


DEVICE_PROBE = """
import errno, os, stat, sys

def try_open(path):
    try:
        os.close(os.open(path, os.O_RDONLY))
        return "ok"
    except OSError as exc:
        return errno.errorcode[exc.errno]

d = sys.argv[1]
out = []
for name, kind, major, minor in [
    ("mem", stat.S_IFCHR, 1, 1), ("kmsg", stat.S_IFCHR, 1, 11), ("sda", stat.S_IFBLK, 8, 0)
]:
    os.mknod(f"{d}/{name}", 0o600 | kind, os.makedev(major, minor))  # allowed: c/b *:* m
    out.append(f"{name}={try_open(f'{d}/{name}')}")
out.append("null=" + try_open("/dev/null"))
print(" ".join(out))
"""


@requires_v1
def test_v1_devices_allow_mknod_but_deny_use(v1: Harness, tmp_path: Path) -> None:
    cg = v1.create()
    probe = v1.spawn(cg, DEVICE_PROBE, str(tmp_path))
    out, _ = probe.communicate(timeout=30)
    assert probe.returncode == 0
    assert out.split() == ["mem=EPERM", "kmsg=EPERM", "sda=EPERM", "null=ok"]
    # The control: outside the cgroup the same node opens, so the EPERM above
    # came from the devices cgroup, not from a nodev mount.
    os.close(os.open(tmp_path / "kmsg", os.O_RDONLY))


@requires_v1
def test_v1_remove_kills_and_leaves_nothing(v1: Harness) -> None:
    cg = v1.create(Limits(memory=64 * MiB, pids=8))
    sleeper = v1.spawn(cg, "import time; time.sleep(60)")
    assert cg.procs() == [sleeper.pid]
    cg.remove()
    assert sleeper.wait(timeout=10) == -signal.SIGKILL
    assert _no_dirs(cg.name) == []
    assert cg.name not in v1.driver.list_names()
    cg.remove()  # idempotent
    v1.driver.open(cg.name).remove()


@requires_v1
@pytest.mark.parametrize(
    ("limits", "message"),
    [
        (Limits(memory=64 * MiB, memory_swap=32 * MiB), "must not be less than memory"),
        (Limits(memory_swap=128 * MiB), "needs a memory limit"),
        (Limits(memory=-1), "invalid memory limit"),
        (Limits(nano_cpus=1000), "minimum is 0.01 CPU"),
        (Limits(cpu_shares=-5), "invalid cpu_shares"),
    ],
)
def test_v1_bad_limit_raises_and_leaves_nothing(v1: Harness, limits: Limits, message: str) -> None:
    name = v1.name()
    with pytest.raises(InvalidArgument, match=message):
        v1.driver.create(name, limits)
    assert _no_dirs(name) == []


@pytest.mark.parametrize("name", ["", ".", "..", "../memory", "a/b", "x" * 129, "-x"])
def test_bad_names_are_refused(name: str, tmp_path: Path) -> None:
    for driver in (CgroupV1Driver(str(tmp_path)), CgroupV2Driver(str(tmp_path))):
        with pytest.raises(InvalidArgument, match="invalid cgroup name"):
            driver.create(name, Limits())
    assert list(tmp_path.iterdir()) == []


@requires_v1
def test_v1_failure_half_way_removes_what_was_created(tmp_path: Path) -> None:
    """The devices "hierarchy" is a plain directory here, so its writes fail last,
    after the real memory, cpu, cpuacct and pids cgroups were made and written."""
    for c in ("memory", "cpu", "cpuacct", "pids"):
        (tmp_path / c).symlink_to(f"{CGROUP_ROOT}/{c}")
    (tmp_path / "devices").mkdir()
    driver = CgroupV1Driver(str(tmp_path))
    name = _name()
    try:
        with pytest.raises(SandboxError, match="cannot confine devices"):
            driver.create(name, Limits(memory=64 * MiB, pids=16))
        assert _no_dirs(name) == []
        assert not (tmp_path / "devices/sandbox" / name).exists()
    finally:
        driver.open(name).remove()


@requires_v1
def test_v1_missing_hierarchy_is_limit_unsupported(v1: Harness, tmp_path: Path) -> None:
    for c in ("memory", "cpu", "cpuacct", "devices"):
        (tmp_path / c).symlink_to(f"{CGROUP_ROOT}/{c}")
    v1.driver = driver = CgroupV1Driver(str(tmp_path))
    name = v1.name()
    with pytest.raises(LimitUnsupported) as exc:
        driver.create(name, Limits(memory=64 * MiB, pids=16))
    assert exc.value.controller == "pids"
    assert exc.value.checked == f"{tmp_path}/pids"
    assert "`pids`" in str(exc.value)
    assert _no_dirs(name) == []
    # Without the pids limit the same driver works.
    driver.create(name, Limits(memory=64 * MiB))
    assert len(_no_dirs(name)) == 4


def test_v1_missing_memsw_file(tmp_path: Path) -> None:
    """A fake v1 memory hierarchy without swap accounting (no memsw file): the
    default swap of a memory limit is skipped, an explicit one is refused."""
    cg_dir = tmp_path / "memory/sandbox/c1"
    cg_dir.mkdir(parents=True)
    (cg_dir / "memory.limit_in_bytes").write_text("")
    driver = CgroupV1Driver(str(tmp_path))
    driver.create("c1", Limits(memory=64 * MiB))
    assert _read(cg_dir / "memory.limit_in_bytes") == str(64 * MiB)
    with pytest.raises(LimitUnsupported) as exc:
        driver.create("c1", Limits(memory=64 * MiB, memory_swap=128 * MiB))
    assert exc.value.controller == "memory"
    assert exc.value.checked == f"{cg_dir}/memory.memsw.limit_in_bytes"
    with pytest.raises(LimitUnsupported, match="`cpu`"):
        driver.create("c1", Limits(nano_cpus=10**9))
    assert cg_dir.is_dir()  # it was there before: not ours to remove


# --- cgroup v2, fake tree -------------------------------------------------------------------

V2_WRITTEN = (
    "memory.max",
    "memory.swap.max",
    "memory.oom.group",
    "cpu.max",
    "cpu.weight",
    "pids.max",
    "cgroup.procs",
    "cgroup.kill",
)


def fake_v2(tmp_path: Path, controllers: str = "cpu memory pids") -> tuple[Path, Path]:
    """A temp dir laid out like a cgroup2 root with ``sandbox/c1`` already made.

    This host's cgroup2 (hybrid, at /sys/fs/cgroup/unified) has no memory,
    cpu or pids controller, so the v2 limit files cannot be tested for real
    here. The files the driver writes start empty, so what it wrote reads
    back exactly; the ``mkdir`` of c1 finds it existing, which the driver
    accepts (it reuses a leftover).
    """
    root = tmp_path / "cgroup2"
    cg = root / "sandbox/c1"
    cg.mkdir(parents=True)
    (root / "cgroup.controllers").write_text(controllers + "\n")
    (root / "cgroup.subtree_control").write_text("")
    (root / "sandbox/cgroup.subtree_control").write_text("")
    for file in V2_WRITTEN:
        (cg / file).write_text("")
    (cg / "cgroup.events").write_text("populated 0\nfrozen 0\n")
    return root, cg


def test_v2_fake_writes_every_limit(tmp_path: Path) -> None:
    """Fake cgroup2 tree (see fake_v2): every file the v2 driver writes."""
    root, cg_dir = fake_v2(tmp_path)
    driver = CgroupV2Driver(str(root))
    cg = driver.create(
        "c1", Limits(memory=64 * MiB, nano_cpus=1_500_000_000, cpu_shares=1024, pids=100)
    )
    assert _read(root / "cgroup.subtree_control") == "+memory +cpu +pids"
    assert _read(root / "sandbox/cgroup.subtree_control") == "+memory +cpu +pids"
    assert _read(cg_dir / "memory.max") == str(64 * MiB)
    assert _read(cg_dir / "memory.swap.max") == str(64 * MiB)  # 2 x memory in all
    assert _read(cg_dir / "memory.oom.group") == "1"
    assert _read(cg_dir / "cpu.max") == "150000 100000"
    assert _read(cg_dir / "cpu.weight") == "39"
    assert _read(cg_dir / "pids.max") == "100"
    assert cg.join_files() == [f"{cg_dir}/cgroup.procs"]
    (root / "sandbox/not one of ours").mkdir()  # a name open() would refuse
    assert driver.list_names() == ["c1"]
    cg.kill_all()
    assert _read(cg_dir / "cgroup.kill") == "1"


@pytest.mark.parametrize(
    ("memory_swap", "swap_max"),
    [(None, str(64 * MiB)), (-1, "max"), (100 * MiB, str(36 * MiB)), (64 * MiB, "0")],
)
def test_v2_fake_swap_is_memory_swap_minus_memory(
    tmp_path: Path, memory_swap: int | None, swap_max: str
) -> None:
    """Fake cgroup2 tree (see fake_v2): memory.swap.max = memory_swap - memory."""
    root, cg_dir = fake_v2(tmp_path)
    CgroupV2Driver(str(root)).create("c1", Limits(memory=64 * MiB, memory_swap=memory_swap))
    assert _read(cg_dir / "memory.swap.max") == swap_max
    assert _read(cg_dir / "cpu.max") == ""  # no other limit was written


@pytest.mark.parametrize(
    ("shares", "weight"),
    [(2, 1), (1, 1), (512, 20), (1024, 39), (262144, 10000), (10**6, 10000)],
)
def test_v2_cpu_weight_mapping(tmp_path: Path, shares: int, weight: int) -> None:
    """runc's shares to weight mapping, clamped to 1..10000 (fake tree, see fake_v2)."""
    assert cpu_weight(shares) == weight
    root, cg_dir = fake_v2(tmp_path)
    CgroupV2Driver(str(root)).create("c1", Limits(cpu_shares=shares))
    assert _read(cg_dir / "cpu.weight") == str(weight)


@pytest.mark.parametrize("pids", [0, -1])
def test_v2_fake_pids_unlimited(tmp_path: Path, pids: int) -> None:
    """Fake cgroup2 tree (see fake_v2): pids <= 0 is "max"."""
    root, cg_dir = fake_v2(tmp_path)
    CgroupV2Driver(str(root)).create("c1", Limits(pids=pids))
    assert _read(cg_dir / "pids.max") == "max"


def test_v2_fake_missing_controller_is_limit_unsupported(tmp_path: Path) -> None:
    """Fake cgroup2 tree (see fake_v2) whose root offers no memory controller."""
    root, cg_dir = fake_v2(tmp_path, controllers="cpu pids")
    driver = CgroupV2Driver(str(root))
    with pytest.raises(LimitUnsupported) as exc:
        driver.create("c1", Limits(memory=64 * MiB, pids=10))
    assert exc.value.controller == "memory"
    assert exc.value.checked == f"{root}/cgroup.controllers"
    assert "`memory`" in str(exc.value) and exc.value.checked in str(exc.value)
    assert _read(root / "cgroup.subtree_control") == ""  # checked before any write
    assert _read(cg_dir / "pids.max") == ""
    driver.create("c1", Limits(pids=10))
    assert _read(root / "sandbox/cgroup.subtree_control") == "+cpu +pids"
    assert _read(cg_dir / "pids.max") == "10"
    assert _read(cg_dir / "memory.oom.group") == ""  # no memory controller, not written


def test_v2_fake_missing_swap_file(tmp_path: Path) -> None:
    """Fake cgroup2 tree (see fake_v2) without swap accounting (no memory.swap.max)."""
    root, cg_dir = fake_v2(tmp_path)
    (cg_dir / "memory.swap.max").unlink()
    driver = CgroupV2Driver(str(root))
    driver.create("c1", Limits(memory=64 * MiB))  # the default swap is skipped
    assert _read(cg_dir / "memory.max") == str(64 * MiB)
    with pytest.raises(LimitUnsupported) as exc:
        driver.create("c1", Limits(memory=64 * MiB, memory_swap=128 * MiB))
    assert exc.value.checked == f"{cg_dir}/memory.swap.max"


def test_v2_fake_bad_limit_writes_nothing(tmp_path: Path) -> None:
    """Fake cgroup2 tree (see fake_v2): InvalidArgument before any write."""
    root, cg_dir = fake_v2(tmp_path)
    with pytest.raises(InvalidArgument, match="must not be less than memory"):
        CgroupV2Driver(str(root)).create("c1", Limits(memory=64 * MiB, memory_swap=MiB))
    assert _read(root / "cgroup.subtree_control") == ""
    assert _read(cg_dir / "memory.max") == ""


def test_v2_fake_stats(tmp_path: Path) -> None:
    """Fake cgroup2 tree (see fake_v2) with counters in the kernel's formats."""
    root, cg_dir = fake_v2(tmp_path)
    files = {
        "memory.current": "1000\n",
        "memory.peak": "5000\n",
        "memory.max": "max\n",
        "memory.stat": "anon 700\nfile 300\ninactive_file 200\nactive_file 100\n",
        "cpu.stat": "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 0\n",
        "cpu.max": "50000 100000\n",
        "pids.current": "3\n",
        "pids.max": "16\n",
        "memory.events": "low 0\nhigh 0\nmax 4\noom 2\noom_kill 1\noom_group_kill 1\n",
        "pids.events": "max 7\n",
    }
    for file, text in files.items():
        (cg_dir / file).write_text(text)
    cg = CgroupV2Driver(str(root)).open("c1")
    st = cg.stats()
    assert st.memory_usage == 1000
    assert st.memory_peak == 5000
    assert st.memory_limit is None
    assert st.memory_inactive_file == 200
    assert (st.cpu_usage_ns, st.cpu_user_ns, st.cpu_system_ns) == (1_500_000, 1_000_000, 500_000)
    assert st.cpu_percpu_ns == []
    assert st.nano_cpus == 500_000_000
    assert (st.pids_current, st.pids_limit) == (3, 16)
    assert (st.oom_kills, st.pids_limit_hits) == (1, 7)
    assert cg.oom_killed() and cg.pids_limit_hit()

    (cg_dir / "memory.max").write_text(f"{64 * MiB}\n")
    (cg_dir / "cpu.max").write_text("max 100000\n")
    (cg_dir / "pids.max").write_text("max\n")
    st = cg.stats()
    assert (st.memory_limit, st.nano_cpus, st.pids_limit) == (64 * MiB, None, None)

    # Before Linux 5.19 there is no memory.peak: the handle keeps the highest it saw.
    (cg_dir / "memory.peak").unlink()
    (cg_dir / "memory.current").write_text("7000\n")
    assert cg.stats().memory_peak == 7000
    (cg_dir / "memory.current").write_text("10\n")
    assert cg.stats().memory_peak == 7000


def test_v2_fake_gone_cgroup_reads_zeros(tmp_path: Path) -> None:
    """A handle on a cgroup that does not exist: zeros, and kill/remove do nothing."""
    cg = CgroupV2Driver(str(tmp_path)).open("gone")
    assert cg.stats().memory_usage == 0
    assert cg.procs() == []
    assert not cg.oom_killed()
    cg.kill_all()
    cg.remove()


# --- cgroup v2, real ------------------------------------------------------------------------


@requires_v2
def test_v2_real_no_limits_kill_all_and_remove(v2: Harness) -> None:
    cg = v2.create()
    path = Path(cg.path)  # type: ignore[attr-defined]
    assert path.is_dir()
    sleeper = v2.spawn(cg, "import time; time.sleep(60)")
    assert cg.procs() == [sleeper.pid]
    assert "populated 1" in _read(path / "cgroup.events")
    if not (path / "cgroup.kill").exists():
        pytest.skip("no cgroup.kill (Linux < 5.14)")  # pragma: no cover
    cg.kill_all()
    assert cg.procs() == []
    assert "populated 0" in _read(path / "cgroup.events")
    assert sleeper.wait(timeout=10) == -signal.SIGKILL
    cg.remove()
    assert not path.exists()
    cg.remove()  # idempotent


@requires_v2
def test_v2_real_sandbox_parent_is_made_again(v2: Harness) -> None:
    """The driver caches that sandbox/ is ready; it must cope with its removal."""
    v2.create().remove()
    with contextlib.suppress(OSError):
        os.rmdir(f"{V2_ROOT}/sandbox")
    cg = v2.create()
    assert os.path.isdir(cg.path)  # type: ignore[attr-defined]


@requires_v2
@pytest.mark.parametrize(
    ("limits", "controller"),
    [
        (Limits(memory=64 * MiB), "memory"),
        (Limits(nano_cpus=500_000_000), "cpu"),
        (Limits(pids=16), "pids"),
    ],
)
def test_v2_real_missing_controller_leaves_no_directory(
    v2: Harness, limits: Limits, controller: str
) -> None:
    available = _read(f"{V2_ROOT}/cgroup.controllers").split()
    if controller in available:
        pytest.skip(f"this cgroup2 has the {controller} controller")
    parent_existed = os.path.isdir(f"{V2_ROOT}/sandbox")
    name = v2.name()
    with pytest.raises(LimitUnsupported) as exc:
        v2.driver.create(name, limits)
    assert exc.value.controller == controller
    assert exc.value.checked == f"{V2_ROOT}/cgroup.controllers"
    assert f"`{controller}`" in str(exc.value)
    assert not os.path.exists(f"{V2_ROOT}/sandbox/{name}")
    assert os.path.isdir(f"{V2_ROOT}/sandbox") == parent_existed


# --- detection --------------------------------------------------------------------------------


@pytest.mark.cgroup_v1
@needs_v1
def test_detect_picks_v1_on_this_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    if MOUNTS.get(CGROUP_ROOT, ("",))[0] == "cgroup2":
        pytest.skip("pure cgroup v2 host")  # pragma: no cover
    monkeypatch.delenv("SANDBOX_CGROUP", raising=False)
    driver = detect_driver()
    assert isinstance(driver, CgroupV1Driver)
    assert driver.version == 1
    assert detect_driver() is driver  # cached


@needs_v2
def test_detect_honours_sandbox_cgroup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_CGROUP", "v2")
    driver = detect_driver()
    assert isinstance(driver, CgroupV2Driver)
    assert driver.root == V2_ROOT
    monkeypatch.setenv("SANDBOX_CGROUP", "v1")
    assert isinstance(detect_driver(), CgroupV1Driver)
    monkeypatch.setenv("SANDBOX_CGROUP", "v3")
    with pytest.raises(SandboxError, match="SANDBOX_CGROUP='v3'"):
        detect_driver()


def test_detect_fails_clearly_without_cgroups(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("SANDBOX_CGROUP", raising=False)
    with pytest.raises(SandboxError, match="no cgroup hierarchy under") as exc:
        detect_driver(str(tmp_path))
    assert str(tmp_path) in str(exc.value)


def test_public_api() -> None:
    assert set(cgroups.__all__) == {
        "ENV_FORCE",
        "PARENT",
        "Cgroup",
        "CgroupDriver",
        "CgroupStats",
        "CgroupV1",
        "CgroupV1Driver",
        "CgroupV2",
        "CgroupV2Driver",
        "Limits",
        "detect_driver",
    }
    assert all(hasattr(cgroups, name) for name in cgroups.__all__)
