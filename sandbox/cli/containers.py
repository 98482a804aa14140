"""``ps``, ``inspect``, ``logs``, ``wait``, ``kill``, ``stop``, ``restart``, ``rm``,
``diff``, ``commit`` and ``attach``: each one request (or stream) to the daemon.

EXAMPLE:
    sandbox run -d --name web base bash -c 'while :; do date; sleep 1; done'
    sandbox logs -f web
    sandbox attach web        # ^C is forwarded: it stops the loop
    sandbox restart web && sandbox stop -t 2 web && sandbox rm web
"""

from __future__ import annotations

import json
import signal
from typing import Any

import click
from rich.markup import escape

from sandbox.cli import terminal
from sandbox.cli.connect import connect
from sandbox.cli.output import console, table
from sandbox.client import AsyncClient
from sandbox.errors import Conflict, InvalidArgument, NotFound
from sandbox.units import ago

DIFF_KINDS = {0: "C", 1: "A", 2: "D"}


@click.command("ps")
@click.option("-a", "--all", "show_all", is_flag=True, help="Show stopped containers too.")
@click.option("-q", "--quiet", is_flag=True, help="Only IDs.")
def ps_command(show_all: bool, quiet: bool) -> None:
    """List running containers (all with -a)."""
    with connect() as client:
        found = client.containers(show_all)
    if quiet:
        for c in found:
            click.echo(c["Id"][:12])
        return
    t = table("CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES")
    for c in found:
        command = c["Command"] if len(c["Command"]) <= 22 else c["Command"][:19] + "..."
        t.add_row(c["Id"][:12], c["Image"], f'"{command}"', f"{ago(c['Created'])} ago",
                  c["Status"], ports_text(c.get("Ports") or []),
                  c["Names"][0].lstrip("/"))  # fmt: skip
    console.print(t)


def ports_text(ports: list[dict[str, Any]]) -> str:
    """Published ports as docker ps shows them: ``127.0.0.1:8080->80/tcp, ...``."""
    ordered = sorted(ports, key=lambda p: (p.get("PrivatePort", 0), p.get("PublicPort", 0)))
    return ", ".join(
        f"{p['IP']}:{p['PublicPort']}->{p['PrivatePort']}/{p['Type']}"
        if p.get("PublicPort") else f"{p['PrivatePort']}/{p['Type']}"
        for p in ordered
    )  # fmt: skip


async def _inspect(client: AsyncClient, ref: str) -> dict[str, Any]:
    try:
        return await client.inspect_container(ref)
    except NotFound:
        try:
            return await client.inspect_image(ref)
        except NotFound:
            raise NotFound(f"No such object: {ref} (not a container or an image)") from None


@click.command("inspect")
@click.argument("objects", nargs=-1, required=True)
def inspect_command(objects: tuple[str, ...]) -> None:
    """Show containers or images as JSON (containers first, as Docker does)."""
    with connect() as client:
        result = [client.run(_inspect(client.aio, ref)) for ref in objects]
    click.echo(json.dumps(result, indent=4))


async def _logs(client: AsyncClient, ref: str, follow: bool, timestamps: bool) -> None:
    await terminal.copy_output(client.logs(ref, follow=follow, timestamps=timestamps))


@click.command("logs")
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the container exits.")
@click.option("-t", "--timestamps", is_flag=True, help="Prefix each chunk with its time.")
@click.argument("container")
def logs_command(container: str, follow: bool, timestamps: bool) -> None:
    """Print a container's output: stdout to stdout, stderr to stderr."""
    with connect() as client:
        client.run(_logs(client.aio, container, follow, timestamps))


async def _wait(client: AsyncClient, ref: str) -> int:
    return (await (await client.wait(ref)).result())[0]


@click.command("wait")
@click.argument("containers", nargs=-1, required=True)
def wait_command(containers: tuple[str, ...]) -> None:
    """Wait for containers to exit; print each exit status."""
    with connect() as client:
        for ref in containers:
            click.echo(client.run(_wait(client.aio, ref)))


def parse_signal(text: str) -> int:
    """``KILL``, ``SIGKILL`` or ``9`` as a signal number.

    Raises:
        InvalidArgument: no such signal.
    """
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
    number = parse_signal(sig)
    with connect() as client:
        for ref in containers:
            client.kill(ref, number)
            click.echo(ref)


