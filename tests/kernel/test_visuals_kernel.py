"""The kernel's pictures, through the real kernel: %layers, %diff, %autodiff, the meter, the panel.

Everything is read off the Jupyter protocol as a frontend would: display_data
bundles (our vendor MIME type, text/html, text/plain), update_display_data
for live displays, comm_open/comm_msg/comm_close for the ipywidgets meter,
and a comm to ``jupyter_sandbox.panel`` opened from the test client as
JupyterLab's side panel opens it.
"""

from __future__ import annotations

import queue
import time
import uuid
from datetime import datetime
from typing import Any

from .conftest import Cell, Driver, ok

LAYERS = "application/vnd.jupyter-sandbox.layers+json"
DIFF = "application/vnd.jupyter-sandbox.diff+json"
STATS = "application/vnd.jupyter-sandbox.stats+json"
WIDGET = "application/vnd.jupyter.widget-view+json"
PANEL = "jupyter_sandbox.panel"
MiB = 1 << 20
# Allocates 40 MiB for a moment (tail keeps the last 40 MiB it read), then idles a second.
BUSY_CELL = "head -c 50m /dev/zero | tail -c 40m > /dev/null; sleep 1"


def number(cell: Cell) -> int:
    return int(cell.reply["execution_count"])


def only(cell: Cell, mime: str) -> Any:
    found = cell.shown(mime)
    assert len(found) == 1, (mime, cell.messages)
    return found[0]


def date(msg: dict[str, Any]) -> datetime:
    value = msg["header"]["date"]
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def widget_updates(cell: Cell, model_id: str) -> list[dict[str, Any]]:
    """The comm_msg state updates the kernel sent to the widget model ``model_id``."""
    return [m for m in cell.messages if m["msg_type"] == "comm_msg"
            and m["content"]["comm_id"] == model_id
            and m["content"]["data"].get("method") == "update"]  # fmt: skip


def cell_seconds(cell: Cell) -> float:
    """The cell's duration as the kernel's message dates tell: execute_input to the last output."""
    start = next(date(m) for m in cell.messages if m["msg_type"] == "execute_input")
    return (date(cell.messages[-1]) - start).total_seconds()


# -- %layers ------------------------------------------------------------------------------


def test_layers_is_a_bundle_that_grows_with_the_notebook(kernel: Driver) -> None:
    ok(kernel, "%reset")
    shown = ok(kernel, "%layers")
    (display,) = shown.displays
    assert set(display["data"]) == {LAYERS, "text/html", "text/plain"}
    payload = display["data"][LAYERS]
    assert payload["version"] == 1 and payload["image"] == "base"
    assert len(payload["image_id"]) == 12 and payload["session"]
    base = payload["layers"]
    assert base and all(layer["source"] == "base" for layer in base)
    assert [layer["index"] for layer in base] == list(range(len(base)))
    assert payload["upper"] == {"note": "writable, one fresh per cell"}
    mount = payload["mount"]
    assert mount["lowerdir"] == [layer["id"] for layer in reversed(base)]
    assert (mount["upperdir"], mount["workdir"], mount["merged"]) == ("upper", "work", "merged")
    assert payload["svg"].startswith("<svg") and "upperdir" in payload["svg"]
    html = display["data"]["text/html"]
    assert "<details" in html and "<svg" in html and "<script" not in html
    assert "0 from this notebook's cells" in display["data"]["text/plain"]
    display_id = display["transient"]["display_id"]

    writer = ok(kernel, "echo live > /live-layer")
    (update,) = writer.updates
    assert update["transient"]["display_id"] == display_id
    grown = update["data"][LAYERS]
    assert grown["layers"][: len(base)] == base
    (top,) = grown["layers"][len(base) :]
    assert (top["index"], top["source"], top["cell"]) == (len(base), "cell", number(writer))
    assert top["command"] == "echo live > /live-layer"
    assert top["created_by"] == f"cell {number(writer)}: echo live > /live-layer"
    assert top["files"] == 1 and top["size"] > 0 and top["id"]
    assert {"path": "/live-layer", "kind": "A", "type": "file", "size": 5, "layer": None,
            "opaque": False, "note": ""} in top["changes"]  # fmt: skip
    assert grown["mount"]["lowerdir"][0] == top["id"]
    assert "1 from this notebook's cells" in update["data"]["text/plain"]
    assert f"cell {number(writer)}: echo live" in update["data"]["text/html"]

    reader = ok(kernel, "cat /live-layer")  # changes nothing: nothing to redraw
    assert reader.stdout == "live\n" and not reader.updates
    ok(kernel, "%reset")


