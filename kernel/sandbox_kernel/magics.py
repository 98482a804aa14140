"""The kernel's magics: lines beginning with ``%`` are the kernel's, not bash's.

A cell may begin with line magics (``%limits memory=64m``) and go on with
shell code; ``%%container NAME`` must be its first line and takes the whole
cell. Every magic has a ``%help`` entry.
"""

from __future__ import annotations

import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sandbox.errors import InvalidArgument, SandboxError
from sandbox.units import human_size, parse_cpus, parse_size

from .session import DEFAULT_LIMITS, Session


class MagicError(Exception):
    """A magic used wrongly; the message says how to use it."""


@dataclass
class Magic:
    usage: str
    summary: str
    details: str
    run: Callable[[Session, list[str]], Awaitable[str]] | None = None


def split_cell(code: str) -> tuple[list[tuple[str, list[str]]], str, tuple[str, list[str]] | None]:
    """``(line magics, shell code, cell magic)`` of a cell.

    Line magics are the leading lines that begin with ``%`` (blank lines and
    comments between them are fine); a ``%%`` first line is a cell magic.
    """
    lines = code.splitlines()
    start = 0
    while start < len(lines) and not lines[start].strip():
        start += 1
    if start < len(lines) and lines[start].lstrip().startswith("%%"):
        name, args = _parse(lines[start].strip()[2:])
        return [], "\n".join(lines[start + 1 :]), (name, args)
    magics: list[tuple[str, list[str]]] = []
    i = start
    while i < len(lines):
        text = lines[i].strip()
        if text.startswith("%"):
            magics.append(_parse(text[1:]))
        elif text and not text.startswith("#"):
            break
        i += 1
    if not magics:
        return [], code, None
    return magics, "\n".join(lines[i:]), None


def _parse(text: str) -> tuple[str, list[str]]:
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise MagicError(f"%{text}: {exc}") from None
    if not words:
        raise MagicError("a lone % is not a magic: %help lists them")
    return words[0], words[1:]


# -- the magics -------------------------------------------------------------------------


async def _image(session: Session, args: list[str]) -> str:
    if not args:
        image = await session.current_image()
        return (f"base image: {session.base}; the session's image now: {image[:12]} "
                f"({len(session.layers)} layer(s) from cells)")  # fmt: skip
    if len(args) != 1:
        raise MagicError(f"usage: {MAGICS['image'].usage}")
    try:
        await session.use_image(args[0])
    except SandboxError as exc:
        raise MagicError(f"%image {args[0]}: {exc}") from None
    return f"the next cells run in {args[0]} (the shell state carries on; %reset starts afresh)"


_LIMIT_KEYS = {"memory": "Memory", "cpus": "NanoCpus", "pids": "PidsLimit"}


def describe_limits(limits: dict[str, Any]) -> str:
    mem = limits.get("Memory")
    cpus = limits.get("NanoCpus")
    pids = limits.get("PidsLimit")
    return "  ".join([
        f"memory={human_size(mem, base=1024) if mem else 'unlimited'}",
        f"cpus={cpus / 1e9:g}" if cpus else "cpus=unlimited",
        f"pids={pids}" if pids else "pids=unlimited",
    ])  # fmt: skip


async def _limits(session: Session, args: list[str]) -> str:
    if not args:
        return describe_limits(session.limits)
    new = dict(session.limits)
    for arg in args:
        key, eq, value = arg.partition("=")
        key = key.strip().lower()
        if not eq or key not in _LIMIT_KEYS:
            raise MagicError(
                f"%limits: {arg!r} is not KEY=VALUE with KEY one of memory, cpus, pids "
                "(e.g. %limits memory=64m cpus=0.5 pids=64; VALUE 'none' removes a limit, "
                "'default' restores the kernel's)"
            )
        field = _LIMIT_KEYS[key]
        if value in ("none", "unlimited", "0"):
            new.pop(field, None)
            if field == "Memory":
                new.pop("MemorySwap", None)
            continue
        if value == "default":
            if field in DEFAULT_LIMITS:
                new[field] = DEFAULT_LIMITS[field]
                if field == "Memory":
                    new["MemorySwap"] = DEFAULT_LIMITS["MemorySwap"]
            else:
                new.pop(field, None)
            continue
        try:
            if field == "Memory":
                new["Memory"] = new["MemorySwap"] = parse_size(value, what="memory limit")
                if new["Memory"] < 6 << 20:
                    raise InvalidArgument(f"memory={value} is too small: use at least 6m")
            elif field == "NanoCpus":
                new["NanoCpus"] = parse_cpus(value)
            else:
                pids = int(value)
                if pids < 8:
                    raise InvalidArgument(
                        f"pids={value} is too small: bash needs a few; use 8 or more"
                    )
                new["PidsLimit"] = pids
        except (InvalidArgument, ValueError) as exc:
            raise MagicError(f"%limits {arg}: {exc}") from None
    session.limits = new
    session.limits_set = True
    return "the next cells run with " + describe_limits(new)


