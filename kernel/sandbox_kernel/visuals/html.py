"""Static renderers: each model as HTML that needs no JavaScript, and as plain text.

The HTML is what a saved notebook shows where our JupyterLab extension is
not installed (GitHub, nbviewer, VS Code, a JupyterLab without it): tables,
``<details>``/``<summary>`` to expand a layer or a directory, inline SVG, and
inline styles only (no ``<style>`` element, no script). The text is the
``text/plain`` of the same bundles, for terminals and tests; its layout is
the one the magics printed before they had pictures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape

from sandbox.units import human_size

from .models import Diff, DiffEntry, Layer, LayerStack, Stats

FONT = "font-family:var(--jp-ui-font-family,Helvetica,Arial,sans-serif);font-size:13px"
MONO = "font-family:var(--jp-code-font-family,monospace)"
KIND_COLOURS = {"A": "#15803d", "C": "#b45309", "D": "#b91c1c"}
KIND_WORDS = {"A": "added", "C": "changed", "D": "deleted"}
RED = "#dc2626"
TREE_OPEN_DEPTH = 3  # directories of a diff tree shown open down to this depth


def _mib(n: int | None) -> str:
    return human_size(n, base=1024) if n is not None else "none"


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _code(text: str) -> str:
    return f'<code style="{MONO}">{escape(text)}</code>'


# -- diffs --------------------------------------------------------------------------------


@dataclass
class _Node:
    """A directory of a diff tree (``entry``: its own change, if it has one)."""

    name: str
    entry: DiffEntry | None = None
    children: dict[str, _Node] = field(default_factory=dict)


def diff_tree(entries: list[DiffEntry]) -> _Node:
    """The entries as nested directories (a path's parents exist even if unchanged)."""
    root = _Node("/")
    for entry in entries:
        node = root
        for part in [p for p in entry.path.split("/") if p]:
            node = node.children.setdefault(part, _Node(part))
        node.entry = entry
    return root


def _badge(kind: str) -> str:
    return (f'<span title="{KIND_WORDS[kind]}" style="{MONO};font-weight:bold;'
            f'color:{KIND_COLOURS[kind]}">{kind}</span>')  # fmt: skip


def _entry_html(name: str, entry: DiffEntry | None) -> str:
    if entry is None:
        return f'<span style="color:#6b7280">&nbsp;</span> {_code(name)}'
    parts = [_badge(entry.kind), _code(name)]
    if entry.type == "file" and entry.kind != "D":
        parts.append(f'<span style="color:#6b7280">{human_size(entry.size)}</span>')
    elif entry.type not in ("file", "dir"):
        parts.append(f'<span style="color:#6b7280">{escape(entry.type)}</span>')
    if entry.note:
        parts.append(f"<em>{escape(entry.note)}</em>")
    return " ".join(parts)


def _tree_html(node: _Node, depth: int = 0) -> str:
    items = []
    for child in sorted(node.children.values(), key=lambda n: (not n.children, n.name)):
        name = child.name
        while len(child.children) == 1 and child.entry is None:  # a/b/c as one line
            (only,) = child.children.values()
            if not only.children:
                break
            name, child = f"{name}/{only.name}", only
        if child.children:
            opened = " open" if depth < TREE_OPEN_DEPTH else ""
            items.append(f"<li><details{opened}><summary>{_entry_html(name + '/', child.entry)}"
                         f"</summary>{_tree_html(child, depth + 1)}</details></li>")  # fmt: skip
        else:
            shown = name + "/" if child.entry is not None and child.entry.type == "dir" else name
            items.append(f"<li>{_entry_html(shown, child.entry)}</li>")
    return ('<ul style="list-style:none;margin:0;padding-left:1.2em">'
            + "".join(items) + "</ul>")  # fmt: skip


def _totals_html(diff: Diff) -> str:
    t = diff.totals
    return (f'{_badge("A")} {t.added} added, {_badge("C")} {t.changed} changed, '
            f'{_badge("D")} {t.deleted} deleted; {human_size(t.bytes)} of files')  # fmt: skip


def render_diff(diff: Diff) -> str:
    """A cell's diff as an expandable tree."""
    layer = f" (layer {diff.layer})" if diff.layer is not None else ""
    head = (f"<b>cell {diff.cell}</b>{layer}: {_code(diff.command)}<br>{_totals_html(diff)}")
    more = (f'<div style="color:#6b7280">... and {diff.omitted} more paths, not shown</div>'
            if diff.omitted else "")  # fmt: skip
    return (f'<div class="jupyter-sandbox-diff" style="{FONT}">{head}'
            f"{_tree_html(diff_tree(diff.entries))}{more}</div>")  # fmt: skip


def entry_text(entry: DiffEntry) -> str:
    extra = f"  {human_size(entry.size)}" if entry.type == "file" and entry.kind != "D" else ""
    if entry.note:
        extra += f"  ({entry.note})"
    return f"{entry.kind} {entry.path}{extra}"


def diff_text(diff: Diff) -> str:
    t = diff.totals
    count = t.added + t.changed + t.deleted
    lines = [f"cell {diff.cell} changed {count} path(s)  (A added, C changed, D deleted)"]
    lines += [entry_text(entry) for entry in diff.entries]
    if diff.omitted:
        lines.append(f"... and {diff.omitted} more")
    return "\n".join(lines)


# -- layer stacks -------------------------------------------------------------------------


def _made_by(layer: Layer) -> str:
    if layer.source != "cell":
        return _code(layer.created_by)
    summary = f"cell {layer.cell}: {_code(layer.command)}"
    if not layer.changes:
        return summary
    more = (f'<div style="color:#6b7280">... and {layer.changes_omitted} more: '
            f"%diff {layer.cell}</div>" if layer.changes_omitted else "")  # fmt: skip
    return (f"<details><summary>{summary}</summary>{_tree_html(diff_tree(layer.changes))}"
            f"{more}</details>")  # fmt: skip


def _row(cells: list[str], style: str = "") -> str:
    tds = "".join(f'<td style="padding:2px 8px;vertical-align:top">{c}</td>' for c in cells)
    return f'<tr style="{style}">{tds}</tr>'


def mount_text(stack: LayerStack) -> str:
    m = stack.mount
    lower = ":".join(m.lowerdir) or "(none)"
    return (f"mount: lowerdir={lower} (read-only, top first), upperdir={m.upperdir}, "
            f"workdir={m.workdir} -> {m.merged}")  # fmt: skip


def render_layers(stack: LayerStack) -> str:
    """The stack top first (as overlayfs looks a path up), then the mount diagram."""
    cells = len(stack.from_cells)
    whose = f"cell {stack.mount.cell}" if stack.mount.cell is not None else "the next cell"
    head = (f"<b>{escape(stack.image)}</b> (image {_code(stack.image_id)}, session "
            f"{_code(stack.session)}): {len(stack.layers)} read-only layer(s), {cells} from "
            "this notebook's cells")  # fmt: skip
    merged = f"the / that {whose} sees: the union of the layers below, upper first"
    upper = ("writable: one fresh per cell, empty at first; what the cell changes is "
             "committed as a new layer")  # fmt: skip
    rows = [_row(["<b>merged</b>", "", "", merged], "background:#dbeafe"),
            _row(["<b>upper</b>", "", "", upper], "background:#fef3c7")]  # fmt: skip
    below = set(stack.mount.lowerdir)
    for layer in reversed(stack.layers):
        colour = "#dcfce7" if layer.source == "cell" else "#f3f4f6"
        faded = "" if layer.name in below else ";opacity:0.5"
        files = "" if layer.files is None else _count(layer.files, "file")
        rows.append(_row([f"<b>{layer.index}</b> {_code(layer.id)}", human_size(layer.size),
                          files, _made_by(layer)], f"background:{colour}{faded}"))  # fmt: skip
    table = ('<table style="border-collapse:separate;border-spacing:0 2px;margin:4px 0">'
             '<thead><tr style="text-align:left"><th>layer</th><th>size</th><th>files</th>'
             f"<th>made by</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")  # fmt: skip
    picture = stack.svg or f"<pre>{escape(mount_text(stack))}</pre>"
    diagram = (f"<details open><summary>the overlay mount of {whose}</summary>"
               f"<div>{picture}</div></details>")  # fmt: skip
    return f'<div class="jupyter-sandbox-layers" style="{FONT}">{head}{table}{diagram}</div>'


def layers_text(stack: LayerStack) -> str:
    lines = [f"{stack.image}: {len(stack.layers)} read-only layer(s), bottom first "
             f"({len(stack.from_cells)} from this notebook's cells)", ""]  # fmt: skip
    lines.append(f"{'layer':>5}  {'size':>9}  made by")
    for layer in stack.layers:
        lines.append(f"{layer.index:>5}  {human_size(layer.size):>9}  {layer.created_by[:70]}")
    lines.append(f"{'upper':>5}  {'':>9}  (writable: a fresh one for each cell, empty at first)")
    if stack.mount.cell is not None:
        lines.append(f"\nthe mount of cell {stack.mount.cell}:")
    lines.append(mount_text(stack))
    return "\n".join(lines)


# -- cgroup usage -------------------------------------------------------------------------


def _bar(fraction: float, colour: str, peak: float | None = None) -> str:
    """A bar of ``fraction`` (0-1) with a tick at ``peak``."""
    width = f"{max(0.0, min(fraction, 1.0)) * 100:.1f}%"
    tick = ""
    if peak is not None and peak > 0:
        left = f"{max(0.0, min(peak, 1.0)) * 100:.1f}%"
        tick = (f'<div title="peak" style="position:absolute;top:-2px;bottom:-2px;left:{left};'
                'width:2px;background:#111827"></div>')  # fmt: skip
    return ('<div style="position:relative;display:inline-block;vertical-align:middle;'
            'width:220px;height:12px;background:#e5e7eb;border-radius:3px">'
            f'<div style="width:{width};height:100%;background:{colour};border-radius:3px">'
            f"</div>{tick}</div>")  # fmt: skip


def _scale(value: float, limit: float | None, peak: float) -> float:
    top = limit or max(peak, value, 1)
    return value / top if top else 0.0


def _sparkline(stats: Stats) -> str:
    """Memory (and CPU, dashed) over the cell, as a small inline SVG."""
    if len(stats.samples) < 2:
        return ""
    width, height = 220, 36
    end = max(stats.samples[-1].t, 1e-6)
    top_mem = stats.limits.memory or max(stats.memory_peak, 1)
    top_cpu = max((stats.limits.cpus or 0) * 100, stats.cpu_peak, 1)

    def points(values: list[float], top: float) -> str:
        return " ".join(f"{s.t / end * width:.1f},{height - min(v / top, 1) * height:.1f}"
                        for s, v in zip(stats.samples, values, strict=True))  # fmt: skip

    mem = points([s.memory for s in stats.samples], top_mem)
    cpu = points([s.cpu for s in stats.samples], top_cpu)
    return (f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            'style="vertical-align:middle;background:#f9fafb">'
            f'<polyline points="{cpu}" fill="none" stroke="#7c3aed" stroke-dasharray="3,2"/>'
            f'<polyline points="{mem}" fill="none" stroke="#2563eb" stroke-width="1.5"/>'
            "</svg>")  # fmt: skip


def _cpus(n: float | None) -> str:
    return f"{n:g} CPU" if n else "none"


def stats_rows(stats: Stats) -> list[tuple[str, float, float | None, str, bool]]:
    """(name, bar fraction, peak fraction, words, red) of memory, CPU and pids."""
    lim = stats.limits
    now_mem = stats.memory_current if stats.running else stats.memory_peak
    now = "now" if stats.running else "at the end"
    mem_words = (f"{now} {_mib(stats.memory_current)}, peak {_mib(stats.memory_peak)}, "
                 f"limit {_mib(lim.memory)}")  # fmt: skip
    cpu_top = lim.cpus * 100 if lim.cpus else None
    cpu_now = stats.samples[-1].cpu if stats.running and stats.samples else stats.cpu_average
    cpu_words = (f"{'now' if stats.running else 'average'} {cpu_now:.0f}%, peak "
                 f"{stats.cpu_peak:.0f}% of one CPU, limit {_cpus(lim.cpus)}")  # fmt: skip
    pids_now = stats.pids_current if stats.running else stats.pids_peak
    pids_words = (f"{now} {stats.pids_current}, peak {stats.pids_peak}, limit "
                  f"{lim.pids if lim.pids else 'none'}")  # fmt: skip
    return [
        ("memory", _scale(now_mem, lim.memory, stats.memory_peak),
         _scale(stats.memory_peak, lim.memory, stats.memory_peak), mem_words, stats.oom_killed),
        ("CPU", _scale(cpu_now, cpu_top, stats.cpu_peak),
         _scale(stats.cpu_peak, cpu_top, stats.cpu_peak), cpu_words, False),
        ("pids", _scale(pids_now, lim.pids, stats.pids_peak),
         _scale(stats.pids_peak, lim.pids, stats.pids_peak), pids_words, stats.pids_limit_hit),
    ]  # fmt: skip


def alarms(stats: Stats) -> list[str]:
    found = []
    if stats.oom_killed:
        found.append(f"out of memory: the cell reached its memory limit "
                     f"({_mib(stats.limits.memory)}) and was killed")  # fmt: skip
    if stats.pids_limit_hit:
        found.append(f"process limit: the cell tried to run more than {stats.limits.pids} "
                     "processes at once")  # fmt: skip
    return found


def render_stats(stats: Stats) -> str:
    """The meter: three bars (memory, CPU, pids); live while ``stats.running``."""
    state = f"running... {stats.duration:.1f} s" if stats.running else f"{stats.duration:.2f} s"
    head = f"<b>cell {stats.cell}</b> {_code(stats.container)}: {state}"
    rows = []
    for name, fraction, peak, words, red in stats_rows(stats):
        colour = RED if red else "#2563eb"
        rows.append(_row([f"<b>{name}</b>", _bar(fraction, colour, peak), escape(words)]))
    if not stats.running and (line := _sparkline(stats)):
        rows.append(_row(["over time", line, '<span style="color:#2563eb">memory</span>, '
                          '<span style="color:#7c3aed">CPU</span> (dashed)']))  # fmt: skip
    warn = "".join(f'<div style="color:{RED};font-weight:bold">{escape(a)}</div>'
                   for a in alarms(stats))  # fmt: skip
    return (f'<div class="jupyter-sandbox-stats" style="{FONT}">{head}{warn}'
            f'<table style="border-collapse:collapse">{"".join(rows)}</table></div>')  # fmt: skip


def stats_text(stats: Stats) -> str:
    lim = stats.limits
    state = "running" if stats.running else f"{stats.duration:.2f} s"
    lines = [f"cell {stats.cell} ({stats.container}): {state}",
             f"memory  {'now' if stats.running else 'end'} {_mib(stats.memory_current)}  "
             f"peak {_mib(stats.memory_peak)}  "
             f"limit {_mib(lim.memory)}",
             f"cpu     peak {stats.cpu_peak:.1f}%  average {stats.cpu_average:.1f}%  "
             f"limit {_cpus(lim.cpus)}",
             f"pids    peak {stats.pids_peak}  limit {lim.pids or 'none'}"]  # fmt: skip
    lines += [f"!! {alarm}" for alarm in alarms(stats)]
    return "\n".join(lines)
