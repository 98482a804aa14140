"""The overlay mount of a cell as a graphviz diagram (inline SVG).

Drawn top down in the order overlayfs looks a path up: the merged mount
point the cell sees, the writable upperdir (with its workdir beside it),
then the read-only lowerdirs, top first. The dot source is built with the
graphviz package and rendered by ``dot -Tsvg`` with a timeout (the
package's own pipe has none). Without ``dot`` (Debian's ``graphviz``
package) the diagram is "" and the renderers show the mount as text.
"""

from __future__ import annotations

import functools
import re
import subprocess

import graphviz

from .models import Layer, LayerStack, Mount

MAX_DRAWN = 12  # lowerdirs drawn one by one; the rest are one "... N more" box
DOT_TIMEOUT = 10.0  # seconds
FONT = "Helvetica,Arial,sans-serif"
COLOURS = {"merged": "#dbeafe", "upper": "#fef3c7", "work": "#f3f4f6", "base": "#e5e7eb",
           "cell": "#dcfce7", "more": "#ffffff"}  # fmt: skip


def _label(layer: Layer) -> str:
    what = f"cell {layer.cell}: {layer.command}" if layer.source == "cell" else layer.created_by
    if len(what) > 48:
        what = what[:47] + "…"
    return f"layer {layer.index}  {layer.name}\n{what}"


def mount_source(stack: LayerStack) -> str:
    """The diagram of ``stack.mount`` in the dot language."""
    mount = stack.mount
    by_name = {layer.name: layer for layer in stack.layers}
    lowers = [by_name[name] for name in mount.lowerdir if name in by_name]
    g = graphviz.Digraph("mount", graph_attr={
        "rankdir": "TB", "nodesep": "0.3", "ranksep": "0.35", "fontname": FONT,
        "fontsize": "11", "bgcolor": "transparent"},
        node_attr={"shape": "box", "style": "rounded,filled", "fontname": FONT,
                   "fontsize": "10", "margin": "0.15,0.06"},
        edge_attr={"fontname": FONT, "fontsize": "9", "color": "#6b7280"})  # fmt: skip
    whose = f"cell {mount.cell}" if mount.cell is not None else "the next cell"
    g.node("merged", f"mount point: {mount.merged}\nthe / that {whose} sees",
           fillcolor=COLOURS["merged"])  # fmt: skip
    with g.subgraph(name="cluster_overlay") as c:
        c.attr(label="overlay mount", style="dashed", color="#9ca3af", fontcolor="#374151")
        with c.subgraph() as top:
            top.attr(rank="same")
            top.node("upper", f"upperdir: {mount.upperdir}\nwritable, fresh for each cell",
                     fillcolor=COLOURS["upper"])  # fmt: skip
            top.node("work", f"workdir: {mount.workdir}\noverlayfs' scratch space",
                     fillcolor=COLOURS["work"], style="rounded,filled,dashed")  # fmt: skip
        with c.subgraph(name="cluster_lower") as low:
            low.attr(label="lowerdir: read-only, top first", style="rounded", color="#9ca3af")
            previous, label = "upper", " reads fall through "
            shown = lowers if len(lowers) <= MAX_DRAWN else lowers[: MAX_DRAWN - 1]
            for layer in shown:
                node = f"l{layer.index}"
                low.node(node, _label(layer), fillcolor=COLOURS[layer.source])
                g.edge(previous, node, label=label, style="dashed", arrowhead="none")
                previous, label = node, ""
            if len(shown) < len(lowers):
                rest = lowers[len(shown) :]
                low.node("more", f"... {len(rest)} more: layers {rest[0].index} to "
                         f"{rest[-1].index}", fillcolor=COLOURS["more"])  # fmt: skip
                g.edge(previous, "more", style="dashed", arrowhead="none")
            if not lowers:
                low.node("none", "(no layers)", fillcolor=COLOURS["more"])
    g.edge("merged", "upper", label=" writes, copy-ups ")
    g.edge("upper", "work", style="dotted", arrowhead="none", constraint="false")
    return g.source


@functools.lru_cache(maxsize=32)
def _render(source: str) -> str:
    done = subprocess.run(["dot", "-Tsvg"], input=source, capture_output=True, text=True,
                          timeout=DOT_TIMEOUT, check=True)  # fmt: skip
    svg = done.stdout
    svg = svg[svg.find("<svg") :]  # no XML prolog or DOCTYPE: it goes inline in HTML
    return re.sub(r"<!--.*?-->\n?", "", svg, flags=re.S)


def mount_svg(stack: LayerStack) -> str:
    """The diagram of ``stack.mount`` as SVG text; "" if graphviz cannot draw it."""
    try:
        return _render(mount_source(stack))
    except (subprocess.SubprocessError, OSError):  # no `dot`, or it failed
        return ""


__all__ = ["Mount", "mount_source", "mount_svg"]