async def _layers(session: Session, args: list[str]) -> str:
    image = await session.current_image()
    history = list(reversed(await session.client.history(image)))  # the API: newest first
    # A layer of 0 bytes (a cell that only made directories or empty files, or
    # only deleted) has the Size of an `empty_layer` entry; the image's own
    # history (oldest first, in its inspect data) says which entries are layers.
    raw = (await session.client.inspect_image(image)).get("History") or []
    is_layer = [not item.get("empty_layer") for item in raw] if len(raw) == len(history) else None
    rows = []
    for i, entry in enumerate(history):
        size = int(entry.get("Size") or 0)
        created_by = str(entry.get("CreatedBy") or "")
        if is_layer is not None and not is_layer[i]:
            continue
        if is_layer is None and size == 0 and entry.get("Id") in ("", "<missing>") and rows:
            continue  # no raw history: guess that an entry of 0 bytes is no layer
        rows.append((len(rows), human_size(size), created_by[:70]))
    cells = {layer.cell: layer for layer in session.layers}
    lines = [f"{session.base}: {len(rows)} read-only layer(s), bottom first "
             f"({len(cells)} from this notebook's cells)", ""]  # fmt: skip
    lines.append(f"{'layer':>5}  {'size':>9}  made by")
    for number, size, created_by in rows:
        lines.append(f"{number:>5}  {size:>9}  {created_by}")
    lines.append(f"{'upper':>5}  {'':>9}  (writable: a fresh one for each cell, empty at first)")
    return "\n".join(lines)


_KINDS = {0: "C", 1: "A", 2: "D"}


async def _diff(session: Session, args: list[str]) -> str:
    if len(args) > 1:
        raise MagicError(f"usage: {MAGICS['diff'].usage}")
    if not args and not session.diffs:
        return "no cell has changed the filesystem yet"
    if args:
        try:
            cell = int(args[0].strip("[]"))
        except ValueError:
            raise MagicError(f"%diff {args[0]}: give a cell number, as in [3]") from None
    else:
        cell = max(session.diffs)
    changes = session.diffs.get(cell)
    if changes is None:
        made = ", ".join(str(c) for c in sorted(session.diffs)) or "none yet"
        return f"cell {cell} changed nothing on disk (cells that did: {made})"
    lines = [f"cell {cell} changed {len(changes)} path(s)  (A added, C changed, D deleted)"]
    for change in changes:
        kind = _KINDS.get(int(change.get("Kind", 0)), "?")
        extra = ""
        if change.get("Type") == "file" and kind != "D":
            extra = f"  {human_size(int(change.get('Size') or 0))}"
        layer = change.get("Layer")
        if kind == "C" and layer is not None and change.get("Type") == "file":
            extra += f"  (copied up from layer {layer})"
        elif kind == "D" and layer is not None:
            extra += f"  (a whiteout hides layer {layer}'s copy)"
        if change.get("Opaque"):
            extra += "  (opaque: hides everything below)"
        lines.append(f"{kind} {change.get('Path')}{extra}")
    return "\n".join(lines)


async def _commit(session: Session, args: list[str]) -> str:
    if len(args) != 1:
        raise MagicError(f"usage: {MAGICS['commit'].usage}")
    image = await session.current_image()
    try:
        await session.client.tag(image, args[0])
    except SandboxError as exc:
        raise MagicError(f"%commit {args[0]}: {exc}") from None
    name = args[0] if ":" in args[0].rsplit("/", 1)[-1] else f"{args[0]}:latest"
    return (f"saved the session's image as {name} ({image[:12]}): run it with "
            f"`sandbox run -it {name} bash`, or `%image {name}` in another notebook")  # fmt: skip