def test_layers_of_one_cell_shows_its_mount(kernel: Driver) -> None:
    ok(kernel, "%reset")
    first = ok(kernel, "echo 1 > /mount-one")
    second = ok(kernel, "echo 2 > /mount-two")
    pinned = ok(kernel, f"%layers {number(second)}")
    payload = only(pinned, LAYERS)
    # Drawn for one cell, it never changes: no display ID to update it by.
    assert not pinned.displays[0]["transient"].get("display_id")
    layers = payload["layers"]
    made = {layer["cell"]: layer for layer in layers if layer["source"] == "cell"}
    assert set(made) == {number(first), number(second)}
    # The second cell ran on everything below its own layer.
    below = [layer["id"] for layer in reversed(layers) if layer["cell"] != number(second)]
    assert payload["mount"]["lowerdir"] == below
    assert payload["mount"]["cell"] == number(second)
    assert f"cell {number(second)}" in payload["svg"]
    assert f"the mount of cell {number(second)}:" in pinned.plain
    ok(kernel, "%reset")


# -- %diff and %autodiff ------------------------------------------------------------------


def test_diff_bundle_names_the_overlay_mechanics(kernel: Driver) -> None:
    ok(kernel, "%reset")
    first = ok(kernel, "mkdir -p /srv/d /srv/o && echo b > /srv/d/kept && echo a > /srv/d/added"
                       " && touch /srv/o/old")  # fmt: skip
    second = ok(kernel, "rm /srv/d/added; echo changed >> /srv/d/kept; rm -rf /srv/o; "
                        "mkdir /srv/o; touch /second-file")  # fmt: skip
    layers = only(ok(kernel, "%layers"), LAYERS)["layers"]
    index = {layer["cell"]: layer["index"] for layer in layers if layer["source"] == "cell"}
    shown = ok(kernel, f"%diff {number(second)}")
    (display,) = shown.displays
    assert set(display["data"]) == {DIFF, "text/html", "text/plain"}
    diff = display["data"][DIFF]
    assert (diff["version"], diff["cell"], diff["layer"]) == (1, number(second),
                                                             index[number(second)])  # fmt: skip
    assert diff["command"].startswith("rm /srv/d/added; echo changed")
    entries = {e["path"]: e for e in diff["entries"]}
    below = index[number(first)]
    assert entries["/srv/d/added"] | {"size": 0} == {
        "path": "/srv/d/added", "kind": "D", "type": "file", "size": 0, "layer": below,
        "opaque": False, "note": f"whiteout: hides layer {below}'s copy"}  # fmt: skip
    kept = entries["/srv/d/kept"]
    assert (kept["kind"], kept["type"], kept["size"]) == ("C", "file", len("b\nchanged\n"))
    assert (kept["layer"], kept["note"]) == (below, f"copied up from layer {below}")
    assert entries["/srv/o"]["opaque"] is True
    assert entries["/srv/o"]["note"] == "opaque: hides everything below"
    assert entries["/srv/o/old"]["kind"] == "D"
    assert entries["/second-file"] | {"size": 0} == {
        "path": "/second-file", "kind": "A", "type": "file", "size": 0, "layer": None,
        "opaque": False, "note": ""}  # fmt: skip
    kinds = [e["kind"] for e in diff["entries"]]
    assert diff["totals"] == {"added": kinds.count("A"), "changed": kinds.count("C"),
                              "deleted": kinds.count("D"), "bytes": diff["totals"]["bytes"]}
    assert diff["totals"]["bytes"] >= len("b\nchanged\n")
    text = display["data"]["text/plain"]
    assert text.startswith(f"cell {number(second)} changed {len(entries)} path(s)")
    assert f"C /srv/d/kept  10B  (copied up from layer {below})" in text.splitlines()
    html = display["data"]["text/html"]
    # A tree: /srv's directories nest, each name once, under its parent.
    assert html.count(">srv/<") == 1 and ">d/<" in html and ">kept<" in html
    assert html.index(">srv/<") < html.index(">d/<") < html.index(">kept<")
    assert f"whiteout: hides layer {below}" in html and "<script" not in html
    assert only(ok(kernel, "%diff"), DIFF) == diff  # the last cell that changed something
    ok(kernel, "%reset")


def test_autodiff_after_changing_cells_only(kernel: Driver) -> None:
    assert "%autodiff off" in ok(kernel, "%autodiff").stdout
    try:
        assert "%autodiff on" in ok(kernel, "%autodiff on").stdout
        changing = ok(kernel, "echo auto > /autodiff-file")
        diff = only(changing, DIFF)
        assert diff["cell"] == number(changing)
        assert [e["path"] for e in diff["entries"] if e["kind"] == "A"] == ["/autodiff-file"]
        assert changing.stdout == ""
        quiet = ok(kernel, "cat /autodiff-file")
        assert quiet.stdout == "auto\n" and not quiet.displays
    finally:
        ok(kernel, "%autodiff off")
    assert not ok(kernel, "echo again > /autodiff-file").displays
    assert "usage: %autodiff" in kernel.run("%autodiff maybe").reply["evalue"]


