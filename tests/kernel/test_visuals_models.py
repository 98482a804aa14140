"""The models behind the kernel's pictures, their renderers and the mount diagram (no kernel).

The inputs are the daemon's own JSON: change lists as
``GET /containers/{id}/changes?detail=1`` gives them, image history and
inspect data, and stats objects made by the daemon's own serialiser
(`sandbox.daemon.routes.stats.docker_stats`). Time is injected where it
matters (the throttle, the recorder).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from typing import Any

import pytest
from sandbox_kernel.visuals import diagram, html
from sandbox_kernel.visuals.bundles import diff_bundle, layers_bundle, stats_bundle
from sandbox_kernel.visuals.meter import Throttle
from sandbox_kernel.visuals.models import (
    MAX_SAMPLES,
    MIME_DIFF,
    MIME_LAYERS,
    MIME_STATS,
    CellMade,
    Limits,
    Sample,
    UsageRecorder,
    build_diff,
    build_layers,
    diff_entry,
    downsample,
    parse_time,
)

from sandbox.daemon.routes.stats import Sample as DaemonSample
from sandbox.daemon.routes.stats import docker_stats, rfc3339_nano
from sandbox.runtime.cgroups.base import CgroupStats
from sandbox.store.containers import ContainerRecord

MiB = 1 << 20
BASE_MADE_BY = "sandbox: base image from this host's tools"


def change(path: str, kind: int, type_: str = "file", size: int = 0, layer: int | None = None,
           opaque: bool = False) -> dict[str, Any]:  # fmt: skip
    """One entry of the daemon's ``changes?detail=1`` reply (Kind: 0 C, 1 A, 2 D)."""
    return {"Path": path, "Kind": kind, "Size": size, "Type": type_, "Layer": layer,
            "Opaque": opaque}  # fmt: skip


# -- diffs --------------------------------------------------------------------------------


@pytest.mark.parametrize(("entry", "kind", "note"), [
    (change("/new", 1, size=3), "A", ""),
    (change("/etc/passwd", 0, size=9, layer=0), "C", "copied up from layer 0"),
    (change("/usr/bin/link", 0, "symlink", layer=2), "C", "copied up from layer 2"),
    # overlayfs makes a changed directory in the upper layer: no copy-up worth naming
    (change("/etc", 0, "dir", layer=0), "C", ""),
    (change("/usr/bin/rev", 2, layer=0), "D", "whiteout: hides layer 0's copy"),
    (change("/srv/o", 0, "dir", layer=1, opaque=True), "C", "opaque: hides everything below"),
    (change("/srv/new", 1, "dir", opaque=True), "A", "opaque: hides everything below"),
    (change("/gone", 2), "D", ""),
])  # fmt: skip
def test_each_change_says_what_overlayfs_did(entry: dict[str, Any], kind: str, note: str) -> None:
    got = diff_entry(entry)
    assert (got.path, got.kind, got.note) == (entry["Path"], kind, note)
    assert got.to_json() == {"path": entry["Path"], "kind": kind, "type": entry["Type"],
                             "size": 0 if kind == "D" else entry["Size"],
                             "layer": entry["Layer"], "opaque": entry["Opaque"],
                             "note": note}  # fmt: skip


def test_diff_payload_sorted_with_totals() -> None:
    changes = [change("/srv/d/kept", 0, size=10, layer=1), change("/srv", 0, "dir", layer=0),
               change("/a", 1, size=5), change("/srv/d/gone", 2, layer=1),
               change("/srv/d", 0, "dir", layer=1), change("/srv/link", 1, "symlink", size=7)]
    diff = build_diff(4, "rm /srv/d/gone", 2, changes)
    payload = diff.to_json()
    assert set(payload) == {"version", "cell", "command", "layer", "entries", "totals", "omitted"}
    assert (payload["version"], payload["cell"], payload["command"], payload["layer"]) == (
        1, 4, "rm /srv/d/gone", 2)  # fmt: skip
    assert [e["path"] for e in payload["entries"]] == sorted(c["Path"] for c in changes)
    # bytes: the files added or changed (not the symlink, not what was deleted)
    assert payload["totals"] == {"added": 2, "changed": 3, "deleted": 1, "bytes": 15}
    assert payload["omitted"] == 0