async def _reset(session: Session, args: list[str]) -> str:
    if args:
        raise MagicError(f"usage: {MAGICS['reset'].usage}")
    await session.use_image(session.base)
    session.reset_state()
    session.diffs.clear()
    return f"back to {session.base}: no layers from cells, a fresh shell"


async def _rm(session: Session, args: list[str]) -> str:
    if not args:
        raise MagicError(f"usage: {MAGICS['rm'].usage}")
    for name in args:
        try:
            await session.remove_container(name)
        except SandboxError as exc:
            raise MagicError(f"%rm {name}: {exc}") from None
    return "removed " + ", ".join(args)


MAGICS: dict[str, Magic] = {
    "help": Magic("%help [MAGIC]", "what the magics do",
                  "With no argument, lists the magics; %help NAME tells more about one."),
    "image": Magic("%image [NAME]", "the image the next cells start from",
                   "Without NAME, shows it. With NAME (e.g. %image base, or one saved with "
                   "%commit), the next cells run in that image; the layers of earlier cells are "
                   "left behind, the shell state (variables, directory) carries on.", _image),
    "limits": Magic("%limits [memory=SIZE] [cpus=N] [pids=N]", "show or set the cell limits",
                    "Each cell runs in its own cgroup with these limits. memory=64m (k, m, g), "
                    "cpus=0.5 (a share of one CPU), pids=64 (processes and threads at once). "
                    "VALUE none removes a limit, default restores the kernel's "
                    f"({describe_limits(DEFAULT_LIMITS)}).", _limits),
    "layers": Magic("%layers", "the session's layer stack",
                    "The image's read-only layers, bottom first: the base image's, then one per "
                    "cell that changed the filesystem. Each cell runs on top of them with a "
                    "fresh, empty writable (upper) layer.", _layers),
    "diff": Magic("%diff [CELL]", "what a cell changed on disk",
                  "The paths the cell (default: the last one that changed anything) added (A), "
                  "changed (C) or deleted (D), read from its upper layer: a changed file was "
                  "copied up from a lower layer, a deleted one is a whiteout.", _diff),
    "commit": Magic("%commit NAME[:TAG]", "save the session as an image",
                    "Tags the session's current image (base + the cells' layers) so that it "
                    "outlives the notebook: others run it with `sandbox run NAME`, or start a "
                    "notebook from it with %image NAME.", _commit),
    "reset": Magic("%reset", "back to the base image, with a fresh shell",
                   "Forgets the cells' layers and the shell state (variables, functions, "
                   "directory).", _reset),
    "container": Magic("%%container NAME", "run the cell in a long-lived container",
                       "For servers and background jobs: the first %%container NAME cell makes "
                       "the container NAME from the session's image; the cell runs in it (with "
                       "the session's variables and directory) and whatever it starts in the "
                       "background keeps running after the cell, until %rm NAME. Background "
                       "output after the cell ends is not shown: send it to a file "
                       "(server > /tmp/log 2>&1 &)."),
    "rm": Magic("%rm NAME...", "remove a %%container container",
                "Stops and removes it, with everything running in it.", _rm),
}


async def run_line_magic(session: Session, name: str, args: list[str]) -> str:
    """Run one line magic; its text output.

    Raises:
        MagicError: an unknown magic or bad arguments.
    """
    if name == "help":
        return help_text(args[0].lstrip("%") if args else None)
    magic = MAGICS.get(name)
    if magic is None or magic.run is None:
        hint = " (a cell magic: put it on the cell's first line, as %%" + name + ")" \
            if magic is not None else ""  # fmt: skip
        raise MagicError(f"unknown magic %{name}{hint}: %help lists them")
    return await magic.run(session, args)


def help_text(name: str | None = None) -> str:
    if name:
        magic = MAGICS.get(name)
        if magic is None:
            raise MagicError(f"no magic %{name}: %help lists them")
        return f"{magic.usage}\n    {magic.summary}\n\n{magic.details}"
    width = max(len(m.usage) for m in MAGICS.values())
    lines = ["Every cell runs in a fresh container; these magics talk to the kernel instead:", ""]
    lines += [f"  {m.usage:<{width}}  {m.summary}" for m in MAGICS.values()]
    lines += ["", "In the container: display FILE shows a PNG, SVG, HTML or text file here."]
    return "\n".join(lines)
