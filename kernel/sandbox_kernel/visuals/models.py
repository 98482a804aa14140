"""The data behind the kernel's pictures: a layer stack, a cell's diff, a cell's cgroup usage.

Pure data, no I/O: dataclasses whose ``to_json`` is the payload of the
kernel's MIME types, and builders from the daemon's JSON (image history,
``GET /containers/{id}/changes?detail=1``, the stats stream). The renderers
(`html`, `diagram`) and the live parts (`meter`, `panel`) all start from these.

The payloads are versioned (``"version": 1``); a renderer that meets a newer
version should fall back to the bundle's text/html.
"""

from __future__ import annotations

import calendar
import re
import time
from dataclasses import dataclass, field
from typing import Any

MIME_LAYERS = "application/vnd.jupyter-sandbox.layers+json"
MIME_DIFF = "application/vnd.jupyter-sandbox.diff+json"
MIME_STATS = "application/vnd.jupyter-sandbox.stats+json"
VERSION = 1

KINDS = {0: "C", 1: "A", 2: "D"}  # the Docker API's change kinds
MAX_DIFF_ENTRIES = 5000  # entries a diff payload carries; the rest are counted in "omitted"
MAX_LAYER_CHANGES = 100  # the same, for each layer of a layers payload (re-sent as it grows)
MAX_SAMPLES = 300  # samples a stats payload carries (downsampled)
_CELL_MADE = re.compile(r"^cell (\d+): ")  # the session's created_by, "cell N: first line"


# -- diffs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiffEntry:
    """One path a cell added (A), changed (C) or deleted (D), and the overlay's part in it."""

    path: str
    kind: str  # "A" | "C" | "D"
    type: str  # "file" | "dir" | "symlink" | "other"
    size: int  # bytes of a file as the cell left it; 0 otherwise
    layer: int | None  # the lower layer whose copy was copied up or hidden
    opaque: bool
    note: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "kind": self.kind, "type": self.type, "size": self.size,
                "layer": self.layer, "opaque": self.opaque, "note": self.note}  # fmt: skip


def overlay_note(kind: str, type_: str, layer: int | None, opaque: bool) -> str:
    """What overlayfs did for this path, in words ("" when it is a plain addition).

    A changed directory is no copy-up worth naming (overlayfs makes it in the
    upper layer to hold what changed inside); an opaque one hides its lower copies.
    """
    if opaque:
        return "opaque: hides everything below"
    if layer is None:
        return ""
    if kind == "C" and type_ != "dir":
        return f"copied up from layer {layer}"
    if kind == "D":
        return f"whiteout: hides layer {layer}'s copy"
    return ""


def diff_entry(change: dict[str, Any]) -> DiffEntry:
    """One entry of the daemon's ``changes?detail=1`` reply (Path, Kind, Size, Type, Layer...)."""
    kind = KINDS.get(int(change.get("Kind") or 0), "C")
    type_ = str(change.get("Type") or "other")
    layer = change.get("Layer")
    layer = int(layer) if layer is not None else None
    opaque = bool(change.get("Opaque"))
    size = int(change.get("Size") or 0) if kind != "D" else 0
    return DiffEntry(str(change.get("Path") or ""), kind, type_, size, layer, opaque,
                     overlay_note(kind, type_, layer, opaque))  # fmt: skip


@dataclass(frozen=True)
class Totals:
    added: int = 0
    changed: int = 0
    deleted: int = 0
    bytes: int = 0  # of the files added or changed

    def to_json(self) -> dict[str, int]:
        return {"added": self.added, "changed": self.changed, "deleted": self.deleted,
                "bytes": self.bytes}  # fmt: skip


def totals(entries: list[DiffEntry]) -> Totals:
    count = {"A": 0, "C": 0, "D": 0}
    for entry in entries:
        count[entry.kind] += 1
    size = sum(e.size for e in entries if e.kind != "D" and e.type == "file")
    return Totals(count["A"], count["C"], count["D"], size)


@dataclass
class Diff:
    """What one cell changed on disk: its upper layer, committed as layer ``layer``."""

    cell: int
    command: str
    layer: int | None
    entries: list[DiffEntry]
    totals: Totals
    omitted: int = 0  # entries left out of ``entries`` (counted in ``totals``)

    def to_json(self) -> dict[str, Any]:
        return {"version": VERSION, "cell": self.cell, "command": self.command,
                "layer": self.layer, "entries": [e.to_json() for e in self.entries],
                "totals": self.totals.to_json(), "omitted": self.omitted}  # fmt: skip