def test_a_huge_diff_is_cut_but_counted() -> None:
    changes = [change(f"/many/{i:05}", 1, size=1) for i in range(30)]
    diff = build_diff(1, "touch", 1, changes, limit=10)
    assert len(diff.entries) == 10 and diff.omitted == 20
    assert diff.totals.added == 30 and diff.totals.bytes == 30
    assert html.diff_text(diff).endswith("... and 20 more")
    assert "20 more paths" in html.render_diff(diff)


def test_diff_text_keeps_the_magic_s_layout() -> None:
    diff = build_diff(7, "edit", 2, [change("/srv/d/kept", 0, size=10, layer=1),
                                     change("/srv/d/gone", 2, layer=1), change("/new", 1, size=3)])
    assert html.diff_text(diff).splitlines() == [
        "cell 7 changed 3 path(s)  (A added, C changed, D deleted)",
        "A /new  3B",
        "D /srv/d/gone  (whiteout: hides layer 1's copy)",
        "C /srv/d/kept  10B  (copied up from layer 1)",
    ]


def test_diff_html_is_a_tree_without_script() -> None:
    diff = build_diff(3, "x", 1, [
        change("/root", 0, "dir", layer=0), change("/root/work", 1, "dir"),
        change("/root/work/a.txt", 1, size=2), change("/root/work/sub/b.txt", 1, size=2),
        change("/etc/<evil>&", 1, size=1), change("/etc/passwd", 0, size=9, layer=0),
    ])  # fmt: skip
    page = html.render_diff(diff)
    assert "<script" not in page and "<evil>" not in page and "&lt;evil&gt;&amp;" in page
    # root/ > work/ > (a.txt, sub/ > b.txt): each directory a <details> around its children
    assert page.count(">root/<") == 1 and page.count(">work/<") == 1
    assert page.index(">root/<") < page.index(">work/<") < page.index(">a.txt<")
    work = page[page.index(">work/<"):]
    assert work.index("<details") < work.index(">b.txt<")  # sub/ nests inside work/
    assert "copied up from layer 0" in page
    assert page.count("<details") == page.count("</details>") >= 3
    tree = html.diff_tree(diff.entries)
    assert set(tree.children) == {"etc", "root"}
    assert set(tree.children["root"].children["work"].children) == {"a.txt", "sub"}
    assert tree.children["etc"].entry is None  # a parent that did not change itself


# -- layer stacks ---------------------------------------------------------------------------


def image_data(created_by: list[tuple[str, int, bool]]) -> tuple[dict[str, Any], list[Any]]:
    """(inspect, history) of an image: ``(created_by, size, empty)`` rows, oldest first."""
    layers = [f"{i:02d}" + "ab" * 31 for i, (_, _, empty) in enumerate(created_by) if not empty]
    inspect = {"Id": "sha256:" + "c0ffee" * 10 + "abcd",
               "History": [{"created_by": c, **({"empty_layer": True} if e else {})}
                           for c, _, e in created_by],
               "SandboxLayers": layers}  # fmt: skip
    history = [{"Id": "<missing>", "CreatedBy": c, "Size": s, "Tags": None}
               for c, s, _ in reversed(created_by)]  # fmt: skip
    return inspect, history


