"""``sandbox run``, ``create`` and ``start``: make containers and run them attached.

``run`` is what the docker CLI does: create, attach, wait, start, then the
output until the container exits, and its exit status as ours. With ``-d``
it creates and starts, prints the ID and returns: the container outlives
the command. Without ``-d`` the container is the command's: if the command
is killed, the daemon kills the container too (the ``sandbox.foreground``
label, see sandbox/daemon/routes/containers.py).

EXAMPLE:
    sandbox run --rm base echo hello
    sandbox run --rm --memory 64m --pids-limit 64 base bash -c 'ps -ef'
    sandbox run -it --rm base bash
    sandbox run -d --name web base sleep 1000
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from sandbox.cli import terminal
from sandbox.cli.connect import connect
from sandbox.client import AsyncClient
from sandbox.errors import InvalidArgument
from sandbox.publish import split_publish
from sandbox.units import parse_cpus, parse_memory_swap, parse_size

MIN_MEMORY = 6 * 1024 * 1024  # Docker's floor: below this a shell cannot even start
MIN_NANO_CPUS = 10**7  # 0.01 CPU: the kernel's smallest CFS quota (1 ms per 100 ms)
FOREGROUND = {"sandbox.foreground": "1"}  # run by the client that attaches before the start


def container_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options ``run`` and ``create`` share."""
    options = [
        click.option("--name", help="Name the container (default: a generated one)."),
        click.option("-e", "--env", multiple=True, metavar="KEY=VALUE",
                     help="Set an environment variable (repeatable)."),
        click.option("-w", "--workdir", metavar="DIR", help="Working directory inside."),
        click.option("--hostname", help="Hostname inside (default: the short ID)."),
        click.option("-m", "--memory", metavar="SIZE",
                     help="Memory limit, e.g. 64m or 1g (units of 1024). Default: none."),
        click.option("--memory-swap", metavar="SIZE",
                     help="Memory plus swap limit; -1 means unlimited swap. "
                          "Default: twice --memory."),
        click.option("--cpus", metavar="N", help="CPU quota in CPUs, e.g. 0.5. Default: none."),
        click.option("--cpu-shares", type=int, metavar="N",
                     help="Relative CPU weight (default 1024)."),
        click.option("--pids-limit", type=int, metavar="N",
                     help="Most processes at once; 0 or -1 means unlimited."),
        click.option("-i", "--interactive", is_flag=True, help="Keep stdin open."),
        click.option("-t", "--tty", is_flag=True, help="Give the command a terminal."),
        click.option("--rm", "auto_remove", is_flag=True,
                     help="Remove the container when it exits."),
        click.option("--network", default="", metavar="NAME",
                     help="Network to join: none (loopback only, the default), lab, "
                          "or one made with `sandbox network create`."),
        click.option("--network-alias", "network_aliases", multiple=True, metavar="NAME",
                     help="Another name the others on the network reach it by (repeatable)."),
        click.option("-p", "--publish", multiple=True, metavar="127.0.0.1:HOSTPORT:PORT",
                     help="Make the container's TCP PORT reachable on this machine's "
                          "loopback at HOSTPORT (repeatable)."),
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


def parse_limits(memory: str | None, memory_swap: str | None, cpus: str | None,
                 cpu_shares: int | None, pids_limit: int | None) -> dict[str, int]:  # fmt: skip
    """The limit options as HostConfig fields, refusing what cannot be right.

    The daemon checks them again; these checks word the refusal in terms of
    the options the user typed.

    Raises:
        InvalidArgument: a malformed value, or one this host cannot honour
            (more CPUs than it has, less memory plus swap than memory).
    """
    mem = parse_size(memory, what="--memory") if memory else None
    if mem is not None and mem < MIN_MEMORY:
        raise InvalidArgument(f"--memory {memory} is too small: the minimum is 6m")
    swap = parse_memory_swap(memory_swap) if memory_swap else None
    if swap is not None and mem is None:
        raise InvalidArgument("--memory-swap needs --memory as well")
    if swap is not None and mem is not None and swap != -1 and swap < mem:
        raise InvalidArgument(
            f"--memory-swap {memory_swap} is less than --memory {memory}: it is memory "
            "plus swap, so make it at least as large (or -1 for unlimited swap)"
        )
    nano = parse_cpus(cpus) if cpus else None
    ncpu = os.cpu_count() or 1
    if nano is not None and not MIN_NANO_CPUS <= nano <= ncpu * 10**9:
        raise InvalidArgument(
            f"--cpus {cpus} is out of range: use 0.01 to {ncpu} (there are only {ncpu} CPUs)"
        )
    if cpu_shares is not None and not 2 <= cpu_shares <= 262144:
        raise InvalidArgument(f"invalid --cpu-shares {cpu_shares}: use 2 to 262144")
    fields = {"Memory": mem, "MemorySwap": swap, "NanoCpus": nano, "CpuShares": cpu_shares,
              "PidsLimit": pids_limit}  # fmt: skip
    return {k: v for k, v in fields.items() if v is not None}


def create_body(image: str, command: tuple[str, ...], opts: dict[str, Any], *,
                foreground: bool) -> dict[str, Any]:  # fmt: skip
    """The ``POST /containers/create`` body for the options (checked first).

    Raises:
        InvalidArgument: a bad limit option, or a -p that is not
            ``[IP:][HOSTPORT:]PORT`` (nothing is sent then).
    """
    host: dict[str, Any] = parse_limits(opts["memory"], opts["memory_swap"], opts["cpus"],
                                        opts["cpu_shares"], opts["pids_limit"])  # fmt: skip
    host["AutoRemove"] = opts["auto_remove"]
    if opts["tty"] and (now := terminal.size()) is not None:
        host["ConsoleSize"] = list(now)
    # The daemon checks the network, its aliases and the ports, and says what to write.
    host["NetworkMode"] = opts.get("network") or "default"
    if opts.get("publish"):
        host["PortBindings"] = split_publish(opts["publish"])
    endpoints = {}
    if opts.get("network_aliases"):
        endpoints[host["NetworkMode"]] = {"Aliases": list(opts["network_aliases"])}
    return {
        "Image": image,
        "Cmd": list(command) or None,
        "Env": list(opts["env"]),
        "WorkingDir": opts["workdir"] or "",
        "Hostname": opts["hostname"] or "",
        "Tty": opts["tty"],
        "OpenStdin": opts["interactive"],
        "AttachStdin": opts["interactive"],
        "StdinOnce": opts["interactive"],
        "Labels": dict(FOREGROUND) if foreground else {},
        "HostConfig": host,
        "NetworkingConfig": {"EndpointsConfig": endpoints},
    }


async def attach_start_wait(client: AsyncClient, cid: str, *, tty: bool, stdin: bool,
                            remove: bool) -> int:  # fmt: skip
    """Attach, start, stream until the exit; returns the exit status.

    As the docker CLI: the attach and the wait are registered before the
    start, so no output and no exit is missed. After the exit, why it ended
    is printed if the daemon says (out of memory, process limit reached).
    """
    hijacked = await client.attach(cid, stdin=stdin)
    try:
        waiting = await client.wait(cid, "removed" if remove else "next-exit")
    except BaseException:
        hijacked.close()
        raise
    wiring = terminal.Wiring()
    try:
        with terminal.raw_mode(tty and stdin):
            streaming = asyncio.ensure_future(terminal.pump(
                hijacked, stdin=stdin, on_gone=lambda s: client.close_output(cid, s)))  # fmt: skip
            try:
                await client.start(cid)
            except BaseException:
                streaming.cancel()
                hijacked.close()
                waiting.close()
                raise
            if tty:
                wiring.follow_size(lambda h, w: client.resize(cid, h, w))
            else:
                wiring.forward_signals(lambda sig: client.kill(cid, sig))
            await streaming
            status, error = await waiting.result()
    finally:
        wiring.close()
    if error:
        sys.stderr.write(f"sandbox: {error}\n")
    return status


async def _run(client: AsyncClient, image: str, command: tuple[str, ...], opts: dict[str, Any],
               detach: bool) -> int:  # fmt: skip
    body = create_body(image, command, opts, foreground=not detach)
    cid = await client.create(body, opts["name"])
    if detach:
        await client.start(cid)
        click.echo(cid)
        return 0
    return await attach_start_wait(client, cid, tty=opts["tty"], stdin=opts["interactive"],
                                   remove=opts["auto_remove"])  # fmt: skip


@click.command(context_settings={"allow_interspersed_args": False})
@container_options
@click.option(
    "-d",
    "--detach",
    is_flag=True,
    help="Run in the background and print the ID; it outlives this command.",
)
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def run_command(image: str, command: tuple[str, ...], detach: bool, **opts: Any) -> int:
    """Run COMMAND in a new container from IMAGE, attached to this terminal.

    The exit status is the command's (127: command not found, 137: killed,
    e.g. out of memory). If this command is killed, so is the container,
    unless it runs with -d.
    """
    with connect() as client:
        return client.run(_run(client.aio, image, command, opts, detach))


@click.command(context_settings={"allow_interspersed_args": False})
@container_options
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def create_command(image: str, command: tuple[str, ...], **opts: Any) -> None:
    """Create a container from IMAGE without starting it; prints its ID."""
    body = create_body(image, command, opts, foreground=True)  # `sandbox start` attaches
    with connect() as client:
        click.echo(client.create(body, opts["name"]))


async def _start(client: AsyncClient, ref: str, interactive: bool) -> int:
    info = await client.inspect_container(ref)
    config, host = info["Config"], info["HostConfig"]
    return await attach_start_wait(client, info["Id"], tty=bool(config["Tty"]),
                                   stdin=interactive or bool(config["OpenStdin"]),
                                   remove=bool(host["AutoRemove"]))  # fmt: skip


@click.command()
@click.option("-a", "--attach", is_flag=True, default=True, hidden=True)
@click.option("-i", "--interactive", is_flag=True, help="Forward stdin.")
@click.argument("container")
def start_command(container: str, attach: bool, interactive: bool) -> int:
    """Start a created (or exited) CONTAINER, attached to this terminal."""
    with connect() as client:
        return client.run(_start(client.aio, container, interactive))


run_command.name, create_command.name, start_command.name = "run", "create", "start"
COMMANDS = [run_command, create_command, start_command]
