"""``sandbox stats``: live CPU, memory, network, disk and process use of containers.

The daemon streams Docker's stats JSON once a second; the figures are
worked out from it as the docker CLI does (CPU % from the change since the
previous sample, memory without the page cache that could be dropped).

EXAMPLE:
    sandbox stats                 # every running container, until ^C
    sandbox stats --no-stream web
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from dataclasses import dataclass
from typing import Any

import click
from rich.live import Live
from rich.table import Table

from sandbox.cli.connect import connect
from sandbox.cli.output import console, table
from sandbox.client import AsyncClient
from sandbox.errors import SandboxError
from sandbox.units import human_size

REFRESH = 1.0  # seconds between redraws, as the daemon samples once a second
COLUMNS = ("CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O",
           "BLOCK I/O", "PIDS")  # fmt: skip


@dataclass
class Usage:
    """One container's use of the machine at one moment, as ``docker stats`` shows it."""

    id: str
    name: str
    running: bool = False
    cpu_percent: float = 0.0
    memory: int = 0  # bytes, without the inactive page cache
    memory_limit: int = 0  # bytes (the host's memory if there is no limit)
    net_rx: int = 0
    net_tx: int = 0
    block_read: int = 0
    block_write: int = 0
    pids: int = 0

    @classmethod
    def from_stats(cls, sample: dict[str, Any]) -> Usage:
        """From one sample of ``GET /containers/{id}/stats`` (``{id, name}`` when stopped)."""
        usage = cls(str(sample.get("id", "")), str(sample.get("name", "")).lstrip("/"))
        cpu = sample.get("cpu_stats")
        if not cpu:
            return usage
        usage.running = True
        pre = sample.get("precpu_stats") or {}
        total = cpu.get("cpu_usage", {}).get("total_usage", 0)
        cpu_delta = total - pre.get("cpu_usage", {}).get("total_usage", 0)
        system_delta = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
        online = cpu.get("online_cpus") or len(cpu.get("cpu_usage", {}).get("percpu_usage") or [])
        if cpu_delta > 0 and system_delta > 0 and pre.get("system_cpu_usage"):
            usage.cpu_percent = cpu_delta / system_delta * (online or 1) * 100
        memory = sample.get("memory_stats") or {}
        extra = memory.get("stats") or {}
        inactive = extra.get("total_inactive_file", extra.get("inactive_file", 0))
        used = memory.get("usage", 0)
        usage.memory = used - inactive if inactive < used else used
        usage.memory_limit = memory.get("limit", 0)
        for net in (sample.get("networks") or {}).values():
            usage.net_rx += net.get("rx_bytes", 0)
            usage.net_tx += net.get("tx_bytes", 0)
        for entry in (sample.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []:
            op = str(entry.get("op", "")).lower()
            if op == "read":
                usage.block_read += entry.get("value", 0)
            elif op == "write":
                usage.block_write += entry.get("value", 0)
        usage.pids = (sample.get("pids_stats") or {}).get("current", 0)
        return usage

    def row(self) -> list[str]:
        if not self.running:
            return [self.id[:12], self.name, "--", "-- / --", "--", "--", "--", "--"]
        percent = self.memory / self.memory_limit * 100 if self.memory_limit else 0.0
        return [
            self.id[:12],
            self.name,
            f"{self.cpu_percent:.2f}%",
            f"{human_size(self.memory, base=1024)} / {human_size(self.memory_limit, base=1024)}",
            f"{percent:.2f}%",
            f"{human_size(self.net_rx)} / {human_size(self.net_tx)}",
            f"{human_size(self.block_read)} / {human_size(self.block_write)}",
            str(self.pids),
        ]


def stats_table(rows: list[Usage]) -> Table:
    t = table(*COLUMNS)
    for usage in rows:
        t.add_row(*usage.row())
    return t


async def _targets(client: AsyncClient, refs: tuple[str, ...], show_all: bool) -> list[Usage]:
    if refs:
        infos = [await client.inspect_container(ref) for ref in refs]
        return [Usage(i["Id"], i["Name"].lstrip("/")) for i in infos]
    return [Usage(c["Id"], c["Names"][0].lstrip("/")) for c in await client.containers(show_all)]


async def _once(client: AsyncClient, refs: tuple[str, ...], show_all: bool) -> None:
    targets = await _targets(client, refs, show_all)
    samples = await asyncio.gather(*(_one_sample(client, u) for u in targets))
    console.print(stats_table(list(samples)))


async def _one_sample(client: AsyncClient, usage: Usage) -> Usage:
    async for sample in client.stats(usage.id, stream=False):
        return Usage.from_stats({"id": usage.id, "name": usage.name, **sample})
    return usage


async def _live(client: AsyncClient, refs: tuple[str, ...], show_all: bool) -> None:
    """Redraw the table each second (on a terminal; else print one per second).

    Ends at ^C, or once every container shown has stopped.
    """
    targets = await _targets(client, refs, show_all)
    current = {u.id: u for u in targets}

    async def follow(usage: Usage) -> None:
        with contextlib.suppress(SandboxError):  # it was removed meanwhile
            async for sample in client.stats(usage.id):
                current[usage.id] = Usage.from_stats({"id": usage.id, "name": usage.name,
                                                      **sample})  # fmt: skip
        current[usage.id] = Usage(usage.id, usage.name)  # it stopped

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    followers = asyncio.gather(*(follow(u) for u in targets))
    stopping = asyncio.ensure_future(stop.wait())
    try:
        with (
            Live(stats_table(targets), console=console, auto_refresh=False, transient=False)
            if console.is_terminal
            else contextlib.nullcontext() as live
        ):
            while not stop.is_set() and not followers.done():
                await asyncio.wait([stopping, followers], timeout=REFRESH,
                                   return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
                shown = stats_table(list(current.values()))
                if live is not None:
                    live.update(shown, refresh=True)
                else:
                    console.print(shown)
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        followers.cancel()
        stopping.cancel()
        await asyncio.gather(followers, stopping, return_exceptions=True)


@click.command("stats")
@click.option("-a", "--all", "show_all", is_flag=True,
              help="Show stopped containers too (default: running ones).")  # fmt: skip
@click.option("--no-stream", is_flag=True, help="Print one table and return.")
@click.argument("containers", nargs=-1)
def stats_command(containers: tuple[str, ...], show_all: bool, no_stream: bool) -> None:
    """Show containers' CPU, memory, network, disk and process use, live."""
    with connect() as client:
        if no_stream:
            client.run(_once(client.aio, containers, show_all))
        else:
            client.run(_live(client.aio, containers, show_all))


COMMANDS = [stats_command]