def test_layer_stack_from_the_daemon_s_history() -> None:
    inspect, history = image_data([
        (BASE_MADE_BY, 28_000_000, False),
        ("cell 2: cat x", 0, True),  # a cell that changed nothing: no layer
        ("cell 3: mkdir /d", 0, False),  # only a directory: a layer of 0 bytes
        ("cell 5: echo hi > /d/x", 4096, False),
    ])  # fmt: skip
    made = {3: CellMade(3, "mkdir /d", [change("/d", 1, "dir")]),
            5: CellMade(5, "echo hi > /d/x", [change("/d", 0, "dir", layer=1),
                                              change("/d/x", 1, size=3)])}  # fmt: skip
    stack = build_layers("base", inspect, history, made, "a1b2c3")
    payload = stack.to_json()
    assert set(payload) == {"version", "image", "image_id", "session", "layers", "upper",
                            "mount", "svg"}  # fmt: skip
    assert (payload["image"], payload["image_id"], payload["session"]) == (
        "base", "c0ffeec0ffee", "a1b2c3")  # fmt: skip
    rows = payload["layers"]
    assert [(r["index"], r["source"], r["cell"], r["size"], r["files"]) for r in rows] == [
        (0, "base", None, 28_000_000, None), (1, "cell", 3, 0, 0), (2, "cell", 5, 4096, 1)]
    assert [r["id"] for r in rows] == [i[:12] for i in inspect["SandboxLayers"]]
    assert rows[2]["command"] == "echo hi > /d/x"
    assert rows[2]["created_by"] == "cell 5: echo hi > /d/x"
    assert [c["path"] for c in rows[2]["changes"]] == ["/d", "/d/x"]
    assert rows[0]["changes"] == [] and rows[0]["command"] == ""
    assert payload["upper"] == {"note": "writable, one fresh per cell"}
    assert payload["mount"] == {"lowerdir": [r["id"] for r in reversed(rows)], "upperdir": "upper",
                                "workdir": "work", "merged": "merged", "cell": None}


def test_a_base_image_made_by_another_notebook_keeps_its_layers() -> None:
    """Its "cell 2:" layer is not this session's cell 2 (matched from the top, once)."""
    inspect, history = image_data([(BASE_MADE_BY, 100, False), ("cell 2: old", 10, False),
                                   ("cell 2: new", 20, False)])  # fmt: skip
    stack = build_layers("mine", inspect, history, {2: CellMade(2, "new", [])}, "s")
    assert [(x.source, x.cell) for x in stack.layers] == [("base", None), ("base", None),
                                                         ("cell", 2)]  # fmt: skip
    assert len(stack.from_cells) == 1


def test_the_mount_of_one_cell_has_the_layers_below_it() -> None:
    inspect, history = image_data([(BASE_MADE_BY, 100, False), ("cell 1: a", 1, False),
                                   ("cell 4: b", 1, False), ("cell 6: c", 1, False)])  # fmt: skip
    made = {n: CellMade(n, c, []) for n, c in ((1, "a"), (4, "b"), (6, "c"))}
    ids = [i[:12] for i in inspect["SandboxLayers"]]
    assert build_layers("base", inspect, history, made, "s", cell=4).mount.lowerdir == [
        ids[1], ids[0]]  # fmt: skip
    # a cell that made no layer ran on what the cells before it made
    assert build_layers("base", inspect, history, made, "s", cell=5).mount.lowerdir == [
        ids[2], ids[1], ids[0]]  # fmt: skip
    assert build_layers("base", inspect, history, made, "s", cell=1).mount.lowerdir == [ids[0]]


def test_layers_text_keeps_the_magic_s_layout() -> None:
    inspect, history = image_data([(BASE_MADE_BY, 28_262_412, False),
                                   ("cell 3: echo one > /layer-one", 4096, False)])  # fmt: skip
    stack = build_layers("base", inspect, history,
                         {3: CellMade(3, "echo one > /layer-one", [])}, "s")  # fmt: skip
    text = html.layers_text(stack)
    lines = text.splitlines()
    assert lines[0] == "base: 2 read-only layer(s), bottom first (1 from this notebook's cells)"
    assert lines[2:5] == ["layer       size  made by",
                          f"    0     28.3MB  {BASE_MADE_BY}",
                          "    1      4.1kB  cell 3: echo one > /layer-one"]  # fmt: skip
    # the regex tests/kernel/test_notebooks.py reads the rows with
    assert re.findall(r"(?m)^\s*(\d+)\s+\S+\s+cell (\d+): (.*)$", text) == [
        ("1", "3", "echo one > /layer-one")]  # fmt: skip
    assert lines[5].startswith("upper ")
    assert lines[-1] == (f"mount: lowerdir={stack.layers[1].id}:{stack.layers[0].id} (read-only, "
                         "top first), upperdir=upper, workdir=work -> merged")  # fmt: skip