def build_diff(cell: int, command: str, layer: int | None, changes: list[dict[str, Any]],
               limit: int = MAX_DIFF_ENTRIES) -> Diff:  # fmt: skip
    """The diff of ``cell`` from the daemon's change list, sorted by path, at most ``limit``."""
    entries = sorted((diff_entry(c) for c in changes), key=lambda e: e.path)
    return Diff(cell, command, layer, entries[:limit], totals(entries),
                max(0, len(entries) - limit))  # fmt: skip


# -- layer stacks -------------------------------------------------------------------------


@dataclass
class Layer:
    """One read-only layer of the session's image (``index`` 0 is the bottom)."""

    index: int
    id: str  # the store's layer ID, shortened; "" if unknown
    size: int
    files: int | None  # files (not directories) it adds or changes; None if not known
    created_by: str
    cell: int | None = None
    command: str = ""
    source: str = "base"  # "base" | "cell"
    changes: list[DiffEntry] = field(default_factory=list)
    changes_omitted: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "id": self.id, "size": self.size, "files": self.files,
                "created_by": self.created_by, "cell": self.cell, "command": self.command,
                "source": self.source, "changes": [c.to_json() for c in self.changes],
                "changes_omitted": self.changes_omitted}  # fmt: skip

    @property
    def name(self) -> str:
        """Its name in the mount options (the diagram's label)."""
        return self.id or f"layer{self.index}"


@dataclass
class Mount:
    """The overlay mount a cell's container gets: its lowerdirs are ``layers``, top first."""

    lowerdir: list[str]
    upperdir: str = "upper"
    workdir: str = "work"
    merged: str = "merged"
    cell: int | None = None  # the cell it is drawn for (``%layers CELL``); None: the next cell

    def to_json(self) -> dict[str, Any]:
        return {"lowerdir": self.lowerdir, "upperdir": self.upperdir, "workdir": self.workdir,
                "merged": self.merged, "cell": self.cell}  # fmt: skip


UPPER_NOTE = "writable, one fresh per cell"


@dataclass
class LayerStack:
    """The session's image as a stack of layers, and the mount of a cell on top of it."""

    image: str  # the base image's name
    image_id: str  # the session's current image, 12 hex
    session: str
    layers: list[Layer]  # bottom first
    mount: Mount
    svg: str = ""

    @property
    def from_cells(self) -> list[Layer]:
        return [layer for layer in self.layers if layer.source == "cell"]

    def to_json(self) -> dict[str, Any]:
        return {"version": VERSION, "image": self.image, "image_id": self.image_id,
                "session": self.session, "layers": [x.to_json() for x in self.layers],
                "upper": {"note": UPPER_NOTE}, "mount": self.mount.to_json(),
                "svg": self.svg}  # fmt: skip


@dataclass(frozen=True)
class CellMade:
    """What the builder needs of a layer a cell of the session made."""

    cell: int
    command: str
    changes: list[dict[str, Any]]


def count_files(entries: list[DiffEntry]) -> int:
    return sum(1 for e in entries if e.kind != "D" and e.type != "dir")


def build_layers(image: str, inspect: dict[str, Any], history: list[dict[str, Any]],
                 made: dict[int, CellMade], session: str, *,
                 cell: int | None = None) -> LayerStack:  # fmt: skip
    """The stack of the image whose ``inspect`` and ``history`` the daemon gave.

    Args:
        image: the name of the base image (``%image``).
        inspect: ``GET /images/{id}/json`` (its History is oldest first, with
            ``empty_layer`` marks; SandboxLayers are the store's layer IDs).
        history: ``GET /images/{id}/history`` (newest first, with each layer's Size).
        made: the layers the session's cells made, by cell number; a layer
            whose created_by names such a cell ("cell N: ...") is that cell's
            (matched from the top, each cell once, so a base image made by
            another notebook keeps its own).
        session: the session's ID.
        cell: draw the mount of this cell (its lowerdirs: the layers below the
            one it made, or those there were when it ran); None: the next cell's.
    """
    rows = list(reversed(history))  # oldest first, as inspect's History
    raw = inspect.get("History") or []
    if len(raw) == len(rows):
        rows = [row for row, item in zip(rows, raw, strict=True) if not item.get("empty_layer")]
    else:  # no usable History: a 0-byte entry past the first is taken for no layer
        rows = [row for i, row in enumerate(rows) if i == 0 or int(row.get("Size") or 0)]
    ids = [str(i) for i in inspect.get("SandboxLayers") or []]
    if len(ids) != len(rows):
        ids = [""] * len(rows)
    layers = [Layer(i, ids[i][:12], int(row.get("Size") or 0), None,
                    str(row.get("CreatedBy") or "")) for i, row in enumerate(rows)]  # fmt: skip
    unclaimed = set(made)
    for layer in reversed(layers):
        match = _CELL_MADE.match(layer.created_by)
        if match is None or int(match.group(1)) not in unclaimed:
            continue
        number = int(match.group(1))
        unclaimed.discard(number)
        entries = sorted((diff_entry(c) for c in made[number].changes), key=lambda e: e.path)
        layer.cell, layer.command, layer.source = number, made[number].command, "cell"
        layer.files = count_files(entries)
        layer.changes = entries[:MAX_LAYER_CHANGES]
        layer.changes_omitted = max(0, len(entries) - MAX_LAYER_CHANGES)
    image_id = str(inspect.get("Id") or "").removeprefix("sha256:")[:12]
    return LayerStack(image, image_id, session, layers, mount_for(layers, cell))