@click.command("stop")
@click.option("-t", "--time", "timeout", type=int, default=None, metavar="SECONDS",
              help="Seconds to wait after SIGTERM before SIGKILL (default 10).")  # fmt: skip
@click.argument("containers", nargs=-1, required=True)
def stop_command(containers: tuple[str, ...], timeout: int | None) -> None:
    """Stop running containers: SIGTERM, then SIGKILL after the grace time."""
    with connect() as client:
        for ref in containers:
            client.stop(ref, timeout)
            click.echo(ref)


@click.command("restart")
@click.option("-t", "--time", "timeout", type=int, default=None, metavar="SECONDS",
              help="Seconds to wait after SIGTERM before SIGKILL (default 10).")  # fmt: skip
@click.argument("containers", nargs=-1, required=True)
def restart_command(containers: tuple[str, ...], timeout: int | None) -> None:
    """Stop containers (if running) and start them again, in the background."""
    with connect() as client:
        for ref in containers:
            client.restart(ref, timeout)
            click.echo(ref)


@click.command("rm")
@click.option("-f", "--force", is_flag=True, help="Kill a running container first.")
@click.argument("containers", nargs=-1, required=True)
def rm_command(containers: tuple[str, ...], force: bool) -> None:
    """Remove containers and their writable layers."""
    with connect() as client:
        for ref in containers:
            client.remove(ref, force)
            click.echo(ref)


@click.command("diff")
@click.argument("container")
def diff_command(container: str) -> None:
    """What the container changed on disk: A added, C changed, D deleted."""
    colours = {"A": "green", "C": "yellow", "D": "red"}
    with connect() as client:
        changes = client.changes(container)
    for change in changes:
        kind = DIFF_KINDS[change["Kind"]]
        console.print(f"[{colours[kind]}]{kind}[/] {escape(change['Path'])}")


@click.command("commit")
@click.option("-m", "--message", default="", help="Commit message.")
@click.option("-a", "--author", default="", help="Author.")
@click.argument("container")
@click.argument("repository", required=False)
def commit_command(container: str, repository: str | None, message: str, author: str) -> None:
    """Save a stopped container's changes as a new image (its upper dir becomes a layer)."""
    with connect() as client:
        click.echo(client.commit(container, repository, message=message, author=author))


async def _attach(client: AsyncClient, ref: str, no_stdin: bool, sig_proxy: bool) -> int:
    info = await client.inspect_container(ref)
    if not info["State"]["Running"]:
        name = info["Name"].lstrip("/")
        raise Conflict(
            f"You cannot attach to the stopped container {name}: start it first "
            f"(`sandbox start {name}`)"
        )
    cid, tty = info["Id"], bool(info["Config"]["Tty"])
    stdin = bool(info["Config"]["OpenStdin"]) and not no_stdin
    hijacked = await client.attach(cid, stdin=stdin)
    waiting = await client.wait(cid)  # it runs: this resolves at its exit
    wiring = terminal.Wiring()
    try:
        with terminal.raw_mode(tty and stdin):
            if tty:
                wiring.follow_size(lambda h, w: client.resize(cid, h, w))
            elif sig_proxy:
                wiring.forward_signals(lambda sig: client.kill(cid, sig))
            await terminal.pump(hijacked, stdin=stdin)
            return (await waiting.result())[0]
    finally:
        wiring.close()
        waiting.close()


@click.command("attach")
@click.option("--no-stdin", is_flag=True, help="Do not forward stdin.")
@click.option("--sig-proxy/--no-sig-proxy", default=True,
              help="Forward ^C and other signals to the container (default: yes).")  # fmt: skip
@click.argument("container")
def attach_command(container: str, no_stdin: bool, sig_proxy: bool) -> int:
    """Attach this terminal to a running CONTAINER until it exits; its status is ours."""
    with connect() as client:
        return client.run(_attach(client.aio, container, no_stdin, sig_proxy))


COMMANDS = [ps_command, inspect_command, logs_command, wait_command, kill_command, stop_command,
            restart_command, rm_command, diff_command, commit_command, attach_command]  # fmt: skip