# -- the meter ------------------------------------------------------------------------------


def test_stats_cell_shows_a_live_widget_then_its_summary(kernel: Driver) -> None:
    cell = ok(kernel, f"%%stats\n{BUSY_CELL}")
    # A line of text first, above the output; the widget replaces it once the cell
    # has run a moment; the summary replaces the widget.
    (display,) = cell.displays
    assert "measuring" in display["data"]["text/plain"]
    display_id = display["transient"]["display_id"]
    live, final = [u for u in cell.updates if u["transient"]["display_id"] == display_id]
    view = live["data"][WIDGET]
    model_id = view["model_id"]
    opened = [m for m in cell.messages if m["msg_type"] == "comm_open"
              and m["content"]["comm_id"] == model_id]  # fmt: skip
    assert opened and opened[0]["content"]["target_name"] == "jupyter.widget"
    updates = widget_updates(cell, model_id)
    assert len(updates) >= 2, "the meter moved while the cell ran"
    assert all("memory" in m["content"]["data"]["state"]["value"] for m in updates)
    assert len(updates) <= 10 * cell_seconds(cell), "at most 10 updates a second"

    assert set(final["data"]) == {STATS, "text/html", "text/plain"}
    stats = final["data"][STATS]
    assert stats["version"] == 1 and stats["cell"] == number(cell)
    assert stats["container"].startswith("nb") and stats["container"].endswith(f"-{number(cell)}")
    assert 0 < stats["duration"] <= cell_seconds(cell)
    assert 2 <= len(stats["samples"]) <= 300
    assert all(len(s) == 4 for s in stats["samples"])
    assert [s[0] for s in stats["samples"]] == sorted(s[0] for s in stats["samples"])
    assert stats["memory"]["peak"] >= 30 * MiB, stats["memory"]
    assert stats["memory"]["limit"] == 512 * MiB
    assert stats["pids"] == {"peak": stats["pids"]["peak"], "limit": 512}
    assert stats["pids"]["peak"] >= 1
    assert set(stats["cpu"]) == {"percent_peak", "percent_avg", "limit_cpus"}
    assert stats["cpu"]["limit_cpus"] is None and stats["cpu"]["percent_peak"] > 0
    assert stats["oom_killed"] is False and stats["pids_limit_hit"] is False
    assert "memory" in final["data"]["text/plain"] and "<svg" in final["data"]["text/html"]
    closed = [m for m in cell.messages if m["msg_type"] == "comm_close"
              and m["content"]["comm_id"] == model_id]  # fmt: skip
    assert closed, "the widget is closed once its summary replaced it"
    # The summary is the last word on the display: nothing updates the widget after it.
    summary = [m for m in cell.messages if m["msg_type"] == "update_display_data"][-1]
    assert summary["content"] == final
    assert max(date(m) for m in updates) <= date(summary)


def test_stats_summary_says_oom_killed(kernel: Driver) -> None:
    ok(kernel, "%limits memory=32m")
    try:
        cell = kernel.run("%%stats\nhead -c 100m /dev/zero | tail -c 90m > /dev/null")
        assert cell.status == "error" and cell.reply["ename"] == "ExitStatus"
        assert "out of memory" in cell.errors[0]["traceback"][0]
        # The live widget came first if the cell outlived its 0.25 s; the
        # summary is the last update either way.
        final = cell.updates[-1]
        stats = final["data"][STATS]
        assert stats["oom_killed"] is True and stats["pids_limit_hit"] is False
        assert stats["memory"]["limit"] == 32 * MiB
        assert "out of memory" in final["data"]["text/plain"]
        assert "#dc2626" in final["data"]["text/html"]  # red
        # The summary comes before the error, which stays the cell's last word.
        kinds = [m["msg_type"] for m in cell.messages]
        assert kinds.index("update_display_data") < kinds.index("error")
    finally:
        ok(kernel, "%limits memory=default")


def test_stats_on_meters_every_cell_and_off_none(kernel: Driver) -> None:
    assert "%stats off" in ok(kernel, "%stats").stdout
    try:
        assert "%stats on" in ok(kernel, "%stats on").stdout
        for code in ("echo one", "true"):
            cell = ok(kernel, code)
            (display,) = cell.displays
            assert "measuring" in display["data"]["text/plain"]
            (final,) = cell.updates
            assert final["transient"] == display["transient"]
            assert final["data"][STATS]["cell"] == number(cell)
            # Over before the widget was due: the cell costs no widget at all.
            assert not [m for m in cell.messages if m["msg_type"].startswith("comm_")]
        slow = ok(kernel, "sleep 0.5")
        live, final = slow.updates
        assert WIDGET in live["data"] and final["data"][STATS]["cell"] == number(slow)
    finally:
        ok(kernel, "%stats off")
    plain = ok(kernel, "echo plain")
    # Off: no widget, no comm, no summary; the cell is what it was before the meter.
    assert [m["msg_type"] for m in plain.messages] == ["execute_input", "stream"]
    assert "usage: %%stats" in kernel.run("%%stats now\necho x").reply["evalue"]