def mount_for(layers: list[Layer], cell: int | None) -> Mount:
    """The mount of ``cell`` (None: the next cell) over the stack ``layers``."""
    if cell is None:
        below = layers
    else:
        below = [x for x in layers if x.source == "base" or (x.cell is not None and x.cell < cell)]
    return Mount([x.name for x in reversed(below)], cell=cell)


# -- cgroup usage -------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """A cell's cgroup limits; None where there is none."""

    memory: int | None = None  # bytes
    cpus: float | None = None  # CPUs (0.5: half of one)
    pids: int | None = None

    @classmethod
    def from_host_config(cls, host: dict[str, Any]) -> Limits:
        """From the session's HostConfig (Memory, NanoCpus, PidsLimit)."""
        nano = host.get("NanoCpus")
        return cls(host.get("Memory") or None, nano / 1e9 if nano else None,
                   host.get("PidsLimit") or None)  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {"memory": self.memory, "cpus": self.cpus, "pids": self.pids}


@dataclass(frozen=True)
class Sample:
    """One moment of a cell: ``t`` seconds after its meter started."""

    t: float
    memory: int  # bytes in use, without the page cache that could be dropped
    cpu: float  # percent of one CPU (200: two CPUs busy)
    pids: int

    def to_json(self) -> list[Any]:
        return [round(self.t, 3), self.memory, round(self.cpu, 1), self.pids]


def parse_time(text: str) -> float | None:
    """Seconds since the epoch of an RFC 3339 time with nanoseconds; None for Go's zero time."""
    if not text or text.startswith("0001-"):
        return None
    head, _, frac = text.rstrip("Z").partition(".")
    try:
        seconds = calendar.timegm(time.strptime(head, "%Y-%m-%dT%H:%M:%S"))
        return seconds + (float(f"0.{frac}") if frac.isdigit() else 0.0)
    except ValueError:
        return None


def _memory(stats: dict[str, Any]) -> tuple[int, int]:
    """(in use, peak) as ``docker stats`` counts it: usage less the inactive page cache."""
    mem = stats.get("memory_stats") or {}
    detail = mem.get("stats") or {}
    cache = detail.get("total_inactive_file", detail.get("inactive_file", 0)) or 0
    usage = int(mem.get("usage") or 0)
    return max(0, usage - int(cache)), int(mem.get("max_usage") or 0)


def _cpu_ns(stats: dict[str, Any], key: str) -> int:
    return int(((stats.get(key) or {}).get("cpu_usage") or {}).get("total_usage") or 0)


