"""``sandbox run``, ``create`` and ``start``: make containers and run them attached.

EXAMPLE:
    sandbox run --rm base echo hello
    sandbox run --rm --memory 64m --pids-limit 64 base bash -c 'ps -ef'
    sandbox run -it --rm base bash
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import click

from sandbox.cli import terminal
from sandbox.cli.output import err_console
from sandbox.engine import Engine, Running
from sandbox.errors import InvalidArgument
from sandbox.runtime.cgroups import Limits
from sandbox.units import parse_cpus, parse_memory_swap, parse_size

MIN_MEMORY = 6 * 1024 * 1024  # Docker's floor: below this a shell cannot even start
MIN_NANO_CPUS = 10**7  # 0.01 CPU: the kernel's smallest CFS quota (1 ms per 100 ms)


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
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


def parse_limits(memory: str | None, memory_swap: str | None, cpus: str | None,
                 cpu_shares: int | None, pids_limit: int | None) -> Limits:  # fmt: skip
    """Turn the limit options into Limits, refusing what cannot be enforced.

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
    return Limits(memory=mem, memory_swap=swap, nano_cpus=nano, cpu_shares=cpu_shares,
                  pids=pids_limit if pids_limit and pids_limit > 0 else None)  # fmt: skip


def _create(engine: Engine, image: str, command: tuple[str, ...], opts: dict[str, Any]) -> str:
    limits = parse_limits(opts["memory"], opts["memory_swap"], opts["cpus"],
                          opts["cpu_shares"], opts["pids_limit"])  # fmt: skip
    record = engine.create(
        image,
        list(command) or None,
        name=opts["name"],
        env=list(opts["env"]),
        workdir=opts["workdir"],
        hostname=opts["hostname"],
        tty=opts["tty"],
        open_stdin=opts["interactive"],
        limits=limits,
        auto_remove=opts["auto_remove"],
        owner=os.getuid(),
    )
    return record.id


async def attach_and_wait(engine: Engine, cid: str, *, interactive: bool, tty: bool) -> int:
    """Start the container, stream its output here, forward input and signals.

    Returns the container's exit status, after printing why it was killed
    when a limit was hit.
    """
    loop = asyncio.get_running_loop()
    out, err = sys.stdout.buffer, sys.stderr.buffer

    running: Running | None = None

    def show(stream: str, data: bytes) -> None:
        target = err if stream == "stderr" else out
        try:
            target.write(data)
            target.flush()
        except BrokenPipeError:
            # Our reader is gone (`sandbox run base yes | head -1`): pass that
            # on, so the command gets SIGPIPE as it would in a shell pipeline.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, target.fileno())  # the unflushed rest goes nowhere, quietly
            os.close(devnull)
            if running is not None:
                running.close_output(stream)

    with terminal.raw_mode(tty and interactive):
        running = engine.start(cid, listener=show)
        record = running.record
        if tty:
            terminal.follow_size(loop, running)
        if interactive:
            terminal.forward_stdin(loop, running)
        if not tty:  # with a terminal, ^C travels through it as a byte instead
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.add_signal_handler(sig, _forward_signal(engine, cid, sig))
        status = await running.exited
    if record.error:
        err_console.print(f"sandbox: {record.error}", markup=False, highlight=False)
    return status


def _forward_signal(engine: Engine, cid: str, sig: int) -> Callable[[], None]:
    def forward() -> None:
        with contextlib.suppress(Exception):
            engine.kill(cid, sig)

    return forward


@click.command(context_settings={"allow_interspersed_args": False})
@container_options
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def run_command(image: str, command: tuple[str, ...], **opts: Any) -> int:
    """Run COMMAND in a new container from IMAGE, attached to this terminal.

    The exit status is the command's (127: command not found, 137: killed,
    e.g. out of memory).
    """
    engine = Engine()
    cid = _create(engine, image, command, opts)
    return asyncio.run(attach_and_wait(engine, cid, interactive=opts["interactive"],
                                       tty=opts["tty"]))  # fmt: skip


@click.command(context_settings={"allow_interspersed_args": False})
@container_options
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def create_command(image: str, command: tuple[str, ...], **opts: Any) -> None:
    """Create a container from IMAGE without starting it; prints its ID."""
    click.echo(_create(Engine(), image, command, opts))


@click.command()
@click.option("-a", "--attach", is_flag=True, default=True, hidden=True)
@click.option("-i", "--interactive", is_flag=True, help="Forward stdin.")
@click.argument("container")
def start_command(container: str, attach: bool, interactive: bool) -> int:
    """Start a created (or exited) CONTAINER, attached to this terminal."""
    engine = Engine()
    record = engine.store.containers.find(container)
    return asyncio.run(attach_and_wait(engine, record.id,
                                       interactive=interactive or record.open_stdin,
                                       tty=record.tty))  # fmt: skip


run_command.name, create_command.name, start_command.name = "run", "create", "start"
COMMANDS = [run_command, create_command, start_command]