def test_layers_html_stacks_top_first_and_opens_a_layer_s_diff() -> None:
    inspect, history = image_data([(BASE_MADE_BY, 100, False), ("cell 1: touch /f", 1, False)])
    stack = build_layers("base", inspect, history,
                         {1: CellMade(1, "touch /f", [change("/f", 1)])}, "s")  # fmt: skip
    page = html.render_layers(stack)
    assert "<script" not in page
    assert page.index("<b>merged</b>") < page.index("<b>upper</b>") < page.index("<b>1</b>") \
        < page.index("<b>0</b>")  # fmt: skip
    assert "<details><summary>cell 1:" in page and ">f<" in page  # the layer's diff, folded
    assert "mount: lowerdir=" in page  # no SVG: the mount as text
    stack.svg = "<svg><text>drawn</text></svg>"
    assert "<svg><text>drawn</text></svg>" in html.render_layers(stack)


def test_bundles_carry_the_three_types() -> None:
    inspect, history = image_data([(BASE_MADE_BY, 100, False)])
    stack = build_layers("base", inspect, history, {}, "s")
    diff = build_diff(1, "x", 1, [change("/f", 1)])
    stats = UsageRecorder(Limits(memory=64 * MiB)).summary(1, "nbs-1", 0.5)
    for bundle, mime, payload in ((layers_bundle(stack), MIME_LAYERS, stack.to_json()),
                                  (diff_bundle(diff), MIME_DIFF, diff.to_json()),
                                  (stats_bundle(stats), MIME_STATS, stats.to_json())):
        assert set(bundle) == {mime, "text/html", "text/plain"}
        assert bundle[mime] == payload and payload["version"] == 1
        assert bundle["text/html"].startswith("<div") and bundle["text/plain"]


# -- the mount diagram ----------------------------------------------------------------------


def test_mount_diagram_is_an_inline_svg_of_the_overlay() -> None:
    inspect, history = image_data([(BASE_MADE_BY, 100, False), ("cell 1: touch /f", 1, False)])
    stack = build_layers("base", inspect, history, {1: CellMade(1, "touch /f", [])}, "s")
    svg = diagram.mount_svg(stack)
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert "<?xml" not in svg and "<!DOCTYPE" not in svg and "<!--" not in svg
    for words in ("mount point: merged", "upperdir: upper", "workdir: work",
                  "lowerdir: read&#45;only, top first", "cell 1: touch /f", "layer 0",
                  stack.layers[0].id):
        assert words in svg, words
    # top first: layer 1 is drawn above layer 0 (smaller y)
    ys = {int(n): float(y)
          for y, n in re.findall(r'<text[^>]*\by="([-\d.]+)"[^>]*>layer (\d+) ', svg)}
    assert ys[1] < ys[0]


def test_a_deep_stack_is_drawn_with_the_rest_folded() -> None:
    rows = [(BASE_MADE_BY, 100, False)] + [(f"cell {i}: step {i}", 1, False) for i in range(1, 30)]
    inspect, history = image_data(rows)
    made = {i: CellMade(i, f"step {i}", []) for i in range(1, 30)}
    source = diagram.mount_source(build_layers("base", inspect, history, made, "s"))
    assert source.count("label=\"layer ") == diagram.MAX_DRAWN - 1
    assert "... 19 more: layers 18 to 0" in source


def test_without_dot_the_diagram_is_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    inspect, history = image_data([(BASE_MADE_BY, 100, False)])
    stack = build_layers("nodot-base", inspect, history, {}, "nodot")
    monkeypatch.setenv("PATH", "/nonexistent")
    diagram._render.cache_clear()
    assert diagram.mount_svg(stack) == ""
    assert "mount: lowerdir=" in html.render_layers(stack)  # the text instead


