"""``GET /containers/{id}/stats``: cgroup usage in the shape ``docker stats`` reads.

The docker CLI computes, from two samples (``cpu_stats`` and the previous
one, ``precpu_stats``)::

    CPU % = Δcpu_usage.total_usage / Δsystem_cpu_usage · online_cpus · 100
    MEM   = memory_stats.usage - stats.total_inactive_file (v1) | inactive_file (v2)
    MEM % = MEM / memory_stats.limit · 100

so both counters are cumulative nanoseconds: the container's CPU time from
its cgroup, and the whole host's CPU time from the ``cpu`` line of
/proc/stat. The limit is capped at the host's memory, as Docker does.

``stream=1`` (the default) sends one JSON object per line every second, or
every ``interval`` seconds (a sandbox-only parameter, at least 0.1, for live
widgets), and ends when the container exits. ``stream=0`` sends one object
with ``precpu_stats`` filled (the two samples are half a second apart, or
``interval``), ``one-shot=1`` one object without it. A container that is not
running gets ``{"id", "name"}`` only.

Cheap by design: a sample is a dozen small cgroup reads and one of
/proc/stat; every request on the same container shares the latest sample
while it is fresh (`REUSE`), so several live widgets cost about one reader.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import weakref
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from sandbox.daemon import access, params
from sandbox.daemon.params import json_reply
from sandbox.daemon.routes import Route, supervisor
from sandbox.daemon.supervisor import Supervisor
from sandbox.errors import InvalidArgument
from sandbox.runtime.cgroups import CgroupStats
from sandbox.store.containers import ContainerRecord

DEFAULT_INTERVAL = 1.0  # seconds between streamed samples, as Docker's collector
MIN_INTERVAL = 0.1  # at most 10 samples a second
MAX_INTERVAL = 60.0
ONE_SHOT_WINDOW = 0.5  # seconds between the two samples of a stream=0 reply
REUSE = 0.05  # seconds a sample is shared by every request on its container
MAX_AGE = 10.0  # seconds a sample may serve as another request's precpu_stats
ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time: "no previous sample"
BLKIO_KEYS = (
    "io_service_bytes_recursive",
    "io_serviced_recursive",
    "io_queue_recursive",
    "io_service_time_recursive",
    "io_wait_time_recursive",
    "io_merged_recursive",
    "io_time_recursive",
    "sectors_recursive",
)
_CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sample:
    """The counters of one container at one moment, with the host's CPU time."""

    read_ns: int  # wall clock (time.time_ns), for "read"/"preread"
    monotonic: float
    cgroup: CgroupStats
    system_ns: int


def system_cpu_ns() -> int:
    """The host's CPU time in ns: the first 7 fields of /proc/stat's ``cpu`` line.

    user, nice, system, idle, iowait, irq, softirq (in clock ticks), as
    Docker sums them; steal and guest are left out.
    """
    fd = os.open("/proc/stat", os.O_RDONLY | os.O_CLOEXEC)
    try:
        head = os.read(fd, 512)
    finally:
        os.close(fd)
    fields = head.split(b"\n", 1)[0].split()
    return sum(int(f) for f in fields[1:8]) * 1_000_000_000 // _CLK_TCK


