"""The kernel's magics: lines beginning with ``%`` are the kernel's, not bash's.

A cell may begin with line magics (``%limits memory=64m``) and go on with
shell code; a cell magic (``%%container NAME``, ``%%stats``) must be its
first line. Every magic has a ``%help`` entry. Most answer with text;
``%layers`` and ``%diff`` with a picture (`visuals.bundles.Display`).
"""

from __future__ import annotations

import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sandbox.errors import InvalidArgument, NotFound, SandboxError
from sandbox.units import human_size, parse_cpus, parse_size

from . import network
from .session import DEFAULT_LIMITS, NO_NETWORK, Session
from .visuals.bundles import Display, cell_diff, diff_bundle, layer_stack, layers_bundle


class MagicError(Exception):
    """A magic used wrongly; the message says how to use it."""


@dataclass
class Magic:
    usage: str
    summary: str
    details: str
    run: Callable[[Session, list[str]], Awaitable[str | Display]] | None = None


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


async def _layers(session: Session, args: list[str]) -> Display:
    if len(args) > 1:
        raise MagicError(f"usage: {MAGICS['layers'].usage}")
    cell = _cell_number("layers", args[0]) if args else None
    stack = await layer_stack(session, cell)
    return Display(layers_bundle(stack), live=cell is None)


def _cell_number(magic: str, text: str) -> int:
    try:
        return int(text.strip("[]"))
    except ValueError:
        raise MagicError(f"%{magic} {text}: give a cell number, as in [3]") from None


async def _diff(session: Session, args: list[str]) -> str | Display:
    if len(args) > 1:
        raise MagicError(f"usage: {MAGICS['diff'].usage}")
    if not args and not session.diffs:
        return "no cell has changed the filesystem yet"
    cell = _cell_number("diff", args[0]) if args else max(session.diffs)
    diff = cell_diff(session, cell)
    if diff is None:
        made = ", ".join(str(c) for c in sorted(session.diffs)) or "none yet"
        return f"cell {cell} changed nothing on disk (cells that did: {made})"
    return Display(diff_bundle(diff))


def _on_off(session: Session, args: list[str], name: str, attr: str, what: str) -> str:
    if len(args) > 1 or (args and args[0] not in ("on", "off")):
        raise MagicError(f"usage: {MAGICS[name].usage}")
    if args:
        setattr(session, attr, args[0] == "on")
    state = "on" if getattr(session, attr) else "off"
    return f"%{name} {state}: {what if state == 'on' else 'not ' + what}"


async def _stats(session: Session, args: list[str]) -> str:
    return _on_off(session, args, "stats", "meter",
                   "every cell shows its live memory, CPU and process meter")  # fmt: skip


async def _autodiff(session: Session, args: list[str]) -> str:
    return _on_off(session, args, "autodiff", "autodiff",
                   "every cell that changes the disk shows its diff")  # fmt: skip


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
    session.cell_layers.clear()
    kept = "" if session.network == NO_NETWORK else \
        f" (still on network {session.network}: %network none leaves it)"  # fmt: skip
    return f"back to {session.base}: no layers from cells, a fresh shell{kept}"


async def _network(session: Session, args: list[str]) -> str:
    if len(args) > 1:
        raise MagicError(f"usage: {MAGICS['network'].usage}")
    if not args:
        return await _network_now(session)
    ref = args[0]
    info: dict[str, Any] | None = None
    if ref != NO_NETWORK:
        try:
            info = await network.find(session.client, ref)
        except NotFound as exc:  # the daemon's words: "No such network: X (see ...)"
            raise MagicError(f"{exc}; the cells stay on {session.network}") from None
        except InvalidArgument as exc:
            raise MagicError(f"%network {exc}") from None
    name = info["Name"] if info is not None else NO_NETWORK
    session.network = name
    if info is None:
        said = ("the next cells have their own loopback (127.0.0.1) only, and reach no "
                "other container; so do the %%container containers made from now on")  # fmt: skip
    else:
        subnet = ((info.get("IPAM") or {}).get("Config") or [{}])[0].get("Subnet", "")
        said = (f"the next cells join network {name}" + (f" ({subnet})" if subnet else "")
                + ", and so do the %%container containers made from now on: they reach "
                f"the containers on {name} by name")  # fmt: skip
    return "\n".join([said, *await _kept_networks(session, name)])


async def _network_now(session: Session) -> str:
    if session.network == NO_NETWORK:
        return network.describe(None)
    try:
        info = await network.find(session.client, session.network)
    except NotFound:
        return session.network_gone()
    return network.describe(info)


