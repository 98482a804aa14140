"""``ps``, ``inspect``, ``logs``, ``wait``, ``kill``, ``rm``, ``diff``, ``commit``."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from typing import Any

import click
from rich.markup import escape

from sandbox.cli.output import console, table
from sandbox.engine import Engine, views
from sandbox.errors import InvalidArgument, NotFound
from sandbox.store.containers import RUNNING


@click.command("ps")
@click.option("-a", "--all", "show_all", is_flag=True, help="Show stopped containers too.")
@click.option("-q", "--quiet", is_flag=True, help="Only IDs.")
def ps_command(show_all: bool, quiet: bool) -> None:
    """List running containers (all with -a)."""
    records = [r for r in Engine().store.containers.list() if show_all or r.state == RUNNING]
    if quiet:
        for r in records:
            click.echo(r.short_id)
        return
    t = table("CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "NAMES")
    for r in records:
        command = " ".join(r.cmd)
        command = command if len(command) <= 22 else command[:19] + "..."
        t.add_row(r.short_id, r.image, f'"{command}"', f"{views.ago(r.created)} ago",
                  views.status_text(r), r.name)  # fmt: skip
    console.print(t)


@click.command("inspect")
@click.argument("objects", nargs=-1, required=True)
def inspect_command(objects: tuple[str, ...]) -> None:
    """Show containers or images as JSON (containers first, as Docker does)."""
    engine = Engine()
    result: list[dict[str, Any]] = []
    for ref in objects:
        try:
            record = engine.store.containers.find(ref)
            result.append(views.container_inspect(engine.store, record))
        except NotFound:
            try:
                image = engine.image(ref)
            except NotFound:
                raise NotFound(f"No such object: {ref} (not a container or an image)") from None
            result.append(views.image_inspect(engine.store, image))
    click.echo(json.dumps(result, indent=4))


@click.command("logs")
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the container exits.")
@click.option("-t", "--timestamps", is_flag=True, help="Prefix each chunk with its time.")
@click.argument("container")
def logs_command(container: str, follow: bool, timestamps: bool) -> None:
    """Print a container's output: stdout to stdout, stderr to stderr."""
    engine = Engine()
    record = engine.store.containers.find(container)
    path = engine.store.containers.path(record.id) / "log.jsonl"
    position = 0
    while True:
        try:
            with open(path, "rb") as f:
                f.seek(position)
                for line in f:
                    if not line.endswith(b"\n"):
                        break  # half-written: read it next time
                    position += len(line)
                    entry = json.loads(line)
                    target = sys.stderr.buffer if entry["stream"] == "stderr" else sys.stdout.buffer
                    data = entry["log"].encode("utf-8", "surrogateescape")
                    if timestamps:
                        data = entry["time"].encode() + b" " + data
                    target.write(data)
                    target.flush()
        except FileNotFoundError:
            pass
        if not follow:
            return
        try:
            state = engine.store.containers.load(record.id).state
        except NotFound:
            return
        if state != RUNNING:
            follow = False  # one more pass picks up the tail
        time.sleep(0.1)


@click.command("wait")
@click.argument("containers", nargs=-1, required=True)
def wait_command(containers: tuple[str, ...]) -> None:
    """Wait for containers to exit; print each exit status."""
    engine = Engine()
    for ref in containers:
        record = asyncio.run(engine.wait(ref))
        click.echo(record.exit_code)


def _parse_signal(text: str) -> int:
    name = text.upper()
    if name.isdigit():
        return int(name)
    try:
        return int(signal.Signals[name if name.startswith("SIG") else "SIG" + name])
    except KeyError:
        raise InvalidArgument(
            f"invalid signal {text!r}: use a name like TERM or a number"
        ) from None


@click.command("kill")
@click.option("-s", "--signal", "sig", default="KILL", help="Signal to send (default KILL).")
@click.argument("containers", nargs=-1, required=True)
def kill_command(containers: tuple[str, ...], sig: str) -> None:
    """Send a signal to running containers."""
    engine = Engine()
    number = _parse_signal(sig)
    for ref in containers:
        engine.kill(ref, number)
        click.echo(ref)


@click.command("rm")
@click.option("-f", "--force", is_flag=True, help="Kill a running container first.")
@click.argument("containers", nargs=-1, required=True)
def rm_command(containers: tuple[str, ...], force: bool) -> None:
    """Remove containers and their writable layers."""
    engine = Engine()
    for ref in containers:
        engine.remove(ref, force=force)
        click.echo(ref)


@click.command("diff")
@click.argument("container")
def diff_command(container: str) -> None:
    """What the container changed on disk: A added, C changed, D deleted."""
    colours = {"A": "green", "C": "yellow", "D": "red"}
    for change in Engine().diff(container):
        console.print(f"[{colours[change.kind]}]{change.kind}[/] {escape(change.path)}")


@click.command("commit")
@click.option("-m", "--message", default="", help="Commit message.")
@click.option("-a", "--author", default="", help="Author.")
@click.argument("container")
@click.argument("repository", required=False)
def commit_command(container: str, repository: str | None, message: str, author: str) -> None:
    """Save a stopped container's changes as a new image (its upper dir becomes a layer)."""
    image = Engine().commit(container, repository, message=message, author=author,
                            owner=os.getuid())  # fmt: skip
    click.echo(f"sha256:{image.id}")


COMMANDS = [ps_command, inspect_command, logs_command, wait_command, kill_command, rm_command,
            diff_command, commit_command]  # fmt: skip