def _mem_total() -> int:
    try:
        with open("/proc/meminfo", "rb") as f:
            return int(f.readline().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return 0


MEM_TOTAL = _mem_total()


class Sampler:
    """Samples containers for every stats request of one daemon.

    Keyed by (container ID, start time), so that a restarted container's
    counters, which begin again at zero, are never compared with its last run's.
    """

    def __init__(self, sup: Supervisor) -> None:
        self._sup = sup
        self._latest: dict[tuple[str, float], Sample] = {}

    def sample(self, record: ContainerRecord) -> Sample | None:
        """A fresh sample (or one under `REUSE` s old); None if it is not running."""
        key = (record.id, record.started_at)
        now = time.monotonic()
        latest = self._latest.get(key)
        if latest is not None and now - latest.monotonic < REUSE:
            return latest
        stats = self._sup.engine.stats(record.id)
        if stats is None:
            self._latest.pop(key, None)
            return None
        sample = Sample(time.time_ns(), now, stats, system_cpu_ns())
        for old in [k for k, s in self._latest.items() if now - s.monotonic > MAX_AGE]:
            del self._latest[old]
        self._latest[key] = sample
        return sample

    def previous(self, record: ContainerRecord) -> Sample | None:
        """The latest sample, if under `MAX_AGE` s old (to serve as precpu_stats)."""
        latest = self._latest.get((record.id, record.started_at))
        if latest is None or time.monotonic() - latest.monotonic > MAX_AGE:
            return None
        return latest


_samplers: weakref.WeakKeyDictionary[Supervisor, Sampler] = weakref.WeakKeyDictionary()


def sampler(sup: Supervisor) -> Sampler:
    """The daemon's one sampler (made on first use)."""
    found = _samplers.get(sup)
    if found is None:
        found = _samplers[sup] = Sampler(sup)
    return found


# -- Docker's JSON --------------------------------------------------------------------


def rfc3339_nano(ns: int) -> str:
    """``2024-05-01T12:00:00.123456789Z``, as Go writes time.Time."""
    seconds, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{frac:09d}Z"


def _cpu(sample: Sample | None, online: int) -> dict[str, Any]:
    if sample is None:  # Docker's empty precpu_stats
        return {
            "cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
        }
    cg = sample.cgroup
    usage: dict[str, Any] = {
        "total_usage": cg.cpu_usage_ns,
        "usage_in_kernelmode": cg.cpu_system_ns,
        "usage_in_usermode": cg.cpu_user_ns,
    }
    if cg.cpu_percpu_ns:  # v1 only, as in Docker
        usage["percpu_usage"] = cg.cpu_percpu_ns
    return {
        "cpu_usage": usage,
        "system_cpu_usage": sample.system_ns,
        "online_cpus": online,
        "throttling_data": {
            "periods": cg.cpu_periods,
            "throttled_periods": cg.cpu_throttled_periods,
            "throttled_time": cg.cpu_throttled_ns,
        },
    }


def docker_stats(
    record: ContainerRecord,
    sample: Sample,
    previous: Sample | None,
    *,
    online_cpus: int | None = None,
    mem_total: int = MEM_TOTAL,
) -> dict[str, Any]:
    """One ``GET /containers/{id}/stats`` object (Docker's StatsResponse, Linux)."""
    cg = sample.cgroup
    online = online_cpus or os.sysconf("SC_NPROCESSORS_ONLN")
    limit = cg.memory_limit or mem_total
    if mem_total:
        limit = min(limit, mem_total)
    pids: dict[str, int] = {"current": cg.pids_current}
    if cg.pids_limit is not None:
        pids["limit"] = cg.pids_limit
    return {
        "name": f"/{record.name}",
        "id": record.id,
        "read": rfc3339_nano(sample.read_ns),
        "preread": rfc3339_nano(previous.read_ns) if previous else ZERO_TIME,
        "pids_stats": pids,
        "blkio_stats": {key: [] for key in BLKIO_KEYS},
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": _cpu(sample, online),
        "precpu_stats": _cpu(previous, online),
        "memory_stats": {
            "usage": cg.memory_usage,
            "max_usage": cg.memory_peak,
            "limit": limit,
            "stats": cg.memory_stat,
        },
        "networks": interface_counters(record.pid) if record.endpoints else {},
    }


_DEV_FIELDS = ("rx_bytes", "rx_packets", "rx_errors", "rx_dropped",
               "tx_bytes", "tx_packets", "tx_errors", "tx_dropped")  # fmt: skip


def interface_counters(pid: int) -> dict[str, dict[str, int]]:
    """Docker's ``networks``: each interface of the process's namespace but loopback.

    ``/proc/PID/net/dev`` shows the namespace of that process, whatever the
    reader's: no need to enter it.
    """
    try:
        with open(f"/proc/{pid}/net/dev") as f:
            lines = f.read().splitlines()[2:]
    except OSError:  # it has just exited
        return {}
    result = {}
    for line in lines:
        name, _, numbers = line.partition(":")
        name = name.strip()
        if name == "lo":
            continue
        values = [int(v) for v in numbers.split()]
        # rx: bytes packets errs drop fifo frame compressed multicast; tx: the same, from 8
        rx, tx = values[0:4], values[8:12]
        result[name] = dict(zip(_DEV_FIELDS, rx + tx, strict=True))
    return result


def _line(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode() + b"\n"


# -- the route ------------------------------------------------------------------------


def _interval(request: web.Request) -> float | None:
    """The ``interval`` query parameter in seconds; None when not given.

    Raises:
        InvalidArgument: not a number in [MIN_INTERVAL, MAX_INTERVAL].
    """
    text = request.query.get("interval", "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not MIN_INTERVAL <= value <= MAX_INTERVAL:
        raise InvalidArgument(
            f"invalid interval {text!r}: use a number of seconds from {MIN_INTERVAL:g} "
            f"to {MAX_INTERVAL:g}"
        )
    return value


async def stats(request: web.Request) -> web.StreamResponse:
    """``GET /containers/{id}/stats?stream=&one-shot=&interval=``."""
    sup = supervisor(request)
    record = access.container(request, request.match_info["id"])
    stream = params.flag(request, "stream", True)
    one_shot = params.flag(request, "one-shot")
    if stream and one_shot:
        raise InvalidArgument("cannot have stream=true and one-shot=true: use stream=0")
    interval = _interval(request)
    samples = sampler(sup)
    previous = samples.previous(record)  # before sampling: this sample replaces it
    sample = samples.sample(record)
    if sample is None:
        return json_reply({"id": record.id, "name": f"/{record.name}"})
    if previous is sample:  # shared with a request a moment ago: no interval
        previous = None
    if stream:
        return await _stream(request, sup, record, samples, (sample, previous),
                             interval or DEFAULT_INTERVAL)  # fmt: skip
    if not one_shot:
        previous = previous or sample
        await asyncio.sleep(previous.monotonic + (interval or ONE_SHOT_WINDOW) - time.monotonic())
        later = samples.sample(record)
        if later is None:  # it exited meanwhile
            return json_reply({"id": record.id, "name": f"/{record.name}"})
        sample = later
    return json_reply(docker_stats(record, sample, previous))


async def _stream(request: web.Request, sup: Supervisor, record: ContainerRecord,
                  samples: Sampler, first: tuple[Sample, Sample | None],
                  interval: float) -> web.StreamResponse:  # fmt: skip
    """One object per ``interval`` until the container exits or the client leaves."""
    sample, previous = first
    running = sup.engine.running.get(record.id)
    exited = running.exited if running is not None else None
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    while True:
        await response.write(_line(docker_stats(record, sample, previous)))
        if exited is not None:
            await asyncio.wait([exited], timeout=interval)
            if exited.done():
                break
        else:  # run by another process: the next sample tells
            await asyncio.sleep(interval)
        if sup.closing or request.transport is None or request.transport.is_closing():
            break
        later = samples.sample(record)
        if later is None:
            break
        previous, sample = sample, later
    await response.write_eof()
    return response


ROUTES: list[Route] = [
    ("GET", "/containers/{id}/stats", stats),
]
