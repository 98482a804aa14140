"""``sandbox network ...`` and ``ps``'s PORTS through the real CLI, on the session store.

What a user sees: the IDs, the ``ls`` table, the inspect JSON, the one-line
errors (each naming what to do), and that a refused command changes nothing.
Networks made here get subnets under 10.202.0.0/16; every network and
container a test makes is registered with `made` first and removed after the
test (containers first), even when it fails.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

Cli = Callable[..., subprocess.CompletedProcess[bytes]]


class Made:
    """Names of the networks and containers a test makes; removed at its end."""

    def __init__(self, cli: Cli) -> None:
        self.cli = cli
        self.networks: list[str] = []
        self.containers: list[str] = []

    def network(self, prefix: str) -> str:
        self.networks.append(f"{prefix}-{uuid.uuid4().hex[:8]}")
        return self.networks[-1]

    def container(self, prefix: str) -> str:
        self.containers.append(f"{prefix}-{uuid.uuid4().hex[:8]}")
        return self.containers[-1]

    def cleanup(self) -> None:
        for name in self.containers:
            self.cli("rm", "-f", name)
        for name in self.networks:
            self.cli("network", "rm", name)


@pytest.fixture
def made(cli: Cli) -> Iterator[Made]:
    things = Made(cli)
    try:
        yield things
    finally:
        things.cleanup()


def ok(result: subprocess.CompletedProcess[bytes]) -> str:
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def one_line(result: subprocess.CompletedProcess[bytes]) -> str:
    """The single ``sandbox: ...`` line of a failed command (exit 125), without the prefix."""
    assert result.returncode == 125, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sandbox: "), lines
    return lines[0].removeprefix("sandbox: ")


def ls_rows(cli: Cli) -> dict[str, list[str]]:
    """``sandbox network ls`` as {name: [id, driver, subnet, containers]}."""
    lines = ok(cli("network", "ls")).splitlines()
    assert lines[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SUBNET", "CONTAINERS"]
    rows = {}
    for line in lines[1:]:
        fields = line.split()
        if len(fields) == 4:  # `none` has no subnet
            fields.insert(3, "")
        rows[fields[1]] = [fields[0], *fields[2:]]
    return rows


def inspect(cli: Cli, ref: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = json.loads(ok(cli("network", "inspect", ref)))
    assert len(found) == 1
    return found[0]


def test_create_ls_inspect_and_rm(cli: Cli, made: Made) -> None:
    name = made.network("cli-net")
    nid = ok(cli("network", "create", name, "--subnet", "10.202.1.0/24", "--label", "course=net"))
    assert re.fullmatch(r"[0-9a-f]{64}\n", nid)
    rows = ls_rows(cli)
    assert rows[name] == [nid[:12], "bridge", "10.202.1.0/24", "0"]
    assert rows["lab"][1:] == ["bridge", "10.200.0.0/24", "0"]
    assert rows["none"][1:] == ["null", "", "0"]
    assert nid[:12] in ok(cli("network", "ls", "-q")).split()

    info = inspect(cli, name)
    assert info["Id"] == nid.strip()
    assert info["IPAM"]["Config"] == [{"Subnet": "10.202.1.0/24", "Gateway": "10.202.1.1"}]
    assert info["Labels"] == {"course": "net"}
    assert inspect(cli, nid[:12])["Name"] == name

    assert ok(cli("network", "rm", name)) == f"{name}\n"
    assert name not in ls_rows(cli)


def test_create_without_a_subnet_takes_a_free_one(cli: Cli, made: Made) -> None:
    first, second = made.network("cli-auto"), made.network("cli-auto")
    ok(cli("network", "create", first))
    ok(cli("network", "create", second))
    rows = ls_rows(cli)
    subnets = {rows[first][2], rows[second][2], rows["lab"][2]}
    assert len(subnets) == 3
    assert all(re.fullmatch(r"10\.200\.\d+\.0/24", s) for s in subnets)


def test_a_refused_create_says_why_and_leaves_nothing(cli: Cli, made: Made) -> None:
    taken = made.network("cli-taken")
    ok(cli("network", "create", taken, "--subnet", "10.202.2.0/24"))
    before = ls_rows(cli)
    again = one_line(cli("network", "create", taken))
    assert again == (f"network with name {taken} already exists: choose another name, or "
                     f"remove it first (`sandbox network rm {taken}`)")  # fmt: skip
    other = made.network("cli-other")
    overlap = one_line(cli("network", "create", other, "--subnet", "10.202.2.0/23"))
    assert f"overlaps network {taken}'s (10.202.2.0/24): choose a subnet" in overlap
    bad = one_line(cli("network", "create", other, "--subnet", "10.202.3.1/24"))
    assert bad.startswith("invalid subnet '10.202.3.1/24'") and "such as" in bad
    named = one_line(cli("network", "create", "no way"))
    assert named.startswith("invalid network name 'no way': use letters, digits")
    label = one_line(cli("network", "create", other, "--label", "=x"))
    assert label == "invalid label '=x': write KEY=VALUE"
    assert ls_rows(cli) == before


def test_unknown_and_builtin_networks(cli: Cli) -> None:
    missing = "No such network: nosuchnet (see `sandbox network ls`; `sandbox network create NAME` makes one)"  # noqa: E501
    assert one_line(cli("network", "inspect", "nosuchnet")) == missing
    assert one_line(cli("network", "rm", "nosuchnet")) == missing
    assert one_line(cli("network", "connect", "nosuchnet", "x")) == missing
    for name in ("lab", "none"):
        refused = one_line(cli("network", "rm", name))
        assert refused == f"{name} is a pre-defined network and cannot be removed"
    assert {"lab", "none"} <= set(ls_rows(cli))


def test_containers_on_a_network(cli: Cli, made: Made) -> None:
    net = made.network("cli-run")
    ok(cli("network", "create", net, "--subnet", "10.202.4.0/24"))
    server, peer = made.container("server"), made.container("peer")
    ok(cli("run", "-d", "--name", server, "--network", net, "base", "sleep", "600"))
    ok(cli("run", "-d", "--name", peer, "--network", "lab", "base", "sleep", "600"))
    assert ls_rows(cli)[net][3] == "1"
    on_it = inspect(cli, net)["Containers"]
    assert [c["Name"] for c in on_it.values()] == [server]
    assert next(iter(on_it.values()))["IPv4Address"] == "10.202.4.2/24"

    ok(cli("network", "connect", "--alias", "cache", "--ip", "10.200.0.77", "lab", server))
    assert "10.200.0.77/24" in ok(cli("exec", server, "ip", "-br", "addr", "show", "eth1"))
    pinged = ok(cli("exec", peer, "ping", "-c1", "-W5", "cache"))
    assert "10.200.0.77" in pinged

    refused = one_line(cli("network", "rm", net))
    assert f"network {net} id" in refused
    assert f"has active endpoints ({server})" in refused
    assert "stop those containers or disconnect them first" in refused

    ok(cli("network", "disconnect", "lab", server))
    addresses = ok(cli("exec", server, "ip", "-br", "addr"))
    assert "eth1" not in addresses and "10.202.4.2/24" in addresses
    again = one_line(cli("network", "disconnect", "lab", server))
    assert again == f"container {server} is not connected to network lab"
    unknown = one_line(cli("network", "connect", "lab", "no-such-container"))
    assert unknown == "No such container: no-such-container (see `sandbox ps -a`)"

    ok(cli("rm", "-f", server))
    assert ok(cli("network", "rm", net)) == f"{net}\n"


def test_prune_removes_only_unused_networks(cli: Cli, made: Made) -> None:
    used, unused = made.network("cli-used"), made.network("cli-unused")
    ok(cli("network", "create", used))
    ok(cli("network", "create", unused))
    ok(cli("create", "--name", made.container("idle"), "--network", used, "base", "true"))
    declined = cli("network", "prune", input=b"n\n")
    assert declined.returncode != 0
    assert {used, unused} <= set(ls_rows(cli))
    pruned = ok(cli("network", "prune", "-f")).splitlines()
    assert pruned[0] == "Deleted Networks:" and unused in pruned[1:]
    assert used not in pruned
    rows = ls_rows(cli)
    assert used in rows and unused not in rows and {"lab", "none"} <= set(rows)


def test_ps_shows_published_ports(cli: Cli, made: Made) -> None:
    name = made.container("ports")
    ok(cli("run", "-d", "--name", name, "-p", "127.0.0.1::8000", "base", "sleep", "600"))
    lines = ok(cli("ps")).splitlines()
    assert lines[0].split() == ["CONTAINER", "ID", "IMAGE", "COMMAND", "CREATED", "STATUS",
                                "PORTS", "NAMES"]  # fmt: skip
    row = next(line for line in lines if line.endswith(name) or f" {name} " in line)
    assert re.search(r" 127\.0\.0\.1:\d+->8000/tcp ", row), row
    ok(cli("kill", name))
    ok(cli("wait", name))
    exited = next(line for line in ok(cli("ps", "-a")).splitlines() if name in line)
    assert "->" not in exited  # published only while it runs
