"""``network create``, ``ls``, ``inspect``, ``rm``, ``connect``, ``disconnect``, ``prune``.

A network is a bridge in a namespace of its own that its containers share:
they reach each other by name, and nothing else (see sandbox/engine/networks.py).

EXAMPLE:
    sandbox network create web --subnet 10.201.0.0/24
    sandbox run -d --name server --network web base sh -c 'echo hi | nc -l -N 8000'
    sandbox run --rm --network web base nc -d server 8000   # hi
    sandbox network connect --alias cache lab server   # eth1 on lab, at once
    sandbox rm -f server && sandbox network rm web
"""

from __future__ import annotations

import json
from typing import Any

import click

from sandbox.cli.connect import connect
from sandbox.cli.output import console, table
from sandbox.errors import InvalidArgument


def parse_labels(labels: tuple[str, ...]) -> dict[str, str]:
    """``--label K=V`` values as a dict (``--label K`` is an empty value, as Docker's).

    Raises:
        InvalidArgument: an empty key.
    """
    result = {}
    for item in labels:
        key, _, value = item.partition("=")
        if not key.strip():
            raise InvalidArgument(f"invalid label {item!r}: write KEY=VALUE")
        result[key.strip()] = value
    return result


def subnet_of(network: dict[str, Any]) -> str:
    """The network's subnet as ``ls`` shows it (empty for `none`)."""
    config = (network.get("IPAM") or {}).get("Config") or []
    return ", ".join(c.get("Subnet", "") for c in config if c.get("Subnet"))


@click.group("network")
def network_group() -> None:
    """Manage networks: containers on one reach each other by name."""


@network_group.command("create")
@click.option("--subnet", metavar="CIDR",
              help="The network's IPv4 subnet, such as 10.201.0.0/24; its first address "
                   "is the gateway. Default: the next free 10.200.N.0/24.")  # fmt: skip
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE",
              help="Set a label on the network (repeatable).")  # fmt: skip
@click.argument("name")
def create_command(name: str, subnet: str | None, labels: tuple[str, ...]) -> None:
    """Make a network NAME; prints its ID."""
    with connect() as client:
        click.echo(client.create_network(name, subnet, parse_labels(labels)))


@network_group.command("ls")
@click.option("-q", "--quiet", is_flag=True, help="Only IDs.")
def ls_command(quiet: bool) -> None:
    """List networks, and how many running containers each has."""
    with connect() as client:
        found = client.networks()
    if quiet:
        for n in found:
            click.echo(n["Id"][:12])
        return
    t = table("NETWORK ID", "NAME", "DRIVER", "SUBNET", "CONTAINERS")
    for n in found:
        t.add_row(n["Id"][:12], n["Name"], n["Driver"], subnet_of(n),
                  str(len(n.get("Containers") or {})))  # fmt: skip
    console.print(t, markup=False)


@network_group.command("inspect")
@click.argument("networks", nargs=-1, required=True)
def inspect_command(networks: tuple[str, ...]) -> None:
    """Show networks as JSON, with the containers on them now."""
    with connect() as client:
        result = [client.inspect_network(ref) for ref in networks]
    click.echo(json.dumps(result, indent=4))


@network_group.command("rm")
@click.argument("networks", nargs=-1, required=True)
def rm_command(networks: tuple[str, ...]) -> None:
    """Remove networks (none that a running container is on).

    `lab` and `none` always exist; a network is removed only by the user who
    made it, or root.
    """
    with connect() as client:
        for ref in networks:
            client.remove_network(ref)
            click.echo(ref)


@network_group.command("connect")
@click.option("--alias", "aliases", multiple=True, metavar="NAME",
              help="Another name the others on the network reach it by (repeatable).")  # fmt: skip
@click.option("--ip", "address", default="", metavar="ADDRESS",
              help="Its IPv4 address on the network. Default: the next free one.")  # fmt: skip
@click.argument("network")
@click.argument("container")
def connect_command(network: str, container: str, aliases: tuple[str, ...], address: str) -> None:
    """Connect CONTAINER to NETWORK too.

    A running container gets its next interface (eth1, ...) now; a stopped
    one joins when it starts.
    """
    with connect() as client:
        client.connect_network(network, container, aliases=list(aliases), address=address)


@network_group.command("disconnect")
@click.argument("network")
@click.argument("container")
def disconnect_command(network: str, container: str) -> None:
    """Take CONTAINER off NETWORK (its interface there goes at once)."""
    with connect() as client:
        client.disconnect_network(network, container)


@network_group.command("prune")
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
def prune_command(force: bool) -> None:
    """Remove your networks no container is on.

    A stopped container keeps the networks it would join at its next start.
    """
    if not force:
        click.confirm(
            "This removes every network of yours that no container is on. Continue?",
            abort=True,
        )
    with connect() as client:
        deleted = client.prune_networks()
    if deleted:
        click.echo("Deleted Networks:\n" + "".join(f"{name}\n" for name in deleted), nl=False)


COMMANDS = [network_group]