def test_stats_of_a_container_cell(kernel: Driver) -> None:
    """A %%container cell is metered too: the long-lived container, while the cell runs."""
    name = f"meter-{uuid.uuid4().hex[:8]}"
    ok(kernel, "%stats on")
    try:
        cell = ok(kernel, f"%%container {name}\nsleep 0.6; echo done")
        assert cell.stdout == "done\n"
        live, final = cell.updates
        assert WIDGET in live["data"]
        stats = final["data"][STATS]
        assert (stats["cell"], stats["container"]) == (number(cell), name)
        assert stats["samples"] and stats["pids"]["peak"] >= 2  # sleep in bash, at least
    finally:
        ok(kernel, "%stats off")
        ok(kernel, f"%rm {name}")


# -- the side panel's comm ------------------------------------------------------------------


class PanelComm:
    """A comm to the kernel's panel target, opened as JupyterLab's side panel opens it."""

    def __init__(self, kernel: Driver) -> None:
        self.kernel = kernel
        self.comm_id = uuid.uuid4().hex
        self._send("comm_open", {"comm_id": self.comm_id, "target_name": PANEL, "data": {}})

    def _send(self, msg_type: str, content: dict[str, Any]) -> str:
        kc = self.kernel.kc
        msg = kc.session.msg(msg_type, content)
        kc.shell_channel.send(msg)
        return str(msg["header"]["msg_id"])

    def request(self, data: dict[str, Any], timeout: float = 30) -> list[dict[str, Any]]:
        """Send ``data``; the comm_msg data the kernel sent on the comm until it went idle."""
        msg_id = self._send("comm_msg", {"comm_id": self.comm_id, "data": data})
        got: list[dict[str, Any]] = []
        idle = False  # the answer is sent by a task: it may come before or after the idle
        deadline = time.monotonic() + timeout
        while not (idle and got):
            try:
                msg = self.kernel.kc.get_iopub_msg(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"no answer to the panel's {data}; got {got}") from None
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "comm_msg" and msg["content"]["comm_id"] == self.comm_id:
                got.append(msg["content"]["data"])
            idle = idle or (msg["msg_type"] == "status"
                            and msg["content"]["execution_state"] == "idle")  # fmt: skip
        return got

    def close(self) -> None:
        self._send("comm_close", {"comm_id": self.comm_id, "data": {}})


def panel_pushes(cell: Cell, comm_id: str) -> list[dict[str, Any]]:
    return [m["content"]["data"] for m in cell.messages
            if m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == comm_id]  # fmt: skip


def test_panel_answers_snapshots_and_hears_usage(kernel: Driver) -> None:
    ok(kernel, "%reset")
    writer = ok(kernel, "echo panel > /panel-file")
    layers = only(ok(kernel, "%layers"), LAYERS)
    panel = PanelComm(kernel)
    try:
        (snapshot,) = panel.request({"request": "snapshot"})
        assert snapshot["type"] == "snapshot"
        assert (snapshot["image"], snapshot["image_id"]) == ("base", layers["image_id"])
        assert snapshot["layers"] == layers["layers"]
        assert snapshot["layers"][-1]["cell"] == number(writer)
        assert snapshot["limits"] == {"memory": 512 * MiB, "cpus": None, "pids": 512}
        assert all(set(c) == {"name", "image", "state", "status"} for c in snapshot["containers"])
        base = [i for i in snapshot["images"] if "base:latest" in i["tags"]]
        assert len(base) == 1 and base[0]["size"] > 0 and len(base[0]["id"]) == 12
        (error,) = panel.request({"request": "nonsense"})
        assert error["type"] == "error" and "nonsense" in error["message"]

        cell = ok(kernel, "sleep 1.5")
        pushes = panel_pushes(cell, panel.comm_id)
        assert not cell.displays, "the panel alone shows no meter in the notebook"
        usage = [p for p in pushes if p["type"] == "usage"]
        assert usage and pushes[-1] == {"type": "idle", "cell": number(cell)}
        assert len(usage) <= 4 * cell_seconds(cell), "at most 4 pushes a second"
        for push in usage:
            assert push["cell"] == number(cell)
            assert push["limits"] == snapshot["limits"]
            assert {"t", "memory", "cpu", "pids"} <= set(push)
    finally:
        panel.close()
    after = ok(kernel, "true")  # closed: nothing is pushed any more, no sampler runs
    assert [m["msg_type"] for m in after.messages] == ["execute_input"]
    ok(kernel, "%reset")