class UsageRecorder:
    """The samples of one cell, from the daemon's stats objects; its summary at the end.

    CPU % is the container's CPU time over wall time between two of the
    daemon's samples (both in each object: ``cpu_stats`` and ``precpu_stats``,
    ``read`` and ``preread``). Samples are kept at full rate up to twice
    `MAX_SAMPLES`, then pairs are merged (keeping the larger values), so a
    long cell costs bounded memory and its peaks survive.
    """

    def __init__(self, limits: Limits, max_samples: int = MAX_SAMPLES) -> None:
        self.limits = limits
        self.max_samples = max_samples
        self.samples: list[Sample] = []
        self.latest: Sample | None = None
        self.peak_memory = 0
        self.peak_cpu = 0.0
        self.peak_pids = 0
        self._first: tuple[float, int] | None = None  # (read time, CPU ns)
        self._last: tuple[float, int] | None = None

    def add(self, stats: dict[str, Any], t: float) -> Sample | None:
        """Take one stats object (received ``t`` s after the start); None if it has no data."""
        if "memory_stats" not in stats:
            return None  # {"id", "name"}: the container is not running
        memory, peak = _memory(stats)
        total = _cpu_ns(stats, "cpu_stats")
        read, preread = parse_time(str(stats.get("read", ""))), parse_time(
            str(stats.get("preread", "")))  # fmt: skip
        cpu = 0.0
        if read is not None and preread is not None and read > preread:
            cpu = max(0.0, (total - _cpu_ns(stats, "precpu_stats")) / 1e9 / (read - preread) * 100)
        if read is not None:
            self._first = self._first or (preread or read, _cpu_ns(stats, "precpu_stats")
                                          if preread else total)  # fmt: skip
            self._last = (read, total)
        pids = int((stats.get("pids_stats") or {}).get("current") or 0)
        sample = Sample(t, memory, cpu, pids)
        self.latest = sample
        self.peak_memory = max(self.peak_memory, peak, memory)
        self.peak_cpu = max(self.peak_cpu, cpu)
        self.peak_pids = max(self.peak_pids, pids)
        self.samples.append(sample)
        if len(self.samples) >= 2 * self.max_samples:
            self.samples = downsample(self.samples, self.max_samples)
        return sample

    @property
    def cpu_average(self) -> float:
        if self._first is None or self._last is None or self._last[0] <= self._first[0]:
            return self.latest.cpu if self.latest is not None else 0.0
        return max(0.0, (self._last[1] - self._first[1]) / 1e9
                   / (self._last[0] - self._first[0]) * 100)  # fmt: skip

    def summary(self, cell: int, container: str, duration: float, *, oom_killed: bool = False,
                pids_limit_hit: bool = False) -> Stats:  # fmt: skip
        return Stats(
            cell=cell, container=container, duration=duration,
            samples=downsample(self.samples, self.max_samples),
            memory_current=self.latest.memory if self.latest else 0,
            memory_peak=self.peak_memory, cpu_peak=self.peak_cpu, cpu_average=self.cpu_average,
            pids_current=self.latest.pids if self.latest else 0, pids_peak=self.peak_pids,
            limits=self.limits, oom_killed=oom_killed, pids_limit_hit=pids_limit_hit,
        )  # fmt: skip

    def live(self, cell: int, container: str, duration: float) -> Stats:
        """The usage so far, for the live meter: its only sample is the latest one."""
        stats = Stats(
            cell=cell, container=container, duration=duration,
            samples=[self.latest] if self.latest else [],
            memory_current=self.latest.memory if self.latest else 0,
            memory_peak=self.peak_memory, cpu_peak=self.peak_cpu, cpu_average=self.cpu_average,
            pids_current=self.latest.pids if self.latest else 0, pids_peak=self.peak_pids,
            limits=self.limits, running=True,
        )  # fmt: skip
        return stats


def downsample(samples: list[Sample], limit: int) -> list[Sample]:
    """At most ``limit`` samples: consecutive ones merged, keeping each field's largest value."""
    if len(samples) <= limit:
        return list(samples)
    size = -(-len(samples) // limit)  # ceil
    merged = []
    for start in range(0, len(samples), size):
        group = samples[start : start + size]
        merged.append(Sample(group[-1].t, max(s.memory for s in group),
                             max(s.cpu for s in group), max(s.pids for s in group)))  # fmt: skip
    return merged


@dataclass
class Stats:
    """A cell's cgroup usage: the frozen summary (or, with ``running``, the live meter's)."""

    cell: int
    container: str
    duration: float  # seconds
    samples: list[Sample]
    memory_current: int
    memory_peak: int
    cpu_peak: float  # percent of one CPU
    cpu_average: float
    pids_current: int
    pids_peak: int
    limits: Limits
    oom_killed: bool = False
    pids_limit_hit: bool = False
    running: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "version": VERSION, "cell": self.cell, "container": self.container,
            "duration": round(self.duration, 3), "samples": [s.to_json() for s in self.samples],
            "memory": {"current": self.memory_current, "peak": self.memory_peak,
                       "limit": self.limits.memory},
            "cpu": {"percent_peak": round(self.cpu_peak, 1),
                    "percent_avg": round(self.cpu_average, 1), "limit_cpus": self.limits.cpus},
            "pids": {"peak": self.pids_peak, "limit": self.limits.pids},
            "oom_killed": self.oom_killed, "pids_limit_hit": self.pids_limit_hit,
        }  # fmt: skip

    def usage(self) -> dict[str, Any]:
        """The panel's ``usage`` push: the latest sample's fields, peaks, and the limits."""
        latest = self.samples[-1] if self.samples else Sample(self.duration, 0, 0.0, 0)
        return {"type": "usage", "cell": self.cell, "container": self.container,
                "t": round(latest.t, 3), "memory": latest.memory, "cpu": round(latest.cpu, 1),
                "pids": latest.pids, "memory_peak": self.memory_peak,
                "cpu_peak": round(self.cpu_peak, 1), "pids_peak": self.pids_peak,
                "limits": self.limits.to_json()}  # fmt: skip
