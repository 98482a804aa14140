"""``sandbox exec``: run another command in a running container.

The daemon starts the command in the container's namespaces and cgroup; this
command streams it as ``run`` does and exits with its status.

EXAMPLE:
    sandbox run -d --name lab base sleep 1000
    sandbox exec lab ps -ef
    sandbox exec -it lab bash
"""

from __future__ import annotations

import asyncio
from typing import Any

import click

from sandbox.cli import terminal
from sandbox.cli.connect import connect
from sandbox.client import AsyncClient
from sandbox.errors import SandboxError

EXIT_POLL = 0.05  # seconds between looks at an exec whose output has ended
EXIT_WAIT = 10.0  # seconds an exec may take to be reaped after its output ends


async def _exec(client: AsyncClient, ref: str, command: tuple[str, ...], *,
                interactive: bool, tty: bool, detach: bool, env: tuple[str, ...],
                workdir: str | None) -> int:  # fmt: skip
    body: dict[str, Any] = {
        "AttachStdin": interactive and not detach,
        "AttachStdout": not detach,
        "AttachStderr": not detach,
        "Tty": tty,
        "Cmd": list(command),
        "Env": list(env),
        "WorkingDir": workdir or "",
    }
    if tty and (size := terminal.size()) is not None:
        body["ConsoleSize"] = list(size)
    exec_id = await client.exec_create(ref, body)
    if detach:
        await client.exec_start(exec_id, tty=tty, detach=True)
        return 0
    hijacked = await client.exec_start(exec_id, tty=tty)
    assert hijacked is not None
    wiring = terminal.Wiring()
    try:
        with terminal.raw_mode(tty and interactive):
            if tty:
                wiring.follow_size(lambda h, w: client.exec_resize(exec_id, h, w))
            await terminal.pump(hijacked, stdin=interactive)
    finally:
        wiring.close()
    # The output ends when the command does; its status is recorded just after.
    deadline = asyncio.get_running_loop().time() + EXIT_WAIT
    while True:
        info = await client.exec_inspect(exec_id)
        if not info.get("Running") and info.get("ExitCode") is not None:
            return int(info["ExitCode"])
        if asyncio.get_running_loop().time() > deadline:
            raise SandboxError(f"exec {exec_id[:12]} ended its output but did not exit")
        await asyncio.sleep(EXIT_POLL)


@click.command("exec", context_settings={"allow_interspersed_args": False})
@click.option("-i", "--interactive", is_flag=True, help="Forward stdin.")
@click.option("-t", "--tty", is_flag=True, help="Give the command a terminal.")
@click.option("-d", "--detach", is_flag=True, help="Run it in the background; print nothing.")
@click.option("-e", "--env", multiple=True, metavar="KEY=VALUE",
              help="Set an environment variable (repeatable).")  # fmt: skip
@click.option("-w", "--workdir", metavar="DIR", help="Working directory inside.")
@click.argument("container")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_command(container: str, command: tuple[str, ...], interactive: bool, tty: bool,
                 detach: bool, env: tuple[str, ...], workdir: str | None) -> int:  # fmt: skip
    """Run COMMAND in the running CONTAINER; the exit status is the command's."""
    with connect() as client:
        return client.run(_exec(client.aio, container, command, interactive=interactive, tty=tty,
                                detach=detach, env=env, workdir=workdir))  # fmt: skip


COMMANDS = [exec_command]