async def _kept_networks(session: Session, name: str) -> list[str]:
    """The session's %%container containers on another network: they keep theirs."""
    notes = []
    for container in sorted(session.containers):
        try:
            info = await session.client.inspect_container(container)
        except SandboxError:
            continue
        theirs = (info.get("HostConfig") or {}).get("NetworkMode") or NO_NETWORK
        if theirs != name:
            notes.append(f"%%container {container} stays on {theirs} (it exists already): "
                         f"%rm {container}, then run its cell again to move it")  # fmt: skip
    return notes


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
    "layers": Magic("%layers [CELL]", "the session's layer stack",
                    "The image's read-only layers, bottom first: the base image's, then one per "
                    "cell that changed the filesystem. Each cell runs on top of them with a "
                    "fresh, empty writable (upper) layer; a diagram shows the overlay mount "
                    "(lowerdir, upperdir, workdir, merged). The picture grows as later cells "
                    "add layers. With CELL, the mount that cell ran on (its lowerdirs: the "
                    "layers below the one it made).", _layers),
    "diff": Magic("%diff [CELL]", "what a cell changed on disk",
                  "The paths the cell (default: the last one that changed anything) added (A), "
                  "changed (C) or deleted (D), read from its upper layer, as a tree: a changed "
                  "file was copied up from a lower layer, a deleted one is a whiteout hiding "
                  "the lower copy, an opaque directory hides everything below it. "
                  "%autodiff on shows it after every cell that changes the disk.", _diff),
    "autodiff": Magic("%autodiff [on|off]", "the diff after every cell that changes the disk",
                      "Off at first. Without an argument, says whether it is on.", _autodiff),
    "stats": Magic("%stats [on|off]", "a live usage meter for every cell",
                   "Off at first. On: while a cell runs, a meter shows its memory (now, peak, "
                   "limit), CPU (percent of the limit) and processes (now, limit), updated "
                   "several times a second; when the cell ends it becomes a summary (kept in "
                   "the saved notebook), red if the cell ran out of memory or processes. "
                   "%%stats does it for one cell.", _stats),
    "%%stats": Magic("%%stats", "a live usage meter for this cell",
                    "As %stats on, for one cell: %%stats on the first line, then the shell "
                    "code."),
    "commit": Magic("%commit NAME[:TAG]", "save the session as an image",
                    "Tags the session's current image (base + the cells' layers) so that it "
                    "outlives the notebook: others run it with `sandbox run NAME`, or start a "
                    "notebook from it with %image NAME.", _commit),
    "reset": Magic("%reset", "back to the base image, with a fresh shell",
                   "Forgets the cells' layers and the shell state (variables, functions, "
                   "directory). The limits (%limits) and the network (%network) stay as they "
                   "are.", _reset),
    "network": Magic("%network [none|lab|NAME]", "the network of the next cells",
                     "Without an argument, shows the session's network, its subnet and who is "
                     "on it now (names and addresses). none, the kernel's default: each cell "
                     "has its own loopback (127.0.0.1) only. lab, or a network made with "
                     "`sandbox network create NAME`: the next cells, and the %%container "
                     "containers made from then on, join it and reach each other by container "
                     "name (a cell's `curl http://web:8000/` reaches the server of "
                     "%%container web). A %%container container keeps the network it was made "
                     "on: %rm NAME, then run its cell again to move it. No network leads to "
                     "the host or the internet; to open a server in your browser, publish its "
                     "port (%%container NAME -p 8080:8000). %reset keeps the network; a "
                     "kernel restart goes back to none.", _network),
    "container": Magic("%%container NAME [-p HOSTPORT:PORT]",
                       "run the cell in a long-lived container",
                       "For servers and background jobs: the first %%container NAME cell makes "
                       "the container NAME from the session's image, on the session's network "
                       "(%network); the cell runs in it (with the session's variables and "
                       "directory) and whatever it starts in the background keeps running after "
                       "the cell, until %rm NAME. Background output after the cell ends is not "
                       "shown: send it to a file (server > /tmp/log 2>&1 &). -p 8080:8000 "
                       "publishes the container's port 8000 on this machine's 127.0.0.1:8080 "
                       "(also written -p 127.0.0.1:8080:8000; -p 8000 alone: on a free port), "
                       "and the cell shows the link; -p may be given more than once, and counts "
                       "only when the container is made."),
    "rm": Magic("%rm NAME...", "remove a %%container container",
                "Stops and removes it, with everything running in it.", _rm),
}


async def run_line_magic(session: Session, name: str, args: list[str]) -> str | Display:
    """Run one line magic; its text output, or its picture (%layers, %diff).

    Raises:
        MagicError: an unknown magic or bad arguments.
    """
    if name == "help":
        return help_text(args[0] if args else None)
    if name.startswith("%"):  # %%NAME on a later line
        raise MagicError(f"%%{name.lstrip('%')} is a cell magic: put it on the cell's first line")
    magic = MAGICS.get(name)
    if magic is None or magic.run is None:
        hint = " (a cell magic: put it on the cell's first line, as %%" + name + ")" \
            if magic is not None else ""  # fmt: skip
        raise MagicError(f"unknown magic %{name}{hint}: %help lists them")
    return await magic.run(session, args)


def help_text(name: str | None = None) -> str:
    """``%help``: the list of magics; ``%help NAME`` (or ``%NAME``, ``%%NAME``): one of them."""
    if name:
        key = name.lstrip("%")
        if name.startswith("%%") and f"%%{key}" in MAGICS:
            key = f"%%{key}"  # %%stats, not %stats
        magic = MAGICS.get(key)
        if magic is None:
            raise MagicError(f"no magic %{key}: %help lists them")
        return f"{magic.usage}\n    {magic.summary}\n\n{magic.details}"
    width = max(len(m.usage) for m in MAGICS.values())
    lines = ["Every cell runs in a fresh container; these magics talk to the kernel instead:", ""]
    lines += [f"  {m.usage:<{width}}  {m.summary}" for m in MAGICS.values()]
    lines += ["", "In the container: display FILE shows a PNG, SVG, HTML or text file here."]
    return "\n".join(lines)
