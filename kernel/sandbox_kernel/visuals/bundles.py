"""MIME bundles of the models, and the daemon queries that the layer stack needs.

Every picture goes out as one display_data bundle: our vendor type (JSON,
for the JupyterLab extension's renderers), ``text/html`` (static, for
everywhere else) and ``text/plain``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import diagram, html
from .models import (
    MIME_DIFF,
    MIME_LAYERS,
    MIME_STATS,
    CellMade,
    Diff,
    LayerStack,
    Stats,
    build_diff,
    build_layers,
)

if TYPE_CHECKING:
    from ..session import Session


@dataclass
class Display:
    """A magic's picture: the bundle, and whether the kernel keeps it up to date."""

    data: dict[str, Any]
    live: bool = False  # a %layers display: updated after every cell that changes the stack


def layers_bundle(stack: LayerStack) -> dict[str, Any]:
    return {MIME_LAYERS: stack.to_json(), "text/html": html.render_layers(stack),
            "text/plain": html.layers_text(stack)}  # fmt: skip


def diff_bundle(diff: Diff) -> dict[str, Any]:
    return {MIME_DIFF: diff.to_json(), "text/html": html.render_diff(diff),
            "text/plain": html.diff_text(diff)}  # fmt: skip


def stats_bundle(stats: Stats) -> dict[str, Any]:
    return {MIME_STATS: stats.to_json(), "text/html": html.render_stats(stats),
            "text/plain": html.stats_text(stats)}  # fmt: skip


async def layer_stack(session: Session, cell: int | None = None, *,
                      svg: bool = True) -> LayerStack:  # fmt: skip
    """The session's image as a stack (two daemon requests; ``dot`` in a thread for ``svg``).

    Args:
        session: whose image.
        cell: draw the mount of this cell; None: the next cell's.
        svg: draw the diagram (the panel's snapshot does without).
    """
    image = await session.current_image()
    history = await session.client.history(image)
    inspect = await session.client.inspect_image(image)
    made = {layer.cell: CellMade(layer.cell, layer.command, layer.changes)
            for layer in session.layers}  # fmt: skip
    stack = build_layers(session.base, inspect, history, made, session.sid, cell=cell)
    if svg:
        stack.svg = await asyncio.to_thread(diagram.mount_svg, stack)
    return stack


def cell_diff(session: Session, cell: int) -> Diff | None:
    """What ``cell`` changed on disk (None if it changed nothing, or is not known)."""
    changes = session.diffs.get(cell)
    if changes is None:
        return None
    layer = session.cell_layers.get(cell)
    if layer is None:
        return build_diff(cell, "", None, changes)
    return build_diff(cell, layer.command, layer.index, changes)