# -- cgroup usage ---------------------------------------------------------------------------

RECORD = ContainerRecord("c0ffee", "nbs-1", "img", "base", [], ["bash"], [])
T0 = 1_700_000_000 * 10**9  # ns


def daemon_stats(ms: int, cpu_ms: int, memory: int, *, peak: int = 0, cache: int = 0,
                 pids: int = 1,
                 previous: tuple[int, int] | None = None) -> dict[str, Any]:  # fmt: skip
    """A stats object as the daemon streams it: ``ms`` after T0, ``cpu_ms`` of CPU used so far."""

    def sample(at_ms: int, used_ms: int) -> DaemonSample:
        cgroup = CgroupStats(memory_usage=memory + cache, memory_peak=peak or memory + cache,
                             memory_limit=64 * MiB, cpu_usage_ns=used_ms * 10**6,
                             pids_current=pids, pids_limit=64,
                             memory_stat={"total_inactive_file": cache})  # fmt: skip
        return DaemonSample(T0 + at_ms * 10**6, at_ms / 1000, cgroup, at_ms * 10**6 * 4)

    before = sample(*previous) if previous else None
    return docker_stats(RECORD, sample(ms, cpu_ms), before, online_cpus=4, mem_total=1 << 34)


def test_recorder_reads_the_daemon_s_stats() -> None:
    rec = UsageRecorder(Limits(memory=64 * MiB, cpus=0.5, pids=64))
    assert rec.add({"id": "c0ffee", "name": "/nbs-1"}, 0.0) is None  # not running: no data
    first = rec.add(daemon_stats(100, 0, 2 * MiB, cache=MiB), 0.1)
    assert first == Sample(0.1, 2 * MiB, 0.0, 1)  # no previous sample: no CPU % yet
    second = rec.add(daemon_stats(300, 150, 40 * MiB, peak=45 * MiB, pids=3,
                                  previous=(100, 0)), 0.3)  # fmt: skip
    assert second is not None
    assert (second.memory, second.pids) == (40 * MiB, 3)
    assert second.cpu == pytest.approx(75.0)  # 150 ms of CPU in 200 ms
    rec.add(daemon_stats(500, 160, 10 * MiB, peak=45 * MiB, previous=(300, 150)), 0.5)
    stats = rec.summary(7, "nbs-7", 0.62, oom_killed=True)
    payload = stats.to_json()
    assert payload == {
        "version": 1, "cell": 7, "container": "nbs-7", "duration": 0.62,
        "samples": [[0.1, 2 * MiB, 0.0, 1], [0.3, 40 * MiB, 75.0, 3], [0.5, 10 * MiB, 5.0, 1]],
        "memory": {"current": 10 * MiB, "peak": 45 * MiB, "limit": 64 * MiB},
        "cpu": {"percent_peak": 75.0, "percent_avg": 40.0, "limit_cpus": 0.5},
        "pids": {"peak": 3, "limit": 64}, "oom_killed": True, "pids_limit_hit": False,
    }  # fmt: skip


def test_samples_stay_bounded_and_keep_their_peaks() -> None:
    rec = UsageRecorder(Limits())
    for i in range(3 * MAX_SAMPLES + 7):
        memory = 99 * MiB if i == 500 else MiB
        rec.add(daemon_stats(100 * (i + 1), 10 * i, memory, previous=(100 * i, 10 * i)), i / 10)
        assert len(rec.samples) < 2 * MAX_SAMPLES
    samples = rec.summary(1, "c", 100.0).to_json()["samples"]
    assert len(samples) <= MAX_SAMPLES
    assert max(s[1] for s in samples) == 99 * MiB
    assert [s[0] for s in samples] == sorted(s[0] for s in samples)
    assert downsample([Sample(0, 1, 0, 1)], 300) == [Sample(0, 1, 0, 1)]


def test_parse_time() -> None:
    assert parse_time(rfc3339_nano(T0 + 123_456_789)) == pytest.approx(T0 / 1e9 + 0.123456789)
    assert parse_time("0001-01-01T00:00:00Z") is None
    assert parse_time("garbage") is None


def test_stats_renderers_show_alarms_in_red() -> None:
    rec = UsageRecorder(Limits(memory=32 * MiB, pids=16))
    rec.add(daemon_stats(100, 10, 31 * MiB, pids=16), 0.1)
    rec.add(daemon_stats(200, 50, 31 * MiB, pids=16, previous=(100, 10)), 0.2)
    calm = rec.summary(2, "nbs-2", 0.3)
    assert html.RED not in html.render_stats(calm) and "!!" not in html.stats_text(calm)
    oom = rec.summary(2, "nbs-2", 0.3, oom_killed=True, pids_limit_hit=True)
    page, text = html.render_stats(oom), html.stats_text(oom)
    assert page.count(f"background:{html.RED}") == 2  # the memory and pids bars
    assert "out of memory" in page and "process limit" in page and "<svg" in page
    assert "<script" not in page
    assert text.splitlines()[0] == "cell 2 (nbs-2): 0.30 s"
    assert "!! out of memory: the cell reached its memory limit (32MiB) and was killed" in text
    live = rec.live(2, "nbs-2", 0.25)
    assert live.running and "running..." in html.render_stats(live)
    assert "<svg" not in html.render_stats(live)  # no plot while it runs: bars only
    assert live.usage() | {"t": 0} == {
        "type": "usage", "cell": 2, "container": "nbs-2", "t": 0, "memory": 31 * MiB,
        "cpu": 40.0, "pids": 16, "memory_peak": 31 * MiB, "cpu_peak": 40.0, "pids_peak": 16,
        "limits": {"memory": 32 * MiB, "cpus": None, "pids": 16}}  # fmt: skip


# -- the throttle ---------------------------------------------------------------------------


class Clock:
    """A clock that moves only when told, and the timers scheduled on it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[list[Any]] = []  # [due, callback, cancelled]

    def __call__(self) -> float:
        return self.now

    def later(self, delay: float, callback: Callable[[], None]) -> Any:
        timer = [self.now + delay, callback, False]
        self.timers.append(timer)

        class Handle:
            def cancel(self) -> None:
                timer[2] = True

        return Handle()

    def advance(self, to: float) -> None:
        self.now = to
        for timer in sorted(self.timers, key=lambda t: t[0]):
            if timer[0] <= to and not timer[2]:
                timer[2] = True
                timer[1]()


def test_throttle_sends_at_most_once_a_period_and_never_loses_the_last() -> None:
    clock = Clock()
    sends: list[float] = []
    throttle = Throttle(0.1, lambda: sends.append(clock.now), clock, clock.later)
    throttle()  # at its start: the display just went out, so this waits
    assert sends == []
    clock.advance(0.1)
    assert sends == [0.1]  # the trailing send
    for t in (0.12, 0.15, 0.19):
        clock.advance(t)
        throttle()
    clock.advance(0.2)
    assert sends == [0.1, 0.2]  # three changes, one send, the latest state
    clock.advance(0.5)
    throttle()  # quiet for a while: at once
    assert sends == [0.1, 0.2, 0.5] and throttle.sent == 3
    clock.advance(0.55)
    throttle()
    throttle.cancel()
    clock.advance(1.0)
    assert sends == [0.1, 0.2, 0.5]  # cancelled: the pending send is dropped
    # Over any run, at most one send per period.
    clock, sends = Clock(), []
    throttle = Throttle(0.1, lambda: sends.append(clock.now), clock, clock.later)
    for i in range(1, 1000):
        clock.advance(i * 0.013)
        throttle()
    assert len(sends) <= clock.now / 0.1
    assert all(b - a >= 0.1 - 1e-9 for a, b in itertools.pairwise(sends))
